//! Follows the owner's consent log for this device.
//!
//! Only envelopes signed by the paired owner open a thread; only entries that verify
//! (signature of the role's key, hash link, sequence, decryption, event rules) count. Entries
//! arrive from the broker in any order (retained messages), so each thread buffers a bounded
//! number of early entries and verifies them as soon as their predecessors are in.
//! Everything verified is kept as raw bytes so the same checks run again on every start.

use std::collections::BTreeMap;

use p1consent_shared::{
    consent::{
        fold::ConsentState,
        log::{EntryHeader, Event, LogError, LogWriter, Participants, ThreadLog, VerifiedEntry},
        thread::{Role, ThreadEnvelope, ThreadKey},
    },
    crypto::{KemSecretKey, OpaqueId, PublicId, SigningIdentity, hex, unhex},
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Early entries kept per thread while waiting for their predecessors.
const MAX_PENDING_PER_THREAD: usize = 256;
/// Threads one device follows at most (one per provider plus its own).
const MAX_THREADS: usize = 4096;

#[derive(Debug, Error)]
pub enum FollowError {
    #[error("envelope refused: {0}")]
    Envelope(LogError),
    #[error("envelope does not include this device")]
    NotForMe,
    #[error("too many threads")]
    TooManyThreads,
    #[error("entry for a thread this device does not follow")]
    UnknownThread,
    #[error("entry refused: {0}")]
    Entry(LogError),
    #[error("too many out-of-order entries buffered for this thread")]
    BufferFull,
    #[error("stored thread is damaged: {0}")]
    Stored(String),
}

pub struct ThreadState {
    pub log: ThreadLog,
    key: ThreadKey,
    envelope: Vec<u8>,
    /// Whether the owner included a provider: only such threads may carry grants.
    pub has_provider: bool,
    /// Verified entries in verification order (replayed on restart).
    entries: Vec<Vec<u8>>,
    pending: BTreeMap<(u8, u64), Vec<u8>>,
}

/// What is persisted of a thread.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredThread {
    pub envelope: String,
    pub entries: Vec<String>,
}

pub struct Follower {
    owner: PublicId,
    me: PublicId,
    threads: BTreeMap<OpaqueId, ThreadState>,
}

impl Follower {
    pub fn new(owner: PublicId, me: PublicId) -> Self {
        Self {
            owner,
            me,
            threads: BTreeMap::new(),
        }
    }

    pub fn owner(&self) -> PublicId {
        self.owner
    }

    pub fn thread_ids(&self) -> impl Iterator<Item = &OpaqueId> {
        self.threads.keys()
    }

    pub fn thread(&self, id: &OpaqueId) -> Option<&ThreadState> {
        self.threads.get(id)
    }

    /// Rebuilds from storage, re-verifying everything.
    pub fn restore(
        owner: PublicId,
        me: PublicId,
        kem: &KemSecretKey,
        stored: impl IntoIterator<Item = StoredThread>,
    ) -> Result<Self, FollowError> {
        let mut f = Self::new(owner, me);
        for st in stored {
            let env = unhex(&st.envelope).ok_or_else(|| FollowError::Stored("envelope".into()))?;
            let Some(tid) = f.accept_envelope(&env, kem)? else {
                continue;
            };
            for e in st.entries {
                let bytes = unhex(&e).ok_or_else(|| FollowError::Stored("entry".into()))?;
                f.accept_entry(&tid, &bytes)?;
            }
        }
        Ok(f)
    }

    pub fn stored(&self, id: &OpaqueId) -> Option<StoredThread> {
        self.threads.get(id).map(|t| StoredThread {
            envelope: hex(&t.envelope),
            entries: t.entries.iter().map(|e| hex(e)).collect(),
        })
    }

    /// Accepts a thread key envelope from the inbox. Returns the thread id if it is new
    /// (the caller subscribes to its log), `None` if already known.
    pub fn accept_envelope(
        &mut self,
        bytes: &[u8],
        kem: &KemSecretKey,
    ) -> Result<Option<OpaqueId>, FollowError> {
        let env =
            ThreadEnvelope::decode(bytes, Some(&self.owner)).map_err(FollowError::Envelope)?;
        let tid = env.thread_id;
        if self.threads.contains_key(&tid) {
            return Ok(None);
        }
        if !env.roles().contains(&Role::Device) {
            return Err(FollowError::NotForMe);
        }
        if self.threads.len() >= MAX_THREADS {
            return Err(FollowError::TooManyThreads);
        }
        let key = env
            .open(Role::Device, kem)
            .map_err(|_| FollowError::NotForMe)?;
        let participants = Participants {
            owner: self.owner,
            device: Some(self.me),
            provider: None,
        };
        self.threads.insert(
            tid,
            ThreadState {
                log: ThreadLog::new(tid, key.clone(), participants),
                key,
                envelope: bytes.to_vec(),
                has_provider: env.roles().contains(&Role::Provider),
                entries: Vec::new(),
                pending: BTreeMap::new(),
            },
        );
        Ok(Some(tid))
    }

    /// Accepts one entry of a followed thread. Returns how many entries became verified
    /// (0 if it was buffered). Duplicates (our own entries echoed back) are not errors.
    pub fn accept_entry(&mut self, tid: &OpaqueId, bytes: &[u8]) -> Result<usize, FollowError> {
        let header = EntryHeader::peek(bytes).map_err(FollowError::Entry)?;
        let t = self
            .threads
            .get_mut(tid)
            .ok_or(FollowError::UnknownThread)?;
        if header.thread_id != *tid {
            return Err(FollowError::Entry(LogError::WrongThread {
                expected: *tid,
                found: header.thread_id,
            }));
        }
        let key = (header.role as u8, header.seq);
        let next = t.log.writer_state(header.role).next_seq;
        if header.seq < next {
            // Already have this position: a duplicate, or a forgery that cannot verify.
            return match t.log.verify(bytes) {
                Err(LogError::Duplicate { .. }) => Ok(0),
                Err(e) => Err(FollowError::Entry(e)),
                Ok(_) => Ok(0),
            };
        }
        if header.seq > next {
            if t.pending.len() >= MAX_PENDING_PER_THREAD {
                return Err(FollowError::BufferFull);
            }
            t.pending.insert(key, bytes.to_vec());
            return Ok(0);
        }
        verify_into(t, bytes).map_err(FollowError::Entry)?;
        let mut verified = 1;
        // Drain whatever became verifiable.
        loop {
            let mut progressed = false;
            let ready: Vec<(u8, u64)> = t
                .pending
                .keys()
                .filter(|(role, seq)| {
                    Role::from_byte(*role)
                        .map(|r| t.log.writer_state(r).next_seq == *seq)
                        .unwrap_or(false)
                })
                .copied()
                .collect();
            for k in ready {
                if let Some(b) = t.pending.remove(&k)
                    && verify_into(t, &b).is_ok()
                {
                    verified += 1;
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
        Ok(verified)
    }

    /// Appends this device's own entry (acknowledgement) and returns its bytes to publish.
    pub fn append_own(
        &mut self,
        tid: &OpaqueId,
        device: &SigningIdentity,
        time_ms: u64,
        event: &Event,
    ) -> Result<Vec<u8>, FollowError> {
        let t = self
            .threads
            .get_mut(tid)
            .ok_or(FollowError::UnknownThread)?;
        let state = t.log.writer_state(Role::Device);
        let time_ms = time_ms.max(state.last_time_ms);
        let mut w = LogWriter::resume(*tid, Role::Device, state);
        let bytes = w
            .append(device, &t.key, time_ms, event)
            .map_err(FollowError::Entry)?;
        verify_into(t, &bytes).map_err(FollowError::Entry)?;
        Ok(bytes)
    }

    /// The owner's state as this device can see it.
    pub fn fold(&self, now_unix: u64) -> ConsentState {
        let entries: Vec<&VerifiedEntry> = self
            .threads
            .values()
            .flat_map(|t| t.log.entries().iter())
            .collect();
        ConsentState::fold(entries, now_unix)
    }
}

fn verify_into(t: &mut ThreadState, bytes: &[u8]) -> Result<(), LogError> {
    let entry = t.log.verify(bytes)?;
    // A grant names the provider: from now on its entries (erasure confirmations) verify.
    let provider = match &entry.event {
        Event::ConsentGranted(g) if entry.role == Role::Owner => Some(g.request.content().provider),
        _ => None,
    };
    t.entries.push(bytes.to_vec());
    if let Some(p) = provider
        && t.has_provider
    {
        // A second, different provider in one thread is refused by set_participant.
        let _ = t.log.set_participant(Role::Provider, p);
    }
    Ok(())
}

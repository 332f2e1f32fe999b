//! The owner's consent log: encrypted, signed, hash-linked entries (message type 0x12).
//!
//! Each entry belongs to one thread and one author role. Per (thread, author) the entries
//! form a chain: `seq` counts from 0 and `prev_hash` is the hash of the author's previous
//! entry (or the genesis value). The author's identity is not in clear: readers know the
//! thread's participants and verify against the role's key.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::request::{MAX_REQUEST_LEN, RequestError, SignedRequest};
use super::scope::{FieldSet, Resolution};
use super::thread::{Role, ThreadKey};
use crate::crypto::{
    CryptoError, KemPublicKey, NONCE_LEN, OpaqueId, PublicId, SIGNATURE_LEN, SYMMETRIC_SUITE,
    SigningIdentity, TAG_LEN, hash, open, random_bytes, seal_with_nonce,
};
use crate::wire::{Reader, WireError, Writer};

pub const MSG_LOG_ENTRY: u8 = 0x12;
/// Header: type, version, suite, thread id, role, seq, prev hash, time, nonce.
pub const ENTRY_HEADER_LEN: usize = 3 + 16 + 1 + 8 + 32 + 8 + NONCE_LEN;
/// Largest plaintext body (a grant with a maximal request fits).
pub const MAX_BODY_LEN: usize = 4096;
pub const MAX_ENTRY_LEN: usize = ENTRY_HEADER_LEN + 4 + MAX_BODY_LEN + TAG_LEN + SIGNATURE_LEN;
pub const MAX_LABEL_LEN: usize = 64;

/// Why an entry (or envelope) was refused. Refusal never changes a reader's state.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LogError {
    #[error("malformed: {0}")]
    Malformed(WireError),
    #[error("signature does not verify (forged or tampered)")]
    BadSignature,
    #[error("decryption failed: not this thread's key or tampered")]
    DecryptFailed,
    #[error("entry belongs to thread {found}, not {expected}")]
    WrongThread { expected: OpaqueId, found: OpaqueId },
    #[error("no known key for the {0:?} of this thread")]
    UnknownAuthor(Role),
    #[error("duplicate (replayed) entry {role:?} #{seq}")]
    Duplicate { role: Role, seq: u64 },
    #[error("out-of-order entry from {role:?}: expected #{expected}, got older #{got}")]
    OutOfOrder { role: Role, expected: u64, got: u64 },
    #[error("gap in {role:?} entries: expected #{expected}, got #{got}")]
    Gap { role: Role, expected: u64, got: u64 },
    #[error("entry {role:?} #{seq} does not link to the previous one")]
    BrokenLink { role: Role, seq: u64 },
    #[error("entry {role:?} #{seq} is older than the author's previous entry")]
    TimeWentBackwards { role: Role, seq: u64 },
    #[error("a {role:?} may not write a {kind} event")]
    EventNotAllowed { role: Role, kind: &'static str },
    #[error("grant does not match its request: {0}")]
    BadGrant(&'static str),
    #[error("embedded request invalid: {0}")]
    BadRequest(RequestError),
    #[error("the envelope has no key for the {0:?}")]
    NotARecipient(Role),
    #[error("envelope from another owner")]
    WrongOwner,
    #[error("writer state is for thread/role {0}")]
    WriterMismatch(&'static str),
}

impl From<WireError> for LogError {
    fn from(e: WireError) -> Self {
        LogError::Malformed(e)
    }
}

impl From<CryptoError> for LogError {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::BadSignature => LogError::BadSignature,
            CryptoError::DecryptFailed | CryptoError::SuiteMismatch { .. } => {
                LogError::DecryptFailed
            }
            CryptoError::Wire(w) => LogError::Malformed(w),
            CryptoError::BadPublicKey => LogError::Malformed(WireError::Invalid {
                field: "public key",
                reason: "invalid public key",
            }),
        }
    }
}

/// Why a device rotated its channel key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RotationReason {
    Revoked = 1,
    Expired = 2,
    Unpaired = 3,
    Other = 4,
}

impl RotationReason {
    pub fn from_byte(b: u8) -> Result<Self, WireError> {
        match b {
            1 => Ok(Self::Revoked),
            2 => Ok(Self::Expired),
            3 => Ok(Self::Unpaired),
            4 => Ok(Self::Other),
            _ => Err(WireError::Invalid {
                field: "reason",
                reason: "unknown rotation reason",
            }),
        }
    }
}

/// The owner's grant of one request to one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub consent_id: OpaqueId,
    pub request: SignedRequest,
    pub device: PublicId,
    pub fields: FieldSet,
    pub resolution: Resolution,
    /// Unix seconds.
    pub expires_at: u64,
}

impl Grant {
    /// A grant of (part of) `request`; checks the rules.
    pub fn new(
        request: &SignedRequest,
        device: PublicId,
        fields: FieldSet,
        resolution: Resolution,
        expires_at: u64,
    ) -> Result<Self, LogError> {
        let g = Grant {
            consent_id: request.consent_id(),
            request: request.clone(),
            device,
            fields,
            resolution,
            expires_at,
        };
        g.validate()?;
        Ok(g)
    }

    /// Granted fields ⊆ requested, non-empty; resolution equal or coarser; expiry no later
    /// than requested; consent id = the request's.
    pub fn validate(&self) -> Result<(), LogError> {
        let req = self.request.content();
        if self.consent_id != self.request.consent_id() {
            return Err(LogError::BadGrant("consent id is not the request's id"));
        }
        if self.fields.is_empty() || !self.fields.is_subset_of(req.fields) {
            return Err(LogError::BadGrant(
                "granted fields must be a non-empty subset of the requested fields",
            ));
        }
        if !self.resolution.is_at_least_as_coarse_as(req.resolution) {
            return Err(LogError::BadGrant(
                "granted resolution finer than requested",
            ));
        }
        if self.expires_at > req.consent_expires_at || self.expires_at <= req.created_at {
            return Err(LogError::BadGrant(
                "expiry must be after the request and not later than requested",
            ));
        }
        Ok(())
    }
}

/// The body of a log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Owner: 0x01.
    DevicePaired {
        device: PublicId,
        device_kem: KemPublicKey,
        label: String,
    },
    /// Owner: 0x02.
    ConsentGranted(Box<Grant>),
    /// Owner: 0x03.
    ConsentRevoked {
        consent_id: OpaqueId,
        erase_requested: bool,
    },
    /// Owner: 0x04.
    ConsentExpired { consent_id: OpaqueId },
    /// Owner: 0x05.
    DeviceUnpaired { device: PublicId },
    /// Device: 0x21.
    KeyDelivered {
        consent_id: OpaqueId,
        channel_id: OpaqueId,
        epoch: u32,
    },
    /// Device: 0x22.
    KeyRotated {
        channel_id: OpaqueId,
        epoch: u32,
        reason: RotationReason,
    },
    /// Provider: 0x31.
    ErasureConfirmed { consent_id: OpaqueId },
}

impl Event {
    pub fn kind(&self) -> u8 {
        match self {
            Event::DevicePaired { .. } => 0x01,
            Event::ConsentGranted(_) => 0x02,
            Event::ConsentRevoked { .. } => 0x03,
            Event::ConsentExpired { .. } => 0x04,
            Event::DeviceUnpaired { .. } => 0x05,
            Event::KeyDelivered { .. } => 0x21,
            Event::KeyRotated { .. } => 0x22,
            Event::ErasureConfirmed { .. } => 0x31,
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            Event::DevicePaired { .. } => "device_paired",
            Event::ConsentGranted(_) => "consent_granted",
            Event::ConsentRevoked { .. } => "consent_revoked",
            Event::ConsentExpired { .. } => "consent_expired",
            Event::DeviceUnpaired { .. } => "device_unpaired",
            Event::KeyDelivered { .. } => "key_delivered",
            Event::KeyRotated { .. } => "key_rotated",
            Event::ErasureConfirmed { .. } => "erasure_confirmed",
        }
    }
    /// The only role allowed to write this event.
    pub fn author_role(&self) -> Role {
        match self.kind() {
            0x01..=0x05 => Role::Owner,
            0x21 | 0x22 => Role::Device,
            _ => Role::Provider,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(self.kind());
        match self {
            Event::DevicePaired {
                device,
                device_kem,
                label,
            } => {
                w.raw(device.as_bytes());
                device_kem.write(&mut w);
                w.str16(label);
            }
            Event::ConsentGranted(g) => {
                w.raw(&g.consent_id.0)
                    .bytes32(g.request.bytes())
                    .raw(g.device.as_bytes())
                    .u32(g.fields.bits())
                    .u32(g.resolution.seconds())
                    .u64(g.expires_at);
            }
            Event::ConsentRevoked {
                consent_id,
                erase_requested,
            } => {
                w.raw(&consent_id.0).bool(*erase_requested);
            }
            Event::ConsentExpired { consent_id } | Event::ErasureConfirmed { consent_id } => {
                w.raw(&consent_id.0);
            }
            Event::DeviceUnpaired { device } => {
                w.raw(device.as_bytes());
            }
            Event::KeyDelivered {
                consent_id,
                channel_id,
                epoch,
            } => {
                w.raw(&consent_id.0).raw(&channel_id.0).u32(*epoch);
            }
            Event::KeyRotated {
                channel_id,
                epoch,
                reason,
            } => {
                w.raw(&channel_id.0).u32(*epoch).u8(*reason as u8);
            }
        }
        w.into_bytes()
    }

    /// Decodes a body written by `author`; grants verify their embedded request.
    pub fn decode(body: &[u8], author: Role) -> Result<Event, LogError> {
        if body.len() > MAX_BODY_LEN {
            return Err(WireError::TooLarge {
                size: body.len(),
                limit: MAX_BODY_LEN,
            }
            .into());
        }
        let mut r = Reader::new(body);
        let kind = r.u8()?;
        let ev = match kind {
            0x01 => {
                let device = PublicId::read(&mut r)?;
                let device_kem = KemPublicKey::read(&mut r)?;
                let label = r.str16("label", MAX_LABEL_LEN)?;
                if label.chars().any(char::is_control) {
                    return Err(WireError::Invalid {
                        field: "label",
                        reason: "contains control characters",
                    }
                    .into());
                }
                Event::DevicePaired {
                    device,
                    device_kem,
                    label: label.to_owned(),
                }
            }
            0x02 => {
                let consent_id = OpaqueId(r.array()?);
                let req = r.bytes32("request", MAX_REQUEST_LEN)?;
                let request = SignedRequest::decode(req).map_err(LogError::BadRequest)?;
                let device = PublicId::read(&mut r)?;
                let fields = FieldSet::from_bits(r.u32()?)?;
                let resolution = Resolution::from_seconds(r.u32()?)?;
                let expires_at = r.u64()?;
                let g = Grant {
                    consent_id,
                    request,
                    device,
                    fields,
                    resolution,
                    expires_at,
                };
                g.validate()?;
                Event::ConsentGranted(Box::new(g))
            }
            0x03 => Event::ConsentRevoked {
                consent_id: OpaqueId(r.array()?),
                erase_requested: r.bool("erase_requested")?,
            },
            0x04 => Event::ConsentExpired {
                consent_id: OpaqueId(r.array()?),
            },
            0x05 => Event::DeviceUnpaired {
                device: PublicId::read(&mut r)?,
            },
            0x21 => Event::KeyDelivered {
                consent_id: OpaqueId(r.array()?),
                channel_id: OpaqueId(r.array()?),
                epoch: r.u32()?,
            },
            0x22 => Event::KeyRotated {
                channel_id: OpaqueId(r.array()?),
                epoch: r.u32()?,
                reason: RotationReason::from_byte(r.u8()?)?,
            },
            0x31 => Event::ErasureConfirmed {
                consent_id: OpaqueId(r.array()?),
            },
            _ => {
                return Err(WireError::Invalid {
                    field: "event",
                    reason: "unknown event kind",
                }
                .into());
            }
        };
        r.finish()?;
        if ev.author_role() != author {
            return Err(LogError::EventNotAllowed {
                role: author,
                kind: ev.name(),
            });
        }
        Ok(ev)
    }
}

/// The clear header of an entry (for routing; nothing in it is verified).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryHeader {
    pub thread_id: OpaqueId,
    pub role: Role,
    pub seq: u64,
    pub prev_hash: [u8; 32],
    pub time_ms: u64,
    pub nonce: [u8; NONCE_LEN],
}

impl EntryHeader {
    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Self {
            thread_id: OpaqueId(r.array()?),
            role: Role::from_byte(r.u8()?)?,
            seq: r.u64()?,
            prev_hash: r.array()?,
            time_ms: r.u64()?,
            nonce: r.array()?,
        })
    }

    /// Parses the clear header of entry bytes without verifying anything.
    pub fn peek(bytes: &[u8]) -> Result<Self, LogError> {
        let (mut r, suite) = Reader::with_header(bytes, MSG_LOG_ENTRY, MAX_ENTRY_LEN)?;
        if suite != SYMMETRIC_SUITE {
            return Err(WireError::UnsupportedSuite(suite).into());
        }
        Ok(Self::read(&mut r)?)
    }
}

/// `hash("p1consent/v1/log-genesis", [thread_id, [role]])`.
pub fn genesis_hash(thread_id: &OpaqueId, role: Role) -> [u8; 32] {
    hash("p1consent/v1/log-genesis", &[&thread_id.0, &[role as u8]])
}

/// `hash("p1consent/v1/log-entry", [entry bytes incl. signature])`.
pub fn entry_hash(bytes: &[u8]) -> [u8; 32] {
    hash("p1consent/v1/log-entry", &[bytes])
}

/// An author's position in its chain; serialisable so a writer survives restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterState {
    pub next_seq: u64,
    pub prev_hash: [u8; 32],
    pub last_time_ms: u64,
}

/// Appends entries to one thread as one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogWriter {
    thread_id: OpaqueId,
    role: Role,
    state: WriterState,
}

impl LogWriter {
    /// A new chain (seq 0, genesis hash).
    pub fn new(thread_id: OpaqueId, role: Role) -> Self {
        Self {
            thread_id,
            role,
            state: WriterState {
                next_seq: 0,
                prev_hash: genesis_hash(&thread_id, role),
                last_time_ms: 0,
            },
        }
    }
    pub fn resume(thread_id: OpaqueId, role: Role, state: WriterState) -> Self {
        Self {
            thread_id,
            role,
            state,
        }
    }
    pub fn state(&self) -> &WriterState {
        &self.state
    }
    pub fn thread_id(&self) -> OpaqueId {
        self.thread_id
    }
    pub fn role(&self) -> Role {
        self.role
    }

    /// Encrypts, signs and chains `event`. `time_ms` must not go backwards.
    pub fn append(
        &mut self,
        author: &SigningIdentity,
        key: &ThreadKey,
        time_ms: u64,
        event: &Event,
    ) -> Result<Vec<u8>, LogError> {
        self.append_with_nonce(author, key, time_ms, event, &random_bytes())
    }

    /// [`Self::append`] with a caller-chosen nonce (test vectors only; never reuse one).
    pub fn append_with_nonce(
        &mut self,
        author: &SigningIdentity,
        key: &ThreadKey,
        time_ms: u64,
        event: &Event,
        nonce: &[u8; NONCE_LEN],
    ) -> Result<Vec<u8>, LogError> {
        if event.author_role() != self.role {
            return Err(LogError::EventNotAllowed {
                role: self.role,
                kind: event.name(),
            });
        }
        if time_ms < self.state.last_time_ms {
            return Err(LogError::TimeWentBackwards {
                role: self.role,
                seq: self.state.next_seq,
            });
        }
        let body = zeroize::Zeroizing::new(event.encode());
        if body.len() > MAX_BODY_LEN {
            return Err(WireError::TooLarge {
                size: body.len(),
                limit: MAX_BODY_LEN,
            }
            .into());
        }
        let mut w = Writer::with_header(MSG_LOG_ENTRY, SYMMETRIC_SUITE);
        w.raw(&self.thread_id.0)
            .u8(self.role as u8)
            .u64(self.state.next_seq)
            .raw(&self.state.prev_hash)
            .u64(time_ms)
            .raw(nonce);
        let ct = seal_with_nonce(&key.entry_key(), nonce, w.as_slice(), &body);
        w.bytes32(&ct);
        let sig = author.sign(w.as_slice());
        w.raw(&sig);
        let bytes = w.into_bytes();
        self.state = WriterState {
            next_seq: self.state.next_seq + 1,
            prev_hash: entry_hash(&bytes),
            last_time_ms: time_ms,
        };
        Ok(bytes)
    }
}

/// Who may write in a thread. The device learns the owner at pairing; a provider learns
/// the owner from the envelope and the device from the grant (verify owner entries first,
/// then [`ThreadLog::set_participant`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Participants {
    pub owner: PublicId,
    pub device: Option<PublicId>,
    pub provider: Option<PublicId>,
}

impl Participants {
    pub fn get(&self, role: Role) -> Option<PublicId> {
        match role {
            Role::Owner => Some(self.owner),
            Role::Device => self.device,
            Role::Provider => self.provider,
        }
    }
}

/// An entry that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedEntry {
    pub thread_id: OpaqueId,
    pub role: Role,
    pub author: PublicId,
    pub seq: u64,
    pub time_ms: u64,
    pub hash: [u8; 32],
    pub event: Event,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    next_seq: u64,
    prev_hash: [u8; 32],
    last_time_ms: u64,
}

/// Verifies the entries of one thread (the `LogVerifier`): signatures, hash links,
/// sequence per author, decryption, event rules. A refused entry leaves the state as it was.
#[derive(Debug, Clone)]
pub struct ThreadLog {
    thread_id: OpaqueId,
    key: ThreadKey,
    participants: Participants,
    heads: [Head; 3],
    seen: HashSet<[u8; 32]>,
    entries: Vec<VerifiedEntry>,
}

/// Alias: the same type under the name used in the protocol text.
pub type LogVerifier = ThreadLog;

impl ThreadLog {
    pub fn new(thread_id: OpaqueId, key: ThreadKey, participants: Participants) -> Self {
        let head = |role| Head {
            next_seq: 0,
            prev_hash: genesis_hash(&thread_id, role),
            last_time_ms: 0,
        };
        Self {
            thread_id,
            key,
            participants,
            heads: [head(Role::Owner), head(Role::Device), head(Role::Provider)],
            seen: HashSet::new(),
            entries: Vec::new(),
        }
    }

    pub fn thread_id(&self) -> OpaqueId {
        self.thread_id
    }
    pub fn participants(&self) -> &Participants {
        &self.participants
    }
    /// Sets a participant learned later (e.g. a provider learns the device from the grant).
    /// Refuses to change a key already set.
    pub fn set_participant(&mut self, role: Role, id: PublicId) -> Result<(), LogError> {
        let slot = match role {
            Role::Owner => return Err(LogError::WriterMismatch("the owner is fixed")),
            Role::Device => &mut self.participants.device,
            Role::Provider => &mut self.participants.provider,
        };
        match slot {
            Some(existing) if *existing != id => {
                Err(LogError::WriterMismatch("participant already set"))
            }
            _ => {
                *slot = Some(id);
                Ok(())
            }
        }
    }
    pub fn entries(&self) -> &[VerifiedEntry] {
        &self.entries
    }
    pub fn into_entries(self) -> Vec<VerifiedEntry> {
        self.entries
    }
    /// The state a writer for `role` resumes from (e.g. a device after a restart).
    pub fn writer_state(&self, role: Role) -> WriterState {
        let h = &self.heads[role as usize - 1];
        WriterState {
            next_seq: h.next_seq,
            prev_hash: h.prev_hash,
            last_time_ms: h.last_time_ms,
        }
    }

    /// Verifies one entry and, only if everything holds, appends it.
    pub fn verify(&mut self, bytes: &[u8]) -> Result<&VerifiedEntry, LogError> {
        let (mut r, suite) = Reader::with_header(bytes, MSG_LOG_ENTRY, MAX_ENTRY_LEN)?;
        if suite != SYMMETRIC_SUITE {
            return Err(WireError::UnsupportedSuite(suite).into());
        }
        let h = EntryHeader::read(&mut r)?;
        let aad_len = r.position();
        let ct = r.bytes32("body", MAX_BODY_LEN + TAG_LEN)?;
        let signed_len = r.position();
        let sig: [u8; SIGNATURE_LEN] = r.array()?;
        r.finish()?;
        if h.thread_id != self.thread_id {
            return Err(LogError::WrongThread {
                expected: self.thread_id,
                found: h.thread_id,
            });
        }
        let author = self
            .participants
            .get(h.role)
            .ok_or(LogError::UnknownAuthor(h.role))?;
        author.verify(&bytes[..signed_len], &sig)?;
        let hash = entry_hash(bytes);
        let head = &self.heads[h.role as usize - 1];
        if self.seen.contains(&hash) {
            return Err(LogError::Duplicate {
                role: h.role,
                seq: h.seq,
            });
        }
        if h.seq < head.next_seq {
            return Err(LogError::OutOfOrder {
                role: h.role,
                expected: head.next_seq,
                got: h.seq,
            });
        }
        if h.seq > head.next_seq {
            return Err(LogError::Gap {
                role: h.role,
                expected: head.next_seq,
                got: h.seq,
            });
        }
        if !crate::crypto::ct_eq(&h.prev_hash, &head.prev_hash) {
            return Err(LogError::BrokenLink {
                role: h.role,
                seq: h.seq,
            });
        }
        if h.time_ms < head.last_time_ms {
            return Err(LogError::TimeWentBackwards {
                role: h.role,
                seq: h.seq,
            });
        }
        let body = open(&self.key.entry_key(), &h.nonce, &bytes[..aad_len], ct)?;
        let event = Event::decode(&body, h.role)?;
        self.heads[h.role as usize - 1] = Head {
            next_seq: h.seq + 1,
            prev_hash: hash,
            last_time_ms: h.time_ms,
        };
        self.seen.insert(hash);
        self.entries.push(VerifiedEntry {
            thread_id: h.thread_id,
            role: h.role,
            author,
            seq: h.seq,
            time_ms: h.time_ms,
            hash,
            event,
        });
        let last = self.entries.len() - 1;
        Ok(&self.entries[last])
    }
}

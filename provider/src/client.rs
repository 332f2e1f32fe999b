//! The provider's connection: inbox, consent threads, key deliveries, channels.
//!
//! Everything that arrives from the broker is hostile until verified by `p1consent-shared`:
//! envelopes ([`ThreadEnvelope::decode`]/`open`), log entries ([`ThreadLog::verify`]), key
//! deliveries and channel records ([`ChannelReader`]), payloads ([`ViewPayload::from_bytes`]).
//! Nothing here re-implements any of it; this module only routes messages, keeps state and
//! turns outcomes into [`ProviderEvent`]s.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    path::{Path, PathBuf},
    time::Duration,
};

use p1consent_shared::{
    channel::{self, ChannelReader, OpenError, Opened},
    consent::{
        FieldSet, Resolution, Role, ThreadEnvelope, ThreadKey,
        log::{EntryHeader, Event, LogError, LogWriter, Participants, ThreadLog},
    },
    crypto::{self, OpaqueId, PublicId, SymmetricKey},
    mqtt::{self, BrokerUrl, LinkConfig, LinkEvent, LinkHandle},
    topics::{self, InboxItem},
    view::ViewPayload,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use crate::{fsutil, keys::ProviderKeys, now_ms};

/// Largest number of threads (consents) one provider follows.
const MAX_THREADS: usize = 10_000;
/// Entries buffered per thread while waiting for earlier ones.
const MAX_PENDING_ENTRIES: usize = 1024;
/// Key deliveries buffered while their grant is not yet verified.
const MAX_PENDING_DELIVERIES: usize = 256;
/// Largest state file accepted.
const MAX_STATE_FILE: u64 = 64 * 1024 * 1024;
const STATE_FILE: &str = "state.bin";
const STATE_MAGIC: &[u8; 8] = b"P1CPST1\0";
const STATE_AAD: &[u8] = b"p1consent-provider/v1/state";

/// Fatal errors: the connection or the local state is unusable. Anything wrong with a
/// message from the broker is not an error but a [`ProviderEvent::Rejected`].
#[derive(Debug, Error)]
pub enum ProviderError {
    #[error("broker URL: {0}")]
    Url(#[from] mqtt::UrlError),
    #[error("the MQTT link has shut down")]
    LinkClosed,
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("state file {path} is damaged or not ours: {reason}")]
    State { path: String, reason: String },
    #[error("log: {0}")]
    Log(#[from] LogError),
    #[error("timed out waiting for the broker to acknowledge {0} message(s)")]
    FlushTimeout(usize),
}

/// Where a consent stands, as this provider knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum ConsentPhase {
    /// Granted; data flows once the key arrives.
    Active,
    /// The owner withdrew consent (or unpaired the device).
    Revoked { erase_requested: bool },
    /// The consent reached its end.
    Expired,
    /// Revoked with erasure: data and keys deleted, `ErasureConfirmed` published.
    Erased,
    /// The device cut this provider off (a key rotation left it out) while the consent's own
    /// log names no end: the owner unpaired the device (that entry is in the device's thread,
    /// which providers do not follow), or the end is still on its way. A revocation or expiry
    /// that arrives later replaces it.
    Ended,
}

impl ConsentPhase {
    pub fn is_active(self) -> bool {
        self == ConsentPhase::Active
    }
}

/// What the provider saw. Integrity problems are events too: they never stop the stream.
// A reading is the common case; boxing it would add an allocation to every record.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderEvent {
    /// Connected (or reconnected) to the broker and subscribed.
    Connected,
    /// Lost the broker; the link reconnects by itself.
    Disconnected { reason: String },
    /// A verified grant for one of our requests.
    Granted {
        consent: OpaqueId,
        device: PublicId,
        owner: PublicId,
        fields: FieldSet,
        resolution: Resolution,
        expires_at: u64,
    },
    /// The device delivered the channel key for a consent.
    KeyReceived {
        consent: OpaqueId,
        channel: OpaqueId,
        epoch: u32,
    },
    /// One verified, decrypted record.
    Reading {
        consent: OpaqueId,
        seq: u64,
        timestamp_ms: u64,
        payload: ViewPayload,
    },
    /// The device rotated the channel key and we are still a reader.
    Rotated { consent: OpaqueId, epoch: u32 },
    /// A rotation left us out: nothing sealed after it can be opened.
    AccessEnded { consent: OpaqueId },
    /// The owner withdrew the consent.
    Revoked {
        consent: OpaqueId,
        erase_requested: bool,
    },
    /// The consent ended by time (or the owner's expiry event).
    Expired { consent: OpaqueId },
    /// Data and keys of the consent were deleted and `ErasureConfirmed` was published.
    Erased { consent: OpaqueId },
    /// Records were lost between `expected` and `got` (the stream continues after them).
    ///
    /// Not reported for the records before the first one received after a key delivery:
    /// channel records are not retained, so those sealed before this provider's channel
    /// subscription reached the broker are never delivered to it; its stream starts at the
    /// first record it receives (at or after the delivery's sequence number).
    Gap {
        consent: OpaqueId,
        expected: u64,
        got: u64,
    },
    /// A record already seen arrived again (dropped).
    Duplicate { consent: OpaqueId, seq: u64 },
    /// A message failed verification and was dropped.
    Rejected {
        consent: Option<OpaqueId>,
        topic: String,
        reason: String,
    },
}

/// How [`Provider::connect_with`] behaves.
#[derive(Debug, Clone)]
pub struct ProviderOptions {
    /// MQTT client id (default `p1c-provider-<opaque id>`).
    pub client_id: Option<String>,
    /// The broker keeps our session (and queues channel records) this long while we are
    /// offline, so a restart continues without gaps. `None`: clean session.
    pub session_expiry_s: Option<u32>,
    /// Append every reading as a JSON line to `<data_dir>/data/<consent>.jsonl`.
    pub store_readings: bool,
}

impl Default for ProviderOptions {
    fn default() -> Self {
        Self {
            client_id: None,
            session_expiry_s: Some(7 * 86_400),
            store_readings: true,
        }
    }
}

/// What the data dir remembers of a consent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsentInfo {
    pub consent: String,
    pub thread: String,
    pub owner: String,
    pub device: String,
    pub controller: String,
    pub purpose: String,
    pub fields: Vec<String>,
    pub resolution: String,
    pub retention_days: u32,
    pub expires_at: u64,
    pub phase: ConsentPhase,
    pub channel: Option<String>,
    pub epoch: Option<u32>,
    pub next_seq: Option<u64>,
    pub readings: u64,
    /// The provider's own `ErasureConfirmed` entry (hex), kept to re-publish it.
    pub erasure_entry: Option<String>,
    /// `ChannelReader` state (hex; secret, the file is encrypted).
    reader: Option<String>,
    delivery_ts: u64,
    /// A key was delivered and no record opened since: the next one starts the stream.
    #[serde(default)]
    awaiting_first_record: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StoredState {
    version: u32,
    consents: BTreeMap<String, ConsentInfo>,
}

struct Thread {
    key: ThreadKey,
    log: ThreadLog,
    pending: Vec<Vec<u8>>,
}

/// A JSON line of a reading, as written to the data files and printed by the CLI.
#[derive(Debug, Serialize)]
pub struct ReadingLine<'a> {
    pub consent: String,
    pub seq: u64,
    pub timestamp_ms: u64,
    pub payload: &'a ViewPayload,
}

/// A connected provider: call [`Provider::next_event`] in a loop.
///
/// ```no_run
/// use p1consent_provider::{Provider, ProviderEvent, ProviderKeys};
/// # async fn demo(keys: ProviderKeys) -> Result<(), p1consent_provider::ProviderError> {
/// let mut p = Provider::connect(keys, "mqtt://127.0.0.1:1883", "./provider-data".as_ref())?;
/// loop {
///     match p.next_event().await? {
///         ProviderEvent::Reading { consent, payload, .. } => println!("{consent}: {payload:?}"),
///         ProviderEvent::Revoked { consent, .. } => println!("{consent} revoked"),
///         other => println!("{other:?}"),
///     }
/// }
/// # }
/// ```
pub struct Provider {
    keys: ProviderKeys,
    me: PublicId,
    dir: PathBuf,
    opts: ProviderOptions,
    state_key: SymmetricKey,
    handle: LinkHandle,
    events: mpsc::UnboundedReceiver<LinkEvent>,
    queue: VecDeque<ProviderEvent>,
    /// `KeyReceived` events held until the broker confirms the channel subscription, so a
    /// caller who acts on them (starts the meter, tells the owner) misses no record.
    awaiting_subscription: HashMap<String, Vec<ProviderEvent>>,
    threads: HashMap<OpaqueId, Thread>,
    consents: BTreeMap<OpaqueId, ConsentInfo>,
    readers: HashMap<OpaqueId, ChannelReader>,
    pending_deliveries: HashMap<OpaqueId, Vec<u8>>,
    unacked: HashMap<u64, ()>,
    next_token: u64,
    dirty: bool,
    tick: tokio::time::Interval,
}

fn state_key(keys: &ProviderKeys) -> SymmetricKey {
    crypto::derive_key(
        &keys.kem().seed()[..],
        "p1consent-provider/v1/state-key",
        keys.public().as_bytes(),
    )
}

/// Reads the encrypted state of a data dir (for `status` without connecting).
pub fn read_state(keys: &ProviderKeys, dir: &Path) -> Result<Vec<ConsentInfo>, ProviderError> {
    let st = load_state(&state_key(keys), dir)?;
    Ok(st.consents.into_values().collect())
}

fn load_state(key: &SymmetricKey, dir: &Path) -> Result<StoredState, ProviderError> {
    let path = dir.join(STATE_FILE);
    let bad = |reason: &str| ProviderError::State {
        path: path.display().to_string(),
        reason: reason.to_string(),
    };
    let bytes = match fsutil::read_limited(&path, MAX_STATE_FILE) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(StoredState::default()),
        Err(e) => {
            return Err(ProviderError::Io {
                path: path.display().to_string(),
                source: e,
            });
        }
    };
    if bytes.len() < STATE_MAGIC.len() + crypto::NONCE_LEN || &bytes[..8] != STATE_MAGIC {
        return Err(bad("not a provider state file"));
    }
    let mut nonce = [0u8; crypto::NONCE_LEN];
    nonce.copy_from_slice(&bytes[8..8 + crypto::NONCE_LEN]);
    let plain = crypto::open(key, &nonce, STATE_AAD, &bytes[8 + crypto::NONCE_LEN..])
        .map_err(|_| bad("cannot decrypt (other keys, or tampered)"))?;
    let st: StoredState = serde_json::from_slice(&plain).map_err(|e| bad(&e.to_string()))?;
    Ok(st)
}

fn parse_public(hex: &str) -> Option<PublicId> {
    let v = crypto::unhex(hex)?;
    PublicId::from_bytes(v.try_into().ok()?).ok()
}

/// `p1c/v1/ch/<channel>[/epoch]` → (channel, is_epoch).
fn channel_topic(topic: &str) -> Option<(OpaqueId, bool)> {
    let rest = topic.strip_prefix(&format!("{}/ch/", topics::PREFIX))?;
    match rest.split_once('/') {
        None => Some((OpaqueId::from_hex(rest)?, false)),
        Some((id, "epoch")) => Some((OpaqueId::from_hex(id)?, true)),
        Some(_) => None,
    }
}

/// `p1c/v1/log/<thread>/...` → thread.
fn log_topic(topic: &str) -> Option<OpaqueId> {
    let rest = topic.strip_prefix(&format!("{}/log/", topics::PREFIX))?;
    OpaqueId::from_hex(rest.split('/').next()?)
}

impl Provider {
    /// Connects with default options. `broker_url` is `mqtt://host[:port]` or `mqtts://…`;
    /// `data_dir` holds the (encrypted) reader state and the received readings.
    pub fn connect(
        keys: ProviderKeys,
        broker_url: &str,
        data_dir: &Path,
    ) -> Result<Self, ProviderError> {
        Self::connect_with(keys, broker_url, data_dir, ProviderOptions::default())
    }

    /// Connects: restores the state of `data_dir` and subscribes to the inbox and to the
    /// channels of the consents already known. Must be called inside a tokio runtime.
    pub fn connect_with(
        keys: ProviderKeys,
        broker_url: &str,
        data_dir: &Path,
        opts: ProviderOptions,
    ) -> Result<Self, ProviderError> {
        let url: BrokerUrl = broker_url.parse()?;
        std::fs::create_dir_all(data_dir).map_err(|e| ProviderError::Io {
            path: data_dir.display().to_string(),
            source: e,
        })?;
        let key = state_key(&keys);
        let stored = load_state(&key, data_dir)?;
        let me = keys.public();
        let mut consents = BTreeMap::new();
        let mut readers = HashMap::new();
        let mut subs = vec![topics::inbox_filter(&me.opaque_id())];
        for (hex, c) in stored.consents {
            let Some(cid) = OpaqueId::from_hex(&hex) else {
                continue;
            };
            if let Some(r) = &c.reader {
                let restored =
                    crypto::unhex(r).and_then(|b| ChannelReader::from_bytes(&b, keys.kem()).ok());
                match restored {
                    Some(reader) => {
                        subs.push(topics::channel(&reader.channel_id()));
                        subs.push(topics::channel_epoch(&reader.channel_id()));
                        readers.insert(cid, reader);
                    }
                    None => {
                        return Err(ProviderError::State {
                            path: data_dir.join(STATE_FILE).display().to_string(),
                            reason: format!("reader state of consent {hex} is damaged"),
                        });
                    }
                }
            }
            consents.insert(cid, c);
        }
        let mut lc = LinkConfig::new(
            url,
            opts.client_id
                .clone()
                .unwrap_or_else(|| format!("p1c-provider-{}", me.opaque_id())),
        );
        lc.session_expiry_s = opts.session_expiry_s;
        lc.subscriptions = subs;
        let link = mqtt::connect(lc)?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Self {
            keys,
            me,
            dir: data_dir.to_path_buf(),
            opts,
            state_key: key,
            handle: link.handle,
            events: link.events,
            queue: VecDeque::new(),
            awaiting_subscription: HashMap::new(),
            threads: HashMap::new(),
            consents,
            readers,
            pending_deliveries: HashMap::new(),
            unacked: HashMap::new(),
            next_token: 1,
            dirty: false,
            tick,
        })
    }

    /// The provider's public identity.
    pub fn public(&self) -> PublicId {
        self.me
    }

    /// What this provider knows of every consent.
    pub fn consents(&self) -> Vec<ConsentInfo> {
        self.consents.values().map(|c| self.info(c)).collect()
    }

    fn info(&self, c: &ConsentInfo) -> ConsentInfo {
        let mut c = c.clone();
        c.reader = None;
        c
    }

    /// Whether any consent is active.
    pub fn has_active(&self) -> bool {
        self.consents.values().any(|c| c.phase.is_active())
    }

    /// Path of the stored readings of a consent.
    pub fn data_file(&self, consent: &OpaqueId) -> PathBuf {
        data_file(&self.dir, consent)
    }

    /// The next event. Returns an error only when the link or the local state failed.
    pub async fn next_event(&mut self) -> Result<ProviderEvent, ProviderError> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Ok(ev);
            }
            tokio::select! {
                ev = self.events.recv() => match ev {
                    Some(ev) => self.on_link_event(ev)?,
                    None => return Err(ProviderError::LinkClosed),
                },
                _ = self.tick.tick() => self.check_expiry(),
            }
            self.persist_if_dirty()?;
        }
    }

    /// Ends the session cleanly: processes what the link already received (the broker
    /// considers it delivered), persists the state and returns the resulting events, so
    /// nothing acknowledged is lost and a later [`Provider::connect`] continues after it.
    pub fn close(mut self) -> Result<Vec<ProviderEvent>, ProviderError> {
        while let Ok(ev) = self.events.try_recv() {
            self.on_link_event(ev)?;
        }
        self.persist_if_dirty()?;
        Ok(self.queue.drain(..).collect())
    }

    /// Waits until the broker acknowledged everything this provider published (e.g. the
    /// erasure confirmation), processing events meanwhile (they stay queued).
    pub async fn flush(&mut self, timeout: Duration) -> Result<(), ProviderError> {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.unacked.is_empty() {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => return Err(ProviderError::FlushTimeout(self.unacked.len())),
                Ok(None) => return Err(ProviderError::LinkClosed),
                Ok(Some(ev)) => self.on_link_event(ev)?,
            }
            self.persist_if_dirty()?;
        }
        Ok(())
    }

    fn publish(&mut self, topic: String, payload: Vec<u8>, retain: bool) {
        let token = self.next_token;
        self.next_token += 1;
        if self
            .handle
            .publish(token, topic, payload, retain, None)
            .is_ok()
        {
            self.unacked.insert(token, ());
        }
    }

    fn reject(&mut self, consent: Option<OpaqueId>, topic: &str, reason: impl ToString) {
        self.queue.push_back(ProviderEvent::Rejected {
            consent,
            topic: topic.to_string(),
            reason: reason.to_string(),
        });
    }

    fn on_link_event(&mut self, ev: LinkEvent) -> Result<(), ProviderError> {
        match ev {
            LinkEvent::Connected => {
                self.unacked.clear();
                // Re-publish our own entries (idempotent: same bytes, retained).
                let entries: Vec<(OpaqueId, Vec<u8>)> = self
                    .consents
                    .values()
                    .filter_map(|c| {
                        let tid = OpaqueId::from_hex(&c.thread)?;
                        Some((tid, crypto::unhex(c.erasure_entry.as_ref()?)?))
                    })
                    .collect();
                for (tid, bytes) in entries {
                    if let Ok(h) = EntryHeader::peek(&bytes) {
                        self.publish(
                            topics::log_entry(&tid, Role::Provider as u8, h.seq),
                            bytes,
                            true,
                        );
                    }
                }
                self.queue.push_back(ProviderEvent::Connected);
            }
            LinkEvent::Disconnected(reason) => {
                self.unacked.clear();
                self.queue.push_back(ProviderEvent::Disconnected { reason });
            }
            LinkEvent::Acked(token) => {
                self.unacked.remove(&token);
            }
            LinkEvent::Dropped { topic, size } => {
                self.reject(None, &topic, format!("oversize message ({size} bytes)"));
            }
            LinkEvent::Subscribed(filter) => {
                if let Some(held) = self.awaiting_subscription.remove(&filter) {
                    self.queue.extend(held);
                }
            }
            LinkEvent::Message(m) => {
                if m.payload.is_empty() {
                    return Ok(()); // a cleared retained message
                }
                self.on_message(&m.topic, &m.payload)?;
            }
        }
        Ok(())
    }

    fn on_message(&mut self, topic: &str, payload: &[u8]) -> Result<(), ProviderError> {
        let me = self.me.opaque_id();
        if let Some(item) = InboxItem::parse(topic, &me) {
            match item {
                InboxItem::Thread(tid) => self.on_envelope(topic, tid, payload),
                InboxItem::Key(cid) => self.on_delivery(topic, cid, payload),
            }
            return Ok(());
        }
        if let Some(tid) = log_topic(topic) {
            return self.on_entry(topic, tid, payload);
        }
        if let Some((ch, is_epoch)) = channel_topic(topic) {
            self.on_record(topic, ch, is_epoch, payload);
            return Ok(());
        }
        self.reject(None, topic, "unexpected topic");
        Ok(())
    }

    // ------------------------------------------------------------------ threads

    fn on_envelope(&mut self, topic: &str, tid: OpaqueId, payload: &[u8]) {
        if self.threads.contains_key(&tid) {
            return;
        }
        let env = match ThreadEnvelope::decode(payload, None) {
            Ok(e) => e,
            Err(e) => return self.reject(None, topic, format!("thread envelope: {e}")),
        };
        if env.thread_id != tid {
            return self.reject(None, topic, "thread envelope for another thread");
        }
        // A consent we already know must come from the same owner.
        let known_owner = self
            .consents
            .values()
            .find(|c| c.thread == tid.to_hex())
            .map(|c| c.owner.clone());
        if known_owner.is_some_and(|o| o != env.owner.to_hex()) {
            return self.reject(None, topic, "thread envelope from a different owner");
        }
        if self.threads.len() >= MAX_THREADS {
            return self.reject(None, topic, "too many threads");
        }
        let key = match env.open(Role::Provider, self.keys.kem()) {
            Ok(k) => k,
            Err(e) => return self.reject(None, topic, format!("thread envelope: {e}")),
        };
        let participants = Participants {
            owner: env.owner,
            device: None,
            provider: Some(self.me),
        };
        self.threads.insert(
            tid,
            Thread {
                log: ThreadLog::new(tid, key.clone(), participants),
                key,
                pending: Vec::new(),
            },
        );
        let _ = self.handle.subscribe(topics::log_filter(&tid));
    }

    fn on_entry(
        &mut self,
        topic: &str,
        tid: OpaqueId,
        payload: &[u8],
    ) -> Result<(), ProviderError> {
        let Some(t) = self.threads.get_mut(&tid) else {
            // Entries of a thread we have no key for: nothing to do.
            return Ok(());
        };
        if t.pending.len() >= MAX_PENDING_ENTRIES {
            self.reject(None, topic, "too many unverifiable entries buffered");
            return Ok(());
        }
        t.pending.push(payload.to_vec());
        self.drain_thread(tid)
    }

    /// Verifies whatever pending entries have become verifiable, in order.
    fn drain_thread(&mut self, tid: OpaqueId) -> Result<(), ProviderError> {
        loop {
            let Some(t) = self.threads.get_mut(&tid) else {
                return Ok(());
            };
            let mut verified = Vec::new();
            let mut rejected = Vec::new();
            let mut keep = Vec::new();
            let mut pending = std::mem::take(&mut t.pending);
            pending.sort_by_key(|b| {
                EntryHeader::peek(b)
                    .map(|h| (h.role as u8, h.seq))
                    .unwrap_or((0, 0))
            });
            for b in pending {
                match t.log.verify(&b) {
                    Ok(e) => verified.push(e.clone()),
                    // Wait for earlier entries or for the grant that names the device.
                    Err(LogError::Gap { .. }) | Err(LogError::UnknownAuthor(_)) => keep.push(b),
                    // Echoes and replays of what we already have.
                    Err(LogError::Duplicate { .. }) | Err(LogError::OutOfOrder { .. }) => {}
                    Err(e) => rejected.push(e.to_string()),
                }
            }
            t.pending = keep;
            let topic = topics::log_filter(&tid);
            for r in rejected {
                self.reject(None, &topic, format!("log entry: {r}"));
            }
            if verified.is_empty() {
                return Ok(());
            }
            for e in verified {
                self.on_verified(tid, e.role, e.author, &e.event)?;
            }
        }
    }

    fn on_verified(
        &mut self,
        tid: OpaqueId,
        role: Role,
        author: PublicId,
        event: &Event,
    ) -> Result<(), ProviderError> {
        let topic = topics::log_filter(&tid);
        match event {
            Event::ConsentGranted(grant) => {
                let req = grant.request.content();
                if req.provider != self.me || req.provider_kem != *self.keys.kem_public() {
                    self.reject(
                        Some(grant.consent_id),
                        &topic,
                        "grant of a request that is not ours",
                    );
                    return Ok(());
                }
                if let Some(t) = self.threads.get_mut(&tid)
                    && let Err(e) = t.log.set_participant(Role::Device, grant.device)
                {
                    self.reject(Some(grant.consent_id), &topic, e);
                    return Ok(());
                }
                let cid = grant.consent_id;
                if let std::collections::btree_map::Entry::Vacant(slot) = self.consents.entry(cid) {
                    let active = grant.expires_at > now_ms() / 1000;
                    slot.insert(ConsentInfo {
                        consent: cid.to_hex(),
                        thread: tid.to_hex(),
                        owner: author.to_hex(),
                        device: grant.device.to_hex(),
                        controller: req.controller.clone(),
                        purpose: req.purpose.clone(),
                        fields: grant.fields.iter().map(|f| f.name().to_string()).collect(),
                        resolution: grant.resolution.name().to_string(),
                        retention_days: req.retention_days,
                        expires_at: grant.expires_at,
                        phase: if active {
                            ConsentPhase::Active
                        } else {
                            ConsentPhase::Expired
                        },
                        channel: None,
                        epoch: None,
                        next_seq: None,
                        readings: 0,
                        erasure_entry: None,
                        reader: None,
                        delivery_ts: 0,
                        awaiting_first_record: false,
                    });
                    self.dirty = true;
                    self.queue.push_back(ProviderEvent::Granted {
                        consent: cid,
                        device: grant.device,
                        owner: author,
                        fields: grant.fields,
                        resolution: grant.resolution,
                        expires_at: grant.expires_at,
                    });
                    if !active {
                        self.queue
                            .push_back(ProviderEvent::Expired { consent: cid });
                    }
                }
                if let Some(d) = self.pending_deliveries.remove(&cid) {
                    let t = topics::inbox(&self.me.opaque_id(), &InboxItem::Key(cid));
                    self.on_delivery(&t, cid, &d);
                }
            }
            Event::ConsentRevoked {
                consent_id,
                erase_requested,
            } => self.end_consent(
                *consent_id,
                ConsentPhase::Revoked {
                    erase_requested: *erase_requested,
                },
            )?,
            Event::ConsentExpired { consent_id } => {
                self.end_consent(*consent_id, ConsentPhase::Expired)?
            }
            Event::DeviceUnpaired { device } => {
                let hex = device.to_hex();
                let ids: Vec<OpaqueId> = self
                    .consents
                    .iter()
                    .filter(|(_, c)| c.device == hex && c.thread == tid.to_hex())
                    .map(|(id, _)| *id)
                    .collect();
                for cid in ids {
                    self.end_consent(
                        cid,
                        ConsentPhase::Revoked {
                            erase_requested: false,
                        },
                    )?;
                }
            }
            Event::ErasureConfirmed { .. } if role == Role::Provider => {}
            // Device acknowledgements (key delivered / rotated) are informational: the key
            // itself comes by delivery or rotation record.
            _ => {}
        }
        Ok(())
    }

    fn end_consent(&mut self, cid: OpaqueId, phase: ConsentPhase) -> Result<(), ProviderError> {
        let Some(c) = self.consents.get_mut(&cid) else {
            return Ok(());
        };
        match (c.phase, phase) {
            (ConsentPhase::Active, _) => {
                c.phase = phase;
                self.dirty = true;
                self.queue.push_back(match phase {
                    ConsentPhase::Revoked { erase_requested } => ProviderEvent::Revoked {
                        consent: cid,
                        erase_requested,
                    },
                    _ => ProviderEvent::Expired { consent: cid },
                });
            }
            // An erasure request after expiry still counts; and the log (or the clock) gives
            // the reason for an end the device already enforced.
            (
                ConsentPhase::Expired | ConsentPhase::Ended,
                ConsentPhase::Revoked { erase_requested },
            ) => {
                c.phase = phase;
                self.dirty = true;
                self.queue.push_back(ProviderEvent::Revoked {
                    consent: cid,
                    erase_requested,
                });
            }
            (ConsentPhase::Ended, ConsentPhase::Expired) => {
                c.phase = phase;
                self.dirty = true;
                self.queue
                    .push_back(ProviderEvent::Expired { consent: cid });
            }
            _ => {}
        }
        // Access ends with the consent: drop the key.
        if self.readers.remove(&cid).is_some()
            && let Some(c) = self.consents.get_mut(&cid)
        {
            c.reader = None;
            self.dirty = true;
        }
        if let Some(c) = self.consents.get(&cid)
            && c.phase
                == (ConsentPhase::Revoked {
                    erase_requested: true,
                })
        {
            self.erase(cid)?;
        }
        Ok(())
    }

    /// Deletes what we hold for `cid`, appends and publishes `ErasureConfirmed`.
    fn erase(&mut self, cid: OpaqueId) -> Result<(), ProviderError> {
        let Some(c) = self.consents.get(&cid) else {
            return Ok(());
        };
        let Some(tid) = OpaqueId::from_hex(&c.thread) else {
            return Ok(());
        };
        let Some(t) = self.threads.get_mut(&tid) else {
            return Ok(());
        };
        // Delete first: the confirmation must be true when it is published.
        self.readers.remove(&cid);
        let file = data_file(&self.dir, &cid);
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ProviderError::Io {
                    path: file.display().to_string(),
                    source: e,
                });
            }
        }
        let state = t.log.writer_state(Role::Provider);
        let time_ms = now_ms().max(state.last_time_ms);
        let mut w = LogWriter::resume(tid, Role::Provider, state);
        let bytes = w.append(
            self.keys.signing(),
            &t.key,
            time_ms,
            &Event::ErasureConfirmed { consent_id: cid },
        )?;
        t.log.verify(&bytes)?;
        let seq = EntryHeader::peek(&bytes)?.seq;
        if let Some(c) = self.consents.get_mut(&cid) {
            c.phase = ConsentPhase::Erased;
            c.reader = None;
            c.channel = None;
            c.epoch = None;
            c.next_seq = None;
            c.readings = 0;
            c.erasure_entry = Some(crypto::hex(&bytes));
        }
        // Persist before publishing: a restart re-publishes the same bytes, never a second
        // entry at the same position.
        self.dirty = true;
        self.persist_if_dirty()?;
        self.publish(
            topics::log_entry(&tid, Role::Provider as u8, seq),
            bytes,
            true,
        );
        self.queue.push_back(ProviderEvent::Erased { consent: cid });
        Ok(())
    }

    fn check_expiry(&mut self) {
        let now = now_ms() / 1000;
        let ended: Vec<OpaqueId> = self
            .consents
            .iter()
            // An end the device enforced first is an expiry once the time says so.
            .filter(|(_, c)| {
                matches!(c.phase, ConsentPhase::Active | ConsentPhase::Ended) && c.expires_at <= now
            })
            .map(|(id, _)| *id)
            .collect();
        for cid in ended {
            // Only errors of erasure can occur, and expiry does not erase.
            let _ = self.end_consent(cid, ConsentPhase::Expired);
        }
    }

    // ------------------------------------------------------------------ keys and channels

    fn on_delivery(&mut self, topic: &str, cid: OpaqueId, payload: &[u8]) {
        let header = match channel::peek_delivery(payload) {
            Ok(h) => h,
            Err(e) => return self.reject(Some(cid), topic, format!("key delivery: {e}")),
        };
        if header.consent_id != cid {
            return self.reject(Some(cid), topic, "key delivery for another consent");
        }
        let Some(c) = self.consents.get(&cid) else {
            // The grant may not be verified yet.
            if self.pending_deliveries.len() < MAX_PENDING_DELIVERIES {
                self.pending_deliveries.insert(cid, payload.to_vec());
            }
            return;
        };
        if !c.phase.is_active() || header.timestamp_ms <= c.delivery_ts {
            return; // ended, or the retained copy of what we already have
        }
        let Some(device) = parse_public(&c.device) else {
            return;
        };
        let reader = match ChannelReader::from_delivery(payload, &device, self.keys.kem()) {
            Ok(r) => r,
            Err(e) => return self.reject(Some(cid), topic, format!("key delivery: {e}")),
        };
        let channel = reader.channel_id();
        let epoch = reader.epoch();
        let _ = self.handle.subscribe(topics::channel(&channel));
        let _ = self.handle.subscribe(topics::channel_epoch(&channel));
        if let Some(c) = self.consents.get_mut(&cid) {
            c.delivery_ts = header.timestamp_ms;
            c.channel = Some(channel.to_hex());
            c.awaiting_first_record = true;
        }
        self.readers.insert(cid, reader);
        self.dirty = true;
        self.awaiting_subscription
            .entry(topics::channel(&channel))
            .or_default()
            .push(ProviderEvent::KeyReceived {
                consent: cid,
                channel,
                epoch,
            });
    }

    fn on_record(&mut self, topic: &str, ch: OpaqueId, is_epoch: bool, payload: &[u8]) {
        let mut ids: Vec<OpaqueId> = self
            .readers
            .iter()
            .filter(|(_, r)| r.channel_id() == ch && r.is_authorised())
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        for cid in ids {
            self.open_for(topic, cid, is_epoch, payload);
        }
    }

    fn open_for(&mut self, topic: &str, cid: OpaqueId, is_epoch: bool, payload: &[u8]) {
        let Some(reader) = self.readers.get_mut(&cid) else {
            return;
        };
        let starting = self
            .consents
            .get(&cid)
            .is_some_and(|c| c.awaiting_first_record);
        let mut result = reader.open(payload);
        if let Err(OpenError::Gap { expected, got }) = result {
            // What was sealed before our subscription took effect is not a loss in the stream.
            if !starting {
                self.queue.push_back(ProviderEvent::Gap {
                    consent: cid,
                    expected,
                    got,
                });
            }
            result = reader.open_accepting_gap(payload);
        }
        if starting
            && result.is_ok()
            && let Some(c) = self.consents.get_mut(&cid)
        {
            c.awaiting_first_record = false;
        }
        match result {
            Ok(Opened::Data {
                seq,
                timestamp_ms,
                plaintext,
                ..
            }) => {
                self.dirty = true;
                match ViewPayload::from_bytes(&plaintext) {
                    Ok(p) => self.reading(cid, seq, timestamp_ms, p),
                    Err(e) => self.reject(Some(cid), topic, format!("payload: {e}")),
                }
            }
            Ok(Opened::Rotated { epoch, .. }) => {
                self.dirty = true;
                self.queue.push_back(ProviderEvent::Rotated {
                    consent: cid,
                    epoch,
                });
            }
            Err(OpenError::NotAuthorised) => {
                self.dirty = true;
                self.queue
                    .push_back(ProviderEvent::AccessEnded { consent: cid });
                // The key is useless from here on: drop it, and the consent is no longer active
                // even if its log never says why (an unpaired device).
                self.readers.remove(&cid);
                if let Some(c) = self.consents.get_mut(&cid) {
                    c.reader = None;
                    if c.phase.is_active() {
                        c.phase = ConsentPhase::Ended;
                    }
                }
                self.check_expiry();
            }
            Err(OpenError::Duplicate { seq }) => {
                if !is_epoch {
                    self.queue
                        .push_back(ProviderEvent::Duplicate { consent: cid, seq });
                }
            }
            // The retained rotation we already passed.
            Err(OpenError::Reordered { .. }) if is_epoch => {}
            Err(e) => self.reject(Some(cid), topic, format!("record: {e}")),
        }
    }

    fn reading(&mut self, cid: OpaqueId, seq: u64, timestamp_ms: u64, payload: ViewPayload) {
        if self.opts.store_readings {
            let line = ReadingLine {
                consent: cid.to_hex(),
                seq,
                timestamp_ms,
                payload: &payload,
            };
            if let Ok(mut text) = serde_json::to_vec(&line) {
                text.push(b'\n');
                if let Err(e) = fsutil::append_private(&data_file(&self.dir, &cid), &text) {
                    self.reject(Some(cid), "local", format!("cannot store the reading: {e}"));
                }
            }
        }
        if let Some(c) = self.consents.get_mut(&cid) {
            c.readings += 1;
        }
        self.queue.push_back(ProviderEvent::Reading {
            consent: cid,
            seq,
            timestamp_ms,
            payload,
        });
    }

    fn persist_if_dirty(&mut self) -> Result<(), ProviderError> {
        if !self.dirty {
            return Ok(());
        }
        let mut st = StoredState {
            version: 1,
            consents: BTreeMap::new(),
        };
        for (cid, c) in &self.consents {
            let mut c = c.clone();
            match self.readers.get(cid) {
                Some(r) => {
                    c.reader = Some(crypto::hex(&r.to_bytes()));
                    c.channel = Some(r.channel_id().to_hex());
                    c.epoch = Some(r.epoch());
                    c.next_seq = Some(r.next_seq());
                }
                None => c.reader = None,
            }
            st.consents.insert(cid.to_hex(), c);
        }
        let json = Zeroizing::new(serde_json::to_vec(&st).map_err(|e| ProviderError::State {
            path: self.dir.display().to_string(),
            reason: e.to_string(),
        })?);
        let (nonce, ct) = crypto::seal(&self.state_key, STATE_AAD, &json);
        let mut out = Vec::with_capacity(8 + nonce.len() + ct.len());
        out.extend_from_slice(STATE_MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        let path = self.dir.join(STATE_FILE);
        fsutil::write_private(&path, &out).map_err(|e| ProviderError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        self.dirty = false;
        Ok(())
    }
}

fn data_file(dir: &Path, consent: &OpaqueId) -> PathBuf {
    dir.join("data").join(format!("{consent}.jsonl"))
}

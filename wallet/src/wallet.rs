//! The owner's wallet: identity, state, and the operations of the consent protocol.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Duration,
};

use p1consent_shared::{
    consent::{
        ConsentState, ConsentStatus, Event, FieldSet, Grant, LogError, LogWriter, Participants,
        Receipt, Resolution, Role, SignedRequest, ThreadEnvelope, ThreadLog, VerifiedEntry,
        log::EntryHeader,
    },
    crypto::{OpaqueId, PublicId, hex, unhex},
    mqtt::BrokerUrl,
    pairing::PairingInvite,
    topics::{self, InboxItem},
};
use serde::Serialize;

use crate::{
    error::{Result, WalletError},
    identity::OwnerIdentity,
    pairing,
    secrets::{FileSecretStore, SecretStore},
    state::{OutboxItem, PendingRequest, WalletState},
    summary::RequestSummary,
    transport::{Outgoing, Session},
};

pub const STATE_FILE: &str = "wallet.json";
pub const SECRETS_FILE: &str = "secrets.json";
/// Entries read per thread from the broker at most (a hostile broker cannot exhaust memory
/// or time beyond this).
pub const MAX_ENTRIES_PER_THREAD: usize = 10_000;
/// Threads a wallet follows at most.
pub const MAX_THREADS: usize = 4096;

/// Wallet settings that are not state.
#[derive(Debug, Clone)]
pub struct WalletOptions {
    /// Broker URL overriding the stored one (and the pairing code's hint).
    pub broker: Option<String>,
    /// How long to wait for the broker and the meter.
    pub timeout: Duration,
}

impl Default for WalletOptions {
    fn default() -> Self {
        Self {
            broker: None,
            timeout: Duration::from_secs(20),
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn now_s() -> u64 {
    now_ms() / 1000
}

/// What the owner allows of a request; `None` = as requested.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrantScope {
    /// A non-empty subset of the requested fields.
    pub fields: Option<FieldSet>,
    /// The requested resolution or a coarser one.
    pub resolution: Option<Resolution>,
    /// Unix seconds, no later than requested.
    pub expires_at: Option<u64>,
}

/// A device the wallet just paired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PairedSummary {
    pub device: String,
    pub device_id: String,
    pub label: String,
    pub broker: String,
    pub thread_id: String,
    /// Set when the meter was paired but the owner's own view of it could not be granted
    /// ([`Wallet::pair_with_own_view`]): what failed, in plain words. The pairing stands.
    pub own_view_note: Option<String>,
}

/// One entry that was not accepted while reading a thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    pub thread_id: String,
    pub role: Option<String>,
    pub seq: Option<u64>,
    pub error: String,
}

/// The verified log of one thread, for `log --verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ThreadReport {
    pub thread_id: String,
    /// `device`, `consent`, `own_view` (the owner's own view: a consent to this wallet's own
    /// reader key) or `unknown` if no owner entry says which.
    pub kind: String,
    /// Who the thread is about, in words: the meter's label, or the provider's name and the
    /// meter (empty when the verified records do not say).
    pub title: String,
    pub device: Option<String>,
    pub provider: Option<String>,
    pub entries: Vec<EntryLine>,
    pub rejected: Vec<Rejected>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryLine {
    pub role: String,
    pub seq: u64,
    pub time_ms: u64,
    pub event: String,
}

/// What a sync found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    pub threads: usize,
    pub entries: usize,
    pub rejected: Vec<Rejected>,
}

/// The result of verifying one thread's entries.
struct Checked {
    log: ThreadLog,
    accepted: Vec<Vec<u8>>,
    rejected: Vec<Rejected>,
    device: Option<PublicId>,
    provider: Option<PublicId>,
}

/// The owner's devices and consents folded from verified threads at `now_unix`.
fn fold_checked(checked: &[(OpaqueId, Checked)], now_unix: u64) -> ConsentState {
    let entries: Vec<&VerifiedEntry> = checked
        .iter()
        .flat_map(|(_, c)| c.log.entries().iter())
        .collect();
    ConsentState::fold(entries, now_unix)
}

pub struct Wallet {
    dir: PathBuf,
    secrets: Box<dyn SecretStore>,
    id: OwnerIdentity,
    state: WalletState,
    opts: WalletOptions,
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallet")
            .field("dir", &self.dir)
            .field("owner", &self.id.public())
            .finish_non_exhaustive()
    }
}

fn parse_public(h: &str) -> Option<PublicId> {
    PublicId::from_bytes(unhex(h)?.try_into().ok()?).ok()
}

impl Wallet {
    /// The default secret store of a data directory (`secrets.json`, mode 0600).
    pub fn file_secrets(dir: &Path) -> Box<dyn SecretStore> {
        Box::new(FileSecretStore::new(dir.join(SECRETS_FILE)))
    }

    /// Creates a new owner identity and an empty state in `dir`.
    pub fn init(dir: &Path, secrets: Box<dyn SecretStore>, opts: WalletOptions) -> Result<Self> {
        Self::init_with_identity(dir, secrets, OwnerIdentity::generate(), opts)
    }

    /// Creates a wallet in `dir` for an existing owner identity (a second wallet); run
    /// [`Wallet::sync`] to rebuild the state from the broker.
    pub fn init_with_identity(
        dir: &Path,
        secrets: Box<dyn SecretStore>,
        id: OwnerIdentity,
        opts: WalletOptions,
    ) -> Result<Self> {
        let state_path = dir.join(STATE_FILE);
        if OwnerIdentity::load(secrets.as_ref())?.is_some() || state_path.exists() {
            return Err(WalletError::AlreadyInitialised(dir.to_path_buf()));
        }
        id.save(secrets.as_ref())?;
        let mut state = WalletState::new();
        state.broker = opts.broker.clone();
        state.save(&state_path)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            secrets,
            id,
            state,
            opts,
        })
    }

    /// Opens an existing wallet. With keys but no state file (keys copied from another
    /// wallet) an empty state is started: [`Wallet::sync`] fills it.
    pub fn open(dir: &Path, secrets: Box<dyn SecretStore>, opts: WalletOptions) -> Result<Self> {
        let id = OwnerIdentity::load(secrets.as_ref())?
            .ok_or_else(|| WalletError::NotInitialised(dir.to_path_buf()))?;
        let mut state = WalletState::load(&dir.join(STATE_FILE))?.unwrap_or_else(WalletState::new);
        if state.broker.is_none() {
            // Remembered with the next save: later commands need no --broker.
            state.broker = opts.broker.clone();
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            secrets,
            id,
            state,
            opts,
        })
    }

    pub fn owner(&self) -> PublicId {
        self.id.public()
    }

    pub fn identity(&self) -> &OwnerIdentity {
        &self.id
    }

    pub fn secrets(&self) -> &dyn SecretStore {
        self.secrets.as_ref()
    }

    pub fn raw_state(&self) -> &WalletState {
        &self.state
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    fn save(&self) -> Result<()> {
        self.state.save(&self.dir.join(STATE_FILE))
    }

    pub(crate) fn broker_url(&self) -> Result<BrokerUrl> {
        let text = self
            .opts
            .broker
            .as_deref()
            .or(self.state.broker.as_deref())
            .ok_or(WalletError::NoBroker)?;
        Ok(text.parse()?)
    }

    async fn connect(&self) -> Result<Session> {
        Session::connect(&self.broker_url()?, Vec::new(), self.opts.timeout).await
    }

    // ------------------------------------------------------------------ pairing

    /// Pairs the meter whose code is `code`: the `p1consent://pair?...` text, or the path of
    /// an image with the QR code.
    pub async fn pair(&mut self, code: &str) -> Result<PairedSummary> {
        let link = pairing::read_pairing_code(code)?;
        let invite = PairingInvite::from_link(&link, now_s())?;
        let device = invite.device();
        let tid = self.id.root.device_thread_id(&device);
        if self.state_at(now_s()).devices.contains_key(&device) {
            return Err(WalletError::AlreadyPaired);
        }
        let url_text = self
            .opts
            .broker
            .clone()
            .unwrap_or_else(|| invite.broker_hint().to_string());
        let url: BrokerUrl = url_text.parse()?;
        let paired = pairing::run(invite, &self.id.signing, &url, self.opts.timeout, now_s).await?;
        if self.state.broker.is_none() {
            self.state.broker = Some(url_text.clone());
        }
        let label = paired.label.clone().unwrap_or_default();
        let envelope = ThreadEnvelope::create(
            &self.id.signing,
            &self.id.root,
            tid,
            &[(Role::Device, &paired.device_kem)],
        )?;
        let record = self.state.threads.entry(tid.to_hex()).or_default();
        record.envelope = Some(hex(&envelope));
        record.device = Some(device.to_hex());
        let me = self.owner().opaque_id();
        let mut out = vec![
            retained(
                topics::inbox(&device.opaque_id(), &InboxItem::Thread(tid)),
                &envelope,
            ),
            retained(topics::owner_index(&me, &tid), &envelope),
        ];
        out.push(self.append_owner(
            &tid,
            Event::DevicePaired {
                device,
                device_kem: paired.device_kem.clone(),
                label: label.clone(),
            },
        )?);
        // The meter is paired now: keep the device thread before anything else can fail, so
        // a broker problem only delays publishing it (the next command sends the outbox).
        self.queue(out)?;
        let mut s = Session::connect(&url, Vec::new(), self.opts.timeout).await?;
        self.flush_outbox(&mut s).await?;
        Ok(PairedSummary {
            device: device.to_hex(),
            device_id: device.opaque_id().to_hex(),
            label,
            broker: url_text,
            thread_id: tid.to_hex(),
            own_view_note: None,
        })
    }

    // ------------------------------------------------------------------ requests

    /// Verifies a `p1consent://request?...` link and keeps it as pending.
    pub fn open_request(&mut self, link: &str) -> Result<RequestSummary> {
        let verified = SignedRequest::from_link(link.trim(), now_s())?;
        let signed = verified.into_signed();
        let summary = RequestSummary::of(&signed);
        self.state.requests.insert(
            summary.request_id.clone(),
            PendingRequest {
                request: hex(signed.bytes()),
                opened_at: now_s(),
            },
        );
        self.save()?;
        Ok(summary)
    }

    pub fn pending_requests(&self) -> Vec<RequestSummary> {
        self.state
            .requests
            .values()
            .filter_map(|p| SignedRequest::decode(&unhex(&p.request)?).ok())
            .map(|r| RequestSummary::of(&r))
            .collect()
    }

    fn find_request(&self, query: &str) -> Result<(String, SignedRequest)> {
        let q = query.trim().to_ascii_lowercase();
        let hits: Vec<&String> = self
            .state
            .requests
            .keys()
            .filter(|k| !q.is_empty() && k.starts_with(&q))
            .collect();
        match hits.as_slice() {
            [] => Err(WalletError::UnknownRequest(query.into())),
            [k] => {
                let p = &self.state.requests[*k];
                let bytes = unhex(&p.request).ok_or_else(|| self.corrupt("request is not hex"))?;
                Ok(((*k).clone(), SignedRequest::decode(&bytes)?))
            }
            _ => Err(WalletError::Ambiguous(query.into())),
        }
    }

    fn corrupt(&self, reason: &str) -> WalletError {
        WalletError::Corrupt {
            path: self.dir.join(STATE_FILE),
            reason: reason.into(),
        }
    }

    /// Declines a pending request: it is forgotten; nothing is sent to anyone.
    pub fn decline(&mut self, request: &str) -> Result<RequestSummary> {
        let (key, req) = self.find_request(request)?;
        self.state.requests.remove(&key);
        self.save()?;
        Ok(RequestSummary::of(&req))
    }

    /// Grants a pending request for `device` (id prefix or label), as requested (all fields,
    /// the requested resolution, until the requested expiry). Returns the consent id.
    pub async fn grant(&mut self, request: &str, device: &str) -> Result<OpaqueId> {
        self.grant_with(request, device, GrantScope::default())
            .await
    }

    /// Grants a pending request for `device` with a narrower scope: fewer fields, a coarser
    /// resolution or an earlier end (each `None` = as requested).
    pub async fn grant_with(
        &mut self,
        request: &str,
        device: &str,
        scope: GrantScope,
    ) -> Result<OpaqueId> {
        // Check what needs no broker first.
        self.find_request(request)?;
        let mut s = self.connect().await?;
        self.flush_outbox(&mut s).await?;
        self.pull(&mut s, None).await?;
        let (key, req) = self.find_request(request)?;
        let now = now_s();
        let content = req.content().clone();
        if content.consent_expires_at <= now {
            return Err(WalletError::RequestExpired);
        }
        let state = self.state_at(now);
        if state.consents.contains_key(&req.consent_id()) {
            self.state.requests.remove(&key);
            self.save()?;
            return Err(WalletError::AlreadyGranted(req.consent_id().to_hex()));
        }
        let dev = self.find_device(&state, device)?;
        let rec = &state.devices[&dev];
        if rec.device_kem.suite() != content.provider_kem.suite() {
            return Err(WalletError::SuiteMismatch);
        }
        let expires_at = scope.expires_at.unwrap_or(content.consent_expires_at);
        if expires_at <= now {
            return Err(WalletError::BadScope(
                "the end of the consent must be in the future".into(),
            ));
        }
        let grant = Grant::new(
            &req,
            dev,
            scope.fields.unwrap_or(content.fields),
            scope.resolution.unwrap_or(content.resolution),
            expires_at,
        )
        .map_err(|e| match e {
            LogError::BadGrant(why) => WalletError::BadScope(why.into()),
            other => other.into(),
        })?;
        let tid = self.id.root.consent_thread_id(&dev, &content.provider);
        let mut out = Vec::new();
        let has_envelope = self
            .state
            .threads
            .get(&tid.to_hex())
            .is_some_and(|t| t.envelope.is_some());
        if !has_envelope {
            let envelope = ThreadEnvelope::create(
                &self.id.signing,
                &self.id.root,
                tid,
                &[
                    (Role::Device, &rec.device_kem),
                    (Role::Provider, &content.provider_kem),
                ],
            )?;
            let me = self.owner().opaque_id();
            out.push(retained(
                topics::inbox(&dev.opaque_id(), &InboxItem::Thread(tid)),
                &envelope,
            ));
            out.push(retained(
                topics::inbox(&content.provider.opaque_id(), &InboxItem::Thread(tid)),
                &envelope,
            ));
            out.push(retained(topics::owner_index(&me, &tid), &envelope));
            let t = self.state.threads.entry(tid.to_hex()).or_default();
            t.envelope = Some(hex(&envelope));
        }
        {
            let t = self.state.threads.entry(tid.to_hex()).or_default();
            t.device = Some(dev.to_hex());
            t.provider = Some(content.provider.to_hex());
        }
        let consent_id = grant.consent_id;
        out.push(self.append_owner(&tid, Event::ConsentGranted(Box::new(grant)))?);
        self.state.requests.remove(&key);
        self.queue_and_publish(&mut s, out).await?;
        Ok(consent_id)
    }

    /// Withdraws an active consent (optionally asking the provider to erase what it holds).
    pub async fn revoke(&mut self, consent: &str, erase: bool) -> Result<OpaqueId> {
        let mut s = self.connect().await?;
        self.flush_outbox(&mut s).await?;
        self.pull(&mut s, None).await?;
        let state = self.state_at(now_s());
        let cid = find_consent(&state, consent)?;
        let c = &state.consents[&cid];
        if c.status != ConsentStatus::Active {
            return Err(WalletError::ConsentNotActive(cid.to_hex()));
        }
        let entry = self.append_owner(
            &c.thread_id,
            Event::ConsentRevoked {
                consent_id: cid,
                erase_requested: erase,
            },
        )?;
        self.queue_and_publish(&mut s, vec![entry]).await?;
        Ok(cid)
    }

    /// Unpairs a device: it withdraws every consent of that device, and the meter cuts every
    /// reader off and starts over with a new identity.
    pub async fn unpair(&mut self, device: &str) -> Result<PublicId> {
        let mut s = self.connect().await?;
        self.flush_outbox(&mut s).await?;
        self.pull(&mut s, None).await?;
        let state = self.state_at(now_s());
        let dev = self.find_device(&state, device)?;
        let tid = state.devices[&dev].thread_id;
        let entry = self.append_owner(&tid, Event::DeviceUnpaired { device: dev })?;
        self.queue_and_publish(&mut s, vec![entry]).await?;
        Ok(dev)
    }

    fn find_device(&self, state: &ConsentState, query: &str) -> Result<PublicId> {
        let q = query.trim().to_ascii_lowercase();
        let hits: Vec<PublicId> = state
            .devices
            .values()
            .filter(|d| d.is_paired())
            .filter(|d| {
                !q.is_empty()
                    && (d.device.to_hex().starts_with(&q)
                        || d.device.opaque_id().to_hex().starts_with(&q)
                        || d.label.to_ascii_lowercase() == q)
            })
            .map(|d| d.device)
            .collect();
        match hits.as_slice() {
            [] => Err(WalletError::UnknownDevice(query.into())),
            [d] => Ok(*d),
            _ => Err(WalletError::Ambiguous(query.into())),
        }
    }

    // ------------------------------------------------------------------ writing

    /// Appends an owner event to a thread (continuing its verified chain) and returns the
    /// message to publish. The entry is stored as accepted.
    fn append_owner(&mut self, tid: &OpaqueId, event: Event) -> Result<Outgoing> {
        let checked = self.check_thread(tid);
        let ws = checked.log.writer_state(Role::Owner);
        let seq = ws.next_seq;
        let time = now_ms().max(ws.last_time_ms);
        let mut w = LogWriter::resume(*tid, Role::Owner, ws);
        let bytes = w.append(
            &self.id.signing,
            &self.id.root.thread_key(tid),
            time,
            &event,
        )?;
        let t = self.state.threads.entry(tid.to_hex()).or_default();
        t.entries.push(hex(&bytes));
        Ok(retained(
            topics::log_entry(tid, Role::Owner as u8, seq),
            &bytes,
        ))
    }

    /// Stores the messages in the outbox (so a crash or a lost connection cannot lose them),
    /// publishes them and waits for the broker's acknowledgements.
    async fn queue_and_publish(&mut self, s: &mut Session, out: Vec<Outgoing>) -> Result<()> {
        self.queue(out)?;
        self.flush_outbox(s).await
    }

    /// Stores messages in the outbox (and the state with them).
    fn queue(&mut self, out: Vec<Outgoing>) -> Result<()> {
        for m in &out {
            self.state.outbox.push(OutboxItem {
                topic: m.topic.clone(),
                payload: hex(&m.payload),
                retain: m.retain,
            });
        }
        self.save()
    }

    /// Publishes whatever is in the outbox and clears it once acknowledged.
    async fn flush_outbox(&mut self, s: &mut Session) -> Result<()> {
        if self.state.outbox.is_empty() {
            return Ok(());
        }
        let msgs: Vec<Outgoing> = self
            .state
            .outbox
            .iter()
            .filter_map(OutboxItem::to_outgoing)
            .collect();
        s.publish_all(&msgs).await?;
        self.state.outbox.clear();
        self.save()
    }

    // ------------------------------------------------------------------ reading

    /// Verifies one thread from the stored entries plus `extra` (from the broker).
    fn check_thread_with(&self, tid: &OpaqueId, extra: &[Vec<u8>]) -> Checked {
        let rec = self.state.threads.get(&tid.to_hex());
        let mut all: Vec<Vec<u8>> = rec
            .map(|r| r.entries.iter().filter_map(|e| unhex(e)).collect())
            .unwrap_or_default();
        all.extend(extra.iter().cloned());
        let device = rec.and_then(|r| r.device.as_deref()).and_then(parse_public);
        let provider = rec
            .and_then(|r| r.provider.as_deref())
            .and_then(parse_public);
        verify_thread(&self.id, *tid, device, provider, all)
    }

    fn check_thread(&self, tid: &OpaqueId) -> Checked {
        self.check_thread_with(tid, &[])
    }

    fn thread_ids(&self) -> Vec<OpaqueId> {
        self.state
            .threads
            .keys()
            .filter_map(|k| OpaqueId::from_hex(k))
            .collect()
    }

    /// Reads the logs of the given threads (all known ones if `None`) from the broker and
    /// keeps every entry that verifies. Returns what was refused.
    async fn pull(
        &mut self,
        s: &mut Session,
        threads: Option<Vec<OpaqueId>>,
    ) -> Result<Vec<Rejected>> {
        let tids = threads.unwrap_or_else(|| self.thread_ids());
        if tids.is_empty() {
            return Ok(Vec::new());
        }
        let filters: Vec<String> = tids.iter().map(topics::log_filter).collect();
        let msgs = s.read_retained(&filters).await?;
        let wanted: BTreeSet<OpaqueId> = tids.iter().copied().collect();
        let mut by_thread: BTreeMap<OpaqueId, Vec<Vec<u8>>> = BTreeMap::new();
        let mut rejected = Vec::new();
        let mut overflowed = BTreeSet::new();
        for m in msgs {
            if m.payload.is_empty() {
                continue;
            }
            let Some(tid) = log_topic_thread(&m.topic) else {
                continue;
            };
            if !wanted.contains(&tid) {
                continue;
            }
            let list = by_thread.entry(tid).or_default();
            if list.len() >= MAX_ENTRIES_PER_THREAD {
                if overflowed.insert(tid) {
                    rejected.push(Rejected {
                        thread_id: tid.to_hex(),
                        role: None,
                        seq: None,
                        error: "too many entries; the rest were ignored".into(),
                    });
                }
                continue;
            }
            list.push(m.payload);
        }
        for tid in tids {
            let extra = by_thread.remove(&tid).unwrap_or_default();
            let checked = self.check_thread_with(&tid, &extra);
            rejected.extend(checked.rejected.iter().cloned());
            let t = self.state.threads.entry(tid.to_hex()).or_default();
            t.entries = checked.accepted.iter().map(|b| hex(b)).collect();
            if t.device.is_none() {
                t.device = checked.device.map(|d| d.to_hex());
            }
            if t.provider.is_none() {
                t.provider = checked.provider.map(|p| p.to_hex());
            }
        }
        self.save()?;
        Ok(rejected)
    }

    /// Sends anything unsent and reads every known thread again from the broker (device
    /// acknowledgements, provider confirmations, entries of the owner's other wallets).
    pub async fn refresh(&mut self) -> Result<Vec<Rejected>> {
        let mut s = self.connect().await?;
        self.flush_outbox(&mut s).await?;
        self.pull(&mut s, None).await
    }

    /// Rebuilds the thread list from the owner index on the broker
    /// (`owner/<owner>/threads/#`) and reads every thread: what a second wallet with only the
    /// owner's keys does.
    pub async fn sync(&mut self) -> Result<SyncReport> {
        let mut s = self.connect().await?;
        self.flush_outbox(&mut s).await?;
        let me = self.owner();
        let msgs = s
            .read_retained(&[topics::owner_index_filter(&me.opaque_id())])
            .await?;
        let mut rejected = Vec::new();
        for m in msgs {
            if m.payload.is_empty() {
                continue;
            }
            let Some(tid) = m
                .topic
                .strip_prefix(&format!(
                    "{}/owner/{}/threads/",
                    topics::PREFIX,
                    me.opaque_id()
                ))
                .and_then(OpaqueId::from_hex)
            else {
                continue;
            };
            if self.state.threads.len() >= MAX_THREADS
                && !self.state.threads.contains_key(&tid.to_hex())
            {
                rejected.push(Rejected {
                    thread_id: tid.to_hex(),
                    role: None,
                    seq: None,
                    error: "too many threads; ignored".into(),
                });
                continue;
            }
            match ThreadEnvelope::decode(&m.payload, Some(&me)) {
                Ok(env) if env.thread_id == tid => {
                    let t = self.state.threads.entry(tid.to_hex()).or_default();
                    if t.envelope.is_none() {
                        t.envelope = Some(hex(&m.payload));
                    }
                }
                Ok(_) => rejected.push(Rejected {
                    thread_id: tid.to_hex(),
                    role: None,
                    seq: None,
                    error: "envelope for another thread".into(),
                }),
                Err(e) => rejected.push(Rejected {
                    thread_id: tid.to_hex(),
                    role: None,
                    seq: None,
                    error: format!("envelope refused: {e}"),
                }),
            }
        }
        rejected.extend(self.pull(&mut s, None).await?);
        Ok(SyncReport {
            threads: self.state.threads.len(),
            entries: self.state.threads.values().map(|t| t.entries.len()).sum(),
            rejected,
        })
    }

    /// The owner's devices and consents folded from the verified local logs at `now_unix`.
    pub fn state_at(&self, now_unix: u64) -> ConsentState {
        fold_checked(&self.check_all_threads(), now_unix)
    }

    /// Every stored thread, verified from scratch, with its id.
    fn check_all_threads(&self) -> Vec<(OpaqueId, Checked)> {
        self.thread_ids()
            .into_iter()
            .map(|t| {
                let c = self.check_thread(&t);
                (t, c)
            })
            .collect()
    }

    /// Reads the logs back from the broker, then folds them.
    pub async fn consents(&mut self) -> Result<ConsentState> {
        self.refresh().await?;
        Ok(self.state_at(now_s()))
    }

    /// Verifies every stored thread from scratch (signatures, chains, decryption, rules).
    pub fn verify_log(&self) -> Vec<ThreadReport> {
        let own = crate::own::own_view_keys(self.identity()).public();
        // Each thread is verified once; the titles come from the state those checks fold to.
        let checked = self.check_all_threads();
        let state = fold_checked(&checked, now_s());
        let meter = |d: &PublicId| state.devices.get(d).map(|r| r.label.clone());
        let title = |tid: &OpaqueId| -> String {
            if let Some(d) = state.devices.values().find(|d| d.thread_id == *tid) {
                return d.label.clone();
            }
            match state.consents.values().find(|c| c.thread_id == *tid) {
                Some(c) => match meter(&c.grant.device) {
                    Some(m) => format!("{} — {m}", c.grant.request.content().controller),
                    None => c.grant.request.content().controller.clone(),
                },
                None => String::new(),
            }
        };
        checked
            .into_iter()
            .map(|(tid, c)| {
                let kind = if c.provider == Some(own) {
                    // The owner's own view: a consent to this wallet's reader key, not
                    // someone else's access.
                    "own_view"
                } else if c.provider.is_some() {
                    "consent"
                } else if c.device.is_some() {
                    "device"
                } else {
                    "unknown"
                };
                ThreadReport {
                    thread_id: tid.to_hex(),
                    kind: kind.into(),
                    title: title(&tid),
                    device: c.device.map(|d| d.to_hex()),
                    provider: c.provider.map(|p| p.to_hex()),
                    entries: c
                        .log
                        .entries()
                        .iter()
                        .map(|e| EntryLine {
                            role: e.role.name().into(),
                            seq: e.seq,
                            time_ms: e.time_ms,
                            event: e.event.name().into(),
                        })
                        .collect(),
                    rejected: c.rejected,
                }
            })
            .collect()
    }

    /// The owner-signed consent receipt (JSON) of a consent.
    pub fn receipt(&self, consent: &str) -> Result<String> {
        let now = now_s();
        let state = self.state_at(now);
        let cid = find_consent(&state, consent)?;
        let receipt = Receipt::from_state(&state, &cid, &self.owner(), now)?;
        Ok(receipt.sign(&self.id.signing)?.to_json()?)
    }
}

fn retained(topic: String, payload: &[u8]) -> Outgoing {
    Outgoing {
        topic,
        payload: payload.to_vec(),
        retain: true,
        expiry_s: None,
    }
}

fn find_consent(state: &ConsentState, query: &str) -> Result<OpaqueId> {
    let q = query.trim().to_ascii_lowercase();
    let hits: Vec<OpaqueId> = state
        .consents
        .keys()
        .filter(|k| !q.is_empty() && k.to_hex().starts_with(&q))
        .copied()
        .collect();
    match hits.as_slice() {
        [] => Err(WalletError::UnknownConsent(query.into())),
        [c] => Ok(*c),
        _ => Err(WalletError::Ambiguous(query.into())),
    }
}

/// `p1c/v1/log/<thread>/<role>/<seq>` → thread id.
fn log_topic_thread(topic: &str) -> Option<OpaqueId> {
    let rest = topic.strip_prefix(&format!("{}/log/", topics::PREFIX))?;
    OpaqueId::from_hex(rest.split('/').next()?)
}

/// Verifies a thread's entries (any order, duplicates allowed). Owner entries first; they
/// name the device (DevicePaired in the device's own thread) and the provider (a grant in
/// the thread derived for that device and provider); then the others' entries.
fn verify_thread(
    id: &OwnerIdentity,
    tid: OpaqueId,
    device: Option<PublicId>,
    provider: Option<PublicId>,
    entries: Vec<Vec<u8>>,
) -> Checked {
    let mut rejected = Vec::new();
    let mut seen = BTreeSet::new();
    let mut headed: Vec<(EntryHeader, Vec<u8>)> = Vec::new();
    for e in entries {
        if !seen.insert(e.clone()) {
            continue;
        }
        match EntryHeader::peek(&e) {
            Ok(h) => headed.push((h, e)),
            Err(err) => rejected.push(Rejected {
                thread_id: tid.to_hex(),
                role: None,
                seq: None,
                error: err.to_string(),
            }),
        }
    }
    headed.sort_by_key(|(h, _)| (h.role as u8, h.seq, h.time_ms));
    let mut log = ThreadLog::new(
        tid,
        id.root.thread_key(&tid),
        Participants {
            owner: id.public(),
            device,
            provider,
        },
    );
    let mut accepted = Vec::new();
    let mut device = device;
    let mut provider = provider;
    for role in [Role::Owner, Role::Device, Role::Provider] {
        if role == Role::Device {
            // Learn the participants from the owner's own (verified) entries.
            for e in log.entries() {
                match &e.event {
                    Event::DevicePaired { device: d, .. }
                        if id.root.device_thread_id(d) == tid && device.is_none() =>
                    {
                        device = Some(*d);
                    }
                    Event::ConsentGranted(g)
                        if id
                            .root
                            .consent_thread_id(&g.device, &g.request.content().provider)
                            == tid
                            && device.is_none_or(|d| d == g.device) =>
                    {
                        device = Some(g.device);
                        provider = provider.or(Some(g.request.content().provider));
                    }
                    _ => {}
                }
            }
            if let Some(d) = device {
                let _ = log.set_participant(Role::Device, d);
            }
            if let Some(p) = provider {
                let _ = log.set_participant(Role::Provider, p);
            }
        }
        for (h, bytes) in headed.iter().filter(|(h, _)| h.role == role) {
            match log.verify(bytes) {
                Ok(_) => accepted.push(bytes.clone()),
                Err(LogError::Duplicate { .. }) => {}
                Err(e) => rejected.push(Rejected {
                    thread_id: tid.to_hex(),
                    role: Some(h.role.name().into()),
                    seq: Some(h.seq),
                    error: e.to_string(),
                }),
            }
        }
    }
    Checked {
        log,
        accepted,
        rejected,
        device,
        provider,
    }
}

#[cfg(test)]
mod tests {
    use p1consent_shared::crypto::{KemSecretKey, KemSuite, SigningIdentity};

    use super::*;

    /// A device thread with owner and device entries, as bytes in writing order.
    fn device_thread(id: &OwnerIdentity, device: &SigningIdentity) -> (OpaqueId, Vec<Vec<u8>>) {
        let kem = KemSecretKey::generate(KemSuite::X25519MlKem768);
        let tid = id.root.device_thread_id(&device.public());
        let key = id.root.thread_key(&tid);
        let mut owner = LogWriter::new(tid, Role::Owner);
        let mut dev = LogWriter::new(tid, Role::Device);
        let mut out = vec![
            owner
                .append(
                    &id.signing,
                    &key,
                    1_000,
                    &Event::DevicePaired {
                        device: device.public(),
                        device_kem: kem.public().clone(),
                        label: "hall".into(),
                    },
                )
                .unwrap(),
        ];
        for i in 0..3 {
            out.push(
                dev.append(
                    device,
                    &key,
                    2_000 + i,
                    &Event::KeyRotated {
                        channel_id: OpaqueId([i as u8; 16]),
                        epoch: i as u32,
                        reason: p1consent_shared::consent::log::RotationReason::Other,
                    },
                )
                .unwrap(),
            );
        }
        (tid, out)
    }

    #[test]
    fn thread_verification_ignores_order_and_duplicates_and_learns_the_device() {
        let id = OwnerIdentity::generate();
        let device = SigningIdentity::generate();
        let (tid, entries) = device_thread(&id, &device);
        let mut shuffled: Vec<Vec<u8>> = entries.iter().rev().cloned().collect();
        shuffled.push(entries[1].clone());
        let c = verify_thread(&id, tid, None, None, shuffled);
        assert!(c.rejected.is_empty(), "{:?}", c.rejected);
        assert_eq!(c.accepted.len(), 4);
        assert_eq!(c.device, Some(device.public()));
        assert_eq!(c.provider, None);
        let state = ConsentState::fold(c.log.entries(), 10);
        assert_eq!(
            state.devices[&device.public()].last_rotation.unwrap().epoch,
            2
        );
    }

    #[test]
    fn tampered_forged_and_gapped_entries_are_refused() {
        let id = OwnerIdentity::generate();
        let device = SigningIdentity::generate();
        let (tid, entries) = device_thread(&id, &device);
        let mut tampered = entries[2].clone();
        let n = tampered.len();
        tampered[n - 70] ^= 1;
        // Missing entry #1 of the device: #2 cannot link.
        let input = vec![entries[0].clone(), tampered, entries[3].clone()];
        let c = verify_thread(&id, tid, None, None, input);
        assert_eq!(c.accepted.len(), 1);
        assert_eq!(c.rejected.len(), 2);
        // Another owner's thread: nothing verifies.
        let other = OwnerIdentity::generate();
        let c = verify_thread(&other, tid, None, None, entries);
        assert!(c.accepted.is_empty());
        assert_eq!(c.device, None);
    }
}

//! The agent's core: one task that owns all state and handles, in turn, telegrams from the
//! source, messages and acknowledgements from the broker, and a one-second tick.
//!
//! A telegram's path is one straight line: [`Agent::on_telegram`] parses it, every view the
//! owner granted derives its payload, the channel seals it, and the sealed record is stored
//! in the outbox *in the same transaction* as the channel's new state; the outbox pump
//! publishes it and removes it only when the broker acknowledged it.
//!
//! Consent is reconciled, not replayed: after every verified owner event and every tick the
//! agent folds the log into the set of consents that should be active now (by its own
//! clock) and makes the channels' readers match it — delivering keys to new readers,
//! rotating keys away from removed ones. That is idempotent, so a crash at any point is
//! repaired by the next reconcile after restart.

use std::{collections::BTreeMap, time::Duration};

use p1consent_shared::{
    channel::MAX_PLAINTEXT,
    consent::{
        fold::{ConsentRecord, ConsentStatus},
        log::{Event, RotationReason},
    },
    crypto::{OpaqueId, PublicId},
    dsmr::{self, ParseOptions},
    mqtt::{self, BrokerUrl, LinkConfig, LinkEvent, LinkHandle},
    topics::{self, InboxItem},
    view::ViewSpec,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::{mpsc, watch};

use crate::{
    config::{AgentConfig, SourceKind},
    follower::{Follower, StoredThread},
    identity::{DeviceIdentity, write_private},
    outbox::OutboxPump,
    pairing::{PairingService, PairingStep, new_offer, offer_link},
    source::{RawTelegram, SourceStatus, now_unix_ms},
    status::{ConsentStatusLine, Status},
    store::{OutboxMessage, Store, StoreError},
    views::{StoredView, ViewChannel},
};

#[derive(Debug, Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
    #[error("broker: {0}")]
    Link(String),
    #[error("state: {0}")]
    State(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OwnerRecord {
    owner: String,
    paired_at: u64,
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    Shutdown,
    /// State changed identity (unpaired) or must be reloaded: start a new session.
    Restart,
}

/// What a handler asks of the session loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The identity changed (unpaired): start a new session.
    Restart,
}

pub struct Agent {
    cfg: AgentConfig,
    store: Store,
    id: DeviceIdentity,
    follower: Option<Follower>,
    views: BTreeMap<String, ViewChannel>,
    pairing: PairingService,
    pump: OutboxPump,
    link: Option<LinkHandle>,
    status: Status,
    broker_hint: String,
    last_status_write: u64,
    /// Messages in the outbox, as of the last pump.
    outbox_depth: u64,
}

fn now_s() -> u64 {
    now_unix_ms() / 1000
}

/// Token range for publishes that bypass the outbox (pairing replies): never acknowledged
/// to the pump.
const EPHEMERAL_TOKEN: u64 = u64::MAX;

/// Outbox depth at which a source that can wait (replay, simulator) is no longer read until
/// the broker has taken some: without it a source faster than the broker fills the outbox
/// (disk and cache) without bound. A serial meter is never made to wait: its telegrams go
/// to the durable outbox whatever its depth (at 1 Hz the disk is the only limit that
/// matters), and the port reader must keep reading.
pub const OUTBOX_HIGH: u64 = 1024;

impl Agent {
    /// Opens the state (creating the identity on first start) and re-verifies everything.
    pub fn open(cfg: AgentConfig, broker_hint: String) -> Result<Self, AgentError> {
        std::fs::create_dir_all(&cfg.state_dir)
            .map_err(|e| AgentError::State(format!("{}: {e}", cfg.state_dir.display())))?;
        let (id, created) = DeviceIdentity::load_or_create(&cfg.identity_path(), cfg.kem_suite()?)?;
        if created {
            tracing::info!(device = %id.public().opaque_id(), "created a new device identity");
        }
        let store = Store::open(&cfg.db_path())?;
        let follower = match store.get::<OwnerRecord>("owner")? {
            None => None,
            Some(o) => {
                let owner = parse_public(&o.owner)
                    .ok_or_else(|| AgentError::State("stored owner key is damaged".into()))?;
                let stored: Vec<StoredThread> = store
                    .scan::<StoredThread>("threads/")?
                    .into_iter()
                    .map(|(_, t)| t)
                    .collect();
                Some(
                    Follower::restore(owner, id.public(), &id.kem, stored)
                        .map_err(|e| AgentError::State(e.to_string()))?,
                )
            }
        };
        let mut views = BTreeMap::new();
        for (key, v) in store.scan::<StoredView>("views/")? {
            let v = ViewChannel::from_stored(v)
                .map_err(|e| AgentError::State(format!("{key}: {e}")))?;
            views.insert(v.key(), v);
        }
        let pairing = PairingService::new(
            cfg.offer_path(),
            id.public(),
            cfg.pairing.max_attempts_per_minute,
        );
        let mut status = Status::new(id.public());
        status.broker_hint = Some(broker_hint.clone());
        status.paired_owner = follower.as_ref().map(|f| f.owner().to_hex());
        let outbox_depth = store.outbox_len()?;
        Ok(Self {
            cfg,
            store,
            id,
            follower,
            views,
            pairing,
            pump: OutboxPump::default(),
            link: None,
            status,
            broker_hint,
            last_status_write: 0,
            outbox_depth,
        })
    }

    pub fn device(&self) -> PublicId {
        self.id.public()
    }

    pub fn is_paired(&self) -> bool {
        self.follower.is_some()
    }

    /// The topics this device listens on.
    pub fn subscriptions(&self) -> Vec<String> {
        let me = self.id.public().opaque_id();
        let mut subs = vec![topics::pair_requests(&me), topics::inbox_filter(&me)];
        if let Some(f) = &self.follower {
            subs.extend(f.thread_ids().map(topics::log_filter));
        }
        subs
    }

    /// Makes sure a valid pairing code exists while unpaired; returns it when new.
    pub fn ensure_pairing_offer(&mut self) -> Result<Option<String>, AgentError> {
        if self.is_paired() {
            return Ok(None);
        }
        let now = now_s();
        if let Some((_, exp)) = offer_link(&self.cfg.offer_path(), self.device())
            && exp > now + 30
        {
            return Ok(None);
        }
        let link = new_offer(
            &self.cfg.offer_path(),
            self.device(),
            &self.broker_hint,
            &self.cfg.pairing.label,
            now + self.cfg.pairing.offer_ttl_s,
        )
        .map_err(AgentError::State)?;
        Ok(Some(link.to_string()))
    }

    /// Whether to take telegrams from the source now (see [`OUTBOX_HIGH`]).
    pub fn accepts_telegrams(&self) -> bool {
        self.cfg.meter.source == SourceKind::Serial || self.outbox_depth < OUTBOX_HIGH
    }

    /// Messages in the outbox, as of the last pump.
    pub fn outbox_depth(&self) -> u64 {
        self.outbox_depth
    }

    pub fn attach_link(&mut self, link: LinkHandle) {
        self.link = Some(link);
    }

    fn publish_now(&self, topic: String, bytes: Vec<u8>) {
        if let Some(l) = &self.link {
            let _ = l.publish(EPHEMERAL_TOKEN, topic, bytes, false, Some(300));
        }
    }

    // ------------------------------------------------------------------ telegrams

    /// Parses a telegram, derives each view's payloads, seals and stores them.
    pub fn on_telegram(&mut self, raw: &RawTelegram) -> Result<(), AgentError> {
        self.on_telegrams(std::slice::from_ref(raw))
    }

    /// Like [`Self::on_telegram`] for telegrams that queued up (a replay at full speed, a
    /// slow disk): all their records are sealed in order and stored in one transaction,
    /// so one disk sync serves them all.
    pub fn on_telegrams(&mut self, raws: &[RawTelegram]) -> Result<(), AgentError> {
        let mut produced = Vec::new();
        for raw in raws {
            self.status.meter_seen = true;
            self.status.last_telegram_ms = Some(raw.received_at_ms);
            self.status.telegrams += 1;
            let telegram = match dsmr::parse(&raw.bytes, ParseOptions::default()) {
                Ok(t) => t,
                Err(e) => {
                    self.status.parse_errors += 1;
                    tracing::warn!(error = %e, "telegram dropped");
                    continue;
                }
            };
            for (key, view) in self.views.iter_mut() {
                for p in view.push(&telegram, raw.received_at_ms) {
                    produced.push((key.clone(), p));
                }
            }
        }
        self.seal_and_store(produced)
    }

    fn seal_and_store(
        &mut self,
        produced: Vec<(String, p1consent_shared::view::ViewPayload)>,
    ) -> Result<(), AgentError> {
        if produced.is_empty() {
            return Ok(());
        }
        let now = now_unix_ms();
        let mut msgs = Vec::new();
        let mut touched = std::collections::BTreeSet::new();
        for (key, payload) in produced {
            let Some(view) = self.views.get_mut(&key) else {
                continue;
            };
            let bytes = match payload.to_bytes() {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(view = %key, error = %e, "payload cannot be encoded; skipped");
                    continue;
                }
            };
            if bytes.len() > MAX_PLAINTEXT {
                tracing::warn!(view = %key, size = bytes.len(), "payload too large; skipped");
                continue;
            }
            let record = view
                .writer
                .seal(&self.id.signing, now, &bytes)
                .map_err(|e| AgentError::State(e.to_string()))?;
            msgs.push(OutboxMessage {
                topic: topics::channel(&view.channel_id()),
                payload: record,
                retain: false,
                expiry_s: Some(view.expiry_s),
            });
            touched.insert(key);
        }
        let views = &self.views;
        self.store.write(|tx| {
            for key in &touched {
                if let Some(v) = views.get(key) {
                    tx.put(&format!("views/{key}"), &v.to_stored())?;
                }
            }
            for m in &msgs {
                tx.enqueue(m)?;
            }
            Ok(())
        })?;
        self.status.sealed += msgs.len() as u64;
        self.pump();
        Ok(())
    }

    // ------------------------------------------------------------------ broker

    pub fn on_link_event(&mut self, ev: LinkEvent) -> Result<Flow, AgentError> {
        match ev {
            LinkEvent::Connected => {
                self.status.broker_connected = true;
                let connection = self.link.as_ref().map_or(0, LinkHandle::connection);
                self.pump.on_connected(connection);
                tracing::info!("connected to the broker");
            }
            LinkEvent::Disconnected(reason) => {
                if self.status.broker_connected {
                    tracing::warn!(%reason, "lost the broker; will reconnect");
                }
                self.status.broker_connected = false;
                self.pump.on_disconnected();
            }
            LinkEvent::Acked(token) => self.pump.on_acked(token),
            LinkEvent::Subscribed(_) => {}
            LinkEvent::Dropped { topic, size } => {
                tracing::warn!(%topic, size, "oversize message from the broker dropped");
            }
            LinkEvent::Message(m) => return self.on_message(&m.topic, &m.payload),
        }
        self.pump();
        Ok(Flow::Continue)
    }

    fn on_message(&mut self, topic: &str, payload: &[u8]) -> Result<Flow, AgentError> {
        if payload.is_empty() {
            return Ok(Flow::Continue);
        }
        let me = self.device().opaque_id();
        if topic == topics::pair_requests(&me) {
            return self.on_pairing(payload);
        }
        if let Some(item) = InboxItem::parse(topic, &me) {
            if let InboxItem::Thread(_) = item {
                self.on_envelope(payload)?;
            }
            return Ok(Flow::Continue);
        }
        if let Some(tid) = log_thread(topic) {
            return self.on_entry(&tid, payload);
        }
        tracing::debug!(%topic, "ignored message on an unexpected topic");
        Ok(Flow::Continue)
    }

    fn on_pairing(&mut self, payload: &[u8]) -> Result<Flow, AgentError> {
        if self.is_paired() {
            tracing::info!("pairing message ignored: already paired (unpair first)");
            return Ok(Flow::Continue);
        }
        match self.pairing.on_message(payload, now_s(), &self.id) {
            Err(e) => tracing::warn!(error = %e, "pairing message rejected"),
            Ok(PairingStep::Nothing) => {}
            Ok(PairingStep::Reply { topic, bytes }) => self.publish_now(topic, bytes),
            Ok(PairingStep::Paired {
                owner,
                topic,
                bytes,
            }) => {
                self.publish_now(topic, bytes);
                self.store.put(
                    "owner",
                    &OwnerRecord {
                        owner: owner.owner.to_hex(),
                        paired_at: owner.paired_at,
                    },
                )?;
                let _ = std::fs::remove_file(self.cfg.qr_svg_path());
                tracing::info!(owner = %owner.owner.opaque_id(), "paired with the owner");
                self.follower = Some(Follower::new(owner.owner, self.device()));
                self.status.paired_owner = Some(owner.owner.to_hex());
            }
        }
        Ok(Flow::Continue)
    }

    fn on_envelope(&mut self, payload: &[u8]) -> Result<(), AgentError> {
        let Some(f) = self.follower.as_mut() else {
            tracing::warn!("thread envelope ignored: not paired");
            return Ok(());
        };
        match f.accept_envelope(payload, &self.id.kem) {
            Err(e) => tracing::warn!(error = %e, "thread envelope rejected"),
            Ok(None) => {}
            Ok(Some(tid)) => {
                self.persist_thread(&tid)?;
                if let Some(l) = &self.link {
                    let _ = l.subscribe(topics::log_filter(&tid));
                }
                tracing::info!(thread = %tid, "following a new consent thread");
            }
        }
        Ok(())
    }

    fn on_entry(&mut self, tid: &OpaqueId, payload: &[u8]) -> Result<Flow, AgentError> {
        let Some(f) = self.follower.as_mut() else {
            return Ok(Flow::Continue);
        };
        match f.accept_entry(tid, payload) {
            Err(e) => {
                tracing::warn!(thread = %tid, error = %e, "log entry rejected");
                Ok(Flow::Continue)
            }
            Ok(0) => Ok(Flow::Continue),
            Ok(_) => {
                self.persist_thread(tid)?;
                self.reconcile()
            }
        }
    }

    fn persist_thread(&self, tid: &OpaqueId) -> Result<(), AgentError> {
        if let Some(st) = self.follower.as_ref().and_then(|f| f.stored(tid)) {
            self.store.put(&format!("threads/{tid}"), &st)?;
        }
        Ok(())
    }

    // ------------------------------------------------------------------ consent

    /// Makes the channels' readers match the consents active now.
    pub fn reconcile(&mut self) -> Result<Flow, AgentError> {
        let Some(f) = self.follower.as_ref() else {
            return Ok(Flow::Continue);
        };
        let now_ms = now_unix_ms();
        let state = f.fold(now_ms / 1000);
        let me = self.device();
        if state.devices.get(&me).is_some_and(|d| !d.is_paired()) {
            return self.unpair();
        }
        let desired: BTreeMap<OpaqueId, ConsentRecord> = state
            .consents
            .values()
            .filter(|c| {
                c.grant.device == me
                    && c.status == ConsentStatus::Active
                    && f.thread(&c.thread_id).is_some_and(|t| t.has_provider)
            })
            .map(|c| (c.grant.consent_id, c.clone()))
            .collect();
        let mut msgs: Vec<OutboxMessage> = Vec::new();
        let mut acks: Vec<(OpaqueId, Event)> = Vec::new();
        let mut touched = std::collections::BTreeSet::new();

        // Remove readers whose consent ended: rotate their views.
        for (key, view) in self.views.iter_mut() {
            let (keep, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut view.readers)
                .into_iter()
                .partition(|r| desired.contains_key(&r.consent_id));
            view.readers = keep;
            if gone.is_empty() {
                continue;
            }
            let rotation = view
                .writer
                .rotate(&self.id.signing, now_ms, &view.readers)
                .map_err(|e| AgentError::State(e.to_string()))?;
            push_rotation(&mut msgs, view.channel_id(), rotation);
            for r in &gone {
                let record = state.consents.get(&r.consent_id);
                let reason = match record.map(|c| c.status) {
                    Some(ConsentStatus::Expired { .. }) => RotationReason::Expired,
                    _ => RotationReason::Revoked,
                };
                if let Some(c) = record {
                    let provider = c.grant.request.content().provider.opaque_id();
                    msgs.push(clear_retained(topics::inbox(
                        &provider,
                        &InboxItem::Key(r.consent_id),
                    )));
                    acks.push((
                        c.thread_id,
                        Event::KeyRotated {
                            channel_id: view.channel_id(),
                            epoch: view.writer.epoch(),
                            reason,
                        },
                    ));
                }
                tracing::info!(consent = %r.consent_id, view = %key, ?reason, "reader removed; key rotated");
            }
            touched.insert(key.clone());
        }

        // Add readers for consents without a key yet.
        let delivered: std::collections::BTreeSet<OpaqueId> = self
            .views
            .values()
            .flat_map(|v| v.readers.iter().map(|r| r.consent_id))
            .collect();
        for (cid, c) in &desired {
            if delivered.contains(cid) {
                continue;
            }
            let spec = ViewSpec::new(c.grant.fields, c.grant.resolution);
            let key = spec.key();
            let default_expiry = self.cfg.default_data_expiry_s;
            let view = self
                .views
                .entry(key.clone())
                .or_insert_with(|| ViewChannel::new(spec, default_expiry));
            // A new reader gets a fresh epoch: it cannot open records sealed before its consent.
            if view.writer.next_seq() > 0 {
                let rotation = view
                    .writer
                    .rotate(&self.id.signing, now_ms, &view.readers)
                    .map_err(|e| AgentError::State(e.to_string()))?;
                push_rotation(&mut msgs, view.channel_id(), rotation);
            }
            let request = c.grant.request.content();
            let (delivery, grant) = view
                .writer
                .deliver(&self.id.signing, now_ms, *cid, &request.provider_kem)
                .map_err(|e| AgentError::State(e.to_string()))?;
            view.readers.push(grant);
            msgs.push(OutboxMessage {
                topic: topics::inbox(&request.provider.opaque_id(), &InboxItem::Key(*cid)),
                payload: delivery,
                retain: true,
                expiry_s: None,
            });
            acks.push((
                c.thread_id,
                Event::KeyDelivered {
                    consent_id: *cid,
                    channel_id: view.channel_id(),
                    epoch: view.writer.epoch(),
                },
            ));
            tracing::info!(consent = %cid, view = %key, provider = %request.controller, "key delivered");
            touched.insert(key);
        }
        if touched.is_empty() {
            self.update_consent_status(&desired);
            return Ok(Flow::Continue);
        }
        // Data on the broker lives as long as the strictest retention among the readers.
        for key in &touched {
            if let Some(view) = self.views.get_mut(key) {
                let min_days = view
                    .readers
                    .iter()
                    .filter_map(|r| desired.get(&r.consent_id))
                    .map(|c| c.grant.request.content().retention_days)
                    .min();
                view.expiry_s = match min_days {
                    Some(d) => u32::try_from(u64::from(d.max(1)) * 86_400).unwrap_or(u32::MAX),
                    None => self.cfg.default_data_expiry_s,
                };
            }
        }
        self.commit_changes(touched, msgs, acks, now_ms)?;
        self.update_consent_status(&desired);
        Ok(Flow::Continue)
    }

    /// Appends the device's acknowledgements and stores views, threads and outbox in one
    /// transaction.
    fn commit_changes(
        &mut self,
        touched: std::collections::BTreeSet<String>,
        mut msgs: Vec<OutboxMessage>,
        acks: Vec<(OpaqueId, Event)>,
        now_ms: u64,
    ) -> Result<(), AgentError> {
        let mut ack_threads = std::collections::BTreeSet::new();
        if let Some(f) = self.follower.as_mut() {
            for (tid, ev) in acks {
                match f.append_own(&tid, &self.id.signing, now_ms, &ev) {
                    Ok(bytes) => {
                        let seq = p1consent_shared::consent::log::EntryHeader::peek(&bytes)
                            .map(|h| h.seq)
                            .unwrap_or(0);
                        msgs.push(OutboxMessage {
                            topic: topics::log_entry(&tid, 2, seq),
                            payload: bytes,
                            retain: true,
                            expiry_s: None,
                        });
                        ack_threads.insert(tid);
                    }
                    Err(e) => {
                        tracing::warn!(thread = %tid, error = %e, "cannot append acknowledgement")
                    }
                }
            }
        }
        let stored_threads: Vec<(OpaqueId, StoredThread)> = ack_threads
            .iter()
            .filter_map(|t| {
                self.follower
                    .as_ref()
                    .and_then(|f| f.stored(t))
                    .map(|s| (*t, s))
            })
            .collect();
        let views = &self.views;
        self.store.write(|tx| {
            for key in &touched {
                match views.get(key) {
                    Some(v) => tx.put(&format!("views/{key}"), &v.to_stored())?,
                    None => tx.remove(&format!("views/{key}"))?,
                }
            }
            for (tid, st) in &stored_threads {
                tx.put(&format!("threads/{tid}"), st)?;
            }
            for m in &msgs {
                tx.enqueue(m)?;
            }
            Ok(())
        })?;
        self.pump();
        Ok(())
    }

    fn update_consent_status(&mut self, desired: &BTreeMap<OpaqueId, ConsentRecord>) {
        self.status.consents = self
            .views
            .values()
            .flat_map(|v| {
                v.readers.iter().filter_map(|r| {
                    desired.get(&r.consent_id).map(|c| ConsentStatusLine {
                        consent: r.consent_id.to_hex(),
                        provider: c.grant.request.content().controller.clone(),
                        view: v.key(),
                        channel: v.channel_id().to_hex(),
                        epoch: v.writer.epoch(),
                        expires_at: c.grant.expires_at,
                    })
                })
            })
            .collect();
    }

    /// The owner unpaired this device: cut every reader off, forget the owner, and start
    /// over with a new identity (a fresh pairing code follows).
    fn unpair(&mut self) -> Result<Flow, AgentError> {
        let now_ms = now_unix_ms();
        let mut msgs = Vec::new();
        let state = self
            .follower
            .as_ref()
            .map(|f| f.fold(now_ms / 1000))
            .unwrap_or_default();
        for view in self.views.values_mut() {
            if view.readers.is_empty() {
                continue;
            }
            for r in &view.readers {
                if let Some(c) = state.consents.get(&r.consent_id) {
                    let provider = c.grant.request.content().provider.opaque_id();
                    msgs.push(clear_retained(topics::inbox(
                        &provider,
                        &InboxItem::Key(r.consent_id),
                    )));
                }
            }
            view.readers.clear();
            let rotation = view
                .writer
                .rotate(&self.id.signing, now_ms, &[])
                .map_err(|e| AgentError::State(e.to_string()))?;
            push_rotation(&mut msgs, view.channel_id(), rotation);
        }
        let keys: Vec<String> = ["owner".to_string()]
            .into_iter()
            .chain(self.views.keys().map(|k| format!("views/{k}")))
            .chain(
                self.follower
                    .iter()
                    .flat_map(|f| f.thread_ids().map(|t| format!("threads/{t}")))
                    .collect::<Vec<_>>(),
            )
            .collect();
        self.store.write(|tx| {
            for m in &msgs {
                tx.enqueue(m)?;
            }
            for k in &keys {
                tx.remove(k)?;
            }
            Ok(())
        })?;
        let fresh = DeviceIdentity::generate(self.cfg.kem_suite()?);
        fresh.save(&self.cfg.identity_path())?;
        tracing::warn!(
            old = %self.device().opaque_id(),
            new = %fresh.public().opaque_id(),
            "unpaired by the owner: all readers cut off; new identity created"
        );
        Ok(Flow::Restart)
    }

    // ------------------------------------------------------------------ timer

    /// Once a second: expiry by the agent's own clock, closing aggregation windows,
    /// publishing, and the status file.
    pub fn on_tick(&mut self, source: &SourceStatus) -> Result<Flow, AgentError> {
        let end = self.reconcile()?;
        if end == Flow::Restart {
            return Ok(end);
        }
        let now = now_unix_ms();
        let mut produced = Vec::new();
        for (key, view) in self.views.iter_mut() {
            for p in view.flush(now) {
                produced.push((key.clone(), p));
            }
        }
        self.seal_and_store(produced)?;
        self.pump();
        if now >= self.last_status_write + 2000 {
            self.last_status_write = now;
            self.write_status(source);
        }
        Ok(Flow::Continue)
    }

    pub fn write_status(&mut self, source: &SourceStatus) {
        self.status.source_connected = source.connected;
        self.status.source_detail = source.detail.clone();
        self.status.source_last_error = source.last_error.clone();
        self.status.outbox_depth = self.store.outbox_len().unwrap_or(0);
        self.status.updated_ms = now_unix_ms();
        self.status.pairing_link = if self.is_paired() {
            None
        } else {
            offer_link(&self.cfg.offer_path(), self.device()).map(|(l, _)| l.to_string())
        };
        if let Ok(text) = serde_json::to_vec_pretty(&self.status)
            && let Err(e) = write_private(&self.cfg.status_path(), &text)
        {
            tracing::warn!(error = %e, "cannot write the status file");
        }
    }

    fn pump(&mut self) {
        if let Some(link) = &self.link
            && let Err(e) = self.pump.pump(&self.store, link)
        {
            tracing::error!(error = %e, "outbox");
        }
        match self.store.outbox_len() {
            Ok(n) => self.outbox_depth = n,
            Err(e) => tracing::error!(error = %e, "outbox"),
        }
    }
}

fn push_rotation(msgs: &mut Vec<OutboxMessage>, channel: OpaqueId, rotation: Vec<u8>) {
    msgs.push(OutboxMessage {
        topic: topics::channel(&channel),
        payload: rotation.clone(),
        retain: false,
        expiry_s: None,
    });
    msgs.push(OutboxMessage {
        topic: topics::channel_epoch(&channel),
        payload: rotation,
        retain: true,
        expiry_s: None,
    });
}

fn clear_retained(topic: String) -> OutboxMessage {
    OutboxMessage {
        topic,
        payload: Vec::new(),
        retain: true,
        expiry_s: None,
    }
}

fn parse_public(hex_str: &str) -> Option<PublicId> {
    let v = p1consent_shared::crypto::unhex(hex_str)?;
    PublicId::from_bytes(v.try_into().ok()?).ok()
}

/// `p1c/v1/log/<thread>/<role>/<seq>` → thread id.
fn log_thread(topic: &str) -> Option<OpaqueId> {
    let rest = topic.strip_prefix(&format!("{}/log/", topics::PREFIX))?;
    OpaqueId::from_hex(rest.split('/').next()?)
}

/// The broker address for the QR code.
pub fn broker_hint(cfg: &AgentConfig) -> String {
    if let Some(a) = &cfg.broker.advertise {
        return a.clone();
    }
    if let Some(u) = &cfg.broker.url {
        return u.clone();
    }
    let l = cfg.broker.embedded_listen;
    if l.ip().is_unspecified() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "raspberrypi".into());
        format!("mqtt://{host}.local:{}", l.port())
    } else {
        format!("mqtt://{l}")
    }
}

/// Runs the agent until `shutdown` turns true. Starts the embedded broker if no external one
/// is configured, and the telegram source.
pub async fn run(cfg: AgentConfig, mut shutdown: watch::Receiver<bool>) -> Result<(), AgentError> {
    let url: BrokerUrl = match cfg.broker_url()? {
        Some(u) => u,
        None => {
            crate::broker::start_embedded(cfg.broker.embedded_listen)?;
            let l = cfg.broker.embedded_listen;
            let host = if l.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                l.ip().to_string()
            };
            tracing::info!(listen = %l, "embedded broker started");
            BrokerUrl {
                tls: false,
                host,
                port: l.port(),
                username: None,
                password: None,
            }
        }
    };
    let hint = broker_hint(&cfg);
    let (tx, mut rx) = mpsc::channel::<RawTelegram>(64);
    let (status_tx, status_rx) = SourceStatus::channel();
    let cancel = crate::source::CancellationToken::new();
    let source_task = tokio::spawn(crate::meter::run_configured(
        cfg.clone(),
        tx,
        status_tx,
        cancel.clone(),
    ));
    let result = loop {
        match session(&cfg, &url, &hint, &mut rx, &status_rx, &mut shutdown).await {
            Ok(SessionEnd::Shutdown) => break Ok(()),
            Ok(SessionEnd::Restart) => continue,
            Err(e) => {
                // Crash-only: reload everything from disk after a short pause.
                tracing::error!(error = %e, "agent session failed; restarting it");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = shutdown.changed() => break Ok(()),
                }
            }
        }
    };
    cancel.cancel();
    let _ = source_task.await;
    result
}

/// Most telegrams sealed in one transaction when they queue up.
pub const TELEGRAM_BATCH: usize = 64;

async fn session(
    cfg: &AgentConfig,
    url: &BrokerUrl,
    hint: &str,
    rx: &mut mpsc::Receiver<RawTelegram>,
    source: &watch::Receiver<SourceStatus>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<SessionEnd, AgentError> {
    let mut agent = Agent::open(cfg.clone(), hint.to_string())?;
    // Finish what a crash interrupted before sealing anything: a revocation that was
    // stored but not yet acted on must rotate the key before the next telegram.
    if agent.reconcile()? == Flow::Restart {
        return Ok(SessionEnd::Restart);
    }
    if let Some(link) = agent.ensure_pairing_offer()? {
        crate::qr::show_pairing(&link, &cfg.qr_svg_path());
    }
    let mut lc = LinkConfig::new(
        url.clone(),
        format!("p1c-agent-{}", agent.device().opaque_id()),
    );
    lc.subscriptions = agent.subscriptions();
    let mut link = mqtt::connect(lc).map_err(|e| AgentError::Link(e.to_string()))?;
    agent.attach_link(link.handle.clone());
    agent.write_status(&source.borrow());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A source that ended (a replay played once) stays ended: stop polling it, so broker
    // events (acknowledgements draining the outbox) are handled without delay.
    let mut source_open = true;
    loop {
        let end = tokio::select! {
            // Back-pressure: a waiting source stops at its bounded channel.
            t = rx.recv(), if source_open && agent.accepts_telegrams() => match t {
                Some(t) => {
                    let mut batch = vec![t];
                    while batch.len() < TELEGRAM_BATCH {
                        match rx.try_recv() {
                            Ok(t) => batch.push(t),
                            Err(_) => break,
                        }
                    }
                    agent.on_telegrams(&batch)?;
                    Flow::Continue
                }
                None => { source_open = false; Flow::Continue }
            },
            ev = link.events.recv() => match ev {
                Some(ev) => agent.on_link_event(ev)?,
                None => return Err(AgentError::Link("the MQTT link stopped".into())),
            },
            _ = tick.tick() => {
                if let Some(l) = agent.ensure_pairing_offer()? {
                    crate::qr::show_pairing(&l, &cfg.qr_svg_path());
                }
                let s = source.borrow().clone();
                agent.on_tick(&s)?
            }
            _ = shutdown.changed() => {
                agent.write_status(&source.borrow());
                return Ok(SessionEnd::Shutdown);
            }
        };
        if end == Flow::Restart {
            return Ok(SessionEnd::Restart);
        }
    }
}

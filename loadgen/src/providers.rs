//! The providers side: M providers, each one MQTT connection subscribed to its inbox and to
//! every channel, each authorised on every meter's channel. Every record is verified and
//! opened with [`ChannelReader`] and its plaintext decoded as a view payload, as the provider
//! SDK does.
//!
//! Opening is spread over `shards` tasks by meter (a channel's records stay in order on one
//! shard), so it can use more than one core.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use p1consent_shared::{
    channel::{ChannelReader, OpenError, Opened},
    crypto::{KemSecretKey, OpaqueId, PublicId},
    mqtt::{self, BrokerUrl, LinkConfig, LinkEvent},
    topics::{self, PREFIX},
    view::ViewPayload,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::{LoadError, ids::Ids, meters::new_histogram, report::LatencySummary, unix_us};

/// Records held for a channel whose key delivery has not arrived yet.
const MAX_PENDING: usize = 64;
/// First record seq counted in the steady-state latency.
const STEADY_FROM_SEQ: u64 = 5;

#[derive(Debug, Clone)]
pub struct ProvidersArgs {
    pub ids: Ids,
    pub meters: u64,
    pub providers: u64,
    pub broker: BrokerUrl,
    pub shards: u64,
}

/// What the providers process reports (one JSON line on stdout).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProvidersReport {
    pub providers: u64,
    pub readers: u64,
    /// Key deliveries verified and unwrapped.
    pub deliveries_ok: u64,
    pub deliveries_failed: u64,
    /// Data records verified, opened and decoded, per reader (index provider × meters + meter).
    pub opened: Vec<u64>,
    pub opened_total: u64,
    /// Records the reader had already accepted (at-least-once redelivery).
    pub duplicates: u64,
    pub reordered: u64,
    /// Sequence gaps seen and records missing in them (accepted past, then counted as lost).
    pub gaps: u64,
    pub missing_in_gaps: u64,
    /// Any other refusal (bad signature, tampered, wrong channel, …), by cause.
    pub refused: BTreeMap<String, u64>,
    /// Opened records whose plaintext is not a valid view payload.
    pub decode_errors: u64,
    /// Records for unknown channels, or dropped while waiting too long for a key.
    pub unroutable: u64,
    /// Produced (device timestamp) → opened plaintext.
    pub latency: LatencySummary,
    /// The same from each meter's record seq 5 on: without the start, when records queue
    /// behind the key deliveries being unwrapped.
    pub latency_steady: LatencySummary,
    pub first_open_unix_ms: u64,
    pub last_open_unix_ms: u64,
}

enum Slot {
    Waiting(Vec<Vec<u8>>),
    Open(Box<ChannelReader>),
}

enum Work {
    Delivery { j: u64, i: u64, bytes: Vec<u8> },
    Record { j: u64, i: u64, bytes: Vec<u8> },
}

struct Shard {
    devices: Arc<Vec<PublicId>>,
    kems: Arc<Vec<KemSecretKey>>,
    meters: u64,
    slots: HashMap<(u64, u64), Slot>,
    report: ProvidersReport,
    opened: HashMap<(u64, u64), u64>,
    latency: Histogram<u64>,
    latency_steady: Histogram<u64>,
}

impl Shard {
    fn on_delivery(&mut self, j: u64, i: u64, bytes: &[u8]) {
        let (Some(device), Some(kem)) = (self.devices.get(i as usize), self.kems.get(j as usize))
        else {
            self.report.unroutable += 1;
            return;
        };
        let reader = match ChannelReader::from_delivery(bytes, device, kem) {
            Ok(r) => r,
            Err(_) => {
                self.report.deliveries_failed += 1;
                return;
            }
        };
        self.report.deliveries_ok += 1;
        let waiting = match self.slots.insert((j, i), Slot::Open(Box::new(reader))) {
            Some(Slot::Waiting(w)) => w,
            _ => Vec::new(),
        };
        for rec in waiting {
            self.on_record(j, i, rec);
        }
    }

    fn on_record(&mut self, j: u64, i: u64, bytes: Vec<u8>) {
        let slot = self
            .slots
            .entry((j, i))
            .or_insert_with(|| Slot::Waiting(Vec::new()));
        let reader = match slot {
            Slot::Waiting(w) => {
                if w.len() < MAX_PENDING {
                    w.push(bytes);
                } else {
                    self.report.unroutable += 1;
                }
                return;
            }
            Slot::Open(r) => r,
        };
        let result = match reader.open(&bytes) {
            Err(OpenError::Gap { expected, got }) => {
                self.report.gaps += 1;
                self.report.missing_in_gaps += got.saturating_sub(expected);
                reader.open_accepting_gap(&bytes)
            }
            other => other,
        };
        match result {
            Ok(Opened::Data {
                seq,
                timestamp_ms,
                plaintext,
                ..
            }) => {
                let latency = unix_us().saturating_sub(timestamp_ms.saturating_mul(1000));
                self.latency.saturating_record(latency.max(1));
                if seq >= STEADY_FROM_SEQ {
                    self.latency_steady.saturating_record(latency.max(1));
                }
                if ViewPayload::from_bytes(&plaintext).is_err() {
                    self.report.decode_errors += 1;
                }
                *self.opened.entry((j, i)).or_default() += 1;
                self.report.opened_total += 1;
                let now_ms = unix_us() / 1000;
                if self.report.first_open_unix_ms == 0 {
                    self.report.first_open_unix_ms = now_ms;
                }
                self.report.last_open_unix_ms = now_ms;
            }
            Ok(Opened::Rotated { .. }) => {}
            Err(OpenError::Duplicate { .. }) => self.report.duplicates += 1,
            Err(OpenError::Reordered { .. }) => self.report.reordered += 1,
            Err(e) => *self.report.refused.entry(refusal(&e)).or_default() += 1,
        }
    }
}

/// A stable name per refusal cause (the variant, without its numbers).
fn refusal(e: &OpenError) -> String {
    let s = format!("{e:?}");
    s.split([' ', '(', '{'])
        .next()
        .unwrap_or("unknown")
        .to_string()
}

/// Sets up the providers, prints nothing; `ready` fires once every provider has received its
/// own probe (subscriptions are in place). Runs until `stop` fires and then until no message
/// arrived for `idle` (at most `drain_max`), and returns the merged report.
pub async fn run_providers(
    args: ProvidersArgs,
    ready: oneshot::Sender<()>,
    stop: oneshot::Receiver<()>,
    idle: Duration,
    drain_max: Duration,
) -> Result<ProvidersReport, LoadError> {
    if args.meters == 0 || args.providers == 0 || args.shards == 0 {
        return Err(LoadError::Arg(
            "meters, providers and shards must be at least 1".into(),
        ));
    }
    let ids = args.ids;
    let devices: Arc<Vec<PublicId>> =
        Arc::new((0..args.meters).map(|i| ids.meter_public(i)).collect());
    let kems: Arc<Vec<KemSecretKey>> =
        Arc::new((0..args.providers).map(|j| ids.provider_kem(j)).collect());
    let channels: Arc<HashMap<OpaqueId, u64>> =
        Arc::new((0..args.meters).map(|i| (ids.channel_id(i), i)).collect());
    let consents: Arc<HashMap<OpaqueId, (u64, u64)>> = Arc::new(
        (0..args.meters)
            .flat_map(|i| (0..args.providers).map(move |j| (ids.consent_id(i, j), (i, j))))
            .collect(),
    );

    // Shards.
    let mut shard_tx = Vec::new();
    let mut shard_tasks = Vec::new();
    for _ in 0..args.shards {
        let (tx, mut rx) = mpsc::unbounded_channel::<Work>();
        let mut shard = Shard {
            devices: devices.clone(),
            kems: kems.clone(),
            meters: args.meters,
            slots: HashMap::new(),
            report: ProvidersReport::default(),
            opened: HashMap::new(),
            latency: new_histogram()?,
            latency_steady: new_histogram()?,
        };
        shard_tx.push(tx);
        shard_tasks.push(tokio::spawn(async move {
            while let Some(w) = rx.recv().await {
                match w {
                    Work::Delivery { j, i, bytes } => shard.on_delivery(j, i, &bytes),
                    Work::Record { j, i, bytes } => shard.on_record(j, i, bytes),
                }
            }
            shard
        }));
    }

    // One connection per provider.
    let last_msg = Arc::new(AtomicU64::new(unix_us()));
    let unroutable = Arc::new(AtomicU64::new(0));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<u64>();
    let mut conn_tasks = Vec::new();
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let channel_prefix = format!("{PREFIX}/ch/");
    for j in 0..args.providers {
        let pid = ids.provider_id(j);
        let mut cfg = LinkConfig::new(
            args.broker.clone(),
            format!("lg-p-{}-{j}", &ids.run.to_hex()[..8]),
        );
        cfg.subscriptions = vec![topics::inbox_filter(&pid), format!("{channel_prefix}+")];
        let link = mqtt::connect(cfg).map_err(|e| LoadError::Broker(e.to_string()))?;
        let probe = ids.probe_topic(j);
        let inbox_key_prefix = format!("{PREFIX}/inbox/{pid}/key/");
        let shard_tx = shard_tx.clone();
        let channels = channels.clone();
        let consents = consents.clone();
        let last_msg = last_msg.clone();
        let unroutable = unroutable.clone();
        let ready_tx = ready_tx.clone();
        let channel_prefix = channel_prefix.clone();
        let mut stop_rx = stop_tx.subscribe();
        let shards = args.shards;
        conn_tasks.push(tokio::spawn(async move {
            let handle = link.handle;
            let mut events = link.events;
            let route = |i: u64| &shard_tx[(i % shards) as usize];
            loop {
                let ev = tokio::select! {
                    ev = events.recv() => ev,
                    _ = stop_rx.recv() => None,
                };
                let Some(ev) = ev else { break };
                match ev {
                    LinkEvent::Connected => {
                        let _ =
                            handle.publish(0, probe.clone(), b"probe".to_vec(), false, Some(60));
                    }
                    LinkEvent::Message(m) => {
                        last_msg.store(unix_us(), Ordering::Relaxed);
                        if let Some(cid) = m.topic.strip_prefix(&channel_prefix) {
                            match OpaqueId::from_hex(cid).and_then(|c| channels.get(&c)) {
                                Some(&i) => {
                                    let _ = route(i).send(Work::Record {
                                        j,
                                        i,
                                        bytes: m.payload,
                                    });
                                }
                                None => {
                                    unroutable.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        } else if let Some(cons) = m.topic.strip_prefix(&inbox_key_prefix) {
                            match OpaqueId::from_hex(cons).and_then(|c| consents.get(&c)) {
                                Some(&(i, jj)) if jj == j => {
                                    let _ = route(i).send(Work::Delivery {
                                        j,
                                        i,
                                        bytes: m.payload,
                                    });
                                }
                                _ => {
                                    unroutable.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        } else if m.topic == probe {
                            let _ = ready_tx.send(j);
                        }
                    }
                    _ => {}
                }
            }
        }));
    }
    drop(ready_tx);

    // Ready once every provider saw its own probe.
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < args.providers as usize {
        match tokio::time::timeout(Duration::from_secs(120), ready_rx.recv()).await {
            Ok(Some(j)) => {
                seen.insert(j);
            }
            _ => {
                return Err(LoadError::Broker(format!(
                    "only {} of {} providers subscribed within 120 s",
                    seen.len(),
                    args.providers
                )));
            }
        }
    }
    let _ = ready.send(());

    // Run until told to stop, then drain until the broker has nothing more for us.
    let _ = stop.await;
    let drain_start = Instant::now();
    loop {
        let quiet_us = unix_us().saturating_sub(last_msg.load(Ordering::Relaxed));
        if quiet_us >= idle.as_micros() as u64 || drain_start.elapsed() >= drain_max {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(());
    for t in conn_tasks {
        let _ = t.await;
    }
    drop(shard_tx);

    // Merge.
    let mut report = ProvidersReport {
        providers: args.providers,
        readers: args.meters * args.providers,
        opened: vec![0; (args.meters * args.providers) as usize],
        unroutable: unroutable.load(Ordering::Relaxed),
        ..Default::default()
    };
    let mut latency = new_histogram()?;
    let mut latency_steady = new_histogram()?;
    for t in shard_tasks {
        let Ok(s) = t.await else {
            return Err(LoadError::Result {
                what: "providers",
                detail: "a shard task failed".into(),
            });
        };
        let r = &s.report;
        report.deliveries_ok += r.deliveries_ok;
        report.deliveries_failed += r.deliveries_failed;
        report.opened_total += r.opened_total;
        report.duplicates += r.duplicates;
        report.reordered += r.reordered;
        report.gaps += r.gaps;
        report.missing_in_gaps += r.missing_in_gaps;
        report.decode_errors += r.decode_errors;
        report.unroutable += r.unroutable;
        for (k, v) in &r.refused {
            *report.refused.entry(k.clone()).or_default() += v;
        }
        if r.first_open_unix_ms != 0
            && (report.first_open_unix_ms == 0 || r.first_open_unix_ms < report.first_open_unix_ms)
        {
            report.first_open_unix_ms = r.first_open_unix_ms;
        }
        report.last_open_unix_ms = report.last_open_unix_ms.max(r.last_open_unix_ms);
        for (&(j, i), &n) in &s.opened {
            if let Some(slot) = report.opened.get_mut((j * s.meters + i) as usize) {
                *slot = n;
            }
        }
        // Records still waiting for a key never reached plaintext.
        for slot in s.slots.values() {
            if let Slot::Waiting(w) = slot {
                report.unroutable += w.len() as u64;
            }
        }
        let _ = latency.add(&s.latency);
        let _ = latency_steady.add(&s.latency_steady);
    }
    report.latency = LatencySummary::from_histogram(&latency);
    report.latency_steady = LatencySummary::from_histogram(&latency_steady);
    Ok(report)
}

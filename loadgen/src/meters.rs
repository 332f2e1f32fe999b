//! The meters side: N simulated meters, each with its own device identity, channel and
//! simulator, producing one telegram per second, sealing it as the agent does (parse → raw
//! view with every field → seal) and publishing it at QoS 1.
//!
//! Meters are spread over `conns` MQTT connections (default: one each, as real agents have).
//! The agent's disk outbox is not simulated: this measures the protocol and the broker, not
//! redb (see docs/PERFORMANCE.md, Agent, for the agent with its outbox).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use p1consent_shared::{
    channel::ChannelWriter,
    consent::scope::FieldSet,
    crypto::SigningIdentity,
    dsmr::{self, ParseOptions},
    mqtt::{self, BrokerUrl, LinkConfig, LinkEvent, LinkHandle},
    topics::{self, InboxItem},
    view,
};
use pi_agent::source::simulator::{SimConfig, Simulator};
use serde::{Deserialize, Serialize};

use crate::{LoadError, ids::Ids, report::LatencySummary, unix_us};

/// Records expire at the broker after this long (as the agent's raw views).
const EXPIRY_S: u32 = 300;

#[derive(Debug, Clone)]
pub struct MetersArgs {
    pub ids: Ids,
    pub meters: u64,
    pub providers: u64,
    pub broker: BrokerUrl,
    pub duration: Duration,
    pub conns: u64,
}

/// What the meters process reports (one JSON line on stdout).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetersReport {
    pub meters: u64,
    pub conns: u64,
    /// Connections that were up when the meters started.
    pub conns_connected: u64,
    /// Connection losses seen during the run.
    pub disconnects: u64,
    /// Key deliveries published (meters × providers).
    pub deliveries: u64,
    /// Records sealed and handed to the connection, per meter.
    pub sent: Vec<u64>,
    pub sent_total: u64,
    /// Publishes the broker acknowledged (deliveries included).
    pub acked: u64,
    /// Telegrams that could not be produced (parse, encode or seal failure).
    pub produce_errors: u64,
    /// How late each telegram was produced after its scheduled second (generator lateness,
    /// part of the end-to-end latency since records carry the scheduled time).
    pub lateness: LatencySummary,
    /// Setup time: keys, connections, deliveries.
    pub setup_ms: u64,
    /// Unix time (ms) of the first scheduled telegram and the end of the schedule.
    pub start_unix_ms: u64,
    pub end_unix_ms: u64,
}

struct Meter {
    index: u64,
    identity: SigningIdentity,
    writer: ChannelWriter,
    sim: Simulator,
    topic: String,
}

#[derive(Default)]
struct Counters {
    acked: AtomicU64,
    disconnects: AtomicU64,
    produce_errors: AtomicU64,
    published: AtomicU64,
}

pub async fn run_meters(args: MetersArgs) -> Result<MetersReport, LoadError> {
    let setup_start = Instant::now();
    if args.meters == 0 || args.conns == 0 || args.providers == 0 {
        return Err(LoadError::Arg(
            "meters, providers and connections must be at least 1".into(),
        ));
    }
    let conns = args.conns.min(args.meters);
    let ids = args.ids;
    let counters = Arc::new(Counters::default());

    // Connections.
    let mut handles: Vec<LinkHandle> = Vec::new();
    for c in 0..conns {
        let cfg = LinkConfig::new(
            args.broker.clone(),
            format!("lg-m-{}-{c}", &ids.run.to_hex()[..8]),
        );
        let link = mqtt::connect(cfg).map_err(|e| LoadError::Broker(e.to_string()))?;
        let counters = counters.clone();
        let mut events = link.events;
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                match ev {
                    LinkEvent::Acked(_) => {
                        counters.acked.fetch_add(1, Ordering::Relaxed);
                    }
                    LinkEvent::Disconnected(_) => {
                        counters.disconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        });
        handles.push(link.handle);
    }
    // Wait for the connections (10k connects queue at the broker's accept backlog).
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let up = handles
            .iter()
            .filter(|h| h.state() == mqtt::LinkState::Connected)
            .count() as u64;
        if up == conns || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let conns_connected = handles
        .iter()
        .filter(|h| h.state() == mqtt::LinkState::Connected)
        .count() as u64;

    // Meters and their key deliveries (as the agent delivers on a grant).
    let provider_keys: Vec<_> = (0..args.providers)
        .map(|j| (ids.provider_id(j), ids.provider_kem(j).public().clone()))
        .collect();
    let now_ms = unix_us() / 1000;
    let mut meters = Vec::with_capacity(args.meters as usize);
    let mut deliveries = 0u64;
    for i in 0..args.meters {
        let identity = ids.meter_identity(i);
        let writer = ChannelWriter::new(ids.channel_id(i));
        let handle = &handles[(i % conns) as usize];
        for (j, (pid, pk)) in provider_keys.iter().enumerate() {
            let consent = ids.consent_id(i, j as u64);
            let (delivery, _grant) = writer
                .deliver(&identity, now_ms, consent, pk)
                .map_err(|e| LoadError::Arg(format!("key delivery: {e}")))?;
            let topic = topics::inbox(pid, &InboxItem::Key(consent));
            // Not retained: the providers are subscribed before the meters start, and a
            // retained delivery would outlive the run on an external broker.
            let _ = handle.publish(1, topic, delivery, false, Some(EXPIRY_S));
            counters.published.fetch_add(1, Ordering::Relaxed);
            deliveries += 1;
        }
        let mut sim = SimConfig::new(i, now_ms);
        sim.meter_id = format!("E{i:016}");
        sim.gas_meter_id = format!("G{i:016}");
        meters.push(Meter {
            index: i,
            identity,
            writer,
            sim: Simulator::new(sim),
            topic: topics::channel(&ids.channel_id(i)),
        });
    }
    let setup_ms = setup_start.elapsed().as_millis() as u64;

    // Schedule: meter i produces at start + phase(i) + k s, phases spread over the second so
    // the load is even. Records carry the *scheduled* time: a generator that falls behind
    // shows up as latency instead of hiding it (no coordinated omission).
    let start_unix_ms = unix_us() / 1000 + 1000;
    let end_unix_ms = start_unix_ms + args.duration.as_millis() as u64;
    let lateness = Arc::new(Mutex::new(new_histogram()?));
    let mut tasks = Vec::with_capacity(meters.len());
    for m in meters {
        let phase = m.index * 1000 / args.meters;
        let handle = handles[(m.index % conns) as usize].clone();
        let counters = counters.clone();
        let lateness = lateness.clone();
        tasks.push(tokio::spawn(meter_task(
            m,
            handle,
            start_unix_ms + phase,
            end_unix_ms,
            counters,
            lateness,
        )));
    }
    let mut sent = Vec::with_capacity(tasks.len());
    for t in tasks {
        sent.push(t.await.unwrap_or(0));
    }
    let sent_total: u64 = sent.iter().sum();

    // Wait until the broker acknowledged everything (or give up after 30 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    while counters.acked.load(Ordering::Relaxed) < counters.published.load(Ordering::Relaxed)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lateness = lateness
        .lock()
        .map(|h| LatencySummary::from_histogram(&h))
        .unwrap_or_default();
    Ok(MetersReport {
        meters: args.meters,
        conns,
        conns_connected,
        disconnects: counters.disconnects.load(Ordering::Relaxed),
        deliveries,
        sent,
        sent_total,
        acked: counters.acked.load(Ordering::Relaxed),
        produce_errors: counters.produce_errors.load(Ordering::Relaxed),
        lateness,
        setup_ms,
        start_unix_ms,
        end_unix_ms,
    })
}

pub(crate) fn new_histogram() -> Result<Histogram<u64>, LoadError> {
    // 1 µs to 1 h, 3 significant digits: fixed size, so it does not grow over a soak.
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .map_err(|e| LoadError::Arg(format!("histogram: {e}")))
}

async fn meter_task(
    mut m: Meter,
    handle: LinkHandle,
    first_ms: u64,
    end_ms: u64,
    counters: Arc<Counters>,
    lateness: Arc<Mutex<Histogram<u64>>>,
) -> u64 {
    let fields = FieldSet::from_bits(FieldSet::KNOWN_BITS).unwrap_or_else(|_| FieldSet::empty());
    let mut due = first_ms;
    let mut sent = 0u64;
    while due < end_ms {
        let now_us = unix_us();
        if due * 1000 > now_us {
            tokio::time::sleep(Duration::from_micros(due * 1000 - now_us)).await;
        }
        let late = unix_us().saturating_sub(due * 1000);
        if let Ok(mut h) = lateness.lock() {
            h.saturating_record(late.max(1));
        }
        match produce(&mut m, due, fields) {
            Some(record) => {
                let _ = handle.publish(1, m.topic.clone(), record, false, Some(EXPIRY_S));
                counters.published.fetch_add(1, Ordering::Relaxed);
                sent += 1;
            }
            None => {
                counters.produce_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        due += 1000;
    }
    sent
}

/// One telegram through the agent's path: simulate → parse → raw view → encode → seal.
fn produce(m: &mut Meter, at_ms: u64, fields: FieldSet) -> Option<Vec<u8>> {
    let bytes = m.sim.next_telegram(at_ms);
    let telegram = dsmr::parse(&bytes, ParseOptions::default()).ok()?;
    let payload = view::project(&telegram, fields, at_ms).to_bytes().ok()?;
    m.writer.seal(&m.identity, at_ms, &payload).ok()
}

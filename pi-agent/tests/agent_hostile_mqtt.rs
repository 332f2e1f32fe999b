//! Hostile MQTT input against a running agent, on Debian's mosquitto and on the embedded
//! broker: garbage and oversize payloads on every topic the agent listens to are rejected with
//! a log line, the agent keeps reading the meter, and its state does not change (not paired,
//! no consents, no threads followed).

use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use p1consent_shared::{
    crypto::OpaqueId,
    mqtt::{self, BrokerUrl, LinkConfig, LinkEvent},
    topics::{self, InboxItem},
};
use p1consent_testkit::{Mosquitto, free_port};
use pi_agent::{
    agent,
    config::{AgentConfig, SourceKind},
    status::Status,
};
use tokio::sync::watch;

/// Every log line of the agents in this test binary (one subscriber per process).
fn log_buffer() -> Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter("info")
            .with_writer(move || LogWriter(w.clone()))
            .try_init();
        buf
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(b);
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Lines containing `needle` logged so far. Tests compare counts before and after, and run one
/// at a time (see [`SERIAL`]) so they do not see each other's lines.
fn log_count(needle: &str) -> usize {
    let buf = log_buffer();
    let text =
        String::from_utf8_lossy(&buf.lock().map(|v| v.clone()).unwrap_or_default()).into_owned();
    text.lines().filter(|l| l.contains(needle)).count()
}

/// Tests in this file share the log buffer: run them one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn read_status(dir: &Path) -> Option<Status> {
    let text = std::fs::read_to_string(dir.join("status.json")).ok()?;
    serde_json::from_str(&text).ok()
}

async fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            let buf = log_buffer();
            let text = buf.lock().map(|v| String::from_utf8_lossy(&v).into_owned());
            panic!(
                "timed out waiting for {what}; agent log:\n{}",
                text.unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn agent_config(state_dir: PathBuf, broker_url: Option<String>, listen_port: u16) -> AgentConfig {
    let mut cfg = AgentConfig {
        state_dir,
        ..AgentConfig::default()
    };
    cfg.meter.source = SourceKind::Simulator;
    cfg.meter.simulator_interval_ms = 200;
    cfg.broker.url = broker_url;
    cfg.broker.embedded_listen = ([127, 0, 0, 1], listen_port).into();
    cfg.pairing.max_attempts_per_minute = 5;
    cfg
}

async fn hostile_input_is_rejected(broker_url: Option<String>, port: u16) {
    let _serial = SERIAL.lock().await;
    let logs_before = log_count;
    let rejected_pairing_0 = logs_before("pairing message rejected");
    let rate_limited_0 = logs_before("too many failed pairing attempts");
    let envelope_0 = logs_before("thread envelope ignored: not paired");
    let lost_0 = logs_before("lost the broker");

    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = agent_config(dir.path().to_path_buf(), broker_url, port);
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(agent::run(cfg, stop_rx));

    let first = wait_until(
        "the agent to read the meter and connect",
        Duration::from_secs(30),
        || read_status(dir.path()).filter(|s| s.broker_connected && s.telegrams > 0),
    )
    .await;
    assert!(first.paired_owner.is_none());
    assert!(
        first.pairing_link.is_some(),
        "an unpaired agent offers a pairing code"
    );
    let device = OpaqueId::from_hex(&first.device_id).expect("device id in status is hex");

    // An attacker on the broker.
    let url = format!("mqtt://127.0.0.1:{port}")
        .parse::<BrokerUrl>()
        .expect("url");
    let mut attacker = LinkConfig::new(url, "attacker");
    attacker.max_payload = 6 * 1024 * 1024;
    let mut link = mqtt::connect(attacker).expect("connect");
    wait_until(
        "the attacker to connect",
        Duration::from_secs(10),
        || match link.events.try_recv() {
            Ok(LinkEvent::Connected) => Some(()),
            _ => None,
        },
    )
    .await;
    let h = link.handle.clone();
    let mut token = 0;
    let mut send = |topic: String, payload: Vec<u8>| {
        token += 1;
        h.publish(token, topic, payload, false, None)
            .expect("publish");
    };
    // Pairing topic: garbage, a truncated "claim", a wrong type byte, random bytes.
    for i in 0..8u8 {
        send(topics::pair_requests(&device), vec![0x21, 0x01, 0x01, i]);
    }
    send(topics::pair_requests(&device), vec![0x7f; 300]);
    send(
        topics::pair_requests(&device),
        b"{\"hello\":\"world\"}".to_vec(),
    );
    // Inbox: a fake thread envelope while unpaired.
    let fake_thread = OpaqueId::random();
    send(
        topics::inbox(&device, &InboxItem::Thread(fake_thread)),
        vec![0x11, 0x01, 0x01, 0, 0, 0, 9],
    );
    // A log entry for a thread the agent does not follow.
    send(topics::log_entry(&fake_thread, 1, 0), vec![0x12; 64]);
    // Let them arrive before the oversize message: a broker that cuts the sender off for it
    // (rumqttd) may drop what it read from the same connection just before.
    wait_until(
        "the small hostile messages to be logged",
        Duration::from_secs(20),
        || {
            let rejected = logs_before("pairing message rejected") - rejected_pairing_0;
            let envelope = logs_before("thread envelope ignored: not paired") - envelope_0;
            (rejected >= 10 && envelope >= 1).then_some(())
        },
    )
    .await;
    // Oversize: above the 4 MiB limit of every party. An MQTT 5 broker does not even forward
    // it (the agent announced its maximum packet size); a broker that does is answered with a
    // drop. Either way the agent never looks at it and stays connected.
    send(topics::pair_requests(&device), vec![0x21; 5 * 1024 * 1024]);
    // A broker may cut the sender off for it (rumqttd does): a last garbage message from a
    // new connection proves the agent is still listening.
    let url = format!("mqtt://127.0.0.1:{port}")
        .parse::<BrokerUrl>()
        .expect("url");
    let mut link2 = mqtt::connect(LinkConfig::new(url, "attacker-2")).expect("connect");
    wait_until(
        "the second attacker to connect",
        Duration::from_secs(10),
        || match link2.events.try_recv() {
            Ok(LinkEvent::Connected) => Some(()),
            _ => None,
        },
    )
    .await;
    link2
        .handle
        .publish(1, topics::pair_requests(&device), vec![0x21], false, None)
        .expect("publish");

    // Every hostile message is answered with a log line.
    wait_until(
        "the rejections to be logged",
        Duration::from_secs(20),
        || {
            let rejected = logs_before("pairing message rejected") - rejected_pairing_0;
            let envelope = logs_before("thread envelope ignored: not paired") - envelope_0;
            (rejected >= 11 && envelope >= 1).then_some(())
        },
    )
    .await;
    // More than 5 failures a minute: the rest are refused without being looked at.
    assert!(
        logs_before("too many failed pairing attempts") > rate_limited_0,
        "pairing attempts beyond the limit are rate-limited"
    );

    // The agent is alive, still reading the meter, and its state is unchanged.
    let later = wait_until("the agent to keep reading", Duration::from_secs(20), || {
        read_status(dir.path()).filter(|s| s.telegrams > first.telegrams + 5)
    })
    .await;
    assert!(later.broker_connected);
    assert_eq!(
        logs_before("lost the broker"),
        lost_0,
        "hostile input never disconnects the agent"
    );
    assert!(
        later.paired_owner.is_none(),
        "hostile input never pairs the agent"
    );
    assert!(later.consents.is_empty());
    assert_eq!(later.device_id, first.device_id, "identity unchanged");
    assert!(!task.is_finished(), "the agent is still running");

    stop_tx.send(true).expect("stop");
    let result = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("agent stops on request")
        .expect("agent task");
    assert!(result.is_ok(), "agent ended with {result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_mqtt_input_on_mosquitto() {
    let _ = log_buffer();
    let broker = Mosquitto::start();
    hostile_input_is_rejected(Some(broker.url()), broker.port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_mqtt_input_on_the_embedded_broker() {
    let _ = log_buffer();
    // The embedded broker starts with the agent on this port; the attacker connects to it.
    hostile_input_is_rejected(None, free_port()).await;
}

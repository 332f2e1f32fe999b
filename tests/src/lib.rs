//! Harness for the cross-crate scenarios in `tests/tests/`: a real broker (Debian's mosquitto
//! through `p1consent-testkit`, or the agent's embedded rumqttd), an in-process pi-agent with a
//! simulated meter or a replayed capture, the owner's wallet library and providers built on the
//! provider SDK, all driven through their public APIs. A spy client records every message on
//! the broker so tests can check, with the providers' own keys, what can and cannot be opened.
//!
//! Every wait is for a condition with a generous deadline ([`WAIT`]); nothing asserts on
//! timing.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use p1consent_provider::{Provider, ProviderEvent, ProviderKeys, ProviderOptions, RequestBuilder};
use p1consent_shared::{
    channel::{self, ChannelReader, OpenError, Opened, RecordKind},
    consent::{FieldSet, Resolution, SignedRequest},
    crypto::{KemSuite, OpaqueId, PublicId},
    topics::{self, InboxItem},
};
use p1consent_testkit::Mosquitto;
pub use p1consent_testkit::{Spy, WAIT, channel_records, wait_for};
use p1consent_wallet::{Wallet, WalletOptions, wallet::GrantScope};
use pi_agent::{
    config::{AgentConfig, SourceKind},
    identity::DeviceIdentity,
};
use tokio::sync::watch;

pub use p1consent_provider as provider;
pub use p1consent_shared as shared;
pub use p1consent_wallet as wallet;

/// Which broker the scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// Debian's mosquitto, started by the testkit on a free loopback port.
    Mosquitto,
    /// The agent's embedded rumqttd, on a free loopback port.
    Embedded,
}

/// Where the agent's telegrams come from.
#[derive(Debug, Clone)]
pub enum Meter {
    /// The built-in DSMR 5 simulator, one telegram every `interval_ms` (minimum 100).
    Simulator { interval_ms: u64 },
    /// A capture file replayed at its recorded pace, looping.
    Replay(PathBuf),
    /// A named pipe that the test writes telegrams into ([`TelegramPipe`]), replayed once, as
    /// fast as they come: any stretch of meter time in moments.
    Pipe(PathBuf),
}

impl Meter {
    /// The simulator, five telegrams a second: enough readings quickly.
    pub fn fast_simulator() -> Self {
        Meter::Simulator { interval_ms: 200 }
    }
}

/// The workspace root (for test data of other crates).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The shared 1 Hz DSMR 5 capture (566 telegrams of an Iskra AM550).
pub fn capture_file() -> PathBuf {
    repo_root().join("shared/tests/data/p1-streams/iskra-am550t_dsmr50_566-telegrams_1s.txt")
}

pub fn now_s() -> u64 {
    p1consent_wallet::wallet::now_s()
}

pub fn now_ms() -> u64 {
    p1consent_wallet::wallet::now_ms()
}

// ------------------------------------------------------------------------------- meter pipe

/// A FIFO the agent's replay source reads (see [`Meter::Pipe`]); the test writes telegrams into
/// it when it wants them sealed. The test side holds the FIFO open for reading and writing, so
/// neither side's open blocks; dropping it closes the FIFO, which ends the agent's replay.
pub struct TelegramPipe {
    path: PathBuf,
    file: Option<Arc<std::fs::File>>,
    _dir: tempfile::TempDir,
}

impl TelegramPipe {
    pub fn create() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p1.fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .expect("mkfifo runs");
        assert!(made.success(), "mkfifo {}", path.display());
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("the FIFO opens");
        Self {
            path,
            file: Some(Arc::new(file)),
            _dir: dir,
        }
    }

    /// The meter for [`World::start`].
    pub fn meter(&self) -> Meter {
        Meter::Pipe(self.path.clone())
    }

    /// Writes raw P1 bytes (on a blocking thread: the pipe holds 64 KiB until the agent reads).
    pub async fn write(&self, bytes: Vec<u8>) {
        let file = self.file.clone().expect("the pipe is open");
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            (&*file).write_all(&bytes)
        })
        .await
        .expect("writer thread")
        .expect("telegrams written to the FIFO");
    }
}

/// Telegrams of the agent's simulated DSMR 5 meter, one every `step_ms` from `start_ms` for
/// `count` telegrams: `(time the telegram is stamped with, Unix ms; the frame's bytes)`.
pub fn simulated_telegrams(start_ms: u64, step_ms: u64, count: u64) -> Vec<(u64, Vec<u8>)> {
    let mut sim = pi_agent::source::Simulator::new(pi_agent::source::SimConfig::new(7, start_ms));
    (0..count)
        .map(|i| {
            let t = start_ms + i * step_ms;
            (t, sim.next_telegram(t))
        })
        .collect()
}

/// Sequence numbers of the rotation records captured on a channel.
pub fn rotation_seqs(records: &[Vec<u8>]) -> Vec<u64> {
    let mut s: Vec<u64> = records
        .iter()
        .filter_map(|r| channel::peek(r).ok())
        .filter(|h| h.kind == RecordKind::Rotation)
        .map(|h| h.seq)
        .collect();
    s.sort_unstable();
    s.dedup();
    s
}

/// What a reader built from a captured key delivery could do with captured channel records.
#[derive(Debug, Default)]
pub struct Opening {
    /// Data records it opened (sequence numbers).
    pub opened: Vec<u64>,
    /// The rotation record that left it out, if any.
    pub cut_at: Option<u64>,
    /// Records after the cut that it failed to open, with the error.
    pub refused: Vec<(u64, String)>,
    /// Records after the cut that it DID open (must stay empty).
    pub opened_after_cut: Vec<u64>,
}

impl Opening {
    /// Every refusal was for want of the key (left out of the rotation, or an epoch it never
    /// got), not a damaged record.
    pub fn refused_only_for_want_of_key(&self) -> bool {
        self.refused
            .iter()
            .all(|(_, e)| e == "NotAuthorised" || e.starts_with("UnknownEpoch"))
    }
}

/// Replays captured channel records (sorted by sequence, duplicates dropped) into a reader
/// made from `delivery` with `kem`: everything up to the rotation that removed the reader
/// opens; after it, nothing may.
pub fn open_captured(
    delivery: &[u8],
    device: &PublicId,
    kem: &p1consent_shared::crypto::KemSecretKey,
    records: &[Vec<u8>],
) -> Opening {
    let mut reader = ChannelReader::from_delivery(delivery, device, kem).expect("delivery opens");
    let start = reader.next_seq();
    let mut sorted: Vec<(u64, &Vec<u8>)> = records
        .iter()
        .filter_map(|r| channel::peek(r).ok().map(|h| (h.seq, r)))
        .filter(|(s, _)| *s >= start)
        .collect();
    sorted.sort_by_key(|(s, _)| *s);
    sorted.dedup_by_key(|(s, _)| *s);
    let mut out = Opening::default();
    for (seq, r) in sorted {
        let res = if out.cut_at.is_none() {
            reader.open_accepting_gap(r)
        } else {
            reader.open(r)
        };
        match (out.cut_at, res) {
            (None, Ok(Opened::Data { .. })) => out.opened.push(seq),
            (None, Ok(Opened::Rotated { .. })) => {}
            (None, Err(OpenError::NotAuthorised)) => out.cut_at = Some(seq),
            (None, Err(e)) => panic!("record {seq} before any cut: {e:?}"),
            (Some(_), Ok(Opened::Data { .. })) | (Some(_), Ok(Opened::Rotated { .. })) => {
                out.opened_after_cut.push(seq)
            }
            (Some(_), Err(e)) => out.refused.push((seq, format!("{e:?}"))),
        }
    }
    out
}

// ------------------------------------------------------------------------------- agent

/// An in-process pi-agent (`pi_agent::agent::run`) on its own state directory.
pub struct Agent {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Agent {
    fn spawn(cfg: AgentConfig) -> Self {
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            if let Err(e) = pi_agent::agent::run(cfg, rx).await {
                panic!("agent failed: {e}");
            }
        });
        Self { stop, task }
    }

    /// Stops the agent and waits until its task has ended (state closed).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        match tokio::time::timeout(WAIT, self.task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("agent task: {e}"),
            Err(_) => panic!("agent did not stop"),
        }
    }
}

// ------------------------------------------------------------------------------- world

/// One scenario's world: broker, agent, spy, owner wallet.
pub struct World {
    pub kind: BrokerKind,
    pub url: String,
    pub cfg: AgentConfig,
    pub agent: Option<Agent>,
    pub spy: Spy,
    pub wallet: Wallet,
    _mosquitto: Option<Mosquitto>,
    agent_dir: tempfile::TempDir,
    wallet_dir: tempfile::TempDir,
}

impl World {
    pub async fn start(kind: BrokerKind, meter: Meter) -> Self {
        let agent_dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = AgentConfig {
            state_dir: agent_dir.path().to_path_buf(),
            ..AgentConfig::default()
        };
        match meter {
            Meter::Simulator { interval_ms } => {
                cfg.meter.source = SourceKind::Simulator;
                cfg.meter.simulator_interval_ms = interval_ms;
            }
            Meter::Replay(path) => {
                cfg.meter.source = SourceKind::Replay;
                cfg.meter.replay_file = Some(path);
                cfg.meter.replay_recorded_pace = true;
                cfg.meter.replay_loop = true;
            }
            Meter::Pipe(path) => {
                cfg.meter.source = SourceKind::Replay;
                cfg.meter.replay_file = Some(path);
                cfg.meter.replay_recorded_pace = false;
                cfg.meter.replay_loop = false;
            }
        }
        cfg.pairing.label = "Meter hall".into();
        let (mosquitto, url) = match kind {
            BrokerKind::Mosquitto => {
                let m = Mosquitto::start();
                let url = m.url();
                cfg.broker.url = Some(url.clone());
                (Some(m), url)
            }
            BrokerKind::Embedded => {
                let port = p1consent_testkit::free_port();
                cfg.broker.url = None;
                cfg.broker.embedded_listen = ([127, 0, 0, 1], port).into();
                (None, format!("mqtt://127.0.0.1:{port}"))
            }
        };
        cfg.validate().expect("agent config");
        // The identity exists before the agent starts, so reading it never races its creation.
        DeviceIdentity::load_or_create(&cfg.identity_path(), KemSuite::DEFAULT)
            .expect("device identity");
        let agent = Agent::spawn(cfg.clone());
        if kind == BrokerKind::Embedded {
            let port = cfg.broker.embedded_listen.port();
            let up =
                tokio::task::spawn_blocking(move || p1consent_testkit::wait_for_port(port, WAIT))
                    .await
                    .expect("wait for port");
            assert!(up, "the embedded broker does not listen on {port}");
        }
        let spy = Spy::start(&url, "scenario-spy").await;
        let wallet_dir = tempfile::tempdir().expect("tempdir");
        let wallet = Wallet::init(
            wallet_dir.path(),
            Wallet::file_secrets(wallet_dir.path()),
            wallet_options(&url),
        )
        .expect("wallet init");
        Self {
            kind,
            url,
            cfg,
            agent: Some(agent),
            spy,
            wallet,
            _mosquitto: mosquitto,
            agent_dir,
            wallet_dir,
        }
    }

    pub fn agent_dir(&self) -> &Path {
        self.agent_dir.path()
    }

    pub fn wallet_dir(&self) -> &Path {
        self.wallet_dir.path()
    }

    /// The device's current public identity (it changes after an unpair).
    pub fn device(&self) -> PublicId {
        DeviceIdentity::load(&self.cfg.identity_path())
            .expect("device identity")
            .public()
    }

    /// The agent's pairing link (waits until it has written one).
    pub async fn pairing_link(&self) -> String {
        wait_for("the agent's pairing code", || async {
            let device = self.device();
            pi_agent::pairing::offer_link(&self.cfg.offer_path(), device)
                .map(|(l, _)| l.to_string())
        })
        .await
    }

    /// Pairs the owner's wallet with the agent.
    pub async fn pair(&mut self) -> PublicId {
        let link = self.pairing_link().await;
        let paired = self.wallet.pair(&link).await.expect("pairing");
        let device = self.device();
        assert_eq!(paired.device, device.to_hex());
        device
    }

    /// The agent's status file (written every two seconds).
    pub fn status(&self) -> Option<pi_agent::status::Status> {
        let text = std::fs::read(self.cfg.status_path()).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Stops the in-process agent (its state stays on disk).
    pub async fn stop_agent(&mut self) {
        if let Some(a) = self.agent.take() {
            a.stop().await;
        }
    }

    /// Starts the agent again on the same state directory. The embedded broker (rumqttd) has
    /// no shutdown API and lives as long as the process, so a restarted agent in this process
    /// connects to the broker its first run started instead of starting a second one.
    pub async fn start_agent(&mut self) {
        assert!(self.agent.is_none(), "the agent is running");
        let mut cfg = self.cfg.clone();
        if self.kind == BrokerKind::Embedded {
            cfg.broker.url = Some(self.url.clone());
        }
        self.agent = Some(Agent::spawn(cfg));
    }

    pub async fn restart_agent(&mut self) {
        self.stop_agent().await;
        self.start_agent().await;
    }

    /// The owner opens a provider's request link and grants it for the paired device.
    pub async fn grant(&mut self, link: &str, scope: GrantScope) -> OpaqueId {
        let summary = self.wallet.open_request(link).expect("request opens");
        let device = self.device().opaque_id().to_hex();
        self.wallet
            .grant_with(&summary.request_id, &device, scope)
            .await
            .expect("grant")
    }

    /// A second wallet for the same owner: new data dir, identity copied, state synced.
    pub async fn second_wallet(&self, dir: &Path) -> Wallet {
        let id = p1consent_wallet::OwnerIdentity::load(self.wallet.secrets())
            .expect("load identity")
            .expect("identity");
        let mut w = Wallet::init_with_identity(
            dir,
            Wallet::file_secrets(dir),
            id,
            wallet_options(&self.url),
        )
        .expect("second wallet");
        let report = w.sync().await.expect("sync");
        assert!(report.rejected.is_empty(), "{:?}", report.rejected);
        w
    }

    /// Waits until the owner's state satisfies `pred` (reading the logs back from the broker).
    pub async fn wait_state<T>(
        &mut self,
        what: &str,
        pred: impl Fn(&p1consent_shared::consent::ConsentState) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.wallet.consents().await.expect("consents");
            if let Some(v) = pred(&s) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The key delivery the agent published for a consent, as captured on the broker.
    pub async fn captured_delivery(&self, provider: &PublicId, consent: &OpaqueId) -> Vec<u8> {
        let topic = topics::inbox(&provider.opaque_id(), &InboxItem::Key(*consent));
        wait_for("the captured key delivery", || async {
            self.spy.last_payload(&topic)
        })
        .await
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(a) = self.agent.take() {
            let _ = a.stop.send(true);
            a.task.abort();
        }
    }
}

pub fn wallet_options(url: &str) -> WalletOptions {
    WalletOptions {
        broker: Some(url.to_string()),
        timeout: Duration::from_secs(30),
    }
}

// ------------------------------------------------------------------------------- providers

/// A provider (SDK client) with its keys, data dir and the events it has seen.
pub struct Prov {
    pub name: String,
    pub keys: ProviderKeys,
    pub client: Provider,
    pub log: Vec<ProviderEvent>,
    /// For every reading received: (consent, seq, ms from the device sealing it to the
    /// SDK handing it over), by this machine's clock (agent and provider share it).
    pub delays_ms: Vec<(OpaqueId, u64, i64)>,
    dir: tempfile::TempDir,
}

impl Prov {
    pub async fn connect(url: &str, name: &str) -> Self {
        let client_id = format!("scenario-{name}-{}", OpaqueId::random());
        let (keys, client, dir) = connect_provider(url, &client_id);
        let mut p = Self {
            name: name.into(),
            keys,
            client,
            log: Vec::new(),
            delays_ms: Vec::new(),
            dir,
        };
        p.wait("connected", |e| matches!(e, ProviderEvent::Connected))
            .await;
        p
    }

    pub fn public(&self) -> PublicId {
        self.keys.public()
    }

    fn record(&mut self, ev: &ProviderEvent) {
        if let ProviderEvent::Reading {
            consent,
            seq,
            timestamp_ms,
            ..
        } = ev
        {
            let delay = now_ms() as i64 - *timestamp_ms as i64;
            self.delays_ms.push((*consent, *seq, delay));
        }
        self.log.push(ev.clone());
    }

    /// The delay of reading `seq` of `consent` (see `delays_ms`).
    pub fn delay_ms(&self, consent: &OpaqueId, seq: u64) -> Option<i64> {
        self.delays_ms
            .iter()
            .find(|(c, s, _)| c == consent && *s == seq)
            .map(|(_, _, d)| *d)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A signed request link.
    pub fn request(&self, fields: FieldSet, resolution: Resolution, valid_for_s: u64) -> String {
        request_link(&self.keys, &self.name, fields, resolution, valid_for_s)
    }

    /// The consent id a request link will get.
    pub fn consent_of(link: &str) -> OpaqueId {
        signed_request(link).consent_id()
    }

    /// Collects events until one matches `pred`.
    pub async fn wait(
        &mut self,
        what: &str,
        pred: impl Fn(&ProviderEvent) -> bool,
    ) -> ProviderEvent {
        let res = tokio::time::timeout(WAIT, async {
            loop {
                let ev = self.client.next_event().await.expect("provider stream");
                self.record(&ev);
                if pred(&ev) {
                    return ev;
                }
            }
        })
        .await;
        match res {
            Ok(ev) => ev,
            Err(_) => panic!(
                "{}: timed out waiting for {what}; events so far: {:#?}",
                self.name, self.log
            ),
        }
    }

    /// Waits for `n` more readings of `consent`: (seq, payload).
    pub async fn readings(
        &mut self,
        consent: &OpaqueId,
        n: usize,
    ) -> Vec<(u64, p1consent_shared::view::ViewPayload)> {
        let mut out = Vec::new();
        while out.len() < n {
            let ev = self
                .wait(
                    "a reading",
                    |e| matches!(e, ProviderEvent::Reading { consent: c, .. } if c == consent),
                )
                .await;
            if let ProviderEvent::Reading { seq, payload, .. } = ev {
                out.push((seq, payload));
            }
        }
        out
    }

    /// Collects whatever events arrive during `d` (used after an end, to show nothing more
    /// comes).
    pub async fn drain_for(&mut self, d: Duration) {
        let _ = tokio::time::timeout(d, async {
            loop {
                match self.client.next_event().await {
                    Ok(ev) => self.record(&ev),
                    Err(_) => return,
                }
            }
        })
        .await;
    }

    /// Sequence numbers of every reading of `consent` seen so far, in order.
    pub fn reading_seqs(&self, consent: &OpaqueId) -> Vec<u64> {
        reading_seqs(&self.log, consent)
    }

    /// Gap events of `consent` (records lost in its stream).
    pub fn gaps(&self, consent: &OpaqueId) -> Vec<ProviderEvent> {
        self.log
            .iter()
            .filter(|e| matches!(e, ProviderEvent::Gap { consent: c, .. } if c == consent))
            .cloned()
            .collect()
    }

    pub fn rejected(&self) -> Vec<ProviderEvent> {
        self.log
            .iter()
            .filter(|e| matches!(e, ProviderEvent::Rejected { .. }))
            .cloned()
            .collect()
    }
}

/// A provider SDK client with fresh keys and a fresh data directory (keep it: the client's
/// state lives there), connecting as MQTT client `client_id`.
pub fn connect_provider(url: &str, client_id: &str) -> (ProviderKeys, Provider, tempfile::TempDir) {
    let keys = ProviderKeys::generate(KemSuite::DEFAULT);
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ProviderOptions {
        client_id: Some(client_id.to_string()),
        ..ProviderOptions::default()
    };
    let client = Provider::connect_with(keys.duplicate(), url, dir.path(), options)
        .expect("provider connects");
    (keys, client, dir)
}

/// A signed request link of provider `name` (organisation "`name` B.V.").
pub fn request_link(
    keys: &ProviderKeys,
    name: &str,
    fields: FieldSet,
    resolution: Resolution,
    valid_for_s: u64,
) -> String {
    RequestBuilder::new(format!("{name} B.V."), "privacy@example.org")
        .purpose(format!("{name} scenario"))
        .fields(fields)
        .resolution(resolution)
        .retention_days(7)
        .valid_for(valid_for_s)
        .build(keys)
        .expect("request")
        .to_link()
}

/// The request a link carries, checked now.
pub fn signed_request(link: &str) -> SignedRequest {
    SignedRequest::from_link(link, now_s())
        .expect("link")
        .into_signed()
}

/// Sequence numbers of the readings of `consent` among `events`, in order.
pub fn reading_seqs(events: &[ProviderEvent], consent: &OpaqueId) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            ProviderEvent::Reading {
                consent: c, seq, ..
            } if c == consent => Some(*seq),
            _ => None,
        })
        .collect()
}

/// Asserts that sequence numbers go up by exactly one (nothing lost, nothing twice).
pub fn assert_contiguous(what: &str, seqs: &[u64]) {
    assert_consecutive(seqs, &[], what);
}

/// Readings arrive once each and in order: strictly consecutive sequence numbers, except
/// over `rotations` (rotation records take sequence numbers too, so a step of more than one
/// must be exactly over rotation records).
pub fn assert_consecutive(seqs: &[u64], rotations: &[u64], what: &str) {
    for w in seqs.windows(2) {
        assert!(w[1] > w[0], "{what}: not in order or duplicated: {seqs:?}");
        for s in w[0] + 1..w[1] {
            assert!(
                rotations.contains(&s),
                "{what}: reading {s} missing between {} and {}: {seqs:?}",
                w[0],
                w[1]
            );
        }
    }
}

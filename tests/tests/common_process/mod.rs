//! Real processes for the crash and restart scenarios: the `pi-agent` binary as a child
//! (so it can be killed with SIGKILL), an owner written with shared's APIs, providers from
//! the provider SDK running in tasks, and a spy that records every message on the broker.
//!
//! Every wait is a wait-for-condition loop with a generous deadline: the scenarios run on
//! loaded 2-core CI machines.

#![allow(dead_code)]

use std::{
    fs::OpenOptions,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use p1consent_provider::{ProviderEvent, ProviderKeys, now_ms};
pub use p1consent_scenarios::{Spy, WAIT, assert_consecutive, channel_records};
use p1consent_scenarios::{
    connect_provider, open_captured, reading_seqs, request_link, signed_request,
};
use p1consent_shared::{
    channel::{self, RecordHeader},
    consent::{
        Field, FieldSet, OwnerRoot, Resolution, Role, ThreadEnvelope,
        log::{Event, Grant, LogWriter},
    },
    crypto::{KemSuite, OpaqueId, PublicId, SigningIdentity},
    mqtt::{self, LinkConfig, LinkEvent, LinkHandle},
    topics::{self, InboxItem},
};
use pi_agent::{identity::DeviceIdentity, store::Store};
use tokio::sync::mpsc;

// ------------------------------------------------------------------------ agent binary

/// The `pi-agent` binary of this build. Cargo builds binaries only for the package under
/// test, so it is built here once (a no-op when it is up to date) with the same profile
/// and target directory as this test.
/// `P1C_AGENT_BIN` overrides it (the measurements use the release binary).
pub fn agent_binary() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BIN.get_or_init(|| match std::env::var_os("P1C_AGENT_BIN") {
        Some(p) => Ok(PathBuf::from(p)),
        None => build_agent(),
    });
    match built {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

fn build_agent() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    // <target>/<profile>/deps/<this test>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("unexpected test binary location")?
        .to_path_buf();
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("unexpected profile directory")?
        .to_string();
    let mut target_dir = profile_dir
        .parent()
        .ok_or("unexpected target directory")?
        .to_path_buf();
    let mut triple = None;
    if !target_dir.join("CACHEDIR.TAG").exists()
        && target_dir
            .parent()
            .is_some_and(|p| p.join("CACHEDIR.TAG").exists())
    {
        // <target>/<triple>/<profile>: a cross or explicit --target build.
        triple = target_dir
            .file_name()
            .and_then(|n| n.to_str())
            .map(String::from);
        target_dir = target_dir
            .parent()
            .ok_or("unexpected target directory")?
            .to_path_buf();
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut cmd = Command::new(cargo);
    // Selecting this crate too keeps the feature set of this test build, so nothing but
    // the binary itself has to be compiled.
    cmd.args([
        "build",
        "--quiet",
        "-p",
        env!("CARGO_PKG_NAME"),
        "-p",
        "pi-agent",
    ])
    .args(["--bin", "pi-agent"])
    .arg("--manifest-path")
    .arg(&manifest)
    .arg("--target-dir")
    .arg(&target_dir);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    if let Some(t) = &triple {
        cmd.args(["--target", t]);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run cargo to build pi-agent: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building pi-agent failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let bin = profile_dir.join(format!("pi-agent{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        return Err(format!(
            "pi-agent was built but {} is missing",
            bin.display()
        ));
    }
    Ok(bin)
}

/// Sends a signal to a process this test started, by its id.
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// The agent as a child process on a state directory that outlives it.
pub struct AgentProcess {
    pub state_dir: PathBuf,
    config: PathBuf,
    child: Option<Child>,
    pub starts: u32,
}

impl AgentProcess {
    /// Prepares a paired agent (identity on disk, the owner in its store: what pairing
    /// leaves behind) with a simulated meter sending every `interval_ms`.
    pub fn prepare(
        state_dir: &Path,
        broker_url: &str,
        owner: &PublicId,
        interval_ms: u64,
    ) -> (Self, DeviceIdentity) {
        let id = DeviceIdentity::generate(KemSuite::DEFAULT);
        id.save(&state_dir.join("device.key")).unwrap();
        {
            let store = Store::open(&state_dir.join("agent.redb")).unwrap();
            store
                .put(
                    "owner",
                    &serde_json::json!({"owner": owner.to_hex(), "paired_at": now_ms() / 1000}),
                )
                .unwrap();
        }
        let config = state_dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"{}\"\n[meter]\nsource = \"simulator\"\nsimulator_interval_ms = {interval_ms}\n\
                 [broker]\nurl = \"{broker_url}\"\n",
                state_dir.display()
            ),
        )
        .unwrap();
        (
            Self {
                state_dir: state_dir.to_path_buf(),
                config,
                child: None,
                starts: 0,
            },
            id,
        )
    }

    /// Replaces the telegram source: a capture replayed in a loop as fast as possible.
    pub fn use_fast_replay_loop(&mut self, file: &Path, broker_url: &str) {
        std::fs::write(
            &self.config,
            format!(
                "state_dir = \"{}\"\n[meter]\nsource = \"replay\"\nreplay_file = \"{}\"\n\
                 replay_recorded_pace = false\nreplay_loop = true\n[broker]\nurl = \"{broker_url}\"\n",
                self.state_dir.display(),
                file.display()
            ),
        )
        .unwrap();
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "agent already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new(agent_binary())
            .arg("--config")
            .arg(&self.config)
            .arg("run")
            .env("RUST_LOG", "info")
            .env_remove("P1C_CONFIG")
            .env_remove("P1C_STATE_DIR")
            .env_remove("P1C_BROKER_URL")
            .env_remove("P1C_SOURCE")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start pi-agent: {e}"));
        self.child = Some(child);
        self.starts += 1;
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("agent running")
    }

    /// SIGKILL: no shutdown code runs, as in a crash or power loss.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Fails with the log if the agent exited by itself.
    pub fn assert_running(&mut self) {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            panic!("pi-agent exited with {status}; log:\n{}", self.log());
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.state_dir.join("agent.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Outbox messages in the agent's database (only while the agent is stopped).
    pub fn outbox_depth(&self) -> u64 {
        let store = Store::open(&self.state_dir.join("agent.redb")).unwrap();
        store.outbox_len().unwrap()
    }

    /// Outbox contents (only while the agent is stopped).
    pub fn outbox(&self) -> Vec<(u64, pi_agent::store::OutboxMessage)> {
        let store = Store::open(&self.state_dir.join("agent.redb")).unwrap();
        store.outbox_after(None, usize::MAX).unwrap()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn max_seq(records: &[Vec<u8>]) -> Option<u64> {
    records
        .iter()
        .filter_map(|r| channel::peek(r).ok())
        .map(|h| h.seq)
        .max()
}

/// Checks the captured chain of a channel: every record from seq 0 up to the highest one
/// seen is present, copies of the same seq are byte-identical (a republished record, never
/// a fork), and each record links to the hash of the one before (seq 0 to the genesis).
/// Returns the headers in seq order.
pub fn verify_chain(records: &[Vec<u8>], ch: &OpaqueId) -> Vec<RecordHeader> {
    let mut by_seq: std::collections::BTreeMap<u64, &Vec<u8>> = Default::default();
    for r in records {
        let h = channel::peek(r).expect("captured record parses");
        assert_eq!(h.channel_id, *ch);
        if let Some(prev) = by_seq.insert(h.seq, r) {
            assert_eq!(prev, r, "two different records with seq {}: a fork", h.seq);
        }
    }
    let mut expect_prev = channel::genesis_hash(ch);
    let mut headers = Vec::new();
    for (i, (seq, r)) in by_seq.iter().enumerate() {
        assert_eq!(
            *seq, i as u64,
            "records missing from the chain before seq {seq}"
        );
        let h = channel::peek(r).unwrap();
        assert_eq!(h.prev_hash, expect_prev, "hash link broken at seq {seq}");
        expect_prev = channel::record_hash(r);
        headers.push(h);
    }
    headers
}

/// What a reader built from a captured key delivery did with the captured chain, from the
/// delivery's position on: records it opened before a rotation left it out, the seq of that
/// rotation, and how many later records it was refused.
pub struct CutOff {
    pub opened: usize,
    pub cut_at: Option<u64>,
    pub refused_after: usize,
}

/// [`open_captured`] with `keys`; after the cut nothing may open, and every refusal must be
/// for want of the key (not a damaged record).
pub fn open_as(
    delivery: &[u8],
    device: &PublicId,
    keys: &ProviderKeys,
    records: &[Vec<u8>],
) -> CutOff {
    let opening = open_captured(delivery, device, keys.kem(), records);
    assert!(opening.opened_after_cut.is_empty(), "{opening:?}");
    assert!(opening.refused_only_for_want_of_key(), "{opening:?}");
    CutOff {
        opened: opening.opened.len(),
        cut_at: opening.cut_at,
        refused_after: opening.refused.len(),
    }
}

// ------------------------------------------------------------------------ owner

/// The owner's MQTT client: publishes retained messages and waits for the broker's ack.
pub struct OwnerLink {
    handle: LinkHandle,
    events: mpsc::UnboundedReceiver<LinkEvent>,
    token: u64,
}

impl OwnerLink {
    pub async fn connect(url: &str, client_id: &str) -> Self {
        let link = mqtt::connect(LinkConfig::new(url.parse().unwrap(), client_id)).unwrap();
        let mut o = Self {
            handle: link.handle,
            events: link.events,
            token: 0,
        };
        o.wait(|e| *e == LinkEvent::Connected).await;
        o
    }

    async fn wait(&mut self, pred: impl Fn(&LinkEvent) -> bool) {
        tokio::time::timeout(WAIT, async {
            while let Some(ev) = self.events.recv().await {
                if pred(&ev) {
                    return;
                }
            }
            panic!("owner link closed");
        })
        .await
        .expect("owner link event in time");
    }

    pub async fn publish(&mut self, topic: String, payload: Vec<u8>) {
        self.token += 1;
        let t = self.token;
        self.handle.publish(t, topic, payload, true, None).unwrap();
        self.wait(|e| *e == LinkEvent::Acked(t)).await;
    }
}

/// A consent the owner granted.
pub struct Granted {
    pub consent: OpaqueId,
    pub thread: OpaqueId,
    writer: LogWriter,
}

/// The owner, with shared's APIs: device thread, grants and revocations.
pub struct Owner {
    pub id: SigningIdentity,
    pub root: OwnerRoot,
    pub link: OwnerLink,
    pub device: PublicId,
    device_kem: p1consent_shared::crypto::KemPublicKey,
}

impl Owner {
    /// Publishes the device thread (envelope + DevicePaired) for an agent prepared with
    /// [`AgentProcess::prepare`].
    pub async fn pair(
        url: &str,
        id: SigningIdentity,
        device_id: &DeviceIdentity,
        client_id: &str,
    ) -> Self {
        let root = OwnerRoot::from_identity(&id);
        let mut link = OwnerLink::connect(url, client_id).await;
        let device = device_id.public();
        let dtid = root.device_thread_id(&device);
        let env =
            ThreadEnvelope::create(&id, &root, dtid, &[(Role::Device, device_id.kem.public())])
                .unwrap();
        link.publish(
            topics::inbox(&device.opaque_id(), &InboxItem::Thread(dtid)),
            env,
        )
        .await;
        let paired = LogWriter::new(dtid, Role::Owner)
            .append(
                &id,
                &root.thread_key(&dtid),
                now_ms(),
                &Event::DevicePaired {
                    device,
                    device_kem: device_id.kem.public().clone(),
                    label: "crash test meter".into(),
                },
            )
            .unwrap();
        link.publish(topics::log_entry(&dtid, 1, 0), paired).await;
        Self {
            id,
            root,
            link,
            device,
            device_kem: device_id.kem.public().clone(),
        }
    }

    /// Grants a provider's request for power and energy, raw (all grants share one view,
    /// so one channel).
    pub async fn grant(&mut self, keys: &ProviderKeys, name: &str) -> Granted {
        let fields = view_fields();
        let request = signed_request(&request_link(keys, name, fields, Resolution::Raw, 3600));
        let consent = request.consent_id();
        let ctid = self.root.consent_thread_id(&self.device, &keys.public());
        let env = ThreadEnvelope::create(
            &self.id,
            &self.root,
            ctid,
            &[
                (Role::Device, &self.device_kem),
                (Role::Provider, keys.kem_public()),
            ],
        )
        .unwrap();
        self.link
            .publish(
                topics::inbox(&self.device.opaque_id(), &InboxItem::Thread(ctid)),
                env.clone(),
            )
            .await;
        self.link
            .publish(
                topics::inbox(&keys.public().opaque_id(), &InboxItem::Thread(ctid)),
                env,
            )
            .await;
        let grant = Grant::new(
            &request,
            self.device,
            fields,
            Resolution::Raw,
            // The requested expiry itself: `now_s() + 3600` here could be a second later than
            // the request's (made a moment earlier) and be refused.
            request.content().consent_expires_at,
        )
        .unwrap();
        let mut writer = LogWriter::new(ctid, Role::Owner);
        let entry = writer
            .append(
                &self.id,
                &self.root.thread_key(&ctid),
                now_ms(),
                &Event::ConsentGranted(Box::new(grant)),
            )
            .unwrap();
        self.link
            .publish(topics::log_entry(&ctid, 1, 0), entry)
            .await;
        Granted {
            consent,
            thread: ctid,
            writer,
        }
    }

    /// Publishes the revocation and returns once the broker has it.
    pub async fn revoke(&mut self, g: &mut Granted) {
        let seq = g.writer.state().next_seq;
        let entry = g
            .writer
            .append(
                &self.id,
                &self.root.thread_key(&g.thread),
                now_ms(),
                &Event::ConsentRevoked {
                    consent_id: g.consent,
                    erase_requested: false,
                },
            )
            .unwrap();
        self.link
            .publish(topics::log_entry(&g.thread, 1, seq), entry)
            .await;
    }
}

pub fn view_fields() -> FieldSet {
    FieldSet::empty()
        .with(Field::EnergyDelivered)
        .with(Field::PowerDelivered)
}

// ------------------------------------------------------------------------ providers

/// A provider SDK client running in its own task; its events are collected for checks.
pub struct ProviderTask {
    pub keys: ProviderKeys,
    pub events: Arc<Mutex<Vec<ProviderEvent>>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl ProviderTask {
    pub async fn start(url: &str, client_id: &str) -> Self {
        let (keys, mut provider, dir) = connect_provider(url, client_id);
        let events = Arc::new(Mutex::new(Vec::new()));
        let e2 = events.clone();
        let task = tokio::spawn(async move {
            while let Ok(ev) = provider.next_event().await {
                e2.lock().unwrap().push(ev);
            }
        });
        let p = Self {
            keys,
            events,
            task,
            _dir: dir,
        };
        p.wait_for("connected", |e| matches!(e, ProviderEvent::Connected))
            .await;
        p
    }

    pub fn events(&self) -> Vec<ProviderEvent> {
        self.events.lock().unwrap().clone()
    }

    /// Waits until an event matches; returns it.
    pub async fn wait_for(
        &self,
        what: &str,
        pred: impl Fn(&ProviderEvent) -> bool,
    ) -> ProviderEvent {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return e;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; events: {:#?}",
                self.events()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sequence numbers of the readings received for `consent`, in arrival order.
    pub fn reading_seqs(&self, consent: &OpaqueId) -> Vec<u64> {
        reading_seqs(&self.events.lock().unwrap(), consent)
    }

    pub async fn wait_readings_past(&self, consent: &OpaqueId, seq: u64, what: &str) {
        let c = *consent;
        self.wait_for(what, move |e| {
            matches!(e, ProviderEvent::Reading { consent: x, seq: s, .. } if *x == c && *s > seq)
        })
        .await;
    }
}

impl Drop for ProviderTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ------------------------------------------------------------------------ /proc

/// Resident memory now and its peak (kB), from /proc/<pid>/status.
pub fn memory_kb(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time used so far (user + system), in clock ticks, from /proc/<pid>/stat.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

pub fn clock_ticks_per_s() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

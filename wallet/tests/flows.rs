//! End-to-end: a real mosquitto, a real pi-agent (simulated meter) in-process, and the
//! wallet doing what the owner does. Every wait is for a condition, with a deadline.

use std::{
    future::Future,
    path::Path,
    time::{Duration, Instant},
};

use p1consent_shared::{
    consent::{
        ConsentState, ConsentStatus, FieldSet, RequestDraft, RequestError, Resolution,
        SignedReceipt, SignedRequest, log::RotationReason, Field,
    },
    crypto::{KemSecretKey, KemSuite, PublicId, SigningIdentity, random_bytes},
};
use p1consent_testkit::Mosquitto;
use p1consent_wallet::{OwnerIdentity, Wallet, WalletError, WalletOptions};
use pi_agent::{
    config::{AgentConfig, SourceKind},
    identity::DeviceIdentity,
};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(30);

fn now() -> u64 {
    p1consent_wallet::wallet::now_s()
}

struct Agent {
    device: PublicId,
    cfg: AgentConfig,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn start(broker_url: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = AgentConfig {
            state_dir: dir.path().to_path_buf(),
            ..AgentConfig::default()
        };
        cfg.meter.source = SourceKind::Simulator;
        cfg.meter.simulator_interval_ms = 250;
        cfg.broker.url = Some(broker_url.to_string());
        cfg.pairing.label = "Meter hall".into();
        cfg.validate().expect("config");
        let (id, _) = DeviceIdentity::load_or_create(&cfg.identity_path(), KemSuite::DEFAULT)
            .expect("device identity");
        let (stop, rx) = watch::channel(false);
        let c = cfg.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = pi_agent::agent::run(c, rx).await {
                panic!("agent failed: {e}");
            }
        });
        Self {
            device: id.public(),
            cfg,
            stop,
            task,
            _dir: dir,
        }
    }

    async fn pairing_link(&self) -> String {
        wait_for("the agent's pairing code", || async {
            pi_agent::pairing::offer_link(&self.cfg.offer_path(), self.device)
                .map(|(l, _)| l.to_string())
        })
        .await
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// Evaluates `$body` (an `Option`) until it is `Some`, failing the test after [`WAIT`].
macro_rules! wait_until {
    ($what:expr, $body:expr) => {{
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = $body {
                break v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {}", $what);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }};
}

/// Polls `f` until it returns `Some`, failing the test after [`WAIT`].
async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn opts(timeout_s: u64) -> WalletOptions {
    WalletOptions {
        broker: None,
        timeout: Duration::from_secs(timeout_s),
    }
}

fn new_wallet(dir: &Path, timeout_s: u64) -> Wallet {
    Wallet::init(dir, Wallet::file_secrets(dir), opts(timeout_s)).expect("init")
}

struct Provider {
    signing: SigningIdentity,
    #[allow(dead_code)]
    kem: KemSecretKey,
}

impl Provider {
    fn new() -> Self {
        Self {
            signing: SigningIdentity::generate(),
            kem: KemSecretKey::generate(KemSuite::DEFAULT),
        }
    }

    fn request_link(&self) -> String {
        let t = now();
        let draft = RequestDraft {
            provider_kem: self.kem.public().clone(),
            controller: "Wattt Insights B.V.".into(),
            contact: "privacy@wattt.example".into(),
            purpose: "Energy saving advice".into(),
            policy_url: Some("https://wattt.example/privacy".into()),
            jurisdiction: "NL".into(),
            fields: FieldSet::empty()
                .with(Field::EnergyDelivered)
                .with(Field::PowerDelivered),
            resolution: Resolution::Raw,
            retention_days: 90,
            consent_expires_at: t + 30 * 86_400,
            link_expires_at: t + 86_400,
            nonce: random_bytes(),
            created_at: t,
        };
        SignedRequest::create(&self.signing, draft)
            .expect("request")
            .to_link()
    }
}

/// Flips one base64 character in the middle of the `d=` parameter.
fn tamper(link: &str) -> String {
    let mut b = link.as_bytes().to_vec();
    let i = link.find("d=").expect("d=") + 2 + (link.len() - link.find("d=").unwrap()) / 2;
    b[i] = if b[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).expect("utf8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_succeeds_once_and_a_spent_code_fails() {
    let mosq = Mosquitto::start();
    let agent = Agent::start(&mosq.url());
    let link = agent.pairing_link().await;

    let w_dir = tempfile::tempdir().unwrap();
    let mut wallet = new_wallet(w_dir.path(), 20);
    let paired = wallet.pair(&link).await.expect("pairing");
    assert_eq!(paired.device, agent.device.to_hex());
    assert_eq!(paired.label, "Meter hall");

    // The owner's state shows the meter, read back from its verified log.
    let state = wallet.consents().await.expect("consents");
    let dev = state.devices.get(&agent.device).expect("device in state");
    assert!(dev.is_paired());
    assert_eq!(dev.label, "Meter hall");

    // The same wallet refuses to pair again; another wallet's claim with the spent code gets
    // nothing from the meter.
    assert!(matches!(
        wallet.pair(&link).await,
        Err(WalletError::AlreadyPaired)
    ));
    let other_dir = tempfile::tempdir().unwrap();
    let mut other = new_wallet(other_dir.path(), 3);
    match other.pair(&link).await {
        Err(WalletError::NoResponse { .. }) => {}
        other => panic!("second claim with a spent code must fail, got {other:?}"),
    }
    assert!(other.state_at(now()).devices.is_empty());
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_revoke_receipt_and_rebuild() {
    let mosq = Mosquitto::start();
    let agent = Agent::start(&mosq.url());
    let link = agent.pairing_link().await;
    let w_dir = tempfile::tempdir().unwrap();
    let mut wallet = new_wallet(w_dir.path(), 20);
    wallet.pair(&link).await.expect("pairing");

    // A tampered request is refused with the typed error, and nothing is kept.
    let provider = Provider::new();
    let req_link = provider.request_link();
    match wallet.open_request(&tamper(&req_link)) {
        Err(WalletError::Request(RequestError::BadSignature)) => {}
        other => panic!("tampered link must be refused, got {other:?}"),
    }
    assert!(wallet.pending_requests().is_empty());

    // The genuine one is summarised in plain words and kept as pending.
    let summary = wallet.open_request(&req_link).expect("open");
    assert_eq!(summary.controller, "Wattt Insights B.V.");
    assert_eq!(summary.fields.len(), 2);
    let text = summary.to_string();
    assert!(text.contains("Total electricity you used"), "{text}");
    assert_eq!(wallet.pending_requests().len(), 1);

    // Grant: the agent delivers the key and acknowledges it in the consent thread.
    let device_id = agent.device.opaque_id().to_hex();
    let cid = wallet
        .grant(&summary.request_id[..12], &device_id[..8])
        .await
        .expect("grant");
    assert!(wallet.pending_requests().is_empty());
    let state = wait_until!("the meter's KeyDelivered", {
        let s = wallet.consents().await.expect("consents");
        s.consents
            .get(&cid)
            .and_then(|c| c.last_key_delivered)
            .map(|_| s.clone())
    });
    assert_eq!(state.consents[&cid].status, ConsentStatus::Active);

    // Receipt: signed by the owner, verifies.
    let json = wallet.receipt(&cid.to_hex()[..10]).expect("receipt");
    let r = SignedReceipt::verify(&json, Some(&wallet.owner())).expect("receipt verifies");
    assert_eq!(r.state, "active");
    assert!(r.events.iter().any(|e| e.kind == "key_delivered"));

    // Revoke with erasure: the meter rotates the key away.
    wallet.revoke(&cid.to_hex(), true).await.expect("revoke");
    let state = wait_until!("the meter's KeyRotated", {
        let s = wallet.consents().await.expect("consents");
        s.devices
            .get(&agent.device)
            .and_then(|d| d.last_rotation)
            .filter(|r| r.reason == RotationReason::Revoked)
            .map(|_| s.clone())
    });
    assert!(matches!(
        state.consents[&cid].status,
        ConsentStatus::Revoked {
            erase_requested: true,
            ..
        }
    ));
    assert!(matches!(
        wallet.revoke(&cid.to_hex(), false).await,
        Err(WalletError::ConsentNotActive(_))
    ));

    // Every thread verifies from scratch.
    let report = wallet.verify_log();
    assert_eq!(report.len(), 2);
    assert!(report.iter().all(|t| t.rejected.is_empty()));

    // A second wallet with only the owner's keys rebuilds the same state from the broker.
    let id = OwnerIdentity::load(wallet.secrets())
        .expect("load")
        .expect("identity");
    let w2_dir = tempfile::tempdir().unwrap();
    let mut opts2 = opts(20);
    opts2.broker = Some(mosq.url());
    let mut second =
        Wallet::init_with_identity(w2_dir.path(), Wallet::file_secrets(w2_dir.path()), id, opts2)
            .expect("second wallet");
    let report = second.sync().await.expect("sync");
    assert_eq!(report.threads, 2);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    wallet.refresh().await.expect("refresh");
    let t = now();
    let (a, b): (ConsentState, ConsentState) = (wallet.state_at(t), second.state_at(t));
    assert_eq!(a, b);
    assert_eq!(a.consents.len(), 1);

    // Unpair from the second wallet: the first one sees it after a refresh.
    second.unpair(&device_id).await.expect("unpair");
    wallet.refresh().await.expect("refresh");
    let s = wallet.state_at(now());
    assert!(!s.devices[&agent.device].is_paired());
    agent.stop().await;
}

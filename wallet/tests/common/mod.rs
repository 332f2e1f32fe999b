//! Shared test parts: a real pi-agent in-process, a provider making requests, waiting.
#![allow(dead_code)]

use std::{path::Path, time::Duration};

use p1consent_shared::{
    consent::{Field, FieldSet, RequestDraft, Resolution, SignedRequest},
    crypto::{KemSecretKey, KemSuite, PublicId, SigningIdentity, random_bytes},
};
use p1consent_wallet::{Wallet, WalletOptions};
use pi_agent::{
    config::{AgentConfig, SourceKind},
    identity::DeviceIdentity,
};
use tokio::sync::watch;

pub const WAIT: Duration = Duration::from_secs(30);

pub fn now() -> u64 {
    p1consent_wallet::wallet::now_s()
}

pub struct Agent {
    pub device: PublicId,
    pub cfg: AgentConfig,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Agent {
    pub fn start(broker_url: &str) -> Self {
        Self::start_with_suite(broker_url, KemSuite::DEFAULT)
    }

    /// An agent whose device key is of `suite`.
    pub fn start_with_suite(broker_url: &str, suite: KemSuite) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = AgentConfig {
            state_dir: dir.path().to_path_buf(),
            kem_suite: suite.name().into(),
            ..AgentConfig::default()
        };
        cfg.meter.source = SourceKind::Simulator;
        cfg.meter.simulator_interval_ms = 250;
        cfg.broker.url = Some(broker_url.to_string());
        cfg.pairing.label = "Meter hall".into();
        cfg.validate().expect("config");
        let (id, _) =
            DeviceIdentity::load_or_create(&cfg.identity_path(), suite).expect("device identity");
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

    pub async fn pairing_link(&self) -> String {
        wait_for("the agent's pairing code", || async {
            pi_agent::pairing::offer_link(&self.cfg.offer_path(), self.device)
                .map(|(l, _)| l.to_string())
        })
        .await
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// Evaluates `$body` (an `Option`) until it is `Some`, failing the test after [`WAIT`].
#[macro_export]
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

pub use p1consent_testkit::wait_for;

pub fn opts(timeout_s: u64) -> WalletOptions {
    WalletOptions {
        broker: None,
        timeout: Duration::from_secs(timeout_s),
    }
}

pub fn new_wallet(dir: &Path, timeout_s: u64) -> Wallet {
    Wallet::init(dir, Wallet::file_secrets(dir), opts(timeout_s)).expect("init")
}

pub struct Provider {
    pub signing: SigningIdentity,
    pub kem: KemSecretKey,
}

impl Provider {
    pub fn new() -> Self {
        Self {
            signing: SigningIdentity::generate(),
            kem: KemSecretKey::generate(KemSuite::DEFAULT),
        }
    }

    pub fn request_link(&self) -> String {
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
pub fn tamper(link: &str) -> String {
    let mut b = link.as_bytes().to_vec();
    let i = link.find("d=").expect("d=") + 2 + (link.len() - link.find("d=").unwrap()) / 2;
    b[i] = if b[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).expect("utf8")
}

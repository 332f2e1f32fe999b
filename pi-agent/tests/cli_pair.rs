//! `pi-agent pair` next to a running `pi-agent run --listen`: the code it prints names the
//! broker the running agent really listens on, not the config file's default.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use p1consent_shared::pairing::PairingInvite;
use p1consent_testkit::free_port;

const AGENT: &str = env!("CARGO_BIN_EXE_pi-agent");

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs `pi-agent pair` and returns the broker hint of the code it printed.
fn pair_hint(state: &Path) -> String {
    let out = Command::new(AGENT)
        .args(["--state-dir"])
        .arg(state)
        .arg("pair")
        .env_remove("P1C_BROKER_LISTEN")
        .env_remove("P1C_BROKER_ADVERTISE")
        .env_remove("P1C_BROKER_URL")
        .output()
        .expect("run pi-agent pair");
    assert!(out.status.success(), "pair failed: {out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let link = stdout
        .split_whitespace()
        .find(|w| w.starts_with("p1consent://pair"))
        .unwrap_or_else(|| panic!("no pairing link in: {stdout}"));
    PairingInvite::from_link(link, now_s())
        .expect("the printed link parses")
        .broker_hint()
        .to_string()
}

#[test]
fn pair_uses_the_running_agents_listen_address_and_the_config_without_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let agent = Running(
        Command::new(AGENT)
            .arg("--state-dir")
            .arg(dir.path())
            .args(["run", "--simulate", "--listen", &listen])
            .env_remove("P1C_BROKER_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pi-agent run"),
    );
    // The agent writes status.json (with its broker address) within a couple of seconds.
    let status = dir.path().join("status.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&status).is_ok_and(|s| s.contains("broker_hint")) {
        assert!(Instant::now() < deadline, "the agent wrote no status");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(pair_hint(dir.path()), format!("mqtt://{listen}"));

    // Stopped agent: its old status no longer counts once stale; the config's default
    // (the embedded broker on 0.0.0.0:1883, advertised by host name) does.
    drop(agent);
    let mut s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&status).expect("status")).expect("json");
    s["updated_ms"] = serde_json::json!(0);
    std::fs::write(&status, s.to_string()).expect("write status");
    let hint = pair_hint(dir.path());
    assert!(
        hint.starts_with("mqtt://") && hint.ends_with(".local:1883"),
        "config default expected, got {hint}"
    );
}

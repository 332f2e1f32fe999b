//! The audit is loud when the wallet's own copy of the log was changed behind its back:
//! a real mosquitto and pi-agent, a real pairing, then one byte of a stored entry flipped in
//! the wallet's state file. The entry is reported as rejected (not silently dropped), the
//! other threads stay verified, and the state the wallet derives no longer contains it.

mod common;

use common::{Agent, new_wallet, now, opts};
use p1consent_testkit::Mosquitto;
use p1consent_wallet::{Wallet, wallet::STATE_FILE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_stored_entry_fails_the_audit_loudly() {
    let mosq = Mosquitto::start();
    let agent = Agent::start(&mosq.url());
    let device = agent.device;
    let link = agent.pairing_link().await;
    let dir = tempfile::tempdir().unwrap();
    let mut wallet = new_wallet(dir.path(), 20);
    wallet.pair(&link).await.expect("pairing");
    let before = wallet.verify_log();
    assert!(!before.is_empty());
    assert!(before.iter().all(|t| t.rejected.is_empty()), "{before:?}");
    let dev_thread = before
        .iter()
        .find(|t| t.kind == "device")
        .expect("the meter's thread")
        .clone();
    assert!(!dev_thread.entries.is_empty());
    assert!(wallet.state_at(now()).devices[&device].is_paired());
    drop(wallet);
    agent.stop().await;

    // Flip the last hex digit (inside the signature) of the first entry of the meter thread.
    let path = dir.path().join(STATE_FILE);
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let entry = &mut state["threads"][&dev_thread.thread_id]["entries"][0];
    let hex = entry.as_str().expect("entries are hex strings").to_string();
    let last = hex.chars().last().unwrap();
    let flipped = if last == '0' { '1' } else { '0' };
    *entry = serde_json::Value::String(format!("{}{flipped}", &hex[..hex.len() - 1]));
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();

    let wallet = Wallet::open(dir.path(), Wallet::file_secrets(dir.path()), opts(2))
        .expect("a changed entry must not stop the wallet from opening");
    let after = wallet.verify_log();
    let t = after
        .iter()
        .find(|t| t.thread_id == dev_thread.thread_id)
        .expect("the meter's thread is still listed");
    assert!(!t.rejected.is_empty());
    assert_eq!(t.rejected[0].thread_id, dev_thread.thread_id);
    assert!(!t.rejected[0].error.is_empty());
    assert!(
        after
            .iter()
            .filter(|o| o.thread_id != dev_thread.thread_id)
            .all(|o| o.rejected.is_empty()),
        "{after:?}"
    );
    // The pairing record was the changed entry: the wallet no longer believes it.
    assert!(
        !wallet
            .state_at(now())
            .devices
            .get(&device)
            .is_some_and(|d| d.is_paired()),
        "a state built on a changed entry"
    );
}

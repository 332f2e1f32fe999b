//! The `p1consent-wallet` binary against mosquitto and a real pi-agent: pairing from a QR
//! image, open/grant/consents/receipt/log, one-sentence errors, and a second wallet (sync).

mod common;

use std::{
    path::Path,
    process::Output,
    time::{Duration, Instant},
};

use common::{Agent, Provider, WAIT, tamper};
use p1consent_shared::{consent::SignedReceipt, qr};
use p1consent_testkit::Mosquitto;
use serde_json::Value;

async fn wallet(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_p1consent-wallet"));
    cmd.arg("--data-dir")
        .arg(dir)
        .arg("--timeout")
        .arg("15")
        .args(args);
    tokio::task::spawn_blocking(move || cmd.output().expect("run wallet"))
        .await
        .expect("join")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> Value {
    serde_json::from_str(&ok(o)).expect("json output")
}

/// A failure: non-zero exit and one sentence on stderr.
fn failed(o: &Output) -> String {
    assert!(!o.status.success(), "should fail");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_pair_from_image_grant_and_sync() {
    let mosq = Mosquitto::start();
    let agent = Agent::start(&mosq.url());
    let d1 = tempfile::tempdir().unwrap();
    let w1 = d1.path().join("w");

    failed(&wallet(&w1, &["consents"]).await);
    ok(&wallet(&w1, &["init"]).await);
    let e = failed(&wallet(&w1, &["init"]).await);
    assert!(e.contains("already exists"), "{e}");

    // Pair from a PNG of the QR code.
    let link = agent.pairing_link().await;
    let png = d1.path().join("qr.png");
    std::fs::write(&png, qr::render_png(&link, 4).unwrap()).unwrap();
    let out = ok(&wallet(&w1, &["pair", png.to_str().unwrap()]).await);
    assert!(out.contains("Paired with meter \"Meter hall\""), "{out}");

    // Requests: tampered refused, genuine summarised.
    let provider = Provider::new();
    let req = provider.request_link();
    let e = failed(&wallet(&w1, &["open", &tamper(&req)]).await);
    assert!(e.contains("request link is not valid"), "{e}");
    let human = ok(&wallet(&w1, &["open", &req]).await);
    assert!(
        human.contains("Wattt Insights B.V. (privacy@wattt.example) asks"),
        "{human}"
    );
    let s = json(&wallet(&w1, &["--json", "open", &req]).await);
    let rid = s["request_id"].as_str().unwrap().to_string();

    let e = failed(&wallet(&w1, &["grant", &rid, "--device", "no-such-meter"]).await);
    assert!(e.contains("no paired meter"), "{e}");
    let e = failed(
        &wallet(
            &w1,
            &["grant", &rid, "--device", "meter hall", "--fields", "gas"],
        )
        .await,
    );
    assert!(e.contains("cannot grant"), "{e}");
    let g = json(
        &wallet(
            &w1,
            &[
                "--json",
                "grant",
                &rid[..10],
                "--device",
                "meter hall",
                "--fields",
                "energy_delivered",
                "--resolution",
                "minute",
                "--days",
                "7",
            ],
        )
        .await,
    );
    let cid = g["consent_id"].as_str().unwrap().to_string();

    // Wait for the meter's acknowledgement through the CLI.
    let deadline = Instant::now() + WAIT;
    loop {
        let c = json(&wallet(&w1, &["--json", "consents"]).await);
        if !c["consents"][0]["key_delivered_epoch"].is_null() {
            assert_eq!(
                c["consents"][0]["fields"],
                serde_json::json!(["energy_delivered"])
            );
            assert_eq!(c["consents"][0]["resolution"], "minute");
            break;
        }
        assert!(Instant::now() < deadline, "no KeyDelivered: {c}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let receipt = ok(&wallet(&w1, &["receipt", &cid[..8]]).await);
    SignedReceipt::verify(&receipt, None).expect("receipt verifies");
    let log = ok(&wallet(&w1, &["log", "--verify"]).await);
    assert!(log.contains("All 2 thread(s) verify."), "{log}");

    // A second wallet with the same keys rebuilds the same state.
    let w2 = d1.path().join("w2");
    std::fs::create_dir_all(&w2).unwrap();
    std::fs::copy(w1.join("secrets.json"), w2.join("secrets.json")).unwrap();
    let r = json(&wallet(&w2, &["--json", "--broker", &mosq.url(), "sync"]).await);
    assert_eq!(r["threads"], 2);
    let a = json(&wallet(&w1, &["--json", "consents", "--offline"]).await);
    let b = json(&wallet(&w2, &["--json", "consents", "--offline"]).await);
    assert_eq!(a, b);

    // Revoke from the second wallet.
    ok(&wallet(&w2, &["revoke", &cid, "--erase"]).await);
    let e = failed(&wallet(&w1, &["grant", &rid, "--device", "meter hall"]).await);
    assert!(e.contains("no pending request"), "{e}");
    ok(&wallet(&w1, &["open", &req]).await);
    let e = failed(&wallet(&w1, &["grant", &rid, "--device", "meter hall"]).await);
    assert!(e.contains("already granted"), "{e}");
    let e = failed(&wallet(&w2, &["revoke", &cid]).await);
    assert!(e.contains("not active"), "{e}");
    let c = json(&wallet(&w1, &["--json", "consents"]).await);
    assert_eq!(c["consents"][0]["status"], "withdrawn");
    agent.stop().await;
}

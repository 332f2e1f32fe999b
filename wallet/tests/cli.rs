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

/// `own enable | show | export | compact` over the library the app uses; the own view is not
/// listed by `consents` (as in the app).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_own_view_enable_show_export() {
    let mosq = Mosquitto::start();
    let agent = Agent::start(&mosq.url());
    let d = tempfile::tempdir().unwrap();
    let w = d.path().join("w");

    ok(&wallet(&w, &["init"]).await);
    let e = failed(&wallet(&w, &["own", "enable"]).await);
    assert!(e.contains("no meter is paired"), "{e}");
    ok(&wallet(&w, &["pair", &agent.pairing_link().await]).await);
    let e = failed(&wallet(&w, &["own", "show"]).await);
    assert!(e.contains("run `p1consent-wallet own enable` first"), "{e}");

    // Enabling is idempotent; with one meter paired, --device may be left out.
    let a = json(&wallet(&w, &["--json", "own", "enable"]).await);
    let b = json(&wallet(&w, &["--json", "own", "enable", "--device", "meter hall"]).await);
    let cid = a["consent_id"].as_str().unwrap().to_string();
    assert_eq!(b["consent_id"], a["consent_id"]);
    let e = failed(&wallet(&w, &["own", "enable", "--device", "kitchen"]).await);
    assert!(e.contains("no paired meter matches"), "{e}");

    // Not someone with access: `consents` leaves it out, the log names it.
    let c = json(&wallet(&w, &["--json", "consents"]).await);
    assert_eq!(c["consents"], serde_json::json!([]), "{c}");
    assert_eq!(c["devices"].as_array().map(Vec::len), Some(1));
    let human = ok(&wallet(&w, &["consents", "--offline"]).await);
    assert!(human.contains("No consents."), "{human}");
    let log = json(&wallet(&w, &["--json", "log", "--offline"]).await);
    let kinds: Vec<&str> = log["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"own_view") && !kinds.contains(&"consent"),
        "{kinds:?}"
    );
    // The receipt of the own view is still there for whoever asks by id.
    ok(&wallet(&w, &["receipt", &cid[..10]]).await);

    // `show` listens, stores and shows power and today's use.
    let deadline = Instant::now() + WAIT;
    let shown = loop {
        let s = json(&wallet(&w, &["--json", "own", "show", "--listen", "2"]).await);
        if s["power_kw"].is_number() && s["today_kwh"].is_number() {
            break s;
        }
        assert!(Instant::now() < deadline, "no own readings: {s}");
    };
    assert!(shown["today_kwh"].as_f64().unwrap() >= 0.0);
    let since = shown["since_ms"].as_u64().unwrap();
    let updated = shown["updated_ms"].as_u64().unwrap();
    assert!(
        since <= updated && updated - since <= 86_400_000 + 3_600_000,
        "{shown}"
    );
    let human = ok(&wallet(&w, &["own", "show", "--listen", "1"]).await);
    assert!(human.contains(" (reading of "), "{human}");
    assert!(human.contains("Used today: "), "{human}");

    // Export: CSV and JSON, every row saying its resolution.
    let csv_path = d.path().join("mine.csv");
    let out = ok(&wallet(
        &w,
        &[
            "own",
            "export",
            "--format",
            "csv",
            "--out",
            csv_path.to_str().unwrap(),
        ],
    )
    .await);
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(p1consent_wallet::own::CSV_HEADER));
    let rows: Vec<&str> = lines.collect();
    assert!(rows.len() >= 2, "{csv}");
    assert!(rows.iter().all(|r| r.starts_with("raw,")), "{csv}");
    assert!(
        out.contains(&format!("Saved {} row(s)", rows.len())),
        "{out}"
    );
    let json_path = d.path().join("mine.json");
    let r = json(
        &wallet(
            &w,
            &[
                "--json",
                "own",
                "export",
                "--format",
                "json",
                "--out",
                json_path.to_str().unwrap(),
            ],
        )
        .await,
    );
    let exported: Vec<p1consent_wallet::OwnRow> =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(r["rows"].as_u64(), Some(exported.len() as u64));
    assert!(exported.len() >= rows.len());
    assert!(
        exported
            .iter()
            .all(|x| x.resolution == p1consent_wallet::RowResolution::Raw && x.readings == 1)
    );
    let e = failed(
        &wallet(
            &w,
            &[
                "own",
                "export",
                "--format",
                "xml",
                "--out",
                json_path.to_str().unwrap(),
            ],
        )
        .await,
    );
    assert!(e.contains("csv or json"), "{e}");

    // Nothing is two days old yet: compaction keeps every reading raw.
    let c = json(&wallet(&w, &["--json", "own", "compact"]).await);
    assert_eq!(
        (c["folded"].as_u64(), c["damaged"].as_u64()),
        (Some(0), Some(0))
    );
    agent.stop().await;
}

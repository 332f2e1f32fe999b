//! The owner's own data through the app's command layer, against a real broker (mosquitto)
//! and a real pi-agent (simulated meter): pairing grants the own view, `own_usage` shows the
//! current power, today's use and the chart, the own view is not listed as someone with
//! access, and the export writes CSV and JSON.

use std::{path::Path, sync::Arc, time::Duration};

use p1consent_app_lib::core::{AppCore, SecretsFactory};
use p1consent_scenarios::{BrokerKind, Meter, World, wait_for};
use p1consent_wallet::{OwnRow, RowResolution, Wallet, WalletOptions};

fn file_secrets() -> SecretsFactory {
    Arc::new(|dir: &Path| Wallet::file_secrets(dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_show_own_power_today_and_chart_and_export() {
    let world = World::start(BrokerKind::Mosquitto, Meter::fast_simulator()).await;
    let dir = tempfile::tempdir().unwrap();
    let core = AppCore::new(
        dir.path().to_path_buf(),
        file_secrets(),
        "file",
        WalletOptions {
            broker: Some(world.url.clone()),
            timeout: Duration::from_secs(30),
        },
    );
    core.create_identity(None).await.unwrap();
    let paired = core.pair(world.pairing_link().await).await.expect("pair");
    assert_eq!(paired.own_view_note, None, "the own view was granted");

    let usage = wait_for("the owner's own readings", || async {
        let u = core
            .own_usage(paired.device_id.clone(), 0)
            .await
            .expect("own usage");
        assert_eq!(u.problem, None);
        (u.power_kw.is_some() && u.chart.len() >= 3 && u.today_kwh.is_some()).then_some(u)
    })
    .await;
    let updated = usage.updated_ms.expect("latest reading time");
    assert!(usage.chart.iter().all(|(t, _)| *t <= updated));
    assert!(usage.chart.windows(2).all(|w| w[0].0 <= w[1].0));
    assert!(usage.today_kwh.is_some_and(|k| k >= 0.0));
    // Since "now" there is nothing used yet.
    let later = core
        .own_usage(paired.device_id.clone(), updated + 3_600_000)
        .await
        .expect("own usage");
    assert_eq!(later.today_kwh, None);

    // The own view is not someone with access; the audit names its thread apart.
    let list = core.consents(false).await.expect("consents");
    assert!(list.consents.is_empty(), "{:?}", list.consents);
    let audit = core.audit().await.expect("audit");
    assert!(audit.verified);
    let mut kinds: Vec<&str> = audit.threads.iter().map(|t| t.kind.as_str()).collect();
    kinds.sort();
    assert_eq!(kinds, ["device", "own_view"]);

    // Export: JSON parses to the readings, CSV has a header and one row each.
    let json_path = dir.path().join("mine.json");
    let written = core
        .export_own_data(
            paired.device_id.clone(),
            "json".into(),
            json_path.display().to_string(),
        )
        .await
        .expect("export json");
    assert_eq!(written, json_path.display().to_string());
    let rows: Vec<OwnRow> =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).expect("json");
    assert!(rows.len() >= 3);
    assert!(rows.iter().any(|r| r.power_delivered_kw == usage.power_kw));
    // All readings are recent: raw rows, one reading each.
    assert!(
        rows.iter()
            .all(|r| r.resolution == RowResolution::Raw && r.readings == 1)
    );
    let csv_path = dir.path().join("mine.csv");
    core.export_own_data(
        paired.device_id.clone(),
        "CSV".into(),
        csv_path.display().to_string(),
    )
    .await
    .expect("export csv");
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    assert!(csv.starts_with("resolution,timestamp_ms,readings,seq,power_delivered_kw,"));
    assert!(csv.lines().skip(1).all(|l| l.starts_with("raw,")), "{csv}");
    assert!(csv.lines().count() > rows.len() / 2);

    // Hostile input: an unknown format, a relative path.
    let err = core
        .export_own_data(
            paired.device_id.clone(),
            "xml".into(),
            csv_path.display().to_string(),
        )
        .await
        .unwrap_err();
    assert!(err.contains("csv or json"), "{err}");
    let err = core
        .export_own_data(paired.device_id.clone(), "csv".into(), "mine.csv".into())
        .await
        .unwrap_err();
    assert!(err.contains("full path"), "{err}");
    // An unknown meter: said in words, nothing else.
    let u = core.own_usage("ffffffff".into(), 0).await.expect("usage");
    assert!(u.problem.is_some() && u.power_kw.is_none());
    // Not retried on every refresh: the same words come back at once.
    let again = core.own_usage("ffffffff".into(), 0).await.expect("usage");
    assert_eq!(again.problem, u.problem);
    assert!(core.pending_requests().await.expect("pending").is_empty());
}

//! The owner's own view, end to end: a real mosquitto, a real pi-agent (simulated meter)
//! in-process, the wallet granting itself a consent and reading it through the provider SDK's
//! reader, next to a third-party provider that is granted, then revoked.

mod common;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use common::{Agent, WAIT, new_wallet};
use p1consent_provider::{Provider, ProviderEvent, ProviderKeys, ProviderOptions, RequestBuilder};
use p1consent_shared::{
    channel::ChannelReader,
    consent::{ConsentStatus, Resolution},
    crypto::{KemSecretKey, KemSuite, OpaqueId},
    topics::{self, InboxItem},
    view::ViewPayload,
};
use p1consent_testkit::{Mosquitto, spy::Spy};
use p1consent_wallet::{
    ExportFormat, OwnReading, OwnRow, OwnerIdentity, RowResolution,
    own::{own_fields, own_view_keys},
    wallet::now_ms,
};

/// Events of `p` for `d`.
async fn drain(p: &mut Provider, d: Duration) -> Vec<ProviderEvent> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + d;
    while let Ok(ev) = tokio::time::timeout_at(deadline, p.next_event()).await {
        out.push(ev.expect("provider link"));
    }
    out
}

fn provider(url: &str, dir: &std::path::Path) -> Provider {
    Provider::connect_with(
        ProviderKeys::generate(KemSuite::DEFAULT),
        url,
        dir,
        ProviderOptions {
            session_expiry_s: None,
            ..ProviderOptions::default()
        },
    )
    .expect("provider connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_reads_own_meter_third_party_cannot_and_revocation_keeps_owner() {
    let mosq = Mosquitto::start();
    // Sees everything on the broker, as any client that may subscribe to `#` would.
    let spy = Spy::start(&mosq.url(), "own-view-spy").await;
    let agent = Agent::start(&mosq.url());
    let link = agent.pairing_link().await;
    let w_dir = tempfile::tempdir().unwrap();
    let mut wallet = new_wallet(w_dir.path(), 20);
    wallet.pair(&link).await.expect("pairing");
    let dev = agent.device.opaque_id().to_hex();

    // The own view: granted once, idempotent, labelled as the owner's own.
    let own = wallet.enable_own_view(&dev).await.expect("own view");
    assert_eq!(wallet.enable_own_view(&dev).await.expect("again"), own);
    let state = wallet.consents().await.expect("consents");
    assert_eq!(state.consents.len(), 1);
    assert!(wallet.is_own_view(&state.consents[&own]));
    assert_eq!(state.consents[&own].status, ConsentStatus::Active);

    // A third-party provider asks for power + energy, raw; the owner grants it.
    let p_dir = tempfile::tempdir().unwrap();
    let p_keys = ProviderKeys::generate(KemSuite::DEFAULT);
    let req = RequestBuilder::new("Wattt Insights B.V.", "privacy@wattt.example")
        .purpose("Energy saving advice")
        // The same view as the owner's, so both read one channel and revoking the third
        // party rotates the key the owner reads with.
        .fields(own_fields())
        .resolution(Resolution::Raw)
        .build(&p_keys)
        .expect("request");
    let mut third = Provider::connect_with(
        p_keys,
        &mosq.url(),
        p_dir.path(),
        ProviderOptions {
            session_expiry_s: None,
            ..ProviderOptions::default()
        },
    )
    .expect("provider connects");
    let summary = wallet.open_request(&req.to_link()).expect("open");
    let third_cid = wallet
        .grant(&summary.request_id, &dev)
        .await
        .expect("grant");
    let state = wallet.consents().await.expect("consents");
    assert!(!wallet.is_own_view(&state.consents[&third_cid]));

    // A provider that was never granted anything.
    let q_dir = tempfile::tempdir().unwrap();
    let mut stranger = provider(&mosq.url(), q_dir.path());

    // Owner and third party both read; the same telegram (same agent timestamp) carries the
    // same values for both.
    let mut reader = wallet.own_reader().expect("own reader");
    let mut third_seen: HashMap<u64, (Option<f64>, Option<f64>)> = HashMap::new();
    let mut stranger_events = Vec::new();
    let deadline = Instant::now() + WAIT;
    let matched = loop {
        reader
            .run_for(Duration::from_millis(500))
            .await
            .expect("reader");
        for ev in drain(&mut third, Duration::from_millis(300)).await {
            if let ProviderEvent::Reading {
                payload: ViewPayload::Reading(r),
                ..
            } = ev
            {
                third_seen.insert(
                    r.time_ms,
                    (
                        r.power_delivered_kw,
                        // The simulated meter reports per tariff; the owner's reading sums them.
                        r.energy_delivered_total_kwh.or(
                            match (
                                r.energy_delivered_tariff1_kwh,
                                r.energy_delivered_tariff2_kwh,
                            ) {
                                (Some(a), Some(b)) => Some(a + b),
                                _ => None,
                            },
                        ),
                    ),
                );
            }
        }
        stranger_events.extend(drain(&mut stranger, Duration::from_millis(100)).await);
        let mine = wallet.own_readings(&dev, 0).expect("readings");
        let matched: Vec<OwnReading> = mine
            .into_iter()
            .filter(|r| third_seen.contains_key(&r.timestamp_ms))
            .collect();
        if matched.len() >= 3 {
            break matched;
        }
        assert!(Instant::now() < deadline, "owner and provider readings");
    };
    for r in &matched {
        let (p, e) = third_seen[&r.timestamp_ms];
        assert!(r.power_delivered_kw.is_some(), "{r:?}");
        assert_eq!(r.power_delivered_kw, p, "{r:?}");
        assert!(r.energy_delivered_kwh.is_some(), "{r:?}");
        assert_eq!(r.energy_delivered_kwh, e, "{r:?}");
    }
    assert!(matched.iter().all(|r| r.energy_returned_kwh.is_some()));
    // The stranger never got a key or a reading.
    assert!(
        !stranger_events.iter().any(|e| matches!(
            e,
            ProviderEvent::KeyReceived { .. }
                | ProviderEvent::Reading { .. }
                | ProviderEvent::Granted { .. }
        )),
        "{stranger_events:?}"
    );

    // What the broker carries for the owner's view opens only with the owner's reader key:
    // the key delivery is addressed to it, and a stranger's KEM key cannot open it.
    let own_keys = own_view_keys(&OwnerIdentity::load(wallet.secrets()).unwrap().unwrap());
    let delivery = spy
        .last_payload(&topics::inbox(
            &own_keys.public().opaque_id(),
            &InboxItem::Key(own),
        ))
        .expect("the owner's key delivery crossed the broker");
    assert!(ChannelReader::from_delivery(&delivery, &agent.device, own_keys.kem()).is_ok());
    let stranger_kem = KemSecretKey::generate(KemSuite::DEFAULT);
    assert!(ChannelReader::from_delivery(&delivery, &agent.device, &stranger_kem).is_err());

    // Revoke the third party: the meter rotates the key; the owner follows and still reads.
    wallet
        .revoke(&third_cid.to_hex(), false)
        .await
        .expect("revoke");
    let revoked_at = now_ms();
    let mut owner_rotated = false;
    let mut third_cut = false;
    let deadline = Instant::now() + WAIT;
    loop {
        for ev in reader
            .run_for(Duration::from_millis(500))
            .await
            .expect("reader")
        {
            if matches!(ev, ProviderEvent::Rotated { consent, .. } if consent == own) {
                owner_rotated = true;
            }
            assert!(
                !matches!(ev, ProviderEvent::AccessEnded { .. }),
                "the owner must stay a reader"
            );
        }
        for ev in drain(&mut third, Duration::from_millis(200)).await {
            if matches!(
                ev,
                ProviderEvent::AccessEnded { .. } | ProviderEvent::Revoked { .. }
            ) {
                third_cut = true;
            }
        }
        let after = wallet
            .own_readings(&dev, revoked_at + 2_000)
            .expect("readings");
        if owner_rotated && third_cut && after.len() >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "owner follows the rotation (rotated {owner_rotated}, third cut {third_cut}, {} readings after)",
            after.len()
        );
    }

    // Today's consumption, the latest reading, the exports.
    let all = wallet.own_readings(&dev, 0).expect("readings");
    let first_e = all.iter().find_map(|r| r.energy_delivered_kwh).unwrap();
    let last_e = all
        .iter()
        .rev()
        .find_map(|r| r.energy_delivered_kwh)
        .unwrap();
    let used = wallet
        .own_consumption_since(&dev, 0)
        .expect("consumption")
        .expect("two readings");
    assert!((used - (last_e - first_e)).abs() < 1e-9, "{used}");
    assert!(used >= 0.0);
    let latest = wallet.own_latest(&dev).expect("latest").expect("some");
    assert!(latest.timestamp_ms > revoked_at);
    let csv = wallet
        .export_own_data(&dev, ExportFormat::Csv)
        .expect("csv");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(p1consent_wallet::own::CSV_HEADER));
    let n_rows = lines.count();
    let json = wallet
        .export_own_data(&dev, ExportFormat::Json)
        .expect("json");
    let parsed: Vec<OwnRow> = serde_json::from_str(&json).expect("json parses");
    assert_eq!(parsed.len(), n_rows);
    // Nothing is two days old: every row is a raw reading.
    assert!(parsed.iter().all(|r| r.resolution == RowResolution::Raw));
    assert!(parsed.len() >= all.len());
    let out = w_dir.path().join("export.csv");
    wallet
        .export_own_data_to(&dev, ExportFormat::Csv, &out)
        .expect("export to file");
    assert!(
        std::fs::read_to_string(&out)
            .unwrap()
            .starts_with("resolution,timestamp_ms,")
    );
    assert!(matches!(
        "xml".parse::<ExportFormat>(),
        Err(p1consent_wallet::WalletError::OwnView(_))
    ));
    // A meter that is not paired: refused, and no request is left pending.
    assert!(matches!(
        wallet.enable_own_view("ffffffff").await,
        Err(p1consent_wallet::WalletError::UnknownDevice(_))
    ));
    assert!(wallet.pending_requests().is_empty());
    // A device that is not paired has no own data.
    assert!(wallet.own_readings("ffff", 0).expect("none").is_empty());
    let _ = OpaqueId::from_hex(&own.to_hex());

    reader.close().expect("close");
    agent.stop().await;
}

/// Pairing stands when the own view cannot be granted, and the summary says why in words:
/// here the meter's key type differs from the wallet's (a meter with ML-KEM, a wallet with
/// the default sntrup761), which the own view's reader key cannot serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_stands_and_says_so_when_the_own_view_cannot_be_granted() {
    let mosq = Mosquitto::start();
    let odd = Agent::start_with_suite(&mosq.url(), KemSuite::X25519MlKem768);
    let usual = Agent::start(&mosq.url());
    let w_dir = tempfile::tempdir().unwrap();
    let mut wallet = new_wallet(w_dir.path(), 20);

    let p = wallet
        .pair_with_own_view(&odd.pairing_link().await)
        .await
        .expect("pairing succeeds");
    let note = p.own_view_note.expect("a note");
    assert_eq!(
        note,
        "The meter is paired, but showing you its data could not be set up yet: the meter \
         uses another type of key than this wallet's own reader."
    );
    let dev = odd.device.opaque_id().to_hex();
    assert_eq!(p.device_id, dev);
    let state = wallet.state_at(now_ms() / 1000);
    assert!(state.devices[&odd.device].is_paired());
    assert!(state.consents.is_empty());
    assert_eq!(wallet.own_view_of(&dev).expect("lookup"), None);
    assert!(
        wallet.pending_requests().is_empty(),
        "no own-view request left behind"
    );

    // The usual meter: paired with its own view, no note.
    let p = wallet
        .pair_with_own_view(&usual.pairing_link().await)
        .await
        .expect("pairing succeeds");
    assert_eq!(p.own_view_note, None);
    let dev = usual.device.opaque_id().to_hex();
    let own = wallet
        .own_view_of(&dev)
        .expect("lookup")
        .expect("own view on");
    let state = wallet.state_at(now_ms() / 1000);
    assert!(wallet.is_own_view(&state.consents[&own]));
    let kinds: Vec<String> = wallet.verify_log().into_iter().map(|t| t.kind).collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "own_view").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "consent").count(),
        0,
        "{kinds:?}"
    );

    // The reader compacts when it starts: a file of the own view with readings of three days
    // ago (15 minutes, every 10 s) becomes one aggregate; the energy over it is kept.
    let data = wallet.own_view_dir().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let t0 = (now_ms() - 3 * 86_400_000) / 900_000 * 900_000;
    let mut text = String::new();
    for i in 0..90u64 {
        let payload = ViewPayload::Reading(p1consent_shared::view::Reading {
            time_ms: t0 + i * 10_000,
            power_delivered_kw: Some(0.5),
            energy_delivered_total_kwh: Some(100.0 + i as f64 / 100.0),
            ..Default::default()
        });
        let line = serde_json::json!({
            "consent": own.to_hex(), "seq": i, "timestamp_ms": t0 + i * 10_000, "payload": payload
        });
        text.push_str(&format!("{line}\n"));
    }
    std::fs::write(data.join(format!("{own}.jsonl")), text).unwrap();
    let kwh = (100.0 + 89.0 / 100.0) - 100.0;
    assert_eq!(
        wallet.own_consumption_since(&dev, t0).expect("kWh"),
        Some(kwh)
    );
    let reader = wallet.own_reader().expect("reader");
    let report = reader.last_compaction().clone().expect("compacted");
    assert_eq!((report.folded, report.aggregates), (90, 1));
    let rows = wallet.own_rows(&dev, 0).expect("rows");
    assert_eq!(rows[0].resolution, RowResolution::QuarterHour);
    assert_eq!((rows[0].timestamp_ms, rows[0].readings), (t0, 90));
    assert_eq!(rows[0].power_delivered_kw, Some(0.5));
    assert_eq!(
        wallet.own_consumption_since(&dev, t0).expect("kWh"),
        Some(kwh)
    );
    reader.close().expect("close");
    odd.stop().await;
    usual.stop().await;
}

//! The recovery kit through the app's command layer, against a real broker (mosquitto), a real
//! pi-agent (simulated meter) and a provider on the provider SDK: the first device pairs and
//! grants, saves a kit; a fresh device restores from it and rebuilds the same state from the
//! signed logs, then acts as the owner (its revocation reaches the provider).

use std::{path::Path, sync::Arc, time::Duration};

use p1consent_app_lib::core::{AppCore, ConsentList, SecretsFactory};
use p1consent_scenarios::{BrokerKind, Meter, Prov, World, wait_for};
use p1consent_shared::consent::{Field, FieldSet, Resolution};
use p1consent_wallet::{Wallet, WalletOptions};

fn file_secrets() -> SecretsFactory {
    Arc::new(|dir: &Path| Wallet::file_secrets(dir))
}

fn core(dir: &Path, broker: Option<String>) -> AppCore {
    AppCore::new(
        dir.to_path_buf(),
        file_secrets(),
        "file",
        WalletOptions {
            broker,
            timeout: Duration::from_secs(30),
        },
    )
}

/// The consents, read back from the broker, without the offline fallback.
async fn consents(core: &AppCore) -> ConsentList {
    let list = core.consents(true).await.expect("consents");
    assert_eq!(list.offline, None, "the broker is up");
    list
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kit_from_one_device_restores_the_owner_on_another() {
    let world = World::start(BrokerKind::Mosquitto, Meter::fast_simulator()).await;
    let mut prov = Prov::connect(&world.url, "Wattt").await;

    // Device A: identity, meter, one consent with data flowing.
    let a_dir = tempfile::tempdir().unwrap();
    let a = core(a_dir.path(), Some(world.url.clone()));
    let owner = a.create_identity(None).await.unwrap().owner.unwrap();
    let paired = a.pair(world.pairing_link().await).await.expect("pair");
    let link = prov.request(
        FieldSet::empty().with(Field::PowerDelivered),
        Resolution::Raw,
        3600,
    );
    let req = a.open_request(link.clone()).await.unwrap();
    let cid = a
        .grant(req.summary.request_id.clone(), paired.device_id.clone())
        .await
        .expect("grant");
    let consent = Prov::consent_of(&link);
    assert_eq!(cid, consent.to_hex());
    prov.readings(&consent, 1).await;
    let seen_by_a = wait_for("the meter's key delivery", || async {
        let l = consents(&a).await;
        l.consents
            .iter()
            .any(|c| c.line.key_delivered_epoch.is_some())
            .then_some(l)
    })
    .await;
    assert!(seen_by_a.consents.iter().all(|c| !c.key_changed));

    // The kit: refused with a short passphrase, refused outside a full path, then saved.
    let kit_dir = tempfile::tempdir().unwrap();
    let kit = kit_dir.path().join("kit.p1ck").display().to_string();
    let err = a
        .export_recovery("short".into(), kit.clone())
        .await
        .unwrap_err();
    assert!(err.contains("too short"), "{err}");
    let err = a
        .export_recovery("a long passphrase".into(), "kit.p1ck".into())
        .await
        .unwrap_err();
    assert!(err.contains("full path"), "{err}");
    let written = a
        .export_recovery("a long passphrase".into(), kit.clone())
        .await
        .expect("export");
    assert_eq!(written, kit);
    let err = a
        .export_recovery("a long passphrase".into(), kit.clone())
        .await
        .unwrap_err();
    assert!(err.contains("already exists"), "{err}");

    // Device B knows nothing, not even the broker: everything comes from the kit and the log.
    let b_dir = tempfile::tempdir().unwrap();
    let b = core(b_dir.path(), None);
    let err = b
        .import_recovery(kit.clone(), "a wrong passphrase".into(), None)
        .await
        .unwrap_err();
    assert!(err.contains("wrong passphrase"), "{err}");
    assert!(!b.status().await.unwrap().initialised, "nothing restored");

    let report = b
        .import_recovery(kit.clone(), "a long passphrase".into(), None)
        .await
        .expect("import");
    assert_eq!(report.offline, None);
    let sync = report.sync.expect("synced");
    // The own view (granted on pairing) is a consent thread of its own.
    assert_eq!(
        sync.threads, 3,
        "device thread, own-view thread and consent thread"
    );
    assert!(sync.rejected.is_empty(), "{:?}", sync.rejected);
    assert_eq!(report.status.owner.as_deref(), Some(owner.as_str()));
    assert_eq!(report.status.broker.as_deref(), Some(world.url.as_str()));
    assert_eq!(report.status.devices, 1);
    assert_eq!(b.devices().await.unwrap(), a.devices().await.unwrap());
    let seen_by_b = consents(&b).await;
    assert_eq!(seen_by_b.consents, seen_by_a.consents);
    let audit = b.audit().await.unwrap();
    assert!(audit.verified);
    assert_eq!(audit.entries, a.audit().await.unwrap().entries);

    // A second restore into the same folder is refused.
    let err = b
        .import_recovery(kit.clone(), "a long passphrase".into(), None)
        .await
        .unwrap_err();
    assert!(err.contains("already exists"), "{err}");

    // B is the owner: its revocation reaches the provider, and A sees it in the log.
    b.revoke(cid.clone(), false).await.expect("revoke from B");
    prov.wait("the revocation", |e| {
        matches!(e, p1consent_scenarios::provider::ProviderEvent::Revoked { consent: c, .. } if *c == consent)
    })
    .await;
    // A reads the withdrawal and the meter's key change from the log.
    let l = wait_for("the meter's key change after the withdrawal", || async {
        let l = consents(&a).await;
        l.consents.iter().any(|c| c.key_changed).then_some(l)
    })
    .await;
    assert_eq!(l.consents.len(), 1);
    assert_eq!(l.consents[0].line.status, "withdrawn");
}

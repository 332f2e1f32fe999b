//! End-to-end: a real mosquitto, a real pi-agent (simulated meter) in-process, and the
//! wallet doing what the owner does. Every wait is for a condition, with a deadline.

mod common;

use std::time::{Duration, Instant};

use common::{Agent, Provider, WAIT, new_wallet, now, opts, tamper};
use p1consent_shared::consent::{
    ConsentState, ConsentStatus, RequestError, SignedReceipt, log::RotationReason,
};
use p1consent_shared::{
    consent::{Event, LogWriter, Role, ThreadEnvelope, ThreadKey, log::WriterState},
    crypto::{OpaqueId, SigningIdentity},
    mqtt::{self, LinkConfig, LinkEvent},
    pairing::{PairingInvite, PairingOffer, RejectReason},
    topics::{self, InboxItem},
};
use p1consent_testkit::Mosquitto;
use p1consent_wallet::{OwnerIdentity, Wallet, WalletError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_succeeds_once_and_a_spent_code_fails() {
    let mosq = Mosquitto::start();
    let agent = Agent::start(&mosq.url());
    let link = agent.pairing_link().await;

    let w_dir = tempfile::tempdir().unwrap();
    let mut wallet = new_wallet(w_dir.path(), 20);

    // A code with the right meter but a wrong secret: the meter's signed rejection.
    let invite = PairingInvite::from_link(&link, now()).expect("invite");
    let wrong = PairingOffer::with_secret(
        agent.device,
        invite.broker_hint(),
        invite.label(),
        invite.expires_at(),
        zeroize::Zeroizing::new([7u8; 16]),
    )
    .expect("offer")
    .to_link();
    match wallet.pair(&wrong).await {
        Err(WalletError::PairingRejected(RejectReason::BadProof)) => {}
        other => panic!("a wrong secret must be rejected as a bad proof, got {other:?}"),
    }
    assert!(wallet.state_at(now()).devices.is_empty());

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

    // The provider opens the envelope from its inbox and confirms the erasure; the wallet
    // reads the confirmation back.
    let (tid, key) = provider_thread(&mosq.url(), &provider).await;
    let entry = LogWriter::new(tid, Role::Provider)
        .append(
            &provider.signing,
            &key,
            p1consent_wallet::wallet::now_ms(),
            &Event::ErasureConfirmed { consent_id: cid },
        )
        .expect("provider entry");
    publish_retained(&mosq.url(), topics::log_entry(&tid, 3, 0), entry).await;
    let state = wait_until!("the provider's ErasureConfirmed", {
        let s = wallet.consents().await.expect("consents");
        s.consents
            .get(&cid)
            .and_then(|c| c.erasure_confirmed_at_ms)
            .map(|_| s.clone())
    });
    assert!(state.consents[&cid].erasure_confirmed_at_ms.is_some());

    // Every thread verifies from scratch.
    let report = wallet.verify_log();
    assert_eq!(report.len(), 2);
    assert!(report.iter().all(|t| t.rejected.is_empty()));
    // ... and says in words whom each is about.
    let mut titles: Vec<(&str, &str)> = report
        .iter()
        .map(|t| (t.kind.as_str(), t.title.as_str()))
        .collect();
    titles.sort();
    assert_eq!(
        titles,
        [
            ("consent", "Wattt Insights B.V. — Meter hall"),
            ("device", "Meter hall")
        ]
    );

    // A second wallet with only the owner's keys rebuilds the same state from the broker.
    let id = OwnerIdentity::load(wallet.secrets())
        .expect("load")
        .expect("identity");
    let w2_dir = tempfile::tempdir().unwrap();
    let mut opts2 = opts(20);
    opts2.broker = Some(mosq.url());
    let mut second = Wallet::init_with_identity(
        w2_dir.path(),
        Wallet::file_secrets(w2_dir.path()),
        id,
        opts2,
    )
    .expect("second wallet");
    let report = second.sync().await.expect("sync");
    assert_eq!(report.threads, 2);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    wallet.refresh().await.expect("refresh");
    let t = now();
    let (a, b): (ConsentState, ConsentState) = (wallet.state_at(t), second.state_at(t));
    assert_eq!(a, b);
    assert_eq!(a.consents.len(), 1);

    // A hostile broker: garbage and a forged owner entry on the device thread's log, the
    // owner's first entry overwritten, junk in the owner index. Nothing of it counts, and
    // what the wallet verified before stays.
    let dev_tid = a.devices[&agent.device].thread_id;
    let forged = LogWriter::resume(
        dev_tid,
        Role::Owner,
        WriterState {
            next_seq: 50,
            prev_hash: [0; 32],
            last_time_ms: 0,
        },
    )
    .append(
        &SigningIdentity::generate(),
        &ThreadKey::from_bytes([9; 32]),
        p1consent_wallet::wallet::now_ms(),
        &Event::DeviceUnpaired {
            device: agent.device,
        },
    )
    .expect("forged entry");
    let url = mosq.url();
    publish_retained(&url, topics::log_entry(&dev_tid, 1, 50), forged).await;
    publish_retained(&url, topics::log_entry(&dev_tid, 2, 7), b"garbage".to_vec()).await;
    publish_retained(
        &url,
        topics::log_entry(&dev_tid, 1, 0),
        b"\x12\x01\x01".to_vec(),
    )
    .await;
    publish_retained(
        &url,
        topics::owner_index(&wallet.owner().opaque_id(), &OpaqueId::random()),
        b"junk".to_vec(),
    )
    .await;
    let rejected = wallet.refresh().await.expect("refresh");
    assert!(rejected.len() >= 3, "{rejected:?}");
    assert_eq!(wallet.state_at(t), a);
    assert!(wallet.verify_log().iter().all(|r| r.rejected.is_empty()));

    // Unpair from the second wallet: the first one sees it after a refresh.
    second.unpair(&device_id).await.expect("unpair");
    wallet.refresh().await.expect("refresh");
    let s = wallet.state_at(now());
    assert!(!s.devices[&agent.device].is_paired());
    agent.stop().await;
}

/// What the provider finds in its inbox: the consent thread's id and key.
async fn provider_thread(
    url: &str,
    provider: &Provider,
) -> (
    p1consent_shared::crypto::OpaqueId,
    p1consent_shared::consent::ThreadKey,
) {
    let mut lc = LinkConfig::new(url.parse().unwrap(), "test-provider");
    lc.subscriptions = vec![topics::inbox_filter(&provider.signing.public().opaque_id())];
    let mut link = mqtt::connect(lc).unwrap();
    let me = provider.signing.public().opaque_id();
    wait_until!("the envelope in the provider's inbox", {
        match tokio::time::timeout(Duration::from_millis(500), link.events.recv()).await {
            Ok(Some(LinkEvent::Message(m))) => match InboxItem::parse(&m.topic, &me) {
                Some(InboxItem::Thread(tid)) => {
                    let env = ThreadEnvelope::decode(&m.payload, None).expect("envelope");
                    assert_eq!(env.thread_id, tid);
                    Some((tid, env.open(Role::Provider, &provider.kem).expect("open")))
                }
                _ => None,
            },
            _ => None,
        }
    })
}

async fn publish_retained(url: &str, topic: String, payload: Vec<u8>) {
    let mut link = mqtt::connect(LinkConfig::new(url.parse().unwrap(), "test-publisher")).unwrap();
    let mut sent = false;
    wait_until!("the broker's ack", {
        match tokio::time::timeout(Duration::from_millis(500), link.events.recv()).await {
            Ok(Some(LinkEvent::Connected)) if !sent => {
                link.handle
                    .publish(1, topic.clone(), payload.clone(), true, None)
                    .unwrap();
                sent = true;
                None
            }
            Ok(Some(LinkEvent::Acked(1))) => Some(()),
            _ => None,
        }
    })
}

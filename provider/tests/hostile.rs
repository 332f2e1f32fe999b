//! Hostile broker input: garbage on every topic the provider reads is reported as
//! `Rejected` (or ignored), never a crash, and the state on disk stays usable.

use std::time::Duration;

use p1consent_provider::{Provider, ProviderEvent, ProviderKeys, ProviderOptions};
use p1consent_shared::{
    crypto::{KemSuite, OpaqueId},
    mqtt::{self, LinkConfig, LinkEvent},
    topics::{self, InboxItem},
};
use p1consent_testkit::Mosquitto;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_rejected_not_fatal() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let keys = ProviderKeys::generate(KemSuite::DEFAULT);
    let me = keys.public().opaque_id();
    let mut p = Provider::connect_with(
        keys.duplicate(),
        &broker.url(),
        dir.path(),
        ProviderOptions::default(),
    )
    .unwrap();
    let mut link =
        mqtt::connect(LinkConfig::new(broker.url().parse().unwrap(), "attacker")).unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(ev) = link.events.recv().await {
            if ev == LinkEvent::Connected {
                break;
            }
        }
    })
    .await
    .unwrap();
    let id = OpaqueId([7; 16]);
    let attacks: Vec<(String, Vec<u8>)> = vec![
        (
            topics::inbox(&me, &InboxItem::Thread(id)),
            vec![0x11, 1, 1, 0, 0],
        ),
        (topics::inbox(&me, &InboxItem::Thread(id)), vec![0xff; 5000]),
        (topics::inbox(&me, &InboxItem::Key(id)), vec![0x02, 1, 1]),
        (
            topics::inbox(&me, &InboxItem::Key(id)),
            b"not a delivery".to_vec(),
        ),
        (
            format!("{}/inbox/{me}/other/zz", topics::PREFIX),
            vec![1, 2, 3],
        ),
    ];
    for (i, (topic, payload)) in attacks.iter().enumerate() {
        link.handle
            .publish(i as u64 + 1, topic.clone(), payload.clone(), false, None)
            .unwrap();
    }
    let mut rejected = 0;
    let res = tokio::time::timeout(Duration::from_secs(20), async {
        while rejected < 5 {
            match p.next_event().await.unwrap() {
                ProviderEvent::Rejected { .. } => rejected += 1,
                ProviderEvent::Connected => {}
                other => panic!("unexpected event {other:?}"),
            }
        }
    })
    .await;
    assert!(res.is_ok(), "only {rejected} rejections seen");
    assert!(p.consents().is_empty());
    drop(p);
    // The state reopens.
    assert!(p1consent_provider::read_state(&keys, dir.path()).is_ok());
    // A state file from someone else's keys (or tampered) is refused with a typed error.
    let other = ProviderKeys::generate(KemSuite::DEFAULT);
    std::fs::write(
        dir.path().join("state.bin"),
        b"P1CPST1\0garbagegarbagegarbagegarbage",
    )
    .unwrap();
    assert!(matches!(
        p1consent_provider::read_state(&other, dir.path()),
        Err(p1consent_provider::ProviderError::State { .. })
    ));
}

//! Threads, envelopes, the log, the fold and receipts.

mod consent_common;

use consent_common::*;
use p1consent_shared::consent::fold::{IgnoreReason, KeyDelivery};
use p1consent_shared::consent::log::{EntryHeader, RotationReason, WriterState};
use p1consent_shared::consent::receipt::WITHDRAWAL_METHOD;
use p1consent_shared::consent::{
    ConsentState, ConsentStatus, Event, LogError, LogWriter, OwnerRoot, Receipt, ReceiptError,
    Role, SignedReceipt, ThreadEnvelope, ThreadLog, VerifiedEntry,
};
use p1consent_shared::crypto::{KemSuite, OpaqueId};

fn root() -> OwnerRoot {
    OwnerRoot::from_identity(&owner().id)
}

#[test]
fn thread_ids_and_keys_are_deterministic_and_distinct() {
    let (o, d, a, b) = (owner(), device(), provider_a(), provider_b());
    let r1 = OwnerRoot::from_identity(&o.id);
    let r2 = OwnerRoot::from_seed(&o.id.to_seed());
    let ta = r1.consent_thread_id(&d.id.public(), &a.id.public());
    assert_eq!(ta, r2.consent_thread_id(&d.id.public(), &a.id.public()));
    assert_eq!(r1.thread_key(&ta), r2.thread_key(&ta));
    let tb = r1.consent_thread_id(&d.id.public(), &b.id.public());
    let td = r1.device_thread_id(&d.id.public());
    assert_ne!(ta, tb);
    assert_ne!(ta, td);
    assert_ne!(r1.thread_key(&ta), r1.thread_key(&tb));
    // Another owner gets other ids for the same pair (opaque to outsiders).
    let other = OwnerRoot::from_identity(&provider_b().id);
    assert_ne!(ta, other.consent_thread_id(&d.id.public(), &a.id.public()));
}

#[test]
fn envelope_device_and_provider_can_unwrap_third_party_cannot() {
    for suite in [KemSuite::X25519Sntrup761, KemSuite::X25519MlKem768] {
        let (o, d, a, b) = (owner(), party(2, suite), party(3, suite), party(4, suite));
        let root = root();
        let t = root.consent_thread_id(&d.id.public(), &a.id.public());
        let bytes = ThreadEnvelope::create(
            &o.id,
            &root,
            t,
            &[
                (Role::Provider, a.kem.public()),
                (Role::Device, d.kem.public()),
            ],
        )
        .unwrap();
        let env = ThreadEnvelope::decode(&bytes, Some(&o.id.public())).unwrap();
        assert_eq!(env.suite, suite);
        assert_eq!(env.thread_id, t);
        assert_eq!(env.roles(), vec![Role::Device, Role::Provider]);
        assert_eq!(env.open(Role::Device, &d.kem).unwrap(), root.thread_key(&t));
        assert_eq!(
            env.open(Role::Provider, &a.kem).unwrap(),
            root.thread_key(&t)
        );
        // Provider B holds neither slot's key.
        assert_eq!(
            env.open(Role::Provider, &b.kem),
            Err(LogError::DecryptFailed)
        );
        // The device's slot opened with the provider's key fails too (context binds role).
        assert_eq!(env.open(Role::Device, &a.kem), Err(LogError::DecryptFailed));
        assert_eq!(
            env.open(Role::Owner, &o.kem),
            Err(LogError::NotARecipient(Role::Owner))
        );
        // Wrong owner expected, tampering, truncation.
        assert_eq!(
            ThreadEnvelope::decode(&bytes, Some(&b.id.public())),
            Err(LogError::WrongOwner)
        );
        let mut t2 = bytes.clone();
        let i = t2.len() / 2;
        t2[i] ^= 1;
        assert!(ThreadEnvelope::decode(&t2, None).is_err());
        assert!(ThreadEnvelope::decode(&bytes[..bytes.len() - 1], None).is_err());
    }
    // Device-only thread.
    let (o, d) = (owner(), device());
    let t = root().device_thread_id(&d.id.public());
    let bytes =
        ThreadEnvelope::create(&o.id, &root(), t, &[(Role::Device, d.kem.public())]).unwrap();
    let env = ThreadEnvelope::decode(&bytes, None).unwrap();
    assert_eq!(
        env.open(Role::Device, &d.kem).unwrap(),
        root().thread_key(&t)
    );
    assert_eq!(
        env.open(Role::Provider, &provider_a().kem),
        Err(LogError::NotARecipient(Role::Provider))
    );
    // Invalid recipient lists.
    assert!(ThreadEnvelope::create(&o.id, &root(), t, &[]).is_err());
    assert!(
        ThreadEnvelope::create(
            &o.id,
            &root(),
            t,
            &[
                (Role::Device, d.kem.public()),
                (Role::Device, d.kem.public())
            ]
        )
        .is_err()
    );
    assert!(ThreadEnvelope::create(&o.id, &root(), t, &[(Role::Owner, o.kem.public())]).is_err());
}

/// Owner pairs the device, grants provider A, the device acknowledges, owner revokes.
struct World {
    dev_thread: Thread,
    thread_a: Thread,
    entries_dev: Vec<Vec<u8>>,
    entries_a: Vec<Vec<u8>>,
}

fn world() -> World {
    let (o, d, a) = (owner(), device(), provider_a());
    let root = root();
    let mut dev_thread = device_thread(&root, &o, &d);
    let mut thread_a = consent_thread(&root, &o, &d, &a);
    let req = request(&a);
    let g = grant(&req, d.id.public());
    let mut entries_dev = vec![];
    let mut entries_a = vec![];
    entries_dev.push(
        dev_thread
            .owner_writer
            .append(&o.id, &dev_thread.key, ms(NOW), &paired(&d))
            .unwrap(),
    );
    entries_a.push(
        thread_a
            .owner_writer
            .append(
                &o.id,
                &thread_a.key,
                ms(NOW + 60),
                &Event::ConsentGranted(Box::new(g.clone())),
            )
            .unwrap(),
    );
    let mut dw = LogWriter::new(thread_a.id, Role::Device);
    entries_a.push(
        dw.append(
            &d.id,
            &thread_a.key,
            ms(NOW + 61),
            &Event::KeyDelivered {
                consent_id: g.consent_id,
                channel_id: OpaqueId([9; 16]),
                epoch: 3,
            },
        )
        .unwrap(),
    );
    entries_a.push(
        thread_a
            .owner_writer
            .append(
                &o.id,
                &thread_a.key,
                ms(NOW + DAY),
                &Event::ConsentRevoked {
                    consent_id: g.consent_id,
                    erase_requested: true,
                },
            )
            .unwrap(),
    );
    entries_a.push(
        dw.append(
            &d.id,
            &thread_a.key,
            ms(NOW + DAY + 2),
            &Event::KeyRotated {
                channel_id: OpaqueId([9; 16]),
                epoch: 4,
                reason: RotationReason::Revoked,
            },
        )
        .unwrap(),
    );
    let mut pw = LogWriter::new(thread_a.id, Role::Provider);
    entries_a.push(
        pw.append(
            &a.id,
            &thread_a.key,
            ms(NOW + 2 * DAY),
            &Event::ErasureConfirmed {
                consent_id: g.consent_id,
            },
        )
        .unwrap(),
    );
    World {
        dev_thread,
        thread_a,
        entries_dev,
        entries_a,
    }
}

fn read_all(t: &Thread, entries: &[Vec<u8>]) -> ThreadLog {
    let mut log = ThreadLog::new(t.id, t.key.clone(), t.participants);
    for e in entries {
        log.verify(e).unwrap();
    }
    log
}

#[test]
fn device_reads_and_verifies_owner_grant_and_revoke() {
    let w = world();
    let d = device();
    // The device gets the key from the envelope, not from the owner root.
    let root = root();
    let env = ThreadEnvelope::create(
        &owner().id,
        &root,
        w.thread_a.id,
        &[
            (Role::Device, d.kem.public()),
            (Role::Provider, provider_a().kem.public()),
        ],
    )
    .unwrap();
    let key = ThreadEnvelope::decode(&env, Some(&owner().id.public()))
        .unwrap()
        .open(Role::Device, &d.kem)
        .unwrap();
    let mut log = ThreadLog::new(w.thread_a.id, key, w.thread_a.participants);
    let e0 = log.verify(&w.entries_a[0]).unwrap().clone();
    assert_eq!(
        (e0.role, e0.seq, e0.time_ms),
        (Role::Owner, 0, ms(NOW + 60))
    );
    assert_eq!(e0.author, owner().id.public());
    let Event::ConsentGranted(g) = &e0.event else {
        panic!("expected a grant, got {:?}", e0.event)
    };
    assert_eq!(g.device, d.id.public());
    assert_eq!(g.request.content().provider, provider_a().id.public());
    assert_eq!(g.consent_id, request(&provider_a()).consent_id());
    for e in &w.entries_a[1..] {
        log.verify(e).unwrap();
    }
    assert_eq!(
        log.entries()[2].event,
        Event::ConsentRevoked {
            consent_id: g.consent_id,
            erase_requested: true
        }
    );
    assert_eq!(log.entries().len(), 5);
    // The device resumes its writer from what it read back (restart-safe).
    let st: WriterState = log.writer_state(Role::Device);
    assert_eq!(st.next_seq, 2);
    let json = serde_json::to_string(&st).unwrap();
    let back: WriterState = serde_json::from_str(&json).unwrap();
    let mut dw = LogWriter::resume(w.thread_a.id, Role::Device, back);
    let e = dw
        .append(
            &d.id,
            &w.thread_a.key,
            ms(NOW + 3 * DAY),
            &Event::KeyRotated {
                channel_id: OpaqueId([9; 16]),
                epoch: 5,
                reason: RotationReason::Other,
            },
        )
        .unwrap();
    assert_eq!(log.verify(&e).unwrap().seq, 2);
}

#[test]
fn forged_replayed_out_of_order_tampered_and_foreign_entries_are_rejected() {
    let w = world();
    let t = &w.thread_a;
    let (o, d, a) = (owner(), device(), provider_a());
    let mut log = ThreadLog::new(t.id, t.key.clone(), t.participants);

    // Gap: owner #1 before #0.
    assert_eq!(
        log.verify(&w.entries_a[2]).unwrap_err(),
        LogError::Gap {
            role: Role::Owner,
            expected: 0,
            got: 1
        }
    );
    assert!(log.entries().is_empty());

    // Forged: a valid-looking owner entry signed by the provider's key.
    let mut forger = LogWriter::new(t.id, Role::Owner);
    let forged = forger
        .append(
            &a.id,
            &t.key,
            ms(NOW),
            &Event::ConsentRevoked {
                consent_id: OpaqueId([1; 16]),
                erase_requested: false,
            },
        )
        .unwrap();
    assert_eq!(log.verify(&forged).unwrap_err(), LogError::BadSignature);

    log.verify(&w.entries_a[0]).unwrap();
    // Replayed.
    assert_eq!(
        log.verify(&w.entries_a[0]).unwrap_err(),
        LogError::Duplicate {
            role: Role::Owner,
            seq: 0
        }
    );
    log.verify(&w.entries_a[1]).unwrap();
    log.verify(&w.entries_a[2]).unwrap();
    // Out of order: a second, different owner entry #0 (a fork) after #1 was accepted.
    let mut fork = LogWriter::new(t.id, Role::Owner);
    let forked = fork
        .append(
            &o.id,
            &t.key,
            ms(NOW + 5),
            &Event::ConsentExpired {
                consent_id: OpaqueId([1; 16]),
            },
        )
        .unwrap();
    assert_eq!(
        log.verify(&forked).unwrap_err(),
        LogError::OutOfOrder {
            role: Role::Owner,
            expected: 2,
            got: 0
        }
    );
    // Broken link: right seq, wrong prev hash.
    let mut liar = LogWriter::resume(
        t.id,
        Role::Owner,
        WriterState {
            next_seq: 2,
            prev_hash: [0; 32],
            last_time_ms: 0,
        },
    );
    let broken = liar
        .append(
            &o.id,
            &t.key,
            ms(NOW + 2 * DAY),
            &Event::ConsentExpired {
                consent_id: OpaqueId([1; 16]),
            },
        )
        .unwrap();
    assert_eq!(
        log.verify(&broken).unwrap_err(),
        LogError::BrokenLink {
            role: Role::Owner,
            seq: 2
        }
    );
    // Time going backwards within an author's chain.
    let mut back = LogWriter::resume(t.id, Role::Owner, log.writer_state(Role::Owner));
    let mut st = back.state().clone();
    st.last_time_ms = 0;
    back = LogWriter::resume(t.id, Role::Owner, st);
    let old = back
        .append(
            &o.id,
            &t.key,
            ms(NOW),
            &Event::ConsentExpired {
                consent_id: OpaqueId([1; 16]),
            },
        )
        .unwrap();
    assert_eq!(
        log.verify(&old).unwrap_err(),
        LogError::TimeWentBackwards {
            role: Role::Owner,
            seq: 2
        }
    );
    // Tampered bytes anywhere: rejected (signature covers everything).
    let target = &w.entries_a[3];
    for i in (0..target.len()).step_by(11) {
        let mut t2 = target.clone();
        t2[i] ^= 0x20;
        assert!(log.verify(&t2).is_err(), "tampered byte {i} accepted");
    }
    // Entry from another thread (the device thread).
    assert!(matches!(
        log.verify(&w.entries_dev[0]).unwrap_err(),
        LogError::WrongThread { .. }
    ));
    // An entry whose author role has no known key.
    let mut only_owner = ThreadLog::new(
        t.id,
        t.key.clone(),
        p1consent_shared::consent::Participants {
            owner: o.id.public(),
            device: None,
            provider: None,
        },
    );
    only_owner.verify(&w.entries_a[0]).unwrap();
    assert_eq!(
        only_owner.verify(&w.entries_a[1]).unwrap_err(),
        LogError::UnknownAuthor(Role::Device)
    );
    // After all refusals the state is unchanged: the rest still verifies.
    for e in &w.entries_a[3..] {
        log.verify(e).unwrap();
    }
    assert_eq!(log.entries().len(), 5);
    // A writer refuses events its role may not write and time going backwards.
    let mut dw = LogWriter::new(t.id, Role::Device);
    assert!(matches!(
        dw.append(
            &d.id,
            &t.key,
            1,
            &Event::ConsentExpired {
                consent_id: OpaqueId([1; 16])
            }
        ),
        Err(LogError::EventNotAllowed { .. })
    ));
    dw.append(
        &d.id,
        &t.key,
        10,
        &Event::KeyRotated {
            channel_id: OpaqueId([1; 16]),
            epoch: 1,
            reason: RotationReason::Other,
        },
    )
    .unwrap();
    assert!(matches!(
        dw.append(
            &d.id,
            &t.key,
            9,
            &Event::KeyRotated {
                channel_id: OpaqueId([1; 16]),
                epoch: 2,
                reason: RotationReason::Other
            }
        ),
        Err(LogError::TimeWentBackwards { .. })
    ));
    // Peeking the clear header reveals routing data only.
    let h = EntryHeader::peek(&w.entries_a[1]).unwrap();
    assert_eq!((h.thread_id, h.role, h.seq), (t.id, Role::Device, 0));
}

#[test]
fn provider_of_thread_a_cannot_read_thread_b() {
    let (o, d, a, b) = (owner(), device(), provider_a(), provider_b());
    let root = root();
    let mut tb = consent_thread(&root, &o, &d, &b);
    let req_b = request(&b);
    let entry_b = tb
        .owner_writer
        .append(
            &o.id,
            &tb.key,
            ms(NOW),
            &Event::ConsentGranted(Box::new(grant(&req_b, d.id.public()))),
        )
        .unwrap();
    let env_b = ThreadEnvelope::create(
        &o.id,
        &root,
        tb.id,
        &[
            (Role::Device, d.kem.public()),
            (Role::Provider, b.kem.public()),
        ],
    )
    .unwrap();
    // A cannot open B's envelope.
    let env = ThreadEnvelope::decode(&env_b, None).unwrap();
    assert_eq!(
        env.open(Role::Provider, &a.kem),
        Err(LogError::DecryptFailed)
    );
    // With its own thread key, A cannot decrypt B's entry even knowing B's thread id.
    let ta = consent_thread(&root, &o, &d, &a);
    let mut spy = ThreadLog::new(tb.id, ta.key.clone(), tb.participants);
    assert_eq!(spy.verify(&entry_b).unwrap_err(), LogError::DecryptFailed);
    // Nor via its own thread log.
    let mut own = ThreadLog::new(ta.id, ta.key.clone(), ta.participants);
    assert!(matches!(
        own.verify(&entry_b).unwrap_err(),
        LogError::WrongThread { .. }
    ));
    // B can.
    let kb = env.open(Role::Provider, &b.kem).unwrap();
    let mut blog = ThreadLog::new(tb.id, kb, tb.participants);
    assert!(matches!(
        blog.verify(&entry_b).unwrap().event,
        Event::ConsentGranted(_)
    ));
}

fn all_entries(w: &World) -> Vec<VerifiedEntry> {
    let mut v = read_all(&w.dev_thread, &w.entries_dev).into_entries();
    v.extend(read_all(&w.thread_a, &w.entries_a).into_entries());
    v
}

#[test]
fn fold_gives_concrete_statuses() {
    let w = world();
    let entries = all_entries(&w);
    let cid = request(&provider_a()).consent_id();
    let d = device();

    // Before the revoke was written (fold sees only the entries up to then).
    let early: Vec<_> = entries
        .iter()
        .filter(|e| e.time_ms <= ms(NOW + 61))
        .cloned()
        .collect();
    let s = ConsentState::fold(&early, NOW + 100);
    let c = &s.consents[&cid];
    assert_eq!(c.status, ConsentStatus::Active);
    assert_eq!(c.granted_at_ms, ms(NOW + 60));
    assert_eq!(
        c.last_key_delivered,
        Some(KeyDelivery {
            channel_id: OpaqueId([9; 16]),
            epoch: 3,
            at_ms: ms(NOW + 61)
        })
    );
    assert_eq!(s.active_for_device(&d.id.public()).len(), 1);
    // Same entries, later: expired by time alone (grant expires NOW + 30 days).
    let s = ConsentState::fold(&early, NOW + 30 * DAY);
    assert_eq!(
        s.consents[&cid].status,
        ConsentStatus::Expired {
            at_ms: ms(NOW + 30 * DAY)
        }
    );
    let s = ConsentState::fold(&early, NOW + 30 * DAY - 1);
    assert_eq!(s.consents[&cid].status, ConsentStatus::Active);

    // Everything: revoked with erasure, erasure confirmed, rotation acknowledged.
    let s = ConsentState::fold(&entries, NOW + 3 * DAY);
    let c = &s.consents[&cid];
    assert_eq!(
        c.status,
        ConsentStatus::Revoked {
            erase_requested: true,
            at_ms: ms(NOW + DAY)
        }
    );
    assert_eq!(c.erasure_confirmed_at_ms, Some(ms(NOW + 2 * DAY)));
    let dev = &s.devices[&d.id.public()];
    assert!(dev.is_paired());
    assert_eq!(dev.paired_at_ms, ms(NOW));
    assert_eq!(dev.label, "Meter cupboard");
    let rot = dev.last_rotation.unwrap();
    assert_eq!((rot.epoch, rot.reason), (4, RotationReason::Revoked));
    assert!(s.ignored.is_empty());
    // Revoked stays revoked after the expiry date.
    let s = ConsentState::fold(&entries, NOW + 400 * DAY);
    assert!(matches!(
        s.consents[&cid].status,
        ConsentStatus::Revoked { .. }
    ));
}

#[test]
fn fold_rules_ignore_what_must_be_ignored() {
    let (o, d, a, b) = (owner(), device(), provider_a(), provider_b());
    let root = root();
    let mut dt = device_thread(&root, &o, &d);
    let mut ta = consent_thread(&root, &o, &d, &a);
    let mut tb = consent_thread(&root, &o, &d, &b);
    let ga = grant(&request(&a), d.id.public());
    let gb = grant(&request(&b), d.id.public());
    let mut e_dev = vec![];
    let mut e_a = vec![];
    let mut e_b = vec![];
    // Grant before the device is paired: ignored.
    e_a.push(
        ta.owner_writer
            .append(
                &o.id,
                &ta.key,
                ms(NOW),
                &Event::ConsentGranted(Box::new(ga.clone())),
            )
            .unwrap(),
    );
    e_dev.push(
        dt.owner_writer
            .append(&o.id, &dt.key, ms(NOW + 1), &paired(&d))
            .unwrap(),
    );
    // Grant after pairing counts; a second grant with the same id is ignored.
    e_b.push(
        tb.owner_writer
            .append(
                &o.id,
                &tb.key,
                ms(NOW + 2),
                &Event::ConsentGranted(Box::new(gb.clone())),
            )
            .unwrap(),
    );
    e_b.push(
        tb.owner_writer
            .append(
                &o.id,
                &tb.key,
                ms(NOW + 3),
                &Event::ConsentGranted(Box::new(gb.clone())),
            )
            .unwrap(),
    );
    // Revoke of an unknown consent: ignored.
    e_b.push(
        tb.owner_writer
            .append(
                &o.id,
                &tb.key,
                ms(NOW + 4),
                &Event::ConsentRevoked {
                    consent_id: OpaqueId([5; 16]),
                    erase_requested: false,
                },
            )
            .unwrap(),
    );
    // Explicit expiry before the date.
    e_b.push(
        tb.owner_writer
            .append(
                &o.id,
                &tb.key,
                ms(NOW + 5),
                &Event::ConsentExpired {
                    consent_id: gb.consent_id,
                },
            )
            .unwrap(),
    );
    // Unpair, then everything about the device is ignored.
    e_dev.push(
        dt.owner_writer
            .append(
                &o.id,
                &dt.key,
                ms(NOW + 6),
                &Event::DeviceUnpaired {
                    device: d.id.public(),
                },
            )
            .unwrap(),
    );
    e_a.push(
        ta.owner_writer
            .append(
                &o.id,
                &ta.key,
                ms(NOW + 7),
                &Event::ConsentGranted(Box::new(ga.clone())),
            )
            .unwrap(),
    );
    e_dev.push(
        dt.owner_writer
            .append(&o.id, &dt.key, ms(NOW + 8), &paired(&d))
            .unwrap(),
    );

    let mut entries = read_all(&dt, &e_dev).into_entries();
    entries.extend(read_all(&ta, &e_a).into_entries());
    entries.extend(read_all(&tb, &e_b).into_entries());
    let s = ConsentState::fold(&entries, NOW + 10);
    assert!(!s.consents.contains_key(&ga.consent_id));
    assert_eq!(
        s.consents[&gb.consent_id].status,
        ConsentStatus::Expired { at_ms: ms(NOW + 5) }
    );
    let dev = &s.devices[&d.id.public()];
    assert_eq!(
        (dev.paired_at_ms, dev.unpaired_at_ms),
        (ms(NOW + 1), Some(ms(NOW + 6)))
    );
    let reasons: Vec<_> = s
        .ignored
        .iter()
        .map(|i| (i.thread_id, i.seq, i.reason))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (ta.id, 0, IgnoreReason::DeviceNotPaired),
            (tb.id, 1, IgnoreReason::DuplicateConsentId),
            (tb.id, 2, IgnoreReason::UnknownConsent),
            (ta.id, 1, IgnoreReason::DeviceNotPaired),
            (dt.id, 2, IgnoreReason::DeviceAlreadyKnown),
        ]
    );
    // Folding in another order gives the same state.
    let mut rev = entries.clone();
    rev.reverse();
    assert_eq!(ConsentState::fold(&rev, NOW + 10), s);
}

#[test]
fn unpairing_withdraws_active_consents() {
    let w = world();
    let (o, d) = (owner(), device());
    let mut entries = all_entries(&w);
    entries.retain(|e| e.time_ms <= ms(NOW + 61));
    let mut dw = LogWriter::resume(
        w.dev_thread.id,
        Role::Owner,
        w.dev_thread.owner_writer.state().clone(),
    );
    let unpair = dw
        .append(
            &o.id,
            &w.dev_thread.key,
            ms(NOW + 100),
            &Event::DeviceUnpaired {
                device: d.id.public(),
            },
        )
        .unwrap();
    let mut log = read_all(&w.dev_thread, &w.entries_dev);
    entries.push(log.verify(&unpair).unwrap().clone());
    let s = ConsentState::fold(&entries, NOW + 200);
    let cid = request(&provider_a()).consent_id();
    assert_eq!(
        s.consents[&cid].status,
        ConsentStatus::Revoked {
            erase_requested: false,
            at_ms: ms(NOW + 100)
        }
    );
    assert!(s.active_for_device(&d.id.public()).is_empty());
}

#[test]
fn fresh_wallet_from_the_same_seed_rebuilds_the_same_state() {
    let w = world();
    let original = ConsentState::fold(&all_entries(&w), NOW + 3 * DAY);
    // A new wallet: only the owner's seed and the participants' public keys (from the
    // DevicePaired event / the grants) plus the bytes on the broker.
    let seed = owner().id.to_seed();
    let fresh = OwnerRoot::from_seed(&seed);
    let owner_pub = p1consent_shared::crypto::SigningIdentity::from_seed(&seed).public();
    let (d, a) = (device(), provider_a());
    let dev_id = fresh.device_thread_id(&d.id.public());
    assert_eq!(dev_id, w.dev_thread.id);
    let mut dev_log = ThreadLog::new(
        dev_id,
        fresh.thread_key(&dev_id),
        p1consent_shared::consent::Participants {
            owner: owner_pub,
            device: Some(d.id.public()),
            provider: None,
        },
    );
    for e in &w.entries_dev {
        dev_log.verify(e).unwrap();
    }
    let ta = fresh.consent_thread_id(&d.id.public(), &a.id.public());
    assert_eq!(ta, w.thread_a.id);
    let mut a_log = ThreadLog::new(
        ta,
        fresh.thread_key(&ta),
        p1consent_shared::consent::Participants {
            owner: owner_pub,
            device: Some(d.id.public()),
            provider: Some(a.id.public()),
        },
    );
    for e in &w.entries_a {
        a_log.verify(e).unwrap();
    }
    let a_log_state = a_log.writer_state(Role::Owner);
    let mut all = dev_log.into_entries();
    all.extend(a_log.into_entries());
    assert_eq!(ConsentState::fold(&all, NOW + 3 * DAY), original);
    // And it continues the owner's chain exactly where the old wallet stopped.
    assert_eq!(a_log_state, *w.thread_a.owner_writer.state());
}

#[test]
fn receipts_sign_verify_and_refuse_tampering() {
    let w = world();
    let s = ConsentState::fold(&all_entries(&w), NOW + 3 * DAY);
    let (o, a) = (owner(), provider_a());
    let cid = request(&a).consent_id();
    let r = Receipt::from_state(&s, &cid, &o.id.public(), NOW + 3 * DAY).unwrap();
    assert_eq!(r.record_id, cid.to_hex());
    assert_eq!(r.principal.public_key, o.id.public().to_hex());
    assert_eq!(r.controller.name, "Wattt Insights B.V.");
    assert_eq!(r.state, "withdrawn");
    assert_eq!(r.withdrawal_method, WITHDRAWAL_METHOD);
    assert_eq!(
        r.data_categories
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        vec!["energy_delivered", "power_delivered"]
    );
    assert_eq!(
        r.data_categories[0].description,
        "Total electricity you used (meter readings)"
    );
    assert_eq!(r.resolution.seconds, 900);
    assert_eq!(r.retention_days, 365);
    assert_eq!(
        r.events
            .iter()
            .map(|e| (e.kind.as_str(), e.state.as_str()))
            .collect::<Vec<_>>(),
        vec![
            ("given", "active"),
            ("key_delivered", "active"),
            ("erasure_requested", "withdrawn"),
            ("erasure_confirmed", "withdrawn")
        ]
    );
    let json = r.sign(&o.id).unwrap().to_json().unwrap();
    assert_eq!(
        SignedReceipt::verify(&json, Some(&o.id.public())).unwrap(),
        r
    );
    assert_eq!(SignedReceipt::verify(&json, None).unwrap(), r);
    // Tampered purpose.
    let tampered = json.replace("how to save on your bill", "how to sell your data");
    assert_ne!(tampered, json);
    assert_eq!(
        SignedReceipt::verify(&tampered, None),
        Err(ReceiptError::BadSignature)
    );
    // Wrong owner expected.
    assert_eq!(
        SignedReceipt::verify(&json, Some(&a.id.public())),
        Err(ReceiptError::WrongOwner)
    );
    // Re-signed by someone else: the signer is not the principal.
    let other = r.sign(&a.id).unwrap().to_json().unwrap();
    assert_eq!(
        SignedReceipt::verify(&other, None),
        Err(ReceiptError::PrincipalMismatch)
    );
    // Unknown fields, inside or outside.
    let extra = json.replacen("\"purpose\"", "\"sneaky\": 1, \"purpose\"", 1);
    assert!(matches!(
        SignedReceipt::verify(&extra, None),
        Err(ReceiptError::Json(_))
    ));
    let extra = json.replacen("{", "{\"x\": 1,", 1);
    assert!(matches!(
        SignedReceipt::verify(&extra, None),
        Err(ReceiptError::Json(_))
    ));
    // Size limit, bad encodings, unknown consent.
    let big = " ".repeat(300 * 1024);
    assert!(matches!(
        SignedReceipt::verify(&big, None),
        Err(ReceiptError::TooLarge { .. })
    ));
    let sig_hex = json.split("\"value\": \"").nth(1).unwrap()[..128].to_owned();
    let bad = json.replace(&sig_hex, &"zz".repeat(64));
    assert_eq!(
        SignedReceipt::verify(&bad, None),
        Err(ReceiptError::BadEncoding)
    );
    assert_eq!(
        Receipt::from_state(&s, &OpaqueId([0; 16]), &o.id.public(), NOW),
        Err(ReceiptError::UnknownConsent)
    );
    // Re-formatting the JSON (whitespace) does not break the signature: it covers the
    // canonical serialisation, not the transport text.
    let compact =
        serde_json::to_string(&serde_json::from_str::<SignedReceipt>(&json).unwrap()).unwrap();
    assert!(SignedReceipt::verify(&compact, Some(&o.id.public())).is_ok());
}

//! Behaviour of sealed channels: who can open what, and exactly which error otherwise.

use p1consent_shared::channel::{
    ChannelReader, ChannelWriter, ChannelWriterState, DATA_OVERHEAD, HINT_LEN, OpenError, Opened,
    RecordKind, genesis_hash, peek, record_hash, slot_hint,
};
use p1consent_shared::crypto::{
    self, KemSecretKey, KemSuite, OpaqueId, SigningIdentity, SymmetricKey, WrappedSecret,
};
use p1consent_shared::wire::{Reader, WireError};

const SNTRUP: KemSuite = KemSuite::X25519Sntrup761;
const MLKEM: KemSuite = KemSuite::X25519MlKem768;

fn device() -> SigningIdentity {
    SigningIdentity::from_seed(&[0xD1; 32])
}

fn data(opened: Result<Opened, OpenError>) -> (u64, u32, Vec<u8>) {
    match opened {
        Ok(Opened::Data {
            seq,
            epoch,
            plaintext,
            ..
        }) => (seq, epoch, plaintext.to_vec()),
        other => panic!("expected data, got {other:?}"),
    }
}

/// A writer with a reader delivered at seq 0.
fn setup(suite: KemSuite) -> (SigningIdentity, ChannelWriter, ChannelReader, KemSecretKey) {
    let dev = device();
    let w = ChannelWriter::new(OpaqueId::random());
    let kem = KemSecretKey::generate(suite);
    let (d, _) = w
        .deliver(&dev, 1, OpaqueId::random(), kem.public())
        .unwrap();
    let r = ChannelReader::from_delivery(&d, &dev.public(), &kem).unwrap();
    (dev, w, r, kem)
}

#[test]
fn seal_open_round_trip_both_suites() {
    for suite in [SNTRUP, MLKEM] {
        let (dev, mut w, mut r, _) = setup(suite);
        assert_eq!(r.next_seq(), 0);
        for i in 0..5u64 {
            let msg = format!("telegram {i}");
            let rec = w.seal(&dev, 1000 + i, msg.as_bytes()).unwrap();
            assert_eq!(rec.len(), DATA_OVERHEAD + msg.len());
            match r.open(&rec).unwrap() {
                Opened::Data {
                    seq,
                    epoch,
                    timestamp_ms,
                    plaintext,
                } => {
                    assert_eq!((seq, epoch, timestamp_ms), (i, 0, 1000 + i));
                    assert_eq!(&plaintext[..], msg.as_bytes());
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(r.next_seq(), 5);
    }
}

#[test]
fn first_record_links_to_genesis_and_chain_links_by_hash() {
    let (dev, mut w, _, _) = setup(SNTRUP);
    let r0 = w.seal(&dev, 0, b"a").unwrap();
    let r1 = w.seal(&dev, 0, b"b").unwrap();
    let h0 = peek(&r0).unwrap();
    let h1 = peek(&r1).unwrap();
    assert_eq!(h0.prev_hash, genesis_hash(&w.channel_id()));
    assert_eq!(h1.prev_hash, record_hash(&r0));
    assert_eq!((h0.seq, h1.seq), (0, 1));
    assert_eq!(h1.kind, RecordKind::Data);
    assert_eq!(h1.channel_id, w.channel_id());
}

#[test]
fn reader_joining_mid_stream_opens_only_from_its_anchor() {
    let dev = device();
    let mut w = ChannelWriter::new(OpaqueId::random());
    let early: Vec<Vec<u8>> = (0..3)
        .map(|_| w.seal(&dev, 0, b"before").unwrap())
        .collect();
    let kem = KemSecretKey::generate(MLKEM);
    let (d, _) = w
        .deliver(&dev, 5, OpaqueId::random(), kem.public())
        .unwrap();
    let mut r = ChannelReader::from_delivery(&d, &dev.public(), &kem).unwrap();
    assert_eq!(r.next_seq(), 3);
    for (i, rec) in early.iter().enumerate() {
        // Decision: records before the anchor are refused on sequence grounds. The record
        // the anchor points at (seq 2, its hash is the delivered prev_hash) is recognised
        // as a duplicate; older ones are reordered.
        let expected = if i == 2 {
            OpenError::Duplicate { seq: 2 }
        } else {
            OpenError::Reordered {
                expected: 3,
                got: i as u64,
            }
        };
        assert_eq!(r.open(rec), Err(expected));
    }
    let rec = w.seal(&dev, 6, b"after").unwrap();
    assert_eq!(data(r.open(&rec)), (3, 0, b"after".to_vec()));
    // Records of an earlier epoch are unreadable even when the sequence check is waived:
    // the reader only ever had the current epoch key.
    let mut w2 = ChannelWriter::new(OpaqueId::random());
    let old = w2.seal(&dev, 0, b"epoch 0").unwrap();
    let _rot = w2.rotate(&dev, 0, &[]).unwrap();
    let (d2, _) = w2
        .deliver(&dev, 0, OpaqueId::random(), kem.public())
        .unwrap();
    let mut r2 = ChannelReader::from_delivery(&d2, &dev.public(), &kem).unwrap();
    assert_eq!(r2.epoch(), 1);
    assert_eq!(
        r2.open_accepting_gap(&old),
        Err(OpenError::Reordered {
            expected: 2,
            got: 0
        })
    );
}

#[test]
fn gap_duplicate_reorder_and_broken_link() {
    let (dev, mut w, mut r, _) = setup(SNTRUP);
    let r0 = w.seal(&dev, 0, b"0").unwrap();
    let saved = w.to_bytes();
    let r1 = w.seal(&dev, 0, b"1").unwrap();
    let r2 = w.seal(&dev, 0, b"2").unwrap();
    let r3 = w.seal(&dev, 0, b"3").unwrap();
    // A fork of the writer (same device, same key) from after r0.
    let mut fork = ChannelWriter::from_bytes(&saved).unwrap();
    let f1 = fork.seal(&dev, 0, b"forked 1").unwrap();
    let f2 = fork.seal(&dev, 0, b"forked 2").unwrap();

    assert_eq!(data(r.open(&r0)).0, 0);
    assert_eq!(
        r.open(&r2),
        Err(OpenError::Gap {
            expected: 1,
            got: 2
        })
    );
    assert_eq!(r.open(&r0), Err(OpenError::Duplicate { seq: 0 }));
    assert_eq!(r.next_seq(), 1, "failed opens leave the state alone");
    assert_eq!(data(r.open(&r1)).0, 1);
    assert_eq!(
        r.open(&f1),
        Err(OpenError::Reordered {
            expected: 2,
            got: 1
        })
    );
    assert_eq!(r.open(&r1), Err(OpenError::Duplicate { seq: 1 }));
    assert_eq!(r.open(&f2), Err(OpenError::BrokenLink));
    assert_eq!(data(r.open(&r2)).0, 2);
    assert_eq!(data(r.open(&r3)).0, 3);
}

#[test]
fn resync_after_gap_is_explicit() {
    let (dev, mut w, mut r, _) = setup(MLKEM);
    let recs: Vec<Vec<u8>> = (0..5)
        .map(|i| w.seal(&dev, i, &[i as u8]).unwrap())
        .collect();
    assert_eq!(data(r.open(&recs[0])).0, 0);
    assert_eq!(
        r.open(&recs[3]),
        Err(OpenError::Gap {
            expected: 1,
            got: 3
        })
    );
    assert_eq!(data(r.open_accepting_gap(&recs[3])), (3, 0, vec![3]));
    assert_eq!(
        r.open(&recs[1]),
        Err(OpenError::Reordered {
            expected: 4,
            got: 1
        })
    );
    // The chain continues normally (link checked again) after the resync.
    assert_eq!(data(r.open(&recs[4])), (4, 0, vec![4]));
    // Accepting a gap still verifies everything else.
    let mut bad = w.seal(&dev, 9, b"x").unwrap();
    let _skip = w.seal(&dev, 9, b"y").unwrap();
    let n = bad.len();
    bad[n - 1] ^= 1;
    assert_eq!(r.open_accepting_gap(&bad), Err(OpenError::BadSignature));
}

#[test]
fn every_single_byte_flip_fails_with_the_right_class() {
    let (dev, mut w, mut r, _) = setup(SNTRUP);
    let rec = w.seal(&dev, 42, b"kWh!").unwrap();
    assert_eq!(rec.len(), DATA_OVERHEAD + 4);
    for pos in 0..rec.len() {
        for mask in [0x01u8, 0x80, 0xFF] {
            let mut t = rec.clone();
            t[pos] ^= mask;
            let err = r.open(&t).expect_err("a flipped record must never open");
            match pos {
                0..=3 | 72..=75 => {
                    assert!(matches!(err, OpenError::Malformed(_)), "pos {pos}: {err:?}")
                }
                4..=19 => assert_eq!(err, OpenError::WrongChannel, "pos {pos}"),
                _ => assert_eq!(err, OpenError::BadSignature, "pos {pos}"),
            }
        }
    }
    // Nothing above changed the reader.
    assert_eq!(data(r.open(&rec)), (0, 0, b"kWh!".to_vec()));
}

#[test]
fn validly_signed_but_wrong_ciphertext_is_tampered() {
    let (dev, mut w, mut r, _) = setup(SNTRUP);
    let rec = w.seal(&dev, 0, b"secret").unwrap();
    // The device's key signs a record whose ciphertext was altered: AEAD must catch it.
    let mut t = rec[..rec.len() - 64].to_vec();
    let last = t.len() - 1;
    t[last] ^= 1;
    let sig = dev.sign(&t);
    t.extend_from_slice(&sig);
    assert_eq!(r.open(&t), Err(OpenError::Tampered));
    // Same for a record sealed under another epoch key with the right epoch number.
    let st = ChannelWriterState::from_bytes(&w.to_bytes()).unwrap();
    let mut other = ChannelWriter::with_epoch_key(st.channel_id(), SymmetricKey::random());
    let forged = other.seal(&dev, 0, b"forged").unwrap();
    assert_eq!(r.open(&forged), Err(OpenError::Tampered));
    assert_eq!(data(r.open(&rec)).2, b"secret".to_vec());
}

#[test]
fn wrong_channel_and_wrong_device() {
    let (dev, mut w, mut r, kem) = setup(SNTRUP);
    let mut other = ChannelWriter::new(OpaqueId::random());
    assert_eq!(
        r.open(&other.seal(&dev, 0, b"x").unwrap()),
        Err(OpenError::WrongChannel)
    );
    let impostor = SigningIdentity::from_seed(&[0x66; 32]);
    let rec = w.seal(&impostor, 0, b"x").unwrap();
    assert_eq!(r.open(&rec), Err(OpenError::BadSignature));
    // A delivery signed by another device is refused too.
    let (d, _) = w
        .deliver(&impostor, 0, OpaqueId::random(), kem.public())
        .unwrap();
    assert_eq!(
        ChannelReader::from_delivery(&d, &dev.public(), &kem).unwrap_err(),
        OpenError::BadSignature
    );
}

fn slots_of(rotation: &[u8]) -> Vec<([u8; HINT_LEN], WrappedSecret)> {
    let body_len = u32::from_be_bytes(rotation[72..76].try_into().unwrap()) as usize;
    let mut r = Reader::new(&rotation[76..76 + body_len]);
    let n = r.u16().unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let hint = r.array().unwrap();
        out.push((hint, WrappedSecret::read(&mut r).unwrap()));
    }
    r.finish().unwrap();
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn rotation_and_revocation(suite_a: KemSuite, suite_b: KemSuite) {
    let dev = device();
    let mut w = ChannelWriter::new(OpaqueId::random());
    let cid = w.channel_id();
    let _r0 = w.seal(&dev, 0, b"before anyone").unwrap();
    let kem_a = KemSecretKey::generate(suite_a);
    let kem_b = KemSecretKey::generate(suite_b);
    let kem_c = KemSecretKey::generate(suite_a);
    let (consent_a, consent_b) = (OpaqueId::random(), OpaqueId::random());
    let (da, ga) = w.deliver(&dev, 1, consent_a, kem_a.public()).unwrap();
    let (db, gb) = w.deliver(&dev, 1, consent_b, kem_b.public()).unwrap();
    let mut ra = ChannelReader::from_delivery(&da, &dev.public(), &kem_a).unwrap();
    let mut rb = ChannelReader::from_delivery(&db, &dev.public(), &kem_b).unwrap();
    assert_eq!(ra.consent_id(), consent_a);
    // C was never delivered anything: neither delivery opens for C.
    for d in [&da, &db] {
        let e = ChannelReader::from_delivery(d, &dev.public(), &kem_c).unwrap_err();
        assert_eq!(e, OpenError::NotAuthorised);
    }

    let r1 = w.seal(&dev, 2, b"one").unwrap();
    let rot1 = w.rotate(&dev, 3, &[ga.clone(), gb.clone()]).unwrap();
    let r3 = w.seal(&dev, 4, b"three").unwrap();
    for r in [&mut ra, &mut rb] {
        assert_eq!(data(r.open(&r1)), (1, 0, b"one".to_vec()));
        assert_eq!(r.open(&rot1), Ok(Opened::Rotated { seq: 2, epoch: 1 }));
        assert_eq!(data(r.open(&r3)), (3, 1, b"three".to_vec()));
    }
    let a_saved = ra.to_bytes();

    // Revoke A: rotate with only B.
    let rot2 = w.rotate(&dev, 5, std::slice::from_ref(&gb)).unwrap();
    let after: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            w.seal(&dev, 6 + i, format!("after {i}").as_bytes())
                .unwrap()
        })
        .collect();

    assert_eq!(rb.open(&rot2), Ok(Opened::Rotated { seq: 4, epoch: 2 }));
    for (i, rec) in after.iter().enumerate() {
        let (seq, epoch, pt) = data(rb.open(rec));
        assert_eq!((seq, epoch), (5 + i as u64, 2));
        assert_eq!(pt, format!("after {i}").into_bytes());
    }

    assert_eq!(ra.open(&rot2), Err(OpenError::NotAuthorised));
    assert!(!ra.is_authorised());
    for rec in &after {
        assert_eq!(ra.open(rec), Err(OpenError::NotAuthorised));
    }
    // A's saved epoch-1 state cannot open anything sealed after the rotation either.
    let mut a_old = ChannelReader::from_bytes(&a_saved, &kem_a).unwrap();
    assert_eq!(
        a_old.open_accepting_gap(&after[0]),
        Err(OpenError::UnknownEpoch { epoch: 2 })
    );
    // Use A's old epoch key directly on the captured ciphertexts (both epoch labels).
    let key_off = 3 + 16 + 32 + 16 + 32 + 32 + 4 + 1;
    let old_key = SymmetricKey::from_bytes(a_saved[key_off..key_off + 32].try_into().unwrap());
    for rec in &after {
        let hdr = &rec[..76];
        let nonce: [u8; 24] = rec[76..100].try_into().unwrap();
        let ct = &rec[100..rec.len() - 64];
        for epoch in [1u32, 2] {
            let mut ctx = cid.0.to_vec();
            ctx.extend_from_slice(&epoch.to_be_bytes());
            let k = old_key.derive("p1consent/v1/channel-data", &ctx);
            assert!(crypto::open(&k, &nonce, hdr, ct).is_err());
        }
        assert!(crypto::open(&old_key, &nonce, hdr, ct).is_err());
    }
    // The sanity check of that decoding: the old key does open r3 (epoch 1).
    {
        let mut ctx = cid.0.to_vec();
        ctx.extend_from_slice(&1u32.to_be_bytes());
        let k = old_key.derive("p1consent/v1/channel-data", &ctx);
        let nonce: [u8; 24] = r3[76..100].try_into().unwrap();
        let pt = crypto::open(&k, &nonce, &r3[..76], &r3[100..r3.len() - 64]).unwrap();
        assert_eq!(&pt[..], b"three");
    }
    // Neither A's nor C's KEM key unwraps any slot of the revoking rotation.
    let slots = slots_of(&rot2);
    assert_eq!(slots.len(), 1);
    for (hint, wrapped) in &slots {
        let mut ctx = cid.0.to_vec();
        ctx.extend_from_slice(&2u32.to_be_bytes());
        ctx.extend_from_slice(hint);
        assert!(wrapped.unwrap(&kem_a, &ctx).is_err());
        assert!(wrapped.unwrap(&kem_c, &ctx).is_err());
        assert!(wrapped.unwrap(&kem_b, &ctx).is_ok());
    }

    // Privacy: rotation records carry no reader identity, and hints are unlinkable.
    let slots1 = slots_of(&rot1);
    assert_eq!(slots1.len(), 2);
    assert!(slots1[0].0 < slots1[1].0, "slots sorted by hint");
    for rot in [&rot1, &rot2] {
        for (kem, consent) in [(&kem_a, consent_a), (&kem_b, consent_b)] {
            let pk = kem.public().to_bytes();
            assert!(!contains(rot, &pk[1..33]), "X25519 public key in clear");
            assert!(!contains(rot, &pk[33..65]), "PQ public key in clear");
            assert!(!contains(rot, &kem.public().fingerprint()[..16]));
            assert!(!contains(rot, &consent.0));
        }
        assert!(!contains(rot, dev.public().as_bytes()));
    }
    let hint_b1 = slot_hint(&gb.reader_secret, &cid, 1);
    let hint_b2 = slot_hint(&gb.reader_secret, &cid, 2);
    assert!(contains(&rot1, &hint_b1) && !contains(&rot2, &hint_b1));
    assert!(contains(&rot2, &hint_b2));
}

#[test]
fn rotation_and_revocation_sntrup761() {
    rotation_and_revocation(SNTRUP, SNTRUP);
}

#[test]
fn rotation_and_revocation_mlkem768() {
    rotation_and_revocation(MLKEM, MLKEM);
}

#[test]
fn rotation_and_revocation_mixed_suites() {
    rotation_and_revocation(SNTRUP, MLKEM);
}

#[test]
fn reauthorising_needs_a_new_delivery_and_rotation_sizes() {
    let dev = device();
    let mut w = ChannelWriter::new(OpaqueId::random());
    let ks = KemSecretKey::generate(SNTRUP);
    let km = KemSecretKey::generate(MLKEM);
    let (_, gs) = w.deliver(&dev, 0, OpaqueId::random(), ks.public()).unwrap();
    let (_, gm) = w.deliver(&dev, 0, OpaqueId::random(), km.public()).unwrap();
    let empty = w.rotate(&dev, 0, &[]).unwrap();
    let one_s = w.rotate(&dev, 0, std::slice::from_ref(&gs)).unwrap();
    let one_m = w.rotate(&dev, 0, std::slice::from_ref(&gm)).unwrap();
    assert_eq!(empty.len(), 76 + 2 + 64);
    assert_eq!(one_s.len() - empty.len(), 1162);
    assert_eq!(one_m.len() - empty.len(), 1211);
    assert_eq!(w.epoch(), 3);
    // Revoked reader, then delivered again: works from the new anchor.
    let (d, _) = w.deliver(&dev, 0, OpaqueId::random(), ks.public()).unwrap();
    let mut r = ChannelReader::from_delivery(&d, &dev.public(), &ks).unwrap();
    let rec = w.seal(&dev, 0, b"back").unwrap();
    assert_eq!(data(r.open(&rec)), (3, 3, b"back".to_vec()));
}

#[test]
fn rotation_to_an_unexpected_epoch_is_unknown_epoch() {
    let (dev, mut w, mut r, _) = setup(SNTRUP);
    // The reader misses a rotation (gap), then sees data of the new epoch.
    let _rot = w.rotate(&dev, 0, &[]).unwrap();
    let rec = w.seal(&dev, 0, b"x").unwrap();
    assert_eq!(
        r.open(&rec),
        Err(OpenError::Gap {
            expected: 0,
            got: 1
        })
    );
    assert_eq!(
        r.open_accepting_gap(&rec),
        Err(OpenError::UnknownEpoch { epoch: 1 })
    );
    let rot2 = w.rotate(&dev, 0, &[]).unwrap();
    assert_eq!(
        r.open_accepting_gap(&rot2),
        Err(OpenError::UnknownEpoch { epoch: 2 })
    );
    assert!(r.is_authorised());
    assert_eq!(r.next_seq(), 0);
}

#[test]
fn writer_state_persistence_keeps_the_chain_continuous() {
    let (dev, mut w, mut r, _) = setup(MLKEM);
    let r0 = w.seal(&dev, 0, b"before crash").unwrap();
    let saved = w.to_bytes();
    drop(w);
    let st = ChannelWriterState::from_bytes(&saved).unwrap();
    assert_eq!((st.next_seq(), st.epoch()), (1, 0));
    assert_eq!(st.prev_hash(), record_hash(&r0));
    let mut w = ChannelWriter::from_state(st);
    let r1 = w.seal(&dev, 1, b"after restart").unwrap();
    assert_eq!(data(r.open(&r0)).0, 0);
    assert_eq!(data(r.open(&r1)), (1, 0, b"after restart".to_vec()));
    // Rotation after restore as well.
    let rot = w.rotate(&dev, 2, &[]).unwrap();
    let w2 = ChannelWriter::from_bytes(&w.to_bytes()).unwrap();
    assert_eq!(w2.state(), w.state());
    assert_eq!(w2.epoch(), 1);
    assert_eq!(peek(&rot).unwrap().seq, 2);
    // Hostile state bytes are typed errors.
    assert!(matches!(
        ChannelWriterState::from_bytes(&saved[..saved.len() - 1]),
        Err(WireError::Truncated { .. })
    ));
    let mut wrong = saved.to_vec();
    wrong[0] = 0xC2;
    assert!(matches!(
        ChannelWriterState::from_bytes(&wrong),
        Err(WireError::WrongType { .. })
    ));
}

#[test]
fn reader_state_persistence_and_grant_round_trip() {
    let dev = device();
    let mut w = ChannelWriter::new(OpaqueId::random());
    let kem = KemSecretKey::generate(SNTRUP);
    let (d, grant) = w
        .deliver(&dev, 0, OpaqueId::random(), kem.public())
        .unwrap();
    let grant2 = p1consent_shared::channel::ReaderGrant::from_bytes(&grant.to_bytes()).unwrap();
    assert_eq!(grant2.consent_id, grant.consent_id);
    assert_eq!(grant2.kem_public, grant.kem_public);
    assert_eq!(&grant2.reader_secret[..], &grant.reader_secret[..]);
    let mut r = ChannelReader::from_delivery(&d, &dev.public(), &kem).unwrap();
    let r0 = w.seal(&dev, 0, b"0").unwrap();
    data(r.open(&r0));
    let saved = r.to_bytes();
    let rot = w.rotate(&dev, 0, &[grant2]).unwrap();
    let r2 = w.seal(&dev, 0, b"2").unwrap();
    let mut restored = ChannelReader::from_bytes(&saved, &kem).unwrap();
    assert_eq!(restored.open(&r0), Err(OpenError::Duplicate { seq: 0 }));
    assert_eq!(
        restored.open(&rot),
        Ok(Opened::Rotated { seq: 1, epoch: 1 })
    );
    assert_eq!(data(restored.open(&r2)), (2, 1, b"2".to_vec()));
    // State for one KEM key cannot be restored with another.
    let other = KemSecretKey::generate(SNTRUP);
    assert!(matches!(
        ChannelReader::from_bytes(&saved, &other),
        Err(WireError::Invalid { .. })
    ));
}

/// Replaces the signature so only the inner checks can catch a change.
fn resign(dev: &SigningIdentity, rec: &[u8]) -> Vec<u8> {
    let mut t = rec[..rec.len() - 64].to_vec();
    let sig = dev.sign(&t);
    t.extend_from_slice(&sig);
    t
}

#[test]
fn signed_but_corrupt_rotations_are_refused_without_state_change() {
    let dev = device();
    let mut w = ChannelWriter::new(OpaqueId::random());
    let kem = KemSecretKey::generate(SNTRUP);
    let (d, g) = w
        .deliver(&dev, 0, OpaqueId::random(), kem.public())
        .unwrap();
    let mut r = ChannelReader::from_delivery(&d, &dev.public(), &kem).unwrap();
    let rot = w.rotate(&dev, 0, &[g]).unwrap();
    // Corrupt the sealed epoch key of our slot (the 48 bytes before the signature).
    let mut t = rot.clone();
    let pos = t.len() - 64 - 10;
    t[pos] ^= 1;
    assert_eq!(r.open(&resign(&dev, &t)), Err(OpenError::Tampered));
    assert!(r.is_authorised());
    assert_eq!(r.epoch(), 0);
    // A slot count that does not match the body is a format error even when signed.
    let mut t = rot.clone();
    t[76..78].copy_from_slice(&2u16.to_be_bytes());
    assert!(matches!(
        r.open(&resign(&dev, &t)),
        Err(OpenError::Malformed(_))
    ));
    assert_eq!(r.open(&rot), Ok(Opened::Rotated { seq: 0, epoch: 1 }));
}

#[test]
fn delivery_for_another_suite_or_key_is_not_authorised() {
    let dev = device();
    let w = ChannelWriter::new(OpaqueId::random());
    let ks = KemSecretKey::generate(SNTRUP);
    let km = KemSecretKey::generate(MLKEM);
    let (d, _) = w.deliver(&dev, 0, OpaqueId::random(), ks.public()).unwrap();
    assert_eq!(d[2], SNTRUP as u8);
    assert_eq!(
        ChannelReader::from_delivery(&d, &dev.public(), &km).unwrap_err(),
        OpenError::NotAuthorised
    );
    let (d, _) = w.deliver(&dev, 0, OpaqueId::random(), km.public()).unwrap();
    assert_eq!(d[2], MLKEM as u8);
    assert_eq!(
        ChannelReader::from_delivery(&d, &dev.public(), &ks).unwrap_err(),
        OpenError::NotAuthorised
    );
    // A record is not a delivery.
    assert!(matches!(
        ChannelReader::from_delivery(&[1, 1, 1, 1], &dev.public(), &ks),
        Err(OpenError::Malformed(WireError::WrongType { .. }))
    ));
}

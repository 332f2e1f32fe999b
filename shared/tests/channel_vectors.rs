//! Test vectors for channel records and key deliveries: shared/tests/vectors/channel.json.
//!
//! `committed_vectors_decode_and_open` decodes the committed bytes with keys derived from
//! the seeds in the file and checks every expected value. It also re-encodes with the
//! deterministic (test-only) writer functions and requires byte equality, so any change
//! to the encoding is caught. Regenerate (only for an intended format change) with
//! `cargo test -p p1consent-shared --test channel_vectors -- --ignored`.

use p1consent_shared::channel::{
    ChannelReader, ChannelWriter, OpenError, Opened, genesis_hash, peek, record_hash,
};
use p1consent_shared::crypto::{
    KemSecretKey, KemSuite, OpaqueId, SigningIdentity, SymmetricKey, hex, unhex,
};
use serde_json::{Value, json};
use zeroize::Zeroizing;

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/channel.json");

fn seed(tag: u8) -> [u8; 32] {
    let mut s = [0u8; 32];
    for (i, b) in s.iter_mut().enumerate() {
        *b = tag.wrapping_add(i as u8);
    }
    s
}

/// (KEM suite, KEM seed, consent id, reader secret, encapsulation seed, wrap nonce).
type ReaderInputs = (KemSuite, [u8; 32], [u8; 16], [u8; 32], [u8; 32], [u8; 24]);

struct Inputs {
    device_seed: [u8; 32],
    channel_id: [u8; 16],
    epoch0_key: [u8; 32],
    epoch1_key: [u8; 32],
    rotation_seed: [u8; 32],
    nonces: [[u8; 24]; 3],
    plaintexts: [&'static [u8]; 3],
    timestamps: [u64; 4],
    readers: [ReaderInputs; 2],
}

fn inputs() -> Inputs {
    let mut nonces = [[0u8; 24]; 3];
    for (i, n) in nonces.iter_mut().enumerate() {
        n.copy_from_slice(&seed(0x40 + i as u8 * 0x10)[..24]);
    }
    Inputs {
        device_seed: seed(0x01),
        channel_id: *b"channel-vector-1",
        epoch0_key: seed(0x10),
        epoch1_key: seed(0x11),
        rotation_seed: seed(0x12),
        nonces,
        plaintexts: [
            b"1-0:1.8.1(000123.456*kWh)",
            b"1-0:1.7.0(00.512*kW)",
            b"1-0:2.7.0(00.000*kW)",
        ],
        timestamps: [
            1_767_225_600_000,
            1_767_225_601_000,
            1_767_225_602_000,
            1_767_225_603_000,
        ],
        readers: [
            (
                KemSuite::X25519Sntrup761,
                seed(0x20),
                *b"consent-sntrup-1",
                seed(0x21),
                seed(0x22),
                seed(0x23)[..24].try_into().unwrap(),
            ),
            (
                KemSuite::X25519MlKem768,
                seed(0x30),
                *b"consent-mlkem-01",
                seed(0x31),
                seed(0x32),
                seed(0x33)[..24].try_into().unwrap(),
            ),
        ],
    }
}

/// Builds the whole vector file deterministically.
fn generate() -> Value {
    let inp = inputs();
    let dev = SigningIdentity::from_seed(&inp.device_seed);
    let cid = OpaqueId(inp.channel_id);
    let mut w = ChannelWriter::with_epoch_key(cid, SymmetricKey::from_bytes(inp.epoch0_key));
    let r0 = w
        .seal_with_nonce(&dev, inp.timestamps[0], inp.plaintexts[0], &inp.nonces[0])
        .unwrap();
    let mut deliveries = Vec::new();
    let mut grants = Vec::new();
    for (suite, kem_seed, consent, secret, encap, nonce) in &inp.readers {
        let kem = KemSecretKey::from_seed(*suite, kem_seed);
        let (d, g) = w
            .deliver_deterministic(
                &dev,
                inp.timestamps[0],
                OpaqueId(*consent),
                kem.public(),
                Zeroizing::new(*secret),
                encap,
                nonce,
            )
            .unwrap();
        grants.push(g);
        deliveries.push(json!({
            "kem_suite": suite.name(),
            "kem_seed": hex(kem_seed),
            "kem_public_fingerprint": hex(&kem.public().fingerprint()),
            "consent_id": hex(consent),
            "reader_secret": hex(secret),
            "encap_seed": hex(encap),
            "wrap_nonce": hex(nonce),
            "expected_epoch": 0,
            "expected_next_seq": 1,
            "delivery": hex(&d),
        }));
    }
    let r1 = w
        .seal_with_nonce(&dev, inp.timestamps[1], inp.plaintexts[1], &inp.nonces[1])
        .unwrap();
    let r2 = w
        .rotate_deterministic(
            &dev,
            inp.timestamps[2],
            &grants,
            SymmetricKey::from_bytes(inp.epoch1_key),
            &inp.rotation_seed,
        )
        .unwrap();
    let r3 = w
        .seal_with_nonce(&dev, inp.timestamps[3], inp.plaintexts[2], &inp.nonces[2])
        .unwrap();
    let rec = |r: &[u8], kind: &str, seq: u64, epoch: u32, ts: u64, pt: Option<&[u8]>| {
        json!({
            "kind": kind, "seq": seq, "epoch": epoch, "timestamp_ms": ts,
            "plaintext": pt.map(hex), "record": hex(r), "record_hash": hex(&record_hash(r)),
        })
    };
    json!({
        "about": "P1 Consent channel vectors; see docs/PROTOCOL.md, Sealed channels, 'Test vectors'",
        "device_seed": hex(&inp.device_seed),
        "device_public": dev.public().to_hex(),
        "channel_id": hex(&inp.channel_id),
        "genesis_hash": hex(&genesis_hash(&cid)),
        "epoch0_key": hex(&inp.epoch0_key),
        "epoch1_key": hex(&inp.epoch1_key),
        "rotation_seed": hex(&inp.rotation_seed),
        "data_nonces": inp.nonces.iter().map(|n| hex(n)).collect::<Vec<_>>(),
        "deliveries": deliveries,
        "records": [
            rec(&r0, "data", 0, 0, inp.timestamps[0], Some(inp.plaintexts[0])),
            rec(&r1, "data", 1, 0, inp.timestamps[1], Some(inp.plaintexts[1])),
            rec(&r2, "rotation", 2, 1, inp.timestamps[2], None),
            rec(&r3, "data", 3, 1, inp.timestamps[3], Some(inp.plaintexts[2])),
        ],
    })
}

fn bytes(v: &Value) -> Vec<u8> {
    unhex(v.as_str().expect("hex string")).expect("valid hex")
}

fn arr<const N: usize>(v: &Value) -> [u8; N] {
    bytes(v).try_into().expect("right length")
}

#[test]
fn committed_vectors_decode_and_open() {
    let text = std::fs::read_to_string(PATH).expect("vector file present");
    let v: Value = serde_json::from_str(&text).unwrap();
    let dev = SigningIdentity::from_seed(&arr(&v["device_seed"]));
    assert_eq!(dev.public().to_hex(), v["device_public"].as_str().unwrap());
    let cid = OpaqueId(arr(&v["channel_id"]));
    assert_eq!(genesis_hash(&cid).to_vec(), bytes(&v["genesis_hash"]));
    let records: Vec<Vec<u8>> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| bytes(&r["record"]))
        .collect();
    assert_eq!(records.len(), 4);
    // Chain: genesis -> r0 -> r1 -> r2 -> r3, hashes as recorded.
    let mut prev = genesis_hash(&cid);
    for (rec, exp) in records.iter().zip(v["records"].as_array().unwrap()) {
        let h = peek(rec).unwrap();
        assert_eq!(h.prev_hash, prev);
        assert_eq!(h.channel_id, cid);
        assert_eq!(h.seq, exp["seq"].as_u64().unwrap());
        assert_eq!(u64::from(h.epoch), exp["epoch"].as_u64().unwrap());
        assert_eq!(h.timestamp_ms, exp["timestamp_ms"].as_u64().unwrap());
        prev = record_hash(rec);
        assert_eq!(prev.to_vec(), bytes(&exp["record_hash"]));
    }

    let deliveries = v["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2);
    let mut suites = Vec::new();
    for d in deliveries {
        let suite = KemSuite::from_name(d["kem_suite"].as_str().unwrap()).unwrap();
        suites.push(suite);
        let kem = KemSecretKey::from_seed(suite, &arr(&d["kem_seed"]));
        assert_eq!(
            kem.public().fingerprint().to_vec(),
            bytes(&d["kem_public_fingerprint"])
        );
        let mut r = ChannelReader::from_delivery(&bytes(&d["delivery"]), &dev.public(), &kem)
            .expect("delivery opens with the seeded KEM key");
        assert_eq!(u64::from(r.epoch()), d["expected_epoch"].as_u64().unwrap());
        assert_eq!(r.next_seq(), d["expected_next_seq"].as_u64().unwrap());
        assert_eq!(r.consent_id().0.to_vec(), bytes(&d["consent_id"]));
        // Joined after r0: r0 is the anchor record itself.
        assert_eq!(r.open(&records[0]), Err(OpenError::Duplicate { seq: 0 }));
        let exp = &v["records"];
        for i in 1..4 {
            match r.open(&records[i]).unwrap() {
                Opened::Data {
                    seq,
                    epoch,
                    timestamp_ms,
                    plaintext,
                } => {
                    assert_eq!(seq, exp[i]["seq"].as_u64().unwrap());
                    assert_eq!(u64::from(epoch), exp[i]["epoch"].as_u64().unwrap());
                    assert_eq!(timestamp_ms, exp[i]["timestamp_ms"].as_u64().unwrap());
                    assert_eq!(plaintext.to_vec(), bytes(&exp[i]["plaintext"]));
                }
                Opened::Rotated { seq, epoch } => {
                    assert_eq!(exp[i]["kind"], "rotation");
                    assert_eq!(seq, exp[i]["seq"].as_u64().unwrap());
                    assert_eq!(u64::from(epoch), exp[i]["epoch"].as_u64().unwrap());
                }
            }
        }
        // Each delivery is for its own key only.
        let other = KemSecretKey::from_seed(suite, &[0xEE; 32]);
        assert_eq!(
            ChannelReader::from_delivery(&bytes(&d["delivery"]), &dev.public(), &other)
                .unwrap_err(),
            OpenError::NotAuthorised
        );
    }
    assert_eq!(
        suites,
        [KemSuite::X25519Sntrup761, KemSuite::X25519MlKem768]
    );

    // Encoding is deterministic from the seeds: the file is exactly what the code produces.
    assert_eq!(
        generate(),
        v,
        "re-encoding differs from the committed vectors"
    );
}

#[test]
#[ignore = "rewrites shared/tests/vectors/channel.json"]
fn regenerate_channel_vectors() {
    let mut text = serde_json::to_string_pretty(&generate()).unwrap();
    text.push('\n');
    std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors")).unwrap();
    std::fs::write(PATH, text).unwrap();
}

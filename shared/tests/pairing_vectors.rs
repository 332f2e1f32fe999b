//! Pairing test vectors: shared/tests/vectors/pairing.json.
//!
//! `pairing_vectors_match` decodes and verifies the committed bytes and checks that the
//! deterministic constructors reproduce them. To rewrite the file after a deliberate
//! format change: `cargo test -p p1consent-shared --test pairing_vectors -- --ignored`.

use p1consent_shared::crypto::{KemSecretKey, KemSuite, SigningIdentity, hex, unhex};
use p1consent_shared::pairing::*;
use serde_json::{Value, json};
use zeroize::Zeroizing;

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/pairing.json");

const DEVICE_SEED: [u8; 32] = [0x11; 32];
const WALLET_SEED: [u8; 32] = [0x22; 32];
const KEM_SEED: [u8; 32] = [0x33; 32];
const SECRET: [u8; 16] = [0x44; 16];
const WALLET_NONCE: [u8; 16] = [0x55; 16];
const DEVICE_NONCE: [u8; 32] = [0x66; 32];
const T0: u64 = 1_700_000_000;
const EXPIRES_AT: u64 = T0 + 600;
const HINT: &str = "mqtt://192.168.1.20:1883";
const LABEL: &str = "Meter hall";

struct Generated {
    link: String,
    qr: Vec<u8>,
    claim: Vec<u8>,
    challenge: Vec<u8>,
    answer: Vec<u8>,
    result: Vec<u8>,
    owner: PairedOwner,
    paired: PairedDevice,
}

fn generate() -> Generated {
    let device = SigningIdentity::from_seed(&DEVICE_SEED);
    let wallet = SigningIdentity::from_seed(&WALLET_SEED);
    let kem = KemSecretKey::from_seed(KemSuite::X25519Sntrup761, &KEM_SEED);
    let offer = PairingOffer::with_secret(
        device.public(),
        HINT,
        Some(LABEL),
        EXPIRES_AT,
        Zeroizing::new(SECRET),
    )
    .unwrap();
    let link = offer.to_link().to_string();
    let qr = offer.to_bytes().to_vec();
    let mut dev = DevicePairing::new(offer, &device, kem.public()).unwrap();
    let invite = PairingInvite::from_link(&link, T0).unwrap();
    let (claim, waiting) =
        WalletPairing::start_with_nonce(invite, &wallet, T0, WALLET_NONCE).unwrap();
    let challenge = dev
        .handle_claim_with_nonce(&claim, T0 + 1, DEVICE_NONCE)
        .unwrap();
    let (answer, awaiting) = waiting.on_challenge(&challenge, &wallet, T0 + 2).unwrap();
    let (result, owner) = dev.handle_answer(&answer, T0 + 3).unwrap();
    let paired = awaiting.on_result(&result).unwrap();
    Generated {
        link,
        qr,
        claim,
        challenge,
        answer,
        result,
        owner,
        paired,
    }
}

fn to_json(g: &Generated) -> Value {
    let device = SigningIdentity::from_seed(&DEVICE_SEED).public();
    let wallet = SigningIdentity::from_seed(&WALLET_SEED).public();
    let kem = KemSecretKey::from_seed(KemSuite::X25519Sntrup761, &KEM_SEED);
    let answer = Answer::decode(&g.answer).unwrap();
    json!({
        "description": "P1 Consent pairing (docs/PROTOCOL.md (Pairing)). All byte strings are lowercase hex. Ed25519 signatures are deterministic, so every message is reproducible from the inputs.",
        "inputs": {
            "device_seed": hex(&DEVICE_SEED),
            "wallet_seed": hex(&WALLET_SEED),
            "kem_suite": "x25519-sntrup761",
            "kem_seed": hex(&KEM_SEED),
            "secret": hex(&SECRET),
            "wallet_nonce": hex(&WALLET_NONCE),
            "device_nonce": hex(&DEVICE_NONCE),
            "broker_hint": HINT,
            "label": LABEL,
            "offer_expires_at": EXPIRES_AT,
            "claim_time": T0,
            "claim_received_at": T0 + 1,
            "challenge_received_at": T0 + 2,
            "answer_received_at": T0 + 3
        },
        "messages": {
            "qr_payload": hex(&g.qr),
            "link": g.link,
            "claim": hex(&g.claim),
            "challenge": hex(&g.challenge),
            "answer": hex(&g.answer),
            "result": hex(&g.result)
        },
        "expected": {
            "device_id": device.to_hex(),
            "device_opaque_id": device.opaque_id().to_hex(),
            "wallet_id": wallet.to_hex(),
            "kem_public_key_fingerprint": hex(&kem.public().fingerprint()),
            "challenge_expires_at": T0 + 1 + CHALLENGE_TTL,
            "proof": hex(&answer.proof),
            "outcome": "accepted",
            "paired_at": g.owner.paired_at,
            "sizes": {
                "qr_payload": g.qr.len(),
                "link": g.link.len(),
                "claim": g.claim.len(),
                "challenge": g.challenge.len(),
                "answer": g.answer.len(),
                "result": g.result.len()
            }
        }
    })
}

fn field<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| &v[*k])
}
fn bytes(v: &Value, path: &[&str]) -> Vec<u8> {
    unhex(field(v, path).as_str().expect("hex string")).expect("valid hex")
}
fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    field(v, path).as_str().expect("string")
}
fn num(v: &Value, path: &[&str]) -> u64 {
    field(v, path).as_u64().expect("number")
}

#[test]
fn pairing_vectors_match() {
    let file = std::fs::read_to_string(PATH).expect("vector file");
    let v: Value = serde_json::from_str(&file).expect("json");
    let m = ["messages"];
    let qr = bytes(&v, &["messages", "qr_payload"]);
    let link = text(&v, &[m[0], "link"]);
    let device_id = text(&v, &["expected", "device_id"]);
    let wallet_id = text(&v, &["expected", "wallet_id"]);

    // QR payload and link.
    let invite = PairingInvite::from_link(link, T0).unwrap();
    assert_eq!(invite.device().to_hex(), device_id);
    assert_eq!(
        invite.device_opaque_id().to_hex(),
        text(&v, &["expected", "device_opaque_id"])
    );
    assert_eq!(invite.broker_hint(), text(&v, &["inputs", "broker_hint"]));
    assert_eq!(invite.label(), Some(text(&v, &["inputs", "label"])));
    assert_eq!(
        invite.expires_at(),
        num(&v, &["inputs", "offer_expires_at"])
    );
    assert_eq!(&decode_link(link).unwrap()[..], &qr[..]);
    assert_eq!(&qr[35..51], &bytes(&v, &["inputs", "secret"])[..]);

    // Each message decodes and its signature verifies.
    let claim = Claim::decode(&bytes(&v, &["messages", "claim"])).unwrap();
    assert_eq!(claim.device.to_hex(), device_id);
    assert_eq!(claim.wallet.to_hex(), wallet_id);
    assert_eq!(
        claim.wallet_nonce.to_vec(),
        bytes(&v, &["inputs", "wallet_nonce"])
    );
    assert_eq!(claim.time, num(&v, &["inputs", "claim_time"]));

    let ch = Challenge::decode(&bytes(&v, &["messages", "challenge"])).unwrap();
    assert_eq!(ch.device.to_hex(), device_id);
    assert_eq!(ch.wallet.to_hex(), wallet_id);
    assert_eq!(ch.wallet_nonce, claim.wallet_nonce);
    assert_eq!(
        ch.device_nonce.to_vec(),
        bytes(&v, &["inputs", "device_nonce"])
    );
    assert_eq!(
        ch.expires_at,
        num(&v, &["expected", "challenge_expires_at"])
    );
    assert_eq!(
        hex(&ch.device_kem.fingerprint()),
        text(&v, &["expected", "kem_public_key_fingerprint"])
    );
    let kem = KemSecretKey::from_seed(KemSuite::X25519Sntrup761, &KEM_SEED);
    assert_eq!(&ch.device_kem, kem.public());

    let answer = Answer::decode(&bytes(&v, &["messages", "answer"])).unwrap();
    assert_eq!(answer.device.to_hex(), device_id);
    assert_eq!(answer.wallet.to_hex(), wallet_id);
    assert_eq!(answer.device_nonce, ch.device_nonce);
    assert_eq!(hex(&answer.proof), text(&v, &["expected", "proof"]));

    let result = PairingResult::decode(&bytes(&v, &["messages", "result"])).unwrap();
    assert_eq!(result.device.to_hex(), device_id);
    assert_eq!(result.wallet.to_hex(), wallet_id);
    assert_eq!(result.device_nonce, ch.device_nonce);
    assert_eq!(result.outcome, Outcome::Accepted);
    assert_eq!(result.time, num(&v, &["expected", "paired_at"]));

    // The state machines reproduce every committed byte from the inputs.
    let g = generate();
    assert_eq!(g.link, link);
    assert_eq!(g.qr, qr);
    assert_eq!(g.claim, bytes(&v, &["messages", "claim"]));
    assert_eq!(g.challenge, bytes(&v, &["messages", "challenge"]));
    assert_eq!(g.answer, bytes(&v, &["messages", "answer"]));
    assert_eq!(g.result, bytes(&v, &["messages", "result"]));
    assert_eq!(g.owner.owner.to_hex(), wallet_id);
    assert_eq!(g.paired.device.to_hex(), device_id);
    assert_eq!(
        to_json(&g),
        v,
        "vector file differs from the generator's output"
    );
}

#[test]
#[ignore = "rewrites shared/tests/vectors/pairing.json"]
fn generate_pairing_vectors() {
    let g = generate();
    let mut s = serde_json::to_string_pretty(&to_json(&g)).unwrap();
    s.push('\n');
    std::fs::create_dir_all(std::path::Path::new(PATH).parent().unwrap()).unwrap();
    std::fs::write(PATH, s).unwrap();
}

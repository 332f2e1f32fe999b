//! Pairing: tampered and hostile input never succeeds and never panics.

use p1consent_shared::crypto::{KemSecretKey, KemSuite, SigningIdentity};
use p1consent_shared::pairing::*;

const NOW: u64 = 1_700_000_000;
const HINT: &str = "mqtt://192.168.1.20:1883";

/// Tiny deterministic PRNG (xorshift64*), so the test needs no extra dependency.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

struct Run {
    device: SigningIdentity,
    kem: KemSecretKey,
    wallet: SigningIdentity,
    link: String,
    qr: Vec<u8>,
    claim: Vec<u8>,
    challenge: Vec<u8>,
    answer: Vec<u8>,
    result: Vec<u8>,
}

/// One complete genuine pairing, keeping every message.
fn genuine_run() -> Run {
    let device = SigningIdentity::from_seed(&[1; 32]);
    let kem = KemSecretKey::from_seed(KemSuite::DEFAULT, &[2; 32]);
    let wallet = SigningIdentity::from_seed(&[3; 32]);
    let offer = PairingOffer::new(device.public(), HINT, Some("Meter"), NOW + 600).unwrap();
    let link = offer.to_link().to_string();
    let qr = offer.to_bytes().to_vec();
    let mut dev = DevicePairing::new(offer, &device, kem.public()).unwrap();
    let invite = PairingInvite::from_link(&link, NOW).unwrap();
    let (claim, waiting) = WalletPairing::start(invite, &wallet, NOW).unwrap();
    let challenge = dev.handle_claim(&claim, NOW).unwrap();
    let (answer, _) = waiting.on_challenge(&challenge, &wallet, NOW).unwrap();
    let (result, _) = dev.handle_answer(&answer, NOW).unwrap();
    Run {
        device,
        kem,
        wallet,
        link,
        qr,
        claim,
        challenge,
        answer,
        result,
    }
}

/// Every single-bit-ish change at every position, plus truncations and an extension.
fn mutations(msg: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..msg.len() {
        for mask in [0x01u8, 0x80, 0xFF] {
            let mut m = msg.to_vec();
            m[i] ^= mask;
            out.push(m);
        }
        out.push(msg[..i].to_vec());
    }
    let mut longer = msg.to_vec();
    longer.push(0);
    out.push(longer);
    out
}

#[test]
fn tampered_claim_never_gets_a_challenge() {
    let r = genuine_run();
    let offer = PairingOffer::new(r.device.public(), HINT, None, NOW + 600).unwrap();
    let mut dev = DevicePairing::new(offer, &r.device, r.kem.public()).unwrap();
    for m in mutations(&r.claim) {
        assert!(dev.handle_claim(&m, NOW).is_err());
    }
    assert_eq!(dev.pending_challenges(), 0);
}

#[test]
fn tampered_challenge_is_rejected_and_the_genuine_one_still_works() {
    let r = genuine_run();
    // Fresh wallet session that expects exactly r.challenge.
    let offer = PairingOffer::new(r.device.public(), HINT, None, NOW + 600).unwrap();
    let invite = PairingInvite::from_link(&offer.to_link(), NOW).unwrap();
    let mut dev = DevicePairing::new(offer, &r.device, r.kem.public()).unwrap();
    let (claim, mut waiting) = WalletPairing::start(invite, &r.wallet, NOW).unwrap();
    let challenge = dev.handle_claim(&claim, NOW).unwrap();
    for m in mutations(&challenge) {
        match waiting.on_challenge(&m, &r.wallet, NOW) {
            Ok(_) => panic!("tampered challenge accepted"),
            Err(e) => waiting = *e.state,
        }
    }
    let (answer, _) = waiting.on_challenge(&challenge, &r.wallet, NOW).unwrap();
    dev.handle_answer(&answer, NOW).unwrap();
}

#[test]
fn tampered_answer_is_rejected_without_burning_attempts() {
    let r = genuine_run();
    let offer = PairingOffer::new(r.device.public(), HINT, None, NOW + 600).unwrap();
    let invite = PairingInvite::from_link(&offer.to_link(), NOW).unwrap();
    let mut dev = DevicePairing::new(offer, &r.device, r.kem.public()).unwrap();
    let (claim, waiting) = WalletPairing::start(invite, &r.wallet, NOW).unwrap();
    let challenge = dev.handle_claim(&claim, NOW).unwrap();
    let (answer, awaiting) = waiting.on_challenge(&challenge, &r.wallet, NOW).unwrap();
    for m in mutations(&answer) {
        assert!(dev.handle_answer(&m, NOW).is_err());
    }
    // Every byte is under the wallet's signature: no tampered answer counted as an attempt
    // or consumed the challenge.
    assert_eq!(dev.failed_attempts(), 0);
    assert_eq!(dev.status(), DeviceStatus::Open);
    let (result, _) = dev.handle_answer(&answer, NOW).unwrap();
    let mut awaiting = awaiting;
    for m in mutations(&result) {
        match awaiting.on_result(&m) {
            Ok(_) => panic!("tampered result accepted"),
            Err(e) => awaiting = *e.state,
        }
    }
    awaiting.on_result(&result).unwrap();
}

#[test]
fn tampered_qr_payload_never_pairs() {
    let r = genuine_run();
    let good = PairingOffer::new(r.device.public(), HINT, Some("Meter"), NOW + 600).unwrap();
    let good_bytes = good.to_bytes().to_vec();
    let mut dev = DevicePairing::new(good, &r.device, r.kem.public()).unwrap();
    let mut parsed = 0;
    for m in mutations(&good_bytes) {
        let Ok(invite) = PairingInvite::from_bytes(&m, NOW) else {
            continue;
        };
        parsed += 1;
        // It parsed (e.g. a changed secret, expiry, hint or label): the pairing must fail.
        let Ok((claim, waiting)) = WalletPairing::start(invite, &r.wallet, NOW) else {
            continue;
        };
        let Ok(ch) = dev.handle_claim(&claim, NOW) else {
            continue;
        };
        let Ok((answer, _)) = waiting.on_challenge(&ch, &r.wallet, NOW) else {
            continue;
        };
        assert!(dev.handle_answer(&answer, NOW).is_err());
        if dev.status() == DeviceStatus::Burnt {
            // Re-arm: a fresh device state with the same offer bytes.
            let again = PairingOffer::with_secret_for_test(&good_bytes, &r.device);
            dev = DevicePairing::new(again, &r.device, r.kem.public()).unwrap();
        }
    }
    assert!(
        parsed > 0,
        "some mutations are well-formed and must be caught by the proof"
    );
}

/// Rebuilds an offer equal to `payload` (test helper via the hidden deterministic API).
trait OfferFromPayload {
    fn with_secret_for_test(payload: &[u8], device: &SigningIdentity) -> PairingOffer;
}
impl OfferFromPayload for PairingOffer {
    fn with_secret_for_test(payload: &[u8], device: &SigningIdentity) -> PairingOffer {
        let inv = PairingInvite::from_bytes(payload, NOW).unwrap();
        let secret: [u8; SECRET_LEN] = payload[35..51].try_into().unwrap();
        PairingOffer::with_secret(
            device.public(),
            inv.broker_hint(),
            inv.label(),
            inv.expires_at(),
            zeroize::Zeroizing::new(secret),
        )
        .unwrap()
    }
}

#[test]
fn hostile_random_input_never_panics() {
    let r = genuine_run();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let offer = PairingOffer::new(r.device.public(), HINT, None, NOW + 600).unwrap();
    let invite = PairingInvite::from_link(&offer.to_link(), NOW).unwrap();
    let mut dev = DevicePairing::new(offer, &r.device, r.kem.public()).unwrap();
    let (claim, mut waiting) = WalletPairing::start(invite, &r.wallet, NOW).unwrap();
    let challenge = dev.handle_claim(&claim, NOW).unwrap();
    let seeds = [
        &r.qr,
        &r.claim,
        &r.challenge,
        &r.answer,
        &r.result,
        &challenge,
    ];
    for round in 0..3000 {
        let input = match round % 3 {
            // Pure noise of random length (sometimes over every limit).
            0 => {
                let n = (rng.next() % 1600) as usize;
                rng.bytes(n)
            }
            // A valid header followed by noise.
            1 => {
                let mut v = vec![0x20 + (rng.next() % 5) as u8, 1, 1 + (rng.next() % 2) as u8];
                let n = (rng.next() % 1500) as usize;
                v.extend(rng.bytes(n));
                v
            }
            // A real message with a few random bytes overwritten.
            _ => {
                let mut v = seeds[(rng.next() % seeds.len() as u64) as usize].clone();
                for _ in 0..1 + rng.next() % 4 {
                    let i = (rng.next() % v.len() as u64) as usize;
                    v[i] = rng.next() as u8;
                }
                v
            }
        };
        let _ = PairingInvite::from_bytes(&input, NOW);
        let _ = Claim::decode(&input);
        let _ = Challenge::decode(&input);
        let _ = Answer::decode(&input);
        let _ = PairingResult::decode(&input);
        if input != claim {
            let _ = dev.handle_claim(&input, NOW);
        }
        assert!(dev.handle_answer(&input, NOW).is_err());
        // The genuine challenge is the only input that may advance the wallet.
        if input != challenge {
            match waiting.on_challenge(&input, &r.wallet, NOW) {
                Ok(_) => panic!("hostile challenge accepted"),
                Err(e) => waiting = *e.state,
            }
        }
        // The same bytes as a link payload, and as link text.
        let text = String::from_utf8_lossy(&input);
        let _ = PairingInvite::from_link(&text, NOW);
        let mut link = LINK_PREFIX.to_string();
        link.push_str(&text);
        let _ = PairingInvite::from_link(&link, NOW);
    }
    assert_eq!(dev.failed_attempts(), 0);
}

#[test]
fn link_parsing_errors() {
    let r = genuine_run();
    let ok = |l: &str| PairingInvite::from_link(l, NOW);
    assert!(ok(&r.link).is_ok());
    let d = r.link.strip_prefix(LINK_PREFIX).unwrap();
    let bad = |l: String, e: LinkError| {
        assert_eq!(ok(&l).unwrap_err(), PairingError::BadLink(e), "link {l:?}")
    };
    bad(format!("https://pair?v=1&d={d}"), LinkError::BadScheme);
    bad(format!("P1CONSENT://pair?v=1&d={d}"), LinkError::BadScheme);
    bad(
        format!("p1consent://pairing?v=1&d={d}"),
        LinkError::BadScheme,
    );
    bad(
        format!("p1consent://pair?v=1&d={d}&x=1"),
        LinkError::BadParams,
    );
    bad(format!("p1consent://pair?d={d}&v=1"), LinkError::BadParams);
    bad(
        format!("p1consent://pair?v=1&d={d}&d={d}"),
        LinkError::BadParams,
    );
    bad("p1consent://pair?v=1".into(), LinkError::BadParams);
    bad("p1consent://pair?v=1&d=".into(), LinkError::BadParams);
    bad(
        format!("p1consent://pair?v=2&d={d}"),
        LinkError::UnsupportedVersion,
    );
    bad(format!("p1consent://pair?v=1&d={d}="), LinkError::BadBase64);
    bad(
        format!("p1consent://pair?v=1&d=+{}", &d[1..]),
        LinkError::BadBase64,
    );
    bad(format!("p1consent://pair?v=1&d={d}%"), LinkError::BadBase64);
    bad(
        format!("p1consent://pair?v=1&d={}", "A".repeat(MAX_LINK_LEN)),
        LinkError::TooLong,
    );
    // Base64 that decodes but is not a QR payload is a typed wire error.
    assert!(matches!(
        ok("p1consent://pair?v=1&d=AAAA").unwrap_err(),
        PairingError::Malformed(_)
    ));
    // Non-canonical trailing bits are refused.
    let mut chars: Vec<char> = d.chars().collect();
    if !d.len().is_multiple_of(4) {
        let last = chars.last_mut().unwrap();
        // Flip the lowest bit of the last sextet: the decoded bytes are unchanged if the
        // decoder allowed trailing bits, so it must refuse.
        *last = if *last == 'A' { 'B' } else { 'A' };
        let l = format!("{LINK_PREFIX}{}", chars.iter().collect::<String>());
        assert!(ok(&l).is_err());
    }
    // Sizes for the report.
    eprintln!(
        "QR payload {} bytes, link {} chars",
        r.qr.len(),
        r.link.len()
    );
}

#[test]
fn message_sizes() {
    let r = genuine_run();
    assert_eq!(r.claim.len(), CLAIM_LEN);
    assert_eq!(r.answer.len(), ANSWER_LEN);
    assert_eq!(r.result.len(), RESULT_LEN);
    assert!(r.challenge.len() <= MAX_CHALLENGE_LEN);
    assert!(r.qr.len() <= MAX_QR_PAYLOAD);
    eprintln!(
        "qr {} link {} claim {} challenge {} answer {} result {}",
        r.qr.len(),
        r.link.len(),
        r.claim.len(),
        r.challenge.len(),
        r.answer.len(),
        r.result.len()
    );
}

//! Pairing protocol: the happy path and every attack the protocol must stop (real crypto).

use p1consent_shared::crypto::{KemSecretKey, KemSuite, SigningIdentity};
use p1consent_shared::pairing::*;
use zeroize::Zeroizing;

const NOW: u64 = 1_700_000_000;
const HINT: &str = "mqtt://192.168.1.20:1883";

struct Fixture {
    device: SigningIdentity,
    kem: KemSecretKey,
    wallet: SigningIdentity,
}

fn fixture() -> Fixture {
    Fixture {
        device: SigningIdentity::from_seed(&[1; 32]),
        kem: KemSecretKey::from_seed(KemSuite::DEFAULT, &[2; 32]),
        wallet: SigningIdentity::from_seed(&[3; 32]),
    }
}

/// A device pairing and the wallet's invite for the same fresh offer.
fn offer(f: &Fixture, ttl: u64) -> (DevicePairing, PairingInvite) {
    let offer = PairingOffer::new(f.device.public(), HINT, Some("Meter kitchen"), NOW + ttl)
        .expect("offer");
    let link = offer.to_link();
    let invite = PairingInvite::from_link(&link, NOW).expect("invite");
    let dev = DevicePairing::new(offer, &f.device, f.kem.public()).expect("device");
    (dev, invite)
}

#[test]
fn happy_path_both_sides() {
    let f = fixture();
    let (mut dev, invite) = offer(&f, DEFAULT_OFFER_TTL);
    assert_eq!(invite.device(), f.device.public());
    assert_eq!(invite.broker_hint(), HINT);
    assert_eq!(invite.label(), Some("Meter kitchen"));

    let (claim, waiting) = WalletPairing::start(invite, &f.wallet, NOW).unwrap();
    assert_eq!(claim.len(), CLAIM_LEN);
    let challenge = dev.handle_claim(&claim, NOW + 1).unwrap();
    assert!(challenge.len() <= MAX_CHALLENGE_LEN);
    assert_eq!(dev.pending_challenges(), 1);
    let (answer, awaiting) = waiting
        .on_challenge(&challenge, &f.wallet, NOW + 2)
        .unwrap();
    assert_eq!(answer.len(), ANSWER_LEN);
    let (result, owner) = dev.handle_answer(&answer, NOW + 3).unwrap();
    assert_eq!(result.len(), RESULT_LEN);
    assert_eq!(
        owner,
        PairedOwner {
            owner: f.wallet.public(),
            paired_at: NOW + 3
        }
    );
    assert_eq!(dev.status(), DeviceStatus::Paired);
    let paired = awaiting.on_result(&result).unwrap();
    assert_eq!(paired.device, f.device.public());
    assert_eq!(&paired.device_kem, f.kem.public());
    assert_eq!(paired.broker_hint, HINT);
    assert_eq!(paired.label.as_deref(), Some("Meter kitchen"));
    assert_eq!(paired.paired_at, NOW + 3);
}

/// Runs claim → challenge for `wallet` and returns the answer bytes and result state.
fn answer_for(
    dev: &mut DevicePairing,
    invite: PairingInvite,
    wallet: &SigningIdentity,
    now: u64,
) -> (Vec<u8>, AwaitingResult) {
    let (claim, waiting) = WalletPairing::start(invite, wallet, now).unwrap();
    let challenge = dev.handle_claim(&claim, now).unwrap();
    waiting.on_challenge(&challenge, wallet, now).unwrap()
}

#[test]
fn wrong_secret_is_bad_proof_and_rejection_reaches_wallet() {
    let f = fixture();
    let (mut dev, _right) = offer(&f, 600);
    // The wallet scanned a different QR code of the same device.
    let (_other_dev, wrong) = offer(&f, 600);
    let (answer, awaiting) = answer_for(&mut dev, wrong, &f.wallet, NOW);
    assert_eq!(
        dev.handle_answer(&answer, NOW).unwrap_err(),
        PairingError::BadProof
    );
    assert_eq!(dev.failed_attempts(), 1);
    let rejection = dev.take_rejection().expect("signed rejection");
    let err = awaiting.on_result(&rejection).unwrap_err().error;
    assert_eq!(
        err,
        PairingError::Rejected {
            reason: RejectReason::BadProof
        }
    );
}

#[test]
fn answer_replayed_after_success_fails() {
    let f = fixture();
    let (mut dev, invite) = offer(&f, 600);
    let (answer, _) = answer_for(&mut dev, invite, &f.wallet, NOW);
    dev.handle_answer(&answer, NOW).unwrap();
    assert_eq!(
        dev.handle_answer(&answer, NOW + 5).unwrap_err(),
        PairingError::SecretSpent
    );
    // A captured answer is useless against a fresh offer of the same device too.
    let (mut dev2, _invite2) = offer(&f, 600);
    assert_eq!(
        dev2.handle_answer(&answer, NOW + 5).unwrap_err(),
        PairingError::UnknownChallenge
    );
}

#[test]
fn answer_replayed_before_success_is_single_use() {
    let f = fixture();
    let (mut dev, invite) = offer(&f, 600);
    let (answer, _) = answer_for(&mut dev, invite, &f.wallet, NOW);
    // Eve replays the legitimate wallet's answer twice: the first one pairs the *wallet*.
    let (_, owner) = dev.handle_answer(&answer, NOW).unwrap();
    assert_eq!(owner.owner, f.wallet.public());
}

#[test]
fn answer_resigned_by_another_wallet_fails() {
    // Eve captures Alice's answer, swaps in her own key and re-signs it. The challenge was
    // issued to Alice, and the proof binds Alice's key.
    let f = fixture();
    let eve = SigningIdentity::from_seed(&[9; 32]);
    let (mut dev, invite) = offer(&f, 600);
    let (answer, _) = answer_for(&mut dev, invite, &f.wallet, NOW);
    let a = Answer::decode(&answer).unwrap();
    let forged = resign_answer(&a.device, &eve, &a.device_nonce, &a.proof);
    assert_eq!(
        dev.handle_answer(&forged, NOW).unwrap_err(),
        PairingError::WrongWallet
    );
    // Eve also claims, so she has a challenge of her own, and reuses Alice's proof with it.
    let (eve_claim, _) = {
        let (_d, eve_invite) = offer(&f, 600); // any invite for this device works for the claim
        WalletPairing::start(eve_invite, &eve, NOW).unwrap()
    };
    let eve_ch = Challenge::decode(&dev.handle_claim(&eve_claim, NOW).unwrap()).unwrap();
    let forged = resign_answer(&a.device, &eve, &eve_ch.device_nonce, &a.proof);
    assert_eq!(
        dev.handle_answer(&forged, NOW).unwrap_err(),
        PairingError::BadProof
    );
    // Alice's genuine answer still works: Eve could not cancel her challenge.
    let (_, owner) = dev.handle_answer(&answer, NOW).unwrap();
    assert_eq!(owner.owner, f.wallet.public());
}

/// Builds an answer with arbitrary fields signed by `signer` (an attacker's tool).
fn resign_answer(
    device: &p1consent_shared::crypto::PublicId,
    signer: &SigningIdentity,
    nonce: &[u8; 32],
    proof: &[u8; 32],
) -> Vec<u8> {
    let mut body = vec![MSG_ANSWER, 1, 1];
    body.extend_from_slice(device.as_bytes());
    body.extend_from_slice(signer.public().as_bytes());
    body.extend_from_slice(nonce);
    body.extend_from_slice(proof);
    let mut msg = b"p1consent/v1/pairing/answer\0".to_vec();
    msg.extend_from_slice(&body);
    body.extend_from_slice(&signer.sign(&msg));
    body
}

#[test]
fn answer_retargeted_to_another_device_fails() {
    let f = fixture();
    let other = SigningIdentity::from_seed(&[7; 32]);
    let (mut dev, invite) = offer(&f, 600);
    let (answer, _) = answer_for(&mut dev, invite, &f.wallet, NOW);
    // Device B receives the answer meant for device A.
    let offer_b = PairingOffer::new(other.public(), HINT, None, NOW + 600).unwrap();
    let mut dev_b = DevicePairing::new(offer_b, &other, f.kem.public()).unwrap();
    assert_eq!(
        dev_b.handle_answer(&answer, NOW).unwrap_err(),
        PairingError::WrongDevice
    );
    // Re-targeted by the wallet itself (device field changed, re-signed): the nonce is A's.
    let a = Answer::decode(&answer).unwrap();
    let moved = resign_answer(&other.public(), &f.wallet, &a.device_nonce, &a.proof);
    assert_eq!(
        dev_b.handle_answer(&moved, NOW).unwrap_err(),
        PairingError::UnknownChallenge
    );
    // And a claim for A is refused by B.
    let (_d, inv) = offer(&f, 600);
    let (claim, _) = WalletPairing::start(inv, &f.wallet, NOW).unwrap();
    assert_eq!(
        dev_b.handle_claim(&claim, NOW).unwrap_err(),
        PairingError::WrongDevice
    );
}

#[test]
fn challenge_from_fake_device_is_rejected() {
    let f = fixture();
    let fake = SigningIdentity::from_seed(&[0xEE; 32]);
    let (_dev, invite) = offer(&f, 600);
    let (claim, waiting) = WalletPairing::start(invite, &f.wallet, NOW).unwrap();
    // The fake Pi saw the claim on the broker and answers with its own key.
    let fake_offer = PairingOffer::new(fake.public(), HINT, None, NOW + 600).unwrap();
    let mut fake_dev = DevicePairing::new(fake_offer, &fake, f.kem.public()).unwrap();
    // Its own claim handling refuses (claim names the real device)...
    assert_eq!(
        fake_dev.handle_claim(&claim, NOW).unwrap_err(),
        PairingError::WrongDevice
    );
    // ... so it forges a challenge by hand: its own key in the device field.
    let c = Claim::decode(&claim).unwrap();
    let forged = forge_challenge(&fake, &fake.public(), &c, f.kem.public());
    let waiting = match waiting.on_challenge(&forged, &f.wallet, NOW) {
        Err(e) => {
            assert_eq!(e.error, PairingError::WrongDevice);
            *e.state
        }
        Ok(_) => panic!("forged challenge accepted"),
    };
    // Or the real device's key in the device field, signed with its own key.
    let forged = forge_challenge(&fake, &f.device.public(), &c, f.kem.public());
    let e = waiting.on_challenge(&forged, &f.wallet, NOW).unwrap_err();
    assert_eq!(e.error, PairingError::BadSignature);
}

fn forge_challenge(
    signer: &SigningIdentity,
    device: &p1consent_shared::crypto::PublicId,
    c: &Claim,
    kem: &p1consent_shared::crypto::KemPublicKey,
) -> Vec<u8> {
    let mut body = vec![MSG_CHALLENGE, 1, kem.suite() as u8];
    body.extend_from_slice(device.as_bytes());
    body.extend_from_slice(c.wallet.as_bytes());
    body.extend_from_slice(&c.wallet_nonce);
    body.extend_from_slice(&[0x42; 32]);
    body.extend_from_slice(&(NOW + 100).to_be_bytes());
    body.extend_from_slice(&kem.to_bytes());
    let mut msg = b"p1consent/v1/pairing/challenge\0".to_vec();
    msg.extend_from_slice(&body);
    body.extend_from_slice(&signer.sign(&msg));
    body
}

#[test]
fn challenge_for_another_claim_is_rejected() {
    // A genuine challenge from an earlier claim of the same wallet cannot be replayed.
    let f = fixture();
    let (mut dev, invite) = offer(&f, 600);
    let (claim1, _) = WalletPairing::start_with_nonce(
        PairingInvite::from_bytes(&invite_bytes(&f), NOW).unwrap(),
        &f.wallet,
        NOW,
        [1; 16],
    )
    .unwrap();
    let old = dev.handle_claim(&claim1, NOW).unwrap();
    let (_, waiting) = WalletPairing::start_with_nonce(invite, &f.wallet, NOW, [2; 16]).unwrap();
    let e = waiting.on_challenge(&old, &f.wallet, NOW).unwrap_err();
    assert_eq!(e.error, PairingError::UnknownChallenge);
    // Wrong signing identity handed to the wallet state machine.
    let other = SigningIdentity::from_seed(&[5; 32]);
    let e = e.state.on_challenge(&old, &other, NOW).unwrap_err();
    assert_eq!(e.error, PairingError::WrongWallet);
}

fn invite_bytes(f: &Fixture) -> Vec<u8> {
    PairingOffer::new(f.device.public(), HINT, None, NOW + 600)
        .unwrap()
        .to_bytes()
        .to_vec()
}

#[test]
fn expired_qr_code() {
    let f = fixture();
    let offer = PairingOffer::new(f.device.public(), HINT, None, NOW + 10).unwrap();
    let link = offer.to_link();
    assert_eq!(
        PairingInvite::from_link(&link, NOW + 10).unwrap_err(),
        PairingError::Expired
    );
    let invite = PairingInvite::from_link(&link, NOW).unwrap();
    assert_eq!(
        WalletPairing::start(invite, &f.wallet, NOW + 11).unwrap_err(),
        PairingError::Expired
    );
    // The device refuses claims after expiry.
    let invite = PairingInvite::from_link(&link, NOW).unwrap();
    let (claim, _) = WalletPairing::start(invite, &f.wallet, NOW + 5).unwrap();
    let mut dev = DevicePairing::new(offer, &f.device, f.kem.public()).unwrap();
    assert_eq!(
        dev.handle_claim(&claim, NOW + 10).unwrap_err(),
        PairingError::Expired
    );
}

#[test]
fn challenge_expiry_is_capped_by_offer_expiry() {
    let f = fixture();
    let (mut dev, invite) = offer(&f, 30);
    let (claim, _) = WalletPairing::start(invite, &f.wallet, NOW).unwrap();
    let ch = Challenge::decode(&dev.handle_claim(&claim, NOW).unwrap()).unwrap();
    assert_eq!(ch.expires_at, NOW + 30);
}

#[test]
fn expired_challenge() {
    let f = fixture();
    let (mut dev, invite) = offer(&f, 600);
    let (claim, waiting) = WalletPairing::start(invite, &f.wallet, NOW).unwrap();
    let challenge = dev.handle_claim(&claim, NOW).unwrap();
    // Wallet side: too late.
    let e = waiting
        .on_challenge(&challenge, &f.wallet, NOW + CHALLENGE_TTL)
        .unwrap_err();
    assert_eq!(e.error, PairingError::ChallengeExpired);
    // Device side: the wallet's clock lags, the answer arrives too late.
    let (answer, awaiting) = e.state.on_challenge(&challenge, &f.wallet, NOW).unwrap();
    assert_eq!(
        dev.handle_answer(&answer, NOW + CHALLENGE_TTL).unwrap_err(),
        PairingError::ChallengeExpired
    );
    let rejection = dev.take_rejection().unwrap();
    assert_eq!(
        awaiting.on_result(&rejection).unwrap_err().error,
        PairingError::Rejected {
            reason: RejectReason::ChallengeExpired
        }
    );
    // Nonce consumed: the same answer again is unknown.
    assert_eq!(
        dev.handle_answer(&answer, NOW + 1).unwrap_err(),
        PairingError::UnknownChallenge
    );
    assert_eq!(dev.failed_attempts(), 0);
}

#[test]
fn claim_with_skewed_clock_is_refused() {
    let f = fixture();
    let (mut dev, invite) = offer(&f, 6000);
    let (claim, _) = WalletPairing::start(invite, &f.wallet, NOW).unwrap();
    assert_eq!(
        dev.handle_claim(&claim, NOW + MAX_CLOCK_SKEW + 1)
            .unwrap_err(),
        PairingError::ClockSkew
    );
    assert!(dev.handle_claim(&claim, NOW + MAX_CLOCK_SKEW).is_ok());
}

#[test]
fn secret_is_single_use() {
    let f = fixture();
    let offer = PairingOffer::new(f.device.public(), HINT, None, NOW + 600).unwrap();
    let link = offer.to_link();
    let mut dev = DevicePairing::new(offer, &f.device, f.kem.public()).unwrap();
    let inv = PairingInvite::from_link(&link, NOW).unwrap();
    let (answer, _) = answer_for(&mut dev, inv, &f.wallet, NOW);
    dev.handle_answer(&answer, NOW).unwrap();
    // A second wallet scanned the same QR code: refused at the claim and at the answer.
    let bob = SigningIdentity::from_seed(&[4; 32]);
    let inv = PairingInvite::from_link(&link, NOW).unwrap();
    let (claim, _) = WalletPairing::start(inv, &bob, NOW).unwrap();
    assert_eq!(
        dev.handle_claim(&claim, NOW).unwrap_err(),
        PairingError::SecretSpent
    );
    assert_eq!(dev.pending_challenges(), 0);
}

#[test]
fn two_wallets_race_only_one_wins() {
    let f = fixture();
    let bob = SigningIdentity::from_seed(&[4; 32]);
    let offer = PairingOffer::new(f.device.public(), HINT, None, NOW + 600).unwrap();
    let link = offer.to_link();
    let mut dev = DevicePairing::new(offer, &f.device, f.kem.public()).unwrap();
    let (a1, _) = answer_for(
        &mut dev,
        PairingInvite::from_link(&link, NOW).unwrap(),
        &f.wallet,
        NOW,
    );
    let (a2, _) = answer_for(
        &mut dev,
        PairingInvite::from_link(&link, NOW).unwrap(),
        &bob,
        NOW,
    );
    assert_eq!(dev.pending_challenges(), 2);
    let (_, owner) = dev.handle_answer(&a2, NOW).unwrap();
    assert_eq!(owner.owner, bob.public());
    assert_eq!(
        dev.handle_answer(&a1, NOW).unwrap_err(),
        PairingError::SecretSpent
    );
}

#[test]
fn attempt_limit_burns_the_offer() {
    let f = fixture();
    let (mut dev, right) = offer(&f, 600);
    for i in 1..=MAX_FAILED_ATTEMPTS {
        let (_d, wrong) = offer(&f, 600);
        let (answer, awaiting) = answer_for(&mut dev, wrong, &f.wallet, NOW);
        assert_eq!(
            dev.handle_answer(&answer, NOW).unwrap_err(),
            PairingError::BadProof
        );
        assert_eq!(dev.failed_attempts(), i);
        let expected = if i == MAX_FAILED_ATTEMPTS {
            RejectReason::TooManyAttempts
        } else {
            RejectReason::BadProof
        };
        let rej = dev.take_rejection().unwrap();
        assert_eq!(
            awaiting.on_result(&rej).unwrap_err().error,
            PairingError::Rejected { reason: expected }
        );
    }
    assert_eq!(dev.status(), DeviceStatus::Burnt);
    // Even the right secret is now refused.
    let (claim, _) = WalletPairing::start(right, &f.wallet, NOW).unwrap();
    assert_eq!(
        dev.handle_claim(&claim, NOW).unwrap_err(),
        PairingError::TooManyAttempts
    );
}

#[test]
fn pending_challenges_are_bounded_and_claims_idempotent() {
    let f = fixture();
    let link = {
        let o = PairingOffer::new(f.device.public(), HINT, None, NOW + 600).unwrap();
        let l = o.to_link();
        let dev = DevicePairing::new(o, &f.device, f.kem.public()).unwrap();
        (l, dev)
    };
    let (link, mut dev) = link;
    let (claim, waiting) = WalletPairing::start(
        PairingInvite::from_link(&link, NOW).unwrap(),
        &f.wallet,
        NOW,
    )
    .unwrap();
    let ch1 = dev.handle_claim(&claim, NOW).unwrap();
    // A repeated (or replayed) claim gets the same challenge, no new slot.
    assert_eq!(dev.handle_claim(&claim, NOW + 1).unwrap(), ch1);
    assert_eq!(dev.pending_challenges(), 1);
    // Flood with claims from throw-away keys: the map stays bounded, the oldest goes.
    for i in 0..10u8 {
        let eve = SigningIdentity::from_seed(&[100 + i; 32]);
        let inv = PairingInvite::from_link(&link, NOW).unwrap();
        let (c, _) = WalletPairing::start(inv, &eve, NOW).unwrap();
        dev.handle_claim(&c, NOW).unwrap();
        assert!(dev.pending_challenges() <= MAX_PENDING_CHALLENGES);
    }
    let (answer, _) = waiting.on_challenge(&ch1, &f.wallet, NOW).unwrap();
    assert_eq!(
        dev.handle_answer(&answer, NOW).unwrap_err(),
        PairingError::UnknownChallenge
    );
    // Expired challenges are pruned.
    assert_eq!(dev.pending_challenges(), MAX_PENDING_CHALLENGES);
    let inv = PairingInvite::from_link(&link, NOW).unwrap();
    let (c, _) = WalletPairing::start(inv, &f.wallet, NOW + CHALLENGE_TTL).unwrap();
    dev.handle_claim(&c, NOW + CHALLENGE_TTL).unwrap();
    assert_eq!(dev.pending_challenges(), 1);
}

#[test]
fn result_replay_and_misdirection_fail() {
    let f = fixture();
    // First pairing of the wallet with this device.
    let (mut dev, invite) = offer(&f, 600);
    let (answer, _) = answer_for(&mut dev, invite, &f.wallet, NOW);
    let (old_result, _) = dev.handle_answer(&answer, NOW).unwrap();
    // Later re-pairing: the old Accepted result must not complete it.
    let (mut dev2, invite2) = offer(&f, 600);
    let (answer2, awaiting) = answer_for(&mut dev2, invite2, &f.wallet, NOW + 50);
    let e = awaiting.on_result(&old_result).unwrap_err();
    assert_eq!(e.error, PairingError::UnknownChallenge);
    let (result2, _) = dev2.handle_answer(&answer2, NOW + 51).unwrap();
    assert!(e.state.on_result(&result2).is_ok());
}

#[test]
fn offer_validation_and_device_identity() {
    let f = fixture();
    let long = "x".repeat(MAX_BROKER_HINT + 1);
    assert_eq!(
        PairingOffer::new(f.device.public(), &long, None, NOW).unwrap_err(),
        PairingError::InvalidInput("broker hint")
    );
    assert!(PairingOffer::new(f.device.public(), "", None, NOW).is_err());
    assert!(PairingOffer::new(f.device.public(), HINT, Some(""), NOW).is_err());
    assert!(PairingOffer::new(f.device.public(), HINT, Some("a\nb"), NOW).is_err());
    let l64 = "é".repeat(32);
    let o = PairingOffer::new(f.device.public(), &"h".repeat(200), Some(&l64), NOW + 1).unwrap();
    assert_eq!(o.to_bytes().len(), MAX_QR_PAYLOAD);
    assert!(o.to_link().len() <= MAX_LINK_LEN);
    // The device must use the identity the offer names.
    let other = SigningIdentity::from_seed(&[8; 32]);
    assert_eq!(
        DevicePairing::new(o, &other, f.kem.public()).unwrap_err(),
        PairingError::WrongDevice
    );
    // Debug output never shows the secret.
    let o = PairingOffer::with_secret(
        f.device.public(),
        HINT,
        None,
        NOW + 1,
        Zeroizing::new([0xAB; 16]),
    )
    .unwrap();
    assert!(!format!("{o:?}").contains("ab, ab") && !format!("{o:?}").contains("171"));
    let inv = PairingInvite::from_bytes(&o.to_bytes(), NOW).unwrap();
    assert!(!format!("{inv:?}").contains("171"));
}

#[test]
fn ml_kem_device_key_pairs_too() {
    let f = fixture();
    let kem = KemSecretKey::from_seed(KemSuite::X25519MlKem768, &[6; 32]);
    let offer = PairingOffer::new(f.device.public(), HINT, None, NOW + 600).unwrap();
    let invite = PairingInvite::from_link(&offer.to_link(), NOW).unwrap();
    let mut dev = DevicePairing::new(offer, &f.device, kem.public()).unwrap();
    let (claim, waiting) = WalletPairing::start(invite, &f.wallet, NOW).unwrap();
    let ch = dev.handle_claim(&claim, NOW).unwrap();
    assert!(ch.len() <= MAX_CHALLENGE_LEN);
    let (answer, awaiting) = waiting.on_challenge(&ch, &f.wallet, NOW).unwrap();
    let (result, _) = dev.handle_answer(&answer, NOW).unwrap();
    assert_eq!(
        &awaiting.on_result(&result).unwrap().device_kem,
        kem.public()
    );
}

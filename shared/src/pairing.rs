//! Pairing a device with its owner: the QR payload and the
//! claim → challenge → answer → result exchange (spec: docs/PROTOCOL.md (Pairing)).
//!
//! The device (the Pi at the meter) shows a QR code holding its Ed25519 key and a fresh
//! 128-bit one-time secret. The owner's wallet scans it and proves knowledge of the secret
//! over the (hostile) broker without ever sending it: the proof is a keyed BLAKE3 MAC bound
//! to both identities, both nonces, the device's KEM key and the whole QR payload. Every
//! message is signed; the wallet checks the device's signatures against the key from the
//! QR, the device checks that the answer is signed by the wallet its challenge was issued to.
//!
//! States are types:
//! - device: [`PairingOffer`] → [`DevicePairing`] (owns the offer) → [`PairedOwner`];
//!   after success the offer is dropped (secret zeroized), after
//!   [`MAX_FAILED_ATTEMPTS`] wrong proofs it is burnt;
//! - wallet: [`PairingInvite`] → [`WalletPairing::start`] → [`AwaitingChallenge`] →
//!   [`AwaitingResult`] → [`PairedDevice`]. A failed step hands the state back
//!   ([`StepError`]) so an injected bogus message cannot derail a genuine pairing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::crypto::{
    CryptoError, KemPublicKey, KemSuite, OpaqueId, PublicId, SIGNATURE_LEN, SYMMETRIC_SUITE,
    SigningIdentity, ct_eq, hash, random_bytes,
};
use crate::wire::{Reader, WireError, Writer};

// ---------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------

/// Message type of the QR payload.
pub const MSG_QR: u8 = 0x20;
/// Message type of a claim (wallet → device).
pub const MSG_CLAIM: u8 = 0x21;
/// Message type of a challenge (device → wallet).
pub const MSG_CHALLENGE: u8 = 0x22;
/// Message type of an answer (wallet → device).
pub const MSG_ANSWER: u8 = 0x23;
/// Message type of a result (device → wallet).
pub const MSG_RESULT: u8 = 0x24;

/// One-time secret in the QR code: 128 bits from the CSPRNG.
pub const SECRET_LEN: usize = 16;
pub const WALLET_NONCE_LEN: usize = 16;
pub const DEVICE_NONCE_LEN: usize = 32;
pub const PROOF_LEN: usize = 32;
/// Longest broker hint (UTF-8 bytes).
pub const MAX_BROKER_HINT: usize = 200;
/// Longest device label (UTF-8 bytes).
pub const MAX_LABEL: usize = 64;
/// Longest accepted `p1consent://pair?...` link (bytes).
pub const MAX_LINK_LEN: usize = 1024;
/// Everything before the base64url payload in a link.
pub const LINK_PREFIX: &str = "p1consent://pair?v=1&d=";
/// A challenge is valid this long (seconds), and never past the offer's expiry.
pub const CHALLENGE_TTL: u64 = 120;
/// How far a claim's timestamp may be from the device's clock (seconds).
pub const MAX_CLOCK_SKEW: u64 = 300;
/// Outstanding challenges a device keeps; the oldest is evicted beyond this.
pub const MAX_PENDING_CHALLENGES: usize = 4;
/// Wrong proofs after which the offer is burnt and a new QR code is needed.
pub const MAX_FAILED_ATTEMPTS: u32 = 5;
/// Suggested lifetime of a QR code (seconds).
pub const DEFAULT_OFFER_TTL: u64 = 600;

const HEADER_LEN: usize = 3;
const ID_LEN: usize = 32;
/// Largest QR payload: header, device key, secret, expiry, hint, label flag, label.
pub const MAX_QR_PAYLOAD: usize =
    HEADER_LEN + ID_LEN + SECRET_LEN + 8 + 2 + MAX_BROKER_HINT + 1 + 2 + MAX_LABEL;
/// Exact size of a claim.
pub const CLAIM_LEN: usize = HEADER_LEN + ID_LEN + ID_LEN + WALLET_NONCE_LEN + 8 + SIGNATURE_LEN;
/// Upper bound for a challenge (the largest KEM public key is X25519+ML-KEM-768, 1217 bytes).
pub const MAX_CHALLENGE_LEN: usize = 1536;
/// Exact size of an answer.
pub const ANSWER_LEN: usize =
    HEADER_LEN + ID_LEN + ID_LEN + DEVICE_NONCE_LEN + PROOF_LEN + SIGNATURE_LEN;
/// Exact size of a result.
pub const RESULT_LEN: usize =
    HEADER_LEN + ID_LEN + ID_LEN + DEVICE_NONCE_LEN + 1 + 1 + 8 + SIGNATURE_LEN;

const LABEL_OFFER_HASH: &str = "p1consent/v1/pairing/offer";
const LABEL_PROOF_KEY: &str = "p1consent/v1/pairing/proof-key";
const LABEL_PROOF: &str = "p1consent/v1/pairing/proof";
const SIG_CLAIM: &str = "p1consent/v1/pairing/claim";
const SIG_CHALLENGE: &str = "p1consent/v1/pairing/challenge";
const SIG_ANSWER: &str = "p1consent/v1/pairing/answer";
const SIG_RESULT: &str = "p1consent/v1/pairing/result";

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Why a pairing link could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum LinkError {
    #[error("link longer than {MAX_LINK_LEN} bytes")]
    TooLong,
    #[error("not a p1consent://pair link")]
    BadScheme,
    #[error("link parameters must be exactly v=1&d=<payload>")]
    BadParams,
    #[error("unsupported pairing link version")]
    UnsupportedVersion,
    #[error("payload is not unpadded base64url")]
    BadBase64,
}

/// Why the device refused an answer (carried, signed, in a rejected result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RejectReason {
    /// The proof did not match the one-time secret.
    BadProof = 1,
    /// Too many wrong proofs: the QR code is burnt, show a new one.
    TooManyAttempts = 2,
    /// The answer came after the challenge expired.
    ChallengeExpired = 3,
}

impl RejectReason {
    pub fn from_byte(b: u8) -> Result<Self, WireError> {
        match b {
            1 => Ok(Self::BadProof),
            2 => Ok(Self::TooManyAttempts),
            3 => Ok(Self::ChallengeExpired),
            _ => Err(WireError::Invalid {
                field: "reject reason",
                reason: "unknown code",
            }),
        }
    }
}

/// Everything that can go wrong while pairing. Deliberately coarse where secrets are
/// involved: a wrong proof is only ever `BadProof`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PairingError {
    #[error("bad pairing link: {0}")]
    BadLink(#[from] LinkError),
    #[error("malformed message: {0}")]
    Malformed(#[from] WireError),
    /// A locally supplied value is out of range (e.g. a broker hint over 200 bytes).
    #[error("invalid {0}")]
    InvalidInput(&'static str),
    #[error("the pairing offer (QR code) has expired")]
    Expired,
    #[error("claim timestamp too far from the device clock")]
    ClockSkew,
    #[error("signature does not verify")]
    BadSignature,
    #[error("message is for or from a different device")]
    WrongDevice,
    #[error("message is for or from a different wallet")]
    WrongWallet,
    #[error("unknown challenge (replayed or never issued)")]
    UnknownChallenge,
    #[error("challenge expired")]
    ChallengeExpired,
    #[error("proof does not match the one-time secret")]
    BadProof,
    #[error("the one-time secret was already used; show a new QR code")]
    SecretSpent,
    #[error("too many failed attempts; show a new QR code")]
    TooManyAttempts,
    #[error("device rejected the pairing: {reason:?}")]
    Rejected { reason: RejectReason },
}

impl From<CryptoError> for PairingError {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::BadSignature => Self::BadSignature,
            CryptoError::Wire(w) => Self::Malformed(w),
            _ => Self::Malformed(WireError::Invalid {
                field: "public key",
                reason: "not a valid key",
            }),
        }
    }
}

/// A failed step of the wallet's state machine: the error, and the unchanged state (boxed,
/// to keep `Result` small) so the wallet can keep waiting for the genuine message.
pub struct StepError<S> {
    pub state: Box<S>,
    pub error: PairingError,
}

impl<S> StepError<S> {
    fn new(state: S, error: PairingError) -> Self {
        Self {
            state: Box::new(state),
            error,
        }
    }
    pub fn into_error(self) -> PairingError {
        self.error
    }
    pub fn into_state(self) -> S {
        *self.state
    }
}

impl<S> std::fmt::Debug for StepError<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StepError({:?})", self.error)
    }
}

impl<S> std::fmt::Display for StepError<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl<S> std::error::Error for StepError<S> {}

// ---------------------------------------------------------------------------------------
// The one-time secret and the proof
// ---------------------------------------------------------------------------------------

#[derive(Clone, Zeroize, ZeroizeOnDrop)]
struct OfferSecret([u8; SECRET_LEN]);

impl OfferSecret {
    /// proof = BLAKE3-keyed(K, parts), K = BLAKE3-derive-key(LABEL_PROOF_KEY, secret).
    #[allow(clippy::too_many_arguments)]
    fn proof(
        &self,
        offer_hash: &[u8; 32],
        device: &PublicId,
        wallet: &PublicId,
        wallet_nonce: &[u8; WALLET_NONCE_LEN],
        device_nonce: &[u8; DEVICE_NONCE_LEN],
        kem_fingerprint: &[u8; 32],
        challenge_expires_at: u64,
    ) -> [u8; PROOF_LEN] {
        let key = Zeroizing::new(blake3::derive_key(LABEL_PROOF_KEY, &self.0));
        let mut h = blake3::Hasher::new_keyed(&key);
        let expiry = challenge_expires_at.to_be_bytes();
        let parts: [&[u8]; 8] = [
            LABEL_PROOF.as_bytes(),
            offer_hash,
            device.as_bytes(),
            wallet.as_bytes(),
            wallet_nonce,
            device_nonce,
            kem_fingerprint,
            &expiry,
        ];
        for p in parts {
            h.update(&(p.len() as u64).to_be_bytes());
            h.update(p);
        }
        *h.finalize().as_bytes()
    }
}

fn offer_hash(payload: &[u8]) -> [u8; 32] {
    hash(LABEL_OFFER_HASH, &[payload])
}

// ---------------------------------------------------------------------------------------
// QR payload and link
// ---------------------------------------------------------------------------------------

fn check_text(field: &'static str, s: &str, max: usize) -> Result<(), WireError> {
    if s.is_empty() || s.len() > max {
        return Err(WireError::Invalid {
            field,
            reason: "length must be 1..=limit",
        });
    }
    if s.chars().any(char::is_control) {
        return Err(WireError::Invalid {
            field,
            reason: "control characters",
        });
    }
    Ok(())
}

fn encode_payload(
    device: &PublicId,
    secret: &OfferSecret,
    expires_at: u64,
    broker_hint: &str,
    label: Option<&str>,
) -> Zeroizing<Vec<u8>> {
    let mut w = Writer::with_header(MSG_QR, SYMMETRIC_SUITE);
    w.raw(device.as_bytes())
        .raw(&secret.0)
        .u64(expires_at)
        .str16(broker_hint);
    match label {
        None => w.u8(0),
        Some(l) => w.u8(1).str16(l),
    };
    Zeroizing::new(w.into_bytes())
}

/// The device's side of a QR code: holds the one-time secret (zeroized on drop).
pub struct PairingOffer {
    device: PublicId,
    secret: OfferSecret,
    expires_at: u64,
    broker_hint: String,
    label: Option<String>,
    payload: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for PairingOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairingOffer")
            .field("device", &self.device)
            .field("expires_at", &self.expires_at)
            .field("broker_hint", &self.broker_hint)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl PairingOffer {
    /// A fresh offer with a secret from the OS CSPRNG. `broker_hint` is 1..=200 bytes of
    /// UTF-8 (e.g. `mqtt://192.168.1.20:1883`), `label` 1..=64, no control characters.
    pub fn new(
        device: PublicId,
        broker_hint: &str,
        label: Option<&str>,
        expires_at: u64,
    ) -> Result<Self, PairingError> {
        Self::with_secret(
            device,
            broker_hint,
            label,
            expires_at,
            Zeroizing::new(random_bytes()),
        )
    }

    /// Deterministic form for test vectors. Never use a fixed secret in production.
    #[doc(hidden)]
    pub fn with_secret(
        device: PublicId,
        broker_hint: &str,
        label: Option<&str>,
        expires_at: u64,
        secret: Zeroizing<[u8; SECRET_LEN]>,
    ) -> Result<Self, PairingError> {
        check_text("broker hint", broker_hint, MAX_BROKER_HINT)
            .map_err(|_| PairingError::InvalidInput("broker hint"))?;
        if let Some(l) = label {
            check_text("label", l, MAX_LABEL).map_err(|_| PairingError::InvalidInput("label"))?;
        }
        let secret = OfferSecret(*secret);
        let payload = encode_payload(&device, &secret, expires_at, broker_hint, label);
        Ok(Self {
            device,
            secret,
            expires_at,
            broker_hint: broker_hint.to_owned(),
            label: label.map(str::to_owned),
            payload,
        })
    }

    pub fn device(&self) -> PublicId {
        self.device
    }
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }
    pub fn broker_hint(&self) -> &str {
        &self.broker_hint
    }
    pub fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }
    /// The binary QR payload (contains the secret: show it, never log or publish it).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        self.payload.clone()
    }
    /// `p1consent://pair?v=1&d=<base64url, no padding>` (contains the secret).
    pub fn to_link(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::with_capacity(
            LINK_PREFIX.len() + self.payload.len().div_ceil(3) * 4,
        ));
        s.push_str(LINK_PREFIX);
        URL_SAFE_NO_PAD.encode_string(&self.payload[..], &mut s);
        s
    }
}

/// Extracts the binary payload from a pairing link. Strict: lowercase scheme, exactly
/// `v=1` then `d=`, unpadded canonical base64url, at most [`MAX_LINK_LEN`] bytes.
pub fn decode_link(link: &str) -> Result<Zeroizing<Vec<u8>>, LinkError> {
    if link.len() > MAX_LINK_LEN {
        return Err(LinkError::TooLong);
    }
    let query = link
        .strip_prefix("p1consent://pair?")
        .ok_or(LinkError::BadScheme)?;
    let mut params = query.split('&');
    let (Some(v), Some(d), None) = (params.next(), params.next(), params.next()) else {
        return Err(LinkError::BadParams);
    };
    let v = v.strip_prefix("v=").ok_or(LinkError::BadParams)?;
    let d = d.strip_prefix("d=").ok_or(LinkError::BadParams)?;
    if v != "1" {
        return Err(LinkError::UnsupportedVersion);
    }
    if d.is_empty() {
        return Err(LinkError::BadParams);
    }
    URL_SAFE_NO_PAD
        .decode(d)
        .map(Zeroizing::new)
        .map_err(|_| LinkError::BadBase64)
}

/// The wallet's side of a scanned QR code (holds the secret; zeroized on drop).
pub struct PairingInvite {
    device: PublicId,
    secret: OfferSecret,
    expires_at: u64,
    broker_hint: String,
    label: Option<String>,
    offer_hash: [u8; 32],
}

/// Another name for [`PairingInvite`]: what the wallet holds after scanning.
pub type ScannedOffer = PairingInvite;

impl std::fmt::Debug for PairingInvite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairingInvite")
            .field("device", &self.device)
            .field("expires_at", &self.expires_at)
            .field("broker_hint", &self.broker_hint)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl PairingInvite {
    /// Parses a scanned or typed link; fails with `Expired` if `now >= expires_at`.
    pub fn from_link(link: &str, now: u64) -> Result<Self, PairingError> {
        let payload = decode_link(link)?;
        Self::from_bytes(&payload, now)
    }

    /// Parses a binary QR payload; fails with `Expired` if `now >= expires_at`.
    pub fn from_bytes(payload: &[u8], now: u64) -> Result<Self, PairingError> {
        let invite = Self::decode(payload)?;
        if now >= invite.expires_at {
            return Err(PairingError::Expired);
        }
        Ok(invite)
    }

    fn decode(payload: &[u8]) -> Result<Self, PairingError> {
        let (mut r, suite) = Reader::with_header(payload, MSG_QR, MAX_QR_PAYLOAD)?;
        if suite != SYMMETRIC_SUITE {
            return Err(WireError::UnsupportedSuite(suite).into());
        }
        let device = PublicId::read(&mut r)?;
        let secret = OfferSecret(r.array()?);
        let expires_at = r.u64()?;
        let hint = r.str16("broker hint", MAX_BROKER_HINT)?;
        check_text("broker hint", hint, MAX_BROKER_HINT)?;
        let label = match r.u8()? {
            0 => None,
            1 => {
                let l = r.str16("label", MAX_LABEL)?;
                check_text("label", l, MAX_LABEL)?;
                Some(l.to_owned())
            }
            _ => {
                return Err(WireError::Invalid {
                    field: "label flag",
                    reason: "must be 0 or 1",
                }
                .into());
            }
        };
        r.finish()?;
        Ok(Self {
            device,
            secret,
            expires_at,
            broker_hint: hint.to_owned(),
            label,
            offer_hash: offer_hash(payload),
        })
    }

    pub fn device(&self) -> PublicId {
        self.device
    }
    /// The device's opaque id (for its pairing topic).
    pub fn device_opaque_id(&self) -> OpaqueId {
        self.device.opaque_id()
    }
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }
    pub fn broker_hint(&self) -> &str {
        &self.broker_hint
    }
    pub fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }
}

// ---------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------

fn signed_input(label: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(label.len() + 1 + body.len());
    m.extend_from_slice(label.as_bytes());
    m.push(0);
    m.extend_from_slice(body);
    m
}

fn sign_into(w: Writer, label: &str, signer: &SigningIdentity) -> Vec<u8> {
    let mut body = w.into_bytes();
    let sig = signer.sign(&signed_input(label, &body));
    body.extend_from_slice(&sig);
    body
}

/// Reads the trailing signature, checks nothing follows, verifies it over everything
/// before it.
fn verify_tail(mut r: Reader<'_>, label: &str, signer: &PublicId) -> Result<(), PairingError> {
    let body = r.consumed();
    let sig: [u8; SIGNATURE_LEN] = r.array()?;
    r.finish()?;
    signer.verify(&signed_input(label, body), &sig)?;
    Ok(())
}

fn expect_suite(suite: u8) -> Result<(), PairingError> {
    if suite == SYMMETRIC_SUITE {
        Ok(())
    } else {
        Err(WireError::UnsupportedSuite(suite).into())
    }
}

/// Claim (0x21), wallet → device: "I, `wallet`, want to pair with `device`".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub device: PublicId,
    pub wallet: PublicId,
    pub wallet_nonce: [u8; WALLET_NONCE_LEN],
    pub time: u64,
}

impl Claim {
    fn encode(&self, wallet: &SigningIdentity) -> Vec<u8> {
        let mut w = Writer::with_header(MSG_CLAIM, SYMMETRIC_SUITE);
        w.raw(self.device.as_bytes())
            .raw(self.wallet.as_bytes())
            .raw(&self.wallet_nonce)
            .u64(self.time);
        sign_into(w, SIG_CLAIM, wallet)
    }

    /// Parses and verifies the signature by the wallet key the claim carries.
    pub fn decode(bytes: &[u8]) -> Result<Self, PairingError> {
        let (mut r, suite) = Reader::with_header(bytes, MSG_CLAIM, CLAIM_LEN)?;
        expect_suite(suite)?;
        let c = Self {
            device: PublicId::read(&mut r)?,
            wallet: PublicId::read(&mut r)?,
            wallet_nonce: r.array()?,
            time: r.u64()?,
        };
        verify_tail(r, SIG_CLAIM, &c.wallet)?;
        Ok(c)
    }
}

/// Challenge (0x22), device → wallet. The header's suite byte is the KEM suite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub device: PublicId,
    pub wallet: PublicId,
    pub wallet_nonce: [u8; WALLET_NONCE_LEN],
    pub device_nonce: [u8; DEVICE_NONCE_LEN],
    pub expires_at: u64,
    pub device_kem: KemPublicKey,
}

impl Challenge {
    fn encode(&self, device: &SigningIdentity) -> Vec<u8> {
        let mut w = Writer::with_header(MSG_CHALLENGE, self.device_kem.suite() as u8);
        w.raw(self.device.as_bytes())
            .raw(self.wallet.as_bytes())
            .raw(&self.wallet_nonce)
            .raw(&self.device_nonce)
            .u64(self.expires_at);
        self.device_kem.write(&mut w);
        sign_into(w, SIG_CHALLENGE, device)
    }

    /// Parses and verifies the signature by the device key the challenge carries.
    pub fn decode(bytes: &[u8]) -> Result<Self, PairingError> {
        let (mut r, suite) = Reader::with_header(bytes, MSG_CHALLENGE, MAX_CHALLENGE_LEN)?;
        let suite = KemSuite::from_byte(suite)?;
        let c = Self {
            device: PublicId::read(&mut r)?,
            wallet: PublicId::read(&mut r)?,
            wallet_nonce: r.array()?,
            device_nonce: r.array()?,
            expires_at: r.u64()?,
            device_kem: KemPublicKey::read(&mut r)?,
        };
        if c.device_kem.suite() != suite {
            return Err(WireError::Invalid {
                field: "suite",
                reason: "header suite differs from the KEM key's suite",
            }
            .into());
        }
        verify_tail(r, SIG_CHALLENGE, &c.device)?;
        Ok(c)
    }
}

/// Answer (0x23), wallet → device: the proof of the one-time secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub device: PublicId,
    pub wallet: PublicId,
    pub device_nonce: [u8; DEVICE_NONCE_LEN],
    pub proof: [u8; PROOF_LEN],
}

impl Answer {
    fn encode(&self, wallet: &SigningIdentity) -> Vec<u8> {
        let mut w = Writer::with_header(MSG_ANSWER, SYMMETRIC_SUITE);
        w.raw(self.device.as_bytes())
            .raw(self.wallet.as_bytes())
            .raw(&self.device_nonce)
            .raw(&self.proof);
        sign_into(w, SIG_ANSWER, wallet)
    }

    /// Parses and verifies the signature by the wallet key the answer carries.
    pub fn decode(bytes: &[u8]) -> Result<Self, PairingError> {
        let (mut r, suite) = Reader::with_header(bytes, MSG_ANSWER, ANSWER_LEN)?;
        expect_suite(suite)?;
        let a = Self {
            device: PublicId::read(&mut r)?,
            wallet: PublicId::read(&mut r)?,
            device_nonce: r.array()?,
            proof: r.array()?,
        };
        verify_tail(r, SIG_ANSWER, &a.wallet)?;
        Ok(a)
    }
}

/// Outcome carried by a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Rejected(RejectReason),
}

/// Result (0x24), device → wallet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairingResult {
    pub device: PublicId,
    pub wallet: PublicId,
    pub device_nonce: [u8; DEVICE_NONCE_LEN],
    pub outcome: Outcome,
    /// Device clock when it decided (the pairing time if accepted).
    pub time: u64,
}

impl PairingResult {
    fn encode(&self, device: &SigningIdentity) -> Vec<u8> {
        let (outcome, reason) = match self.outcome {
            Outcome::Accepted => (0, 0),
            Outcome::Rejected(r) => (1, r as u8),
        };
        let mut w = Writer::with_header(MSG_RESULT, SYMMETRIC_SUITE);
        w.raw(self.device.as_bytes())
            .raw(self.wallet.as_bytes())
            .raw(&self.device_nonce)
            .u8(outcome)
            .u8(reason)
            .u64(self.time);
        sign_into(w, SIG_RESULT, device)
    }

    /// Parses and verifies the signature by the device key the result carries.
    pub fn decode(bytes: &[u8]) -> Result<Self, PairingError> {
        let (mut r, suite) = Reader::with_header(bytes, MSG_RESULT, RESULT_LEN)?;
        expect_suite(suite)?;
        let device = PublicId::read(&mut r)?;
        let wallet = PublicId::read(&mut r)?;
        let device_nonce = r.array()?;
        let outcome = match (r.u8()?, r.u8()?) {
            (0, 0) => Outcome::Accepted,
            (1, code) => Outcome::Rejected(RejectReason::from_byte(code)?),
            _ => {
                return Err(WireError::Invalid {
                    field: "outcome",
                    reason: "must be 0/0 (accepted) or 1/reason",
                }
                .into());
            }
        };
        let res = Self {
            device,
            wallet,
            device_nonce,
            outcome,
            time: r.u64()?,
        };
        verify_tail(r, SIG_RESULT, &res.device)?;
        Ok(res)
    }
}

// ---------------------------------------------------------------------------------------
// Device side
// ---------------------------------------------------------------------------------------

/// The owner the device is now paired with. Only a successful
/// [`DevicePairing::handle_answer`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairedOwner {
    pub owner: PublicId,
    pub paired_at: u64,
}

/// Where a device's pairing stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceStatus {
    /// Waiting for claims and answers.
    Open,
    /// Paired; the secret is spent (and zeroized).
    Paired,
    /// Too many wrong proofs; the secret is zeroized, a new QR code is needed.
    Burnt,
}

struct PendingChallenge {
    wallet: PublicId,
    wallet_nonce: [u8; WALLET_NONCE_LEN],
    device_nonce: [u8; DEVICE_NONCE_LEN],
    expires_at: u64,
    bytes: Vec<u8>,
}

struct OpenOffer {
    offer: PairingOffer,
    offer_hash: [u8; 32],
    /// Oldest first.
    pending: Vec<PendingChallenge>,
}

enum DeviceState {
    Open(Box<OpenOffer>),
    Paired,
    Burnt,
}

/// The device's pairing state machine. Owns the offer; the secret is dropped (zeroized)
/// as soon as the pairing succeeds or is burnt.
pub struct DevicePairing {
    identity: SigningIdentity,
    kem: KemPublicKey,
    kem_fingerprint: [u8; 32],
    state: DeviceState,
    failed_attempts: u32,
    rejection: Option<Vec<u8>>,
}

impl std::fmt::Debug for DevicePairing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevicePairing")
            .field("device", &self.identity.public())
            .field("status", &self.status())
            .field("failed_attempts", &self.failed_attempts)
            .finish_non_exhaustive()
    }
}

impl DevicePairing {
    /// Takes ownership of the offer. `device` must be the identity the offer names; the
    /// KEM public key is handed to the owner in the challenge.
    pub fn new(
        offer: PairingOffer,
        device: &SigningIdentity,
        kem: &KemPublicKey,
    ) -> Result<Self, PairingError> {
        if offer.device != device.public() {
            return Err(PairingError::WrongDevice);
        }
        let offer_hash = offer_hash(&offer.payload);
        Ok(Self {
            identity: SigningIdentity::from_seed(&device.to_seed()),
            kem: kem.clone(),
            kem_fingerprint: kem.fingerprint(),
            state: DeviceState::Open(Box::new(OpenOffer {
                offer,
                offer_hash,
                pending: Vec::new(),
            })),
            failed_attempts: 0,
            rejection: None,
        })
    }

    pub fn device(&self) -> PublicId {
        self.identity.public()
    }
    pub fn status(&self) -> DeviceStatus {
        match self.state {
            DeviceState::Open(_) => DeviceStatus::Open,
            DeviceState::Paired => DeviceStatus::Paired,
            DeviceState::Burnt => DeviceStatus::Burnt,
        }
    }
    /// Wrong proofs so far (for the agent's rate limiting and display).
    pub fn failed_attempts(&self) -> u32 {
        self.failed_attempts
    }
    /// Challenges issued and not yet answered or expired (as of the last call).
    pub fn pending_challenges(&self) -> usize {
        match &self.state {
            DeviceState::Open(o) => o.pending.len(),
            _ => 0,
        }
    }
    /// After a failed [`Self::handle_answer`] whose answer was authentically signed by the
    /// wallet the challenge was issued to: a signed `Rejected` result to publish.
    pub fn take_rejection(&mut self) -> Option<Vec<u8>> {
        self.rejection.take()
    }

    fn closed_error(&self) -> PairingError {
        match self.state {
            DeviceState::Burnt => PairingError::TooManyAttempts,
            _ => PairingError::SecretSpent,
        }
    }

    /// Handles a claim; returns the signed challenge to publish. Re-sending the same claim
    /// returns the same challenge; at most [`MAX_PENDING_CHALLENGES`] are kept (oldest
    /// evicted).
    pub fn handle_claim(&mut self, claim: &[u8], now: u64) -> Result<Vec<u8>, PairingError> {
        self.handle_claim_with_nonce(claim, now, random_bytes())
    }

    /// Deterministic form for test vectors.
    #[doc(hidden)]
    pub fn handle_claim_with_nonce(
        &mut self,
        claim: &[u8],
        now: u64,
        device_nonce: [u8; DEVICE_NONCE_LEN],
    ) -> Result<Vec<u8>, PairingError> {
        let me = self.identity.public();
        let DeviceState::Open(open) = &mut self.state else {
            return Err(self.closed_error());
        };
        if now >= open.offer.expires_at {
            return Err(PairingError::Expired);
        }
        let claim = Claim::decode(claim)?;
        if claim.device != me {
            return Err(PairingError::WrongDevice);
        }
        if claim.time.abs_diff(now) > MAX_CLOCK_SKEW {
            return Err(PairingError::ClockSkew);
        }
        open.pending.retain(|p| p.expires_at > now);
        if let Some(p) = open
            .pending
            .iter()
            .find(|p| p.wallet == claim.wallet && p.wallet_nonce == claim.wallet_nonce)
        {
            return Ok(p.bytes.clone());
        }
        if open.pending.len() >= MAX_PENDING_CHALLENGES {
            open.pending.remove(0);
        }
        let challenge = Challenge {
            device: me,
            wallet: claim.wallet,
            wallet_nonce: claim.wallet_nonce,
            device_nonce,
            expires_at: now.saturating_add(CHALLENGE_TTL).min(open.offer.expires_at),
            device_kem: self.kem.clone(),
        };
        let bytes = challenge.encode(&self.identity);
        open.pending.push(PendingChallenge {
            wallet: claim.wallet,
            wallet_nonce: claim.wallet_nonce,
            device_nonce,
            expires_at: challenge.expires_at,
            bytes: bytes.clone(),
        });
        Ok(bytes)
    }

    /// Handles an answer. On success returns the signed `Accepted` result to publish and
    /// the new owner; the secret is then spent. A wrong proof counts as a failed attempt.
    pub fn handle_answer(
        &mut self,
        answer: &[u8],
        now: u64,
    ) -> Result<(Vec<u8>, PairedOwner), PairingError> {
        self.rejection = None;
        let me = self.identity.public();
        let DeviceState::Open(open) = &mut self.state else {
            return Err(self.closed_error());
        };
        let answer = Answer::decode(answer)?;
        if answer.device != me {
            return Err(PairingError::WrongDevice);
        }
        let idx = open
            .pending
            .iter()
            .position(|p| p.device_nonce == answer.device_nonce)
            .ok_or(PairingError::UnknownChallenge)?;
        if open.pending[idx].wallet != answer.wallet {
            // Leave the challenge for its wallet: a third party must not cancel it.
            return Err(PairingError::WrongWallet);
        }
        let pending = open.pending.remove(idx);
        let reply = |outcome| PairingResult {
            device: me,
            wallet: answer.wallet,
            device_nonce: answer.device_nonce,
            outcome,
            time: now,
        };
        if now >= pending.expires_at {
            self.rejection = Some(
                reply(Outcome::Rejected(RejectReason::ChallengeExpired)).encode(&self.identity),
            );
            return Err(PairingError::ChallengeExpired);
        }
        let expected = open.offer.secret.proof(
            &open.offer_hash,
            &me,
            &answer.wallet,
            &pending.wallet_nonce,
            &pending.device_nonce,
            &self.kem_fingerprint,
            pending.expires_at,
        );
        if !ct_eq(&expected, &answer.proof) {
            self.failed_attempts = self.failed_attempts.saturating_add(1);
            let reason = if self.failed_attempts >= MAX_FAILED_ATTEMPTS {
                self.state = DeviceState::Burnt;
                RejectReason::TooManyAttempts
            } else {
                RejectReason::BadProof
            };
            self.rejection = Some(reply(Outcome::Rejected(reason)).encode(&self.identity));
            return Err(PairingError::BadProof);
        }
        let result = reply(Outcome::Accepted).encode(&self.identity);
        self.state = DeviceState::Paired;
        Ok((
            result,
            PairedOwner {
                owner: answer.wallet,
                paired_at: now,
            },
        ))
    }
}

// ---------------------------------------------------------------------------------------
// Wallet side
// ---------------------------------------------------------------------------------------

/// Entry point of the wallet's state machine.
pub struct WalletPairing;

impl WalletPairing {
    /// Consumes the scanned invite; returns the signed claim to publish on the device's
    /// pairing topic and the state waiting for the device's challenge.
    pub fn start(
        invite: PairingInvite,
        wallet: &SigningIdentity,
        now: u64,
    ) -> Result<(Vec<u8>, AwaitingChallenge), PairingError> {
        Self::start_with_nonce(invite, wallet, now, random_bytes())
    }

    /// Deterministic form for test vectors.
    #[doc(hidden)]
    pub fn start_with_nonce(
        invite: PairingInvite,
        wallet: &SigningIdentity,
        now: u64,
        wallet_nonce: [u8; WALLET_NONCE_LEN],
    ) -> Result<(Vec<u8>, AwaitingChallenge), PairingError> {
        if now >= invite.expires_at {
            return Err(PairingError::Expired);
        }
        let claim = Claim {
            device: invite.device,
            wallet: wallet.public(),
            wallet_nonce,
            time: now,
        };
        let bytes = claim.encode(wallet);
        Ok((
            bytes.clone(),
            AwaitingChallenge {
                invite,
                wallet: claim.wallet,
                wallet_nonce,
                claim: bytes,
            },
        ))
    }
}

/// The wallet has sent its claim and waits for the device's challenge.
pub struct AwaitingChallenge {
    invite: PairingInvite,
    wallet: PublicId,
    wallet_nonce: [u8; WALLET_NONCE_LEN],
    claim: Vec<u8>,
}

impl std::fmt::Debug for AwaitingChallenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwaitingChallenge")
            .field("device", &self.invite.device)
            .field("wallet", &self.wallet)
            .finish_non_exhaustive()
    }
}

impl AwaitingChallenge {
    /// The claim again, to re-publish if no challenge arrives (the device answers a
    /// repeated claim with the same challenge).
    pub fn claim_bytes(&self) -> &[u8] {
        &self.claim
    }

    /// Checks the challenge (signed by the device key from the QR code, for this wallet and
    /// this claim, not expired) and returns the signed answer to publish. `wallet` must be
    /// the identity that started the pairing. On error the state is handed back unchanged.
    pub fn on_challenge(
        self,
        challenge: &[u8],
        wallet: &SigningIdentity,
        now: u64,
    ) -> Result<(Vec<u8>, AwaitingResult), StepError<Self>> {
        match self.check_challenge(challenge, wallet, now) {
            Ok((answer, ch)) => {
                let result = AwaitingResult {
                    device: self.invite.device,
                    wallet: self.wallet,
                    device_nonce: ch.device_nonce,
                    device_kem: ch.device_kem,
                    broker_hint: self.invite.broker_hint.clone(),
                    label: self.invite.label.clone(),
                    answer: answer.clone(),
                };
                Ok((answer, result))
            }
            Err(error) => Err(StepError::new(self, error)),
        }
    }

    fn check_challenge(
        &self,
        bytes: &[u8],
        wallet: &SigningIdentity,
        now: u64,
    ) -> Result<(Vec<u8>, Challenge), PairingError> {
        if wallet.public() != self.wallet {
            return Err(PairingError::WrongWallet);
        }
        let ch = Challenge::decode(bytes)?;
        if ch.device != self.invite.device {
            return Err(PairingError::WrongDevice);
        }
        if ch.wallet != self.wallet {
            return Err(PairingError::WrongWallet);
        }
        if ch.wallet_nonce != self.wallet_nonce {
            return Err(PairingError::UnknownChallenge);
        }
        if now >= ch.expires_at {
            return Err(PairingError::ChallengeExpired);
        }
        let proof = self.invite.secret.proof(
            &self.invite.offer_hash,
            &ch.device,
            &self.wallet,
            &self.wallet_nonce,
            &ch.device_nonce,
            &ch.device_kem.fingerprint(),
            ch.expires_at,
        );
        let answer = Answer {
            device: ch.device,
            wallet: self.wallet,
            device_nonce: ch.device_nonce,
            proof,
        }
        .encode(wallet);
        Ok((answer, ch))
    }
}

/// The wallet has sent its answer and waits for the device's result. The secret is no
/// longer held.
pub struct AwaitingResult {
    device: PublicId,
    wallet: PublicId,
    device_nonce: [u8; DEVICE_NONCE_LEN],
    device_kem: KemPublicKey,
    broker_hint: String,
    label: Option<String>,
    answer: Vec<u8>,
}

impl std::fmt::Debug for AwaitingResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwaitingResult")
            .field("device", &self.device)
            .field("wallet", &self.wallet)
            .finish_non_exhaustive()
    }
}

/// A device the wallet is now paired with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairedDevice {
    pub device: PublicId,
    pub device_kem: KemPublicKey,
    pub broker_hint: String,
    pub label: Option<String>,
    /// The device's clock at acceptance.
    pub paired_at: u64,
}

impl AwaitingResult {
    /// The answer again, to re-publish if no result arrives.
    pub fn answer_bytes(&self) -> &[u8] {
        &self.answer
    }

    /// Checks the result (signed by the device, for this wallet and this challenge).
    /// `Accepted` completes the pairing; a genuine `Rejected` is `PairingError::Rejected`.
    /// On error the state is handed back.
    pub fn on_result(self, result: &[u8]) -> Result<PairedDevice, StepError<Self>> {
        match self.check_result(result) {
            Ok(paired_at) => Ok(PairedDevice {
                device: self.device,
                device_kem: self.device_kem,
                broker_hint: self.broker_hint,
                label: self.label,
                paired_at,
            }),
            Err(error) => Err(StepError::new(self, error)),
        }
    }

    fn check_result(&self, bytes: &[u8]) -> Result<u64, PairingError> {
        let res = PairingResult::decode(bytes)?;
        if res.device != self.device {
            return Err(PairingError::WrongDevice);
        }
        if res.wallet != self.wallet {
            return Err(PairingError::WrongWallet);
        }
        if res.device_nonce != self.device_nonce {
            return Err(PairingError::UnknownChallenge);
        }
        match res.outcome {
            Outcome::Accepted => Ok(res.time),
            Outcome::Rejected(reason) => Err(PairingError::Rejected { reason }),
        }
    }
}

//! The crypto suite: identities, hybrid post-quantum KEM, key wrapping, AEAD, hashing.
//!
//! Only vetted crates do the maths (ed25519-dalek, x25519-dalek, sntrup761, ml-kem,
//! chacha20poly1305, hkdf/sha2, blake3). This module only composes them, and every
//! composition is spelled out in docs/PROTOCOL.md ("Crypto suite").
//!
//! All key generation and encapsulation is derived from explicit 32/64-byte seeds drawn
//! from the OS CSPRNG; the `*_from_seed` / `*_deterministic` forms exist so the spec's test
//! vectors can be reproduced. Secret material is zeroized on drop; secrets are compared
//! in constant time.

use chacha20poly1305::{
    XChaCha20Poly1305, XNonce,
    aead::{Aead, KeyInit, Payload},
};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use hkdf::Hkdf;
use ml_kem::{Decapsulate, KeyExport, MlKem768, array::Array};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::wire::{Reader, WireError, Writer};

/// Suite byte of messages that only sign and seal (Ed25519 + XChaCha20-Poly1305 +
/// HKDF-SHA256 + BLAKE3). Messages that carry KEM material use [`KemSuite`] instead.
pub const SYMMETRIC_SUITE: u8 = 0x01;

/// Errors from cryptographic checks. Deliberately coarse: callers learn *that* something
/// failed, never partial secrets.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CryptoError {
    #[error("signature does not verify")]
    BadSignature,
    #[error("decryption failed: wrong key or tampered data")]
    DecryptFailed,
    #[error("invalid public key")]
    BadPublicKey,
    #[error("KEM suite mismatch: key is {key:?}, ciphertext is {ciphertext:?}")]
    SuiteMismatch { key: KemSuite, ciphertext: KemSuite },
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// Fills a fresh array from the OS CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::fill(&mut out[..]);
    out
}

/// BLAKE3 with a domain-separation label, over several parts (each length-prefixed so
/// part boundaries cannot be shifted).
pub fn hash(label: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(label);
    for p in parts {
        h.update(&(p.len() as u64).to_be_bytes());
        h.update(p);
    }
    *h.finalize().as_bytes()
}

/// Constant-time equality for secrets and MACs.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

// ---------------------------------------------------------------------------------------
// Identities (Ed25519)
// ---------------------------------------------------------------------------------------

pub const SIGNATURE_LEN: usize = 64;
pub const PUBLIC_ID_LEN: usize = 32;

/// An Ed25519 public key: who an owner, device or provider *is*.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicId([u8; PUBLIC_ID_LEN]);

impl std::fmt::Debug for PublicId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicId({})", self.to_hex())
    }
}

impl PublicId {
    /// Accepts only canonical, non-weak Ed25519 points.
    pub fn from_bytes(bytes: [u8; PUBLIC_ID_LEN]) -> Result<Self, CryptoError> {
        let vk = VerifyingKey::from_bytes(&bytes).map_err(|_| CryptoError::BadPublicKey)?;
        if vk.is_weak() {
            return Err(CryptoError::BadPublicKey);
        }
        Ok(Self(bytes))
    }
    pub fn as_bytes(&self) -> &[u8; PUBLIC_ID_LEN] {
        &self.0
    }
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
    /// The opaque 16-byte id used in topic names: reveals nothing but itself.
    pub fn opaque_id(&self) -> OpaqueId {
        let h = hash("p1consent/v1/opaque-id", &[&self.0]);
        let mut id = [0u8; 16];
        id.copy_from_slice(&h[..16]);
        OpaqueId(id)
    }
    /// Strict Ed25519 verification (rejects malleable and small-order signatures).
    pub fn verify(&self, msg: &[u8], sig: &[u8; SIGNATURE_LEN]) -> Result<(), CryptoError> {
        let vk = VerifyingKey::from_bytes(&self.0).map_err(|_| CryptoError::BadPublicKey)?;
        let sig = ed25519_dalek::Signature::from_bytes(sig);
        vk.verify_strict(msg, &sig)
            .map_err(|_| CryptoError::BadSignature)
    }
    pub fn read(r: &mut Reader<'_>) -> Result<Self, CryptoError> {
        Self::from_bytes(r.array()?)
    }
}

/// A 16-byte identifier that can appear in clear (topics, headers).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct OpaqueId(pub [u8; 16]);

impl OpaqueId {
    pub fn random() -> Self {
        Self(random_bytes())
    }
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
    pub fn from_hex(s: &str) -> Option<Self> {
        let v = unhex(s)?;
        Some(Self(v.try_into().ok()?))
    }
}

impl std::fmt::Display for OpaqueId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// An Ed25519 signing key. Zeroized on drop (by ed25519-dalek).
pub struct SigningIdentity(SigningKey);

impl SigningIdentity {
    pub fn generate() -> Self {
        Self::from_seed(&Zeroizing::new(random_bytes()))
    }
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }
    /// The 32-byte secret seed, for storage in a keyring or an encrypted file.
    pub fn to_seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }
    pub fn public(&self) -> PublicId {
        PublicId(self.0.verifying_key().to_bytes())
    }
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.0.sign(msg).to_bytes()
    }
}

impl std::fmt::Debug for SigningIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningIdentity({:?})", self.public())
    }
}

// ---------------------------------------------------------------------------------------
// Symmetric keys, AEAD, KDF
// ---------------------------------------------------------------------------------------

pub const KEY_LEN: usize = 32;
pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;

/// A 256-bit symmetric key (epoch key, thread key, wrapping key). Zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SymmetricKey([u8; KEY_LEN]);

impl SymmetricKey {
    pub fn random() -> Self {
        Self(random_bytes())
    }
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
    /// HKDF-SHA256(ikm = self, salt = none, info = label || 0x00 || context).
    pub fn derive(&self, label: &str, context: &[u8]) -> SymmetricKey {
        derive_key(&self.0, label, context)
    }
}

impl PartialEq for SymmetricKey {
    fn eq(&self, other: &Self) -> bool {
        ct_eq(&self.0, &other.0)
    }
}
impl Eq for SymmetricKey {}

impl std::fmt::Debug for SymmetricKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SymmetricKey(..)")
    }
}

/// HKDF-SHA256 with `info = label || 0x00 || context`.
pub fn derive_key(ikm: &[u8], label: &str, context: &[u8]) -> SymmetricKey {
    let hk = Hkdf::<Sha256>::new(None, ikm);
    let mut info = Vec::with_capacity(label.len() + 1 + context.len());
    info.extend_from_slice(label.as_bytes());
    info.push(0);
    info.extend_from_slice(context);
    let mut out = [0u8; KEY_LEN];
    // 32 bytes is always a valid HKDF-SHA256 output length.
    if hk.expand(&info, &mut out).is_err() {
        unreachable!("HKDF output length 32 is valid")
    }
    SymmetricKey(out)
}

/// XChaCha20-Poly1305 with a fresh random 24-byte nonce. Returns (nonce, ciphertext||tag).
pub fn seal(key: &SymmetricKey, aad: &[u8], plaintext: &[u8]) -> ([u8; NONCE_LEN], Vec<u8>) {
    let nonce = random_bytes::<NONCE_LEN>();
    let ct = seal_with_nonce(key, &nonce, aad, plaintext);
    (nonce, ct)
}

/// Deterministic form of [`seal`] for test vectors; never reuse a nonce with one key.
pub fn seal_with_nonce(
    key: &SymmetricKey,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(&key.0.into());
    match cipher.encrypt(
        &XNonce::from(*nonce),
        Payload {
            msg: plaintext,
            aad,
        },
    ) {
        Ok(ct) => ct,
        // Only fails for plaintexts beyond 256 GiB, which no caller produces.
        Err(_) => unreachable!("XChaCha20-Poly1305 encrypt cannot fail for our sizes"),
    }
}

/// Opens what [`seal`] produced. The plaintext is zeroized when dropped.
pub fn open(
    key: &SymmetricKey,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let cipher = XChaCha20Poly1305::new(&key.0.into());
    cipher
        .decrypt(
            &XNonce::from(*nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::DecryptFailed)
}

// ---------------------------------------------------------------------------------------
// Hybrid KEM
// ---------------------------------------------------------------------------------------

/// Which hybrid KEM a key or ciphertext belongs to. The byte is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum KemSuite {
    /// X25519 + Streamlined NTRU Prime sntrup761 (default).
    X25519Sntrup761 = 0x01,
    /// X25519 + ML-KEM-768 (FIPS 203).
    X25519MlKem768 = 0x02,
}

impl KemSuite {
    pub const DEFAULT: KemSuite = KemSuite::X25519Sntrup761;

    pub fn from_byte(b: u8) -> Result<Self, WireError> {
        match b {
            0x01 => Ok(Self::X25519Sntrup761),
            0x02 => Ok(Self::X25519MlKem768),
            other => Err(WireError::UnsupportedSuite(other)),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::X25519Sntrup761 => "x25519-sntrup761",
            Self::X25519MlKem768 => "x25519-mlkem768",
        }
    }
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "x25519-sntrup761" | "sntrup761" => Some(Self::X25519Sntrup761),
            "x25519-mlkem768" | "mlkem768" | "ml-kem-768" => Some(Self::X25519MlKem768),
            _ => None,
        }
    }
    /// Size of the post-quantum public key.
    pub fn pq_public_len(self) -> usize {
        match self {
            Self::X25519Sntrup761 => sntrup761::PUBLIC_KEY_SIZE,
            Self::X25519MlKem768 => 1184,
        }
    }
    /// Size of the post-quantum ciphertext.
    pub fn pq_ciphertext_len(self) -> usize {
        match self {
            Self::X25519Sntrup761 => sntrup761::CIPHERTEXT_SIZE,
            Self::X25519MlKem768 => 1088,
        }
    }
    /// Encoded size of a [`KemPublicKey`].
    pub fn public_key_len(self) -> usize {
        1 + 32 + self.pq_public_len()
    }
    /// Encoded size of a [`KemCiphertext`].
    pub fn ciphertext_len(self) -> usize {
        1 + 32 + self.pq_ciphertext_len()
    }
}

/// A reader's KEM public key: suite byte, X25519 key, post-quantum key.
#[derive(Clone, PartialEq, Eq)]
pub struct KemPublicKey {
    suite: KemSuite,
    x25519: [u8; 32],
    pq: Vec<u8>,
}

impl std::fmt::Debug for KemPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "KemPublicKey({}, {})",
            self.suite.name(),
            hex(&self.fingerprint()[..8])
        )
    }
}

impl KemPublicKey {
    pub fn suite(&self) -> KemSuite {
        self.suite
    }
    /// BLAKE3 fingerprint of the encoded key (for display and binding).
    pub fn fingerprint(&self) -> [u8; 32] {
        hash("p1consent/v1/kem-public-key", &[&self.to_bytes()])
    }
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.write(&mut w);
        w.into_bytes()
    }
    pub fn write(&self, w: &mut Writer) {
        w.u8(self.suite as u8).raw(&self.x25519).raw(&self.pq);
    }
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let mut r = Reader::new(bytes);
        let k = Self::read(&mut r)?;
        r.finish()?;
        Ok(k)
    }
    /// Reads and validates (the ML-KEM key must decode; X25519 must not be low order).
    pub fn read(r: &mut Reader<'_>) -> Result<Self, CryptoError> {
        let suite = KemSuite::from_byte(r.u8()?)?;
        let x25519: [u8; 32] = r.array()?;
        let pq = r.raw(suite.pq_public_len())?.to_vec();
        if suite == KemSuite::X25519MlKem768 {
            ml_kem_public(&pq)?;
        }
        // Reject X25519 keys that give an all-zero shared secret for any peer.
        let probe = x25519_dalek::StaticSecret::from([0x42; 32]);
        if !probe
            .diffie_hellman(&x25519_dalek::PublicKey::from(x25519))
            .was_contributory()
        {
            return Err(CryptoError::BadPublicKey);
        }
        Ok(Self { suite, x25519, pq })
    }
}

fn ml_kem_public(bytes: &[u8]) -> Result<ml_kem::EncapsulationKey<MlKem768>, CryptoError> {
    let arr = Array::try_from(bytes).map_err(|_| CryptoError::BadPublicKey)?;
    ml_kem::EncapsulationKey::<MlKem768>::new(&arr).map_err(|_| CryptoError::BadPublicKey)
}

enum PqSecret {
    Sntrup(Box<sntrup761::DecapsulationKey>),
    MlKem(Box<ml_kem::DecapsulationKey<MlKem768>>),
}

/// A reader's KEM secret key. Stored as a 32-byte seed (both halves are derived from it
/// with HKDF), so it is small enough for an OS keyring. Zeroized on drop.
pub struct KemSecretKey {
    suite: KemSuite,
    seed: Zeroizing<[u8; 32]>,
    x25519: x25519_dalek::StaticSecret,
    pq: PqSecret,
    public: KemPublicKey,
}

impl std::fmt::Debug for KemSecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KemSecretKey({:?})", self.public)
    }
}

impl KemSecretKey {
    pub fn generate(suite: KemSuite) -> Self {
        Self::from_seed(suite, &Zeroizing::new(random_bytes()))
    }

    /// Derives the whole key pair from one 32-byte seed.
    pub fn from_seed(suite: KemSuite, seed: &[u8; 32]) -> Self {
        let ctx = [suite as u8];
        let x_seed = derive_key(seed, "p1consent/v1/kem-seed/x25519", &ctx);
        let x25519 = x25519_dalek::StaticSecret::from(*x_seed.expose());
        let x_pub = x25519_dalek::PublicKey::from(&x25519).to_bytes();
        let pq_seed = derive_key(seed, "p1consent/v1/kem-seed/pq", &ctx);
        let (pq, pq_pub) = match suite {
            KemSuite::X25519Sntrup761 => {
                let (ek, dk) = sntrup761::generate_key_from_seed(*pq_seed.expose());
                (PqSecret::Sntrup(Box::new(dk)), ek.as_ref().to_vec())
            }
            KemSuite::X25519MlKem768 => {
                // ML-KEM wants a 64-byte seed (d || z).
                let d = pq_seed.derive("p1consent/v1/kem-seed/mlkem-d", &[]);
                let z = pq_seed.derive("p1consent/v1/kem-seed/mlkem-z", &[]);
                let mut s = Zeroizing::new([0u8; 64]);
                s[..32].copy_from_slice(d.expose());
                s[32..].copy_from_slice(z.expose());
                let dk = ml_kem::DecapsulationKey::<MlKem768>::from_seed(Array::from(*s));
                let ek = dk.encapsulation_key().to_bytes().to_vec();
                (PqSecret::MlKem(Box::new(dk)), ek)
            }
        };
        Self {
            suite,
            seed: Zeroizing::new(*seed),
            x25519,
            pq,
            public: KemPublicKey {
                suite,
                x25519: x_pub,
                pq: pq_pub,
            },
        }
    }

    pub fn suite(&self) -> KemSuite {
        self.suite
    }
    pub fn seed(&self) -> &Zeroizing<[u8; 32]> {
        &self.seed
    }
    pub fn public(&self) -> &KemPublicKey {
        &self.public
    }

    /// Recovers the shared secret. Implicit rejection: a tampered PQ ciphertext yields a
    /// different secret, which then fails the AEAD that uses it.
    pub fn decapsulate(&self, ct: &KemCiphertext) -> Result<SymmetricKey, CryptoError> {
        if ct.suite != self.suite {
            return Err(CryptoError::SuiteMismatch {
                key: self.suite,
                ciphertext: ct.suite,
            });
        }
        let eph = x25519_dalek::PublicKey::from(ct.x25519);
        let ss_x = self.x25519.diffie_hellman(&eph);
        if !ss_x.was_contributory() {
            return Err(CryptoError::DecryptFailed);
        }
        let ss_pq: Zeroizing<[u8; 32]> = match &self.pq {
            PqSecret::Sntrup(dk) => {
                let c = sntrup761::Ciphertext::try_from(ct.pq.as_slice())
                    .map_err(|_| CryptoError::DecryptFailed)?;
                let mut out = [0u8; 32];
                out.copy_from_slice(dk.decapsulate(&c).as_ref());
                Zeroizing::new(out)
            }
            PqSecret::MlKem(dk) => {
                let c =
                    Array::try_from(ct.pq.as_slice()).map_err(|_| CryptoError::DecryptFailed)?;
                let k = dk.decapsulate(&c);
                let mut out = [0u8; 32];
                out.copy_from_slice(k.as_slice());
                Zeroizing::new(out)
            }
        };
        Ok(combine(
            self.suite,
            ss_x.as_bytes(),
            &ss_pq,
            ct,
            &self.public,
        ))
    }
}

/// A hybrid KEM ciphertext: suite byte, ephemeral X25519 key, post-quantum ciphertext.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct KemCiphertext {
    suite: KemSuite,
    x25519: [u8; 32],
    pq: Vec<u8>,
}

impl KemCiphertext {
    pub fn suite(&self) -> KemSuite {
        self.suite
    }
    pub fn write(&self, w: &mut Writer) {
        w.u8(self.suite as u8).raw(&self.x25519).raw(&self.pq);
    }
    pub fn read(r: &mut Reader<'_>) -> Result<Self, CryptoError> {
        let suite = KemSuite::from_byte(r.u8()?)?;
        let x25519 = r.array()?;
        let pq = r.raw(suite.pq_ciphertext_len())?.to_vec();
        Ok(Self { suite, x25519, pq })
    }
}

/// Encapsulates to `pk` with fresh randomness.
pub fn encapsulate(pk: &KemPublicKey) -> Result<(KemCiphertext, SymmetricKey), CryptoError> {
    encapsulate_deterministic(pk, &Zeroizing::new(random_bytes()))
}

/// Encapsulates with all randomness derived from `seed` (test vectors only).
pub fn encapsulate_deterministic(
    pk: &KemPublicKey,
    seed: &[u8; 32],
) -> Result<(KemCiphertext, SymmetricKey), CryptoError> {
    let ctx = [pk.suite as u8];
    let eph_seed = derive_key(seed, "p1consent/v1/encap/x25519", &ctx);
    let eph = x25519_dalek::StaticSecret::from(*eph_seed.expose());
    let eph_pub = x25519_dalek::PublicKey::from(&eph).to_bytes();
    let ss_x = eph.diffie_hellman(&x25519_dalek::PublicKey::from(pk.x25519));
    if !ss_x.was_contributory() {
        return Err(CryptoError::BadPublicKey);
    }
    let pq_seed = derive_key(seed, "p1consent/v1/encap/pq", &ctx);
    let (pq_ct, ss_pq): (Vec<u8>, Zeroizing<[u8; 32]>) = match pk.suite {
        KemSuite::X25519Sntrup761 => {
            let ek = sntrup761::EncapsulationKey::try_from(pk.pq.as_slice())
                .map_err(|_| CryptoError::BadPublicKey)?;
            let (c, ss) = ek.encapsulate_deterministic(*pq_seed.expose());
            let mut out = [0u8; 32];
            out.copy_from_slice(ss.as_ref());
            (c.as_ref().to_vec(), Zeroizing::new(out))
        }
        KemSuite::X25519MlKem768 => {
            let ek = ml_kem_public(&pk.pq)?;
            let m = Array::from(*pq_seed.expose());
            let (c, ss) = ek.encapsulate_deterministic(&m);
            let mut out = [0u8; 32];
            out.copy_from_slice(ss.as_slice());
            (c.to_vec(), Zeroizing::new(out))
        }
    };
    let ct = KemCiphertext {
        suite: pk.suite,
        x25519: eph_pub,
        pq: pq_ct,
    };
    let ss = combine(pk.suite, ss_x.as_bytes(), &ss_pq, &ct, pk);
    Ok((ct, ss))
}

/// The hybrid combiner: HKDF-SHA256 over both shared secrets, bound to both ciphertexts
/// and both public keys, so neither component can be swapped out.
fn combine(
    suite: KemSuite,
    ss_x: &[u8; 32],
    ss_pq: &[u8; 32],
    ct: &KemCiphertext,
    pk: &KemPublicKey,
) -> SymmetricKey {
    let mut ikm = Zeroizing::new([0u8; 64]);
    ikm[..32].copy_from_slice(ss_x);
    ikm[32..].copy_from_slice(ss_pq);
    let mut info = Vec::with_capacity(1 + 64 + ct.pq.len() + pk.pq.len());
    info.push(suite as u8);
    info.extend_from_slice(&ct.x25519);
    info.extend_from_slice(&pk.x25519);
    info.extend_from_slice(&ct.pq);
    info.extend_from_slice(&pk.pq);
    let hk = Hkdf::<Sha256>::new(Some(b"p1consent/v1/hybrid-kem"), &ikm[..]);
    let mut out = [0u8; KEY_LEN];
    if hk.expand(&info, &mut out).is_err() {
        unreachable!("HKDF output length 32 is valid")
    }
    SymmetricKey(out)
}

// ---------------------------------------------------------------------------------------
// Key wrapping: a symmetric key sealed to one KEM public key
// ---------------------------------------------------------------------------------------

/// A 32-byte key (plus optional extra secret bytes) wrapped to one reader's KEM key.
/// Wire: KemCiphertext || nonce[24] || u16 len || AEAD(secret) (see PROTOCOL.md).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct WrappedSecret {
    pub kem: KemCiphertext,
    pub nonce: [u8; NONCE_LEN],
    pub sealed: Vec<u8>,
}

/// Upper bound for a wrapped secret's plaintext.
pub const MAX_WRAPPED_SECRET: usize = 256;

impl WrappedSecret {
    /// Wraps `secret` to `pk`; `context` (e.g. channel id + epoch) is bound as AEAD data so a
    /// wrapped key cannot be replayed into another context.
    pub fn wrap(pk: &KemPublicKey, secret: &[u8], context: &[u8]) -> Result<Self, CryptoError> {
        let (kem, ss) = encapsulate(pk)?;
        let k = ss.derive("p1consent/v1/wrap", &[]);
        let (nonce, sealed) = seal(&k, context, secret);
        Ok(Self { kem, nonce, sealed })
    }
    pub fn unwrap(
        &self,
        sk: &KemSecretKey,
        context: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let ss = sk.decapsulate(&self.kem)?;
        let k = ss.derive("p1consent/v1/wrap", &[]);
        open(&k, &self.nonce, context, &self.sealed)
    }
    pub fn write(&self, w: &mut Writer) {
        self.kem.write(w);
        w.raw(&self.nonce).bytes16(&self.sealed);
    }
    pub fn read(r: &mut Reader<'_>) -> Result<Self, CryptoError> {
        let kem = KemCiphertext::read(r)?;
        let nonce = r.array()?;
        let sealed = r
            .bytes16("wrapped secret", MAX_WRAPPED_SECRET + TAG_LEN)?
            .to_vec();
        Ok(Self { kem, nonce, sealed })
    }
}

// ---------------------------------------------------------------------------------------
// Hex helpers (ids, fingerprints)
// ---------------------------------------------------------------------------------------

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xF) as usize] as char);
    }
    s
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let nib = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(nib(p[0])? << 4 | nib(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let id = SigningIdentity::from_seed(&[7; 32]);
        let sig = id.sign(b"hello");
        id.public().verify(b"hello", &sig).unwrap();
        assert_eq!(
            id.public().verify(b"hellO", &sig),
            Err(CryptoError::BadSignature)
        );
        let other = SigningIdentity::from_seed(&[8; 32]);
        assert_eq!(
            other.public().verify(b"hello", &sig),
            Err(CryptoError::BadSignature)
        );
        let round = SigningIdentity::from_seed(&id.to_seed());
        assert_eq!(round.public(), id.public());
    }

    #[test]
    fn weak_public_keys_are_rejected() {
        // The identity point (small order) must not be accepted as anyone's identity.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            PublicId::from_bytes(identity),
            Err(CryptoError::BadPublicKey)
        );
    }

    #[test]
    fn aead_round_trip_and_tamper() {
        let k = SymmetricKey::random();
        let (n, ct) = seal(&k, b"hdr", b"secret");
        assert_eq!(&open(&k, &n, b"hdr", &ct).unwrap()[..], b"secret");
        assert_eq!(open(&k, &n, b"hdx", &ct), Err(CryptoError::DecryptFailed));
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert_eq!(open(&k, &n, b"hdr", &bad), Err(CryptoError::DecryptFailed));
        assert_eq!(
            open(&SymmetricKey::random(), &n, b"hdr", &ct),
            Err(CryptoError::DecryptFailed)
        );
    }

    fn kem_round_trip(suite: KemSuite) {
        let alice = KemSecretKey::generate(suite);
        let bob = KemSecretKey::generate(suite);
        let pk_bytes = alice.public().to_bytes();
        assert_eq!(pk_bytes.len(), suite.public_key_len());
        let pk = KemPublicKey::from_bytes(&pk_bytes).unwrap();
        let (ct, ss) = encapsulate(&pk).unwrap();
        let mut w = Writer::new();
        ct.write(&mut w);
        assert_eq!(w.len(), suite.ciphertext_len());
        let ct2 = KemCiphertext::read(&mut Reader::new(w.as_slice())).unwrap();
        assert_eq!(alice.decapsulate(&ct2).unwrap(), ss);
        // Someone else's key recovers a different secret.
        assert_ne!(bob.decapsulate(&ct2).unwrap(), ss);
        // Tampering with either half changes the secret.
        let mut t = ct2.clone();
        t.pq[5] ^= 1;
        assert_ne!(alice.decapsulate(&t).unwrap(), ss);
        let mut t = ct2.clone();
        t.x25519[5] ^= 1;
        assert_ne!(alice.decapsulate(&t).ok(), Some(ss));
        // Seeds reproduce the key pair.
        let again = KemSecretKey::from_seed(suite, alice.seed());
        assert_eq!(again.public(), alice.public());
    }

    #[test]
    fn kem_sntrup761() {
        kem_round_trip(KemSuite::X25519Sntrup761);
    }

    #[test]
    fn kem_mlkem768() {
        kem_round_trip(KemSuite::X25519MlKem768);
    }

    #[test]
    fn kem_suite_mismatch_is_reported() {
        let a = KemSecretKey::generate(KemSuite::X25519Sntrup761);
        let b = KemSecretKey::generate(KemSuite::X25519MlKem768);
        let (ct, _) = encapsulate(b.public()).unwrap();
        assert!(matches!(
            a.decapsulate(&ct),
            Err(CryptoError::SuiteMismatch { .. })
        ));
    }

    #[test]
    fn wrap_binds_context() {
        let r = KemSecretKey::generate(KemSuite::DEFAULT);
        let w = WrappedSecret::wrap(r.public(), &[9; 32], b"ctx-1").unwrap();
        assert_eq!(&w.unwrap(&r, b"ctx-1").unwrap()[..], &[9; 32]);
        assert_eq!(w.unwrap(&r, b"ctx-2"), Err(CryptoError::DecryptFailed));
        let other = KemSecretKey::generate(KemSuite::DEFAULT);
        assert_eq!(w.unwrap(&other, b"ctx-1"), Err(CryptoError::DecryptFailed));
    }

    #[test]
    fn low_order_x25519_public_key_is_rejected() {
        let good = KemSecretKey::generate(KemSuite::DEFAULT)
            .public()
            .to_bytes();
        let mut bad = good.clone();
        bad[1..33].copy_from_slice(&[0; 32]);
        assert_eq!(
            KemPublicKey::from_bytes(&bad),
            Err(CryptoError::BadPublicKey)
        );
        assert!(matches!(
            KemPublicKey::from_bytes(&good[..100]),
            Err(CryptoError::Wire(WireError::Truncated { .. }))
        ));
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(hex(&[0, 0xAB, 0x10]), "00ab10");
        assert_eq!(unhex("00AB10").unwrap(), vec![0, 0xAB, 0x10]);
        assert!(unhex("0g").is_none());
        assert!(unhex("abc").is_none());
    }
}

//! The provider's long-term keys and their key file.
//!
//! A provider has two secrets: an Ed25519 signing identity (signs requests and its log
//! entries) and a hybrid KEM secret key (receives thread keys and channel keys). Both are
//! 32-byte seeds (`shared::crypto`), stored in one key file:
//!
//! ```text
//! magic "P1CPKEY\0" (8) | version 0x01 | mode (0x00 plain, 0x01 passphrase)
//! mode 0x01: m_cost_kib u32 | t_cost u32 | p_cost u32 | salt [16] | nonce [24] |
//!            XChaCha20-Poly1305(Argon2id(passphrase, salt), aad = all bytes before, secret)
//! mode 0x00: secret | BLAKE3 check [32] over all bytes before it
//! secret   : signing seed [32] | KEM suite u8 | KEM seed [32]
//! ```
//!
//! The file is written with permissions 0600 (atomically: temporary file, then rename);
//! secrets are zeroized when dropped.

use std::path::Path;

use argon2::{Algorithm, Argon2, Params, Version};
use p1consent_shared::crypto::{
    self, KemPublicKey, KemSecretKey, KemSuite, NONCE_LEN, PublicId, SigningIdentity, SymmetricKey,
};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::fsutil;

const MAGIC: &[u8; 8] = b"P1CPKEY\0";
const VERSION: u8 = 1;
const MODE_PLAIN: u8 = 0;
const MODE_PASSPHRASE: u8 = 1;
const SECRET_LEN: usize = 32 + 1 + 32;
const SALT_LEN: usize = 16;
const CHECK_LABEL: &str = "p1consent-provider/v1/keyfile-check";
/// Largest key file accepted (the real ones are 97 or 138 bytes).
pub const MAX_KEY_FILE: u64 = 4096;

/// Why a key file could not be written or read.
#[derive(Debug, Error)]
pub enum KeyFileError {
    #[error("key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("not a P1 Consent provider key file")]
    NotAKeyFile,
    #[error("unsupported key file version {0}")]
    UnsupportedVersion(u8),
    #[error("key file is damaged: {0}")]
    Corrupt(&'static str),
    #[error("wrong passphrase, or the key file was tampered with")]
    WrongPassphrase,
    #[error("the key file is protected with a passphrase; none was given")]
    PassphraseRequired,
    #[error("key derivation parameters rejected: {0}")]
    Kdf(String),
}

/// Argon2id cost parameters of a protected key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane.
    fn default() -> Self {
        Self {
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

impl KdfParams {
    /// Cheap parameters for tests and doc examples only (8 MiB, 1 pass).
    pub fn insecure_fast() -> Self {
        Self {
            m_cost_kib: 8 * 1024,
            t_cost: 1,
            p_cost: 1,
        }
    }

    fn check(&self) -> Result<(), KeyFileError> {
        // Refuse absurd values from a hostile file before allocating anything.
        if self.m_cost_kib < 8 * 1024 || self.m_cost_kib > 4 * 1024 * 1024 {
            return Err(KeyFileError::Corrupt("Argon2 memory cost out of range"));
        }
        if self.t_cost == 0 || self.t_cost > 100 || self.p_cost == 0 || self.p_cost > 16 {
            return Err(KeyFileError::Corrupt(
                "Argon2 time or lane cost out of range",
            ));
        }
        Ok(())
    }

    fn derive(&self, passphrase: &[u8], salt: &[u8]) -> Result<SymmetricKey, KeyFileError> {
        self.check()?;
        let params = Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| KeyFileError::Kdf(e.to_string()))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(passphrase, salt, &mut out[..])
            .map_err(|e| KeyFileError::Kdf(e.to_string()))?;
        Ok(SymmetricKey::from_bytes(*out))
    }
}

/// How a key file is protected.
pub enum Protection<'a> {
    /// Argon2id → XChaCha20-Poly1305 with this passphrase.
    Passphrase(&'a str, KdfParams),
    /// No encryption: only when explicitly asked for (scripts, tests).
    Unprotected,
}

/// The provider's signing identity and KEM secret key.
///
/// ```
/// use p1consent_provider::keys::{KdfParams, ProviderKeys, Protection};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = std::env::temp_dir().join(format!("p1c-doc-keys-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let path = dir.join("provider.key");
/// let keys = ProviderKeys::generate(p1consent_shared::crypto::KemSuite::DEFAULT);
/// keys.save(&path, Protection::Passphrase("correct horse", KdfParams::insecure_fast()))?;
/// let back = ProviderKeys::load(&path, Some("correct horse"))?;
/// assert_eq!(back.public(), keys.public());
/// assert!(ProviderKeys::load(&path, Some("wrong")).is_err());
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(()) }
/// ```
pub struct ProviderKeys {
    signing: SigningIdentity,
    kem: KemSecretKey,
}

impl std::fmt::Debug for ProviderKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderKeys")
            .field("public", &self.signing.public())
            .field("kem_suite", &self.kem.suite())
            .finish_non_exhaustive()
    }
}

impl ProviderKeys {
    /// Fresh keys from the OS CSPRNG; `suite` chooses the hybrid KEM (default
    /// X25519+sntrup761).
    pub fn generate(suite: KemSuite) -> Self {
        let seed = Zeroizing::new(crypto::random_bytes::<32>());
        Self {
            signing: SigningIdentity::generate(),
            kem: KemSecretKey::from_seed(suite, &seed),
        }
    }

    /// Keys from their seeds (tests, migration).
    pub fn from_seeds(signing_seed: &[u8; 32], suite: KemSuite, kem_seed: &[u8; 32]) -> Self {
        Self {
            signing: SigningIdentity::from_seed(signing_seed),
            kem: KemSecretKey::from_seed(suite, kem_seed),
        }
    }

    pub fn signing(&self) -> &SigningIdentity {
        &self.signing
    }
    pub fn kem(&self) -> &KemSecretKey {
        &self.kem
    }
    /// The Ed25519 public key (the provider's identity in requests and logs).
    pub fn public(&self) -> PublicId {
        self.signing.public()
    }
    pub fn kem_public(&self) -> &KemPublicKey {
        self.kem.public()
    }
    /// A copy (the KEM key is re-derived from its seed).
    pub fn duplicate(&self) -> Self {
        Self {
            signing: SigningIdentity::from_seed(&self.signing.to_seed()),
            kem: KemSecretKey::from_seed(self.kem.suite(), self.kem.seed()),
        }
    }

    fn secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut s = Zeroizing::new(Vec::with_capacity(SECRET_LEN));
        s.extend_from_slice(&self.signing.to_seed()[..]);
        s.push(self.kem.suite() as u8);
        s.extend_from_slice(&self.kem.seed()[..]);
        s
    }

    fn from_secret_bytes(s: &[u8]) -> Result<Self, KeyFileError> {
        if s.len() != SECRET_LEN {
            return Err(KeyFileError::Corrupt("secret has the wrong length"));
        }
        let mut sign = Zeroizing::new([0u8; 32]);
        sign.copy_from_slice(&s[..32]);
        let suite = KemSuite::from_byte(s[32]).map_err(|_| KeyFileError::Corrupt("KEM suite"))?;
        let mut kem = Zeroizing::new([0u8; 32]);
        kem.copy_from_slice(&s[33..]);
        Ok(Self::from_seeds(&sign, suite, &kem))
    }

    /// The key file bytes.
    pub fn to_file_bytes(&self, protection: Protection<'_>) -> Result<Vec<u8>, KeyFileError> {
        let secret = self.secret_bytes();
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        match protection {
            Protection::Unprotected => {
                out.push(MODE_PLAIN);
                out.extend_from_slice(&secret);
                let check = crypto::hash(CHECK_LABEL, &[&out]);
                out.extend_from_slice(&check);
            }
            Protection::Passphrase(pass, params) => {
                out.push(MODE_PASSPHRASE);
                out.extend_from_slice(&params.m_cost_kib.to_be_bytes());
                out.extend_from_slice(&params.t_cost.to_be_bytes());
                out.extend_from_slice(&params.p_cost.to_be_bytes());
                let salt = crypto::random_bytes::<SALT_LEN>();
                out.extend_from_slice(&salt);
                let key = params.derive(pass.as_bytes(), &salt)?;
                let nonce = crypto::random_bytes::<NONCE_LEN>();
                out.extend_from_slice(&nonce);
                let ct = crypto::seal_with_nonce(&key, &nonce, &out, &secret);
                out.extend_from_slice(&ct);
            }
        }
        Ok(out)
    }

    /// Parses key file bytes. `passphrase` is required for a protected file and ignored
    /// for an unprotected one.
    pub fn from_file_bytes(bytes: &[u8], passphrase: Option<&str>) -> Result<Self, KeyFileError> {
        if bytes.len() < MAGIC.len() + 2 || &bytes[..MAGIC.len()] != MAGIC {
            return Err(KeyFileError::NotAKeyFile);
        }
        let version = bytes[MAGIC.len()];
        if version != VERSION {
            return Err(KeyFileError::UnsupportedVersion(version));
        }
        let mode = bytes[MAGIC.len() + 1];
        let body = &bytes[MAGIC.len() + 2..];
        match mode {
            MODE_PLAIN => {
                if body.len() != SECRET_LEN + 32 {
                    return Err(KeyFileError::Corrupt("wrong length"));
                }
                let split = bytes.len() - 32;
                let check = crypto::hash(CHECK_LABEL, &[&bytes[..split]]);
                if !crypto::ct_eq(&check, &bytes[split..]) {
                    return Err(KeyFileError::Corrupt("checksum does not match (tampered)"));
                }
                Self::from_secret_bytes(&body[..SECRET_LEN])
            }
            MODE_PASSPHRASE => {
                let fixed = 12 + SALT_LEN + NONCE_LEN;
                if body.len() != fixed + SECRET_LEN + crypto::TAG_LEN {
                    return Err(KeyFileError::Corrupt("wrong length"));
                }
                let u32_at = |i: usize| {
                    let mut b = [0u8; 4];
                    b.copy_from_slice(&body[i..i + 4]);
                    u32::from_be_bytes(b)
                };
                let params = KdfParams {
                    m_cost_kib: u32_at(0),
                    t_cost: u32_at(4),
                    p_cost: u32_at(8),
                };
                params.check()?;
                let pass = passphrase.ok_or(KeyFileError::PassphraseRequired)?;
                let salt = &body[12..12 + SALT_LEN];
                let mut nonce = [0u8; NONCE_LEN];
                nonce.copy_from_slice(&body[12 + SALT_LEN..fixed]);
                let aad_len = MAGIC.len() + 2 + fixed;
                let key = params.derive(pass.as_bytes(), salt)?;
                let secret = crypto::open(&key, &nonce, &bytes[..aad_len], &body[fixed..])
                    .map_err(|_| KeyFileError::WrongPassphrase)?;
                Self::from_secret_bytes(&secret)
            }
            _ => Err(KeyFileError::Corrupt("unknown protection mode")),
        }
    }

    /// Whether the key file at `path` needs a passphrase.
    pub fn file_is_protected(path: &Path) -> Result<bool, KeyFileError> {
        let bytes = read_limited(path)?;
        if bytes.len() < MAGIC.len() + 2 || &bytes[..MAGIC.len()] != MAGIC {
            return Err(KeyFileError::NotAKeyFile);
        }
        Ok(bytes[MAGIC.len() + 1] == MODE_PASSPHRASE)
    }

    /// Writes the key file (mode 0600, atomically). Refuses to overwrite an existing file.
    pub fn save(&self, path: &Path, protection: Protection<'_>) -> Result<(), KeyFileError> {
        let io = |e| KeyFileError::Io {
            path: path.display().to_string(),
            source: e,
        };
        if path.exists() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "refusing to overwrite an existing key file",
            )));
        }
        let bytes = self.to_file_bytes(protection)?;
        fsutil::write_private(path, &bytes).map_err(io)
    }

    /// Reads a key file.
    pub fn load(path: &Path, passphrase: Option<&str>) -> Result<Self, KeyFileError> {
        let bytes = read_limited(path)?;
        Self::from_file_bytes(&bytes, passphrase)
    }
}

fn read_limited(path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
    let io = |e| KeyFileError::Io {
        path: path.display().to_string(),
        source: e,
    };
    let bytes = fsutil::read_limited(path, MAX_KEY_FILE).map_err(io)?;
    Ok(Zeroizing::new(bytes))
}

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
//!            (p1consent_shared::passphrase, as in the owner's recovery kit)
//! mode 0x00: secret | BLAKE3 check [32] over all bytes before it
//! secret   : signing seed [32] | KEM suite u8 | KEM seed [32]
//! ```
//!
//! The file is written with permissions 0600 (atomically: temporary file, then rename);
//! secrets are zeroized when dropped.

use std::path::Path;

use p1consent_shared::{
    crypto::{self, KemPublicKey, KemSecretKey, KemSuite, PublicId, SigningIdentity},
    passphrase::{self, PassphraseError, ProtectedSection, seal_after_header},
};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::fsutil;

pub use p1consent_shared::passphrase::KdfParams;

const MAGIC: &[u8; 8] = b"P1CPKEY\0";
const VERSION: u8 = 1;
const MODE_PLAIN: u8 = 0;
const MODE_PASSPHRASE: u8 = 1;
const SECRET_LEN: usize = 32 + 1 + 32;
/// Body of a passphrase-protected file: costs, salt, nonce, sealed secret.
const PROTECTED_BODY_LEN: usize = passphrase::OVERHEAD + SECRET_LEN;
const CHECK_LABEL: &str = "p1consent-provider/v1/keyfile-check";
/// Largest key file accepted (the real ones are 107 bytes plain, 143 protected).
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

impl From<PassphraseError> for KeyFileError {
    fn from(e: PassphraseError) -> Self {
        match e {
            PassphraseError::CostOutOfRange(what) => KeyFileError::Corrupt(what),
            PassphraseError::WrongPassphraseOrTampered => KeyFileError::WrongPassphrase,
            PassphraseError::CutShort => KeyFileError::Corrupt("wrong length"),
            PassphraseError::Kdf(e) => KeyFileError::Kdf(e),
        }
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
                seal_after_header(&mut out, pass.as_bytes(), params, &secret)?;
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
                if body.len() != PROTECTED_BODY_LEN {
                    return Err(KeyFileError::Corrupt("wrong length"));
                }
                // Hostile costs are refused before a passphrase is asked for.
                let section = ProtectedSection::parse(bytes, MAGIC.len() + 2)?;
                let pass = passphrase.ok_or(KeyFileError::PassphraseRequired)?;
                let secret = section.open(pass.as_bytes())?;
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

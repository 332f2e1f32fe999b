//! The recovery kit: the owner's secret keys in one passphrase-protected file, so a wallet on
//! another device can take over the identity and rebuild its state from the signed logs on the
//! broker ([`crate::Wallet::init_with_identity`], then [`crate::Wallet::sync`]).
//!
//! The protection is [`p1consent_shared::passphrase`], as in the provider's key file:
//! Argon2id stretches the passphrase into an XChaCha20-Poly1305 key, and every header byte is
//! authenticated as associated data.
//!
//! ```text
//! magic "P1CRKIT\0" (8) | version 0x01 | suite 0x01 (Argon2id v0x13 + XChaCha20-Poly1305) |
//! m_cost_kib u32 | t_cost u32 | p_cost u32 | salt [16] | nonce [24] |
//! XChaCha20-Poly1305(key = Argon2id(passphrase, salt), aad = all 62 bytes before, payload)
//! payload: Ed25519 seed [32] | KEM suite u8 | KEM seed [32] | broker length u16 | broker UTF-8
//! ```
//!
//! Reading is hostile-input safe: size and header are checked before any key derivation, the
//! Argon2 costs are bounded before anything is allocated, and every failure is a
//! [`RecoveryError`]. Secrets are zeroized when dropped.

use std::{
    io::Read,
    path::{Path, PathBuf},
};

use p1consent_shared::{
    crypto::TAG_LEN,
    passphrase::{PARAMS_LEN, PassphraseError, ProtectedSection, seal_after_header},
};
use thiserror::Error;
use zeroize::Zeroizing;

pub use p1consent_shared::passphrase::KdfParams;

use crate::{
    identity::{KEM_SECRET, OwnerIdentity, SIGNING_SECRET},
    secrets::{MemorySecretStore, SecretStore, write_atomic},
};

pub const MAGIC: &[u8; 8] = b"P1CRKIT\0";
pub const VERSION: u8 = 1;
/// Argon2id (v0x13) + XChaCha20-Poly1305.
pub const SUITE_ARGON2ID_XCHACHA: u8 = 0x01;
/// magic, version, suite: what comes before the passphrase-protected section.
const PREFIX_LEN: usize = 8 + 1 + 1;
/// magic, version, suite, three u32 costs, salt, nonce.
pub const HEADER_LEN: usize = PREFIX_LEN + PARAMS_LEN;
const KEYS_LEN: usize = 32 + 1 + 32;
/// Longest broker address carried along.
pub const MAX_BROKER_LEN: usize = 1024;
/// Largest kit accepted (a real one is about 200 bytes).
pub const MAX_KIT_LEN: usize = HEADER_LEN + KEYS_LEN + 2 + MAX_BROKER_LEN + TAG_LEN;
/// Shortest passphrase accepted when writing a kit.
pub const MIN_PASSPHRASE_CHARS: usize = 10;

/// Why a recovery kit could not be written or read. `Display` is one plain sentence.
#[derive(Debug, Error)]
pub enum RecoveryError {
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} already exists: choose another file name")]
    Exists(PathBuf),
    #[error("this file is not a P1 Consent recovery kit")]
    NotAKit,
    #[error("this recovery kit has version {0}, which this wallet cannot read")]
    UnsupportedVersion(u8),
    #[error("this recovery kit uses an unknown protection scheme ({0})")]
    UnsupportedSuite(u8),
    #[error("the file is larger than a recovery kit can be ({max} bytes)")]
    TooLarge { max: usize },
    #[error("the recovery kit is damaged: {0}")]
    Damaged(&'static str),
    #[error("wrong passphrase, or the recovery kit was altered")]
    WrongPassphraseOrTampered,
    #[error("the passphrase is too short: use at least {MIN_PASSPHRASE_CHARS} characters")]
    WeakPassphrase,
    #[error("the broker address is longer than {MAX_BROKER_LEN} bytes")]
    BrokerTooLong,
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

impl From<PassphraseError> for RecoveryError {
    fn from(e: PassphraseError) -> Self {
        match e {
            PassphraseError::CostOutOfRange(what) => RecoveryError::Damaged(what),
            PassphraseError::WrongPassphraseOrTampered => RecoveryError::WrongPassphraseOrTampered,
            PassphraseError::CutShort => RecoveryError::Damaged("cut short"),
            PassphraseError::Kdf(e) => RecoveryError::Kdf(e),
        }
    }
}

/// What a kit restores: the owner identity and the broker the wallet used.
pub struct Recovered {
    pub identity: OwnerIdentity,
    pub broker: Option<String>,
}

impl std::fmt::Debug for Recovered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovered")
            .field("identity", &self.identity)
            .field("broker", &self.broker)
            .finish()
    }
}

/// The bytes of a recovery kit for `identity` (and the broker, so the new device knows where
/// the logs are).
pub fn seal(
    identity: &OwnerIdentity,
    broker: Option<&str>,
    passphrase: &str,
    params: KdfParams,
) -> Result<Vec<u8>, RecoveryError> {
    if passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
        return Err(RecoveryError::WeakPassphrase);
    }
    let broker = broker.unwrap_or("");
    if broker.len() > MAX_BROKER_LEN {
        return Err(RecoveryError::BrokerTooLong);
    }
    let mut payload = Zeroizing::new(Vec::with_capacity(KEYS_LEN + 2 + broker.len()));
    payload.extend_from_slice(&identity.signing.to_seed()[..]);
    payload.push(identity.kem.suite() as u8);
    payload.extend_from_slice(&identity.kem.seed()[..]);
    payload.extend_from_slice(&(broker.len() as u16).to_be_bytes());
    payload.extend_from_slice(broker.as_bytes());

    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + TAG_LEN);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(SUITE_ARGON2ID_XCHACHA);
    seal_after_header(&mut out, passphrase.as_bytes(), params, &payload)?;
    Ok(out)
}

/// Opens the bytes of a recovery kit.
pub fn open(bytes: &[u8], passphrase: &str) -> Result<Recovered, RecoveryError> {
    if bytes.len() > MAX_KIT_LEN {
        return Err(RecoveryError::TooLarge { max: MAX_KIT_LEN });
    }
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(RecoveryError::NotAKit);
    }
    let (version, suite) = match bytes.get(8..10) {
        Some(&[v, s]) => (v, s),
        _ => return Err(RecoveryError::Damaged("cut short")),
    };
    if version != VERSION {
        return Err(RecoveryError::UnsupportedVersion(version));
    }
    if suite != SUITE_ARGON2ID_XCHACHA {
        return Err(RecoveryError::UnsupportedSuite(suite));
    }
    if bytes.len() < HEADER_LEN + KEYS_LEN + 2 + TAG_LEN {
        return Err(RecoveryError::Damaged("cut short"));
    }
    let payload = ProtectedSection::parse(bytes, PREFIX_LEN)?.open(passphrase.as_bytes())?;
    parse_payload(&payload)
}

fn parse_payload(p: &[u8]) -> Result<Recovered, RecoveryError> {
    if p.len() < KEYS_LEN + 2 {
        return Err(RecoveryError::Damaged("keys cut short"));
    }
    let blen = u16::from_be_bytes([p[KEYS_LEN], p[KEYS_LEN + 1]]) as usize;
    let broker = &p[KEYS_LEN + 2..];
    if broker.len() != blen || blen > MAX_BROKER_LEN {
        return Err(RecoveryError::Damaged("broker address length"));
    }
    let broker = std::str::from_utf8(broker)
        .map_err(|_| RecoveryError::Damaged("broker address is not text"))?;
    // The identity's own loader checks lengths and the KEM suite, as for the keyring.
    let store = MemorySecretStore::default();
    let put = |name, v: &[u8]| {
        store
            .put(name, v)
            .map_err(|_| RecoveryError::Damaged("keys"))
    };
    put(SIGNING_SECRET, &p[..32])?;
    put(KEM_SECRET, &p[32..KEYS_LEN])?;
    let identity = OwnerIdentity::load(&store)
        .map_err(|_| RecoveryError::Damaged("keys"))?
        .ok_or(RecoveryError::Damaged("keys"))?;
    Ok(Recovered {
        identity,
        broker: (!broker.is_empty()).then(|| broker.to_string()),
    })
}

/// Writes a recovery kit to `path` (mode 0600, atomically). Never overwrites a file.
pub fn save(
    path: &Path,
    identity: &OwnerIdentity,
    broker: Option<&str>,
    passphrase: &str,
    params: KdfParams,
) -> Result<(), RecoveryError> {
    if path.exists() {
        return Err(RecoveryError::Exists(path.to_path_buf()));
    }
    let bytes = seal(identity, broker, passphrase, params)?;
    write_atomic(path, &bytes, true).map_err(|e| match e {
        crate::WalletError::Io { path, source } => RecoveryError::Io { path, source },
        _ => RecoveryError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        },
    })
}

/// Reads and opens the recovery kit at `path` (at most [`MAX_KIT_LEN`] bytes are read).
pub fn load(path: &Path, passphrase: &str) -> Result<Recovered, RecoveryError> {
    let io = |source| RecoveryError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    f.take(MAX_KIT_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    open(&bytes, passphrase)
}

#[cfg(test)]
mod tests {
    use p1consent_shared::crypto::KemSuite;

    use super::*;

    const PASS: &str = "correct horse battery";
    const BROKER: &str = "mqtts://broker.example:8883";

    fn kit(id: &OwnerIdentity) -> Vec<u8> {
        seal(id, Some(BROKER), PASS, KdfParams::insecure_fast()).unwrap()
    }

    fn same(a: &OwnerIdentity, b: &OwnerIdentity) {
        assert_eq!(a.public(), b.public());
        assert_eq!(a.kem.suite(), b.kem.suite());
        assert_eq!(a.kem.public().to_bytes(), b.kem.public().to_bytes());
        assert_eq!(
            a.root.device_thread_id(&a.public()),
            b.root.device_thread_id(&a.public())
        );
    }

    #[test]
    fn round_trip_restores_the_identity_and_broker() {
        let id = OwnerIdentity::generate();
        let bytes = kit(&id);
        assert_eq!(
            bytes.len(),
            HEADER_LEN + KEYS_LEN + 2 + BROKER.len() + TAG_LEN
        );
        let back = open(&bytes, PASS).unwrap();
        same(&id, &back.identity);
        assert_eq!(back.broker.as_deref(), Some(BROKER));

        // ML-KEM identity, no broker; the file on disk is private and never overwritten.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kit.p1ck");
        let id2 = OwnerIdentity {
            kem: p1consent_shared::crypto::KemSecretKey::generate(KemSuite::X25519MlKem768),
            ..OwnerIdentity::generate()
        };
        save(&path, &id2, None, PASS, KdfParams::insecure_fast()).unwrap();
        let back = load(&path, PASS).unwrap();
        same(&id2, &back.identity);
        assert_eq!(back.broker, None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            save(&path, &id, None, PASS, KdfParams::insecure_fast()),
            Err(RecoveryError::Exists(_))
        ));
        same(&id2, &load(&path, PASS).unwrap().identity);
    }

    #[test]
    fn two_kits_of_one_identity_differ() {
        let id = OwnerIdentity::generate();
        assert_ne!(kit(&id), kit(&id), "fresh salt and nonce every time");
    }

    #[test]
    fn wrong_passphrase_is_refused() {
        let id = OwnerIdentity::generate();
        let bytes = kit(&id);
        for wrong in ["", "correct horse battery ", "Correct horse battery"] {
            assert!(matches!(
                open(&bytes, wrong),
                Err(RecoveryError::WrongPassphraseOrTampered)
            ));
        }
    }

    #[test]
    fn short_passphrase_and_long_broker_are_refused_on_export() {
        let id = OwnerIdentity::generate();
        assert!(matches!(
            seal(&id, None, "short", KdfParams::insecure_fast()),
            Err(RecoveryError::WeakPassphrase)
        ));
        let long = "m".repeat(MAX_BROKER_LEN + 1);
        assert!(matches!(
            seal(&id, Some(&long), PASS, KdfParams::insecure_fast()),
            Err(RecoveryError::BrokerTooLong)
        ));
        // The longest broker still fits under the size limit.
        let longest = "m".repeat(MAX_BROKER_LEN);
        let bytes = seal(&id, Some(&longest), PASS, KdfParams::insecure_fast()).unwrap();
        assert_eq!(bytes.len(), MAX_KIT_LEN);
        assert_eq!(
            open(&bytes, PASS).unwrap().broker.as_deref(),
            Some(&longest[..])
        );
    }

    #[test]
    fn every_tampered_byte_is_rejected() {
        let id = OwnerIdentity::generate();
        let bytes = kit(&id);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            let err = open(&bad, PASS).expect_err(&format!("byte {i} tampered"));
            match i {
                0..8 => assert!(matches!(err, RecoveryError::NotAKit), "{i}: {err}"),
                8 => assert!(
                    matches!(err, RecoveryError::UnsupportedVersion(0)),
                    "{i}: {err}"
                ),
                9 => assert!(
                    matches!(err, RecoveryError::UnsupportedSuite(0)),
                    "{i}: {err}"
                ),
                // Costs: out of range, or a different key.
                10..22 => assert!(
                    matches!(
                        err,
                        RecoveryError::Damaged(_) | RecoveryError::WrongPassphraseOrTampered
                    ),
                    "{i}: {err}"
                ),
                _ => assert!(
                    matches!(err, RecoveryError::WrongPassphraseOrTampered),
                    "{i}: {err}"
                ),
            }
        }
    }

    #[test]
    fn truncated_kits_are_rejected() {
        let id = OwnerIdentity::generate();
        let bytes = kit(&id);
        for n in 0..bytes.len() {
            let err = open(&bytes[..n], PASS).expect_err(&format!("cut to {n} bytes"));
            let expected = match n {
                0..8 => matches!(err, RecoveryError::NotAKit),
                8..10 => matches!(err, RecoveryError::Damaged("cut short")),
                n if n < HEADER_LEN + KEYS_LEN + 2 + TAG_LEN => {
                    matches!(err, RecoveryError::Damaged("cut short"))
                }
                _ => matches!(err, RecoveryError::WrongPassphraseOrTampered),
            };
            assert!(expected, "{n}: {err}");
        }
        // Extra bytes are tampering too.
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            open(&longer, PASS),
            Err(RecoveryError::WrongPassphraseOrTampered)
        ));
    }

    #[test]
    fn oversize_input_is_refused_before_any_work() {
        let id = OwnerIdentity::generate();
        let mut bytes = kit(&id);
        bytes.resize(MAX_KIT_LEN + 1, 0);
        assert!(matches!(
            open(&bytes, PASS),
            Err(RecoveryError::TooLarge { max: MAX_KIT_LEN })
        ));
        // From a file: only the limit is read.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![0u8; 10 * 1024 * 1024]).unwrap();
        assert!(matches!(
            load(&path, PASS),
            Err(RecoveryError::TooLarge { .. })
        ));
        assert!(matches!(
            load(&dir.path().join("missing"), PASS),
            Err(RecoveryError::Io { .. })
        ));
    }

    #[test]
    fn hostile_costs_are_refused_before_deriving() {
        let id = OwnerIdentity::generate();
        let bytes = kit(&id);
        // 4 TiB of memory, 0 passes, 0 lanes, 1000 passes.
        for (at, v) in [(10, u32::MAX), (14, 0), (18, 0), (14, 1000)] {
            let mut bad = bytes.clone();
            bad[at..at + 4].copy_from_slice(&v.to_be_bytes());
            assert!(
                matches!(open(&bad, PASS), Err(RecoveryError::Damaged(_))),
                "cost at {at} = {v}"
            );
        }
    }
}

//! The device's identity: an Ed25519 signing key and a hybrid KEM key, kept in one file
//! readable by the agent's user only (mode 0600), written atomically.

use std::path::Path;

use p1consent_shared::crypto::{
    KemSecretKey, KemSuite, PublicId, SigningIdentity, hex, random_bytes, unhex,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use zeroize::Zeroizing;

#[derive(Debug, Error)]
pub enum IdentityError {
    #[error("identity file {0}: {1}")]
    Io(String, std::io::Error),
    #[error("identity file {0} is damaged: {1}")]
    Corrupt(String, &'static str),
}

pub struct DeviceIdentity {
    pub signing: SigningIdentity,
    pub kem: KemSecretKey,
}

#[derive(Serialize, Deserialize)]
struct IdentityFile {
    version: u8,
    signing_seed: String,
    kem_suite: String,
    kem_seed: String,
}

impl DeviceIdentity {
    pub fn generate(suite: KemSuite) -> Self {
        Self {
            signing: SigningIdentity::generate(),
            kem: KemSecretKey::from_seed(suite, &Zeroizing::new(random_bytes())),
        }
    }

    pub fn public(&self) -> PublicId {
        self.signing.public()
    }

    /// Loads the identity, or creates and saves a new one on first start.
    pub fn load_or_create(path: &Path, suite: KemSuite) -> Result<(Self, bool), IdentityError> {
        if path.exists() {
            return Ok((Self::load(path)?, false));
        }
        let id = Self::generate(suite);
        id.save(path)?;
        Ok((id, true))
    }

    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let name = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|e| IdentityError::Io(name.clone(), e))?;
        if meta.len() > 4096 {
            return Err(IdentityError::Corrupt(name, "too large"));
        }
        let text = Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| IdentityError::Io(name.clone(), e))?,
        );
        let f: IdentityFile = serde_json::from_str(&text)
            .map_err(|_| IdentityError::Corrupt(name.clone(), "not the expected JSON"))?;
        let seed = |s: &str| -> Result<Zeroizing<[u8; 32]>, IdentityError> {
            let v = Zeroizing::new(
                unhex(s).ok_or_else(|| IdentityError::Corrupt(name.clone(), "seed is not hex"))?,
            );
            let mut out = Zeroizing::new([0u8; 32]);
            if v.len() != 32 {
                return Err(IdentityError::Corrupt(name.clone(), "seed is not 32 bytes"));
            }
            out.copy_from_slice(&v);
            Ok(out)
        };
        let suite = KemSuite::from_name(&f.kem_suite)
            .ok_or_else(|| IdentityError::Corrupt(name.clone(), "unknown KEM suite"))?;
        Ok(Self {
            signing: SigningIdentity::from_seed(&*seed(&f.signing_seed)?),
            kem: KemSecretKey::from_seed(suite, &*seed(&f.kem_seed)?),
        })
    }

    pub fn save(&self, path: &Path) -> Result<(), IdentityError> {
        let name = path.display().to_string();
        let f = IdentityFile {
            version: 1,
            signing_seed: hex(&self.signing.to_seed()[..]),
            kem_suite: self.kem.suite().name().into(),
            kem_seed: hex(&self.kem.seed()[..]),
        };
        let text = Zeroizing::new(
            serde_json::to_string_pretty(&f)
                .map_err(|_| IdentityError::Corrupt(name.clone(), "cannot encode"))?,
        );
        write_private(path, text.as_bytes()).map_err(|e| IdentityError::Io(name, e))
    }
}

/// Writes a file readable by its owner only, atomically (temp file + rename + fsync).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    crate::store::restrict_permissions(&tmp)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_loaded_with_tight_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("device.key");
        let (a, created) = DeviceIdentity::load_or_create(&p, KemSuite::X25519MlKem768).unwrap();
        assert!(created);
        let (b, created) = DeviceIdentity::load_or_create(&p, KemSuite::DEFAULT).unwrap();
        assert!(!created);
        assert_eq!(a.public(), b.public());
        assert_eq!(a.kem.public(), b.kem.public());
        assert_eq!(b.kem.suite(), KemSuite::X25519MlKem768);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn damaged_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("device.key");
        std::fs::write(&p, "{\"version\":1}").unwrap();
        assert!(matches!(
            DeviceIdentity::load(&p),
            Err(IdentityError::Corrupt(_, _))
        ));
        std::fs::write(&p, vec![0xFFu8; 10_000]).unwrap();
        assert!(matches!(
            DeviceIdentity::load(&p),
            Err(IdentityError::Corrupt(_, "too large"))
        ));
    }
}

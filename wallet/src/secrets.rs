//! Where the owner's secrets live. The trait is deliberately tiny (bytes by name) so other
//! stores (an OS keyring in the desktop app) can be added without touching the wallet.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    path::{Path, PathBuf},
    sync::Mutex,
};

use p1consent_shared::crypto::{hex, unhex};
use zeroize::Zeroizing;

use crate::error::{Result, WalletError};

/// Largest secrets file accepted.
const MAX_SECRETS_FILE: u64 = 64 * 1024;

/// Keeps named secrets (small byte strings).
pub trait SecretStore: Send + Sync {
    fn get(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>>;
    fn put(&self, name: &str, value: &[u8]) -> Result<()>;
    fn delete(&self, name: &str) -> Result<()>;
}

/// All secrets in one JSON file (`name -> hex`), mode 0600, replaced atomically (a temporary
/// file written, synced, then renamed over the old one).
pub struct FileSecretStore {
    path: PathBuf,
    lock: Mutex<()>,
}

impl FileSecretStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            lock: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(&self) -> Result<BTreeMap<String, Zeroizing<String>>> {
        let mut f = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(WalletError::io(&self.path, e)),
        };
        let mut text = Zeroizing::new(String::new());
        Read::by_ref(&mut f)
            .take(MAX_SECRETS_FILE + 1)
            .read_to_string(&mut text)
            .map_err(|e| WalletError::io(&self.path, e))?;
        if text.len() as u64 > MAX_SECRETS_FILE {
            return Err(self.corrupt("larger than 64 KiB"));
        }
        let map: BTreeMap<String, String> =
            serde_json::from_str(&text).map_err(|e| self.corrupt(&e.to_string()))?;
        Ok(map
            .into_iter()
            .map(|(k, v)| (k, Zeroizing::new(v)))
            .collect())
    }

    fn corrupt(&self, reason: &str) -> WalletError {
        WalletError::Corrupt {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    fn save(&self, map: &BTreeMap<String, Zeroizing<String>>) -> Result<()> {
        let plain: BTreeMap<&str, &str> = map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let text = Zeroizing::new(
            serde_json::to_vec_pretty(&plain).map_err(|e| WalletError::Secret(e.to_string()))?,
        );
        write_atomic(&self.path, &text, true)
    }
}

impl SecretStore for FileSecretStore {
    fn get(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let _g = self.lock.lock().map_err(|_| WalletError::Secret("lock poisoned".into()))?;
        let map = self.load()?;
        match map.get(name) {
            None => Ok(None),
            Some(h) => unhex(h)
                .map(|v| Some(Zeroizing::new(v)))
                .ok_or_else(|| self.corrupt(&format!("secret {name:?} is not hex"))),
        }
    }

    fn put(&self, name: &str, value: &[u8]) -> Result<()> {
        let _g = self.lock.lock().map_err(|_| WalletError::Secret("lock poisoned".into()))?;
        let mut map = self.load()?;
        map.insert(name.to_string(), Zeroizing::new(hex(value)));
        self.save(&map)
    }

    fn delete(&self, name: &str) -> Result<()> {
        let _g = self.lock.lock().map_err(|_| WalletError::Secret("lock poisoned".into()))?;
        let mut map = self.load()?;
        if map.remove(name).is_some() {
            self.save(&map)?;
        }
        Ok(())
    }
}

/// Secrets in memory only (tests, or a caller that manages persistence itself).
#[derive(Default)]
pub struct MemorySecretStore(Mutex<BTreeMap<String, Zeroizing<Vec<u8>>>>);

impl SecretStore for MemorySecretStore {
    fn get(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let m = self.0.lock().map_err(|_| WalletError::Secret("lock poisoned".into()))?;
        Ok(m.get(name).cloned())
    }
    fn put(&self, name: &str, value: &[u8]) -> Result<()> {
        let mut m = self.0.lock().map_err(|_| WalletError::Secret("lock poisoned".into()))?;
        m.insert(name.to_string(), Zeroizing::new(value.to_vec()));
        Ok(())
    }
    fn delete(&self, name: &str) -> Result<()> {
        let mut m = self.0.lock().map_err(|_| WalletError::Secret("lock poisoned".into()))?;
        m.remove(name);
        Ok(())
    }
}

/// Writes `bytes` to `path` atomically: a unique temporary file next to it (mode 0600 if
/// `private`), synced, renamed over `path`, then the directory synced.
pub fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| WalletError::io(dir, e))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(
        ".{name}.{}.tmp",
        p1consent_shared::crypto::OpaqueId::random()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(if private { 0o600 } else { 0o644 });
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(WalletError::io(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_store_round_trip_and_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileSecretStore::new(dir.path().join("secrets.json"));
        assert!(s.get("a").unwrap().is_none());
        s.put("a", b"hello").unwrap();
        s.put("b", &[0, 1, 2]).unwrap();
        assert_eq!(s.get("a").unwrap().unwrap().as_slice(), b"hello");
        s.delete("a").unwrap();
        assert!(s.get("a").unwrap().is_none());
        assert_eq!(s.get("b").unwrap().unwrap().as_slice(), &[0, 1, 2]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(s.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Only the secrets file remains (no temporary files left behind).
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn damaged_file_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secrets.json");
        std::fs::write(&p, b"{not json").unwrap();
        let s = FileSecretStore::new(&p);
        assert!(matches!(s.get("a"), Err(WalletError::Corrupt { .. })));
        std::fs::write(&p, br#"{"a":"zz"}"#).unwrap();
        assert!(matches!(s.get("a"), Err(WalletError::Corrupt { .. })));
    }
}

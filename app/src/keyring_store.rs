//! The owner's secrets in the operating system's keyring (Secret Service on Linux, Keychain on
//! macOS, Credential Manager on Windows), behind the wallet library's [`SecretStore`] trait.
//!
//! The `keyring` crate silently falls back to an in-memory mock when none of its platform
//! features is enabled; `Cargo.toml` enables the real stores per platform, and
//! [`KeyringSecretStore::probe`] refuses to start on a store that does not keep what it is given.

use keyring::{Entry, Error as KeyringError};
use p1consent_wallet::{Result, SecretStore, WalletError};
use zeroize::Zeroizing;

/// The keyring "service" every entry of the wallet is filed under.
pub const SERVICE: &str = "p1consent-wallet";

/// Named secrets of one wallet profile (one data directory), each a keyring entry with service
/// [`SERVICE`] and user `<profile>/<name>`.
pub struct KeyringSecretStore {
    profile: String,
}

fn err(e: KeyringError) -> WalletError {
    WalletError::Secret(format!("the system keyring failed: {e}"))
}

impl KeyringSecretStore {
    /// `profile` separates wallets of the same user (the app uses its data directory).
    pub fn new(profile: impl Into<String>) -> Self {
        Self {
            profile: profile.into(),
        }
    }

    fn entry(&self, name: &str) -> Result<Entry> {
        Entry::new(SERVICE, &format!("{}/{}", self.profile, name)).map_err(err)
    }

    /// Writes, reads back and deletes a test entry: fails when no keyring is reachable (no
    /// Secret Service on the session bus, locked keyring) instead of failing later.
    pub fn probe(&self) -> Result<()> {
        let name = "probe";
        let value = b"p1consent keyring probe";
        self.put(name, value)?;
        let back = self.get(name)?;
        self.delete(name)?;
        match back {
            Some(v) if v.as_slice() == value => Ok(()),
            _ => Err(WalletError::Secret(
                "the system keyring did not keep a test secret".into(),
            )),
        }
    }
}

impl SecretStore for KeyringSecretStore {
    fn get(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        match self.entry(name)?.get_secret() {
            Ok(v) => Ok(Some(Zeroizing::new(v))),
            Err(KeyringError::NoEntry) => Ok(None),
            Err(e) => Err(err(e)),
        }
    }

    fn put(&self, name: &str, value: &[u8]) -> Result<()> {
        self.entry(name)?.set_secret(value).map_err(err)
    }

    fn delete(&self, name: &str) -> Result<()> {
        match self.entry(name)?.delete_credential() {
            Ok(()) | Err(KeyringError::NoEntry) => Ok(()),
            Err(e) => Err(err(e)),
        }
    }
}

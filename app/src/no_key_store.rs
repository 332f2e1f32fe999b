//! The secret store of a platform without a supported key store (Android for now: the `keyring`
//! crate has no Android backend and would silently fall back to an in-memory mock).
//!
//! Every operation fails with one plain sentence, which the UI shows when the owner tries to
//! create or restore an identity. The app never falls back to keeping the keys in a file in
//! clear on such a platform; `P1CONSENT_SECRET_STORE=file` stays an explicit choice.

use p1consent_wallet::{Result, SecretStore, WalletError};
use zeroize::Zeroizing;

/// What every operation of [`NoKeyStore`] answers.
pub const NO_KEY_STORE: &str = "no secure key store on this platform yet: \
     the wallet cannot keep your keys here";

/// A secret store that keeps nothing and says why.
pub struct NoKeyStore;

fn unavailable() -> WalletError {
    WalletError::Secret(NO_KEY_STORE.into())
}

impl SecretStore for NoKeyStore {
    fn get(&self, _name: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        Err(unavailable())
    }

    fn put(&self, _name: &str, _value: &[u8]) -> Result<()> {
        Err(unavailable())
    }

    fn delete(&self, _name: &str) -> Result<()> {
        Err(unavailable())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use p1consent_wallet::WalletOptions;

    use super::*;
    use crate::core::AppCore;

    #[test]
    fn every_operation_says_there_is_no_key_store() {
        let expected = format!("secret store: {NO_KEY_STORE}");
        let store = NoKeyStore;
        assert_eq!(
            store.get("k").err().map(|e| e.to_string()),
            Some(expected.clone())
        );
        assert_eq!(
            store.put("k", b"v").err().map(|e| e.to_string()),
            Some(expected.clone())
        );
        assert_eq!(
            store.delete("k").err().map(|e| e.to_string()),
            Some(expected)
        );
    }

    #[tokio::test]
    async fn creating_an_identity_fails_and_leaves_no_keys_on_disk() {
        let dir = tempfile::tempdir().expect("temp dir");
        let core = AppCore::new(
            dir.path().to_path_buf(),
            Arc::new(|_| Box::new(NoKeyStore)),
            "none",
            WalletOptions::default(),
        );
        let err = core.create_identity(None).await.err();
        assert_eq!(err, Some(format!("secret store: {NO_KEY_STORE}")));
        let files: Vec<_> = std::fs::read_dir(dir.path())
            .expect("read data dir")
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        assert!(files.is_empty(), "nothing written, found {files:?}");
        let status = core.status().await.expect("status");
        assert!(!status.initialised);
        assert_eq!(status.secret_store, "none");
    }
}

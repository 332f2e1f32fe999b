//! The keyring secret store against a real Secret Service (gnome-keyring on a private D-Bus
//! session). Ignored by plain `cargo test` (it needs that session); run it with
//! `scripts/test-keyring.sh`, which starts dbus-run-session + gnome-keyring-daemon.
#![cfg(target_os = "linux")]

use std::sync::Arc;

use p1consent_app_lib::{
    core::AppCore,
    keyring_store::{KeyringSecretStore, SERVICE},
};
use p1consent_wallet::{
    SecretStore, WalletOptions,
    identity::{KEM_SECRET, SIGNING_SECRET},
};

#[test]
#[ignore = "needs a Secret Service: run scripts/test-keyring.sh"]
fn secrets_round_trip_through_the_secret_service() {
    let profile = format!("test-{}", std::process::id());
    let store = KeyringSecretStore::new(profile.clone());
    store
        .probe()
        .expect("keyring probe (is a Secret Service running and unlocked?)");
    assert_eq!(store.get("missing").unwrap(), None);
    let secret: Vec<u8> = (0u8..=255).collect();
    store.put("k", &secret).unwrap();
    assert_eq!(
        store.get("k").unwrap().as_deref().map(|v| v.as_slice()),
        Some(&secret[..])
    );
    // Stored in the real keyring, not a mock: a second handle (new connection) reads it.
    let other = keyring::Entry::new(SERVICE, &format!("{profile}/k")).unwrap();
    assert_eq!(other.get_secret().unwrap(), secret);
    store.put("k", b"replaced").unwrap();
    assert_eq!(
        store.get("k").unwrap().as_deref().map(|v| v.as_slice()),
        Some(&b"replaced"[..])
    );
    store.delete("k").unwrap();
    store.delete("k").unwrap();
    assert_eq!(store.get("k").unwrap(), None);
}

#[tokio::test]
#[ignore = "needs a Secret Service: run scripts/test-keyring.sh"]
async fn identity_keys_live_in_the_keyring() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().display().to_string();
    let p = profile.clone();
    let core = AppCore::new(
        dir.path().to_path_buf(),
        Arc::new(move |_| Box::new(KeyringSecretStore::new(p.clone()))),
        "keyring",
        WalletOptions::default(),
    );
    let s = core.create_identity(None).await.unwrap();
    assert!(s.initialised);
    // No key file on disk: only the state.
    let files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!files.iter().any(|f| f.contains("secret")), "{files:?}");
    // A new app instance finds the same identity through the keyring.
    let p = profile.clone();
    let again = AppCore::new(
        dir.path().to_path_buf(),
        Arc::new(move |_| Box::new(KeyringSecretStore::new(p.clone()))),
        "keyring",
        WalletOptions::default(),
    );
    assert_eq!(again.status().await.unwrap().owner, s.owner);
    // The keys are keyring entries; clean them up.
    let store = KeyringSecretStore::new(profile.clone());
    for name in [SIGNING_SECRET, KEM_SECRET] {
        assert!(store.get(name).unwrap().is_some(), "{name} in the keyring");
        store.delete(name).unwrap();
    }
}

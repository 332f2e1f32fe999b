//! Hostile input without a broker: every link, file and code is refused with a typed error.

use std::time::Duration;

use p1consent_shared::{crypto::SigningIdentity, pairing::PairingOffer};
use p1consent_wallet::{Wallet, WalletError, WalletOptions};

fn wallet(dir: &std::path::Path) -> Wallet {
    let opts = WalletOptions {
        broker: Some("mqtt://127.0.0.1:1".into()),
        timeout: Duration::from_secs(2),
    };
    Wallet::init(dir, Wallet::file_secrets(dir), opts).expect("init")
}

fn now() -> u64 {
    p1consent_wallet::wallet::now_s()
}

#[tokio::test]
async fn garbage_links_and_codes_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = wallet(dir.path());
    for bad in [
        "",
        "p1consent://request?v=1&d=!!!",
        "p1consent://request?v=2&d=AAAA",
        "https://example.com/?v=1&d=AAAA",
        &format!("p1consent://request?v=1&d={}", "A".repeat(5000)),
    ] {
        assert!(
            matches!(w.open_request(bad), Err(WalletError::Request(_))),
            "{bad:.60}"
        );
    }
    assert!(w.pending_requests().is_empty());

    for bad in [
        "p1consent://pair?v=1&d=xx",
        "p1consent://pair?v=9&d=AAAA",
        "p1consent://pair",
    ] {
        assert!(
            matches!(w.pair(bad).await, Err(WalletError::BadPairingCode(_))),
            "{bad}"
        );
    }
    // An expired pairing code.
    let device = SigningIdentity::generate();
    let offer = PairingOffer::new(device.public(), "mqtt://127.0.0.1:1", None, now() + 1).unwrap();
    let link = offer.to_link().to_string();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(matches!(
        w.pair(&link).await,
        Err(WalletError::PairingCodeExpired)
    ));
    // A file that is not an image, and a missing one.
    let junk = dir.path().join("junk.png");
    std::fs::write(&junk, b"not a png").unwrap();
    assert!(matches!(
        w.pair(junk.to_str().unwrap()).await,
        Err(WalletError::Qr(_))
    ));
    assert!(matches!(
        w.pair("/nonexistent/qr.png").await,
        Err(WalletError::Io { .. })
    ));
    // A valid code, but nothing listens at the broker.
    let offer = PairingOffer::new(device.public(), "mqtt://127.0.0.1:1", None, now() + 600).unwrap();
    assert!(matches!(
        w.pair(&offer.to_link()).await,
        Err(WalletError::BrokerUnreachable { .. })
    ));
    assert!(matches!(
        w.grant("abcd", "x").await,
        Err(WalletError::BrokerUnreachable { .. })
    ));
    assert!(matches!(w.decline("abcd"), Err(WalletError::UnknownRequest(_))));
    assert!(matches!(w.receipt("abcd"), Err(WalletError::UnknownConsent(_))));
}

#[test]
fn damaged_state_is_refused_and_init_twice_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    drop(wallet(dir.path()));
    assert!(matches!(
        Wallet::init(dir.path(), Wallet::file_secrets(dir.path()), WalletOptions::default()),
        Err(WalletError::AlreadyInitialised(_))
    ));
    std::fs::write(dir.path().join("wallet.json"), b"{\"version\":1,").unwrap();
    assert!(matches!(
        Wallet::open(dir.path(), Wallet::file_secrets(dir.path()), WalletOptions::default()),
        Err(WalletError::Corrupt { .. })
    ));
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        Wallet::open(empty.path(), Wallet::file_secrets(empty.path()), WalletOptions::default()),
        Err(WalletError::NotInitialised(_))
    ));
}

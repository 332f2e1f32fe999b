//! The app's command layer, headless: a temporary data directory, the file secret store, and
//! real signed request links (genuine, tampered, expired). No window, no broker.

use std::{path::Path, sync::Arc};

use p1consent_app_lib::core::{AppCore, SecretsFactory, is_our_link};
use p1consent_shared::{
    consent::{Field, FieldSet, RequestDraft, Resolution, SignedRequest},
    crypto::{KemSecretKey, KemSuite, SigningIdentity, random_bytes},
};
use p1consent_wallet::{Wallet, WalletOptions, wallet::now_s};

fn file_secrets() -> SecretsFactory {
    Arc::new(|dir: &Path| Wallet::file_secrets(dir))
}

fn core(dir: &Path) -> AppCore {
    AppCore::new(
        dir.to_path_buf(),
        file_secrets(),
        "file",
        WalletOptions {
            // Nothing listens here: commands that need the broker fail quickly and plainly.
            broker: Some("mqtt://127.0.0.1:9".into()),
            timeout: std::time::Duration::from_secs(2),
        },
    )
}

fn request_link(link_expires_in: i64) -> String {
    let signing = SigningIdentity::generate();
    let kem = KemSecretKey::generate(KemSuite::DEFAULT);
    let t = now_s();
    let draft = RequestDraft {
        provider_kem: kem.public().clone(),
        controller: "Wattt Insights B.V.".into(),
        contact: "privacy@wattt.example".into(),
        purpose: "Energy saving advice".into(),
        policy_url: Some("https://wattt.example/privacy".into()),
        jurisdiction: "NL".into(),
        fields: FieldSet::empty()
            .with(Field::EnergyDelivered)
            .with(Field::PowerDelivered),
        resolution: Resolution::Raw,
        retention_days: 90,
        consent_expires_at: t + 30 * 86_400,
        link_expires_at: (t as i64 + link_expires_in) as u64,
        nonce: random_bytes(),
        created_at: t - 7200,
    };
    SignedRequest::create(&signing, draft)
        .expect("request")
        .to_link()
}

#[tokio::test]
async fn identity_request_review_decline_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    let core = core(dir.path());

    let s = core.status().await.unwrap();
    assert!(!s.initialised);
    let err = core.devices().await.unwrap_err();
    assert!(err.contains("create one on the Welcome page"), "{err}");

    let s = core.create_identity(None).await.unwrap();
    assert!(s.initialised);
    assert_eq!(s.secret_store, "file");
    assert!(dir.path().join("secrets.json").exists());
    assert!(
        core.create_identity(None).await.is_err(),
        "second identity refused"
    );

    // A genuine request: shown in plain words, kept as pending.
    let link = request_link(86_400);
    assert!(is_our_link(&link));
    let r = core.open_request(link.clone()).await.unwrap();
    assert_eq!(r.summary.controller, "Wattt Insights B.V.");
    assert_eq!(r.retention, "kept for 90 days");
    assert_eq!(r.summary.fields.len(), 2);
    assert!(r.consent_expires.ends_with("UTC"));
    assert_eq!(core.pending_requests().await.unwrap().len(), 1);
    assert_eq!(core.status().await.unwrap().pending_requests, 1);

    // Approve needs a paired meter (and a broker): a plain error, nothing granted.
    let err = core
        .grant(r.summary.request_id.clone(), "nothing".into())
        .await
        .unwrap_err();
    assert!(!err.is_empty());

    // Declined: forgotten.
    core.decline(r.summary.request_id.clone()).await.unwrap();
    assert!(core.pending_requests().await.unwrap().is_empty());

    // No consents; the broker is unreachable, so the list says it is offline.
    let list = core.consents(true).await.unwrap();
    assert!(list.consents.is_empty());
    assert!(list.offline.is_some());
    assert!(core.consents(false).await.unwrap().offline.is_none());

    let audit = core.audit().await.unwrap();
    assert!(audit.verified);
    assert_eq!(audit.rejected, 0);
    assert!(core.devices().await.unwrap().is_empty());

    // A second app on the same folder opens the same identity.
    let again = self::core(dir.path());
    assert_eq!(again.status().await.unwrap().owner, s.owner);
}

#[tokio::test]
async fn tampered_and_expired_links_are_refused_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let core = core(dir.path());
    core.create_identity(None).await.unwrap();

    let link = request_link(86_400);
    // Change one character of the signed payload.
    let i = link.len() - 10;
    let c = link.as_bytes()[i];
    let swapped = if c == b'A' { 'B' } else { 'A' };
    let mut bad = link.clone();
    bad.replace_range(i..i + 1, &swapped.to_string());
    let err = core.open_request(bad).await.unwrap_err();
    assert!(err.starts_with("the request link is not valid"), "{err}");

    let expired = request_link(-60);
    let err = core.open_request(expired).await.unwrap_err();
    assert!(
        err.contains("expired") || err.contains("not valid"),
        "{err}"
    );

    let err = core.open_request("hello".into()).await.unwrap_err();
    assert!(!err.is_empty());
    assert!(core.pending_requests().await.unwrap().is_empty());

    let err = core.pair("not a code".into()).await.unwrap_err();
    assert!(err.contains("not a pairing code"), "{err}");
    let err = core.pair_image(b"not an image".to_vec()).await.unwrap_err();
    assert!(err.contains("QR"), "{err}");
}

#[test]
fn pending_link_is_taken_once() {
    let dir = tempfile::tempdir().unwrap();
    let core = core(dir.path());
    assert_eq!(core.take_pending_link(), None);
    core.set_pending_link("p1consent://request?x".into());
    assert_eq!(
        core.take_pending_link().as_deref(),
        Some("p1consent://request?x")
    );
    assert_eq!(core.take_pending_link(), None);
    assert!(!is_our_link("https://example.org"));
}

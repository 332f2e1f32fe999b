//! Key file protection and request links.

use p1consent_provider::{
    KdfParams, KeyFileError, Protection, ProviderKeys, RequestBuilder, request,
};
use p1consent_shared::{
    consent::{Field, FieldSet, RequestError, Resolution, SignedRequest},
    crypto::KemSuite,
};

fn fast(pass: &str) -> Protection<'_> {
    Protection::Passphrase(pass, KdfParams::insecure_fast())
}

#[test]
fn key_file_round_trip_protected_and_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    let keys = ProviderKeys::generate(KemSuite::DEFAULT);
    keys.save(&path, fast("a long passphrase")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    assert!(ProviderKeys::file_is_protected(&path).unwrap());
    let back = ProviderKeys::load(&path, Some("a long passphrase")).unwrap();
    assert_eq!(back.public(), keys.public());
    assert_eq!(back.kem_public(), keys.kem_public());
    // The file never contains the seeds in clear.
    let bytes = std::fs::read(&path).unwrap();
    let seed = keys.signing().to_seed();
    assert!(!bytes.windows(32).any(|w| w == &seed[..]));
    // Refuses to overwrite.
    assert!(matches!(
        keys.save(&path, Protection::Unprotected),
        Err(KeyFileError::Io { .. })
    ));
}

#[test]
fn key_file_mlkem_and_unprotected_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    let keys = ProviderKeys::generate(KemSuite::X25519MlKem768);
    keys.save(&path, Protection::Unprotected).unwrap();
    assert!(!ProviderKeys::file_is_protected(&path).unwrap());
    let back = ProviderKeys::load(&path, None).unwrap();
    assert_eq!(back.public(), keys.public());
    assert_eq!(back.kem().suite(), KemSuite::X25519MlKem768);
}

#[test]
fn wrong_or_missing_passphrase_is_a_typed_error() {
    let keys = ProviderKeys::generate(KemSuite::DEFAULT);
    let bytes = keys.to_file_bytes(fast("right passphrase")).unwrap();
    assert!(matches!(
        ProviderKeys::from_file_bytes(&bytes, Some("wrong passphrase")),
        Err(KeyFileError::WrongPassphrase)
    ));
    assert!(matches!(
        ProviderKeys::from_file_bytes(&bytes, None),
        Err(KeyFileError::PassphraseRequired)
    ));
}

#[test]
fn tampered_key_files_are_detected() {
    let keys = ProviderKeys::generate(KemSuite::DEFAULT);
    let protected = keys.to_file_bytes(fast("pass phrase")).unwrap();
    // Every byte after the magic/version/mode (KDF params, salt, nonce, ciphertext).
    for i in 10..protected.len() {
        let mut t = protected.clone();
        t[i] ^= 0x01;
        let r = ProviderKeys::from_file_bytes(&t, Some("pass phrase"));
        assert!(
            matches!(
                r,
                Err(KeyFileError::WrongPassphrase) | Err(KeyFileError::Corrupt(_))
            ),
            "byte {i} flipped was not detected"
        );
    }
    let plain = keys.to_file_bytes(Protection::Unprotected).unwrap();
    for i in 10..plain.len() {
        let mut t = plain.clone();
        t[i] ^= 0x80;
        assert!(
            matches!(
                ProviderKeys::from_file_bytes(&t, None),
                Err(KeyFileError::Corrupt(_))
            ),
            "byte {i} flipped was not detected"
        );
    }
    assert!(matches!(
        ProviderKeys::from_file_bytes(b"hello", None),
        Err(KeyFileError::NotAKeyFile)
    ));
    let mut v = plain.clone();
    v[8] = 9;
    assert!(matches!(
        ProviderKeys::from_file_bytes(&v, None),
        Err(KeyFileError::UnsupportedVersion(9))
    ));
    assert!(matches!(
        ProviderKeys::from_file_bytes(&plain[..plain.len() - 1], None),
        Err(KeyFileError::Corrupt(_))
    ));
    // Hostile KDF parameters are refused before any allocation.
    let mut huge = protected.clone();
    huge[10..14].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        ProviderKeys::from_file_bytes(&huge, Some("pass phrase")),
        Err(KeyFileError::Corrupt(_))
    ));
}

fn builder() -> RequestBuilder {
    RequestBuilder::new("Wattt Insights B.V.", "privacy@wattt.example")
        .purpose("Energy saving advice")
        .fields(
            FieldSet::empty()
                .with(Field::EnergyDelivered)
                .with(Field::PowerDelivered),
        )
        .resolution(Resolution::QuarterHour)
        .retention_days(90)
        .valid_for(30 * 86_400)
        .policy_url("https://wattt.example/privacy")
        .jurisdiction("NL")
}

#[test]
fn request_link_verifies_and_tampered_link_does_not() {
    let keys = ProviderKeys::generate(KemSuite::DEFAULT);
    let now = 1_767_225_600;
    let req = builder().build_at(&keys, now).unwrap();
    let link = req.to_link();
    let v = SignedRequest::from_link(&link, now + 10).unwrap();
    let c = v.content();
    assert_eq!(c.provider, keys.public());
    assert_eq!(&c.provider_kem, keys.kem_public());
    assert_eq!(c.controller, "Wattt Insights B.V.");
    assert_eq!(c.resolution, Resolution::QuarterHour);
    assert_eq!(c.retention_days, 90);
    assert_eq!(c.consent_expires_at, now + 30 * 86_400);
    assert_eq!(v.signed().consent_id(), req.consent_id());

    // Flip one character of the payload (far from the end to keep base64 canonical).
    let pos = link.len() - 200;
    let mut chars: Vec<char> = link.chars().collect();
    chars[pos] = if chars[pos] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    assert!(matches!(
        SignedRequest::from_link(&tampered, now + 10),
        Err(RequestError::BadSignature) | Err(RequestError::Malformed(_))
    ));
    // Expired link.
    assert!(matches!(
        SignedRequest::from_link(&link, now + 31 * 86_400),
        Err(RequestError::LinkExpired { .. })
    ));
    // A builder without purpose or fields is refused.
    assert!(
        RequestBuilder::new("X", "x@example.org")
            .fields(FieldSet::empty().with(Field::Gas))
            .build_at(&keys, now)
            .is_err()
    );
    assert!(
        RequestBuilder::new("X", "x@example.org")
            .purpose("p")
            .build_at(&keys, now)
            .is_err()
    );
}

#[test]
fn request_qr_codes_carry_the_link() {
    let keys = ProviderKeys::generate(KemSuite::DEFAULT);
    let link = builder().build(&keys).unwrap().to_link();
    let png = request::png_qr(&link).unwrap();
    assert_eq!(p1consent_shared::qr::decode_image(&png).unwrap(), link);
    let term = request::terminal_qr(&link).unwrap();
    assert!(term.contains('█'));
}

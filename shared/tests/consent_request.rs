//! Provider requests and their links.

mod consent_common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use consent_common::*;
use p1consent_shared::consent::request::{MAX_LINK_LEN, MAX_REQUEST_LEN};
use p1consent_shared::consent::scope::Field;
use p1consent_shared::consent::{FieldSet, RequestError, Resolution, SignedRequest};
use p1consent_shared::crypto::KemSuite;
use p1consent_shared::wire::WireError;

#[test]
fn link_round_trip_returns_the_signed_content() {
    let p = provider_a();
    let req = request(&p);
    let link = req.to_link();
    assert!(link.starts_with("p1consent://request?v=1&d="));
    let v = SignedRequest::from_link(&link, NOW + 10).unwrap();
    let c = v.content();
    assert_eq!(c.provider, p.id.public());
    assert_eq!(&c.provider_kem, p.kem.public());
    assert_eq!(c.controller, "Wattt Insights B.V.");
    assert_eq!(c.contact, "privacy@wattt.example");
    assert_eq!(
        c.policy_url.as_deref(),
        Some("https://wattt.example/privacy")
    );
    assert_eq!(c.jurisdiction, "NL");
    assert_eq!(
        c.fields.iter().collect::<Vec<_>>(),
        vec![Field::EnergyDelivered, Field::PowerDelivered, Field::Gas]
    );
    assert_eq!(c.resolution, Resolution::Minute);
    assert_eq!(c.retention_days, 365);
    assert_eq!(c.nonce, [7; 16]);
    assert_eq!(v.signed().bytes(), req.bytes());
    assert_eq!(v.signed().consent_id(), req.consent_id());
    assert_eq!(&req.id()[..16], &req.consent_id().0);
    // Any params order is accepted, nothing else.
    let d = link.split("d=").nth(1).unwrap();
    let swapped = format!("p1consent://request?d={d}&v=1");
    assert!(SignedRequest::from_link(&swapped, NOW).is_ok());
}

#[test]
fn link_lengths_per_kem_suite_fit_a_qr_code() {
    for suite in [KemSuite::X25519Sntrup761, KemSuite::X25519MlKem768] {
        let p = party(3, suite);
        let req = request(&p);
        let link = req.to_link();
        println!(
            "{}: request {} bytes, link {} chars",
            suite.name(),
            req.bytes().len(),
            link.len()
        );
        assert!(
            link.len() < 2200,
            "{} link is {} chars",
            suite.name(),
            link.len()
        );
        // The maximal request still fits both limits.
        let mut d = draft(&p);
        d.controller = "c".repeat(100);
        d.contact = "k".repeat(200);
        d.purpose = "p".repeat(500);
        d.policy_url = Some(format!("https://{}", "u".repeat(192)));
        d.jurisdiction = "EU-NL-01".into();
        let max = SignedRequest::create(&p.id, d).unwrap();
        assert!(max.bytes().len() <= MAX_REQUEST_LEN);
        assert!(max.to_link().len() <= MAX_LINK_LEN);
        SignedRequest::from_link(&max.to_link(), NOW).unwrap();
    }
}

#[test]
fn tampered_links_fail_with_typed_errors_never_panic() {
    let link = request(&provider_a()).to_link();
    let prefix = "p1consent://request?v=1&d=".len();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = link.as_bytes();
    let last = bytes.len() - 1;
    for (n, i) in (prefix..bytes.len()).step_by(7).chain([last]).enumerate() {
        let mut t = bytes.to_vec();
        let replacement = alphabet
            .iter()
            .copied()
            .cycle()
            .skip(n % 64)
            .find(|c| *c != t[i])
            .unwrap();
        t[i] = replacement;
        let t = String::from_utf8(t).unwrap();
        let err = SignedRequest::from_link(&t, NOW).unwrap_err();
        match err {
            RequestError::BadSignature | RequestError::Malformed(_) => {}
            // The last character may carry non-zero padding bits.
            RequestError::BadLink(_) if i == last => {}
            other => panic!("position {i}: unexpected {other:?}"),
        }
    }
    // A byte of the signed body flipped (decodes fine) is a bad signature.
    let req = request(&provider_a());
    let mut raw = req.bytes().to_vec();
    let mid = raw.len() / 2;
    raw[mid] ^= 0x01;
    let forged = format!("p1consent://request?v=1&d={}", URL_SAFE_NO_PAD.encode(&raw));
    assert_eq!(
        SignedRequest::from_link(&forged, NOW).unwrap_err(),
        RequestError::BadSignature
    );
    // Re-signed by someone else but claiming provider A: bad signature.
    let other = provider_b();
    let mut raw = req.bytes().to_vec();
    let n = raw.len() - 64;
    let sig = other.id.sign(&raw[..n]);
    raw[n..].copy_from_slice(&sig);
    assert_eq!(
        SignedRequest::decode(&raw).unwrap_err(),
        RequestError::BadSignature
    );
    // Truncated.
    assert!(matches!(
        SignedRequest::decode(&req.bytes()[..40]).unwrap_err(),
        RequestError::Malformed(WireError::Truncated { .. })
    ));
}

#[test]
fn link_times_are_checked() {
    let p = provider_a();
    let link = request(&p).to_link();
    assert_eq!(
        SignedRequest::from_link(&link, NOW + DAY).unwrap_err(),
        RequestError::LinkExpired { at: NOW + DAY }
    );
    assert!(SignedRequest::from_link(&link, NOW + DAY - 1).is_ok());
    // Created 5 minutes ahead is tolerated, 5 minutes and 1 second is not.
    assert!(SignedRequest::from_link(&link, NOW - 300).is_ok());
    assert_eq!(
        SignedRequest::from_link(&link, NOW - 301).unwrap_err(),
        RequestError::FromTheFuture
    );
    // Consent period over: only reachable when link and consent expire together.
    let mut d = draft(&p);
    d.consent_expires_at = NOW + 100;
    d.link_expires_at = NOW + 100;
    let link = SignedRequest::create(&p.id, d).unwrap().to_link();
    assert_eq!(
        SignedRequest::from_link(&link, NOW + 100).unwrap_err(),
        RequestError::LinkExpired { at: NOW + 100 }
    );
    let req = SignedRequest::decode(
        &URL_SAFE_NO_PAD
            .decode(link.split("d=").nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    // check_time orders: future, link, consent. Consent-only expiry via a direct check:
    let mut c = req.content().clone();
    c.link_expires_at = NOW + 200;
    assert_eq!(
        c.check_time(NOW + 150),
        Err(RequestError::ConsentAlreadyExpired)
    );
}

#[test]
fn link_syntax_is_strict() {
    let link = request(&provider_a()).to_link();
    let d = link.split("d=").nth(1).unwrap().to_owned();
    let bad = |l: String| SignedRequest::from_link(&l, NOW).unwrap_err();
    assert!(matches!(
        bad(format!("https://request?v=1&d={d}")),
        RequestError::BadLink(_)
    ));
    assert!(matches!(
        bad(format!("p1consent://requests?v=1&d={d}")),
        RequestError::BadLink(_)
    ));
    assert!(matches!(
        bad(format!("P1CONSENT://request?v=1&d={d}")),
        RequestError::BadLink(_)
    ));
    assert!(matches!(
        bad(format!("p1consent://request?v=1&d={d}&x=1")),
        RequestError::BadLink(_)
    ));
    assert!(matches!(
        bad(format!("p1consent://request?v=1&d={d}&d={d}")),
        RequestError::BadLink(_)
    ));
    assert!(matches!(
        bad(format!("p1consent://request?v=2&d={d}")),
        RequestError::BadLink(_)
    ));
    assert!(matches!(
        bad(format!("p1consent://request?d={d}")),
        RequestError::BadLink(_)
    ));
    assert!(matches!(
        bad("p1consent://request?v=1".into()),
        RequestError::BadLink(_)
    ));
    assert!(matches!(
        bad(format!("p1consent://request?v=1&d={d}=")),
        RequestError::BadLink(_)
    ));
    assert!(matches!(
        bad(format!("p1consent://request?v=1&d={d}&")),
        RequestError::BadLink(_)
    ));
    assert!(matches!(
        bad(format!("p1consent://request?v=1&d={}", d.replace('-', "+"))),
        RequestError::BadLink(_) | RequestError::BadSignature
    ));
    let long = format!("{link}{}", "A".repeat(MAX_LINK_LEN));
    assert_eq!(
        bad(long.clone()),
        RequestError::TooLong {
            len: long.len(),
            limit: MAX_LINK_LEN
        }
    );
    // Just under the link limit but the data is over the request limit.
    let big = URL_SAFE_NO_PAD.encode(vec![0x10; 3000]);
    assert!(matches!(
        bad(format!("p1consent://request?v=1&d={big}")),
        RequestError::Malformed(WireError::TooLarge { .. })
    ));
}

#[test]
fn every_validation_rule_is_enforced() {
    let p = provider_a();
    let check = |f: &dyn Fn(&mut p1consent_shared::consent::RequestDraft), field: &str| {
        let mut d = draft(&p);
        f(&mut d);
        match SignedRequest::create(&p.id, d) {
            Err(RequestError::Invalid { field: got, .. }) => assert_eq!(got, field),
            other => panic!("{field}: expected Invalid, got {other:?}"),
        }
    };
    check(&|d| d.controller = "x".repeat(101), "controller");
    check(&|d| d.controller = "  ".into(), "controller");
    check(&|d| d.controller = "Evil\u{202E}Corp".into(), "controller");
    check(&|d| d.contact = "x".repeat(201), "contact");
    check(&|d| d.contact = String::new(), "contact");
    check(&|d| d.purpose = "x".repeat(501), "purpose");
    check(&|d| d.purpose = "line\nbreak".into(), "purpose");
    check(
        &|d| d.policy_url = Some("http://wattt.example".into()),
        "policy_url",
    );
    check(&|d| d.policy_url = Some("https://".into()), "policy_url");
    check(&|d| d.policy_url = Some("https://a b".into()), "policy_url");
    check(
        &|d| d.policy_url = Some(format!("https://{}", "u".repeat(193))),
        "policy_url",
    );
    check(&|d| d.jurisdiction = "nl".into(), "jurisdiction");
    check(&|d| d.jurisdiction = "N".into(), "jurisdiction");
    check(&|d| d.jurisdiction = "NLNLNLNLN".into(), "jurisdiction");
    check(&|d| d.fields = FieldSet::empty(), "fields");
    check(&|d| d.retention_days = 3651, "retention_days");
    check(&|d| d.consent_expires_at = NOW, "consent_expires_at");
    check(&|d| d.link_expires_at = NOW, "link_expires_at");
    check(&|d| d.link_expires_at = NOW + 400 * DAY, "link_expires_at");
    // Limits themselves are fine.
    let mut d = draft(&p);
    d.retention_days = 3650;
    d.policy_url = None;
    d.jurisdiction = "EU".into();
    let r = SignedRequest::create(&p.id, d).unwrap();
    let back = SignedRequest::decode(r.bytes()).unwrap();
    assert_eq!(back.content().policy_url, None);
    assert_eq!(back.content().retention_days, 3650);
}

#[test]
fn decoder_rejects_signed_but_invalid_content() {
    // A provider that signs garbage values still gets refused after the signature check.
    let p = provider_a();
    let req = request(&p);
    let mut raw = req.bytes().to_vec();
    let n = raw.len();
    // Layout tail: fields u32, resolution u32, retention u32, 3 x u64 + nonce16, sig64.
    let res_off = n - 64 - 8 - 16 - 8 - 8 - 4 - 4;
    raw[res_off..res_off + 4].copy_from_slice(&30u32.to_be_bytes());
    let sig = p.id.sign(&raw[..n - 64]);
    raw[n - 64..].copy_from_slice(&sig);
    assert!(matches!(
        SignedRequest::decode(&raw).unwrap_err(),
        RequestError::Malformed(WireError::Invalid {
            field: "resolution",
            ..
        })
    ));
    let ret_off = res_off + 4;
    let mut raw = req.bytes().to_vec();
    raw[ret_off..ret_off + 4].copy_from_slice(&4000u32.to_be_bytes());
    let sig = p.id.sign(&raw[..n - 64]);
    raw[n - 64..].copy_from_slice(&sig);
    assert!(matches!(
        SignedRequest::decode(&raw).unwrap_err(),
        RequestError::Invalid {
            field: "retention_days",
            ..
        }
    ));
}

//! Provider request links (`p1consent://request?v=1&d=...`): `SignedRequest::from_link` must
//! never panic. Non-UTF-8 inputs are converted lossily so every input is a string.
#![no_main]
use libfuzzer_sys::fuzz_target;
use p1consent_shared::consent::SignedRequest;

fuzz_target!(|data: &[u8]| {
    let link = String::from_utf8_lossy(data);
    for now in [0, 1_767_225_600, u64::MAX] {
        if let Ok(v) = SignedRequest::from_link(&link, now) {
            // What a link carries survives re-encoding to the canonical link.
            let again = SignedRequest::from_link(&v.signed().to_link(), now)
                .expect("re-encoded link verifies");
            assert_eq!(again.signed().bytes(), v.signed().bytes());
        }
    }
});

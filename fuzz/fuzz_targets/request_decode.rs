//! Provider request bytes: `SignedRequest::decode` must never panic; what it accepts keeps its
//! exact bytes. Each input is also re-signed (provider key at offset 3 replaced by a fixed test
//! key) so the field parsing and validation behind the signature check get fuzzed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use p1consent_fuzz::{resign, test_signer};
use p1consent_shared::consent::SignedRequest;

fn check(bytes: &[u8]) {
    if let Ok(r) = SignedRequest::decode(bytes) {
        assert_eq!(r.bytes(), bytes);
        let again = SignedRequest::decode(r.bytes()).expect("decodes twice");
        assert_eq!(again.content(), r.content());
        let _ = r.content().check_time(0);
        let _ = r.content().check_time(u64::MAX);
        let _ = r.consent_id();
        let _ = r.to_link();
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some(signed) = resign(data, Some(3), test_signer(), None) {
        check(&signed);
    }
});

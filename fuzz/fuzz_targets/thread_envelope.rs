//! Thread key envelopes: `ThreadEnvelope::decode` must never panic. Inputs are also re-signed
//! (owner key at offset 19 replaced by a fixed test key) to reach the checks after the
//! signature; an accepted envelope must decode identically with `expected_owner` set.
#![no_main]
use libfuzzer_sys::fuzz_target;
use p1consent_fuzz::{resign, test_signer};
use p1consent_shared::consent::ThreadEnvelope;

fn check(bytes: &[u8]) {
    if let Ok(e) = ThreadEnvelope::decode(bytes, None) {
        let again = ThreadEnvelope::decode(bytes, Some(&e.owner)).expect("same owner accepted");
        assert_eq!(again, e);
        let roles = e.roles();
        assert!(!roles.is_empty() && roles.len() <= 2);
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let _ = ThreadEnvelope::decode(data, Some(&test_signer().public()));
    if let Some(signed) = resign(data, Some(3 + 16), test_signer(), None) {
        check(&signed);
    }
});

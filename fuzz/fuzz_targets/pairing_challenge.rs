//! Pairing challenge (0x22): `Challenge::decode` must never panic. Inputs are also re-signed (signer key at
//! offset 3 replaced by a fixed test key, domain-separated signature recomputed) to fuzz the
//! parsing behind the signature check; an accepted message decodes identically twice.
#![no_main]
use libfuzzer_sys::fuzz_target;
use p1consent_fuzz::{resign, test_signer};
use p1consent_shared::pairing::Challenge;

fn check(bytes: &[u8]) {
    if let Ok(m) = Challenge::decode(bytes) {
        assert_eq!(Challenge::decode(bytes).expect("decodes twice"), m);
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some(signed) = resign(data, Some(3), test_signer(), Some("p1consent/v1/pairing/challenge")) {
        check(&signed);
    }
});

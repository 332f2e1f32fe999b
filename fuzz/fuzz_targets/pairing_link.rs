//! Pairing links (`p1consent://pair?v=1&d=...`): `pairing::decode_link` and
//! `PairingInvite::from_link` must never panic. The link syntax is strict, so an accepted link
//! is exactly the canonical encoding of its payload.
#![no_main]
use libfuzzer_sys::fuzz_target;
use p1consent_shared::pairing::{LINK_PREFIX, PairingInvite, decode_link};

fuzz_target!(|data: &[u8]| {
    let link = String::from_utf8_lossy(data);
    if let Ok(payload) = decode_link(&link) {
        let mut canonical = String::from(LINK_PREFIX);
        canonical.push_str(&p1consent_fuzz::b64url(&payload));
        assert_eq!(canonical, link, "non-canonical pairing link accepted");
    }
    let _ = PairingInvite::from_link(&link, 0);
    let _ = PairingInvite::from_link(&link, u64::MAX);
});

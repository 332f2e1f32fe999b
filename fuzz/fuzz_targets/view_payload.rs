//! `ViewPayload::from_bytes` (the JSON a provider receives in a channel) must never panic, and
//! whatever it accepts must encode with `to_bytes` and decode again to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use p1consent_shared::view::ViewPayload;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = ViewPayload::from_bytes(data) else {
        return;
    };
    let _ = p.as_reading();
    let _ = p.as_aggregate();
    let bytes = p.to_bytes().expect("an accepted payload re-encodes");
    let q = ViewPayload::from_bytes(&bytes).expect("a re-encoded payload decodes");
    // Compare encodings (f64 fields: NaN never comes out of JSON, but keep it robust).
    assert_eq!(bytes, q.to_bytes().expect("re-encodes"), "round trip changed the payload");
});

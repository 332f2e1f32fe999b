//! The binary pairing QR payload: `PairingInvite::from_bytes` must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use p1consent_shared::pairing::PairingInvite;

fuzz_target!(|data: &[u8]| {
    if let Ok(inv) = PairingInvite::from_bytes(data, 0) {
        assert!(inv.expires_at() > 0);
        let _ = inv.device_opaque_id();
        let _ = (inv.broker_hint(), inv.label());
    }
    let _ = PairingInvite::from_bytes(data, u64::MAX);
});

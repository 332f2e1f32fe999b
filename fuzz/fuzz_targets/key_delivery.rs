//! Key deliveries: `channel::peek_delivery` and `ChannelReader::from_delivery` must never
//! panic; inputs are also re-signed with the vectors' device key to get past the signature.
#![no_main]
use libfuzzer_sys::fuzz_target;
use p1consent_fuzz::{channel_device, channel_device_public, channel_reader_kem, resign};
use p1consent_shared::channel::{ChannelReader, peek_delivery};

fuzz_target!(|data: &[u8]| {
    let peeked = peek_delivery(data);
    let device = channel_device_public();
    let kem = channel_reader_kem();
    if let Ok(r) = ChannelReader::from_delivery(data, &device, kem) {
        let h = peeked.expect("from_delivery accepted what peek_delivery rejects");
        assert_eq!(r.channel_id(), h.channel_id);
        assert_eq!(r.epoch(), h.epoch);
    }
    if let Some(signed) = resign(data, None, channel_device(), None) {
        let _ = ChannelReader::from_delivery(&signed, &device, kem);
    }
});

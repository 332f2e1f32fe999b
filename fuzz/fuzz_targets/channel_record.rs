//! Channel records: `channel::peek` and `ChannelReader::open` (which parses the whole record,
//! data or rotation body) must never panic. Each input is also re-signed with the channel
//! vectors' device key so the reader gets past the signature to the sequence/link/AEAD and
//! rotation-slot handling. The persisted-state decoders (`ChannelWriter::from_bytes`,
//! `ReaderGrant::from_bytes`) get the same bytes and must round-trip what they accept.
#![no_main]
use libfuzzer_sys::fuzz_target;
use p1consent_fuzz::{
    channel_device, channel_device_public, channel_reader_kem, channel_vectors, resign, vec_hex,
};
use p1consent_shared::channel::{ChannelReader, ChannelWriter, ReaderGrant, peek};
use std::sync::OnceLock;

fn reader_state() -> &'static [u8] {
    static S: OnceLock<Vec<u8>> = OnceLock::new();
    S.get_or_init(|| {
        let delivery = vec_hex(channel_vectors(), "/deliveries/1/delivery");
        let r = ChannelReader::from_delivery(&delivery, &channel_device_public(), channel_reader_kem())
            .expect("vector delivery opens");
        r.to_bytes().to_vec()
    })
}

fn fresh_reader() -> ChannelReader {
    ChannelReader::from_bytes(reader_state(), channel_reader_kem()).expect("reader state")
}

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = peek(data) {
        assert!(h.seq != u64::MAX);
    }
    let _ = fresh_reader().open(data);
    if let Some(signed) = resign(data, None, channel_device(), None) {
        let _ = fresh_reader().open(&signed);
        let _ = fresh_reader().open_accepting_gap(&signed);
    }

    if let Ok(w) = ChannelWriter::from_bytes(data) {
        let b = w.to_bytes();
        let w2 = ChannelWriter::from_bytes(&b).expect("writer state round trip");
        assert_eq!(&b[..], &w2.to_bytes()[..]);
    }
    if let Ok(g) = ReaderGrant::from_bytes(data) {
        let b = g.to_bytes();
        let g2 = ReaderGrant::from_bytes(&b).expect("reader grant round trip");
        assert_eq!(&b[..], &g2.to_bytes()[..]);
    }
    if let Ok(r) = ChannelReader::from_bytes(data, channel_reader_kem()) {
        let b = r.to_bytes();
        let r2 = ChannelReader::from_bytes(&b, channel_reader_kem()).expect("reader state round trip");
        assert_eq!(&b[..], &r2.to_bytes()[..]);
    }
});

//! DSMR telegram parsing (`shared::dsmr::parse`, `Frame::parse`, helpers) must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use p1consent_shared::dsmr::{self, Obis, ParseOptions, frames, parse_crc_digits, parse_timestamp};

fn json(t: &dsmr::Telegram) -> String {
    serde_json::to_string(t).expect("Telegram serialises")
}

fuzz_target!(|data: &[u8]| {
    let strict = dsmr::parse(data, ParseOptions::default());
    let lax = dsmr::parse(data, ParseOptions::no_crc());
    if let Ok(t) = &strict {
        // A telegram accepted with the CRC check parses the same without it.
        let l = lax.as_ref().expect("parses with CRC check but not without");
        assert_eq!(json(t), json(l));
    }
    if let Ok(t) = &lax {
        let _ = json(t);
    }
    for f in frames(data) {
        if let Ok(f) = f {
            let _ = f.stated_crc();
            let _ = f.verify_crc();
            if let Ok(t) = f.parse(ParseOptions::no_crc()) {
                let _ = json(&t);
            }
        }
    }
    let _ = Obis::parse(data);
    let _ = parse_timestamp(data);
    let _ = parse_crc_digits(data);
});

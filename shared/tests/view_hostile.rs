//! `ViewPayload::from_bytes` on hostile input: never panics, always a typed result.

use p1consent_shared::consent::scope::{Field, FieldSet, Resolution};
use p1consent_shared::dsmr::Telegram;
use p1consent_shared::view::{Aggregator, MAX_PAYLOAD, ViewError, ViewPayload, ViewSpec, project};

/// xorshift64* — deterministic, no dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn valid_payloads() -> Vec<Vec<u8>> {
    let all: FieldSet = Field::ALL.into_iter().collect();
    let t = Telegram {
        power_delivered_kw: Some(0.374),
        energy_delivered_tariff1_kwh: Some(3235.689),
        voltage_l1_v: Some(230.1),
        tariff: Some(2),
        power_failures: Some(3),
        text_message: Some("Onderhoud".into()),
        meter_id: Some("E0031003239456716".into()),
        ..Telegram::default()
    };
    let mut a = Aggregator::new(ViewSpec::new(all, Resolution::QuarterHour));
    a.push(&t, 1_700_000_000_000);
    let agg = a.flush(u64::MAX).expect("aggregate");
    vec![
        project(&t, all, 1_700_000_000_000).to_bytes().unwrap(),
        agg.to_bytes().unwrap(),
    ]
}

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"\"",
    b"\\",
    b"\"type\"",
    b"\"v\"",
    b"1",
    b"-1",
    b"1e400",
    b"18446744073709551616",
    b"null",
    b"true",
    b"\"reading\"",
    b"\"aggregate\"",
    b"\"time_ms\"",
    b"\"start_ms\"",
    b"\"resolution_s\"",
    b"\"samples\"",
    b"900",
    b"0.5",
    b"\"gas\"",
    b"\"mean\"",
    b"\"meter_ids\"",
    b"\xff",
    b"\x00",
    b"\"\\ud800\"",
];

fn check(bytes: &[u8]) -> Result<ViewPayload, ViewError> {
    let r = ViewPayload::from_bytes(bytes);
    if let Ok(p) = &r {
        // Whatever decodes re-encodes and decodes to the same value.
        let again = p.to_bytes().expect("re-encode");
        assert_eq!(ViewPayload::from_bytes(&again).as_ref(), Ok(p));
    }
    r
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..20_000 {
        let len = rng.below(200);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        assert!(check(&bytes).is_err());
    }
}

#[test]
fn random_token_soup_never_panics() {
    let mut rng = Rng(42);
    let mut ok = 0;
    for _ in 0..20_000 {
        let mut bytes = b"{\"type\":\"reading\",\"v\":1,".to_vec();
        for _ in 0..rng.below(24) {
            bytes.extend_from_slice(TOKENS[rng.below(TOKENS.len())]);
        }
        if check(&bytes).is_ok() {
            ok += 1;
        }
    }
    assert!(ok < 20_000);
}

#[test]
fn mutated_valid_payloads_never_panic() {
    let mut rng = Rng(7);
    let mut accepted = 0;
    for base in valid_payloads() {
        assert!(check(&base).is_ok());
        for _ in 0..10_000 {
            let mut b = base.clone();
            match rng.below(4) {
                0 => {
                    let i = rng.below(b.len());
                    b[i] ^= 1 << rng.below(8);
                }
                1 => b.truncate(rng.below(b.len())),
                2 => {
                    let i = rng.below(b.len());
                    let tok = TOKENS[rng.below(TOKENS.len())];
                    b.splice(i..i, tok.iter().copied());
                }
                _ => {
                    let i = rng.below(b.len());
                    let j = (i + rng.below(16)).min(b.len());
                    b.drain(i..j);
                }
            }
            if check(&b).is_ok() {
                accepted += 1;
            }
        }
    }
    // Some mutations (inside a number or string) still decode; most do not.
    assert!(accepted > 0 && accepted < 20_000, "{accepted}");
}

#[test]
fn deep_nesting_and_oversize_are_typed_errors() {
    let mut deep = b"{\"type\":\"reading\",\"v\":1,\"time_ms\":1,\"x\":".to_vec();
    deep.extend(std::iter::repeat_n(b'[', 10_000));
    assert!(matches!(
        ViewPayload::from_bytes(&deep),
        Err(ViewError::Malformed(_))
    ));
    let mut big = b"{\"type\":\"reading\",\"v\":1,\"time_ms\":1,\"x\":\"".to_vec();
    big.resize(MAX_PAYLOAD - 2, b'a');
    big.extend_from_slice(b"\"}");
    assert_eq!(big.len(), MAX_PAYLOAD);
    assert!(
        ViewPayload::from_bytes(&big).is_ok(),
        "exactly the limit is accepted"
    );
    big.insert(40, b' ');
    assert_eq!(
        ViewPayload::from_bytes(&big),
        Err(ViewError::TooLarge {
            size: MAX_PAYLOAD + 1,
            limit: MAX_PAYLOAD
        })
    );
}

#[test]
fn oversized_text_from_a_meter_is_cut() {
    let t = Telegram {
        text_message: Some("x".repeat(16_000)),
        meter_id: Some("9".repeat(1_000)),
        ..Telegram::default()
    };
    let fields = FieldSet::empty()
        .with(Field::TextMessage)
        .with(Field::MeterIds);
    let p = project(&t, fields, 1);
    let r = p.as_reading().unwrap();
    assert_eq!(r.text_message.as_ref().map(String::len), Some(2048));
    assert_eq!(r.meter_ids.as_ref().map(|ids| ids[0].id.len()), Some(128));
    assert!(p.to_bytes().unwrap().len() < MAX_PAYLOAD);
    // Non-finite or absurd numbers are dropped rather than serialised as null.
    let t = Telegram {
        power_delivered_kw: Some(f64::NAN),
        power_returned_kw: Some(1e300),
        ..Telegram::default()
    };
    let fields = FieldSet::empty()
        .with(Field::PowerDelivered)
        .with(Field::PowerReturned);
    assert_eq!(
        String::from_utf8(project(&t, fields, 1).to_bytes().unwrap()).unwrap(),
        r#"{"type":"reading","v":1,"time_ms":1}"#
    );
}

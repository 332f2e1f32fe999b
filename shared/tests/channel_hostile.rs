//! Hostile input: pseudo-random bytes, truncations and byte flips of real messages.
//! Nothing may panic, and nothing but the untouched original may be accepted.

use p1consent_shared::channel::{
    ChannelReader, ChannelWriter, ChannelWriterState, MAX_RECORD, OpenError, ReaderGrant, peek,
    peek_delivery,
};
use p1consent_shared::crypto::{KemSecretKey, KemSuite, OpaqueId, SigningIdentity};
use p1consent_shared::wire::WireError;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

struct Fixture {
    dev: SigningIdentity,
    kem: KemSecretKey,
    delivery: Vec<u8>,
    data: Vec<u8>,
    rotation: Vec<u8>,
    grant: ReaderGrant,
    writer_state: Vec<u8>,
}

fn fixture(suite: KemSuite) -> Fixture {
    let dev = SigningIdentity::from_seed(&[3; 32]);
    let kem = KemSecretKey::from_seed(suite, &[4; 32]);
    let mut w = ChannelWriter::new(OpaqueId([5; 16]));
    let (delivery, grant) = w.deliver(&dev, 0, OpaqueId([6; 16]), kem.public()).unwrap();
    let data = w.seal(&dev, 1, b"1-0:1.8.1(000123.456*kWh)").unwrap();
    let rotation = w.rotate(&dev, 2, std::slice::from_ref(&grant)).unwrap();
    let writer_state = w.to_bytes().to_vec();
    Fixture {
        dev,
        kem,
        delivery,
        data,
        rotation,
        grant,
        writer_state,
    }
}

fn reader(f: &Fixture) -> ChannelReader {
    ChannelReader::from_delivery(&f.delivery, &f.dev.public(), &f.kem).unwrap()
}

/// Feeds `input` to every decoder; returns whether the record opened.
fn feed_all(f: &Fixture, r: &mut ChannelReader, input: &[u8]) -> bool {
    let _ = peek(input);
    let _ = peek_delivery(input);
    let _ = ChannelWriterState::from_bytes(input);
    let _ = ReaderGrant::from_bytes(input);
    let _ = ChannelReader::from_bytes(input, &f.kem);
    let _ = r.open_accepting_gap(input);
    if ChannelReader::from_delivery(input, &f.dev.public(), &f.kem).is_ok() {
        return true;
    }
    r.open(input).is_ok()
}

#[test]
fn random_bytes_never_panic_or_open() {
    let f = fixture(KemSuite::X25519MlKem768);
    let mut r = reader(&f);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for i in 0..3000 {
        let len = (rng.next() % 400) as usize;
        let mut input = rng.bytes(len);
        // Often start with a valid-looking common header to reach deeper code.
        if i % 2 == 0 && input.len() >= 4 {
            input[0] = if i % 4 == 0 { 0x01 } else { 0x02 };
            input[1] = 1;
            input[2] = 1 + (i % 3 == 0) as u8;
            input[3] = 1 + (i % 5 == 0) as u8;
        }
        assert!(!feed_all(&f, &mut r, &input), "random input {i} accepted");
    }
    // The reader is still at its starting point and works.
    assert!(r.open(&f.data).is_ok());
}

#[test]
fn truncations_and_extensions_are_typed_errors() {
    for suite in [KemSuite::X25519Sntrup761, KemSuite::X25519MlKem768] {
        let f = fixture(suite);
        let mut r = reader(&f);
        for msg in [&f.data, &f.rotation, &f.delivery, &f.writer_state] {
            for n in 0..msg.len() {
                assert!(!feed_all(&f, &mut r, &msg[..n]), "prefix {n} accepted");
            }
            let mut longer = msg.to_vec();
            longer.push(0);
            assert!(!feed_all(&f, &mut r, &longer));
        }
        let mut extra = f.data.clone();
        extra.push(0);
        assert_eq!(
            r.open(&extra),
            Err(OpenError::Malformed(WireError::TrailingBytes { count: 1 }))
        );
        assert!(matches!(
            r.open(&f.data[..50]),
            Err(OpenError::Malformed(WireError::Truncated { .. }))
        ));
        // Untouched originals still open, in order.
        assert!(r.open(&f.data).is_ok());
        assert!(r.open(&f.rotation).is_ok());
    }
}

#[test]
fn byte_flips_in_rotation_and_delivery_never_succeed() {
    let f = fixture(KemSuite::X25519Sntrup761);
    let mut r = reader(&f);
    assert!(r.open(&f.data).is_ok());
    for pos in 0..f.rotation.len() {
        let mut t = f.rotation.clone();
        t[pos] ^= 0x20;
        let e = r.open(&t).expect_err("flipped rotation accepted");
        assert!(
            matches!(
                e,
                OpenError::Malformed(_) | OpenError::WrongChannel | OpenError::BadSignature
            ),
            "pos {pos}: {e:?}"
        );
    }
    for pos in 0..f.delivery.len() {
        let mut t = f.delivery.clone();
        t[pos] ^= 0x20;
        let e = ChannelReader::from_delivery(&t, &f.dev.public(), &f.kem)
            .expect_err("flipped delivery accepted");
        assert!(
            matches!(e, OpenError::Malformed(_) | OpenError::BadSignature),
            "pos {pos}: {e:?}"
        );
    }
    assert!(r.open(&f.rotation).is_ok());
    let _ = f.grant;
}

#[test]
fn size_limits_are_enforced_before_parsing() {
    let f = fixture(KemSuite::X25519Sntrup761);
    let mut r = reader(&f);
    let mut huge = vec![0u8; MAX_RECORD + 1];
    huge[..3].copy_from_slice(&[1, 1, 1]);
    assert_eq!(
        r.open(&huge),
        Err(OpenError::Malformed(WireError::TooLarge {
            size: MAX_RECORD + 1,
            limit: MAX_RECORD
        }))
    );
    // A data record claiming a body over 64 KiB is refused from its header.
    let mut t = f.data.clone();
    t[72..76].copy_from_slice(&(64 * 1024 + 1u32).to_be_bytes());
    assert!(matches!(
        peek(&t),
        Err(WireError::TooLarge { limit: 65536, .. })
    ));
    // A rotation claiming more than MAX_SLOTS slots is refused.
    let mut t = f.rotation.clone();
    t[76..78].copy_from_slice(&u16::MAX.to_be_bytes());
    assert!(matches!(
        r.open(&t),
        Err(OpenError::Malformed(WireError::Invalid {
            field: "slot_count",
            ..
        }))
    ));
}

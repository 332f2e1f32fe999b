//! The per-telegram seal pipeline against its crypto floor.
//!
//! Input: the real 1 Hz capture (566 DSMR 5.0 telegrams), cycled. Per telegram:
//! - `seal_pipeline/full`: parse (CRC checked) + raw view payload (all 14 fields, JSON) +
//!   `ChannelWriter::seal` (HKDF data key, XChaCha20-Poly1305, Ed25519 signature, BLAKE3
//!   hash link).
//! - `seal_pipeline/seal_only`: `ChannelWriter::seal` of a ready payload.
//! - parts: `parse`, `view_payload` (project + JSON), and the crypto floor: `ed25519_sign`
//!   (a record-sized message), `xchacha20poly1305_seal` (payload + header AAD),
//!   `blake3_hash` (record-sized), all with the crates directly.
//!
//! The floor is sign + AEAD + hash of the same sizes; after the run the ratio
//! floor / pipeline is printed (target >= 80 %).
//!
//! Run: `cargo bench -p p1consent-shared --bench seal`; instruction counts of one side:
//! `valgrind --tool=callgrind <bench binary> --count full|floor --iters N`.

mod common;

use std::hint::black_box;
use std::time::SystemTime;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use criterion::Criterion;
use ed25519_dalek::Signer;
use p1consent_shared::channel::{ChannelWriter, DATA_OVERHEAD, RECORD_HEADER_LEN};
use p1consent_shared::consent::{Field, FieldSet};
use p1consent_shared::crypto::{OpaqueId, SigningIdentity};
use p1consent_shared::dsmr::{self, ParseOptions};
use p1consent_shared::view;

const GROUP: &str = "seal_pipeline";

struct Input {
    telegrams: Vec<Vec<u8>>,
    fields: FieldSet,
    payload: Vec<u8>,
    record_len: usize,
}

fn input() -> Input {
    let stream = common::stream_capture();
    let telegrams: Vec<Vec<u8>> = dsmr::frames(&stream)
        .flatten()
        .map(|f| f.bytes().to_vec())
        .collect();
    assert!(telegrams.len() > 500, "capture should hold ~566 telegrams");
    let fields = Field::ALL.iter().fold(FieldSet::empty(), |s, f| s.with(*f));
    let t = dsmr::parse(&telegrams[0], ParseOptions::default()).expect("valid telegram");
    let payload = view::project(&t, fields, 1_700_000_000_000)
        .to_bytes()
        .expect("payload");
    let record_len = payload.len() + DATA_OVERHEAD;
    Input {
        telegrams,
        fields,
        payload,
        record_len,
    }
}

fn bench(c: &mut Criterion, inp: &Input) {
    let device = SigningIdentity::from_seed(&[7; 32]);
    let mut g = c.benchmark_group(GROUP);

    let mut writer = ChannelWriter::new(OpaqueId([1; 16]));
    let mut i = 0usize;
    let mut ts = 1_700_000_000_000u64;
    g.bench_function("full", |b| {
        b.iter(|| {
            let raw = &inp.telegrams[i % inp.telegrams.len()];
            i += 1;
            ts += 1000;
            let t = dsmr::parse(black_box(raw), ParseOptions::default()).expect("valid");
            let payload = view::project(&t, inp.fields, ts)
                .to_bytes()
                .expect("payload");
            writer.seal(&device, ts, &payload).expect("seal")
        })
    });

    let mut writer = ChannelWriter::new(OpaqueId([2; 16]));
    g.bench_function("seal_only", |b| {
        b.iter(|| {
            writer
                .seal(&device, 1_700_000_000_000, black_box(&inp.payload))
                .expect("seal")
        })
    });

    let mut i = 0usize;
    g.bench_function("parse", |b| {
        b.iter(|| {
            let raw = &inp.telegrams[i % inp.telegrams.len()];
            i += 1;
            dsmr::parse(black_box(raw), ParseOptions::default()).expect("valid")
        })
    });

    let t = dsmr::parse(&inp.telegrams[0], ParseOptions::default()).expect("valid");
    g.bench_function("view_payload", |b| {
        b.iter(|| {
            view::project(black_box(&t), inp.fields, 1_700_000_000_000)
                .to_bytes()
                .expect("payload")
        })
    });

    // The floor: the three primitives the record needs, called directly, same sizes.
    let sk = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let signed = vec![0x5au8; inp.record_len - 64];
    g.bench_function("ed25519_sign", |b| {
        b.iter(|| sk.sign(black_box(&signed)).to_bytes())
    });

    let cipher = XChaCha20Poly1305::new(&[9u8; 32].into());
    let nonce = XNonce::from([3u8; 24]);
    let aad = [0u8; RECORD_HEADER_LEN];
    g.bench_function("xchacha20poly1305_seal", |b| {
        b.iter(|| {
            cipher
                .encrypt(
                    &nonce,
                    Payload {
                        msg: black_box(&inp.payload),
                        aad: &aad,
                    },
                )
                .expect("encrypt")
        })
    });

    let record = vec![0xa5u8; inp.record_len];
    g.bench_function("blake3_hash", |b| {
        b.iter(|| *blake3::hash(black_box(&record)).as_bytes())
    });
    g.finish();
}

fn summary(inp: &Input, started: SystemTime) {
    let m = |id: &str| common::median_ns(GROUP, id, started);
    println!();
    println!(
        "== Seal pipeline vs crypto floor (criterion median; payload {} B, record {} B) ==",
        inp.payload.len(),
        inp.record_len
    );
    let ids = [
        "full",
        "seal_only",
        "parse",
        "view_payload",
        "ed25519_sign",
        "xchacha20poly1305_seal",
        "blake3_hash",
    ];
    for id in ids {
        println!("{id:<24} {:>12}", common::opt(m(id).map(common::fmt_ns)));
    }
    let floor = match (
        m("ed25519_sign"),
        m("xchacha20poly1305_seal"),
        m("blake3_hash"),
    ) {
        (Some(a), Some(b), Some(c)) => a + b + c,
        _ => {
            println!("crypto floor: not all parts ran");
            return;
        }
    };
    println!(
        "{:<24} {:>12}  (sign + AEAD + hash)",
        "crypto floor",
        common::fmt_ns(floor)
    );
    for (id, what) in [
        ("full", "parse + payload + seal"),
        ("seal_only", "ChannelWriter::seal"),
    ] {
        if let Some(t) = m(id) {
            let r = floor / t * 100.0;
            println!(
                "floor / {id} = {r:.1} %  ({what}; target >= 80 %: {})",
                if r >= 80.0 { "met" } else { "MISSED" }
            );
        }
    }
}

/// Sign + AEAD + hash of the record's sizes with the crates directly: the crypto floor.
fn floor_op(inp: &Input) -> impl FnMut() + '_ {
    let sk = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let cipher = XChaCha20Poly1305::new(&[9u8; 32].into());
    let nonce = XNonce::from([3u8; 24]);
    let aad = [0u8; RECORD_HEADER_LEN];
    let signed = vec![0x5au8; inp.record_len - 64];
    let record = vec![0xa5u8; inp.record_len];
    move || {
        black_box(sk.sign(black_box(&signed)).to_bytes());
        black_box(
            cipher
                .encrypt(
                    &nonce,
                    Payload {
                        msg: black_box(&inp.payload),
                        aad: &aad,
                    },
                )
                .expect("encrypt"),
        );
        black_box(blake3::hash(black_box(&record)));
    }
}

/// One telegram through the whole pipeline: parse + view payload + seal.
fn full_op(inp: &Input) -> impl FnMut() + '_ {
    let device = SigningIdentity::from_seed(&[7; 32]);
    let mut w = ChannelWriter::new(OpaqueId([4; 16]));
    let mut i = 0usize;
    move || {
        let raw = &inp.telegrams[i % inp.telegrams.len()];
        i += 1;
        let t = dsmr::parse(black_box(raw), ParseOptions::default()).expect("valid");
        let payload = view::project(&t, inp.fields, 1_700_000_000_000 + i as u64)
            .to_bytes()
            .expect("payload");
        black_box(w.seal(&device, 1_700_000_000_000, &payload).expect("seal"));
    }
}

/// The same ratio measured load-robustly: blocks of pipeline calls alternate with blocks of
/// floor calls (sign + AEAD + hash), 40 rounds, median of the per-round ratios.
fn interleaved(inp: &Input) {
    let device = SigningIdentity::from_seed(&[7; 32]);
    let floor = floor_op(inp);
    let full = full_op(inp);
    let (p, f, r) = common::interleaved(40, 200, full, 200, floor);
    println!(
        "interleaved (40 rounds x 200 calls each): full {} / floor {}: floor / full = {:.1} %  (target >= 80 %: {})",
        common::fmt_ns(p),
        common::fmt_ns(f),
        100.0 / r,
        if 100.0 / r >= 80.0 { "met" } else { "MISSED" }
    );
    let mut w = ChannelWriter::new(OpaqueId([5; 16]));
    let seal_only = || {
        black_box(
            w.seal(&device, 1_700_000_000_000, black_box(&inp.payload))
                .expect("seal"),
        );
    };
    let (p, f, r) = common::interleaved(40, 200, seal_only, 200, floor_op(inp));
    println!(
        "interleaved (40 rounds x 200 calls each): seal_only {} / floor {}: floor / seal_only = {:.1} %",
        common::fmt_ns(p),
        common::fmt_ns(f),
        100.0 / r
    );
}

/// `--count full|floor --iters N`: run one side N times and nothing else, for
/// `valgrind --tool=callgrind` (instruction counts do not depend on the machine's load).
fn count_mode(inp: &Input, args: &[String]) -> bool {
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let Some(which) = arg("--count") else {
        return false;
    };
    let iters: usize = arg("--iters").and_then(|n| n.parse().ok()).unwrap_or(1000);
    let mut op: Box<dyn FnMut() + '_> = match which.as_str() {
        "full" => Box::new(full_op(inp)),
        "floor" => Box::new(floor_op(inp)),
        other => panic!("--count {other}: expected full or floor"),
    };
    for _ in 0..iters {
        op();
    }
    println!("ran {which} {iters} times");
    true
}

fn main() {
    let started = SystemTime::now();
    let inp = input();
    let args: Vec<String> = std::env::args().collect();
    if count_mode(&inp, &args) {
        return;
    }
    let mut c = common::criterion(3);
    bench(&mut c, &inp);
    c.final_summary();
    if common::is_bench_run() {
        summary(&inp, started);
        interleaved(&inp);
    }
}

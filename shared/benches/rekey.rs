//! Rekey at scale: `ChannelWriter::rotate` with 1, 10, 100, 1000 remaining readers per KEM
//! suite, beside one hybrid KEM encapsulation of that suite.
//!
//! - `rekey_<suite>/encapsulate`: `crypto::encapsulate` (X25519 + PQ KEM + HKDF combiner).
//! - `rekey_<suite>/rotate/<n>`: one rotation record for n readers (n slot hints, n
//!   encapsulations, n wrapped keys, sort, one Ed25519 signature over the record, hash link).
//! - `rekey_<suite>/open_rotation/1000`: a reader taking the 1000-slot rotation (verify the
//!   signature over the whole record, find its slot, decapsulate, unwrap).
//!
//! Criterion measures time; the rotation message sizes and the per-reader cost against one
//! encapsulation (target <= 1.2x) are printed after the run.
//!
//! Run: `cargo bench -p p1consent-shared --bench rekey`

mod common;

use std::hint::black_box;
use std::time::{Instant, SystemTime};

use criterion::{BenchmarkId, Criterion, SamplingMode};
use p1consent_shared::channel::{ChannelReader, ChannelWriter, Opened, ReaderGrant};
use p1consent_shared::crypto::{self, KemSecretKey, KemSuite, OpaqueId, SigningIdentity};

const SIZES: [usize; 4] = [1, 10, 100, 1000];
const SUITES: [KemSuite; 2] = [KemSuite::X25519Sntrup761, KemSuite::X25519MlKem768];

fn group(suite: KemSuite) -> String {
    match suite {
        KemSuite::X25519Sntrup761 => "rekey_x25519-sntrup761".into(),
        KemSuite::X25519MlKem768 => "rekey_x25519-mlkem768".into(),
    }
}

struct Setup {
    suite: KemSuite,
    device: SigningIdentity,
    /// Grants of 1000 readers, each with its own KEM key pair (delivered once, as the
    /// device would have done when each consent was given).
    grants: Vec<ReaderGrant>,
    /// The first reader's secret key and its delivery (for `open_rotation`).
    first_kem: KemSecretKey,
    first_delivery: Vec<u8>,
    keygen_s: f64,
}

fn setup(suite: KemSuite) -> Setup {
    let device = SigningIdentity::from_seed(&[5; 32]);
    let writer = ChannelWriter::new(OpaqueId([3; 16]));
    let n = *SIZES.iter().max().unwrap_or(&1);
    let t0 = Instant::now();
    let mut grants = Vec::with_capacity(n);
    let mut first = None;
    for i in 0..n {
        let kem = KemSecretKey::generate(suite);
        let (delivery, grant) = writer
            .deliver(&device, 0, OpaqueId::random(), kem.public())
            .expect("deliver");
        grants.push(grant);
        if i == 0 {
            first = Some((kem, delivery));
        }
    }
    let keygen_s = t0.elapsed().as_secs_f64();
    let (first_kem, first_delivery) = first.expect("at least one reader");
    Setup {
        suite,
        device,
        grants,
        first_kem,
        first_delivery,
        keygen_s,
    }
}

fn rotation(s: &Setup, n: usize) -> Vec<u8> {
    let mut w = ChannelWriter::new(OpaqueId([3; 16]));
    w.rotate(&s.device, 1, &s.grants[..n]).expect("rotate")
}

fn bench(c: &mut Criterion, s: &Setup) {
    let mut g = c.benchmark_group(group(s.suite));
    // Rotations of 1000 sntrup761 readers take ~0.5 s each: flat sampling keeps the
    // sample count at 10 instead of criterion's 1+2+…+n linear ramp.
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);

    let pk = s.grants[0].kem_public.clone();
    g.bench_function("encapsulate", |b| {
        b.iter(|| crypto::encapsulate(black_box(&pk)).expect("encap"))
    });

    let mut w = ChannelWriter::new(OpaqueId([3; 16]));
    for n in SIZES {
        g.bench_with_input(BenchmarkId::new("rotate", n), &n, |b, &n| {
            b.iter(|| w.rotate(&s.device, 1, &s.grants[..n]).expect("rotate"))
        });
    }

    let big = rotation(s, 1000);
    let reader = ChannelReader::from_delivery(&s.first_delivery, &s.device.public(), &s.first_kem)
        .expect("delivery");
    g.bench_with_input(BenchmarkId::new("open_rotation", 1000), &big, |b, rec| {
        b.iter_batched_ref(
            || reader_clone(s, &reader),
            |r| {
                let opened = r.open(black_box(rec)).expect("open");
                assert!(matches!(opened, Opened::Rotated { .. }), "{opened:?}");
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// A fresh reader at the chain start (restored from its persisted state).
fn reader_clone(s: &Setup, r: &ChannelReader) -> ChannelReader {
    ChannelReader::from_bytes(&r.to_bytes(), &s.first_kem).expect("reader state")
}

fn summary(setups: &[Setup], started: SystemTime) {
    println!();
    println!("== Rekey: rotation record size and time per suite (criterion median) ==");
    println!(
        "{:<18} {:>6} {:>11} {:>10} {:>12} {:>13} {:>11} {:>8}",
        "suite", "readers", "bytes", "B/reader", "rotate", "per reader", "encap", "ratio"
    );
    for s in setups {
        let g = group(s.suite);
        let encap = common::median_ns(&g, "encapsulate", started);
        for n in SIZES {
            let size = rotation(s, n).len();
            let t = common::median_ns(&g, &format!("rotate/{n}"), started);
            let per = t.map(|t| t / n as f64);
            let ratio = match (per, encap) {
                (Some(p), Some(e)) => {
                    let r = p / e;
                    format!("{r:.2}x {}", if r <= 1.2 { "met" } else { "MISSED" })
                }
                _ => "-".into(),
            };
            println!(
                "{:<18} {:>6} {:>11} {:>10.0} {:>12} {:>13} {:>11} {:>8}",
                s.suite.name(),
                n,
                size,
                size as f64 / n as f64,
                common::opt(t.map(common::fmt_ns)),
                common::opt(per.map(common::fmt_ns)),
                common::opt(encap.map(common::fmt_ns)),
                ratio
            );
        }
        if let Some(t) = common::median_ns(&g, "open_rotation/1000", started) {
            println!(
                "{:<18} reader opening the 1000-slot rotation: {}",
                s.suite.name(),
                common::fmt_ns(t)
            );
        }
        println!(
            "{:<18} setup: 1000 reader key pairs + deliveries in {:.1} s",
            s.suite.name(),
            s.keygen_s
        );
    }
    println!("target: rotate(n) / n <= 1.2 x encapsulate of the same suite");
    // Load-robust: a 100-reader rotation alternates with 100 encapsulations, 10 rounds.
    for s in setups {
        let pk = s.grants[0].kem_public.clone();
        let mut w = ChannelWriter::new(OpaqueId([6; 16]));
        let (rot, enc, r) = common::interleaved(
            10,
            1,
            || {
                black_box(w.rotate(&s.device, 1, &s.grants[..100]).expect("rotate"));
            },
            100,
            || {
                black_box(crypto::encapsulate(black_box(&pk)).expect("encap"));
            },
        );
        println!(
            "{:<18} interleaved (10 rounds): rotate(100) {} / 100 = {} per reader, encapsulate {}: ratio {:.2}x ({})",
            s.suite.name(),
            common::fmt_ns(rot),
            common::fmt_ns(rot / 100.0),
            common::fmt_ns(enc),
            r / 100.0,
            if r / 100.0 <= 1.2 { "met" } else { "MISSED" }
        );
    }
}

fn main() {
    let started = SystemTime::now();
    let setups: Vec<Setup> = SUITES.into_iter().map(setup).collect();
    let mut c = common::criterion(5);
    for s in &setups {
        bench(&mut c, s);
    }
    c.final_summary();
    if common::is_bench_run() {
        summary(&setups, started);
    }
}

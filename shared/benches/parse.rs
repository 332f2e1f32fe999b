//! P1 parse throughput: our framer + parser against the `dsmr5` crate on the same files.
//!
//! Groups (criterion reports telegrams/s; bytes/s and the ratio are printed at the end):
//! - `parse_vs_dsmr5/{p1consent,dsmr5}`: the sample files that dsmr5 accepts (framed, CRC
//!   checked, every object parsed into its `State`), one pass over all of them.
//! - `parse_stream/{p1consent,dsmr5}`: the 1 Hz capture (566 DSMR 5.0 telegrams, starts
//!   mid-telegram) as one byte stream, both sides with their stream reader.
//! - `parse_all_samples/p1consent`: every sample file (46), CRC not enforced so every
//!   telegram is parsed in full (dsmr5 rejects most of them: no CRC, DSMR 2.2/3.0/4.0, …).
//!
//! Run: `cargo bench -p p1consent-shared --bench parse`

mod common;

use std::hint::black_box;
use std::time::SystemTime;

use criterion::{Criterion, Throughput};
use p1consent_shared::dsmr::{self, ParseOptions};

/// Our side: split `data` into telegrams and parse each one. Returns telegrams parsed.
fn ours(data: &[u8], opts: ParseOptions) -> usize {
    let mut n = 0;
    for frame in dsmr::frames(data).flatten() {
        if let Ok(t) = frame.parse(opts) {
            black_box(&t);
            n += 1;
        }
    }
    n
}

struct Sets {
    all: Vec<(String, Vec<u8>)>,
    accepted: Vec<(String, Vec<u8>)>,
    stream: Vec<u8>,
}

fn sets() -> Sets {
    let all = common::samples();
    let accepted: Vec<_> = all
        .iter()
        .filter(|(_, b)| common::dsmr5_parse(b) == 1)
        .cloned()
        .collect();
    for (name, b) in &accepted {
        assert_eq!(
            ours(b, ParseOptions::default()),
            1,
            "{name}: dsmr5 accepts it, we must too"
        );
    }
    Sets {
        all,
        accepted,
        stream: common::stream_capture(),
    }
}

fn total_bytes(files: &[(String, Vec<u8>)]) -> u64 {
    files.iter().map(|(_, b)| b.len() as u64).sum()
}

fn bench(c: &mut Criterion, s: &Sets) {
    let n_acc = s.accepted.len() as u64;
    let mut g = c.benchmark_group("parse_vs_dsmr5");
    g.throughput(Throughput::Elements(n_acc));
    g.bench_function("p1consent", |b| {
        b.iter(|| {
            let mut n = 0;
            for (_, f) in &s.accepted {
                n += ours(black_box(f), ParseOptions::default());
            }
            n
        })
    });
    g.bench_function("dsmr5", |b| {
        b.iter(|| {
            let mut n = 0;
            for (_, f) in &s.accepted {
                n += common::dsmr5_parse(black_box(f));
            }
            n
        })
    });
    g.finish();

    let stream_n = ours(&s.stream, ParseOptions::default()) as u64;
    let mut g = c.benchmark_group("parse_stream");
    g.throughput(Throughput::Elements(stream_n));
    g.bench_function("p1consent", |b| {
        b.iter(|| ours(black_box(&s.stream), ParseOptions::default()))
    });
    g.bench_function("dsmr5", |b| {
        b.iter(|| common::dsmr5_parse(black_box(&s.stream)))
    });
    g.finish();

    let all_n: usize = s
        .all
        .iter()
        .map(|(_, f)| ours(f, ParseOptions::no_crc()))
        .sum();
    let mut g = c.benchmark_group("parse_all_samples");
    g.throughput(Throughput::Elements(all_n as u64));
    g.bench_function("p1consent", |b| {
        b.iter(|| {
            let mut n = 0;
            for (_, f) in &s.all {
                n += ours(black_box(f), ParseOptions::no_crc());
            }
            n
        })
    });
    g.finish();
}

fn summary(s: &Sets, started: SystemTime) {
    let stream_ours = ours(&s.stream, ParseOptions::default());
    let stream_theirs = common::dsmr5_parse(&s.stream);
    let all_n: usize = s
        .all
        .iter()
        .map(|(_, f)| ours(f, ParseOptions::no_crc()))
        .sum();
    let rows: [(&str, &str, usize, u64); 5] = [
        (
            "parse_vs_dsmr5",
            "p1consent",
            s.accepted.len(),
            total_bytes(&s.accepted),
        ),
        (
            "parse_vs_dsmr5",
            "dsmr5",
            s.accepted.len(),
            total_bytes(&s.accepted),
        ),
        (
            "parse_stream",
            "p1consent",
            stream_ours,
            s.stream.len() as u64,
        ),
        (
            "parse_stream",
            "dsmr5",
            stream_theirs,
            s.stream.len() as u64,
        ),
        ("parse_all_samples", "p1consent", all_n, total_bytes(&s.all)),
    ];
    println!();
    println!("== P1 parse throughput (criterion median) ==");
    println!(
        "{:<18} {:<10} {:>10} {:>9} {:>14} {:>12}",
        "group", "parser", "telegrams", "bytes", "telegrams/s", "MB/s"
    );
    let mut med = std::collections::HashMap::new();
    for (group, id, n, bytes) in rows {
        let m = common::median_ns(group, id, started);
        if let Some(ns) = m {
            med.insert((group, id), ns);
        }
        let (tps, mbs) = match m {
            Some(ns) => (
                format!("{:.0}", n as f64 / (ns / 1e9)),
                format!("{:.1}", bytes as f64 / (ns / 1e9) / 1e6),
            ),
            None => ("not run".into(), "-".into()),
        };
        println!("{group:<18} {id:<10} {n:>10} {bytes:>9} {tps:>14} {mbs:>12}");
    }
    for group in ["parse_vs_dsmr5", "parse_stream"] {
        if let (Some(o), Some(t)) = (med.get(&(group, "p1consent")), med.get(&(group, "dsmr5"))) {
            // Same telegrams on both sides, so the time ratio is the throughput ratio.
            let r = t / o;
            println!(
                "{group}: p1consent / dsmr5 throughput = {r:.2}x  (target >= 1.00: {})",
                if r >= 1.0 { "met" } else { "MISSED" }
            );
        }
    }
    println!(
        "dsmr5 accepts {} of {} sample files:",
        s.accepted.len(),
        s.all.len()
    );
    for (name, _) in &s.accepted {
        println!("  {name}");
    }
}

fn main() {
    let started = SystemTime::now();
    let s = sets();
    let mut c = common::criterion(3);
    bench(&mut c, &s);
    c.final_summary();
    if common::is_bench_run() {
        summary(&s, started);
        // Load-robust: blocks of ours alternate with blocks of dsmr5, median per-round ratio.
        let acc = &s.accepted;
        let (o, t, r) = common::interleaved(
            40,
            20,
            || {
                for (_, f) in acc {
                    black_box(ours(f, ParseOptions::default()));
                }
            },
            20,
            || {
                for (_, f) in acc {
                    black_box(common::dsmr5_parse(f));
                }
            },
        );
        println!(
            "interleaved (40 rounds x 20 passes over the {} files): p1consent {} / dsmr5 {} per pass: p1consent / dsmr5 throughput = {:.2}x",
            acc.len(),
            common::fmt_ns(o),
            common::fmt_ns(t),
            1.0 / r
        );
        let (o, t, r) = common::interleaved(
            20,
            1,
            || {
                black_box(ours(&s.stream, ParseOptions::default()));
            },
            1,
            || {
                black_box(common::dsmr5_parse(&s.stream));
            },
        );
        println!(
            "interleaved (20 rounds over the 566-telegram stream): p1consent {} / dsmr5 {}: p1consent / dsmr5 throughput = {:.2}x",
            common::fmt_ns(o),
            common::fmt_ns(t),
            1.0 / r
        );
    }
}

//! Plain in-process parse loop for the comparison with Python `dsmr-parser`
//! (scripts/bench-compare-python.sh runs both sides on the same files, same round count).
//!
//! Usage (after `--`): `[--files LIST] [--rounds N] [--stream FILE]`
//! - `--files LIST`: a text file with one telegram file path per line (default: every
//!   `p1-samples/*.txt`); every file is framed and parsed (CRC checked) once per round.
//! - `--stream FILE`: additionally a continuous capture, framed and parsed N rounds.
//! - `--parser dsmr5`: run the `dsmr5` crate instead of ours (same loop), and
//!   `--dsmr5-accepted`: keep only the files dsmr5 accepts. With a fixed `--rounds` under
//!   `valgrind --tool=callgrind` the two give instruction counts that do not depend on the
//!   machine's load (see docs/PERFORMANCE-protocol.md).
//!
//! Prints one line per set: `RESULT <set> telegrams=<n> bytes=<b> seconds=<s>` (totals
//! over all rounds, after one untimed warm-up round), then telegrams/s.
//!
//! Run: `cargo bench -p p1consent-shared --bench parse_folder -- --rounds 300`

mod common;

use std::hint::black_box;
use std::time::Instant;

use p1consent_shared::dsmr::{self, ParseOptions};

fn ours(data: &[u8]) -> usize {
    let mut n = 0;
    for frame in dsmr::frames(black_box(data)).flatten() {
        if let Ok(t) = frame.parse(ParseOptions::default()) {
            black_box(&t);
            n += 1;
        }
    }
    n
}

fn parse_all(files: &[Vec<u8>], parser: fn(&[u8]) -> usize) -> (usize, usize) {
    let (mut n, mut bytes) = (0, 0);
    for f in files {
        bytes += f.len();
        n += parser(black_box(f));
    }
    (n, bytes)
}

fn run(set: &str, files: &[Vec<u8>], rounds: usize, parser: fn(&[u8]) -> usize) {
    let parse_all = |files: &[Vec<u8>]| parse_all(files, parser);
    parse_all(files); // warm-up
    let t0 = Instant::now();
    let (mut n, mut bytes) = (0, 0);
    for _ in 0..rounds {
        let (a, b) = parse_all(files);
        n += a;
        bytes += b;
    }
    let s = t0.elapsed().as_secs_f64();
    println!("RESULT {set} telegrams={n} bytes={bytes} seconds={s:.6}");
    println!(
        "  {set}: {:.0} telegrams/s, {:.2} MB/s ({} files x {rounds} rounds)",
        n as f64 / s,
        bytes as f64 / s / 1e6,
        files.len()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let rounds: usize = arg("--rounds").and_then(|r| r.parse().ok()).unwrap_or(300);
    // `cargo test --benches` runs bench targets without `--bench`: keep it to one round.
    let rounds = if common::is_bench_run() || arg("--rounds").is_some() {
        rounds
    } else {
        1
    };
    let files: Vec<Vec<u8>> = match arg("--files") {
        Some(list) => std::fs::read_to_string(&list)
            .unwrap_or_else(|e| panic!("read {list}: {e}"))
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|p| std::fs::read(p.trim()).unwrap_or_else(|e| panic!("read {p}: {e}")))
            .collect(),
        None => common::samples().into_iter().map(|(_, b)| b).collect(),
    };
    let parser: fn(&[u8]) -> usize = match arg("--parser").as_deref() {
        Some("dsmr5") => common::dsmr5_parse,
        Some("ours") | None => ours,
        Some(other) => panic!("--parser {other}: expected ours or dsmr5"),
    };
    let files: Vec<Vec<u8>> = if args.iter().any(|a| a == "--dsmr5-accepted") {
        files
            .into_iter()
            .filter(|f| common::dsmr5_parse(f) == 1)
            .collect()
    } else {
        files
    };
    run("files", &files, rounds, parser);
    if let Some(stream) = arg("--stream") {
        let data = std::fs::read(&stream).unwrap_or_else(|e| panic!("read {stream}: {e}"));
        run("stream", &[data], rounds, parser);
    }
}

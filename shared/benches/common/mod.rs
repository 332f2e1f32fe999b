//! Shared helpers of the protocol benchmarks: criterion settings, sample loading, and
//! reading criterion's own estimates back after the run to print ratio tables.
//!
//! Criterion measures time only; ratios (pipeline vs crypto floor, rekey per reader vs one
//! KEM encapsulation) and sizes are printed by each bench's `main` after criterion finished,
//! from `<criterion dir>/<group>/<function>/<param>/new/estimates.json` (median), and only
//! for estimates written by this run (older files are reported as "not run").

#![allow(dead_code)] // each bench uses a different subset

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use criterion::Criterion;

/// Where criterion writes its results: `$CRITERION_HOME`, else `<target>/criterion`
/// (the same place criterion picks by default under cargo).
pub fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    // CARGO_TARGET_TMPDIR is `<target>/tmp` for bench targets.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(|t| t.join("criterion"))
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// Criterion configured for a 2-core, shared machine: short warm-up and measurement so the
/// three benches together stay well under 10 minutes. Command-line flags still override.
pub fn criterion(measurement_s: u64) -> Criterion {
    Criterion::default()
        .output_directory(&criterion_dir())
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(measurement_s))
        .sample_size(30)
        .configure_from_args()
}

/// Median time in nanoseconds of `<group>/<id>` if this run produced it (`id` may contain
/// `/` for a parameter, as criterion lays it out on disk).
pub fn median_ns(group: &str, id: &str, run_started: SystemTime) -> Option<f64> {
    let path = criterion_dir()
        .join(group)
        .join(id)
        .join("new")
        .join("estimates.json");
    let meta = std::fs::metadata(&path).ok()?;
    if meta.modified().ok()? < run_started {
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

/// True when criterion runs the benches for real (`cargo bench`), not as a smoke test
/// (`cargo test --benches` passes no `--bench`), nor only listing them.
pub fn is_bench_run() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--list" || a == "--test")
}

/// Formats nanoseconds with a sensible unit.
pub fn fmt_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// `Some(x)` as text, `None` as "not run".
pub fn opt(v: Option<String>) -> String {
    v.unwrap_or_else(|| "not run".to_string())
}

/// Path of the shared test data.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The sample telegrams (`p1-samples/*.txt`, sorted by name) as (file name, bytes).
pub fn samples() -> Vec<(String, Vec<u8>)> {
    let dir = data_dir().join("p1-samples");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            (name, bytes)
        })
        .collect();
    out.sort();
    out
}

/// The 1 Hz serial capture (566 DSMR 5.0 telegrams, Iskra AM550, starts mid-telegram).
pub fn stream_capture() -> Vec<u8> {
    let p = data_dir().join("p1-streams/iskra-am550t_dsmr50_566-telegrams_1s.txt");
    std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Load-robust comparison of two routines on a shared, busy machine: alternates blocks of
/// `iters_a` calls of `a` and `iters_b` calls of `b` for `rounds` rounds, so both see the
/// same load, and returns (median ns per call of a, median ns per call of b, median of the
/// per-round ratios a/b).
pub fn interleaved(
    rounds: usize,
    iters_a: usize,
    mut a: impl FnMut(),
    iters_b: usize,
    mut b: impl FnMut(),
) -> (f64, f64, f64) {
    let time = |n: usize, f: &mut dyn FnMut()| {
        let t0 = std::time::Instant::now();
        for _ in 0..n {
            f();
        }
        t0.elapsed().as_nanos() as f64 / n as f64
    };
    // Warm-up.
    time(iters_a, &mut a);
    time(iters_b, &mut b);
    let mut ta = Vec::with_capacity(rounds);
    let mut tb = Vec::with_capacity(rounds);
    let mut r = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let x = time(iters_a, &mut a);
        let y = time(iters_b, &mut b);
        ta.push(x);
        tb.push(y);
        r.push(x / y);
    }
    (median(&mut ta), median(&mut tb), median(&mut r))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// dsmr5's documented use: `Reader` over a byte iterator, `to_telegram` (CRC), then the
/// typed `State` (every object parsed). Returns telegrams accepted.
pub fn dsmr5_parse(data: &[u8]) -> usize {
    let mut n = 0;
    for readout in dsmr5::Reader::new(data.iter().map(|b| Ok::<u8, ()>(*b))).flatten() {
        let Ok(telegram) = readout.to_telegram() else {
            continue;
        };
        if let Ok(state) = dsmr5::state::State::try_from(&telegram) {
            std::hint::black_box(&state);
            n += 1;
        }
    }
    n
}

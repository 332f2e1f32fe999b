//! The p1-parse binary.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn sample(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

fn p1_parse(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_p1-parse"))
        .args(args)
        .output()
        .expect("run p1-parse")
}

#[test]
fn good_file_prints_json() {
    let f = sample("p1-samples/dsmr42_kaifa_3ph_events.txt");
    let out = p1_parse(&[f.to_str().expect("path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    assert_eq!(text.lines().count(), 1);
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect("json");
    assert_eq!(v["version"], "42");
    assert_eq!(v["timestamp"], "2016-11-13T20:57:57+01:00");
    assert_eq!(v["timestamp_raw"], "161113205757W");
    assert_eq!(v["energy_delivered_tariff1_kwh"], 1581.123);
    assert_eq!(v["crc"], "6796");
    assert_eq!(v["crc_verified"], true);
    assert_eq!(v["mbus"][0]["kind"], "gas");
    assert_eq!(v["mbus"][0]["reading"]["value"], 981.443);
    assert_eq!(v["mbus"][0]["reading"]["unit"], "m3");
    assert_eq!(v["power_failure_log"][2]["duration_s"], 2317482647u64);
    assert!(v.get("energy_delivered_total_kwh").is_none());
}

#[test]
fn bad_crc_fails_with_message() {
    let f = sample("p1-samples/dsmr40_spec-example.txt");
    let out = p1_parse(&[f.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "dsmr40_spec-example.txt: telegram 1: CRC mismatch: telegram says 522B, computed F46A"
        ),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    let out = p1_parse(&["--no-crc", "--pretty", f.to_str().expect("path")]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["crc"], "522B");
    assert_eq!(v["crc_verified"], false);
}

#[test]
fn stream_from_stdin() {
    let data = std::fs::read(sample(
        "p1-streams/iskra-am550t_dsmr50_566-telegrams_1s.txt",
    ))
    .expect("stream");
    let mut child = Command::new(env!("CARGO_BIN_EXE_p1-parse"))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("join").expect("write");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 566);
    assert!(String::from_utf8_lossy(&out.stderr).contains("skipped 320 bytes"));
}

#[test]
fn usage_and_missing_file() {
    assert_eq!(p1_parse(&[]).status.code(), Some(2));
    assert_eq!(p1_parse(&["--bogus", "x"]).status.code(), Some(2));
    let out = p1_parse(&["/nonexistent/p1.txt"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/p1.txt: cannot read"));
}

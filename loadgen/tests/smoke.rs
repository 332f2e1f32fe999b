//! The load generator end to end against Debian's mosquitto (testkit): small runs whose
//! outcome is exact, so they check behaviour (counts, zero loss, every record verified),
//! never speed.

use std::time::Duration;

use p1consent_loadgen::run::{RunArgs, run};
use p1consent_testkit::Mosquitto;

fn args(
    broker: &Mosquitto,
    meters: u64,
    providers: u64,
    conns: Option<u64>,
    suite: &str,
) -> RunArgs {
    RunArgs {
        exe: env!("CARGO_BIN_EXE_p1consent-loadgen").into(),
        meters,
        providers_per_meter: providers,
        duration: Duration::from_secs(3),
        broker: Some(broker.url()),
        meter_conns: conns,
        suite: suite.into(),
        shards: 2,
        threads: 2,
        sample_every: Duration::from_millis(500),
    }
}

#[test]
fn twenty_meters_one_provider_every_record_verified_once() {
    let broker = Mosquitto::start();
    let r = run(&args(&broker, 20, 1, None, "x25519-mlkem768")).expect("run");
    let m = &r.meters_report;
    let p = &r.providers_report;
    // 3 s at 1 Hz with phases inside the first second: exactly 3 telegrams per meter.
    assert_eq!(m.sent, vec![3; 20]);
    assert_eq!(m.produce_errors, 0);
    assert_eq!((m.conns, m.conns_connected, m.disconnects), (20, 20, 0));
    assert_eq!(m.deliveries, 20);
    assert_eq!(
        m.acked,
        60 + 20,
        "broker acknowledged every record and delivery"
    );
    assert_eq!(p.deliveries_ok, 20);
    assert_eq!(p.deliveries_failed, 0);
    assert_eq!(r.expected, 60);
    assert_eq!(r.opened, 60);
    assert_eq!(p.opened, vec![3; 20]);
    assert_eq!((r.lost, r.readers_with_loss), (0, 0));
    assert_eq!((r.duplicates, r.reordered), (0, 0));
    assert_eq!((p.gaps, p.missing_in_gaps, p.unroutable), (0, 0, 0));
    assert!(p.refused.is_empty(), "refused: {:?}", p.refused);
    assert_eq!(p.decode_errors, 0);
    assert_eq!(p.latency.count, 60, "one latency per opened record");
    assert!(p.latency.max_us >= p.latency.p99_us && p.latency.p99_us >= p.latency.p50_us);
    assert!(r.clean());
    // An external broker: only the two sides are sampled, and both were alive.
    let names: Vec<&str> = r.sides.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["meters", "providers"]);
    assert!(
        r.sides
            .iter()
            .all(|s| s.rss_max_kb > 0 && !s.rss_series.is_empty())
    );
    let row = r.table_row();
    assert!(
        row.starts_with("| 20 | 1 | 20 | 3 s | 60 | 60 | 0 | 0 |"),
        "{row}"
    );
}

#[test]
fn several_providers_per_meter_over_shared_connections() {
    let broker = Mosquitto::start();
    // 5 meters on 2 connections, 3 providers each, with the project's default KEM suite.
    let r = run(&args(&broker, 5, 3, Some(2), "x25519-sntrup761")).expect("run");
    let m = &r.meters_report;
    let p = &r.providers_report;
    assert_eq!((m.conns, m.conns_connected), (2, 2));
    assert_eq!(m.sent, vec![3; 5]);
    assert_eq!(m.deliveries, 15);
    assert_eq!(p.deliveries_ok, 15);
    assert_eq!(r.expected, 45);
    assert_eq!(
        p.opened,
        vec![3; 15],
        "each provider opened each meter's 3 records"
    );
    assert_eq!((r.lost, r.duplicates, r.reordered), (0, 0, 0));
    assert!(p.refused.is_empty(), "refused: {:?}", p.refused);
    assert!(r.clean());
}

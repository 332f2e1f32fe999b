//! Aggregated views: window alignment, statistics, counters, flush, persistence, the 1 Hz stream.

use std::collections::BTreeSet;
use std::path::PathBuf;

use p1consent_shared::consent::scope::{Field, FieldSet, Resolution};
use p1consent_shared::dsmr::{self, MbusChannel, MbusReading, ParseOptions, Telegram, Timestamp};
use p1consent_shared::view::{
    Aggregate, Aggregator, Counter, FLUSH_GRACE_MS, MeterCounter, Stat, View, ViewPayload,
    ViewSpec, telegram_time_ms,
};

/// 2023-11-14T22:00:00Z, a multiple of 3600 s (and so of 900, 60, 10 s).
const T0: u64 = 1_699_999_200_000;
const MIN: u64 = 60_000;
const QH: u64 = 900_000;

fn fields(f: &[Field]) -> FieldSet {
    f.iter().copied().collect()
}

fn power(kw: f64) -> Telegram {
    Telegram {
        power_delivered_kw: Some(kw),
        ..Telegram::default()
    }
}

fn energy(tariff: u16, t1: f64, t2: f64) -> Telegram {
    Telegram {
        tariff: Some(tariff),
        energy_delivered_tariff1_kwh: Some(t1),
        energy_delivered_tariff2_kwh: Some(t2),
        ..Telegram::default()
    }
}

fn agg(p: Option<ViewPayload>) -> Aggregate {
    match p {
        Some(ViewPayload::Aggregate(a)) => a,
        other => panic!("expected an aggregate, got {other:?}"),
    }
}

fn json_keys(a: &Aggregate) -> BTreeSet<String> {
    let bytes = ViewPayload::Aggregate(a.clone()).to_bytes().unwrap();
    match serde_json::from_slice::<serde_json::Value>(&bytes).unwrap() {
        serde_json::Value::Object(m) => m.keys().cloned().collect(),
        _ => panic!("not an object"),
    }
}

#[test]
fn quarter_hour_total_power_statistics() {
    let spec = ViewSpec::new(fields(&[Field::PowerDelivered]), Resolution::QuarterHour);
    let mut a = Aggregator::new(spec);
    // 0.5, 1.5, 2.0, 0.25 → mean 4.25 / 4 = 1.0625, min 0.25, max 2.0.
    for (i, kw) in [0.5, 1.5, 2.0, 0.25].into_iter().enumerate() {
        assert_eq!(a.push(&power(kw), T0 + 1_000 + i as u64 * 200_000), None);
    }
    // A telegram without the value counts as a sample but not in the statistics.
    assert_eq!(a.push(&Telegram::default(), T0 + QH - 1), None);
    let out = agg(a.push(&power(3.0), T0 + QH));
    assert_eq!(out.start_ms, T0);
    assert_eq!(out.end_ms, T0 + QH);
    assert_eq!(out.resolution_s, 900);
    assert_eq!(out.samples, 5);
    assert_eq!(
        out.power_delivered_kw,
        Some(Stat {
            mean: 1.0625,
            min: 0.25,
            max: 2.0
        })
    );
    let want: BTreeSet<String> = [
        "type",
        "v",
        "start_ms",
        "end_ms",
        "resolution_s",
        "samples",
        "power_delivered_kw",
    ]
    .map(String::from)
    .into();
    assert_eq!(json_keys(&out), want);
    let text = String::from_utf8(ViewPayload::Aggregate(out).to_bytes().unwrap()).unwrap();
    assert_eq!(
        text,
        r#"{"type":"aggregate","v":1,"start_ms":1699999200000,"end_ms":1700000100000,"resolution_s":900,"samples":5,"power_delivered_kw":{"mean":1.0625,"min":0.25,"max":2.0}}"#
    );
    // The 3.0 kW telegram opened the next window.
    let next = agg(a.flush(T0 + 2 * QH + FLUSH_GRACE_MS));
    assert_eq!((next.start_ms, next.samples), (T0 + QH, 1));
    assert_eq!(next.power_delivered_kw.map(|s| s.mean), Some(3.0));
}

#[test]
fn mean_is_rounded_to_six_decimals() {
    let mut a = Aggregator::new(ViewSpec::new(
        fields(&[Field::PowerDelivered]),
        Resolution::Minute,
    ));
    for kw in [0.1, 0.2, 0.2] {
        a.push(&power(kw), T0);
    }
    let out = agg(a.flush(T0 + MIN + FLUSH_GRACE_MS));
    assert_eq!(
        out.power_delivered_kw,
        Some(Stat {
            mean: 0.166667,
            min: 0.1,
            max: 0.2
        })
    );
}

#[test]
fn energy_delta_and_end_across_windows() {
    let spec = ViewSpec::new(fields(&[Field::EnergyDelivered]), Resolution::Minute);
    let mut a = Aggregator::new(spec);
    // Window 1: first ever values → delta from the first sample.
    a.push(&energy(1, 100.000, 50.0), T0);
    a.push(&energy(1, 100.010, 50.0), T0 + 20_000);
    a.push(&energy(1, 100.025, 50.0), T0 + 40_000);
    let w1 = agg(a.push(&energy(1, 100.030, 50.0), T0 + MIN + 10_000));
    assert_eq!(
        w1.energy_delivered_tariff1_kwh,
        Some(Counter {
            delta: 0.025,
            end: 100.025
        })
    );
    assert_eq!(
        w1.energy_delivered_tariff2_kwh,
        Some(Counter {
            delta: 0.0,
            end: 50.0
        })
    );
    assert_eq!(w1.energy_delivered_total_kwh, None);
    assert_eq!(w1.tariff, None, "tariff not granted");
    // Window 2: baseline is the last value of window 1 (100.025), not the first of window 2.
    a.push(&energy(1, 100.050, 50.0), T0 + MIN + 50_000);
    let w2 = agg(a.flush(T0 + 2 * MIN + FLUSH_GRACE_MS));
    assert_eq!(
        w2.energy_delivered_tariff1_kwh,
        Some(Counter {
            delta: 0.025,
            end: 100.05
        })
    );
    // Window 4 after a silent window 3: the last value is more than one window old, so the
    // delta starts at the first sample of window 4.
    a.push(&energy(1, 100.200, 50.0), T0 + 3 * MIN);
    a.push(&energy(1, 100.210, 50.0), T0 + 3 * MIN + 30_000);
    let w4 = agg(a.flush(T0 + 4 * MIN + FLUSH_GRACE_MS));
    assert_eq!(w4.start_ms, T0 + 3 * MIN);
    assert_eq!(
        w4.energy_delivered_tariff1_kwh,
        Some(Counter {
            delta: 0.01,
            end: 100.21
        })
    );
    // Window 5: the meter was replaced (register fell): the delta counts 100.230 → 100.210
    // before and 0.000 → 0.004 after the reset.
    a.push(&energy(1, 100.230, 50.0), T0 + 4 * MIN);
    a.push(&energy(1, 0.000, 50.0), T0 + 4 * MIN + 1_000);
    a.push(&energy(1, 0.004, 50.0), T0 + 4 * MIN + 2_000);
    let w5 = agg(a.flush(T0 + 5 * MIN + FLUSH_GRACE_MS));
    assert_eq!(
        w5.energy_delivered_tariff1_kwh,
        Some(Counter {
            delta: 0.024,
            end: 0.004
        })
    );
}

#[test]
fn tariff_switch_in_a_window() {
    let spec = ViewSpec::new(
        fields(&[Field::EnergyDelivered, Field::Tariff]),
        Resolution::QuarterHour,
    );
    let mut a = Aggregator::new(spec);
    // Night rate (1) until 07:00, then normal rate (2).
    a.push(&energy(1, 1000.100, 2000.000), T0);
    a.push(&energy(1, 1000.300, 2000.000), T0 + 300_000);
    a.push(&energy(2, 1000.300, 2000.000), T0 + 400_000);
    a.push(&energy(2, 1000.300, 2000.450), T0 + 800_000);
    let out = agg(a.flush(T0 + QH + FLUSH_GRACE_MS));
    assert_eq!(out.tariff, Some(2));
    assert_eq!(
        out.energy_delivered_tariff1_kwh,
        Some(Counter {
            delta: 0.2,
            end: 1000.3
        })
    );
    assert_eq!(
        out.energy_delivered_tariff2_kwh,
        Some(Counter {
            delta: 0.45,
            end: 2000.45
        })
    );
    assert_eq!(out.samples, 4);
}

#[test]
fn windows_are_aligned_to_unix_time() {
    // 2023-11-14T22:13:20Z
    let at = 1_700_000_000_000;
    let cases = [
        (Resolution::TenSeconds, 1_700_000_000_000, 1_700_000_010_000),
        (Resolution::Minute, 1_699_999_980_000, 1_700_000_040_000),
        (
            Resolution::QuarterHour,
            1_699_999_200_000,
            1_700_000_100_000,
        ),
        (Resolution::Hour, 1_699_999_200_000, 1_700_002_800_000),
        (Resolution::Day, 1_699_920_000_000, 1_700_006_400_000),
    ];
    for (res, start, end) in cases {
        let mut a = Aggregator::new(ViewSpec::new(fields(&[Field::PowerDelivered]), res));
        a.push(&power(1.0), at);
        assert_eq!(a.window_start_ms(), Some(start), "{res:?}");
        assert_eq!(a.window_end_ms(), Some(end), "{res:?}");
        // The last millisecond still belongs to the window; the end opens the next one.
        assert_eq!(a.push(&power(1.0), end - 1), None, "{res:?}");
        let out = agg(a.push(&power(1.0), end));
        assert_eq!((out.start_ms, out.end_ms, out.samples), (start, end, 2));
        assert_eq!(out.resolution_s, res.seconds());
        assert_eq!(a.window_start_ms(), Some(end));
    }
    // 2019-03-24 15:05:19 CET = 14:05:19Z: the quarter-hour window is 14:00–14:15 UTC.
    let mut a = Aggregator::new(ViewSpec::new(
        fields(&[Field::PowerDelivered]),
        Resolution::QuarterHour,
    ));
    a.push(&power(1.0), 1_553_436_319_000);
    assert_eq!(a.window_start_ms(), Some(1_553_436_000_000));
}

#[test]
fn flush_closes_a_window_when_the_meter_is_silent() {
    let mut view = View::new(ViewSpec::new(
        fields(&[Field::PowerDelivered]),
        Resolution::Minute,
    ));
    assert_eq!(view.flush(T0), None, "nothing open");
    assert_eq!(view.next_flush_ms(), None);
    assert_eq!(view.push(&power(0.7), T0 + 5_000), None);
    // Without a timestamp the telegram counts at its receive time: the window closes at its
    // end plus the grace for late telegrams.
    assert_eq!(view.next_flush_ms(), Some(T0 + MIN + FLUSH_GRACE_MS));
    assert_eq!(
        view.flush(T0 + MIN + FLUSH_GRACE_MS - 1),
        None,
        "window not over yet"
    );
    let out = agg(view.flush(T0 + MIN + FLUSH_GRACE_MS));
    assert_eq!((out.start_ms, out.samples), (T0, 1));
    assert_eq!(view.flush(T0 + 10 * MIN), None, "no empty windows");
    assert_eq!(view.next_flush_ms(), None);
    // After a long silence the next telegram opens its own window; the silent minutes
    // produce nothing.
    assert_eq!(view.push(&power(0.9), T0 + 7 * MIN + 1), None);
    let out = agg(view.push(&power(1.1), T0 + 8 * MIN));
    assert_eq!((out.start_ms, out.samples), (T0 + 7 * MIN, 1));
    assert_eq!(out.power_delivered_kw.map(|s| s.max), Some(0.9));
}

#[test]
fn clock_going_backwards_closes_the_window_early() {
    let mut a = Aggregator::new(ViewSpec::new(
        fields(&[Field::PowerDelivered]),
        Resolution::Minute,
    ));
    a.push(&power(1.0), T0 + 5 * MIN);
    let out = agg(a.push(&power(2.0), T0 + MIN));
    assert_eq!(out.start_ms, T0 + 5 * MIN);
    assert_eq!(a.window_start_ms(), Some(T0 + MIN));
}

fn gas(value: f64) -> Telegram {
    let mut ch = MbusChannel {
        channel: 1,
        device_type: Some(3),
        kind: Some("gas".into()),
        equipment_id: Some("G0019340315370616".into()),
        equipment_id_raw: None,
        valve_position: None,
        breaker_state: None,
        reading: None,
        empty: false,
    };
    ch.reading = Some(MbusReading {
        timestamp: Timestamp {
            raw: "231114230000W".into(),
            iso: Some("2023-11-14T23:00:00+01:00".into()),
            clock_set: true,
            parts: None,
        },
        value,
        unit: Some("m3".into()),
        obis: "0-1:24.2.1".into(),
    });
    Telegram {
        power_failures: Some(4),
        voltage_sags_l1: Some(10),
        text_message: Some(String::new()),
        mbus: vec![ch],
        ..Telegram::default()
    }
}

#[test]
fn gas_power_quality_and_text_message() {
    let spec = ViewSpec::new(
        fields(&[Field::Gas, Field::PowerQuality, Field::TextMessage]),
        Resolution::Hour,
    );
    let mut a = Aggregator::new(spec);
    a.push(&gas(1091.352), T0);
    let mut t = gas(1091.352);
    t.text_message = Some("Storing 14:00-15:00".into());
    a.push(&t, T0 + 1_000);
    let mut t = gas(1091.601);
    t.power_failures = Some(5);
    t.voltage_sags_l1 = Some(13);
    a.push(&t, T0 + 2_000);
    a.push(&gas(1091.601), T0 + 3_000); // empty text message again: the last non-empty stays
    let out = agg(a.flush(T0 + 3_600_000 + FLUSH_GRACE_MS));
    assert_eq!(
        out.gas,
        Some(MeterCounter {
            delta: 0.249,
            end: 1091.601,
            unit: Some("m3".into())
        })
    );
    assert_eq!(out.power_failures, Some(1));
    assert_eq!(out.voltage_sags_l1, Some(3));
    assert_eq!(out.long_power_failures, None);
    assert_eq!(out.text_message.as_deref(), Some("Storing 14:00-15:00"));
    assert_eq!(out.meter_ids, None, "meter ids not granted");
    assert_eq!(out.water, None);
}

#[test]
fn state_survives_a_restart() {
    let spec = ViewSpec::new(
        fields(&[Field::PowerDelivered, Field::EnergyDelivered]),
        Resolution::Minute,
    );
    let feed = |a: &mut View, from: usize, to: usize| -> Vec<ViewPayload> {
        (from..to)
            .filter_map(|i| {
                let mut t = energy(1, 10.0 + i as f64 * 0.001, 0.0);
                t.power_delivered_kw = Some((i % 7) as f64 * 0.25);
                a.push(&t, T0 + i as u64 * 7_000)
            })
            .collect()
    };
    let mut straight = View::new(spec);
    let expected = feed(&mut straight, 0, 40);

    let mut first = View::new(spec);
    let mut got = feed(&mut first, 0, 23);
    let saved = serde_json::to_string(&first).unwrap();
    let mut restored: View = serde_json::from_str(&saved).unwrap();
    assert_eq!(restored, first);
    got.extend(feed(&mut restored, 23, 40));
    assert_eq!(got, expected);
    assert_eq!(got.len(), 4);
    assert_eq!(restored.flush(u64::MAX), straight.flush(u64::MAX));
}

fn stream() -> Vec<(Telegram, u64)> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/p1-streams/iskra-am550t_dsmr50_566-telegrams_1s.txt");
    let bytes = std::fs::read(p).expect("stream");
    dsmr::frames(&bytes)
        .filter_map(|f| f.ok()?.parse(ParseOptions::default()).ok())
        .map(|t| {
            let at = utc_ms(&t);
            (t, at)
        })
        .collect()
}

/// The telegram's own timestamp as Unix ms (these telegrams carry W = UTC+1).
fn utc_ms(t: &Telegram) -> u64 {
    telegram_time_ms(t).expect("timestamp")
}

#[test]
fn quarter_hour_view_over_the_1hz_stream() {
    let s = stream();
    assert_eq!(s.len(), 566);
    assert_eq!(s[0].1, 1_553_436_319_000); // 2019-03-24T14:05:19Z
    assert_eq!(s[565].1, 1_553_436_885_000); // 14:14:45Z
    let spec = ViewSpec::new(
        fields(&[
            Field::PowerDelivered,
            Field::EnergyDelivered,
            Field::PhaseVoltage,
        ]),
        Resolution::QuarterHour,
    );
    let mut view = View::new(spec);
    for (t, at) in &s {
        assert_eq!(view.push(t, *at), None, "all in 14:00–14:15Z");
    }
    let out = agg(view.flush(1_553_436_900_000 + FLUSH_GRACE_MS));
    assert_eq!(out.start_ms, 1_553_436_000_000);
    assert_eq!(out.end_ms, 1_553_436_900_000);
    assert_eq!(out.samples, 566);
    // Independently: mean of the 566 power values, rounded to 6 decimals.
    let powers: Vec<f64> = s.iter().filter_map(|(t, _)| t.power_delivered_kw).collect();
    assert_eq!(powers.len(), 566);
    let mean = powers.iter().sum::<f64>() / 566.0;
    assert!((mean - 0.597_226).abs() < 5e-7);
    assert_eq!(
        out.power_delivered_kw,
        Some(Stat {
            mean: 0.597226,
            min: 0.374,
            max: 1.23
        })
    );
    assert_eq!(
        out.energy_delivered_tariff1_kwh,
        Some(Counter {
            delta: 0.094,
            end: 3432.921
        })
    );
    assert_eq!(
        out.energy_delivered_tariff2_kwh,
        Some(Counter {
            delta: 0.0,
            end: 3224.632
        })
    );
    let v1 = out.voltage_l1_v.expect("voltage");
    let vs: Vec<f64> = s.iter().filter_map(|(t, _)| t.voltage_l1_v).collect();
    assert_eq!(v1.min, vs.iter().copied().fold(f64::INFINITY, f64::min));
    assert_eq!(v1.max, vs.iter().copied().fold(f64::NEG_INFINITY, f64::max));
    assert_eq!(out.current_l1_a, None, "current not granted");
    assert_eq!(out.power_delivered_l1_kw, None, "phase power not granted");
}

#[test]
fn minute_view_over_the_1hz_stream() {
    let s = stream();
    let mut view = View::new(ViewSpec::new(
        fields(&[Field::PowerDelivered]),
        Resolution::Minute,
    ));
    let mut out: Vec<Aggregate> = s
        .iter()
        .filter_map(|(t, at)| view.push(t, *at))
        .map(|p| agg(Some(p)))
        .collect();
    out.extend(view.flush(u64::MAX).map(|p| agg(Some(p))));
    // 14:05 … 14:14 UTC: ten windows.
    assert_eq!(out.len(), 10);
    let starts: Vec<u64> = out.iter().map(|a| a.start_ms).collect();
    let want: Vec<u64> = (0..10).map(|i| 1_553_436_300_000 + i * MIN).collect();
    assert_eq!(starts, want);
    // 41 s in the first minute (14:05:19–14:05:59), 46 in the last (14:14:00–14:14:45); the
    // capture skips one second in 14:10.
    let samples: Vec<u64> = out.iter().map(|a| a.samples).collect();
    assert_eq!(samples, [41, 60, 60, 60, 60, 59, 60, 60, 60, 46]);
}

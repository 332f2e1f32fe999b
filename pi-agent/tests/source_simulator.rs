//! Simulator: every telegram parses with CRC checking and its values are consistent over time.

use p1consent_shared::dsmr::{ParseOptions, Telegram, frame_all, parse};
use pi_agent::source::time::days_from_civil;
use pi_agent::source::{
    CancellationToken, SimConfig, Simulator, SourceStatus, StopReason, telegram_time_s,
};

/// 2024-03-31 01:00 UTC: EU summer time starts.
fn dst_start_2024() -> i64 {
    days_from_civil(2024, 3, 31) * 86_400 + 3600
}

/// Independent local-time helpers for the assertions (only valid around spring 2024).
fn local(at_s: i64) -> (i64, i64, bool) {
    let summer = at_s >= dst_start_2024();
    let l = at_s + if summer { 7200 } else { 3600 };
    let days = l.div_euclid(86_400);
    let weekday = (days + 3).rem_euclid(7); // 0 = Monday
    let hour = l.rem_euclid(86_400) / 3600;
    (weekday, hour, summer)
}

fn wh(x: Option<f64>) -> i64 {
    (x.expect("counter present") * 1000.0).round() as i64
}

fn w(x: Option<f64>) -> i64 {
    (x.expect("power present") * 1000.0).round() as i64
}

fn parse_ok(bytes: &[u8]) -> Telegram {
    let t = parse(bytes, ParseOptions::default()).expect("simulated telegram parses with CRC");
    assert!(t.crc_verified);
    assert!(t.warnings.is_empty(), "warnings: {:?}", t.warnings);
    assert!(t.unknown.is_empty(), "unknown lines: {:?}", t.unknown);
    t
}

#[test]
fn seventy_two_hours_round_trip_across_dst() {
    // Friday 2024-03-29 12:00 UTC → Monday 2024-04-01 12:00 UTC: weekday and weekend tariffs,
    // the DST switch on Sunday, Monday's 07:00 switch in summer time.
    let start_s = days_from_civil(2024, 3, 29) * 86_400 + 12 * 3600;
    let start_ms = u64::try_from(start_s).unwrap() * 1000;
    let mut sim = Simulator::new(SimConfig::new(42, start_ms));
    let mut prev: Option<Telegram> = None;
    let mut returned_hours = Vec::new();
    let mut max_delivered = 0;
    let mut night_min = i64::MAX;
    let mut night_max = 0;
    let mut gas_changes = 0;
    let mut tariff_switches = Vec::new();
    for step in 1..=72 * 60 {
        let at_s = start_s + step * 60;
        let bytes = sim.next_telegram(u64::try_from(at_s).unwrap() * 1000);
        let frames = frame_all(&bytes);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].as_ref().unwrap().bytes(), &bytes[..]);
        let t = parse_ok(&bytes);
        assert_eq!(t.header.raw, "/SIM5\\2P1CONSENT-SIM");
        assert_eq!(t.version.as_deref(), Some("50"));
        assert!(t.meter_id.is_some());

        // Timestamp: the requested time in Amsterdam local time with the right S/W flag.
        let (weekday, hour, summer) = local(at_s);
        assert_eq!(telegram_time_s(&bytes), Some(at_s));
        let ts = t.timestamp.as_ref().unwrap();
        assert_eq!(ts.parts.unwrap().dst, Some(summer), "{}", ts.raw);
        assert_eq!(i64::from(ts.parts.unwrap().hour), hour);

        // Tariff: 2 on weekdays 07:00–23:00 local.
        let expect_tariff = if weekday < 5 && (7..23).contains(&hour) {
            2
        } else {
            1
        };
        assert_eq!(t.tariff, Some(expect_tariff), "at {}", ts.raw);

        // Power: net, per-phase sums exact, currents match P/V.
        let pd = w(t.power_delivered_kw);
        let pr = w(t.power_returned_kw);
        assert!(pd == 0 || pr == 0);
        let phases_d = [
            t.power_delivered_l1_kw,
            t.power_delivered_l2_kw,
            t.power_delivered_l3_kw,
        ];
        let phases_r = [
            t.power_returned_l1_kw,
            t.power_returned_l2_kw,
            t.power_returned_l3_kw,
        ];
        assert_eq!(phases_d.iter().map(|x| w(*x)).sum::<i64>(), pd);
        assert_eq!(phases_r.iter().map(|x| w(*x)).sum::<i64>(), pr);
        let volts = [t.voltage_l1_v, t.voltage_l2_v, t.voltage_l3_v];
        let amps = [t.current_l1_a, t.current_l2_a, t.current_l3_a];
        for i in 0..3 {
            let v = volts[i].unwrap();
            assert!((224.0..=236.0).contains(&v), "voltage {v}");
            let p = (w(phases_d[i]) + w(phases_r[i])) as f64;
            let a = amps[i].unwrap();
            assert!((a - p / v).abs() <= 0.5 + 1e-6, "I {a} vs P/V {}", p / v);
        }
        max_delivered = max_delivered.max(pd);
        if pr > 0 {
            returned_hours.push(hour);
        }
        if (2..4).contains(&hour) {
            night_min = night_min.min(pd);
            night_max = night_max.max(pd);
        }

        // Gas: stamped with the last 5-minute boundary.
        let gas = t.gas().expect("gas channel");
        let reading = gas.reading.as_ref().unwrap();
        assert_eq!(reading.unit.as_deref(), Some("m3"));
        let gas_ts_s = telegram_time_s_of(&reading.timestamp);
        assert_eq!(
            gas_ts_s,
            at_s - at_s.rem_euclid(300),
            "gas ts {}",
            reading.timestamp.raw
        );

        if let Some(p) = &prev {
            // Counters are monotonic and follow the power of this minute on this tariff.
            let (d1, d2) = (
                wh(t.energy_delivered_tariff1_kwh) - wh(p.energy_delivered_tariff1_kwh),
                wh(t.energy_delivered_tariff2_kwh) - wh(p.energy_delivered_tariff2_kwh),
            );
            let (r1, r2) = (
                wh(t.energy_returned_tariff1_kwh) - wh(p.energy_returned_tariff1_kwh),
                wh(t.energy_returned_tariff2_kwh) - wh(p.energy_returned_tariff2_kwh),
            );
            for d in [d1, d2, r1, r2] {
                assert!(d >= 0, "counter went backwards");
            }
            let (dt, do_, rt, ro) = if expect_tariff == 1 {
                (d1, d2, r1, r2)
            } else {
                (d2, d1, r2, r1)
            };
            assert_eq!(do_, 0);
            assert_eq!(ro, 0);
            assert!(
                (dt as f64 - pd as f64 / 60.0).abs() <= 1.0 + 1e-9,
                "{dt} Wh vs {pd} W"
            );
            assert!(
                (rt as f64 - pr as f64 / 60.0).abs() <= 1.0 + 1e-9,
                "{rt} Wh vs {pr} W"
            );
            if p.tariff != t.tariff {
                tariff_switches.push((t.tariff.unwrap(), weekday, hour));
            }

            // Gas only moves when its 5-minute stamp moves, and never backwards.
            let pg = p.gas().unwrap().reading.as_ref().unwrap();
            let dv = reading.value - pg.value;
            assert!(dv >= -1e-9);
            if pg.timestamp.raw == reading.timestamp.raw {
                assert_eq!(dv, 0.0, "gas changed within a 5-minute period");
            } else if dv > 0.0 {
                gas_changes += 1;
            }
        }
        prev = Some(t);
    }
    // Realism: solar return only around midday, a low night base, real evening peaks.
    assert!(!returned_hours.is_empty(), "no solar return in 3 days");
    assert!(returned_hours.iter().all(|h| (8..=18).contains(h)));
    assert!((80..=400).contains(&night_min), "night min {night_min}");
    assert!(night_max <= 1500, "night max {night_max}");
    assert!(max_delivered >= 1800, "max delivered {max_delivered}");
    assert!(gas_changes > 100, "gas hardly moves: {gas_changes}");
    // Friday 23:00 → low; Monday 07:00 (summer time) → normal; nothing at the weekend.
    assert_eq!(tariff_switches, vec![(1, 4, 23), (2, 0, 7)]);
}

fn telegram_time_s_of(ts: &p1consent_shared::dsmr::Timestamp) -> i64 {
    let p = ts.parts.expect("valid gas timestamp");
    let days = days_from_civil(i64::from(p.year), u32::from(p.month), u32::from(p.day));
    days * 86_400 + i64::from(p.hour) * 3600 + i64::from(p.minute) * 60 + i64::from(p.second)
        - i64::from(p.utc_offset_s().unwrap())
}

#[test]
fn autumn_dst_flag_switches_back() {
    // 2024-10-27 01:00 UTC: summer time ends.
    let end_s = days_from_civil(2024, 10, 27) * 86_400 + 3600;
    let mut sim = Simulator::new(SimConfig::new(
        7,
        u64::try_from(end_s - 120).unwrap() * 1000,
    ));
    let before = parse_ok(&sim.next_telegram(u64::try_from(end_s - 1).unwrap() * 1000));
    let after = parse_ok(&sim.next_telegram(u64::try_from(end_s).unwrap() * 1000));
    assert_eq!(before.timestamp_raw.as_deref(), Some("241027025959S"));
    assert_eq!(after.timestamp_raw.as_deref(), Some("241027020000W"));
}

#[test]
fn deterministic_per_seed_and_never_backwards() {
    let start = 1_717_236_000_000; // 2024-06-01 10:00 UTC
    let run = |seed| {
        let mut s = Simulator::new(SimConfig::new(seed, start));
        (1..=30)
            .map(|i| s.next_telegram(start + i * 1000))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));

    // A time before the last call does not move counters backwards.
    let mut s = Simulator::new(SimConfig::new(3, start));
    let a = parse_ok(&s.next_telegram(start + 3_600_000));
    let b = parse_ok(&s.next_telegram(start + 60_000));
    assert_eq!(
        a.energy_delivered_tariff1_kwh,
        b.energy_delivered_tariff1_kwh
    );
    assert_eq!(
        a.energy_delivered_tariff2_kwh,
        b.energy_delivered_tariff2_kwh
    );
    // Hostile ids are hex-encoded, never break the telegram.
    let mut cfg = SimConfig::new(3, start);
    cfg.meter_id = "x)(\r\n!".repeat(40);
    parse_ok(&Simulator::new(cfg).next_telegram(start + 1000));
}

#[tokio::test]
async fn async_task_emits_valid_telegrams_and_stops_on_cancel() {
    let mut cfg = SimConfig::new(9, pi_agent::source::now_unix_ms());
    cfg.interval_ms = 100;
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let (st_tx, st_rx) = SourceStatus::channel();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(Simulator::new(cfg).run(tx, st_tx, cancel.clone()));
    for _ in 0..3 {
        let t = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .expect("simulator emits")
            .expect("channel open");
        parse_ok(&t.bytes);
        assert!(t.received_at_ms > 0);
    }
    cancel.cancel();
    let reason = task.await.unwrap().unwrap();
    assert_eq!(reason, StopReason::Cancelled);
    let st = st_rx.borrow().clone();
    assert!(st.telegrams >= 3);
    assert_eq!(st.crc_errors, 0);
    assert!(!st.connected);

    // Too short an interval is a configuration error.
    let mut cfg = SimConfig::new(9, 0);
    cfg.interval_ms = 1;
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    let (st_tx, _st_rx) = SourceStatus::channel();
    assert!(
        Simulator::new(cfg)
            .run(tx, st_tx, CancellationToken::new())
            .await
            .is_err()
    );
}

//! View payloads from real telegrams: exact key sets, values, no leakage, round trips.

use std::collections::BTreeSet;
use std::path::PathBuf;

use p1consent_shared::consent::scope::{Field, FieldSet, Resolution};
use p1consent_shared::dsmr::{self, ParseOptions, Telegram};
use p1consent_shared::view::{
    AGGREGATE_BASE_KEYS, Aggregator, MeterId, MeterReading, READING_BASE_KEYS, View, ViewError,
    ViewPayload, ViewSpec, field_keys, project,
};
use serde_json::Value;

fn data(rel: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn sample(file: &str) -> Telegram {
    dsmr::parse(&data(&format!("p1-samples/{file}")), ParseOptions::no_crc())
        .unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn all_samples() -> Vec<(String, Telegram)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/p1-samples");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("sample dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".txt"))
        .collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|n| {
            let t = dsmr::parse(&data(&format!("p1-samples/{n}")), ParseOptions::no_crc()).ok()?;
            Some((n, t))
        })
        .collect()
}

fn json(p: &ViewPayload) -> serde_json::Map<String, Value> {
    let bytes = p.to_bytes().expect("to_bytes");
    match serde_json::from_slice::<Value>(&bytes).expect("json") {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn keys(p: &ViewPayload) -> BTreeSet<String> {
    json(p).keys().cloned().collect()
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|s| s.to_string()).collect()
}

const E350_MS: u64 = 1_567_712_403_000; // 2019-09-05T19:40:03Z = the telegram's 21:40:03+02:00

#[test]
fn raw_power_delivered_has_exactly_time_and_power() {
    let t = sample("dsmr42_landisgyr-e350_gas.txt");
    let p = project(&t, FieldSet::empty().with(Field::PowerDelivered), E350_MS);
    assert_eq!(
        keys(&p),
        set(&["type", "v", "time_ms", "meter_time", "power_delivered_kw"])
    );
    let j = json(&p);
    assert_eq!(j["type"], "reading");
    assert_eq!(j["v"], 1);
    assert_eq!(j["time_ms"], E350_MS);
    assert_eq!(j["meter_time"], "2019-09-05T21:40:03+02:00");
    assert_eq!(j["power_delivered_kw"], 0.374);
    assert_eq!(
        String::from_utf8(p.to_bytes().unwrap()).unwrap(),
        r#"{"type":"reading","v":1,"time_ms":1567712403000,"meter_time":"2019-09-05T21:40:03+02:00","power_delivered_kw":0.374}"#
    );
}

#[test]
fn raw_all_fields_of_a_gas_meter() {
    let t = sample("dsmr42_landisgyr-e350_gas.txt");
    let all: FieldSet = Field::ALL.into_iter().collect();
    let p = project(&t, all, E350_MS);
    let r = p.as_reading().expect("reading");
    assert_eq!(r.energy_delivered_tariff1_kwh, Some(3235.689));
    assert_eq!(r.energy_delivered_tariff2_kwh, Some(6777.24));
    assert_eq!(r.energy_delivered_total_kwh, None);
    assert_eq!(r.energy_returned_tariff1_kwh, Some(0.313));
    assert_eq!(r.energy_returned_tariff2_kwh, Some(0.0));
    assert_eq!(r.power_delivered_kw, Some(0.374));
    assert_eq!(r.power_returned_kw, Some(0.0));
    assert_eq!(r.power_delivered_l1_kw, Some(0.374));
    assert_eq!(r.power_delivered_l2_kw, None);
    assert_eq!(r.current_l1_a, Some(2.0));
    assert_eq!(r.voltage_l1_v, None);
    assert_eq!(r.tariff, Some(2));
    assert_eq!(r.power_failures, Some(3));
    assert_eq!(r.long_power_failures, Some(1));
    assert_eq!(r.voltage_sags_l1, Some(0));
    assert_eq!(r.voltage_swells_l1, Some(0));
    assert_eq!(r.voltage_sags_l2, None);
    // Empty text messages are left out.
    assert_eq!(r.text_message, None);
    assert_eq!(r.text_message_code, None);
    assert_eq!(
        r.gas,
        Some(MeterReading {
            value: 1091.352,
            unit: Some("m3".into()),
            meter_time: Some("2019-09-05T21:00:00+02:00".into()),
        })
    );
    assert_eq!(r.water, None);
    assert_eq!(r.heat, None);
    assert_eq!(
        r.meter_ids,
        Some(vec![
            MeterId {
                kind: "electricity".into(),
                channel: None,
                id: "E0031003239456716".into()
            },
            MeterId {
                kind: "gas".into(),
                channel: Some(1),
                id: "G0019340315370616".into()
            },
        ])
    );
    let j = json(&p);
    assert_eq!(
        j["gas"],
        serde_json::json!({"value":1091.352,"unit":"m3","meter_time":"2019-09-05T21:00:00+02:00"})
    );
    assert_eq!(
        j["meter_ids"][1],
        serde_json::json!({"kind":"gas","channel":1,"id":"G0019340315370616"})
    );
}

#[test]
fn raw_gas_only_and_meter_ids_only() {
    let t = sample("dsmr42_landisgyr-e350_gas.txt");
    let p = project(&t, FieldSet::empty().with(Field::Gas), E350_MS);
    assert_eq!(
        keys(&p),
        set(&["type", "v", "time_ms", "meter_time", "gas"])
    );
    let p = project(&t, FieldSet::empty().with(Field::MeterIds), E350_MS);
    assert_eq!(
        keys(&p),
        set(&["type", "v", "time_ms", "meter_time", "meter_ids"])
    );
    // Unset meter clock: no meter_time.
    let t = sample("dsmr40_landisgyr-e350_clock-unset.txt");
    let p = project(&t, FieldSet::empty().with(Field::PowerDelivered), 5);
    assert!(!keys(&p).contains("meter_time"));
}

/// Every sample × every single-field view (raw and 15 min): only the field's keys appear and no
/// raw telegram text (header, raw timestamp, raw ids, OBIS codes, CRC) leaks.
#[test]
fn no_payload_leaks_non_granted_keys_or_raw_telegram() {
    let samples = all_samples();
    assert!(samples.len() >= 40, "only {} samples parsed", samples.len());
    let mut checked = 0;
    let mut field_seen = BTreeSet::new();
    for (name, t) in &samples {
        for field in Field::ALL {
            let fields = FieldSet::empty().with(field);
            let mut payloads = vec![project(t, fields, 1_000_000)];
            let mut agg = Aggregator::new(ViewSpec::new(fields, Resolution::QuarterHour));
            assert_eq!(agg.push(t, 1_000_000), None);
            payloads.push(agg.flush(u64::MAX).expect("one sample → one aggregate"));
            for p in &payloads {
                let base: &[&str] = match p {
                    ViewPayload::Reading(_) => &READING_BASE_KEYS,
                    ViewPayload::Aggregate(_) => &AGGREGATE_BASE_KEYS,
                };
                let allowed: BTreeSet<String> = base
                    .iter()
                    .chain(field_keys(field))
                    .map(|s| s.to_string())
                    .collect();
                let k = keys(p);
                assert!(k.is_subset(&allowed), "{name} {field:?}: {k:?}");
                if k.iter().any(|k| field_keys(field).contains(&k.as_str())) {
                    field_seen.insert(field);
                }
                let text = String::from_utf8(p.to_bytes().unwrap()).unwrap();
                assert!(!text.contains(&t.header.raw), "{name} {field:?}: header");
                if let Some(raw) = &t.timestamp_raw {
                    assert!(!text.contains(raw.as_str()), "{name}: raw timestamp");
                }
                assert!(!text.contains(":1.8."), "{name}: OBIS code leaked");
                assert!(!text.contains("crc"), "{name}: crc");
                if field != Field::MeterIds {
                    for id in [&t.meter_id, &t.meter_id_raw].into_iter().flatten() {
                        assert!(!text.contains(id.as_str()), "{name} {field:?}: meter id");
                    }
                    for c in &t.mbus {
                        for id in [&c.equipment_id, &c.equipment_id_raw].into_iter().flatten() {
                            if id.len() >= 6 {
                                assert!(!text.contains(id.as_str()), "{name}: mbus id");
                            }
                        }
                    }
                }
                if field != Field::TextMessage
                    && let Some(m) = t.text_message.as_deref().filter(|m| m.len() >= 8)
                {
                    assert!(!text.contains(m), "{name} {field:?}: text message");
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, samples.len() * Field::ALL.len() * 2);
    // The samples exercise every field except heat (no heat meter in the set).
    let expected: BTreeSet<Field> = Field::ALL
        .into_iter()
        .filter(|f| *f != Field::Heat)
        .collect();
    assert_eq!(field_seen, expected);
}

#[test]
fn round_trip_reading_and_aggregate() {
    let t = sample("dsmr42_landisgyr-e350_gas.txt");
    let all: FieldSet = Field::ALL.into_iter().collect();
    let r = project(&t, all, E350_MS);
    assert_eq!(ViewPayload::from_bytes(&r.to_bytes().unwrap()), Ok(r));

    let mut agg = Aggregator::new(ViewSpec::new(all, Resolution::Hour));
    agg.push(&t, E350_MS);
    let a = agg.flush(u64::MAX).expect("aggregate");
    let a_json = json(&a);
    assert_eq!(a_json["start_ms"], 1_567_710_000_000u64); // 19:00:00Z
    assert_eq!(a_json["end_ms"], 1_567_713_600_000u64);
    assert_eq!(a_json["resolution_s"], 3600);
    assert_eq!(
        a_json["gas"],
        serde_json::json!({"delta":0.0,"end":1091.352,"unit":"m3"})
    );
    assert_eq!(
        a_json["power_delivered_kw"],
        serde_json::json!({"mean":0.374,"min":0.374,"max":0.374})
    );
    assert_eq!(
        a_json["energy_delivered_tariff1_kwh"],
        serde_json::json!({"delta":0.0,"end":3235.689})
    );
    assert_eq!(a_json["power_failures"], 0);
    assert_eq!(a_json["tariff"], 2);
    assert_eq!(ViewPayload::from_bytes(&a.to_bytes().unwrap()), Ok(a));
}

#[test]
fn decoder_checks_version_type_and_window_but_tolerates_new_keys() {
    let ok = br#"{"type":"reading","v":1,"time_ms":5,"power_delivered_kw":0.5,"future_key":{"x":[1,2]}}"#;
    let p = ViewPayload::from_bytes(ok).expect("unknown keys are tolerated");
    let r = p.as_reading().unwrap();
    assert_eq!((r.time_ms, r.power_delivered_kw), (5, Some(0.5)));

    let cases: &[(&[u8], ViewError)] = &[
        (
            br#"{"type":"reading","time_ms":5}"#,
            ViewError::Version(None),
        ),
        (
            br#"{"type":"reading","v":2,"time_ms":5}"#,
            ViewError::Version(Some(2)),
        ),
        (
            br#"{"type":"reading","v":"1","time_ms":5}"#,
            ViewError::Version(None),
        ),
        (br#"{"v":1,"time_ms":5}"#, ViewError::UnknownType(None)),
        (
            br#"{"type":"telegram","v":1}"#,
            ViewError::UnknownType(Some("telegram".into())),
        ),
        (
            br#"{"type":"aggregate","v":1,"start_ms":0,"end_ms":900000,"resolution_s":30,"samples":1}"#,
            ViewError::Invalid("resolution_s"),
        ),
        (
            br#"{"type":"aggregate","v":1,"start_ms":0,"end_ms":1000,"resolution_s":1,"samples":1}"#,
            ViewError::Invalid("resolution_s"),
        ),
        (
            br#"{"type":"aggregate","v":1,"start_ms":60000,"end_ms":960000,"resolution_s":900,"samples":1}"#,
            ViewError::Invalid("window is not aligned to its resolution"),
        ),
        (
            br#"{"type":"aggregate","v":1,"start_ms":0,"end_ms":1800000,"resolution_s":900,"samples":1}"#,
            ViewError::Invalid("window is not aligned to its resolution"),
        ),
        (
            br#"{"type":"aggregate","v":1,"start_ms":0,"end_ms":900000,"resolution_s":900,"samples":0}"#,
            ViewError::Invalid("samples"),
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(
            ViewPayload::from_bytes(bytes).as_ref(),
            Err(want),
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }
    for bad in [
        &br#"[1,2]"#[..],
        br#"{"type":"reading","v":1}"#,
        br#"{"type":"reading","v":1,"time_ms":-1}"#,
        br#"{"type":"reading","v":1,"time_ms":5,"tariff":70000}"#,
        br#"{"type":"reading","v":1,"time_ms":5,"power_delivered_kw":"1"}"#,
        br#"{"type":"aggregate","v":1,"start_ms":0,"end_ms":900000,"resolution_s":900,"samples":1,"power_delivered_kw":{"mean":1}}"#,
        b"",
        b"\xff\xfe",
    ] {
        assert!(
            matches!(ViewPayload::from_bytes(bad), Err(ViewError::Malformed(_))),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    let big = vec![b' '; 32 * 1024 + 1];
    assert_eq!(
        ViewPayload::from_bytes(&big),
        Err(ViewError::TooLarge {
            size: 32 * 1024 + 1,
            limit: 32 * 1024
        })
    );
}

#[test]
fn view_spec_keys() {
    let spec = ViewSpec::new(
        FieldSet::empty()
            .with(Field::PowerReturned)
            .with(Field::PowerDelivered),
        Resolution::QuarterHour,
    );
    assert_eq!(spec.key(), "quarter_hour:power_delivered,power_returned");
    assert_eq!(spec.to_string(), spec.key());
    assert_eq!(
        ViewSpec::from_key("quarter_hour:power_returned,power_delivered"),
        Ok(spec)
    );
    assert_eq!(
        serde_json::to_string(&spec).unwrap(),
        r#""quarter_hour:power_delivered,power_returned""#
    );
    assert_eq!(
        serde_json::from_str::<ViewSpec>(r#""quarter_hour:power_delivered,power_returned""#)
            .unwrap(),
        spec
    );
    let raw_empty = ViewSpec::new(FieldSet::empty(), Resolution::Raw);
    assert_eq!(raw_empty.key(), "raw:");
    assert_eq!(ViewSpec::from_key("raw:"), Ok(raw_empty));
    for (bad, reason) in [
        ("quarter_hour", "no ':'"),
        ("weekly:gas", "unknown resolution"),
        ("day:gas,petrol", "unknown field"),
        ("day:gas,gas", "duplicate field"),
        ("day:gas,", "unknown field"),
    ] {
        assert_eq!(
            ViewSpec::from_key(bad),
            Err(ViewError::Key {
                key: bad.into(),
                reason
            })
        );
    }
    assert!(serde_json::from_str::<ViewSpec>(r#""day:petrol""#).is_err());
    // Every spec's key parses back to it.
    for r in Resolution::ALL {
        for bits in [0u32, 1, 0x3FFF, 0x2A5A] {
            let s = ViewSpec::new(FieldSet::from_bits(bits).unwrap(), r);
            assert_eq!(ViewSpec::from_key(&s.key()), Ok(s));
        }
    }
    // Ordered by resolution first.
    let fine = ViewSpec::new(FieldSet::from_bits(0x3FFF).unwrap(), Resolution::Minute);
    assert!(fine < spec);
    assert!(raw_empty < fine);
}

#[test]
fn raw_view_yields_one_reading_per_stream_telegram() {
    let stream = data("p1-streams/iskra-am550t_dsmr50_566-telegrams_1s.txt");
    let telegrams: Vec<Telegram> = dsmr::frames(&stream)
        .filter_map(|f| f.ok()?.parse(ParseOptions::default()).ok())
        .collect();
    assert_eq!(telegrams.len(), 566);
    let mut view = View::new(ViewSpec::new(
        FieldSet::empty().with(Field::PowerDelivered),
        Resolution::Raw,
    ));
    let mut out = Vec::new();
    for (i, t) in telegrams.iter().enumerate() {
        out.extend(view.push(t, 1_553_436_319_000 + i as u64 * 1000));
    }
    assert_eq!(view.flush(u64::MAX), None);
    assert_eq!(view.next_flush_ms(), None);
    assert_eq!(out.len(), 566);
    let first = out[0].as_reading().unwrap();
    assert_eq!(first.power_delivered_kw, Some(0.378));
    assert_eq!(
        first.meter_time.as_deref(),
        Some("2019-03-24T15:05:19+01:00")
    );
    for p in &out {
        assert_eq!(
            keys(p),
            set(&["type", "v", "time_ms", "meter_time", "power_delivered_kw"])
        );
    }
}

//! Views enforce data minimisation: each distinct (fields, resolution) that the owner
//! granted gets its own channel, and only what that view allows is ever sealed into it.

use p1consent_shared::{
    channel::{ChannelWriter, ReaderGrant},
    crypto::{OpaqueId, hex, unhex},
    dsmr::Telegram,
    view::{View, ViewPayload, ViewSpec},
};
use serde::{Deserialize, Serialize};

pub struct ViewChannel {
    pub spec: ViewSpec,
    pub writer: ChannelWriter,
    pub readers: Vec<ReaderGrant>,
    pub engine: View,
    /// Broker-side lifetime of this channel's data records, seconds.
    pub expiry_s: u32,
}

#[derive(Serialize, Deserialize)]
pub struct StoredView {
    spec: ViewSpec,
    writer: String,
    readers: Vec<String>,
    engine: View,
    expiry_s: u32,
}

impl ViewChannel {
    pub fn new(spec: ViewSpec, expiry_s: u32) -> Self {
        Self {
            engine: View::new(spec),
            spec,
            writer: ChannelWriter::new(OpaqueId::random()),
            readers: Vec::new(),
            expiry_s,
        }
    }

    pub fn key(&self) -> String {
        self.spec.key()
    }

    pub fn channel_id(&self) -> OpaqueId {
        self.writer.channel_id()
    }

    /// Payloads this telegram completes (one per telegram for raw views; one per finished
    /// interval for aggregated views). Nothing while nobody may read the view.
    /// `received_at_ms` is the agent's receive time: raw readings carry it; aggregated views
    /// window on the telegram's own timestamp and use it only for a telegram without one.
    pub fn push(&mut self, telegram: &Telegram, received_at_ms: u64) -> Vec<ViewPayload> {
        if self.readers.is_empty() {
            return Vec::new();
        }
        self.engine
            .push(telegram, received_at_ms)
            .into_iter()
            .collect()
    }

    /// Closes an interval of a silent meter once a telegram of the next one is overdue
    /// (`now_ms`: agent clock).
    pub fn flush(&mut self, now_ms: u64) -> Vec<ViewPayload> {
        if self.readers.is_empty() {
            return Vec::new();
        }
        self.engine.flush(now_ms).into_iter().collect()
    }

    pub fn to_stored(&self) -> StoredView {
        StoredView {
            spec: self.spec,
            writer: hex(&self.writer.to_bytes()),
            readers: self.readers.iter().map(|r| hex(&r.to_bytes())).collect(),
            engine: self.engine.clone(),
            expiry_s: self.expiry_s,
        }
    }

    pub fn from_stored(s: StoredView) -> Result<Self, String> {
        let writer_bytes = zeroize::Zeroizing::new(unhex(&s.writer).ok_or("writer state")?);
        let writer = ChannelWriter::from_bytes(&writer_bytes).map_err(|e| e.to_string())?;
        let mut readers = Vec::new();
        for r in s.readers {
            let b = zeroize::Zeroizing::new(unhex(&r).ok_or("reader grant")?);
            readers.push(ReaderGrant::from_bytes(&b).map_err(|e| e.to_string())?);
        }
        Ok(Self {
            spec: s.spec,
            writer,
            readers,
            engine: s.engine,
            expiry_s: s.expiry_s,
        })
    }
}

#[cfg(test)]
mod tests {
    //! The agent's views window aggregates on the telegrams' own timestamps (`0-0:1.0.0` with its
    //! DST flag); the receive time only stands in for a telegram without one.

    use super::*;
    use p1consent_shared::{
        consent::{Field, FieldSet, Resolution},
        crypto::{KemSecretKey, KemSuite, SigningIdentity},
        dsmr::{ParseOptions, crc16_arc, parse},
        view::{Aggregate, Counter, FLUSH_GRACE_MS, MeterCounter, Stat},
    };

    /// A DSMR 5 telegram (valid CRC) with the given timestamp line value (`None`: no
    /// `0-0:1.0.0` line), power, tariff 1/2 energy and gas reading.
    fn telegram(ts: Option<&str>, kw: f64, t1: f64, t2: f64, gas: Option<(&str, f64)>) -> Telegram {
        let mut text = String::from("/ISK5\\2M550T-1012\r\n\r\n1-3:0.2.8(50)\r\n");
        if let Some(ts) = ts {
            text += &format!("0-0:1.0.0({ts})\r\n");
        }
        text += &format!("1-0:1.8.1({t1:010.3}*kWh)\r\n1-0:1.8.2({t2:010.3}*kWh)\r\n");
        text += &format!("0-0:96.14.0(0002)\r\n1-0:1.7.0({kw:06.3}*kW)\r\n");
        if let Some((gts, m3)) = gas {
            text += &format!("0-1:24.1.0(003)\r\n0-1:24.2.1({gts})({m3:09.3}*m3)\r\n");
        }
        text += "!";
        let crc = crc16_arc(text.as_bytes());
        text += &format!("{crc:04X}\r\n");
        parse(text.as_bytes(), ParseOptions::default()).expect("test telegram parses")
    }

    /// A view channel with one reader (views seal nothing for nobody).
    fn channel(fields: &[Field], resolution: Resolution) -> ViewChannel {
        let spec = ViewSpec::new(fields.iter().copied().collect::<FieldSet>(), resolution);
        let mut v = ViewChannel::new(spec, 3600);
        let kem = KemSecretKey::generate(KemSuite::DEFAULT);
        let (_, grant) = v
            .writer
            .deliver(
                &SigningIdentity::generate(),
                0,
                OpaqueId::random(),
                kem.public(),
            )
            .expect("delivery");
        v.readers.push(grant);
        v
    }

    fn aggregates(out: Vec<ViewPayload>) -> Vec<Aggregate> {
        out.into_iter()
            .map(|p| p.as_aggregate().expect("an aggregate").clone())
            .collect()
    }

    /// 2019-03-24 15:00:00 CET = 14:00:00Z.
    const T_1400Z: u64 = 1_553_436_000_000;
    const QH: u64 = 900_000;
    /// Long after the telegrams were taken: a replay today.
    const REPLAYED_AT: u64 = 1_764_800_000_000;

    #[test]
    fn a_fast_replay_gives_quarter_hours_by_meter_time() {
        let mut v = channel(
            &[Field::PowerDelivered, Field::EnergyDelivered, Field::Gas],
            Resolution::QuarterHour,
        );
        // Five telegrams 14:05–14:20Z, replayed within 4 ms of agent time.
        let ts = [
            (
                "190324150500W",
                0.5,
                100.000,
                200.000,
                ("190324150000W", 10.000),
            ),
            (
                "190324151000W",
                1.5,
                100.125,
                200.000,
                ("190324150500W", 10.250),
            ),
            (
                "190324151459W",
                0.25,
                100.250,
                200.010,
                ("190324151000W", 10.500),
            ),
            (
                "190324151500W",
                2.0,
                100.500,
                200.010,
                ("190324151500W", 11.000),
            ),
            (
                "190324152000W",
                3.0,
                100.750,
                200.030,
                ("190324151500W", 11.000),
            ),
        ];
        let mut out = Vec::new();
        for (i, (t, kw, e1, e2, gas)) in ts.into_iter().enumerate() {
            let tg = telegram(Some(t), kw, e1, e2, Some(gas));
            out.extend(v.push(&tg, REPLAYED_AT + i as u64));
        }
        // The 15:15:00 telegram (14:15Z) closed the 14:00Z window: three telegrams in it.
        let a = aggregates(out);
        assert_eq!(a.len(), 1);
        let a = &a[0];
        assert_eq!(
            (a.start_ms, a.end_ms, a.samples),
            (T_1400Z, T_1400Z + QH, 3)
        );
        assert_eq!(
            a.power_delivered_kw,
            Some(Stat {
                mean: 0.75,
                min: 0.25,
                max: 1.5
            })
        );
        assert_eq!(
            a.energy_delivered_tariff1_kwh,
            Some(Counter {
                delta: 0.25,
                end: 100.25
            })
        );
        assert_eq!(
            a.energy_delivered_tariff2_kwh,
            Some(Counter {
                delta: 0.01,
                end: 200.01
            })
        );
        assert_eq!(
            a.gas,
            Some(MeterCounter {
                delta: 0.5,
                end: 10.5,
                unit: Some("m3".into())
            })
        );

        // The agent's clock closes the open 14:15Z window only when a telegram stamped with its
        // end (14:30Z) would have arrived: 10 min after the 14:20Z one, plus the grace.
        let last_received = REPLAYED_AT + 4;
        let due = last_received + 10 * 60_000 + FLUSH_GRACE_MS;
        assert!(
            v.flush(REPLAYED_AT + 1000).is_empty(),
            "not on its wall-clock end"
        );
        assert!(v.flush(due - 1).is_empty());
        let b = aggregates(v.flush(due));
        assert_eq!(b.len(), 1);
        let b = &b[0];
        assert_eq!(
            (b.start_ms, b.end_ms, b.samples),
            (T_1400Z + QH, T_1400Z + 2 * QH, 2)
        );
        assert_eq!(
            b.power_delivered_kw,
            Some(Stat {
                mean: 2.5,
                min: 2.0,
                max: 3.0
            })
        );
        // Deltas continue from the previous window's last values.
        assert_eq!(
            b.energy_delivered_tariff1_kwh,
            Some(Counter {
                delta: 0.5,
                end: 100.75
            })
        );
        assert_eq!(
            b.energy_delivered_tariff2_kwh,
            Some(Counter {
                delta: 0.02,
                end: 200.03
            })
        );
        assert_eq!(
            b.gas,
            Some(MeterCounter {
                delta: 0.5,
                end: 11.0,
                unit: Some("m3".into())
            })
        );
        // A telegram of the window just flushed, late, is not published as a second aggregate.
        let late = telegram(Some("190324152959W"), 9.0, 100.8, 200.03, None);
        assert!(v.push(&late, due + 1).is_empty());
        assert!(v.flush(u64::MAX).is_empty());
    }

    #[test]
    fn windows_run_on_across_the_change_to_summer_time() {
        // 2019-03-31: 01:59:59 CET (W) is followed by 03:00:00 CEST (S), one second later.
        let mut v = channel(
            &[Field::PowerDelivered, Field::EnergyDelivered],
            Resolution::QuarterHour,
        );
        // 2019-03-31T00:45:00Z.
        let w0 = 1_553_993_100_000;
        let ts = [
            ("190331014500W", 1.0, 500.0),
            ("190331015959W", 2.0, 500.5),
            ("190331030000S", 4.0, 501.0),
            ("190331031459S", 6.0, 502.0),
            ("190331031500S", 0.5, 502.5),
        ];
        let mut out = Vec::new();
        for (i, (t, kw, e1)) in ts.into_iter().enumerate() {
            let tg = telegram(Some(t), kw, e1, 0.0, None);
            out.extend(v.push(&tg, REPLAYED_AT + i as u64));
        }
        let a = aggregates(out);
        assert_eq!(a.len(), 2, "{a:?}");
        // 00:45–01:00Z = 01:45–02:00 CET, then 01:00–01:15Z = 03:00–03:15 CEST.
        assert_eq!((a[0].start_ms, a[0].samples), (w0, 2));
        assert_eq!((a[1].start_ms, a[1].samples), (w0 + QH, 2));
        assert_eq!(a[0].power_delivered_kw.map(|s| s.mean), Some(1.5));
        assert_eq!(
            a[1].power_delivered_kw,
            Some(Stat {
                mean: 5.0,
                min: 4.0,
                max: 6.0
            })
        );
        assert_eq!(
            a[1].energy_delivered_tariff1_kwh,
            Some(Counter {
                delta: 1.5,
                end: 502.0
            })
        );
        assert!(
            v.engine.next_flush_ms().is_some(),
            "the 01:15Z window is open"
        );
    }

    #[test]
    fn a_telegram_without_timestamp_counts_at_its_receive_time() {
        let mut v = channel(&[Field::PowerDelivered], Resolution::Minute);
        // DSMR 2.2 style: no 0-0:1.0.0 line. Received at 10:00:30Z and 10:00:50Z, 10:01:05Z.
        let t0 = 1_700_042_400_000; // 2023-11-15T10:00:00Z
        assert!(
            v.push(&telegram(None, 1.0, 1.0, 1.0, None), t0 + 30_000)
                .is_empty()
        );
        assert!(
            v.push(&telegram(None, 2.0, 1.0, 1.0, None), t0 + 50_000)
                .is_empty()
        );
        // A placeholder timestamp (meter clock never set) is no time either.
        let a = aggregates(v.push(
            &telegram(Some("000101010000W"), 4.0, 1.0, 1.0, None),
            t0 + 65_000,
        ));
        assert_eq!(a.len(), 1);
        assert_eq!(
            (a[0].start_ms, a[0].end_ms, a[0].samples),
            (t0, t0 + 60_000, 2)
        );
        assert_eq!(
            a[0].power_delivered_kw,
            Some(Stat {
                mean: 1.5,
                min: 1.0,
                max: 2.0
            })
        );
        // Stalled meter: the agent clock closes the window at its end plus the grace.
        let end = t0 + 120_000;
        assert!(v.flush(end + FLUSH_GRACE_MS - 1).is_empty());
        let b = aggregates(v.flush(end + FLUSH_GRACE_MS));
        assert_eq!((b[0].start_ms, b[0].samples), (t0 + 60_000, 1));
        assert_eq!(b[0].power_delivered_kw.map(|s| s.max), Some(4.0));
    }

    #[test]
    fn a_late_telegram_does_not_reopen_a_closed_window() {
        // The meter clock steps back a second right after a window boundary.
        let mut v = channel(&[Field::PowerDelivered], Resolution::QuarterHour);
        let seq = [
            ("190324151459W", 1.0),
            ("190324151500W", 2.0),
            ("190324151459W", 7.0),
            ("190324151501W", 4.0),
        ];
        let mut out = Vec::new();
        for (i, (t, kw)) in seq.into_iter().enumerate() {
            let tg = telegram(Some(t), kw, 1.0, 1.0, None);
            out.extend(v.push(&tg, REPLAYED_AT + i as u64));
        }
        let a = aggregates(out);
        assert_eq!(a.len(), 1, "14:00Z is published once: {a:?}");
        assert_eq!((a[0].start_ms, a[0].samples), (T_1400Z, 1));
        let b = aggregates(v.flush(u64::MAX));
        assert_eq!((b[0].start_ms, b[0].samples), (T_1400Z + QH, 2));
        assert_eq!(
            b[0].power_delivered_kw,
            Some(Stat {
                mean: 3.0,
                min: 2.0,
                max: 4.0
            })
        );
    }

    #[test]
    fn nothing_is_aggregated_for_nobody() {
        let spec = ViewSpec::new(
            FieldSet::empty().with(Field::PowerDelivered),
            Resolution::TenSeconds,
        );
        let mut v = ViewChannel::new(spec, 60);
        let tg = telegram(Some("190324150500W"), 1.0, 1.0, 1.0, None);
        assert!(v.push(&tg, REPLAYED_AT).is_empty());
        assert!(v.flush(u64::MAX).is_empty());
        assert_eq!(v.engine.next_flush_ms(), None);
    }
}

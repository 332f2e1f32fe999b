//! Simulator: realistic DSMR 5.0 telegrams with a valid CRC, no meter or file needed.
//!
//! [`Simulator::next_telegram`] is a pure function of the simulator state and the requested
//! time: given the same [`SimConfig`] and the same sequence of times it produces the same bytes.
//! Noise is derived from a hash of the seed and the time, not from call order.
//!
//! Model (local time is Europe/Amsterdam, see [`super::time`]):
//! - household load: ~150 W night base, morning peak (~07:30) and evening peak (~18:30) of
//!   2–3 kW, a few appliance spikes, ±8 % noise;
//! - solar: a sunny-day curve centred on 13:00 local, stronger and longer in summer; the meter
//!   shows the net: delivered when load > solar, returned otherwise;
//! - phases: three phases share the net power; per-phase power sums exactly to the total, current
//!   is power / voltage rounded to whole amperes, voltage ~230 V ± a few volts;
//! - tariff: 2 (normal) 07:00–23:00 local on weekdays, 1 (low) otherwise; energy accrues on the
//!   tariff in force at the end of each step;
//! - gas (M-Bus channel 1): consumption by season and hour; the reading shown is the one taken at
//!   the last 5-minute boundary, stamped with that boundary.

use std::time::Duration;

use p1consent_shared::dsmr::crc16_arc;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::time::{amsterdam_local, dsmr_timestamp};
use super::{Halt, Pipeline, RawTelegram, SourceError, SourceStatus, StopReason};

/// Header line of simulated telegrams.
pub const SIM_HEADER: &str = "/SIM5\\2P1CONSENT-SIM";
/// Longest stretch of time integrated in one call (longer gaps are skipped, not integrated).
const MAX_GAP_MS: u64 = 7 * 24 * 3_600_000;
/// Integration step for long gaps.
const STEP_MS: u64 = 60_000;
/// Gas readings are taken every 5 minutes.
pub const GAS_PERIOD_MS: u64 = 300_000;

/// Simulator configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// Noise seed.
    pub seed: u64,
    /// Simulated time the counters start at (Unix ms). Use [`super::now_unix_ms`] for live use.
    pub start_unix_ms: u64,
    /// Telegram interval of the async task (default 1000 ms, minimum 100 ms).
    pub interval_ms: u64,
    /// Electricity equipment id (ASCII; hex-encoded in `0-0:96.1.1`, at most 48 bytes used).
    pub meter_id: String,
    /// Gas meter equipment id (ASCII; hex-encoded in `0-1:96.1.0`, at most 48 bytes used).
    pub gas_meter_id: String,
    /// Initial delivered energy, tariff 1 and 2, in Wh.
    pub initial_delivered_wh: [u64; 2],
    /// Initial returned energy, tariff 1 and 2, in Wh.
    pub initial_returned_wh: [u64; 2],
    /// Initial gas reading in litres (dm³).
    pub initial_gas_l: u64,
}

impl SimConfig {
    /// Defaults: 1 s interval, plausible ids and counters, starting at `start_unix_ms`.
    pub fn new(seed: u64, start_unix_ms: u64) -> Self {
        Self {
            seed,
            start_unix_ms,
            interval_ms: 1000,
            meter_id: "E0099001234567824".into(),
            gas_meter_id: "G0099001234567824".into(),
            initial_delivered_wh: [3_432_827, 3_224_632],
            initial_returned_wh: [1_204_311, 2_716_088],
            initial_gas_l: 4_321_123,
        }
    }
}

/// Deterministic telegram generator (see the module docs).
#[derive(Debug, Clone)]
pub struct Simulator {
    config: SimConfig,
    /// Time the counters are integrated up to.
    last_ms: u64,
    /// Delivered energy per tariff (index 0 = tariff 1), Wh.
    delivered_wh: [f64; 2],
    /// Returned energy per tariff, Wh.
    returned_wh: [f64; 2],
    /// Gas consumed so far, litres.
    gas_l: f64,
    /// The gas reading shown: (5-minute boundary in Unix ms, litres).
    gas_shown: (u64, u64),
}

/// Net power at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Power {
    delivered_w: u64,
    returned_w: u64,
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn hex_id(id: &str) -> String {
    id.bytes().take(48).map(|b| format!("{b:02X}")).collect()
}

fn gauss(x: f64, mu: f64, sigma: f64) -> f64 {
    let z = (x - mu) / sigma;
    (-0.5 * z * z).exp()
}

/// Whole watts from a non-negative float (saturating, NaN → 0).
fn watts(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        x.round().min(99_999.0) as u64
    } else {
        0
    }
}

impl Simulator {
    /// A simulator whose counters stand at the configured initial values at `start_unix_ms`.
    pub fn new(config: SimConfig) -> Self {
        let boundary = config.start_unix_ms - config.start_unix_ms % GAS_PERIOD_MS;
        Self {
            last_ms: config.start_unix_ms,
            delivered_wh: config.initial_delivered_wh.map(|w| w as f64),
            returned_wh: config.initial_returned_wh.map(|w| w as f64),
            gas_l: config.initial_gas_l as f64,
            gas_shown: (boundary, config.initial_gas_l),
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Uniform noise in [0, 1) for (`salt`, `key`).
    fn noise(&self, salt: u64, key: u64) -> f64 {
        let h = splitmix64(self.config.seed ^ splitmix64(salt.wrapping_mul(0x1000_0001) ^ key));
        (h >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Tariff at `unix_s`: 2 on weekdays 07:00–23:00 local, else 1.
    pub fn tariff_at(unix_s: i64) -> u8 {
        let (c, _) = amsterdam_local(unix_s);
        if c.weekday < 5 && (7..23).contains(&c.hour) {
            2
        } else {
            1
        }
    }

    /// Household load and solar production at `unix_s`, in W.
    fn load_and_solar(&self, unix_s: i64) -> (f64, f64) {
        let (c, _) = amsterdam_local(unix_s);
        let h = f64::from(c.hour) + f64::from(c.minute) / 60.0 + f64::from(c.second) / 3600.0;
        let day_of_year = f64::from((c.month - 1) * 30 + c.day);
        // 1 in midsummer, 0 in midwinter.
        let summer = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * (day_of_year + 10.0) / 365.0).cos();
        let weekend = c.weekday >= 5;
        let key = u64::try_from(unix_s).unwrap_or(0);
        let minute = key / 60;
        let mut load = 150.0
            + 1400.0 * gauss(h, if weekend { 8.5 } else { 7.4 }, 0.7)
            + 2300.0 * gauss(h, 18.6, 1.3)
            + 350.0 * gauss(h, 12.5, 1.5)
            + 250.0 * gauss(h, 21.5, 1.2);
        // Appliance spikes (kettle, oven, washing machine) for a few minutes now and then.
        if (6.0..23.5).contains(&h) && self.noise(1, minute / 3) < 0.06 {
            load += 1200.0 + 1000.0 * self.noise(2, minute / 3);
        }
        load *= 0.92 + 0.16 * self.noise(3, key);
        // Sunny-day solar curve around 13:00 local.
        let half = 4.0 + 3.5 * summer;
        let peak = 1400.0 + 2600.0 * summer;
        let x = (h - 13.0) / half;
        let solar = if x.abs() < 1.0 {
            let c = (x * std::f64::consts::FRAC_PI_2).cos();
            peak * c * c * (0.95 + 0.05 * self.noise(4, key))
        } else {
            0.0
        };
        (load, solar)
    }

    fn power_at(&self, unix_s: i64) -> Power {
        let (load, solar) = self.load_and_solar(unix_s);
        Power {
            delivered_w: watts(load - solar),
            returned_w: watts(solar - load),
        }
    }

    /// Gas flow at `unix_s` in litres per hour.
    fn gas_rate_l_h(&self, unix_s: i64) -> f64 {
        let (c, _) = amsterdam_local(unix_s);
        let h = f64::from(c.hour) + f64::from(c.minute) / 60.0;
        let day_of_year = f64::from((c.month - 1) * 30 + c.day);
        let winter = 0.5 + 0.5 * (2.0 * std::f64::consts::PI * (day_of_year + 10.0) / 365.0).cos();
        let heating = if (6.5..22.5).contains(&h) {
            450.0
        } else {
            150.0
        } * winter;
        let hot_water = 600.0 * gauss(h, 7.3, 0.4) + 300.0 * gauss(h, 19.0, 0.8);
        let key = u64::try_from(unix_s).unwrap_or(0) / 60;
        (heating + hot_water) * (0.8 + 0.4 * self.noise(5, key))
    }

    /// Integrate counters up to `at_ms` (never backwards).
    fn advance(&mut self, at_ms: u64) {
        if at_ms <= self.last_ms {
            return;
        }
        if at_ms - self.last_ms > MAX_GAP_MS {
            self.last_ms = at_ms - MAX_GAP_MS;
        }
        while self.last_ms < at_ms {
            let end = self.last_ms.saturating_add(STEP_MS).min(at_ms);
            let dt_h = (end - self.last_ms) as f64 / 3_600_000.0;
            let end_s = i64::try_from(end / 1000).unwrap_or(i64::MAX);
            let p = self.power_at(end_s);
            let t = usize::from(Self::tariff_at(end_s) - 1).min(1);
            if let Some(d) = self.delivered_wh.get_mut(t) {
                *d += p.delivered_w as f64 * dt_h;
            }
            if let Some(r) = self.returned_wh.get_mut(t) {
                *r += p.returned_w as f64 * dt_h;
            }
            // Gas: take the reading at each 5-minute boundary crossed.
            let boundary = end - end % GAS_PERIOD_MS;
            let before_boundary = boundary.max(self.last_ms);
            self.gas_l +=
                self.gas_rate_l_h(end_s) * (before_boundary - self.last_ms) as f64 / 3_600_000.0;
            if boundary > self.gas_shown.0 {
                self.gas_shown = (boundary, self.gas_l.floor() as u64);
            }
            self.gas_l += self.gas_rate_l_h(end_s) * (end - before_boundary) as f64 / 3_600_000.0;
            self.last_ms = end;
        }
    }

    /// The telegram for time `at_unix_ms` (counters integrated up to then; a time before the last
    /// call does not move counters backwards). Always a complete DSMR 5.0 frame with a valid CRC.
    pub fn next_telegram(&mut self, at_unix_ms: u64) -> Vec<u8> {
        self.advance(at_unix_ms);
        let at_s = i64::try_from(at_unix_ms / 1000).unwrap_or(i64::MAX);
        let key = u64::try_from(at_s).unwrap_or(0);
        let p = self.power_at(at_s);
        let tariff = Self::tariff_at(at_s);

        let volts: [u64; 3] =
            [0u64, 1, 2].map(|ph| 2280 + (45.0 * self.noise(10 + ph, key)) as u64 + ph * 3);
        // Phase shares: L1 carries most of the load.
        let f1 = 0.45 + 0.1 * self.noise(20, key / 60);
        let f2 = 0.30 + 0.05 * self.noise(21, key / 60);
        let split = |total: u64| -> [u64; 3] {
            let a = ((total as f64) * f1).round() as u64;
            let b = (((total as f64) * f2).round() as u64).min(total - a.min(total));
            let a = a.min(total);
            [a, b, total - a - b]
        };
        let del = split(p.delivered_w);
        let ret = split(p.returned_w);
        let amps: [u64; 3] = [0usize, 1, 2].map(|i| {
            let w = del.get(i).copied().unwrap_or(0) + ret.get(i).copied().unwrap_or(0);
            let v = volts.get(i).copied().unwrap_or(2300).max(1) as f64 / 10.0;
            (w as f64 / v).round() as u64
        });

        let wh = |x: f64| -> String {
            let w = (x.max(0.0).floor() as u64) % 1_000_000_000;
            format!("{:06}.{:03}", w / 1000, w % 1000)
        };
        let kw = |w: u64| format!("{:02}.{:03}", w / 1000 % 100, w % 1000);
        let gas_ts_s = i64::try_from(self.gas_shown.0 / 1000).unwrap_or(0);
        let gas_ts = dsmr_timestamp(gas_ts_s);
        let gas_l = self.gas_shown.1 % 100_000_000;

        let mut t = String::with_capacity(1100);
        let mut line = |s: String| {
            t.push_str(&s);
            t.push_str("\r\n");
        };
        line(SIM_HEADER.to_string());
        line(String::new());
        line("1-3:0.2.8(50)".into());
        line(format!("0-0:1.0.0({})", dsmr_timestamp(at_s)));
        line(format!("0-0:96.1.1({})", hex_id(&self.config.meter_id)));
        line(format!("1-0:1.8.1({}*kWh)", wh(self.delivered_wh[0])));
        line(format!("1-0:1.8.2({}*kWh)", wh(self.delivered_wh[1])));
        line(format!("1-0:2.8.1({}*kWh)", wh(self.returned_wh[0])));
        line(format!("1-0:2.8.2({}*kWh)", wh(self.returned_wh[1])));
        line(format!("0-0:96.14.0({tariff:04})"));
        line(format!("1-0:1.7.0({}*kW)", kw(p.delivered_w)));
        line(format!("1-0:2.7.0({}*kW)", kw(p.returned_w)));
        line("0-0:96.7.21(00004)".into());
        line("0-0:96.7.9(00002)".into());
        line("1-0:99.97.0(0)(0-0:96.7.19)".into());
        for c in ["32", "52", "72"] {
            line(format!("1-0:{c}.32.0(00000)"));
        }
        for c in ["32", "52", "72"] {
            line(format!("1-0:{c}.36.0(00001)"));
        }
        line("0-0:96.13.0()".into());
        for (c, v) in ["32", "52", "72"].iter().zip(volts) {
            line(format!("1-0:{c}.7.0({:03}.{}*V)", v / 10, v % 10));
        }
        for (c, a) in ["31", "51", "71"].iter().zip(amps) {
            line(format!("1-0:{c}.7.0({:03}*A)", a.min(999)));
        }
        for (c, w) in ["21", "41", "61"].iter().zip(del) {
            line(format!("1-0:{c}.7.0({}*kW)", kw(w)));
        }
        for (c, w) in ["22", "42", "62"].iter().zip(ret) {
            line(format!("1-0:{c}.7.0({}*kW)", kw(w)));
        }
        line("0-1:24.1.0(003)".into());
        line(format!("0-1:96.1.0({})", hex_id(&self.config.gas_meter_id)));
        let gas_ts_min = gas_ts.get(..10).unwrap_or("0001010000");
        let gas_flag = gas_ts.get(12..).unwrap_or("W");
        line(format!(
            "0-1:24.2.1({gas_ts_min}00{gas_flag})({:05}.{:03}*m3)",
            gas_l / 1000,
            gas_l % 1000
        ));
        t.push('!');
        let crc = crc16_arc(t.as_bytes());
        t.push_str(&format!("{crc:04X}\r\n"));
        t.into_bytes()
    }

    /// Emit a telegram every `interval_ms` (stamped with the current time) until cancelled or the
    /// receiver is dropped. Telegrams go through the same framing and CRC path as other sources.
    pub async fn run(
        mut self,
        tx: mpsc::Sender<RawTelegram>,
        status: watch::Sender<SourceStatus>,
        cancel: CancellationToken,
    ) -> Result<StopReason, SourceError> {
        if self.config.interval_ms < 100 {
            return Err(SourceError::Config(format!(
                "simulator interval {} ms is below the 100 ms minimum",
                self.config.interval_ms
            )));
        }
        let interval = Duration::from_millis(self.config.interval_ms);
        status.send_modify(|s| {
            s.connected = true;
            s.detail = Some(format!("simulator (every {} ms)", interval.as_millis()));
        });
        tracing::info!(interval_ms = self.config.interval_ms, "simulator started");
        let mut pipe = Pipeline::new("simulator", tx, status, cancel);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let reason = loop {
            tokio::select! {
                biased;
                () = pipe.cancel().cancelled() => break StopReason::Cancelled,
                _ = ticker.tick() => {}
            }
            let bytes = self.next_telegram(super::now_unix_ms());
            if let Err(Halt(r)) = pipe.feed(&bytes).await {
                break r;
            }
        };
        pipe.status().send_modify(|s| s.connected = false);
        tracing::info!(reason = ?reason, "simulator stopped");
        Ok(reason)
    }
}

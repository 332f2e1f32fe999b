//! The parsed telegram model. Field names carry their unit; JSON names equal Rust names.

use serde::{Serialize, Serializer};

/// The `/XXX5Identification` header line.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Header {
    /// The whole header line without CR/LF, `/` included (e.g. `/ISk5\2MT382-1000`).
    pub raw: String,
    /// Three-letter manufacturer flag (`ISk`, `KFM`, `XMX`, …) when the header has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    /// Everything after the manufacturer flag and the baud-rate character (may be empty).
    pub identification: String,
}

/// A `YYMMDDhhmmssX` timestamp (X = `S` summer / `W` winter; absent in DSMR 2.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timestamp {
    /// As written, e.g. `190324100500W`.
    pub raw: String,
    /// ISO 8601 local time with the offset implied by the DST flag (`S` = +02:00, `W` = +01:00;
    /// no offset without a flag). Omitted when the clock is not set or the date is invalid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iso: Option<String>,
    /// False for placeholders: year 2000 (`000101010000W`, meter clock never set), 1970-01-01
    /// (`700101010000W`) or an impossible date (`632525252525W`, empty M-Bus slot).
    pub clock_set: bool,
    /// Parsed fields (only when the date is valid).
    #[serde(skip)]
    pub parts: Option<DateTimeParts>,
}

impl Timestamp {
    /// The instant this timestamp names, in Unix milliseconds: only when the meter clock is set
    /// and the DST flag gives the offset (`S` = UTC+2, `W` = UTC+1). Without a flag the local time
    /// is ambiguous (the hour before the change to winter time occurs twice), so `None`.
    pub fn unix_ms(&self) -> Option<u64> {
        if !self.clock_set {
            return None;
        }
        let p = self.parts?;
        let offset = i64::from(p.utc_offset_s()?);
        let days = days_from_civil(i64::from(p.year), u32::from(p.month), u32::from(p.day));
        let secs = days * 86_400
            + i64::from(p.hour) * 3600
            + i64::from(p.minute) * 60
            + i64::from(p.second)
            - offset;
        u64::try_from(secs).ok()?.checked_mul(1000)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Broken-down local time of a [`Timestamp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTimeParts {
    /// Full year (2000 + YY).
    pub year: u16,
    /// 1–12.
    pub month: u8,
    /// 1–31.
    pub day: u8,
    /// 0–23.
    pub hour: u8,
    /// 0–59.
    pub minute: u8,
    /// 0–59.
    pub second: u8,
    /// `Some(true)` for `S` (summer, UTC+2), `Some(false)` for `W` (winter, UTC+1), `None` if absent.
    pub dst: Option<bool>,
}

impl DateTimeParts {
    /// UTC offset in seconds implied by the DST flag (Central European Time), if flagged.
    pub fn utc_offset_s(&self) -> Option<i32> {
        self.dst.map(|s| if s { 7200 } else { 3600 })
    }
}

/// `0-0:17.0.0` threshold; the unit varies by country (kW, A, kVA).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quantity {
    /// Numeric value as written.
    pub value: f64,
    /// Unit as written (empty if none).
    pub unit: String,
}

/// One entry of the `1-0:99.97.0` long-power-failure log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PowerFailure {
    /// When the failure ended.
    pub end: Timestamp,
    /// Duration in seconds (may exceed 2^31 on some Kaifa meters).
    pub duration_s: u64,
}

/// Belgian `1-0:1.6.0`: maximum 15-minute average demand this month.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Demand {
    /// When the peak occurred.
    pub timestamp: Timestamp,
    /// Peak demand in kW.
    pub power_kw: f64,
}

/// One month of the Belgian `0-0:98.1.0` peak-demand history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MonthlyPeak {
    /// Start of the month the entry covers.
    pub month: Timestamp,
    /// When the peak occurred.
    pub timestamp: Timestamp,
    /// Peak demand in kW.
    pub power_kw: f64,
}

/// An M-Bus reading (`0-n:24.2.1`, `24.2.3`, `24.2.0`, or the DSMR 2.2 `24.3.0` form).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MbusReading {
    /// Capture time of the reading.
    pub timestamp: Timestamp,
    /// Meter value in `unit`.
    pub value: f64,
    /// Unit as written (`m3`, `GJ`, …); omitted if the meter wrote none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The OBIS code the reading came from, e.g. `0-1:24.2.1`.
    pub obis: String,
}

/// One M-Bus channel (1–4): gas, water, heat, … meters attached to the electricity meter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MbusChannel {
    /// Channel number 1–4.
    pub channel: u8,
    /// `0-n:24.1.0` device type (3 gas, 7 water, 4 heat, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_type: Option<u16>,
    /// Name of the device type (`gas`, `water`, `heat`, `electricity`, `warm_water`, `cooling`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `0-n:96.1.0` / `0-n:96.1.1` equipment id, hex-decoded when it is printable hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub equipment_id: Option<String>,
    /// The equipment id as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub equipment_id_raw: Option<String>,
    /// `0-n:24.4.0` valve position (DSMR 4) .
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valve_position: Option<u8>,
    /// `0-n:96.3.10` breaker state (e-MUCS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaker_state: Option<u8>,
    /// Last reading.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reading: Option<MbusReading>,
    /// True when the slot is empty: no reading, a reading with a placeholder timestamp
    /// (e.g. `632525252525W`), or an empty equipment id.
    pub empty: bool,
}

impl MbusChannel {
    pub(crate) fn new(channel: u8) -> Self {
        Self {
            channel,
            device_type: None,
            kind: None,
            equipment_id: None,
            equipment_id_raw: None,
            valve_position: None,
            breaker_state: None,
            reading: None,
            empty: false,
        }
    }
}

/// A line whose OBIS code is not mapped: kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnknownLine {
    /// The code as written (e.g. `1-0:3.8.0`, `1-0:0.0.0*255`).
    pub obis: String,
    /// The parenthesised values, without parentheses.
    pub values: Vec<String>,
}

/// A line that could not be interpreted; the rest of the telegram still parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineError {
    /// 1-based line number in the telegram (the header is line 1).
    pub line: usize,
    /// The line as written (lossy UTF-8, at most 256 characters).
    pub text: String,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.reason, self.text)
    }
}

fn ser_crc<S: Serializer>(crc: &Option<u16>, s: S) -> Result<S::Ok, S::Error> {
    match crc {
        Some(c) => s.serialize_str(&format!("{c:04X}")),
        None => s.serialize_none(),
    }
}

fn ser_ts_iso<S: Serializer>(ts: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match ts.as_ref().and_then(|t| t.iso.as_deref()) {
        Some(iso) => s.serialize_str(iso),
        None => s.serialize_none(),
    }
}

fn no_iso(ts: &Option<Timestamp>) -> bool {
    ts.as_ref().is_none_or(|t| t.iso.is_none())
}

/// A parsed P1 telegram. Energy in kWh, power in kW, voltage in V, current in A
/// (Wh/W inputs are converted). Absent values are `None` and omitted from JSON.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Telegram {
    /// Header line.
    pub header: Header,
    /// `1-3:0.2.8` P1 version (`"42"`, `"50"`), or Belgian `0-0:96.1.4` (`"50217"`); none in DSMR 2.2/3.0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `0-0:1.0.0` date-time. JSON: the ISO 8601 string (omitted if the clock is not set).
    #[serde(serialize_with = "ser_ts_iso", skip_serializing_if = "no_iso")]
    pub timestamp: Option<Timestamp>,
    /// `0-0:1.0.0` as written (`YYMMDDhhmmssX`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp_raw: Option<String>,
    /// False when the meter clock is not set (placeholder timestamp); omitted without a timestamp.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_set: Option<bool>,
    /// Electricity equipment id (`0-0:96.1.1`, else `0-0:96.1.0` or Luxembourg `0-0:42.0.0`),
    /// hex-decoded when it is printable hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meter_id: Option<String>,
    /// The equipment id as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meter_id_raw: Option<String>,
    /// `1-0:1.8.1` energy delivered to the client, tariff 1 (low), kWh.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy_delivered_tariff1_kwh: Option<f64>,
    /// `1-0:1.8.2` energy delivered, tariff 2 (normal), kWh.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy_delivered_tariff2_kwh: Option<f64>,
    /// `1-0:1.8.0` energy delivered, total (Luxembourg, Sweden, EasyMeter, some Sagemcom), kWh.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy_delivered_total_kwh: Option<f64>,
    /// `1-0:2.8.1` energy returned by the client, tariff 1, kWh.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy_returned_tariff1_kwh: Option<f64>,
    /// `1-0:2.8.2` energy returned, tariff 2, kWh.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy_returned_tariff2_kwh: Option<f64>,
    /// `1-0:2.8.0` energy returned, total, kWh.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy_returned_total_kwh: Option<f64>,
    /// `0-0:96.14.0` current tariff indicator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tariff: Option<u16>,
    /// `1-0:1.7.0` actual power delivered, kW.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_delivered_kw: Option<f64>,
    /// `1-0:2.7.0` actual power returned, kW.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_returned_kw: Option<f64>,
    /// `1-0:21.7.0` power delivered on L1, kW.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_delivered_l1_kw: Option<f64>,
    /// `1-0:41.7.0` power delivered on L2, kW.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_delivered_l2_kw: Option<f64>,
    /// `1-0:61.7.0` power delivered on L3, kW.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_delivered_l3_kw: Option<f64>,
    /// `1-0:22.7.0` power returned on L1, kW.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_returned_l1_kw: Option<f64>,
    /// `1-0:42.7.0` power returned on L2, kW.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_returned_l2_kw: Option<f64>,
    /// `1-0:62.7.0` power returned on L3, kW.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_returned_l3_kw: Option<f64>,
    /// `1-0:32.7.0` voltage L1, V.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voltage_l1_v: Option<f64>,
    /// `1-0:52.7.0` voltage L2, V.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voltage_l2_v: Option<f64>,
    /// `1-0:72.7.0` voltage L3, V.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voltage_l3_v: Option<f64>,
    /// `1-0:31.7.0` current L1, A.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_l1_a: Option<f64>,
    /// `1-0:51.7.0` current L2, A.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_l2_a: Option<f64>,
    /// `1-0:71.7.0` current L3, A.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_l3_a: Option<f64>,
    /// `0-0:96.7.21` number of power failures in any phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_failures: Option<u64>,
    /// `0-0:96.7.9` number of long power failures in any phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub long_power_failures: Option<u64>,
    /// `1-0:99.97.0` long power failure event log (placeholder dates kept, `clock_set: false`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_failure_log: Option<Vec<PowerFailure>>,
    /// `1-0:32.32.0` voltage sags on L1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voltage_sags_l1: Option<u64>,
    /// `1-0:52.32.0` voltage sags on L2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voltage_sags_l2: Option<u64>,
    /// `1-0:72.32.0` voltage sags on L3.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voltage_sags_l3: Option<u64>,
    /// `1-0:32.36.0` voltage swells on L1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voltage_swells_l1: Option<u64>,
    /// `1-0:52.36.0` voltage swells on L2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voltage_swells_l2: Option<u64>,
    /// `1-0:72.36.0` voltage swells on L3.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voltage_swells_l3: Option<u64>,
    /// `0-0:96.13.0` text message, hex-decoded when it is printable hex (may be empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_message: Option<String>,
    /// `0-0:96.13.0` as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_message_raw: Option<String>,
    /// `0-0:96.13.1` text message code (DSMR 2.2–4.0), hex-decoded when printable hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_message_code: Option<String>,
    /// `0-0:96.13.1` as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_message_code_raw: Option<String>,
    /// `0-0:17.0.0` electricity threshold (unit varies: kW, A, kVA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub electricity_threshold: Option<Quantity>,
    /// `0-0:96.3.10` breaker / switch position (0 off, 1 on, 2 ready).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaker_state: Option<u8>,
    /// `1-0:31.4.0` current limiter threshold (e-MUCS), A.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_limit_a: Option<f64>,
    /// `1-0:1.4.0` current average demand (e-MUCS), kW.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub average_demand_kw: Option<f64>,
    /// `1-0:1.6.0` maximum demand this month (e-MUCS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_demand_month: Option<Demand>,
    /// `0-0:98.1.0` monthly maximum demand history (e-MUCS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_demand_history: Option<Vec<MonthlyPeak>>,
    /// M-Bus channels present in the telegram, by channel number.
    pub mbus: Vec<MbusChannel>,
    /// CRC stated after `!` (4 uppercase hex digits in JSON); absent for DSMR 2.2/3.0.
    #[serde(serialize_with = "ser_crc", skip_serializing_if = "Option::is_none")]
    pub crc: Option<u16>,
    /// True when the CRC was present and checked OK.
    pub crc_verified: bool,
    /// Lines with unmapped OBIS codes, verbatim.
    pub unknown: Vec<UnknownLine>,
    /// Recoverable problems (malformed lines, missing end line or CRC, CRC mismatch when not checked).
    pub warnings: Vec<LineError>,
}

impl Telegram {
    /// The M-Bus channel `n`, if present.
    pub fn mbus_channel(&self, n: u8) -> Option<&MbusChannel> {
        self.mbus.iter().find(|c| c.channel == n)
    }

    /// The first non-empty gas channel (device type 3).
    pub fn gas(&self) -> Option<&MbusChannel> {
        self.mbus
            .iter()
            .find(|c| c.device_type == Some(3) && !c.empty)
    }
}

/// Name of an M-Bus device type (EN 13757-3 medium codes used by DSMR).
pub fn mbus_kind(device_type: u16) -> Option<&'static str> {
    Some(match device_type {
        2 => "electricity",
        3 => "gas",
        4 => "heat",
        6 => "warm_water",
        7 => "water",
        10 | 11 => "cooling",
        12 => "heat",
        _ => return None,
    })
}

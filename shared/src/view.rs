//! Consented views: what a provider actually receives inside a channel data record.
//!
//! A provider is granted a [`ViewSpec`]: a set of [`Field`]s at a [`Resolution`]. The agent
//! never forwards a telegram; it derives a [`ViewPayload`] that holds only the granted fields:
//!
//! - [`Resolution::Raw`]: one [`Reading`] per telegram ([`project`]).
//! - every other resolution: one [`Aggregate`] per window of `resolution.seconds()` aligned to
//!   Unix time (UTC), built by an [`Aggregator`] whose state is serialisable. Telegrams fall in
//!   windows by their own timestamp ([`telegram_time_ms`]), so a replay at any speed gives the
//!   aggregates the meter's time says; the receive time stands in only for a telegram without one.
//!
//! [`View`] wraps both so the agent can feed every telegram to every view. Payloads are JSON
//! (`{"type":"reading"|"aggregate","v":1,…}`), at most [`MAX_PAYLOAD`] bytes; providers decode them
//! with [`ViewPayload::from_bytes`], which never panics and tolerates unknown keys from later
//! versions. The JSON keys, units and aggregation rules are specified in docs/PROTOCOL.md (Views).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::channel::MAX_PLAINTEXT;
use crate::consent::scope::{Field, FieldSet, Resolution};
use crate::dsmr::{MbusReading, Telegram};

/// Format version written as `"v"` in every payload.
pub const PAYLOAD_VERSION: u64 = 1;
/// Largest encoded payload, both produced and accepted.
pub const MAX_PAYLOAD: usize = 32 * 1024;
/// Text messages are cut to this many characters (DSMR allows 1024).
pub const MAX_TEXT_CHARS: usize = 2048;
/// Meter ids are cut to this many characters (DSMR ids are at most 96 hex digits).
pub const MAX_ID_CHARS: usize = 128;
/// Numbers whose magnitude exceeds this are treated as absent (no meter counts that far; keeps
/// sums finite).
const MAX_MAGNITUDE: f64 = 1e15;

const _: () = assert!(MAX_PAYLOAD <= MAX_PLAINTEXT);

/// Why a view spec or payload was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ViewError {
    /// The payload is larger than [`MAX_PAYLOAD`].
    #[error("view payload too large: {size} bytes (limit {limit})")]
    TooLarge {
        /// Size of the payload.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not JSON, not an object, or a key with the wrong type.
    #[error("malformed view payload: {0}")]
    Malformed(String),
    /// `"v"` is missing or not a version this code understands.
    #[error("unsupported view payload version {0:?}")]
    Version(Option<u64>),
    /// `"type"` is missing or unknown.
    #[error("unknown view payload type {0:?}")]
    UnknownType(Option<String>),
    /// A value is out of range (e.g. a window whose length is not its resolution).
    #[error("invalid view payload: {0}")]
    Invalid(&'static str),
    /// A view key that does not parse (`"<resolution>:<field>,<field>…"`).
    #[error("invalid view key {key:?}: {reason}")]
    Key {
        /// The key as given (cut to 64 characters).
        key: String,
        /// What is wrong.
        reason: &'static str,
    },
}

// ---------------------------------------------------------------------------------------
// ViewSpec
// ---------------------------------------------------------------------------------------

/// What one provider sees: which fields, how finely.
///
/// Serialised (serde) as its [key](ViewSpec::key), e.g. `"quarter_hour:power_delivered,power_returned"`.
/// Ordered by resolution, then by the field bitset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ViewSpec {
    /// Granted fields.
    pub fields: FieldSet,
    /// Granted resolution.
    pub resolution: Resolution,
}

impl ViewSpec {
    pub fn new(fields: FieldSet, resolution: Resolution) -> Self {
        Self { fields, resolution }
    }

    /// Stable storage key: `"<resolution name>:<field names in bit order, comma separated>"`,
    /// e.g. `"quarter_hour:power_delivered,power_returned"`, `"raw:"` for no fields.
    pub fn key(&self) -> String {
        let names: Vec<&str> = self.fields.iter().map(Field::name).collect();
        format!("{}:{}", self.resolution.name(), names.join(","))
    }

    /// Parses a [key](ViewSpec::key). Field names may come in any order; duplicates are
    /// rejected so that every spec has exactly one key.
    pub fn from_key(key: &str) -> Result<Self, ViewError> {
        let err = |reason| ViewError::Key {
            key: key.chars().take(64).collect(),
            reason,
        };
        let (res, fields) = key.split_once(':').ok_or_else(|| err("no ':'"))?;
        let resolution = Resolution::ALL
            .into_iter()
            .find(|r| r.name() == res)
            .ok_or_else(|| err("unknown resolution"))?;
        let mut set = FieldSet::empty();
        if !fields.is_empty() {
            for name in fields.split(',') {
                let f = Field::from_name(name).ok_or_else(|| err("unknown field"))?;
                if set.contains(f) {
                    return Err(err("duplicate field"));
                }
                set.insert(f);
            }
        }
        Ok(Self::new(set, resolution))
    }

    /// Window length in milliseconds (1000 for raw).
    pub fn window_ms(&self) -> u64 {
        u64::from(self.resolution.seconds()) * 1000
    }
}

impl fmt::Display for ViewSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

impl FromStr for ViewSpec {
    type Err = ViewError;
    fn from_str(s: &str) -> Result<Self, ViewError> {
        Self::from_key(s)
    }
}

impl PartialOrd for ViewSpec {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ViewSpec {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.resolution, self.fields.bits()).cmp(&(other.resolution, other.fields.bits()))
    }
}

impl Serialize for ViewSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.key())
    }
}

impl<'de> Deserialize<'de> for ViewSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::from_key(&s).map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------
// Payload types
// ---------------------------------------------------------------------------------------

/// `{"mean","min","max"}` of a gauge over a window (same unit as the key).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Arithmetic mean of the samples (every telegram weighs the same), rounded to 6 decimals.
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

/// `{"delta","end"}` of an energy counter over a window, kWh.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Counter {
    /// Increase during the window (see docs/PROTOCOL.md (Views)), rounded to 7 decimals.
    pub delta: f64,
    /// Last reading in the window.
    pub end: f64,
}

/// `{"delta","end","unit"}` of an M-Bus meter (gas, water, heat) over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeterCounter {
    pub delta: f64,
    pub end: f64,
    /// Unit as the meter writes it (`m3`, `GJ`, …); absent if it writes none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// `{"value","unit","meter_time"}`: the last M-Bus reading in a telegram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeterReading {
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// When the meter captured the value (ISO 8601), if its clock is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meter_time: Option<String>,
}

/// One meter serial number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterId {
    /// `electricity` for the P1 meter itself, else the M-Bus kind (`gas`, `water`, `heat`, …,
    /// `mbus` when the device type is unknown).
    pub kind: String,
    /// M-Bus channel 1–4; absent for the electricity meter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<u8>,
    pub id: String,
}

/// Declares a payload struct: required fields as given, then optional fields that are omitted
/// from JSON when `None` and default to `None` when missing.
macro_rules! payload_struct {
    (
        $(#[$sm:meta])*
        pub struct $name:ident {
            $( $(#[$rm:meta])* $rf:ident : $rt:ty, )*
        }
        optional {
            $( $(#[$om:meta])* $of:ident : $ot:ty, )*
        }
    ) => {
        $(#[$sm])*
        #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
        pub struct $name {
            $( $(#[$rm])* pub $rf: $rt, )*
            $(
                $(#[$om])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $of: Option<$ot>,
            )*
        }
    };
}

payload_struct! {
    /// A raw-view payload: one telegram, only the granted fields.
    pub struct Reading {
        /// When the agent received the telegram (Unix ms).
        time_ms: u64,
    }
    optional {
        /// The telegram's own timestamp (ISO 8601 with offset) when its clock is set.
        meter_time: String,
        energy_delivered_tariff1_kwh: f64,
        energy_delivered_tariff2_kwh: f64,
        energy_delivered_total_kwh: f64,
        energy_returned_tariff1_kwh: f64,
        energy_returned_tariff2_kwh: f64,
        energy_returned_total_kwh: f64,
        power_delivered_kw: f64,
        power_returned_kw: f64,
        voltage_l1_v: f64,
        voltage_l2_v: f64,
        voltage_l3_v: f64,
        current_l1_a: f64,
        current_l2_a: f64,
        current_l3_a: f64,
        power_delivered_l1_kw: f64,
        power_delivered_l2_kw: f64,
        power_delivered_l3_kw: f64,
        power_returned_l1_kw: f64,
        power_returned_l2_kw: f64,
        power_returned_l3_kw: f64,
        tariff: u16,
        gas: MeterReading,
        water: MeterReading,
        heat: MeterReading,
        power_failures: u64,
        long_power_failures: u64,
        voltage_sags_l1: u64,
        voltage_sags_l2: u64,
        voltage_sags_l3: u64,
        voltage_swells_l1: u64,
        voltage_swells_l2: u64,
        voltage_swells_l3: u64,
        text_message: String,
        text_message_code: String,
        meter_ids: Vec<MeterId>,
    }
}

payload_struct! {
    /// An aggregated-view payload: one window `[start_ms, end_ms)`, only the granted fields.
    pub struct Aggregate {
        /// Window start (Unix ms, a multiple of `resolution_s * 1000`).
        start_ms: u64,
        /// Window end, exclusive (`start_ms + resolution_s * 1000`).
        end_ms: u64,
        /// Window length in seconds (10, 60, 900, 3600 or 86400).
        resolution_s: u32,
        /// Telegrams that fell in the window (at least 1).
        samples: u64,
    }
    optional {
        energy_delivered_tariff1_kwh: Counter,
        energy_delivered_tariff2_kwh: Counter,
        energy_delivered_total_kwh: Counter,
        energy_returned_tariff1_kwh: Counter,
        energy_returned_tariff2_kwh: Counter,
        energy_returned_total_kwh: Counter,
        power_delivered_kw: Stat,
        power_returned_kw: Stat,
        voltage_l1_v: Stat,
        voltage_l2_v: Stat,
        voltage_l3_v: Stat,
        current_l1_a: Stat,
        current_l2_a: Stat,
        current_l3_a: Stat,
        power_delivered_l1_kw: Stat,
        power_delivered_l2_kw: Stat,
        power_delivered_l3_kw: Stat,
        power_returned_l1_kw: Stat,
        power_returned_l2_kw: Stat,
        power_returned_l3_kw: Stat,
        /// Tariff indicator of the last telegram in the window.
        tariff: u16,
        gas: MeterCounter,
        water: MeterCounter,
        heat: MeterCounter,
        /// Increase of the counter during the window.
        power_failures: u64,
        long_power_failures: u64,
        voltage_sags_l1: u64,
        voltage_sags_l2: u64,
        voltage_sags_l3: u64,
        voltage_swells_l1: u64,
        voltage_swells_l2: u64,
        voltage_swells_l3: u64,
        /// Last non-empty text message in the window.
        text_message: String,
        text_message_code: String,
        /// Meter ids of the last telegram in the window that had any.
        meter_ids: Vec<MeterId>,
    }
}

impl Aggregate {
    /// The window's resolution, if `resolution_s` names one.
    pub fn resolution(&self) -> Option<Resolution> {
        Resolution::from_seconds(self.resolution_s).ok()
    }
}

/// The plaintext of one channel data record.
// One payload lives for one record; boxing the larger variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ViewPayload {
    /// `"type":"reading"` (raw views).
    Reading(Reading),
    /// `"type":"aggregate"` (every other resolution).
    Aggregate(Aggregate),
}

#[derive(Serialize)]
struct Envelope<'a, T> {
    #[serde(rename = "type")]
    kind: &'static str,
    v: u64,
    #[serde(flatten)]
    body: &'a T,
}

impl Serialize for ViewPayload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ViewPayload::Reading(r) => Envelope {
                kind: "reading",
                v: PAYLOAD_VERSION,
                body: r,
            }
            .serialize(s),
            ViewPayload::Aggregate(a) => Envelope {
                kind: "aggregate",
                v: PAYLOAD_VERSION,
                body: a,
            }
            .serialize(s),
        }
    }
}

impl ViewPayload {
    /// JSON bytes, at most [`MAX_PAYLOAD`] (payloads built by this module always fit).
    pub fn to_bytes(&self) -> Result<Vec<u8>, ViewError> {
        // A full raw reading is ~820 B: one allocation instead of serde_json's 128 B doubling.
        let mut bytes = Vec::with_capacity(1024);
        serde_json::to_writer(&mut bytes, self).map_err(|e| ViewError::Malformed(e.to_string()))?;
        if bytes.len() > MAX_PAYLOAD {
            return Err(ViewError::TooLarge {
                size: bytes.len(),
                limit: MAX_PAYLOAD,
            });
        }
        Ok(bytes)
    }

    /// Decodes a payload received from a channel. Checks the size, `"v"` (must be 1), `"type"`,
    /// key types and window consistency; ignores keys it does not know (later versions may add
    /// optional keys).
    pub fn from_bytes(bytes: &[u8]) -> Result<ViewPayload, ViewError> {
        if bytes.len() > MAX_PAYLOAD {
            return Err(ViewError::TooLarge {
                size: bytes.len(),
                limit: MAX_PAYLOAD,
            });
        }
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| ViewError::Malformed(e.to_string()))?;
        let serde_json::Value::Object(mut map) = value else {
            return Err(ViewError::Malformed("not a JSON object".into()));
        };
        match map.remove("v") {
            Some(v) if v.as_u64() == Some(PAYLOAD_VERSION) => {}
            Some(v) => return Err(ViewError::Version(v.as_u64())),
            None => return Err(ViewError::Version(None)),
        }
        let kind = match map.remove("type") {
            Some(serde_json::Value::String(s)) => s,
            _ => return Err(ViewError::UnknownType(None)),
        };
        let body = serde_json::Value::Object(map);
        let malformed = |e: serde_json::Error| ViewError::Malformed(e.to_string());
        match kind.as_str() {
            "reading" => {
                let r: Reading = serde_json::from_value(body).map_err(malformed)?;
                Ok(ViewPayload::Reading(r))
            }
            "aggregate" => {
                let a: Aggregate = serde_json::from_value(body).map_err(malformed)?;
                let res = a
                    .resolution()
                    .filter(|r| *r != Resolution::Raw)
                    .ok_or(ViewError::Invalid("resolution_s"))?;
                let len = u64::from(res.seconds()) * 1000;
                if !a.start_ms.is_multiple_of(len) || a.end_ms.checked_sub(a.start_ms) != Some(len)
                {
                    return Err(ViewError::Invalid(
                        "window is not aligned to its resolution",
                    ));
                }
                if a.samples == 0 {
                    return Err(ViewError::Invalid("samples"));
                }
                Ok(ViewPayload::Aggregate(a))
            }
            _ => Err(ViewError::UnknownType(Some(
                kind.chars().take(64).collect(),
            ))),
        }
    }

    /// The reading, if this is one.
    pub fn as_reading(&self) -> Option<&Reading> {
        match self {
            ViewPayload::Reading(r) => Some(r),
            ViewPayload::Aggregate(_) => None,
        }
    }

    /// The aggregate, if this is one.
    pub fn as_aggregate(&self) -> Option<&Aggregate> {
        match self {
            ViewPayload::Aggregate(a) => Some(a),
            ViewPayload::Reading(_) => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Field → key tables
// ---------------------------------------------------------------------------------------

type Get<T> = fn(&Telegram) -> Option<T>;

/// An instantaneous value: raw = the value, aggregate = mean/min/max.
struct Gauge {
    field: Field,
    key: &'static str,
    get: Get<f64>,
    raw: fn(&mut Reading) -> &mut Option<f64>,
    agg: fn(&mut Aggregate) -> &mut Option<Stat>,
}

/// A monotonic energy register: raw = the value, aggregate = delta/end.
struct Register {
    field: Field,
    key: &'static str,
    get: Get<f64>,
    raw: fn(&mut Reading) -> &mut Option<f64>,
    agg: fn(&mut Aggregate) -> &mut Option<Counter>,
}

/// An event count: raw = the count, aggregate = increase.
struct Events {
    key: &'static str,
    get: Get<u64>,
    raw: fn(&mut Reading) -> &mut Option<u64>,
    agg: fn(&mut Aggregate) -> &mut Option<u64>,
}

/// An M-Bus meter: raw = value/unit/meter_time, aggregate = delta/end/unit.
struct Mbus {
    field: Field,
    key: &'static str,
    device_types: &'static [u16],
    raw: fn(&mut Reading) -> &mut Option<MeterReading>,
    agg: fn(&mut Aggregate) -> &mut Option<MeterCounter>,
}

macro_rules! gauge {
    ($field:ident, $key:ident) => {
        Gauge {
            field: Field::$field,
            key: stringify!($key),
            get: |t| t.$key,
            raw: |r| &mut r.$key,
            agg: |a| &mut a.$key,
        }
    };
}

macro_rules! register {
    ($field:ident, $key:ident) => {
        Register {
            field: Field::$field,
            key: stringify!($key),
            get: |t| t.$key,
            raw: |r| &mut r.$key,
            agg: |a| &mut a.$key,
        }
    };
}

macro_rules! events {
    ($key:ident) => {
        Events {
            key: stringify!($key),
            get: |t| t.$key,
            raw: |r| &mut r.$key,
            agg: |a| &mut a.$key,
        }
    };
}

const GAUGES: [Gauge; 14] = [
    gauge!(PowerDelivered, power_delivered_kw),
    gauge!(PowerReturned, power_returned_kw),
    gauge!(PhaseVoltage, voltage_l1_v),
    gauge!(PhaseVoltage, voltage_l2_v),
    gauge!(PhaseVoltage, voltage_l3_v),
    gauge!(PhaseCurrent, current_l1_a),
    gauge!(PhaseCurrent, current_l2_a),
    gauge!(PhaseCurrent, current_l3_a),
    gauge!(PhasePower, power_delivered_l1_kw),
    gauge!(PhasePower, power_delivered_l2_kw),
    gauge!(PhasePower, power_delivered_l3_kw),
    gauge!(PhasePower, power_returned_l1_kw),
    gauge!(PhasePower, power_returned_l2_kw),
    gauge!(PhasePower, power_returned_l3_kw),
];

const REGISTERS: [Register; 6] = [
    register!(EnergyDelivered, energy_delivered_tariff1_kwh),
    register!(EnergyDelivered, energy_delivered_tariff2_kwh),
    register!(EnergyDelivered, energy_delivered_total_kwh),
    register!(EnergyReturned, energy_returned_tariff1_kwh),
    register!(EnergyReturned, energy_returned_tariff2_kwh),
    register!(EnergyReturned, energy_returned_total_kwh),
];

/// All belong to [`Field::PowerQuality`].
const EVENTS: [Events; 8] = [
    events!(power_failures),
    events!(long_power_failures),
    events!(voltage_sags_l1),
    events!(voltage_sags_l2),
    events!(voltage_sags_l3),
    events!(voltage_swells_l1),
    events!(voltage_swells_l2),
    events!(voltage_swells_l3),
];

const MBUS: [Mbus; 3] = [
    Mbus {
        field: Field::Gas,
        key: "gas",
        device_types: &[3],
        raw: |r| &mut r.gas,
        agg: |a| &mut a.gas,
    },
    Mbus {
        field: Field::Water,
        key: "water",
        device_types: &[7, 6],
        raw: |r| &mut r.water,
        agg: |a| &mut a.water,
    },
    Mbus {
        field: Field::Heat,
        key: "heat",
        device_types: &[4, 12],
        raw: |r| &mut r.heat,
        agg: |a| &mut a.heat,
    },
];

/// The JSON keys a field may produce, in payload order (both payload types use the same keys).
pub fn field_keys(field: Field) -> &'static [&'static str] {
    match field {
        Field::EnergyDelivered => &[
            "energy_delivered_tariff1_kwh",
            "energy_delivered_tariff2_kwh",
            "energy_delivered_total_kwh",
        ],
        Field::EnergyReturned => &[
            "energy_returned_tariff1_kwh",
            "energy_returned_tariff2_kwh",
            "energy_returned_total_kwh",
        ],
        Field::PowerDelivered => &["power_delivered_kw"],
        Field::PowerReturned => &["power_returned_kw"],
        Field::PhaseVoltage => &["voltage_l1_v", "voltage_l2_v", "voltage_l3_v"],
        Field::PhaseCurrent => &["current_l1_a", "current_l2_a", "current_l3_a"],
        Field::PhasePower => &[
            "power_delivered_l1_kw",
            "power_delivered_l2_kw",
            "power_delivered_l3_kw",
            "power_returned_l1_kw",
            "power_returned_l2_kw",
            "power_returned_l3_kw",
        ],
        Field::Tariff => &["tariff"],
        Field::Gas => &["gas"],
        Field::Water => &["water"],
        Field::Heat => &["heat"],
        Field::PowerQuality => &[
            "power_failures",
            "long_power_failures",
            "voltage_sags_l1",
            "voltage_sags_l2",
            "voltage_sags_l3",
            "voltage_swells_l1",
            "voltage_swells_l2",
            "voltage_swells_l3",
        ],
        Field::TextMessage => &["text_message", "text_message_code"],
        Field::MeterIds => &["meter_ids"],
    }
}

/// Keys every reading carries regardless of the fields (`meter_time` only when known).
pub const READING_BASE_KEYS: [&str; 4] = ["type", "v", "time_ms", "meter_time"];
/// Keys every aggregate carries regardless of the fields.
pub const AGGREGATE_BASE_KEYS: [&str; 6] =
    ["type", "v", "start_ms", "end_ms", "resolution_s", "samples"];

fn sane(x: f64) -> Option<f64> {
    (x.is_finite() && x.abs() <= MAX_MAGNITUDE).then_some(x)
}

fn round_to(x: f64, decimals: i32) -> f64 {
    let p = 10f64.powi(decimals);
    let r = (x * p).round() / p;
    if r.is_finite() { r } else { x }
}

fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

fn non_empty_text(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .filter(|s| !s.trim().is_empty())
        .map(|s| cut(s, MAX_TEXT_CHARS))
}

/// The first non-empty M-Bus channel of one of `types` that has a reading.
fn mbus_reading<'t>(t: &'t Telegram, types: &[u16]) -> Option<&'t MbusReading> {
    t.mbus
        .iter()
        .filter(|c| !c.empty && c.device_type.is_some_and(|d| types.contains(&d)))
        .find_map(|c| c.reading.as_ref())
        .filter(|r| r.value.is_finite() && r.value.abs() <= MAX_MAGNITUDE)
}

fn meter_ids(t: &Telegram) -> Option<Vec<MeterId>> {
    let mut ids = Vec::new();
    if let Some(id) = t.meter_id.as_deref().filter(|s| !s.is_empty()) {
        ids.push(MeterId {
            kind: "electricity".into(),
            channel: None,
            id: cut(id, MAX_ID_CHARS),
        });
    }
    for c in &t.mbus {
        if let Some(id) = c.equipment_id.as_deref().filter(|s| !s.is_empty()) {
            ids.push(MeterId {
                kind: cut(c.kind.as_deref().unwrap_or("mbus"), 32),
                channel: Some(c.channel),
                id: cut(id, MAX_ID_CHARS),
            });
        }
    }
    (!ids.is_empty()).then_some(ids)
}

// ---------------------------------------------------------------------------------------
// Raw projection
// ---------------------------------------------------------------------------------------

/// The raw-view payload of one telegram: `time_ms`, `meter_time` (if the meter clock is set) and
/// the granted fields that the telegram has. Nothing else of the telegram is copied.
pub fn project(telegram: &Telegram, fields: FieldSet, received_at_ms: u64) -> ViewPayload {
    let t = telegram;
    let mut r = Reading {
        time_ms: received_at_ms,
        meter_time: t
            .timestamp
            .as_ref()
            .filter(|ts| ts.clock_set)
            .and_then(|ts| ts.iso.clone()),
        ..Reading::default()
    };
    for g in GAUGES.iter().filter(|g| fields.contains(g.field)) {
        *(g.raw)(&mut r) = (g.get)(t).and_then(sane);
    }
    for g in REGISTERS.iter().filter(|g| fields.contains(g.field)) {
        *(g.raw)(&mut r) = (g.get)(t).and_then(sane);
    }
    if fields.contains(Field::PowerQuality) {
        for e in &EVENTS {
            *(e.raw)(&mut r) = (e.get)(t);
        }
    }
    for m in MBUS.iter().filter(|m| fields.contains(m.field)) {
        *(m.raw)(&mut r) = mbus_reading(t, m.device_types).map(|x| MeterReading {
            value: x.value,
            unit: x.unit.as_deref().map(|u| cut(u, 16)),
            meter_time: x.timestamp.iso.clone().filter(|_| x.timestamp.clock_set),
        });
    }
    if fields.contains(Field::Tariff) {
        r.tariff = t.tariff;
    }
    if fields.contains(Field::TextMessage) {
        r.text_message = non_empty_text(&t.text_message);
        r.text_message_code = non_empty_text(&t.text_message_code);
    }
    if fields.contains(Field::MeterIds) {
        r.meter_ids = meter_ids(t);
    }
    ViewPayload::Reading(r)
}

// ---------------------------------------------------------------------------------------
// Aggregation
// ---------------------------------------------------------------------------------------

/// Running mean/min/max of one gauge in the open window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct StatAcc {
    n: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl StatAcc {
    fn new(x: f64) -> Self {
        Self {
            n: 1,
            sum: x,
            min: x,
            max: x,
        }
    }
    fn add(&mut self, x: f64) {
        self.n = self.n.saturating_add(1);
        self.sum += x;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
    }
    fn stat(&self) -> Stat {
        Stat {
            mean: round_to(self.sum / self.n.max(1) as f64, 6),
            min: self.min,
            max: self.max,
        }
    }
}

/// A monotonic register followed across windows. `delta = prior + (last - base)`, where `base`
/// is where the current monotone run started (a decrease starts a new run: meter replaced).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RegAcc {
    last: f64,
    last_ms: u64,
    base: f64,
    prior: f64,
    /// Seen in the open window.
    seen: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unit: Option<String>,
}

impl RegAcc {
    fn first(x: f64, at_ms: u64, unit: Option<String>) -> Self {
        Self {
            last: x,
            last_ms: at_ms,
            base: x,
            prior: 0.0,
            seen: true,
            unit,
        }
    }

    /// Start a window: carry the last value as baseline if it is recent enough.
    fn open(&mut self, start_ms: u64, window_ms: u64) -> bool {
        self.seen = false;
        self.prior = 0.0;
        self.base = self.last;
        self.last_ms.saturating_add(window_ms) >= start_ms
    }

    fn add(&mut self, x: f64, at_ms: u64) {
        if x < self.last {
            self.prior += self.last - self.base;
            self.base = x;
        }
        self.last = x;
        self.last_ms = at_ms;
        self.seen = true;
    }

    fn delta(&self) -> f64 {
        round_to((self.prior + (self.last - self.base)).max(0.0), 7)
    }
}

/// An event counter followed across windows (integer version of [`RegAcc`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct EventAcc {
    last: u64,
    last_ms: u64,
    base: u64,
    prior: u64,
    seen: bool,
}

impl EventAcc {
    fn first(x: u64, at_ms: u64) -> Self {
        Self {
            last: x,
            last_ms: at_ms,
            base: x,
            prior: 0,
            seen: true,
        }
    }
    fn open(&mut self, start_ms: u64, window_ms: u64) -> bool {
        self.seen = false;
        self.prior = 0;
        self.base = self.last;
        self.last_ms.saturating_add(window_ms) >= start_ms
    }
    fn add(&mut self, x: u64, at_ms: u64) {
        if x < self.last {
            self.prior = self.prior.saturating_add(self.last - self.base);
            self.base = x;
        }
        self.last = x;
        self.last_ms = at_ms;
        self.seen = true;
    }
    fn delta(&self) -> u64 {
        self.prior
            .saturating_add(self.last.saturating_sub(self.base))
    }
}

/// The open window.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
struct Window {
    start_ms: u64,
    samples: u64,
    gauges: BTreeMap<String, StatAcc>,
    tariff: Option<u16>,
    text_message: Option<String>,
    text_message_code: Option<String>,
    meter_ids: Option<Vec<MeterId>>,
}

/// The last telegram added: its time (see [`telegram_time_ms`]) and when the agent received it.
/// Their difference maps window ends onto the agent's clock for [`Aggregator::flush`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Arrival {
    time_ms: u64,
    received_ms: u64,
}

/// How long after a window's end (carried to the agent's clock) a silent meter's window is
/// closed by [`Aggregator::flush`]: covers the seconds cut off the timestamps, serial and
/// processing delays, and 10 s telegram intervals (DSMR 2.2–4). Closing a window too early would
/// split it; closing it late only delays its aggregate.
pub const FLUSH_GRACE_MS: u64 = 10_000;

/// When a telegram was taken, by its own `0-0:1.0.0` timestamp (Unix ms, offset from the DST
/// flag). `None` when it has none, the meter clock is not set, or there is no DST flag.
pub fn telegram_time_ms(t: &Telegram) -> Option<u64> {
    t.timestamp.as_ref()?.unix_ms()
}

/// Builds [`Aggregate`]s for one non-raw [`ViewSpec`]. Serialisable: persist it (serde) and
/// restore it after a restart to continue the open window and the energy baselines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregator {
    spec: ViewSpec,
    #[serde(default)]
    window: Option<Window>,
    #[serde(default)]
    last: Option<Arrival>,
    /// Start of the window closed last: a late telegram of it is dropped, not published as a
    /// second aggregate of the same interval.
    #[serde(default)]
    closed_start_ms: Option<u64>,
    /// Energy registers and M-Bus meters by JSON key, carried across windows.
    #[serde(default)]
    registers: BTreeMap<String, RegAcc>,
    /// Power-quality counters by JSON key, carried across windows.
    #[serde(default)]
    events: BTreeMap<String, EventAcc>,
}

impl Aggregator {
    /// An aggregator for `spec`. Raw views normally use [`project`] (or [`View`]); given a raw
    /// spec, an aggregator builds 1-second windows.
    pub fn new(spec: ViewSpec) -> Self {
        Self {
            spec,
            window: None,
            last: None,
            closed_start_ms: None,
            registers: BTreeMap::new(),
            events: BTreeMap::new(),
        }
    }

    pub fn spec(&self) -> ViewSpec {
        self.spec
    }

    /// Start of the open window, if any.
    pub fn window_start_ms(&self) -> Option<u64> {
        self.window.as_ref().map(|w| w.start_ms)
    }

    /// End (exclusive) of the open window, if any, in telegram time.
    pub fn window_end_ms(&self) -> Option<u64> {
        self.window_start_ms()
            .map(|s| s.saturating_add(self.spec.window_ms()))
    }

    /// When, by the agent's clock, [`flush`](Self::flush) closes the open window of a silent
    /// meter: when a telegram stamped with the window's end would have arrived (as far behind
    /// its timestamp as the last one was), plus [`FLUSH_GRACE_MS`].
    pub fn flush_due_ms(&self) -> Option<u64> {
        let end = self.window_end_ms()?;
        Some(match self.last {
            Some(a) => a
                .received_ms
                .saturating_add(end.saturating_sub(a.time_ms))
                .saturating_add(FLUSH_GRACE_MS),
            // State persisted before arrivals were kept: the window's end itself.
            None => end,
        })
    }

    fn align(&self, at_ms: u64) -> u64 {
        let len = self.spec.window_ms().max(1);
        at_ms - at_ms % len
    }

    /// Adds a telegram the agent received at `received_at_ms` (its clock, Unix ms). The telegram
    /// counts at its own time ([`telegram_time_ms`], else `received_at_ms`). Returns the open
    /// window's aggregate when the telegram belongs to another window (a later one, or an
    /// earlier one if the meter clock went back further); windows without samples produce
    /// nothing. A telegram of the window closed last (late) is dropped.
    pub fn push(&mut self, telegram: &Telegram, received_at_ms: u64) -> Option<ViewPayload> {
        let at_ms = telegram_time_ms(telegram).unwrap_or(received_at_ms);
        let start = self.align(at_ms);
        let mut done = None;
        match &self.window {
            Some(w) if w.start_ms == start => {}
            // Late for the window closed last (by a flush, or by a telegram of the next window):
            // publishing it again would give two partial aggregates of one interval.
            _ if self.closed_start_ms == Some(start) => return None,
            _ => {
                done = self.close();
                self.open(start);
            }
        }
        self.last = Some(Arrival {
            time_ms: at_ms,
            received_ms: received_at_ms,
        });
        self.add(telegram, at_ms);
        done
    }

    /// Closes the open window once [`flush_due_ms`](Self::flush_due_ms) is at or before `now_ms`
    /// (agent clock; call from a timer so a window ends even when the meter goes silent).
    pub fn flush(&mut self, now_ms: u64) -> Option<ViewPayload> {
        match self.flush_due_ms() {
            Some(due) if due <= now_ms => self.close(),
            _ => None,
        }
    }

    fn open(&mut self, start_ms: u64) {
        let len = self.spec.window_ms();
        self.registers.retain(|_, r| r.open(start_ms, len));
        self.events.retain(|_, e| e.open(start_ms, len));
        self.window = Some(Window {
            start_ms,
            ..Window::default()
        });
    }

    fn add(&mut self, t: &Telegram, at_ms: u64) {
        let fields = self.spec.fields;
        let Some(w) = self.window.as_mut() else {
            return;
        };
        w.samples = w.samples.saturating_add(1);
        for g in GAUGES.iter().filter(|g| fields.contains(g.field)) {
            if let Some(x) = (g.get)(t).and_then(sane) {
                w.gauges
                    .entry(g.key.to_string())
                    .and_modify(|s| s.add(x))
                    .or_insert_with(|| StatAcc::new(x));
            }
        }
        for g in REGISTERS.iter().filter(|g| fields.contains(g.field)) {
            if let Some(x) = (g.get)(t).and_then(sane) {
                add_register(&mut self.registers, g.key, x, None, at_ms);
            }
        }
        for m in MBUS.iter().filter(|m| fields.contains(m.field)) {
            if let Some(r) = mbus_reading(t, m.device_types) {
                let unit = r.unit.as_deref().map(|u| cut(u, 16));
                add_register(&mut self.registers, m.key, r.value, unit, at_ms);
            }
        }
        if fields.contains(Field::PowerQuality) {
            for e in &EVENTS {
                if let Some(x) = (e.get)(t) {
                    self.events
                        .entry(e.key.to_string())
                        .and_modify(|a| a.add(x, at_ms))
                        .or_insert_with(|| EventAcc::first(x, at_ms));
                }
            }
        }
        if fields.contains(Field::Tariff) && t.tariff.is_some() {
            w.tariff = t.tariff;
        }
        if fields.contains(Field::TextMessage) {
            if let Some(m) = non_empty_text(&t.text_message) {
                w.text_message = Some(m);
            }
            if let Some(m) = non_empty_text(&t.text_message_code) {
                w.text_message_code = Some(m);
            }
        }
        if fields.contains(Field::MeterIds)
            && let Some(ids) = meter_ids(t)
        {
            w.meter_ids = Some(ids);
        }
    }

    fn close(&mut self) -> Option<ViewPayload> {
        let w = self.window.take()?;
        self.closed_start_ms = Some(w.start_ms);
        if w.samples == 0 {
            return None;
        }
        let fields = self.spec.fields;
        let len = self.spec.window_ms();
        let mut a = Aggregate {
            start_ms: w.start_ms,
            end_ms: w.start_ms.saturating_add(len),
            resolution_s: self.spec.resolution.seconds(),
            samples: w.samples,
            ..Aggregate::default()
        };
        for g in GAUGES.iter().filter(|g| fields.contains(g.field)) {
            *(g.agg)(&mut a) = w.gauges.get(g.key).map(StatAcc::stat);
        }
        for g in REGISTERS.iter().filter(|g| fields.contains(g.field)) {
            *(g.agg)(&mut a) = self
                .registers
                .get(g.key)
                .filter(|r| r.seen)
                .map(|r| Counter {
                    delta: r.delta(),
                    end: r.last,
                });
        }
        for m in MBUS.iter().filter(|m| fields.contains(m.field)) {
            *(m.agg)(&mut a) = self
                .registers
                .get(m.key)
                .filter(|r| r.seen)
                .map(|r| MeterCounter {
                    delta: r.delta(),
                    end: r.last,
                    unit: r.unit.clone(),
                });
        }
        if fields.contains(Field::PowerQuality) {
            for e in &EVENTS {
                *(e.agg)(&mut a) = self
                    .events
                    .get(e.key)
                    .filter(|x| x.seen)
                    .map(EventAcc::delta);
            }
        }
        if fields.contains(Field::Tariff) {
            a.tariff = w.tariff;
        }
        if fields.contains(Field::TextMessage) {
            a.text_message = w.text_message;
            a.text_message_code = w.text_message_code;
        }
        if fields.contains(Field::MeterIds) {
            a.meter_ids = w.meter_ids;
        }
        Some(ViewPayload::Aggregate(a))
    }
}

fn add_register(
    map: &mut BTreeMap<String, RegAcc>,
    key: &str,
    x: f64,
    unit: Option<String>,
    at_ms: u64,
) {
    match map.get_mut(key) {
        // A unit change is a different quantity: start over.
        Some(r) if r.unit == unit => r.add(x, at_ms),
        _ => {
            map.insert(key.to_string(), RegAcc::first(x, at_ms, unit));
        }
    }
}

// ---------------------------------------------------------------------------------------
// View
// ---------------------------------------------------------------------------------------

/// One consented view as the agent runs it: feed it every telegram, publish what it returns.
/// Serialisable (serde) for persistence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum View {
    /// [`Resolution::Raw`]: one [`Reading`] per telegram.
    Raw {
        /// The view.
        spec: ViewSpec,
    },
    /// Every other resolution: an [`Aggregate`] per window.
    Aggregated {
        /// Window state (boxed: far larger than a raw view; serialised the same).
        aggregator: Box<Aggregator>,
    },
}

impl View {
    pub fn new(spec: ViewSpec) -> Self {
        if spec.resolution == Resolution::Raw {
            View::Raw { spec }
        } else {
            View::Aggregated {
                aggregator: Box::new(Aggregator::new(spec)),
            }
        }
    }

    pub fn spec(&self) -> ViewSpec {
        match self {
            View::Raw { spec } => *spec,
            View::Aggregated { aggregator } => aggregator.spec(),
        }
    }

    /// Feeds one telegram received at `received_at_ms` (agent clock). Returns at most one
    /// payload: a [`Reading`] for raw views (always), an [`Aggregate`] when a window closed.
    pub fn push(&mut self, telegram: &Telegram, received_at_ms: u64) -> Option<ViewPayload> {
        match self {
            View::Raw { spec } => Some(project(telegram, spec.fields, received_at_ms)),
            View::Aggregated { aggregator } => aggregator.push(telegram, received_at_ms),
        }
    }

    /// Closes a window whose end has passed (no-op for raw views).
    pub fn flush(&mut self, now_ms: u64) -> Option<ViewPayload> {
        match self {
            View::Raw { .. } => None,
            View::Aggregated { aggregator } => aggregator.flush(now_ms),
        }
    }

    /// When the agent should call [`flush`](Self::flush) next (`None`: nothing open).
    pub fn next_flush_ms(&self) -> Option<u64> {
        match self {
            View::Raw { .. } => None,
            View::Aggregated { aggregator } => aggregator.flush_due_ms(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_has_keys_and_tables_agree() {
        for g in &GAUGES {
            assert!(field_keys(g.field).contains(&g.key), "{}", g.key);
        }
        for g in &REGISTERS {
            assert!(field_keys(g.field).contains(&g.key), "{}", g.key);
        }
        for e in &EVENTS {
            assert!(field_keys(Field::PowerQuality).contains(&e.key));
        }
        for m in &MBUS {
            assert_eq!(field_keys(m.field), &[m.key]);
        }
        let total: usize = Field::ALL.iter().map(|f| field_keys(*f).len()).sum();
        assert_eq!(total, 14 + 6 + 8 + 3 + 1 + 2 + 1);
    }

    #[test]
    fn rounding() {
        assert_eq!(round_to(3432.830 - 3432.827, 7), 0.003);
        assert_eq!(round_to(0.1 + 0.2, 6), 0.3);
    }
}

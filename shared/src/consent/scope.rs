//! What a provider may read: meter fields, time resolution, retention.
//!
//! Every item has a stable snake_case name (used in receipts and the wallet UI) and a
//! plain-language description for a homeowner who has never heard of OBIS codes.

use serde::{Deserialize, Serialize};

use crate::wire::WireError;

/// Longest retention a request may ask for: ten years.
pub const MAX_RETENTION_DAYS: u32 = 3650;

/// One category of meter data. The discriminant is the bit index in a [`FieldSet`]; never
/// renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Field {
    EnergyDelivered = 0,
    EnergyReturned = 1,
    PowerDelivered = 2,
    PowerReturned = 3,
    PhaseVoltage = 4,
    PhaseCurrent = 5,
    PhasePower = 6,
    Tariff = 7,
    Gas = 8,
    Water = 9,
    Heat = 10,
    PowerQuality = 11,
    TextMessage = 12,
    MeterIds = 13,
}

impl Field {
    /// Every field, in bit order.
    pub const ALL: [Field; 14] = [
        Field::EnergyDelivered,
        Field::EnergyReturned,
        Field::PowerDelivered,
        Field::PowerReturned,
        Field::PhaseVoltage,
        Field::PhaseCurrent,
        Field::PhasePower,
        Field::Tariff,
        Field::Gas,
        Field::Water,
        Field::Heat,
        Field::PowerQuality,
        Field::TextMessage,
        Field::MeterIds,
    ];

    pub fn bit(self) -> u32 {
        1 << (self as u8)
    }

    /// Stable machine name.
    pub fn name(self) -> &'static str {
        match self {
            Field::EnergyDelivered => "energy_delivered",
            Field::EnergyReturned => "energy_returned",
            Field::PowerDelivered => "power_delivered",
            Field::PowerReturned => "power_returned",
            Field::PhaseVoltage => "phase_voltage",
            Field::PhaseCurrent => "phase_current",
            Field::PhasePower => "phase_power",
            Field::Tariff => "tariff",
            Field::Gas => "gas",
            Field::Water => "water",
            Field::Heat => "heat",
            Field::PowerQuality => "power_quality",
            Field::TextMessage => "text_message",
            Field::MeterIds => "meter_ids",
        }
    }

    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// What the homeowner is told they share.
    pub fn description(self) -> &'static str {
        match self {
            Field::EnergyDelivered => "Total electricity you used (meter readings)",
            Field::EnergyReturned => {
                "Total electricity you sent back to the grid, e.g. from solar panels (meter readings)"
            }
            Field::PowerDelivered => "Your electricity use right now",
            Field::PowerReturned => "Electricity you are sending back to the grid right now",
            Field::PhaseVoltage => "The voltage on each wire of your connection",
            Field::PhaseCurrent => "How much current flows through each wire of your connection",
            Field::PhasePower => "Your electricity use right now, per wire of your connection",
            Field::Tariff => "Whether the meter is counting at the day or the night rate",
            Field::Gas => "Your gas meter readings",
            Field::Water => "Your water meter readings",
            Field::Heat => "Your district heating meter readings",
            Field::PowerQuality => {
                "Power cuts and dips or spikes in the voltage (failures, sags and swells)"
            }
            Field::TextMessage => "Text messages your grid operator sends to the meter",
            Field::MeterIds => "The serial numbers of your meters (these identify your home)",
        }
    }
}

/// A set of [`Field`]s; a `u32` bitset on the wire (bit n = field with discriminant n).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FieldSet(u32);

impl FieldSet {
    /// Bits that name a known field.
    pub const KNOWN_BITS: u32 = (1 << Field::ALL.len()) - 1;

    pub fn empty() -> Self {
        Self(0)
    }
    /// Rejects bits that name no field (a newer or hostile sender).
    pub fn from_bits(bits: u32) -> Result<Self, WireError> {
        if bits & !Self::KNOWN_BITS != 0 {
            return Err(WireError::Invalid {
                field: "fields",
                reason: "unknown field bit",
            });
        }
        Ok(Self(bits))
    }
    pub fn bits(self) -> u32 {
        self.0
    }
    pub fn with(mut self, f: Field) -> Self {
        self.insert(f);
        self
    }
    pub fn insert(&mut self, f: Field) {
        self.0 |= f.bit();
    }
    pub fn contains(self, f: Field) -> bool {
        self.0 & f.bit() != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }
    pub fn is_subset_of(self, other: FieldSet) -> bool {
        self.0 & !other.0 == 0
    }
    /// Fields in bit order.
    pub fn iter(self) -> impl Iterator<Item = Field> {
        Field::ALL.into_iter().filter(move |f| self.contains(*f))
    }
}

impl FromIterator<Field> for FieldSet {
    fn from_iter<I: IntoIterator<Item = Field>>(iter: I) -> Self {
        let mut s = FieldSet::empty();
        for f in iter {
            s.insert(f);
        }
        s
    }
}

/// How finely the provider may see the data. On the wire: the period in seconds (`u32`);
/// only the six values below are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Resolution {
    Raw,
    TenSeconds,
    Minute,
    QuarterHour,
    Hour,
    Day,
}

impl Resolution {
    pub const ALL: [Resolution; 6] = [
        Resolution::Raw,
        Resolution::TenSeconds,
        Resolution::Minute,
        Resolution::QuarterHour,
        Resolution::Hour,
        Resolution::Day,
    ];

    pub fn seconds(self) -> u32 {
        match self {
            Resolution::Raw => 1,
            Resolution::TenSeconds => 10,
            Resolution::Minute => 60,
            Resolution::QuarterHour => 900,
            Resolution::Hour => 3600,
            Resolution::Day => 86_400,
        }
    }

    pub fn from_seconds(s: u32) -> Result<Self, WireError> {
        Resolution::ALL
            .into_iter()
            .find(|r| r.seconds() == s)
            .ok_or(WireError::Invalid {
                field: "resolution",
                reason: "not one of 1, 10, 60, 900, 3600, 86400 seconds",
            })
    }

    pub fn name(self) -> &'static str {
        match self {
            Resolution::Raw => "raw",
            Resolution::TenSeconds => "ten_seconds",
            Resolution::Minute => "minute",
            Resolution::QuarterHour => "quarter_hour",
            Resolution::Hour => "hour",
            Resolution::Day => "day",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Resolution::Raw => {
                "Every reading as the meter sends it (every second): shows exactly when you switch things on"
            }
            Resolution::TenSeconds => {
                "One value every 10 seconds: shows when you switch larger appliances on"
            }
            Resolution::Minute => "One value per minute: shows your daily routine in detail",
            Resolution::QuarterHour => "One value per quarter of an hour: shows when you are home",
            Resolution::Hour => "One value per hour: shows your daily pattern",
            Resolution::Day => "One value per day: your daily totals only",
        }
    }

    /// True if `self` reveals no more detail than `other` (same or longer period).
    pub fn is_at_least_as_coarse_as(self, other: Resolution) -> bool {
        self.seconds() >= other.seconds()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_unique() {
        for f in Field::ALL {
            assert_eq!(Field::from_name(f.name()), Some(f));
            assert!(!f.description().is_empty());
        }
        assert_eq!(FieldSet::KNOWN_BITS, 0x3FFF);
        assert!(FieldSet::from_bits(0x4000).is_err());
        for r in Resolution::ALL {
            assert_eq!(Resolution::from_seconds(r.seconds()), Ok(r));
        }
        assert!(Resolution::from_seconds(30).is_err());
        assert!(Resolution::Hour.is_at_least_as_coarse_as(Resolution::Minute));
        assert!(!Resolution::Raw.is_at_least_as_coarse_as(Resolution::Minute));
    }
}

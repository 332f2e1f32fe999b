//! P1 / DSMR telegrams: streaming framing, CRC-16/ARC and parsing into a typed model.
//!
//! - [`Framer`] / [`frames`] / [`frame_all`] split a byte stream into telegrams (`/` … `!CRC\r\n`),
//!   resynchronising after garbage, padding, cut-off or oversize telegrams.
//! - [`crc16_arc`] is the DSMR CRC.
//! - [`parse`] turns one telegram into a [`Telegram`] (serde-serialisable, units in field names).
//!
//! Every input byte is treated as hostile: nothing here panics on input, buffers are bounded by
//! [`MAX_TELEGRAM_SIZE`], and malformed lines become [`LineError`] warnings instead of failures.
//! The format and JSON field names are documented in docs/PROTOCOL.md (P1 telegrams).

mod crc;
mod framer;
mod model;
mod parse;
pub mod report;

pub use crc::{Crc16, crc16_arc, parse_crc_digits};
pub use framer::{
    Frame, FrameError, Framer, FramerStats, Frames, MAX_TELEGRAM_SIZE, frame_all, frames,
};
pub use model::{
    DateTimeParts, Demand, Header, LineError, MbusChannel, MbusReading, MonthlyPeak, PowerFailure,
    Quantity, Telegram, Timestamp, UnknownLine, days_from_civil, mbus_kind,
};
pub use parse::{Obis, parse, parse_timestamp};

/// Options for [`parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseOptions {
    /// Reject a telegram whose stated CRC does not match (default `true`). When `false` a
    /// mismatch is recorded in [`Telegram::warnings`] instead.
    pub check_crc: bool,
}

impl Default for ParseOptions {
    fn default() -> Self {
        Self { check_crc: true }
    }
}

impl ParseOptions {
    /// Options that do not reject CRC mismatches.
    pub const fn no_crc() -> Self {
        Self { check_crc: false }
    }
}

/// A telegram that cannot be parsed at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DsmrError {
    /// No bytes (or only whitespace / padding).
    #[error("empty telegram")]
    Empty,
    /// The first non-blank byte is not the `/` of a header line.
    #[error("telegram does not start with a '/' header line")]
    MissingHeader,
    /// The CRC after `!` does not match the CRC-16/ARC of `/` … `!`.
    #[error("CRC mismatch: telegram says {found:04X}, computed {expected:04X}")]
    Crc {
        /// CRC computed over the received bytes.
        expected: u16,
        /// CRC written in the telegram.
        found: u16,
    },
    /// The telegram is larger than [`MAX_TELEGRAM_SIZE`].
    #[error("telegram too large: {size} bytes (limit {max})")]
    TooLarge {
        /// Size of the telegram body.
        size: usize,
        /// The limit.
        max: usize,
    },
}

//! Load generator for P1 Consent: N simulated meters, each with its own identity, channel and
//! 1 Hz telegrams, through one MQTT broker to M providers that verify and open every record.
//!
//! Three roles, each a subcommand of the `p1consent-loadgen` binary and a separate process so
//! the CPU and memory of each side can be read from `/proc`:
//! - [`meters`]: simulates the meters (the agent's DSMR simulator → parse → raw view → seal →
//!   publish), like the agent's hot path minus its disk outbox;
//! - [`providers`]: receives the key deliveries and records, opens them with
//!   [`ChannelReader`](p1consent_shared::channel::ChannelReader) and measures latency, loss and
//!   duplicates;
//! - [`run`]: starts a broker (or uses one), spawns both as child processes, samples CPU and
//!   resident memory of each side and of the broker, and prints a table ([`report`]).
//!
//! Both sides derive every identity and key from a shared run id ([`ids`]), so no pairing or
//! consent log is needed: the meters deliver the channel key to each provider exactly as the
//! agent does (a key delivery in the provider's inbox), and the providers open the channel
//! from it.

pub mod ids;
pub mod meters;
pub mod procstat;
pub mod providers;
pub mod report;
pub mod run;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;

/// Why a load run could not be carried out (the measured results are never errors).
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("bad argument: {0}")]
    Arg(String),
    #[error("broker: {0}")]
    Broker(String),
    #[error("child process {what}: {detail}")]
    Child { what: &'static str, detail: String },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("result of {what} unreadable: {detail}")]
    Result { what: &'static str, detail: String },
}

/// Wall-clock time in microseconds since the Unix epoch. Both sides run on one machine, so
/// they share this clock: a record's device timestamp and the provider's opening time are
/// directly comparable.
pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Parses `500ms`, `3s`, `10m`, `1h` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, LoadError> {
    let s = s.trim();
    let bad = || LoadError::Arg(format!("duration {s:?}: use e.g. 500ms, 60s, 10m, 1h"));
    let (num, unit_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (s, 1000)
    };
    let n: u64 = num.trim().parse().map_err(|_| bad())?;
    let ms = n.checked_mul(unit_ms).ok_or_else(bad)?;
    if ms == 0 {
        return Err(bad());
    }
    Ok(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_reject_nonsense() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("3s").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("60").unwrap(), Duration::from_secs(60));
        for bad in ["", "0s", "-1s", "1.5s", "s", "99999999999999999999h", "1d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }
}

//! Serial source: reads the meter's P1 port (usually a USB–P1 cable, `/dev/ttyUSB0`).
//!
//! - DSMR 4.x/5.0: 115200 baud 8N1; DSMR 2.2/3.0: 9600 baud 7E1 (bytes masked with `0x7F`).
//! - [`SerialMode::Auto`] alternates between the two settings, [`SerialConfig::probe_window`]
//!   each, until a valid frame arrives, then keeps the setting that worked (also after reconnects).
//! - When the port cannot be opened, or a read fails or hits end of file (cable pulled), the
//!   source waits with exponential backoff ([`Backoff`]) and tries again, forever. Each state
//!   change is logged once.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};
use tokio_serial::{
    DataBits, FlowControl, Parity, SerialPort, SerialPortBuilderExt, SerialStream, StopBits,
};
use tokio_util::sync::CancellationToken;

use super::{Halt, Pipeline, RawTelegram, SourceStatus, StopReason};

/// Which line settings to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SerialMode {
    /// DSMR 4.x / 5.0 / e-MUCS: 115200 baud, 8 data bits, no parity, 1 stop bit.
    Dsmr45,
    /// DSMR 2.2 / 3.0: 9600 baud, 7 data bits, even parity, 1 stop bit.
    Dsmr22,
    /// Try [`Self::Dsmr45`] and [`Self::Dsmr22`] in turn until valid frames appear.
    #[default]
    Auto,
}

/// Concrete line settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineSettings {
    /// 115200 8N1.
    Baud115200_8N1,
    /// 9600 7E1 (received bytes are masked with `0x7F`).
    Baud9600_7E1,
}

impl LineSettings {
    /// Baud rate.
    pub fn baud(self) -> u32 {
        match self {
            Self::Baud115200_8N1 => 115_200,
            Self::Baud9600_7E1 => 9_600,
        }
    }

    /// True for 7-bit settings, whose bytes must be masked with `0x7F`.
    pub fn seven_bit(self) -> bool {
        matches!(self, Self::Baud9600_7E1)
    }

    /// The other setting (for auto-detection).
    pub fn other(self) -> Self {
        match self {
            Self::Baud115200_8N1 => Self::Baud9600_7E1,
            Self::Baud9600_7E1 => Self::Baud115200_8N1,
        }
    }

    /// The setting to start with for `mode`.
    pub fn initial(mode: SerialMode) -> Self {
        match mode {
            SerialMode::Dsmr45 | SerialMode::Auto => Self::Baud115200_8N1,
            SerialMode::Dsmr22 => Self::Baud9600_7E1,
        }
    }
}

impl std::fmt::Display for LineSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Baud115200_8N1 => "115200 8N1",
            Self::Baud9600_7E1 => "9600 7E1",
        })
    }
}

/// Clear the parity bit of every byte (7-bit mode on a line that delivers 8-bit bytes).
pub fn mask_7bit(data: &mut [u8]) {
    for b in data {
        *b &= 0x7F;
    }
}

/// Exponential backoff: `initial`, doubling up to `max`; [`Self::reset`] after a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// A backoff starting at `initial` and capped at `max` (at least `initial`).
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Self {
            initial,
            max: max.max(initial),
            current: initial,
        }
    }

    /// The delay to wait now; the next one is doubled (capped).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = self.current.saturating_mul(2).min(self.max);
        d
    }

    /// Start again from `initial`.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

impl Default for Backoff {
    /// 0.5 s → 30 s.
    fn default() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(30))
    }
}

/// Serial source configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialConfig {
    /// Device path, e.g. `/dev/ttyUSB0` or `/dev/serial/by-id/...`.
    pub path: PathBuf,
    /// Line settings (default [`SerialMode::Auto`]).
    pub mode: SerialMode,
    /// Auto mode: how long to listen with one setting before trying the other (default 4 s;
    /// DSMR 4 meters send every 10 s, so a few windows may pass before one is caught).
    pub probe_window: Duration,
    /// First reconnect delay (default 0.5 s).
    pub backoff_initial: Duration,
    /// Largest reconnect delay (default 30 s).
    pub backoff_max: Duration,
}

impl SerialConfig {
    /// Defaults for `path` with `mode`.
    pub fn new(path: impl Into<PathBuf>, mode: SerialMode) -> Self {
        Self {
            path: path.into(),
            mode,
            probe_window: Duration::from_secs(4),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// How one open-port session ended.
enum SessionEnd {
    Halt(StopReason),
    /// Read error or end of file: the device went away.
    Lost(String),
}

fn bits_and_parity(settings: LineSettings) -> (DataBits, Parity) {
    if settings.seven_bit() {
        (DataBits::Seven, Parity::Even)
    } else {
        (DataBits::Eight, Parity::None)
    }
}

/// Switch an open port to `settings` (auto-detection does not reopen the device).
fn apply(port: &mut SerialStream, settings: LineSettings) -> Result<(), tokio_serial::Error> {
    let (bits, parity) = bits_and_parity(settings);
    port.set_baud_rate(settings.baud())?;
    port.set_data_bits(bits)?;
    port.set_parity(parity)?;
    Ok(())
}

/// Reads telegrams from a serial port, reconnecting forever.
#[derive(Debug, Clone)]
pub struct SerialSource {
    config: SerialConfig,
}

impl SerialSource {
    /// A serial source for `config`.
    pub fn new(config: SerialConfig) -> Self {
        Self { config }
    }

    fn open(&self, settings: LineSettings) -> Result<SerialStream, tokio_serial::Error> {
        let path = self.config.path.to_string_lossy().into_owned();
        let (bits, parity) = bits_and_parity(settings);
        tokio_serial::new(path, settings.baud())
            .data_bits(bits)
            .parity(parity)
            .stop_bits(StopBits::One)
            .flow_control(FlowControl::None)
            .open_native_async()
    }

    /// Run until cancelled or the receiver is dropped. Device problems never end the source:
    /// it reconnects with backoff.
    pub async fn run(
        self,
        tx: mpsc::Sender<RawTelegram>,
        status: watch::Sender<SourceStatus>,
        cancel: CancellationToken,
    ) -> StopReason {
        let path = self.config.path.display().to_string();
        let mut pipe = Pipeline::new("serial", tx, status, cancel);
        let mut backoff = Backoff::new(self.config.backoff_initial, self.config.backoff_max);
        let mut settings = LineSettings::initial(self.config.mode);
        // The last open failure logged, so a device that stays away is logged once.
        let mut open_failure: Option<String> = None;
        // Set when the last session ended with this error before delivering any telegram: a
        // flapping device (opens, then fails at once) is logged once, not on every attempt.
        let mut flapping: Option<String> = None;
        let reason = loop {
            if pipe.cancel().is_cancelled() {
                break StopReason::Cancelled;
            }
            if pipe.receiver_gone() {
                break StopReason::ReceiverDropped;
            }
            let port = match self.open(settings) {
                Ok(p) => p,
                Err(e) => {
                    let msg = format!("cannot open {path}: {e}");
                    if open_failure.as_deref() != Some(msg.as_str()) {
                        tracing::warn!(port = %path, error = %e, "serial port unavailable; retrying with backoff");
                        open_failure = Some(msg.clone());
                    }
                    pipe.status().send_modify(|s| {
                        s.connected = false;
                        s.last_error = Some(msg);
                    });
                    match pipe.sleep(backoff.next_delay()).await {
                        Ok(()) => continue,
                        Err(Halt(r)) => break r,
                    }
                }
            };
            if flapping.is_none() || open_failure.is_some() {
                tracing::info!(port = %path, settings = %settings, "serial port open");
            }
            open_failure = None;
            let detail = format!("serial {path} {settings}");
            pipe.status().send_modify(|s| {
                s.connected = true;
                s.detail = Some(detail);
            });
            pipe.reset_framer();
            let end = self.session(&mut pipe, port, &mut settings).await;
            let delivered = pipe.take_valid() > 0;
            match end {
                SessionEnd::Halt(r) => break r,
                SessionEnd::Lost(msg) => {
                    if delivered || flapping.as_deref() != Some(msg.as_str()) {
                        tracing::warn!(port = %path, error = %msg, "serial device lost; reconnecting with backoff");
                    } else {
                        tracing::debug!(port = %path, error = %msg, "serial device lost again");
                    }
                    flapping = (!delivered).then(|| msg.clone());
                    pipe.status().send_modify(|s| {
                        s.connected = false;
                        s.last_error = Some(msg);
                    });
                    if delivered {
                        backoff.reset();
                    }
                    if let Err(Halt(r)) = pipe.sleep(backoff.next_delay()).await {
                        break r;
                    }
                }
            }
        };
        pipe.status().send_modify(|s| s.connected = false);
        tracing::info!(port = %path, reason = ?reason, "serial source stopped");
        reason
    }

    async fn session(
        &self,
        pipe: &mut Pipeline,
        mut port: SerialStream,
        settings: &mut LineSettings,
    ) -> SessionEnd {
        let probing = self.config.mode == SerialMode::Auto;
        let mut deadline = tokio::time::Instant::now() + self.config.probe_window;
        let mut got_frame = false;
        let mut buf = [0u8; 4096];
        loop {
            let probe = async move {
                if probing && !got_frame {
                    tokio::time::sleep_until(deadline).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            let n = tokio::select! {
                biased;
                () = pipe.cancel().cancelled() => return SessionEnd::Halt(StopReason::Cancelled),
                () = pipe.receiver_closed() => return SessionEnd::Halt(StopReason::ReceiverDropped),
                () = probe => {
                    let next = settings.other();
                    tracing::debug!(tried = %settings, next = %next, "no valid telegram; switching line settings");
                    if let Err(e) = apply(&mut port, next) {
                        return SessionEnd::Lost(format!("cannot switch to {next}: {e}"));
                    }
                    *settings = next;
                    pipe.reset_framer();
                    let detail = format!("serial {} {next}", self.config.path.display());
                    pipe.status().send_modify(|s| s.detail = Some(detail));
                    deadline = tokio::time::Instant::now() + self.config.probe_window;
                    continue;
                }
                r = port.read(&mut buf) => match r {
                    Ok(0) => return SessionEnd::Lost("end of file on serial device".into()),
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return SessionEnd::Lost(format!("read error: {e}")),
                },
            };
            let Some(chunk) = buf.get_mut(..n) else {
                continue;
            };
            if settings.seven_bit() {
                mask_7bit(chunk);
            }
            match pipe.feed(chunk).await {
                Ok(sent) => {
                    if sent > 0 && !got_frame {
                        got_frame = true;
                        if probing {
                            tracing::info!(settings = %settings, "auto-detected P1 line settings");
                        }
                    }
                }
                Err(Halt(r)) => return SessionEnd::Halt(r),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::default();
        let got: Vec<u64> = (0..9).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(
            got,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(500));
    }

    #[test]
    fn masking_clears_parity_bit() {
        let mut d = [b'/' | 0x80, b'A', 0xFF];
        mask_7bit(&mut d);
        assert_eq!(d, [b'/', b'A', 0x7F]);
    }
}

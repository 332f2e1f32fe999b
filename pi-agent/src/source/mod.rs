//! Where telegrams come from: the serial port, a capture file, or the simulator.
//!
//! Every source turns bytes into frames with the shared [`Framer`], drops frames whose CRC is
//! wrong (DSMR 2.2/3.0 frames carry no CRC and pass), and sends each good frame as a
//! [`RawTelegram`] into a `tokio::sync::mpsc` channel. Progress is published in a
//! [`SourceStatus`] through a `tokio::sync::watch` channel (for `pi-agent status`).
//!
//! A source stops when the receiver is dropped ([`StopReason::ReceiverDropped`]) or the
//! [`CancellationToken`] fires ([`StopReason::Cancelled`]). See docs/agent-sources.md.

pub mod replay;
pub mod serial;
pub mod simulator;
pub mod time;

use std::time::{SystemTime, UNIX_EPOCH};

use p1consent_shared::dsmr::{FrameError, Framer};
use tokio::sync::{mpsc, watch};
pub use tokio_util::sync::CancellationToken;

pub use replay::{ReplayConfig, ReplayPace, ReplaySource, pace_delay, telegram_time_s};
pub use serial::{Backoff, LineSettings, SerialConfig, SerialMode, SerialSource};
pub use simulator::{SimConfig, Simulator};

/// One telegram as received: the exact frame bytes (`/` through the CRC line) and the local
/// reception time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawTelegram {
    /// Exact frame bytes, `/` through the end line terminator.
    pub bytes: Vec<u8>,
    /// Unix time in milliseconds (local clock) when the frame was completed.
    pub received_at_ms: u64,
}

/// What a source has been doing, for `pi-agent status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceStatus {
    /// True while the source has its input open (serial port open, file open, simulator running).
    pub connected: bool,
    /// Unix ms of the last telegram sent on.
    pub last_telegram_at_ms: Option<u64>,
    /// Telegrams sent on (CRC good or no CRC).
    pub telegrams: u64,
    /// Framing problems (garbage between telegrams, cut-off, unterminated or oversize telegrams).
    pub framing_errors: u64,
    /// Frames dropped because their CRC did not match.
    pub crc_errors: u64,
    /// The last error, for display (open/read failures, CRC or framing errors).
    pub last_error: Option<String>,
    /// Human-readable description of the input (e.g. `serial /dev/ttyUSB0 115200 8N1`).
    pub detail: Option<String>,
}

impl SourceStatus {
    /// A fresh status channel: give the sender to a source, keep the receiver for display.
    pub fn channel() -> (watch::Sender<SourceStatus>, watch::Receiver<SourceStatus>) {
        watch::channel(SourceStatus::default())
    }
}

/// Why a source stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The cancellation token fired.
    Cancelled,
    /// The telegram receiver was dropped.
    ReceiverDropped,
    /// A non-looping replay reached the end of its file.
    EndOfInput,
}

/// A source that cannot run at all (a serial source never returns this: it keeps retrying).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The capture file could not be opened or read.
    #[error("cannot read capture file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A configuration value is unusable.
    #[error("invalid source configuration: {0}")]
    Config(String),
}

/// Current Unix time in milliseconds (0 if the clock is before 1970).
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The receiver went away or the source was cancelled while sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Halt(pub StopReason);

/// Shared path of every source: bytes → [`Framer`] → CRC check → channel + status.
pub(crate) struct Pipeline {
    framer: Framer,
    tx: mpsc::Sender<RawTelegram>,
    status: watch::Sender<SourceStatus>,
    cancel: CancellationToken,
    label: &'static str,
    /// Valid frames sent since [`Self::take_valid`] was last called.
    valid: u64,
}

impl Pipeline {
    pub(crate) fn new(
        label: &'static str,
        tx: mpsc::Sender<RawTelegram>,
        status: watch::Sender<SourceStatus>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            framer: Framer::new(),
            tx,
            status,
            cancel,
            label,
            valid: 0,
        }
    }

    pub(crate) fn cancel(&self) -> &CancellationToken {
        &self.cancel
    }

    pub(crate) fn status(&self) -> &watch::Sender<SourceStatus> {
        &self.status
    }

    /// Number of valid frames sent since the last call; resets the count.
    pub(crate) fn take_valid(&mut self) -> u64 {
        std::mem::take(&mut self.valid)
    }

    /// Drop any partial telegram (e.g. after a reconnect or a line-setting change).
    pub(crate) fn reset_framer(&mut self) {
        self.framer = Framer::new();
    }

    /// True when nobody listens any more.
    pub(crate) fn receiver_gone(&self) -> bool {
        self.tx.is_closed()
    }

    /// Resolves when the receiver has been dropped.
    pub(crate) async fn receiver_closed(&self) {
        self.tx.closed().await
    }

    /// Feed bytes; sends every complete, CRC-valid frame. Returns the number sent.
    pub(crate) async fn feed(&mut self, data: &[u8]) -> Result<usize, Halt> {
        self.framer.push(data);
        self.drain().await
    }

    /// End of input: report a pending unterminated telegram / trailing garbage.
    pub(crate) async fn finish(&mut self) -> Result<usize, Halt> {
        self.framer.finish();
        let n = self.drain().await;
        self.framer = Framer::new();
        n
    }

    async fn drain(&mut self) -> Result<usize, Halt> {
        let mut good: Vec<Vec<u8>> = Vec::new();
        let mut framing = 0u64;
        let mut crc = 0u64;
        let mut last_error = None;
        while let Some(item) = self.framer.next_telegram() {
            match item {
                Ok(frame) => match frame.verify_crc() {
                    Ok(_) => good.push(frame.bytes().to_vec()),
                    Err(e) => {
                        crc += 1;
                        tracing::warn!(source = self.label, error = %e, bytes = frame.bytes().len(), "dropping telegram with bad CRC");
                        last_error = Some(e.to_string());
                    }
                },
                Err(e) => {
                    framing += 1;
                    match e {
                        FrameError::Garbage { .. } => {
                            tracing::debug!(source = self.label, error = %e, "framing")
                        }
                        _ => tracing::warn!(source = self.label, error = %e, "framing"),
                    }
                    last_error = Some(e.to_string());
                }
            }
        }
        if framing > 0 || crc > 0 {
            self.status.send_modify(|s| {
                s.framing_errors += framing;
                s.crc_errors += crc;
                if last_error.is_some() {
                    s.last_error = last_error;
                }
            });
        }
        let mut sent = 0;
        for bytes in good {
            let at = now_unix_ms();
            let t = RawTelegram {
                bytes,
                received_at_ms: at,
            };
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Err(Halt(StopReason::Cancelled)),
                r = self.tx.send(t) => {
                    if r.is_err() {
                        return Err(Halt(StopReason::ReceiverDropped));
                    }
                }
            }
            sent += 1;
            self.valid += 1;
            self.status.send_modify(|s| {
                s.telegrams += 1;
                s.last_telegram_at_ms = Some(at);
            });
        }
        Ok(sent)
    }

    /// Sleep for `d` unless cancelled or the receiver is dropped first.
    pub(crate) async fn sleep(&self, d: std::time::Duration) -> Result<(), Halt> {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(Halt(StopReason::Cancelled)),
            () = self.tx.closed() => Err(Halt(StopReason::ReceiverDropped)),
            () = tokio::time::sleep(d) => Ok(()),
        }
    }
}

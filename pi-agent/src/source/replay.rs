//! Replay source: plays a capture file (raw P1 bytes) back as telegrams.
//!
//! The file is read in bounded chunks and framed like a serial stream, so it may hold any
//! bytes, many telegrams, or start mid-telegram. Frames with a bad CRC are dropped.

use std::path::PathBuf;
use std::time::Duration;

use p1consent_shared::dsmr::{ParseOptions, parse};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::time::days_from_civil;
use super::{Halt, Pipeline, RawTelegram, SourceError, SourceStatus, StopReason};

/// Delay used when a telegram has no usable timestamp (absent, clock not set, or not later
/// than the previous one).
pub const FALLBACK_DELAY: Duration = Duration::from_secs(1);
/// Longest single pause between two replayed telegrams.
pub const MAX_DELAY: Duration = Duration::from_secs(10);
/// Read chunk size.
const CHUNK: usize = 64 * 1024;

/// How fast to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplayPace {
    /// No pauses (bounded only by the receiver).
    #[default]
    AsFastAsPossible,
    /// Pause between telegrams as recorded in their `0-0:1.0.0` timestamps (see [`pace_delay`]).
    RecordedPace,
}

/// Replay configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayConfig {
    /// Capture file.
    pub path: PathBuf,
    /// Pace (default [`ReplayPace::AsFastAsPossible`]).
    pub pace: ReplayPace,
    /// Start again at the beginning after the end of the file, forever (default `false`).
    pub looping: bool,
}

impl ReplayConfig {
    /// Replay `path` once, as fast as possible.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            pace: ReplayPace::AsFastAsPossible,
            looping: false,
        }
    }
}

/// The meter time of a telegram in seconds (Unix seconds when the timestamp carries an `S`/`W`
/// flag, otherwise local seconds since 1970 — still fine for differences). `None` when the
/// telegram has no timestamp or the meter clock is not set.
pub fn telegram_time_s(bytes: &[u8]) -> Option<i64> {
    let t = parse(bytes, ParseOptions::no_crc()).ok()?;
    let ts = t.timestamp?;
    if !ts.clock_set {
        return None;
    }
    let p = ts.parts?;
    let days = days_from_civil(i64::from(p.year), u32::from(p.month), u32::from(p.day));
    let local =
        days * 86_400 + i64::from(p.hour) * 3600 + i64::from(p.minute) * 60 + i64::from(p.second);
    Some(local - i64::from(p.utc_offset_s().unwrap_or(0)))
}

/// The pause before a telegram recorded at `next_s` that followed one recorded at `prev_s`
/// (both from [`telegram_time_s`]): the difference, capped at [`MAX_DELAY`]; [`FALLBACK_DELAY`]
/// when either time is unknown or the difference is not positive (clock jump, loop wrap).
pub fn pace_delay(prev_s: Option<i64>, next_s: Option<i64>) -> Duration {
    match (prev_s, next_s) {
        (Some(a), Some(b)) if b > a => {
            let d = u64::try_from(i128::from(b) - i128::from(a)).unwrap_or(u64::MAX);
            Duration::from_secs(d).min(MAX_DELAY)
        }
        _ => FALLBACK_DELAY,
    }
}

/// Plays a capture file into the telegram channel.
#[derive(Debug, Clone)]
pub struct ReplaySource {
    config: ReplayConfig,
}

impl ReplaySource {
    /// A replay source for `config`.
    pub fn new(config: ReplayConfig) -> Self {
        Self { config }
    }

    /// Run until the end of the file (unless looping), cancellation, or the receiver is dropped.
    ///
    /// Fails only if the file cannot be opened or read.
    pub async fn run(
        self,
        tx: mpsc::Sender<RawTelegram>,
        status: watch::Sender<SourceStatus>,
        cancel: CancellationToken,
    ) -> Result<StopReason, SourceError> {
        let path = self.config.path.display().to_string();
        status.send_modify(|s| s.detail = Some(format!("replay {path}")));
        // Frames are collected per chunk, then paced; the pipeline only frames and checks.
        // A frame is at least 3 bytes, so one chunk plus a buffered partial telegram can never
        // yield more than CHUNK frames: feeding never blocks on this channel.
        let (inner_tx, mut inner_rx) = mpsc::channel::<RawTelegram>(CHUNK);
        let (inner_status, inner_status_rx) = SourceStatus::channel();
        let mut pipe = Pipeline::new("replay", inner_tx, inner_status, cancel.clone());
        let mut prev_time: Option<i64> = None;
        let mut first = true;
        let mut passes: u64 = 0;
        let result = 'outer: loop {
            let mut file = match tokio::fs::File::open(&self.config.path).await {
                Ok(f) => f,
                Err(e) => {
                    status.send_modify(|s| {
                        s.connected = false;
                        s.last_error = Some(e.to_string());
                    });
                    return Err(SourceError::File { path, source: e });
                }
            };
            status.send_modify(|s| s.connected = true);
            if passes == 0 {
                tracing::info!(file = %path, pace = ?self.config.pace, looping = self.config.looping, "replay started");
            }
            let mut buf = vec![0u8; CHUNK];
            let mut sent_this_pass = 0u64;
            loop {
                let n = tokio::select! {
                    biased;
                    () = cancel.cancelled() => break 'outer Ok(StopReason::Cancelled),
                    r = file.read(&mut buf) => match r {
                        Ok(n) => n,
                        Err(e) => {
                            status.send_modify(|s| {
                                s.connected = false;
                                s.last_error = Some(e.to_string());
                            });
                            return Err(SourceError::File { path, source: e });
                        }
                    },
                };
                let chunk = buf.get(..n).unwrap_or(&[]);
                let framed = if n == 0 {
                    pipe.finish().await
                } else {
                    pipe.feed(chunk).await
                };
                if let Err(Halt(r)) = framed {
                    break 'outer Ok(r);
                }
                // Copy framing/CRC counters into the public status.
                let inner = inner_status_rx.borrow().clone();
                status.send_modify(|s| {
                    s.framing_errors = inner.framing_errors;
                    s.crc_errors = inner.crc_errors;
                    if inner.last_error.is_some() {
                        s.last_error = inner.last_error.clone();
                    }
                });
                while let Ok(mut t) = inner_rx.try_recv() {
                    if self.config.pace == ReplayPace::RecordedPace {
                        let this_time = telegram_time_s(&t.bytes);
                        if !first {
                            let d = pace_delay(prev_time, this_time);
                            tokio::select! {
                                biased;
                                () = cancel.cancelled() => break 'outer Ok(StopReason::Cancelled),
                                () = tx.closed() => break 'outer Ok(StopReason::ReceiverDropped),
                                () = tokio::time::sleep(d) => {}
                            }
                        }
                        prev_time = this_time;
                    }
                    first = false;
                    let at = super::now_unix_ms();
                    t.received_at_ms = at;
                    tokio::select! {
                        biased;
                        () = cancel.cancelled() => break 'outer Ok(StopReason::Cancelled),
                        r = tx.send(t) => if r.is_err() {
                            break 'outer Ok(StopReason::ReceiverDropped);
                        }
                    }
                    sent_this_pass += 1;
                    status.send_modify(|s| {
                        s.telegrams += 1;
                        s.last_telegram_at_ms = Some(at);
                    });
                }
                if n == 0 {
                    break;
                }
            }
            passes += 1;
            tracing::info!(file = %path, pass = passes, telegrams = sent_this_pass, "replay reached end of file");
            if !self.config.looping {
                break Ok(StopReason::EndOfInput);
            }
            if sent_this_pass == 0 {
                // Nothing playable: do not spin on an empty or garbage-only file.
                let msg = "capture holds no valid telegram; not looping".to_string();
                tracing::warn!(file = %path, "{msg}");
                status.send_modify(|s| s.last_error = Some(msg));
                break Ok(StopReason::EndOfInput);
            }
        };
        status.send_modify(|s| s.connected = false);
        result
    }
}

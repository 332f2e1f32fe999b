//! Streaming P1 telegram framer.
//!
//! Rules (see docs/PROTOCOL.md (P1 telegrams)):
//! - a telegram starts at `/`; every byte before it is garbage (counted, see [`FrameError::Garbage`]);
//! - it ends at a `!` that starts a line, followed by 0–4 hex digits (CRC, either case) and CRLF/LF;
//! - a `/` before the end line restarts framing: the partial telegram is reported as
//!   [`FrameError::Incomplete`] (carrying its bytes);
//! - more than [`MAX_TELEGRAM_SIZE`] bytes without an end line is [`FrameError::Oversize`], and
//!   everything up to the next `/` is skipped;
//! - at end of input ([`Framer::finish`]) a telegram without an end line is returned as
//!   [`FrameError::Unterminated`] (carrying its bytes, which [`crate::dsmr::parse`] accepts leniently).

use std::ops::Range;

use super::crc::{crc16_arc, parse_crc_digits};
use super::{DsmrError, ParseOptions, Telegram};

/// Largest telegram the framer accepts, from `/` through the end line (16 KiB).
///
/// Real telegrams are 0.3–2 KB; a 1024-character text message (2048 hex digits) still fits easily.
pub const MAX_TELEGRAM_SIZE: usize = 16 * 1024;

/// A framing problem. The framer always resynchronises by itself after reporting one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Bytes outside any telegram that were not just idle filler (CR, LF, space, tab, 0x00, 0xFF),
    /// e.g. the tail of a telegram cut off when the capture started, or gateway junk after `!`.
    /// Reported when the next `/` arrives or at end of input.
    #[error("skipped {bytes} bytes of garbage outside any telegram")]
    Garbage {
        /// Length of the skipped run (including any filler bytes in it).
        bytes: usize,
    },
    /// A new `/` arrived before the current telegram's `!` end line; the partial telegram was dropped.
    #[error("incomplete telegram dropped ({} bytes): a new '/' header arrived before its '!' end line", data.len())]
    Incomplete {
        /// The dropped bytes, starting at `/`.
        data: Vec<u8>,
    },
    /// The input ended (see [`Framer::finish`]) before the current telegram's `!` end line.
    #[error("unterminated telegram at end of input ({} bytes, no '!' end line)", data.len())]
    Unterminated {
        /// The telegram bytes seen, starting at `/`.
        data: Vec<u8>,
    },
    /// A telegram grew beyond the size limit without an end line; skipped up to the next `/`.
    #[error("telegram exceeds the {max}-byte limit ({bytes} bytes without an end line); skipped")]
    Oversize {
        /// Bytes seen when the limit was hit.
        bytes: usize,
        /// The limit in force.
        max: usize,
    },
}

/// One complete telegram as found on the wire: `/` … `!` [CRC] [CR] LF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    bytes: &'a [u8],
    /// Offset of the `!`.
    bang: usize,
    /// Number of CRC hex digits after `!` (0–4).
    digits: usize,
}

impl<'a> Frame<'a> {
    /// All bytes of the telegram, `/` through the end-line terminator.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The CRC-covered part: `/` through `!` inclusive.
    pub fn body(&self) -> &'a [u8] {
        self.bytes.get(..=self.bang).unwrap_or(self.bytes)
    }

    /// The CRC digits as written (0–4 bytes; empty for DSMR 2.2/3.0).
    pub fn crc_text(&self) -> &'a [u8] {
        self.bytes
            .get(self.bang + 1..self.bang + 1 + self.digits)
            .unwrap_or(&[])
    }

    /// The CRC stated after `!`, if any.
    pub fn stated_crc(&self) -> Option<u16> {
        parse_crc_digits(self.crc_text())
    }

    /// CRC-16/ARC of [`Self::body`].
    pub fn computed_crc(&self) -> u16 {
        crc16_arc(self.body())
    }

    /// `Ok(true)` if a CRC is present and matches, `Ok(false)` if there is none
    /// (DSMR 2.2/3.0), [`DsmrError::Crc`] on mismatch.
    pub fn verify_crc(&self) -> Result<bool, DsmrError> {
        match self.stated_crc() {
            None => Ok(false),
            Some(found) => {
                let expected = self.computed_crc();
                if expected == found {
                    Ok(true)
                } else {
                    Err(DsmrError::Crc { expected, found })
                }
            }
        }
    }

    /// Parse this telegram (see [`crate::dsmr::parse`]).
    pub fn parse(&self, opts: ParseOptions) -> Result<Telegram, DsmrError> {
        super::parse(self.bytes, opts)
    }
}

/// Counters kept by a [`Framer`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FramerStats {
    /// Complete telegrams returned.
    pub telegrams: u64,
    /// Bytes skipped outside telegrams (filler included).
    pub skipped_bytes: u64,
    /// Partial, unterminated or oversize telegrams dropped.
    pub dropped_telegrams: u64,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Looking for `/`.
    Hunt {
        run: usize,
        significant: bool,
        /// The run is the rest of an oversize telegram (already reported).
        suppressed: bool,
    },
    /// Inside a telegram that starts at the current position; `scan` is where to resume looking.
    InTelegram { scan: usize },
}

const HUNT: State = State::Hunt {
    run: 0,
    significant: false,
    suppressed: false,
};

enum Step {
    Frame {
        range: Range<usize>,
        bang: usize,
        digits: usize,
    },
    Error(ErrKind),
    NeedMore,
}

enum ErrKind {
    Garbage(usize),
    Incomplete(Range<usize>),
    Unterminated(Range<usize>),
    Oversize(usize),
}

#[derive(Debug, Clone)]
struct Core {
    state: State,
    max: usize,
    stats: FramerStats,
}

fn is_filler(b: u8) -> bool {
    matches!(b, b'\r' | b'\n' | b' ' | b'\t' | 0x00 | 0xFF)
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

/// After the `!` at `j`: returns (end offset, CRC digit count) once decidable.
fn trailer_end(data: &[u8], j: usize, eof: bool) -> Option<(usize, usize)> {
    let mut k = j + 1;
    let mut n = 0;
    while n < 4 {
        match data.get(k) {
            Some(&b) if is_hex(b) => {
                k += 1;
                n += 1;
            }
            Some(_) => break,
            None => return eof.then_some((k, n)),
        }
    }
    match data.get(k) {
        None => eof.then_some((k, n)),
        Some(b'\n') => Some((k + 1, n)),
        Some(b'\r') => match data.get(k + 1) {
            None => eof.then_some((k + 1, n)),
            Some(b'\n') => Some((k + 2, n)),
            Some(_) => Some((k + 1, n)),
        },
        // Junk right after the CRC: the telegram ends here, the rest is garbage.
        Some(_) => Some((k, n)),
    }
}

impl Core {
    fn new(max: usize) -> Self {
        Self {
            state: HUNT,
            max,
            stats: FramerStats::default(),
        }
    }

    fn step(&mut self, buf: &[u8], pos: &mut usize, eof: bool) -> Step {
        loop {
            let data = buf.get(*pos..).unwrap_or(&[]);
            match self.state {
                State::Hunt {
                    run,
                    significant,
                    suppressed,
                } => {
                    let (skip, found) = match memchr::memchr(b'/', data) {
                        Some(i) => (i, true),
                        None => (data.len(), false),
                    };
                    let skipped = data.get(..skip).unwrap_or(&[]);
                    let significant = significant || skipped.iter().any(|&b| !is_filler(b));
                    let run = run + skip;
                    *pos += skip;
                    self.stats.skipped_bytes += skip as u64;
                    let report = run > 0 && significant && !suppressed;
                    if found {
                        self.state = State::InTelegram { scan: 1 };
                        if report {
                            return Step::Error(ErrKind::Garbage(run));
                        }
                        continue;
                    }
                    if eof {
                        self.state = HUNT;
                        if report {
                            return Step::Error(ErrKind::Garbage(run));
                        }
                    } else {
                        self.state = State::Hunt {
                            run,
                            significant,
                            suppressed,
                        };
                    }
                    return Step::NeedMore;
                }
                State::InTelegram { scan } => {
                    let mut s = scan;
                    loop {
                        let hit = data
                            .get(s..)
                            .and_then(|d| memchr::memchr2(b'/', b'!', d))
                            .map(|j| j + s);
                        let Some(j) = hit else {
                            s = data.len();
                            break;
                        };
                        if data.get(j) == Some(&b'/') {
                            let range = *pos..*pos + j;
                            *pos += j;
                            self.state = State::InTelegram { scan: 1 };
                            self.stats.dropped_telegrams += 1;
                            return Step::Error(ErrKind::Incomplete(range));
                        }
                        // `!` only ends the telegram at the start of a line.
                        if j == 0 || data.get(j - 1) != Some(&b'\n') {
                            s = j + 1;
                            continue;
                        }
                        match trailer_end(data, j, eof) {
                            Some((end, digits)) => {
                                self.state = HUNT;
                                if end > self.max {
                                    *pos += end;
                                    self.stats.dropped_telegrams += 1;
                                    return Step::Error(ErrKind::Oversize(end));
                                }
                                let range = *pos..*pos + end;
                                *pos += end;
                                self.stats.telegrams += 1;
                                return Step::Frame {
                                    range,
                                    bang: j,
                                    digits,
                                };
                            }
                            None => {
                                s = j;
                                break;
                            }
                        }
                    }
                    if data.len() > self.max {
                        let bytes = data.len();
                        *pos += bytes;
                        self.stats.dropped_telegrams += 1;
                        self.state = State::Hunt {
                            run: 0,
                            significant: false,
                            suppressed: true,
                        };
                        return Step::Error(ErrKind::Oversize(bytes));
                    }
                    if eof {
                        let range = *pos..*pos + data.len();
                        *pos += data.len();
                        self.state = HUNT;
                        if range.is_empty() {
                            return Step::NeedMore;
                        }
                        self.stats.dropped_telegrams += 1;
                        return Step::Error(ErrKind::Unterminated(range));
                    }
                    self.state = State::InTelegram { scan: s };
                    return Step::NeedMore;
                }
            }
        }
    }

    fn next<'b>(
        &mut self,
        buf: &'b [u8],
        pos: &mut usize,
        eof: bool,
    ) -> Option<Result<Frame<'b>, FrameError>> {
        let slice = |r: Range<usize>| buf.get(r).unwrap_or(&[]);
        match self.step(buf, pos, eof) {
            Step::NeedMore => None,
            Step::Frame {
                range,
                bang,
                digits,
            } => Some(Ok(Frame {
                bytes: slice(range),
                bang,
                digits,
            })),
            Step::Error(kind) => Some(Err(match kind {
                ErrKind::Garbage(bytes) => FrameError::Garbage { bytes },
                ErrKind::Incomplete(r) => FrameError::Incomplete {
                    data: slice(r).to_vec(),
                },
                ErrKind::Unterminated(r) => FrameError::Unterminated {
                    data: slice(r).to_vec(),
                },
                ErrKind::Oversize(bytes) => FrameError::Oversize {
                    bytes,
                    max: self.max,
                },
            })),
        }
    }
}

/// Streaming framer: [`push`](Self::push) arbitrary chunks, then call
/// [`next_telegram`](Self::next_telegram) until it returns `None`.
///
/// ```
/// use p1consent_shared::dsmr::Framer;
/// let mut f = Framer::new();
/// f.push(b"junk/ABC5 x\r\n\r\n1-0:1.8.1(000001.000*kWh)\r\n!");
/// assert!(matches!(f.next_telegram(), Some(Err(_)))); // "junk" reported as garbage
/// assert!(f.next_telegram().is_none()); // waiting for the CRC line
/// f.push(b"E1C4\r\n");
/// let frame = f.next_telegram().unwrap().unwrap();
/// assert_eq!(frame.stated_crc(), Some(0xE1C4));
/// ```
///
/// Memory: the framer keeps only the unconsumed input (at most one partial telegram of up to
/// [`MAX_TELEGRAM_SIZE`] bytes plus the last chunk pushed, provided it is drained after each push).
/// Garbage outside telegrams is counted, never stored.
#[derive(Debug, Clone)]
pub struct Framer {
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
    core: Core,
}

impl Default for Framer {
    fn default() -> Self {
        Self::new()
    }
}

impl Framer {
    /// A framer with the default [`MAX_TELEGRAM_SIZE`] limit.
    pub fn new() -> Self {
        Self::with_max_size(MAX_TELEGRAM_SIZE)
    }

    /// A framer with a custom telegram size limit (at least 16 bytes).
    pub fn with_max_size(max: usize) -> Self {
        Self {
            buf: Vec::with_capacity(4096),
            pos: 0,
            eof: false,
            core: Core::new(max.max(16)),
        }
    }

    /// Append received bytes. Clears a previous [`finish`](Self::finish).
    pub fn push(&mut self, data: &[u8]) {
        if self.pos >= self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        // Outside a telegram with no `/` in sight: count the garbage without buffering it.
        if matches!(self.core.state, State::Hunt { .. }) && self.buf.is_empty() {
            let mut pos = 0;
            if memchr::memchr(b'/', data).is_none() {
                // Step over the whole chunk (records the run); nothing to report yet.
                let _ = self.core.step(data, &mut pos, false);
                self.eof = false;
                return;
            }
        }
        self.buf.extend_from_slice(data);
        self.eof = false;
    }

    /// Mark the end of input: the next calls to [`next_telegram`](Self::next_telegram) report a
    /// pending unterminated telegram ([`FrameError::Unterminated`]) or trailing garbage.
    pub fn finish(&mut self) {
        self.eof = true;
    }

    /// The next complete telegram or framing error, or `None` when more input is needed.
    pub fn next_telegram(&mut self) -> Option<Result<Frame<'_>, FrameError>> {
        self.core.next(&self.buf, &mut self.pos, self.eof)
    }

    /// Number of buffered, not yet framed bytes.
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Counters since creation.
    pub fn stats(&self) -> FramerStats {
        self.core.stats
    }
}

/// Zero-copy iterator over the telegrams in a complete byte buffer (end of input = end of slice).
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    data: &'a [u8],
    pos: usize,
    core: Core,
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.core.next(self.data, &mut self.pos, true)
    }
}

impl Frames<'_> {
    /// Counters so far.
    pub fn stats(&self) -> FramerStats {
        self.core.stats
    }
}

/// Iterate over the telegrams (and framing errors) in `data`, treated as a complete input.
pub fn frames(data: &[u8]) -> Frames<'_> {
    Frames {
        data,
        pos: 0,
        core: Core::new(MAX_TELEGRAM_SIZE),
    }
}

/// Frame a complete input at once: `frames(data).collect()`.
pub fn frame_all(data: &[u8]) -> Vec<Result<Frame<'_>, FrameError>> {
    frames(data).collect()
}

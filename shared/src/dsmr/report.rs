//! Telegrams as JSON for people and scripts: the one implementation behind `p1-parse` and
//! `pi-agent parse`.

use std::io::{self, Write};

use super::{FrameError, ParseOptions, frames, parse};

/// Frames `data` (one telegram, several, or a raw capture), parses each telegram and writes
/// one JSON object per telegram to `out`; problems go to `err` as `FILE: message`.
/// Returns Ok(false) if some telegram in the file was broken.
pub fn json_report(
    file: &str,
    data: &[u8],
    opts: ParseOptions,
    pretty: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<bool> {
    let name = std::path::Path::new(file)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.to_string());
    let mut ok = true;
    let mut count = 0usize;
    let emit =
        |bytes: &[u8], out: &mut dyn Write, err: &mut dyn Write, n: usize| -> io::Result<bool> {
            match parse(bytes, opts) {
                Ok(t) => {
                    for w in &t.warnings {
                        writeln!(err, "{name}: telegram {n}: warning: {w}")?;
                    }
                    let json = if pretty {
                        serde_json::to_string_pretty(&t)
                    } else {
                        serde_json::to_string(&t)
                    };
                    match json {
                        Ok(j) => writeln!(out, "{j}")?,
                        Err(e) => {
                            writeln!(err, "{name}: telegram {n}: cannot serialise: {e}")?;
                            return Ok(false);
                        }
                    }
                    Ok(true)
                }
                Err(e) => {
                    writeln!(err, "{name}: telegram {n}: {e}")?;
                    Ok(false)
                }
            }
        };
    for item in frames(data) {
        match item {
            Ok(frame) => {
                count += 1;
                ok &= emit(frame.bytes(), out, err, count)?;
            }
            Err(FrameError::Garbage { bytes }) => {
                writeln!(err, "{name}: note: skipped {bytes} bytes outside telegrams")?;
            }
            Err(FrameError::Unterminated { data }) => {
                // End of input without '!': parse what is there (the parser warns about it).
                count += 1;
                ok &= emit(&data, out, err, count)?;
            }
            Err(e) => {
                writeln!(err, "{name}: {e}")?;
                ok = false;
            }
        }
    }
    if count == 0 {
        writeln!(err, "{name}: no telegram found")?;
        ok = false;
    }
    Ok(ok)
}

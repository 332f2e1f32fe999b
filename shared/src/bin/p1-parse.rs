//! `p1-parse [--no-crc] [--pretty] FILE...` — frame and parse P1 telegrams, print JSON.
//!
//! Each FILE (or `-` for stdin) may hold one telegram, several, or a raw serial capture.
//! One JSON object per telegram is printed to stdout (one per line, or indented with `--pretty`).
//! Problems are reported on stderr as `FILE: message`; the exit code is 1 if any telegram was
//! broken (CRC mismatch, incomplete, oversize, unparsable) or a file could not be read, 2 on usage errors.
//! Garbage between telegrams and a cut-off telegram at the very start are only noted.

use std::io::{self, Read, Write};
use std::process::ExitCode;

use p1consent_shared::dsmr::{self, FrameError, ParseOptions};

const USAGE: &str = "usage: p1-parse [--no-crc] [--pretty] FILE... ('-' = stdin)";

fn main() -> ExitCode {
    let mut opts = ParseOptions::default();
    let mut pretty = false;
    let mut files = Vec::new();
    let mut only_files = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            _ if only_files => files.push(arg),
            "--no-crc" => opts.check_crc = false,
            "--pretty" => pretty = true,
            "--" => only_files = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            s if s.starts_with("--") => {
                eprintln!("p1-parse: unknown option {s}\n{USAGE}");
                return ExitCode::from(2);
            }
            _ => files.push(arg),
        }
    }
    if files.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut failed = false;
    for file in &files {
        let data = match read_input(file) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("{file}: cannot read: {e}");
                failed = true;
                continue;
            }
        };
        match process(file, &data, opts, pretty, &mut out) {
            Ok(ok) => failed |= !ok,
            Err(e) => {
                eprintln!("p1-parse: cannot write output: {e}");
                return ExitCode::from(1);
            }
        }
    }
    if let Err(e) = out.flush() {
        eprintln!("p1-parse: cannot write output: {e}");
        return ExitCode::from(1);
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn read_input(file: &str) -> io::Result<Vec<u8>> {
    if file == "-" {
        let mut v = Vec::new();
        io::stdin().lock().read_to_end(&mut v)?;
        Ok(v)
    } else {
        std::fs::read(file)
    }
}

/// Returns Ok(false) if some telegram in the file was broken.
fn process(
    file: &str,
    data: &[u8],
    opts: ParseOptions,
    pretty: bool,
    out: &mut impl Write,
) -> io::Result<bool> {
    let name = std::path::Path::new(file)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| file.to_string());
    let mut ok = true;
    let mut count = 0usize;
    let emit = |bytes: &[u8], out: &mut dyn Write, n: usize| -> io::Result<bool> {
        match dsmr::parse(bytes, opts) {
            Ok(t) => {
                for w in &t.warnings {
                    eprintln!("{name}: telegram {n}: warning: {w}");
                }
                let json = if pretty {
                    serde_json::to_string_pretty(&t)
                } else {
                    serde_json::to_string(&t)
                };
                match json {
                    Ok(j) => writeln!(out, "{j}")?,
                    Err(e) => {
                        eprintln!("{name}: telegram {n}: cannot serialise: {e}");
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Err(e) => {
                eprintln!("{name}: telegram {n}: {e}");
                Ok(false)
            }
        }
    };
    for item in dsmr::frames(data) {
        match item {
            Ok(frame) => {
                count += 1;
                ok &= emit(frame.bytes(), out, count)?;
            }
            Err(FrameError::Garbage { bytes }) => {
                eprintln!("{name}: note: skipped {bytes} bytes outside telegrams");
            }
            Err(FrameError::Unterminated { data }) => {
                // End of input without '!': parse what is there (the parser warns about it).
                count += 1;
                ok &= emit(&data, out, count)?;
            }
            Err(e) => {
                eprintln!("{name}: {e}");
                ok = false;
            }
        }
    }
    if count == 0 {
        eprintln!("{name}: no telegram found");
        ok = false;
    }
    Ok(ok)
}

//! `p1-parse [--no-crc] [--pretty] FILE...` — frame and parse P1 telegrams, print JSON.
//!
//! Each FILE (or `-` for stdin) may hold one telegram, several, or a raw serial capture.
//! One JSON object per telegram is printed to stdout (one per line, or indented with `--pretty`).
//! Problems are reported on stderr as `FILE: message`; the exit code is 1 if any telegram was
//! broken (CRC mismatch, incomplete, oversize, unparsable) or a file could not be read, 2 on usage errors.
//! Garbage between telegrams and a cut-off telegram at the very start are only noted.

use std::io::{self, Read, Write};
use std::process::ExitCode;

use p1consent_shared::dsmr::{ParseOptions, report::json_report};

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
        match json_report(file, &data, opts, pretty, &mut out, &mut io::stderr()) {
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

//! `p1consent-provider`: the provider CLI (keys, request links, listening for data).

use std::{
    collections::HashSet,
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Duration,
};

use clap::{Parser, Subcommand, ValueEnum};
use p1consent_provider::{
    ConsentPhase, KdfParams, Protection, Provider, ProviderEvent, ProviderKeys, ReadingLine,
    RequestBuilder,
    dashboard::{self, Dashboard},
    parse_public_key, read_state, request, verify_receipt,
};
use p1consent_shared::{
    consent::{Field, FieldSet, Resolution},
    crypto::KemSuite,
};
use serde::{Deserialize, Serialize};

/// Exit codes of `listen`.
const EXIT_REVOKED: u8 = 3;
const EXIT_EXPIRED: u8 = 4;

#[derive(Parser)]
#[command(
    name = "p1consent-provider",
    version,
    about = "P1 Consent provider: request and receive smart-meter data with the owner's consent"
)]
struct Cli {
    /// Directory for the key file, the state and received data.
    #[arg(long, env = "P1C_PROVIDER_DIR", default_value = "p1consent-provider")]
    dir: PathBuf,
    /// Store or read the key file without a passphrase (scripts; not recommended).
    #[arg(long, global = true)]
    insecure_no_passphrase: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the provider's keys.
    Init {
        /// The controller's name used in requests by default.
        #[arg(long)]
        name: Option<String>,
        /// Contact address used in requests by default.
        #[arg(long)]
        contact: Option<String>,
        /// KEM suite: x25519-sntrup761 (default) or x25519-mlkem768.
        #[arg(long, default_value = "x25519-sntrup761")]
        kem: String,
    },
    /// Create a signed request link (and QR code) to give to an owner.
    Request {
        #[arg(long)]
        purpose: String,
        /// Controller name (default: the name given at init).
        #[arg(long)]
        controller: Option<String>,
        /// Contact (default: the contact given at init).
        #[arg(long)]
        contact: Option<String>,
        /// Comma-separated field names, e.g. energy_delivered,power_delivered.
        #[arg(long, value_delimiter = ',')]
        fields: Vec<String>,
        /// raw, ten_seconds, minute, quarter_hour, hour, day (or seconds).
        #[arg(long, default_value = "quarter_hour")]
        resolution: String,
        #[arg(long, default_value_t = 30)]
        retention_days: u32,
        /// How long the consent may last: e.g. 90d, 12h, 30m, 3600 (seconds).
        #[arg(long, default_value = "365d")]
        expires_in: String,
        /// How long the link may be answered (default: as long as the consent).
        #[arg(long)]
        link_expires_in: Option<String>,
        #[arg(long)]
        policy_url: Option<String>,
        #[arg(long, default_value = "EU")]
        jurisdiction: String,
        /// Also write the QR code as a PNG file.
        #[arg(long)]
        png: Option<PathBuf>,
        /// Do not print the terminal QR code.
        #[arg(long)]
        no_qr: bool,
    },
    /// Receive data: one JSON line (or CSV row) per reading; events go to standard error.
    /// Exits 0 on Ctrl-C, 3 when the last active consent was revoked, 4 when it expired.
    Listen {
        #[arg(long, env = "P1C_BROKER", default_value = "mqtt://127.0.0.1:1883")]
        broker: String,
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
        /// Append readings to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Serve a live local web page: a chart of the power use in the granted stream, the
    /// consent (purpose, controller, expiry) and its state. Receives and stores data like
    /// `listen` (do not run both on the same --dir). Prints the page's URL; Ctrl-C stops it.
    Dashboard {
        #[arg(long, env = "P1C_BROKER", default_value = "mqtt://127.0.0.1:1883")]
        broker: String,
        /// Address of the web page (port 0: any free port; the URL is printed).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// A request link to show on the page (with its QR code) while no consent is known.
        #[arg(long)]
        request_link: Option<String>,
    },
    /// Show the identity and what is known of every consent.
    Status,
    /// Verify a consent receipt signed by the owner.
    VerifyReceipt {
        file: PathBuf,
        /// The owner's Ed25519 public key (64 hex characters).
        #[arg(long)]
        owner: String,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

#[derive(Serialize, Deserialize, Default)]
struct Profile {
    name: Option<String>,
    contact: Option<String>,
}

fn key_path(dir: &Path) -> PathBuf {
    dir.join("provider.key")
}

fn profile_path(dir: &Path) -> PathBuf {
    dir.join("profile.json")
}

fn data_dir(dir: &Path) -> PathBuf {
    dir.join("state")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

type AnyError = Box<dyn std::error::Error>;

fn run(cli: Cli) -> Result<ExitCode, AnyError> {
    match cli.cmd {
        Cmd::Init { name, contact, kem } => {
            let suite = KemSuite::from_name(&kem).ok_or(format!("unknown KEM suite {kem}"))?;
            let path = key_path(&cli.dir);
            if path.exists() {
                return Err(format!("{} already exists", path.display()).into());
            }
            let keys = ProviderKeys::generate(suite);
            if cli.insecure_no_passphrase {
                keys.save(&path, Protection::Unprotected)?;
                eprintln!("warning: the key file is NOT protected by a passphrase");
            } else {
                let pass = new_passphrase()?;
                keys.save(&path, Protection::Passphrase(&pass, KdfParams::default()))?;
            }
            let profile = Profile { name, contact };
            p1consent_provider::fsutil::write_private(
                &profile_path(&cli.dir),
                &serde_json::to_vec_pretty(&profile)?,
            )?;
            println!("provider key:  {}", keys.public().to_hex());
            println!("inbox id:      {}", keys.public().opaque_id());
            println!("KEM suite:     {}", keys.kem().suite().name());
            println!("key file:      {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Request {
            purpose,
            controller,
            contact,
            fields,
            resolution,
            retention_days,
            expires_in,
            link_expires_in,
            policy_url,
            jurisdiction,
            png,
            no_qr,
        } => {
            let keys = load_keys(&cli.dir, cli.insecure_no_passphrase)?;
            let profile: Profile = std::fs::read(profile_path(&cli.dir))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            let controller = controller
                .or(profile.name)
                .ok_or("--controller is required (or give --name at init)")?;
            let contact = contact
                .or(profile.contact)
                .ok_or("--contact is required (or give --contact at init)")?;
            let mut set = FieldSet::empty();
            for f in &fields {
                let f = f.trim();
                let field = Field::from_name(f).ok_or_else(|| {
                    let names: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
                    format!("unknown field {f}; known: {}", names.join(", "))
                })?;
                set.insert(field);
            }
            let mut b = RequestBuilder::new(controller, contact)
                .purpose(purpose)
                .fields(set)
                .resolution(parse_resolution(&resolution)?)
                .retention_days(retention_days)
                .valid_for(parse_duration(&expires_in)?)
                .jurisdiction(jurisdiction);
            if let Some(l) = link_expires_in {
                b = b.link_valid_for(parse_duration(&l)?);
            }
            if let Some(u) = policy_url {
                b = b.policy_url(u);
            }
            let req = b.build(&keys)?;
            let link = req.to_link();
            if !no_qr {
                eprintln!("{}", request::terminal_qr(&link)?);
            }
            if let Some(p) = png {
                std::fs::write(&p, request::png_qr(&link)?)?;
                eprintln!("QR code written to {}", p.display());
            }
            eprintln!("consent id: {}", req.consent_id());
            println!("{link}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Listen {
            broker,
            format,
            out,
        } => {
            let keys = load_keys(&cli.dir, cli.insecure_no_passphrase)?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(listen(keys, &broker, &data_dir(&cli.dir), format, out))
        }
        Cmd::Dashboard {
            broker,
            listen,
            request_link,
        } => {
            let keys = load_keys(&cli.dir, cli.insecure_no_passphrase)?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(run_dashboard(
                keys,
                &broker,
                &data_dir(&cli.dir),
                listen,
                request_link,
            ))
        }
        Cmd::Status => {
            let keys = load_keys(&cli.dir, cli.insecure_no_passphrase)?;
            println!("provider key: {}", keys.public().to_hex());
            println!("inbox id:     {}", keys.public().opaque_id());
            let consents = read_state(&keys, &data_dir(&cli.dir))?;
            if consents.is_empty() {
                println!("no consents yet");
            }
            for c in consents {
                let phase = match c.phase {
                    ConsentPhase::Active => "active".to_string(),
                    ConsentPhase::Revoked { erase_requested } => {
                        format!("revoked (erasure requested: {erase_requested})")
                    }
                    ConsentPhase::Expired => "expired".into(),
                    ConsentPhase::Erased => "erased (confirmed to the owner)".into(),
                    ConsentPhase::Ended => "ended (the device cut this provider off)".into(),
                };
                println!(
                    "consent {}: {phase}; device {}; fields {}; resolution {}; expires at {}; \
                     channel {}; epoch {}; readings {}",
                    c.consent,
                    c.device,
                    c.fields.join(","),
                    c.resolution,
                    c.expires_at,
                    c.channel.as_deref().unwrap_or("-"),
                    c.epoch.map(|e| e.to_string()).unwrap_or_else(|| "-".into()),
                    c.readings,
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::VerifyReceipt { file, owner } => {
            let owner = parse_public_key(&owner).ok_or("--owner must be 64 hex characters")?;
            let bytes = p1consent_provider::fsutil::read_limited(
                &file,
                p1consent_shared::consent::receipt::MAX_RECEIPT_JSON as u64,
            )?;
            let text = String::from_utf8(bytes).map_err(|_| "receipt is not UTF-8")?;
            match verify_receipt(&text, &owner) {
                Ok(r) => {
                    println!(
                        "receipt valid: consent {} for {} ({}), state {}",
                        r.record_id, r.controller.name, r.purpose, r.state
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("receipt INVALID: {e}");
                    Ok(ExitCode::from(2))
                }
            }
        }
    }
}

fn load_keys(dir: &Path, insecure: bool) -> Result<ProviderKeys, AnyError> {
    let path = key_path(dir);
    if !path.exists() {
        return Err(format!(
            "no key file at {}; run `p1consent-provider init` first",
            path.display()
        )
        .into());
    }
    if !ProviderKeys::file_is_protected(&path)? {
        if !insecure {
            eprintln!("warning: {} is not passphrase-protected", path.display());
        }
        return Ok(ProviderKeys::load(&path, None)?);
    }
    let pass = match std::env::var("P1C_PROVIDER_PASSPHRASE") {
        Ok(p) => zeroize::Zeroizing::new(p),
        Err(_) => prompt("passphrase: ")?,
    };
    Ok(ProviderKeys::load(&path, Some(&pass))?)
}

fn new_passphrase() -> Result<zeroize::Zeroizing<String>, AnyError> {
    if let Ok(p) = std::env::var("P1C_PROVIDER_PASSPHRASE") {
        if p.is_empty() {
            return Err("P1C_PROVIDER_PASSPHRASE is empty".into());
        }
        return Ok(zeroize::Zeroizing::new(p));
    }
    let a = prompt("new passphrase: ")?;
    let b = prompt("repeat passphrase: ")?;
    if *a != *b {
        return Err("the passphrases differ".into());
    }
    if a.len() < 8 {
        return Err("use a passphrase of at least 8 characters".into());
    }
    Ok(a)
}

/// Reads a line from the terminal without echo (falls back to plain stdin).
fn prompt(label: &str) -> Result<zeroize::Zeroizing<String>, AnyError> {
    eprint!("{label}");
    std::io::stderr().flush()?;
    let stty = |arg: &str| {
        std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let hidden = stty("-echo");
    let mut line = zeroize::Zeroizing::new(String::new());
    let res = std::io::stdin().read_line(&mut line);
    if hidden {
        stty("echo");
        eprintln!();
    }
    res?;
    let trimmed = zeroize::Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_string());
    Ok(trimmed)
}

fn parse_resolution(s: &str) -> Result<Resolution, AnyError> {
    if let Ok(n) = s.parse::<u32>() {
        return Resolution::from_seconds(n).map_err(|e| e.to_string().into());
    }
    Resolution::ALL
        .into_iter()
        .find(|r| r.name() == s)
        .ok_or_else(|| format!("unknown resolution {s}").into())
}

/// `90d`, `12h`, `30m`, `45s` or plain seconds.
fn parse_duration(s: &str) -> Result<u64, AnyError> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('d') => (&s[..s.len() - 1], 86_400),
        Some('h') => (&s[..s.len() - 1], 3600),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('s') => (&s[..s.len() - 1], 1),
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s}"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("duration {s} too large").into())
}

async fn listen(
    keys: ProviderKeys,
    broker: &str,
    dir: &Path,
    format: Format,
    out: Option<PathBuf>,
) -> Result<ExitCode, AnyError> {
    let mut sink = ReadingSink {
        out: match &out {
            Some(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
            None => Box::new(std::io::stdout()),
        },
        format,
        csv_header: None,
    };
    let mut provider = Provider::connect(keys, broker, dir)?;
    eprintln!(
        "listening as {} on {broker} ({} consent(s) known)",
        provider.public().opaque_id(),
        provider.consents().len()
    );
    let mut ended: Option<u8> = None;
    loop {
        let ev = tokio::select! {
            ev = provider.next_event() => ev?,
            _ = tokio::signal::ctrl_c() => {
                // Keep what the broker already handed over (it will not send it again).
                for ev in provider.close()? {
                    sink.write(&ev)?;
                }
                eprintln!("stopped");
                return Ok(ExitCode::SUCCESS);
            }
        };
        sink.write(&ev)?;
        if let Some(line) = dashboard::describe(&ev) {
            eprintln!("{line}");
        }
        match &ev {
            ProviderEvent::Revoked { .. } => ended = Some(EXIT_REVOKED),
            ProviderEvent::Expired { .. } => {
                ended.get_or_insert(EXIT_EXPIRED);
            }
            _ => {}
        }
        if let Some(code) = ended
            && !provider.has_active()
        {
            // Make sure an erasure confirmation reached the broker before leaving.
            let flushed = provider.flush(Duration::from_secs(10)).await;
            while let Ok(Some(ev)) =
                tokio::time::timeout(Duration::from_millis(1), provider.next_event())
                    .await
                    .map(Result::ok)
            {
                if let ProviderEvent::Erased { .. } = ev
                    && let Some(line) = dashboard::describe(&ev)
                {
                    eprintln!("{line}");
                }
            }
            if let Err(e) = flushed {
                eprintln!("warning: {e}");
            }
            eprintln!(
                "no active consent left: {}",
                if code == EXIT_REVOKED {
                    "consent revoked"
                } else {
                    "consent expired"
                }
            );
            return Ok(ExitCode::from(code));
        }
    }
}

/// Where `listen` writes readings: JSON lines, or CSV rows under a header taken from the first
/// reading's keys.
struct ReadingSink {
    out: Box<dyn Write>,
    format: Format,
    csv_header: Option<Vec<String>>,
}

impl ReadingSink {
    /// Writes the event if it is a reading (other events are not data).
    fn write(&mut self, ev: &ProviderEvent) -> Result<(), AnyError> {
        let ProviderEvent::Reading {
            consent,
            seq,
            timestamp_ms,
            payload,
        } = ev
        else {
            return Ok(());
        };
        let line = ReadingLine {
            consent: consent.to_hex(),
            seq: *seq,
            timestamp_ms: *timestamp_ms,
            payload,
        };
        let value = serde_json::to_value(&line)?;
        match self.format {
            Format::Json => writeln!(self.out, "{value}")?,
            Format::Csv => write_csv(&mut self.out, &mut self.csv_header, &value)?,
        }
        self.out.flush()?;
        Ok(())
    }
}

fn write_csv(
    sink: &mut dyn Write,
    header: &mut Option<Vec<String>>,
    value: &serde_json::Value,
) -> std::io::Result<()> {
    // Columns: consent, seq, timestamp_ms, then the payload's keys (first reading decides).
    let payload = value.get("payload").and_then(|p| p.as_object());
    let first = header.is_none();
    let cols = header.get_or_insert_with(|| {
        let mut c: Vec<String> = vec!["consent".into(), "seq".into(), "timestamp_ms".into()];
        if let Some(p) = payload {
            c.extend(p.keys().cloned());
        }
        c
    });
    if first {
        writeln!(sink, "{}", cols.join(","))?;
    }
    let cell = |v: Option<&serde_json::Value>| -> String {
        match v {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(s)) => csv_quote(s),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(serde_json::Value::Bool(b)) => b.to_string(),
            Some(other) => csv_quote(&other.to_string()),
        }
    };
    let row: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i < 3 {
                cell(value.get(c))
            } else {
                cell(payload.and_then(|p| p.get(c)))
            }
        })
        .collect();
    writeln!(sink, "{}", row.join(","))
}

fn csv_quote(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn run_dashboard(
    keys: ProviderKeys,
    broker: &str,
    dir: &Path,
    listen: SocketAddr,
    request_link: Option<String>,
) -> Result<ExitCode, AnyError> {
    if let Some(l) = &request_link {
        // Refuse to show something that is not a valid request of ours.
        let now = p1consent_provider::now_ms() / 1000;
        let req = p1consent_shared::consent::SignedRequest::from_link(l, now)
            .map_err(|e| format!("--request-link: {e}"))?;
        if req.content().provider_kem != *keys.kem().public() {
            return Err("--request-link is a request of another provider".into());
        }
    }
    let (listener, addr) = dashboard::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let mut provider = Provider::connect(keys, broker, dir)?;
    let shared = Arc::new(Mutex::new(Dashboard::new(
        provider.public().opaque_id().to_string(),
        broker.to_string(),
        provider.consents(),
        request_link,
    )));
    let mut server = tokio::spawn(dashboard::serve(listener, shared.clone()));
    println!("dashboard: http://{addr}/");
    std::io::stdout().flush()?;
    eprintln!(
        "dashboard for {} on {broker} ({} consent(s) known)",
        provider.public().opaque_id(),
        provider.consents().len()
    );
    let mut receiving = HashSet::new();
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            ev = provider.next_event() => {
                let ev = ev?;
                if let ProviderEvent::Reading { consent, .. } = &ev
                    && receiving.insert(*consent)
                {
                    eprintln!("RECEIVING consent {consent}: first reading");
                }
                if let Some(line) = dashboard::describe(&ev) {
                    eprintln!("{line}");
                }
                let consents = provider.consents();
                shared
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .apply(&ev, consents, p1consent_provider::now_ms());
            }
            res = &mut server => {
                let _ = provider.close();
                return Err(match res {
                    Ok(Ok(())) => "the web server stopped".into(),
                    Ok(Err(e)) => format!("the web server failed: {e}").into(),
                    Err(e) => format!("the web server failed: {e}").into(),
                });
            }
            _ = &mut stop => {
                // Keep what the broker already handed over (stored by the provider).
                provider.close()?;
                eprintln!("stopped");
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_has_one_header_from_the_first_reading() {
        let mut out = Vec::new();
        let mut header = None;
        let row = |seq: u64, kw: f64| {
            serde_json::json!({
                "consent": "c1",
                "seq": seq,
                "timestamp_ms": 5,
                "payload": {"type": "reading", "v": 1, "time_ms": 7, "power_delivered_kw": kw},
            })
        };
        write_csv(&mut out, &mut header, &row(1, 0.5)).unwrap();
        write_csv(&mut out, &mut header, &row(2, 1.25)).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "consent,seq,timestamp_ms,power_delivered_kw,time_ms,type,v\n\
             c1,1,5,0.5,7,reading,1\n\
             c1,2,5,1.25,7,reading,1\n"
        );
        assert_eq!(csv_quote("a,\"b\""), "\"a,\"\"b\"\"\"");
    }
}

//! `p1consent-wallet`: the owner's wallet on the command line.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use p1consent_shared::consent::{ConsentState, ConsentStatus, Field, FieldSet, Resolution};
use p1consent_wallet::{
    ConsentLine, ExportFormat, GrantScope, Wallet, WalletError, WalletOptions,
    summary::date,
    wallet::{Rejected, now_s},
};
use serde::Serialize;
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "p1consent-wallet",
    version,
    about = "P1 Consent wallet: decide who may use your smart meter's data"
)]
struct Cli {
    /// Where the wallet keeps its keys and state.
    #[arg(long, global = true, env = "P1C_WALLET_DIR")]
    data_dir: Option<PathBuf>,
    /// Broker URL (mqtt://host:port or mqtts://…); default: the one from the first pairing.
    #[arg(long, global = true, env = "P1C_WALLET_BROKER")]
    broker: Option<String>,
    /// Machine-readable output (JSON).
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for the broker and the meter.
    #[arg(long, global = true, default_value_t = 20)]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new wallet (a new owner identity).
    Init,
    /// Pair a meter: the pairing link text or the path of a QR code image.
    Pair { code: String },
    /// Check a provider's request link and show what it asks for.
    Open { link: String },
    /// List the requests you opened and have not answered.
    Requests,
    /// Allow a request for one of your meters.
    Grant {
        request_id: String,
        /// The meter (id prefix or label).
        #[arg(long)]
        device: String,
        /// Allow only these of the requested fields (comma-separated names, e.g.
        /// energy_delivered,gas).
        #[arg(long, value_delimiter = ',')]
        fields: Option<Vec<String>>,
        /// A coarser resolution than requested: raw, ten_seconds, minute, quarter_hour, hour, day.
        #[arg(long)]
        resolution: Option<String>,
        /// End the consent after this many days (no later than requested).
        #[arg(long)]
        days: Option<u64>,
    },
    /// Decline a request (nothing is sent to the provider).
    Decline { request_id: String },
    /// Withdraw a consent; --erase also asks the provider to delete what it has.
    Revoke {
        consent_id: String,
        #[arg(long)]
        erase: bool,
    },
    /// Unpair a meter: all its consents end and the meter starts over.
    Unpair { device: String },
    /// Your meters and consents, read back from the broker.
    Consents {
        /// Use only what this wallet has stored (no broker).
        #[arg(long)]
        offline: bool,
    },
    /// Show the consent logs.
    Log {
        /// Verify every entry again (signatures, chains, rules).
        #[arg(long)]
        verify: bool,
        /// Use only what this wallet has stored (no broker).
        #[arg(long)]
        offline: bool,
    },
    /// Print the signed consent receipt (JSON).
    Receipt { consent_id: String },
    /// Rebuild this wallet's state from the broker (for a second wallet with the same keys).
    Sync,
    /// Your own view of your meter: its readings, read by this wallet.
    #[command(subcommand)]
    Own(OwnCommand),
}

#[derive(Subcommand)]
enum OwnCommand {
    /// Let this wallet read your meter (a consent to a reader key of your own; idempotent).
    Enable {
        /// The meter (id prefix or label); may be left out when one meter is paired.
        #[arg(long)]
        device: Option<String>,
    },
    /// The power used right now and the energy used today (since local midnight).
    Show {
        #[arg(long)]
        device: Option<String>,
        /// Seconds to listen for new readings first.
        #[arg(long, default_value_t = 3)]
        listen: u64,
    },
    /// Save your own readings (15-minute aggregates older than two days, then every reading).
    Export {
        #[arg(long)]
        device: Option<String>,
        /// csv or json.
        #[arg(long, default_value = "csv")]
        format: String,
        /// The file to write (replaced; readable by you only).
        #[arg(long)]
        out: PathBuf,
    },
    /// Fold readings older than two days into 15-minute aggregates now (the reader also does
    /// it when it starts and daily).
    Compact,
}

fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("p1consent-wallet");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".local/share/p1consent-wallet");
    }
    PathBuf::from("p1consent-wallet")
}

#[derive(Serialize)]
struct DeviceLine {
    device: String,
    device_id: String,
    label: String,
    paired: bool,
    last_rotation_epoch: Option<u32>,
}

fn print_state(w: &Wallet, state: &ConsentState, as_json: bool) {
    let devices: Vec<DeviceLine> = state
        .devices
        .values()
        .map(|d| DeviceLine {
            device: d.device.to_hex(),
            device_id: d.device.opaque_id().to_hex(),
            label: d.label.clone(),
            paired: d.is_paired(),
            last_rotation_epoch: d.last_rotation.map(|r| r.epoch),
        })
        .collect();
    // The owner's own view is not someone with access (as in the app): see `own`.
    let consents: Vec<ConsentLine> = state
        .consents
        .values()
        .filter(|c| !w.is_own_view(c))
        .map(ConsentLine::of)
        .collect();
    if as_json {
        println!("{}", json!({ "devices": devices, "consents": consents }));
        return;
    }
    if devices.is_empty() {
        println!("No meters paired yet.");
    }
    for d in &devices {
        println!(
            "Meter {} \"{}\"{}",
            &d.device_id[..12],
            d.label,
            if d.paired { "" } else { " (unpaired)" }
        );
    }
    if consents.is_empty() {
        println!("No consents.");
    } else {
        println!("Consents:");
        for c in &consents {
            println!("  {c}");
        }
    }
}

fn scope(
    fields: Option<Vec<String>>,
    resolution: Option<String>,
    days: Option<u64>,
) -> Result<GrantScope, WalletError> {
    let fields = match fields {
        None => None,
        Some(names) => {
            let mut set = FieldSet::empty();
            for n in names {
                let f = Field::from_name(n.trim()).ok_or_else(|| {
                    WalletError::BadScope(format!("unknown field {:?}", n.trim()))
                })?;
                set.insert(f);
            }
            Some(set)
        }
    };
    let resolution = match resolution {
        None => None,
        Some(r) => Some(
            Resolution::ALL
                .into_iter()
                .find(|x| x.name() == r.trim())
                .ok_or_else(|| WalletError::BadScope(format!("unknown resolution {r:?}")))?,
        ),
    };
    let expires_at = days.map(|d| now_s().saturating_add(d.saturating_mul(86_400)));
    Ok(GrantScope {
        fields,
        resolution,
        expires_at,
    })
}

fn print_rejected(rejected: &[Rejected]) {
    for r in rejected {
        eprintln!(
            "warning: refused an entry in thread {} ({} #{}): {}",
            &r.thread_id[..12],
            r.role.as_deref().unwrap_or("?"),
            r.seq.map(|s| s.to_string()).unwrap_or_else(|| "?".into()),
            r.error
        );
    }
}

async fn run(cli: Cli) -> Result<(), WalletError> {
    let dir = cli.data_dir.clone().unwrap_or_else(default_dir);
    let opts = WalletOptions {
        broker: cli.broker.clone(),
        timeout: Duration::from_secs(cli.timeout.max(1)),
    };
    let secrets = Wallet::file_secrets(&dir);
    if let Command::Init = cli.command {
        let w = Wallet::init(&dir, secrets, opts)?;
        if cli.json {
            println!(
                "{}",
                json!({ "owner": w.owner().to_hex(), "data_dir": dir })
            );
        } else {
            println!(
                "Created a new wallet in {} (owner {}).",
                dir.display(),
                &w.owner().opaque_id().to_hex()[..12]
            );
        }
        return Ok(());
    }
    let mut w = Wallet::open(&dir, secrets, opts)?;
    match cli.command {
        Command::Init => {}
        Command::Pair { code } => {
            let p = w.pair(&code).await?;
            if cli.json {
                println!("{}", json!(p));
            } else {
                println!(
                    "Paired with meter \"{}\" ({}) via {}.",
                    p.label,
                    &p.device_id[..12],
                    p.broker
                );
            }
        }
        Command::Open { link } => {
            let s = w.open_request(&link)?;
            if cli.json {
                println!("{}", json!(s));
            } else {
                println!("{s}");
                println!(
                    "\nTo allow: p1consent-wallet grant {} --device <meter>",
                    &s.request_id[..12]
                );
                println!(
                    "To decline: p1consent-wallet decline {}",
                    &s.request_id[..12]
                );
            }
        }
        Command::Requests => {
            let list = w.pending_requests();
            if cli.json {
                println!("{}", json!(list));
            } else if list.is_empty() {
                println!("No open requests.");
            } else {
                for r in list {
                    println!(
                        "{}  {} — {} (answer before {})",
                        &r.request_id[..12],
                        r.controller,
                        r.purpose,
                        date(r.link_expires_at)
                    );
                }
            }
        }
        Command::Grant {
            request_id,
            device,
            fields,
            resolution,
            days,
        } => {
            let scope = scope(fields, resolution, days)?;
            let cid = w.grant_with(&request_id, &device, scope).await?;
            if cli.json {
                println!("{}", json!({ "consent_id": cid.to_hex() }));
            } else {
                println!(
                    "Granted (consent {}). The meter now sends the provider its key.",
                    &cid.to_hex()[..12]
                );
            }
        }
        Command::Decline { request_id } => {
            let s = w.decline(&request_id)?;
            if cli.json {
                println!("{}", json!({ "declined": s.request_id }));
            } else {
                println!("Declined the request of {}.", s.controller);
            }
        }
        Command::Revoke { consent_id, erase } => {
            let cid = w.revoke(&consent_id, erase).await?;
            if cli.json {
                println!(
                    "{}",
                    json!({ "revoked": cid.to_hex(), "erase_requested": erase })
                );
            } else {
                println!(
                    "Revoked consent {}{}. The meter changes its key so the provider gets nothing new.",
                    &cid.to_hex()[..12],
                    if erase { " and asked for erasure" } else { "" }
                );
            }
        }
        Command::Unpair { device } => {
            let d = w.unpair(&device).await?;
            if cli.json {
                println!("{}", json!({ "unpaired": d.to_hex() }));
            } else {
                println!(
                    "Unpaired meter {}; all its consents have ended.",
                    &d.opaque_id().to_hex()[..12]
                );
            }
        }
        Command::Consents { offline } => {
            if !offline {
                let rejected = w.refresh().await?;
                print_rejected(&rejected);
            }
            print_state(&w, &w.state_at(now_s()), cli.json);
        }
        Command::Log { verify, offline } => {
            if !offline {
                let rejected = w.refresh().await?;
                print_rejected(&rejected);
            }
            let report = w.verify_log();
            let bad: usize = report.iter().map(|t| t.rejected.len()).sum();
            if cli.json {
                println!("{}", json!({ "threads": report, "verified": bad == 0 }));
            } else {
                for t in &report {
                    if t.title.is_empty() {
                        println!("Thread {} ({})", &t.thread_id[..12], t.kind);
                    } else {
                        println!("Thread {} ({}: {})", &t.thread_id[..12], t.kind, t.title);
                    }
                    for e in &t.entries {
                        println!(
                            "  {} #{:<3} {}  {}",
                            e.role,
                            e.seq,
                            date(e.time_ms / 1000),
                            e.event
                        );
                    }
                    for r in &t.rejected {
                        println!("  REFUSED {}", r.error);
                    }
                }
                if verify {
                    if bad == 0 {
                        println!("All {} thread(s) verify.", report.len());
                    } else {
                        println!("{bad} entries do not verify.");
                    }
                }
            }
            if verify && bad > 0 {
                return Err(WalletError::Corrupt {
                    path: dir.join(p1consent_wallet::wallet::STATE_FILE),
                    reason: format!("{bad} stored log entries do not verify"),
                });
            }
        }
        Command::Receipt { consent_id } => {
            println!("{}", w.receipt(&consent_id)?);
        }
        Command::Sync => {
            let r = w.sync().await?;
            print_rejected(&r.rejected);
            let state = w.state_at(now_s());
            if cli.json {
                println!("{}", json!(r));
            } else {
                let active = state
                    .consents
                    .values()
                    .filter(|c| c.status == ConsentStatus::Active && !w.is_own_view(c))
                    .count();
                println!(
                    "Synchronised {} thread(s), {} entries: {} meter(s), {} active consent(s).",
                    r.threads,
                    r.entries,
                    state.devices.values().filter(|d| d.is_paired()).count(),
                    active
                );
            }
        }
        Command::Own(cmd) => own(&mut w, cmd, cli.json).await?,
    }
    Ok(())
}

/// The meter an `own` command is about: the one given, or the only paired one.
fn pick_device(w: &Wallet, device: Option<String>) -> Result<String, WalletError> {
    if let Some(d) = device {
        return Ok(d);
    }
    let paired: Vec<String> = w
        .state_at(now_s())
        .devices
        .values()
        .filter(|d| d.is_paired())
        .map(|d| d.device.opaque_id().to_hex())
        .collect();
    match paired.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(WalletError::OwnView(
            "no meter is paired: run `p1consent-wallet pair` first".into(),
        )),
        _ => Err(WalletError::OwnView(
            "more than one meter is paired: choose one with --device".into(),
        )),
    }
}

/// Local midnight of today (Unix ms), in the system's time zone.
fn local_midnight_ms() -> u64 {
    use chrono::{Local, TimeZone};
    let today = Local::now().date_naive();
    today
        .and_hms_opt(0, 0, 0)
        .and_then(|t| Local.from_local_datetime(&t).earliest())
        .map(|t| t.timestamp_millis().max(0) as u64)
        .unwrap_or(0)
}

fn local_time(ms: u64) -> String {
    use chrono::{Local, TimeZone};
    Local
        .timestamp_millis_opt(ms as i64)
        .earliest()
        .map(|t| t.format("%H:%M:%S").to_string())
        .unwrap_or_else(|| "?".into())
}

fn power_text(kw: f64) -> String {
    if kw.abs() >= 1.0 {
        format!("{kw:.2} kW")
    } else {
        format!("{:.0} W", kw * 1000.0)
    }
}

async fn own(w: &mut Wallet, cmd: OwnCommand, as_json: bool) -> Result<(), WalletError> {
    match cmd {
        OwnCommand::Enable { device } => {
            let device = pick_device(w, device)?;
            let cid = w.enable_own_view(&device).await?;
            if as_json {
                println!("{}", json!({ "consent_id": cid.to_hex() }));
            } else {
                println!(
                    "Your own view of the meter is on (consent {}). See it with `p1consent-wallet own show`.",
                    &cid.to_hex()[..12]
                );
            }
        }
        OwnCommand::Show { device, listen } => {
            let device = pick_device(w, device)?;
            if w.own_view_of(&device)?.is_none() {
                return Err(WalletError::OwnView(
                    "it is not on for this meter: run `p1consent-wallet own enable` first".into(),
                ));
            }
            let mut reader = w.own_reader()?;
            let run = reader.run_for(Duration::from_secs(listen)).await;
            reader.close()?;
            run?;
            let since = local_midnight_ms();
            let latest = w.own_latest(&device)?;
            let today = w.own_consumption_since(&device, since)?;
            if as_json {
                println!(
                    "{}",
                    json!({
                        "power_kw": latest.as_ref().and_then(|r| r.power_delivered_kw),
                        "returned_kw": latest.as_ref().and_then(|r| r.power_returned_kw),
                        "updated_ms": latest.as_ref().map(|r| r.timestamp_ms),
                        "today_kwh": today,
                        "since_ms": since,
                    })
                );
            } else {
                match &latest {
                    Some(r) => {
                        let now = match (r.power_delivered_kw, r.power_returned_kw) {
                            (Some(d), Some(ret)) if ret > 0.0 && ret >= d => {
                                format!("Sending {} back to the grid", power_text(ret))
                            }
                            (Some(d), _) => format!("Using {} right now", power_text(d)),
                            _ => "No power in the latest reading".to_string(),
                        };
                        println!("{now} (reading of {}).", local_time(r.timestamp_ms));
                    }
                    None => println!("No reading from your meter in the last day."),
                }
                match today {
                    Some(k) => println!("Used today: {k:.3} kWh."),
                    None => println!("Used today: not known yet (fewer than two readings)."),
                }
            }
        }
        OwnCommand::Export {
            device,
            format,
            out,
        } => {
            let device = pick_device(w, device)?;
            let format: ExportFormat = format.parse()?;
            let rows = w.own_rows(&device, 0)?.len();
            let bytes = w.export_own_data_to(&device, format, &out)?;
            if as_json {
                println!("{}", json!({ "path": out, "rows": rows, "bytes": bytes }));
            } else {
                println!("Saved {rows} row(s) of your own data to {}.", out.display());
            }
        }
        OwnCommand::Compact => {
            let r = w.own_compact()?;
            if as_json {
                println!("{}", json!(r));
            } else {
                println!(
                    "Folded {} reading(s) into 15-minute aggregates; {} aggregate(s) and {} recent reading(s) kept; {} damaged line(s) set aside.",
                    r.folded, r.aggregates, r.kept_raw, r.damaged
                );
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json_errors = cli.json;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json_errors {
                println!("{}", json!({ "error": e.to_string() }));
            }
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

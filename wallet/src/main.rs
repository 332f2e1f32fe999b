//! `p1consent-wallet`: the owner's wallet on the command line.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use p1consent_shared::consent::{ConsentState, ConsentStatus};
use p1consent_wallet::{
    ConsentLine, Wallet, WalletError, WalletOptions,
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
        #[arg(long)]
        device: String,
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

fn print_state(state: &ConsentState, as_json: bool) {
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
    let consents: Vec<ConsentLine> = state.consents.values().map(ConsentLine::of).collect();
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
                println!("To decline: p1consent-wallet decline {}", &s.request_id[..12]);
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
        Command::Grant { request_id, device } => {
            let cid = w.grant(&request_id, &device).await?;
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
                println!("{}", json!({ "revoked": cid.to_hex(), "erase_requested": erase }));
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
            print_state(&w.state_at(now_s()), cli.json);
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
                    println!("Thread {} ({})", &t.thread_id[..12], t.kind);
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
                    .filter(|c| c.status == ConsentStatus::Active)
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

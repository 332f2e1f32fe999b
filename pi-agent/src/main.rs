//! `pi-agent`: the P1 Consent daemon and its owner-facing commands.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use pi_agent::{
    agent,
    config::{AgentConfig, SourceKind},
    identity::DeviceIdentity,
    pairing, qr,
    status::Status,
};

#[derive(Parser)]
#[command(
    name = "pi-agent",
    version,
    about = "P1 Consent agent: shares your smart meter's data only with whom you allow"
)]
struct Cli {
    /// Configuration file (TOML). Without it: documented defaults plus P1C_* variables.
    #[arg(long, short, global = true, env = "P1C_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for identity, state and status (overrides the config).
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (read the meter, follow consent, publish).
    Run {
        /// External broker URL (mqtt:// or mqtts://); default: the embedded broker.
        #[arg(long)]
        broker: Option<String>,
        /// Where the embedded broker listens (default 0.0.0.0:1883).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Broker address to put in the pairing code (what the wallet connects to).
        #[arg(long)]
        advertise: Option<String>,
        /// Use the simulated DSMR 5 meter instead of the serial port.
        #[arg(long, conflicts_with = "replay")]
        simulate: bool,
        /// Replay a capture file instead of reading the serial port.
        #[arg(long)]
        replay: Option<PathBuf>,
        /// With --replay: as fast as possible instead of the recorded pace, once.
        #[arg(long, requires = "replay")]
        fast: bool,
        /// Serial device (default /dev/ttyUSB0).
        #[arg(long)]
        serial: Option<PathBuf>,
    },
    /// Show a fresh pairing code (QR in the terminal, SVG file, and text).
    Pair,
    /// What the agent is doing: meter, pairing, broker, consents, outbox.
    Status {
        /// Print the raw status JSON.
        #[arg(long)]
        json: bool,
    },
    /// Parse telegram files and print them as JSON (one object per telegram).
    Parse {
        /// Do not check CRCs.
        #[arg(long)]
        no_crc: bool,
        /// Indent the JSON.
        #[arg(long)]
        pretty: bool,
        /// Files with telegrams or raw captures; `-` reads stdin.
        #[arg(required = true)]
        files: Vec<String>,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    // Under systemd, journald adds its own timestamps.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().with_ansi(false).init();
    } else {
        builder.init();
    }
}

fn load_config(cli: &Cli) -> Result<AgentConfig, String> {
    let mut cfg = AgentConfig::load(cli.config.as_deref()).map_err(|e| e.to_string())?;
    if let Some(d) = &cli.state_dir {
        cfg.state_dir = d.clone();
    }
    Ok(cfg)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pi-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    match &cli.command {
        Command::Parse {
            no_crc,
            pretty,
            files,
        } => {
            let opts = p1consent_shared::dsmr::ParseOptions { check_crc: !no_crc };
            let mut ok = true;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            for f in files {
                let data = if f == "-" {
                    let mut v = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)
                        .map_err(|e| format!("stdin: {e}"))?;
                    v
                } else {
                    match std::fs::read(f) {
                        Ok(d) => d,
                        Err(e) => {
                            eprintln!("{f}: cannot read: {e}");
                            ok = false;
                            continue;
                        }
                    }
                };
                ok &= p1consent_shared::dsmr::report::json_report(
                    f,
                    &data,
                    opts,
                    *pretty,
                    &mut out,
                    &mut std::io::stderr(),
                )
                .map_err(|e| format!("cannot write output: {e}"))?;
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Status { json } => {
            let cfg = load_config(&cli)?;
            let path = cfg.status_path();
            let text = std::fs::read_to_string(&path).map_err(|_| {
                format!(
                    "no status at {}: the agent has not run with this state directory yet",
                    path.display()
                )
            })?;
            if *json {
                println!("{text}");
            } else {
                let s: Status = serde_json::from_str(&text)
                    .map_err(|e| format!("status file is damaged: {e}"))?;
                print!("{}", s.render(pi_agent::source::now_unix_ms()));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Pair => {
            let cfg = load_config(&cli)?;
            let (id, _) = DeviceIdentity::load_or_create(
                &cfg.identity_path(),
                cfg.kem_suite().map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?;
            let now_ms = pi_agent::source::now_unix_ms();
            let now = now_ms / 1000;
            // A running agent knows its real broker address (a `run --listen` or `--advertise`
            // the config file does not have); without one, the configuration decides.
            let running_hint = std::fs::read_to_string(cfg.status_path())
                .ok()
                .and_then(|text| serde_json::from_str::<Status>(&text).ok())
                .filter(|s| !s.is_stale(now_ms))
                .and_then(|s| s.broker_hint);
            let hint = running_hint.unwrap_or_else(|| agent::broker_hint(&cfg));
            let link = pairing::new_offer(
                &cfg.offer_path(),
                id.public(),
                &hint,
                &cfg.pairing.label,
                now + cfg.pairing.offer_ttl_s,
            )?;
            qr::show_pairing(&link, &cfg.qr_svg_path());
            println!(
                "Valid for {} minutes. A running agent picks it up by itself.",
                cfg.pairing.offer_ttl_s / 60
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            broker,
            listen,
            advertise,
            simulate,
            replay,
            fast,
            serial,
        } => {
            init_logging();
            let mut cfg = load_config(&cli)?;
            if let Some(b) = broker {
                cfg.broker.url = Some(b.clone());
            }
            if let Some(l) = listen {
                cfg.broker.embedded_listen = *l;
            }
            if let Some(a) = advertise {
                cfg.broker.advertise = Some(a.clone());
            }
            if *simulate {
                cfg.meter.source = SourceKind::Simulator;
            }
            if let Some(r) = replay {
                cfg.meter.source = SourceKind::Replay;
                cfg.meter.replay_file = Some(r.clone());
                if *fast {
                    cfg.meter.replay_recorded_pace = false;
                    cfg.meter.replay_loop = false;
                }
            }
            if let Some(s) = serial {
                cfg.meter.serial_path = s.clone();
            }
            cfg.validate().map_err(|e| e.to_string())?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the runtime: {e}"))?;
            rt.block_on(async move {
                let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    wait_for_signal().await;
                    let _ = stop_tx.send(true);
                });
                agent::run(cfg, stop_rx).await.map_err(|e| e.to_string())
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

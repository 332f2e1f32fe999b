//! `p1consent-loadgen`: meters, providers, or a whole run with a table (see the library docs).

use std::{io::BufRead, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};
use p1consent_loadgen::{
    LoadError,
    ids::Ids,
    meters::{MetersArgs, run_meters},
    parse_duration,
    providers::{ProvidersArgs, run_providers},
    report::RunReport,
    run::{READY_LINE, RESULT_PREFIX, RunArgs, run},
};
use p1consent_shared::{
    crypto::{KemSuite, OpaqueId},
    mqtt::BrokerUrl,
};

#[derive(Parser)]
#[command(
    name = "p1consent-loadgen",
    version,
    about = "P1 Consent load generator"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// The load's shape: the same options for a whole run and for each side of it.
#[derive(Args, Clone)]
struct Load {
    /// Number of meters.
    #[arg(long)]
    meters: u64,
    /// Providers authorised on every meter's channel.
    #[arg(long, default_value_t = 1)]
    providers_per_meter: u64,
    /// KEM suite of the providers' keys: x25519-sntrup761 (the project default) or x25519-mlkem768.
    #[arg(long, default_value = "x25519-sntrup761")]
    suite: String,
    /// Worker threads of the runtime (of each side's, for a whole run).
    #[arg(long, default_value_t = 2)]
    threads: u64,
}

/// What both sides of a run need to agree on.
#[derive(Args, Clone)]
struct Common {
    #[command(flatten)]
    load: Load,
    #[arg(long)]
    broker: String,
    /// Shared by both sides: every identity and key is derived from it (32 hex digits).
    #[arg(long)]
    run_id: String,
}

#[derive(Args, Clone)]
struct Sharding {
    /// Opening tasks of the providers (records of one meter always go to the same one).
    #[arg(long, default_value_t = 2)]
    shards: u64,
}

#[derive(Subcommand)]
enum Cmd {
    /// Simulate meters (prints one RESULT line of JSON).
    Meters {
        #[command(flatten)]
        common: Common,
        /// How long the meters produce, e.g. 60s, 10m.
        #[arg(long, value_parser = parse_duration)]
        duration: Duration,
        /// MQTT connections to spread the meters over (default: one per meter).
        #[arg(long)]
        conns: Option<u64>,
    },
    /// Run the providers until "stop" or end of input on stdin (prints READY, then RESULT).
    Providers {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        sharding: Sharding,
    },
    /// Broker + providers + meters as child processes; prints the table.
    Run {
        #[command(flatten)]
        load: Load,
        #[command(flatten)]
        sharding: Sharding,
        #[arg(long, value_parser = parse_duration, default_value = "60s")]
        duration: Duration,
        /// External broker; default: start Debian's mosquitto on a free port.
        #[arg(long)]
        broker: Option<String>,
        /// MQTT connections for the meters (default: one per meter).
        #[arg(long)]
        meter_conns: Option<u64>,
        /// CPU / memory sampling interval.
        #[arg(long, value_parser = parse_duration, default_value = "2s")]
        sample_every: Duration,
        /// Leave out the table header (when appending rows).
        #[arg(long)]
        no_header: bool,
        /// Also print the full report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn ids_of(c: &Common) -> Result<(Ids, BrokerUrl), LoadError> {
    let run = OpaqueId::from_hex(&c.run_id)
        .ok_or_else(|| LoadError::Arg("--run-id must be 32 hex digits".into()))?;
    let suite = KemSuite::from_name(&c.load.suite)
        .ok_or_else(|| LoadError::Arg(format!("unknown suite {:?}", c.load.suite)))?;
    let broker = c
        .broker
        .parse()
        .map_err(|e| LoadError::Arg(format!("--broker: {e}")))?;
    Ok((Ids::new(run, suite), broker))
}

fn runtime(threads: u64) -> Result<tokio::runtime::Runtime, LoadError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.clamp(1, 64) as usize)
        .enable_all()
        .build()?)
}

fn print_result<T: serde::Serialize>(r: &T) -> Result<(), LoadError> {
    let json = serde_json::to_string(r).map_err(|e| LoadError::Result {
        what: "own report",
        detail: e.to_string(),
    })?;
    println!("{RESULT_PREFIX}{json}");
    Ok(())
}

fn main_inner() -> Result<bool, LoadError> {
    match Cli::parse().command {
        Cmd::Meters {
            common,
            duration,
            conns,
        } => {
            let (ids, broker) = ids_of(&common)?;
            let args = MetersArgs {
                ids,
                meters: common.load.meters,
                providers: common.load.providers_per_meter,
                broker,
                duration,
                conns: conns.unwrap_or(common.load.meters),
            };
            let report = runtime(common.load.threads)?.block_on(run_meters(args))?;
            print_result(&report)?;
            Ok(true)
        }
        Cmd::Providers { common, sharding } => {
            let (ids, broker) = ids_of(&common)?;
            let args = ProvidersArgs {
                ids,
                meters: common.load.meters,
                providers: common.load.providers_per_meter,
                broker,
                shards: sharding.shards,
            };
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
            // "stop" or end of input on stdin ends the run.
            std::thread::spawn(move || {
                for line in std::io::stdin().lock().lines() {
                    match line {
                        Ok(l) if l.trim() == "stop" => break,
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                let _ = stop_tx.send(());
            });
            let rt = runtime(common.load.threads)?;
            let report = rt.block_on(async {
                let task = tokio::spawn(run_providers(
                    args,
                    ready_tx,
                    stop_rx,
                    Duration::from_secs(2),
                    Duration::from_secs(60),
                ));
                if ready_rx.await.is_ok() {
                    println!("{READY_LINE}");
                }
                task.await.map_err(|e| LoadError::Result {
                    what: "providers",
                    detail: e.to_string(),
                })?
            })?;
            print_result(&report)?;
            Ok(true)
        }
        Cmd::Run {
            load,
            sharding,
            duration,
            broker,
            meter_conns,
            sample_every,
            no_header,
            json,
        } => {
            raise_fd_limit();
            let args = RunArgs {
                exe: std::env::current_exe()?,
                meters: load.meters,
                providers_per_meter: load.providers_per_meter,
                duration,
                broker,
                meter_conns,
                suite: load.suite,
                shards: sharding.shards,
                threads: load.threads,
                sample_every,
            };
            let report = run(&args)?;
            if !no_header {
                println!("{}", RunReport::TABLE_HEADER);
            }
            println!("{}", report.table_row());
            if json {
                print_result(&report)?;
            }
            Ok(report.clean())
        }
    }
}

/// Raises the soft open-file limit to the hard one: 10,000 meters on their own connections
/// need 10,000 descriptors in the meters process and as many in mosquitto (children inherit).
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn main() -> ExitCode {
    match main_inner() {
        Ok(true) => ExitCode::SUCCESS,
        // The run was measured but not clean (loss, duplicates, refusals): the table says which.
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("p1consent-loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

//! `run`: a broker, the providers and the meters as child processes; samples CPU and memory
//! of each; collects both reports into a [`RunReport`].

use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdout, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use p1consent_shared::crypto::OpaqueId;
use p1consent_testkit::{find_mosquitto, free_port, wait_for_port};

use crate::{
    LoadError,
    meters::MetersReport,
    procstat::{self, ProcSample},
    providers::ProvidersReport,
    report::{RunReport, SideStats},
    unix_us,
};

/// Prefix of the one result line a child prints on stdout.
pub const RESULT_PREFIX: &str = "RESULT ";
/// Line the providers print once subscribed.
pub const READY_LINE: &str = "READY";

#[derive(Debug, Clone)]
pub struct RunArgs {
    /// The `p1consent-loadgen` binary to spawn the sides with.
    pub exe: PathBuf,
    pub meters: u64,
    pub providers_per_meter: u64,
    pub duration: Duration,
    /// External broker; `None` starts Debian's mosquitto.
    pub broker: Option<String>,
    /// MQTT connections for the meters (default: one per meter).
    pub meter_conns: Option<u64>,
    pub suite: String,
    /// Opening tasks in the providers process.
    pub shards: u64,
    /// Worker threads of each side's runtime.
    pub threads: u64,
    pub sample_every: Duration,
}

/// Debian's mosquitto on a free loopback port, configured for load: Debian's defaults
/// (persistence on, saved every 30 min) except a deeper queue and inflight window per client
/// (as testkit's), so a slow provider is not cut off at 1,000 queued messages. Not
/// testkit's `Mosquitto`: that one saves after every change, which is right for crash tests
/// and would measure the disk here.
struct Broker {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start() -> Result<Self, LoadError> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {d}/\nmax_queued_messages 100000\n\
                 max_inflight_messages 100\nmessage_size_limit 8388608\n\
                 log_dest file {d}/mosquitto.log\n",
                d = dir.path().display()
            ),
        )?;
        let child = Command::new(find_mosquitto())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut b = Self {
            child,
            port,
            _dir: dir,
        };
        if !wait_for_port(port, Duration::from_secs(30)) {
            let _ = b.child.kill();
            return Err(LoadError::Broker(format!(
                "mosquitto did not listen on {port}"
            )));
        }
        Ok(b)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills a child on every early return.
struct Guard(Option<Child>);

impl Guard {
    fn pid(&self) -> u32 {
        self.0.as_ref().map(Child::id).unwrap_or(0)
    }
    fn child(&mut self) -> Result<&mut Child, LoadError> {
        self.0.as_mut().ok_or(LoadError::Child {
            what: "child",
            detail: "already reaped".into(),
        })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Lines of a child's stdout, read on a thread.
fn lines(out: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_line(
    rx: &mpsc::Receiver<String>,
    what: &'static str,
    timeout: Duration,
    pred: impl Fn(&str) -> bool,
) -> Result<String, LoadError> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if pred(&l) => return Ok(l),
            Ok(_) => {}
            Err(e) => {
                return Err(LoadError::Child {
                    what,
                    detail: format!("no expected output ({e})"),
                });
            }
        }
    }
}

fn parse_result<T: serde::de::DeserializeOwned>(
    line: &str,
    what: &'static str,
) -> Result<T, LoadError> {
    serde_json::from_str(line.trim_start_matches(RESULT_PREFIX)).map_err(|e| LoadError::Result {
        what,
        detail: e.to_string(),
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

struct Series {
    name: &'static str,
    pid: u32,
    samples: Vec<(u64, ProcSample)>,
}

impl Series {
    fn take(&mut self) {
        if self.pid != 0
            && let Some(s) = procstat::sample(self.pid)
        {
            self.samples.push((unix_us() / 1000, s));
        }
    }

    fn stats(&self, t0_ms: u64, steady_from_ms: u64) -> SideStats {
        let tick = procstat::clock_ticks_per_s() as f64;
        let (Some(first), Some(last)) = (self.samples.first(), self.samples.last()) else {
            return SideStats {
                name: self.name.into(),
                pid: self.pid,
                ..Default::default()
            };
        };
        let wall_s = (last.0.saturating_sub(first.0)) as f64 / 1000.0;
        let cpu_s = last.1.cpu_ticks.saturating_sub(first.1.cpu_ticks) as f64 / tick;
        let start = self
            .samples
            .iter()
            .find(|(t, _)| *t >= steady_from_ms)
            .unwrap_or(first);
        SideStats {
            name: self.name.into(),
            pid: self.pid,
            cpu_pct: if wall_s > 0.0 {
                cpu_s / wall_s * 100.0
            } else {
                0.0
            },
            rss_start_kb: start.1.rss_kb,
            rss_end_kb: last.1.rss_kb,
            rss_max_kb: self.samples.iter().map(|s| s.1.rss_kb).max().unwrap_or(0),
            rss_series: self
                .samples
                .iter()
                .map(|(t, s)| (t.saturating_sub(t0_ms) as f64 / 1000.0, s.rss_kb))
                .collect(),
        }
    }
}

pub fn run(args: &RunArgs) -> Result<RunReport, LoadError> {
    let loadavg_start = loadavg();
    let own_broker = match &args.broker {
        Some(_) => None,
        None => Some(Broker::start()?),
    };
    let broker_url = match (&args.broker, &own_broker) {
        (Some(u), _) => u.clone(),
        (None, Some(b)) => format!("mqtt://127.0.0.1:{}", b.port),
        (None, None) => return Err(LoadError::Broker("no broker".into())),
    };
    let run_id = OpaqueId::random().to_hex();
    let common = |cmd: &mut Command| {
        cmd.arg("--meters")
            .arg(args.meters.to_string())
            .arg("--providers-per-meter")
            .arg(args.providers_per_meter.to_string())
            .arg("--broker")
            .arg(&broker_url)
            .arg("--run-id")
            .arg(&run_id)
            .arg("--suite")
            .arg(&args.suite)
            .arg("--threads")
            .arg(args.threads.to_string());
    };

    let mut cmd = Command::new(&args.exe);
    cmd.arg("providers");
    common(&mut cmd);
    cmd.arg("--shards")
        .arg(args.shards.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut providers = Guard(Some(cmd.spawn()?));
    let prov_out = lines(providers.child()?.stdout.take().ok_or(LoadError::Child {
        what: "providers",
        detail: "no stdout".into(),
    })?);
    wait_line(&prov_out, "providers", Duration::from_secs(300), |l| {
        l == READY_LINE
    })?;

    let t0_ms = unix_us() / 1000;
    let mut cmd = Command::new(&args.exe);
    cmd.arg("meters");
    common(&mut cmd);
    cmd.arg("--duration")
        .arg(format!("{}ms", args.duration.as_millis()))
        .arg("--conns")
        .arg(args.meter_conns.unwrap_or(args.meters).to_string())
        .stdout(Stdio::piped());
    let mut meters = Guard(Some(cmd.spawn()?));
    let meters_out = lines(meters.child()?.stdout.take().ok_or(LoadError::Child {
        what: "meters",
        detail: "no stdout".into(),
    })?);

    let mut series = vec![
        Series {
            name: "meters",
            pid: meters.pid(),
            samples: Vec::new(),
        },
        Series {
            name: "providers",
            pid: providers.pid(),
            samples: Vec::new(),
        },
        Series {
            name: "mosquitto",
            pid: own_broker.as_ref().map(|b| b.child.id()).unwrap_or(0),
            samples: Vec::new(),
        },
    ];
    // Sample until the meters have finished their schedule and exited.
    let mut meters_line = None;
    let mut next_sample = Instant::now();
    loop {
        if Instant::now() >= next_sample {
            for s in &mut series {
                s.take();
            }
            next_sample += args.sample_every;
        }
        if let Ok(l) = meters_out.recv_timeout(Duration::from_millis(50))
            && l.starts_with(RESULT_PREFIX)
        {
            meters_line = Some(l);
        }
        if let Some(status) = meters.child()?.try_wait()? {
            if !status.success() {
                return Err(LoadError::Child {
                    what: "meters",
                    detail: format!("exited with {status}"),
                });
            }
            break;
        }
    }
    let meters_line = match meters_line {
        Some(l) => l,
        None => wait_line(&meters_out, "meters", Duration::from_secs(5), |l| {
            l.starts_with(RESULT_PREFIX)
        })?,
    };
    let meters_report: MetersReport = parse_result(&meters_line, "meters")?;
    // Last readings of the providers and the broker while the providers still run (after
    // their result they are tearing down).
    for s in &mut series[1..] {
        s.take();
    }

    // Let the providers drain, then stop them; they report when idle.
    if let Some(stdin) = providers.child()?.stdin.as_mut() {
        let _ = stdin.write_all(b"stop\n");
        let _ = stdin.flush();
    }
    let prov_line = wait_line(&prov_out, "providers", Duration::from_secs(120), |l| {
        l.starts_with(RESULT_PREFIX)
    })?;
    let providers_report: ProvidersReport = parse_result(&prov_line, "providers")?;
    let _ = providers.child()?.wait();

    // Loss per reader: every record a meter sealed, at every provider.
    let n = args.meters;
    let mut lost = 0u64;
    let mut readers_with_loss = 0u64;
    for j in 0..args.providers_per_meter {
        for i in 0..n {
            let sent = meters_report.sent.get(i as usize).copied().unwrap_or(0);
            let opened = providers_report
                .opened
                .get((j * n + i) as usize)
                .copied()
                .unwrap_or(0);
            if opened < sent {
                lost += sent - opened;
                readers_with_loss += 1;
            }
        }
    }
    let expected = meters_report.sent_total * args.providers_per_meter;
    let span_s = providers_report
        .last_open_unix_ms
        .saturating_sub(providers_report.first_open_unix_ms) as f64
        / 1000.0;
    let throughput_per_s = if span_s > 0.0 {
        providers_report.opened_total as f64 / span_s
    } else {
        0.0
    };
    let sides = series
        .iter()
        .filter(|s| s.pid != 0)
        .map(|s| s.stats(t0_ms, meters_report.start_unix_ms))
        .collect();
    Ok(RunReport {
        meters: args.meters,
        providers_per_meter: args.providers_per_meter,
        meter_conns: meters_report.conns,
        duration_s: args.duration.as_secs_f64(),
        suite: args.suite.clone(),
        broker: if own_broker.is_some() {
            "mosquitto (started by run)".into()
        } else {
            broker_url.clone()
        },
        expected,
        opened: providers_report.opened_total,
        lost,
        readers_with_loss,
        duplicates: providers_report.duplicates,
        reordered: providers_report.reordered,
        throughput_per_s,
        meters_report,
        providers_report,
        sides,
        loadavg_start,
        loadavg_end: loadavg(),
    })
}

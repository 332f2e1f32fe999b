//! Result types of a run and the printed table.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::{meters::MetersReport, providers::ProvidersReport};

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl LatencySummary {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// CPU and resident memory of one process over the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SideStats {
    pub name: String,
    pub pid: u32,
    /// CPU time over the measured window, percent of one core.
    pub cpu_pct: f64,
    /// VmRSS at the first sample after the meters started their schedule, at the last sample,
    /// and the largest seen, kB.
    pub rss_start_kb: u64,
    pub rss_end_kb: u64,
    pub rss_max_kb: u64,
    /// (seconds since the run started, VmRSS kB) every sample.
    pub rss_series: Vec<(f64, u64)>,
}

/// Everything one `run` measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub meters: u64,
    pub providers_per_meter: u64,
    pub meter_conns: u64,
    pub duration_s: f64,
    pub suite: String,
    pub broker: String,
    /// Records the providers should have opened: Σ sent × providers.
    pub expected: u64,
    pub opened: u64,
    /// Expected records never opened, and the readers (meter × provider) missing any.
    pub lost: u64,
    pub readers_with_loss: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// Opened records per second between the first and the last one.
    pub throughput_per_s: f64,
    pub meters_report: MetersReport,
    pub providers_report: ProvidersReport,
    pub sides: Vec<SideStats>,
    /// /proc/loadavg (1, 5, 15 min) at start and end.
    pub loadavg_start: String,
    pub loadavg_end: String,
}

impl RunReport {
    /// True when every record sealed reached every provider exactly once and verified.
    pub fn clean(&self) -> bool {
        let p = &self.providers_report;
        self.lost == 0
            && self.duplicates == 0
            && self.reordered == 0
            && p.refused.is_empty()
            && p.decode_errors == 0
            && p.deliveries_failed == 0
            && self.opened == self.expected
    }

    pub const TABLE_HEADER: &'static str = "| meters | prov./meter | meter conns | duration | sealed | opened | lost | dup | msg/s | p50 ms | p99 ms | max ms | p99 ms from seq 5 | gen. late p99 ms | meters CPU %, RSS MB start→end (max) | providers CPU %, RSS MB | mosquitto CPU %, RSS MB | load avg start → end |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

    /// One markdown table row.
    pub fn table_row(&self) -> String {
        let ms = |us: u64| format!("{:.1}", us as f64 / 1000.0);
        let side = |name: &str| {
            self.sides
                .iter()
                .find(|s| s.name == name)
                .map(|s| {
                    format!(
                        "{:.1} %, {:.1}→{:.1} ({:.1})",
                        s.cpu_pct,
                        s.rss_start_kb as f64 / 1024.0,
                        s.rss_end_kb as f64 / 1024.0,
                        s.rss_max_kb as f64 / 1024.0
                    )
                })
                .unwrap_or_else(|| "n/a (external)".into())
        };
        let l = &self.providers_report.latency;
        format!(
            "| {} | {} | {} | {:.0} s | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} → {} |",
            self.meters,
            self.providers_per_meter,
            self.meter_conns,
            self.duration_s,
            self.meters_report.sent_total,
            self.opened,
            self.lost,
            self.duplicates + self.reordered,
            self.throughput_per_s,
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.max_us),
            ms(self.providers_report.latency_steady.p99_us),
            ms(self.meters_report.lateness.p99_us),
            side("meters"),
            side("providers"),
            side("mosquitto"),
            self.loadavg_start,
            self.loadavg_end,
        )
    }
}

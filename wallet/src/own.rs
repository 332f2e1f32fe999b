//! The owner's own view of their meter: the wallet is a reader like any provider.
//!
//! Pairing does not grant it by itself (the CLI and library keep their meaning: a consent is
//! something the owner asked for); the app calls [`Wallet::enable_own_view`] right after
//! pairing and when it opens a wallet whose meters have none.
//!
//! After pairing, the wallet grants a consent to a reader key of its own ("Your own view":
//! power and energy delivered/returned, gas, raw resolution), through the same signed request
//! and grant as for any provider. The meter seals that view and delivers (and rotates) its key
//! to the wallet's reader key as to every reader, so no new protocol is involved. Opening the
//! records and following key rotations is the provider SDK's [`Provider`]: one implementation.
//!
//! The reader key is derived from the owner's signing seed, so a wallet restored from the
//! recovery kit has the same own view. It is distinct from the owner's key (one key, one role).

use std::{
    io::Read,
    path::{Path, PathBuf},
    time::Duration,
};

use p1consent_provider::{Provider, ProviderEvent, ProviderKeys, ProviderOptions, RequestBuilder};
use p1consent_shared::{
    consent::{ConsentRecord, ConsentStatus, Field, FieldSet, Resolution},
    crypto::{OpaqueId, derive_key},
    view::ViewPayload,
};
use serde::{Deserialize, Serialize};

use crate::{
    error::{Result, WalletError},
    identity::OwnerIdentity,
    wallet::{PairedSummary, Wallet, now_s},
};

/// The plain-language note of a pairing whose own view could not be granted.
pub fn own_view_note(e: &WalletError) -> String {
    let why = match e {
        WalletError::OwnView(m) => m.clone(),
        WalletError::SuiteMismatch => {
            "the meter uses another type of key than this wallet's own reader".to_string()
        }
        other => other.to_string(),
    };
    format!("The meter is paired, but showing you its data could not be set up yet: {why}.")
}

/// The controller name of the owner's own-view request (shown as "You" in the app).
pub const OWN_CONTROLLER: &str = "You (this wallet)";
/// The purpose of the own-view request.
pub const OWN_PURPOSE: &str = "Your own view of your meter in this wallet";
/// How long the own view lasts (ten years; renewed by `enable_own_view` when it ends).
const OWN_VALID_S: u64 = 10 * 365 * 86_400;
/// Largest reading file read back (the readings of years at 1 Hz are far less).
const MAX_DATA_FILE: u64 = 1024 * 1024 * 1024;

/// The reader keys of the owner's own view, derived from the owner's signing seed.
pub fn own_view_keys(id: &OwnerIdentity) -> ProviderKeys {
    let seed = id.signing.to_seed();
    let s = derive_key(&seed[..], "p1consent-wallet/v1/own-view/ed25519", b"");
    let k = derive_key(&seed[..], "p1consent-wallet/v1/own-view/kem", b"");
    ProviderKeys::from_seeds(s.expose(), id.kem.suite(), k.expose())
}

/// The fields of the own view.
pub fn own_fields() -> FieldSet {
    FieldSet::empty()
        .with(Field::PowerDelivered)
        .with(Field::PowerReturned)
        .with(Field::EnergyDelivered)
        .with(Field::EnergyReturned)
        .with(Field::Gas)
}

/// One reading of the owner's own meter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnReading {
    /// When the meter's agent received the telegram (Unix ms).
    pub timestamp_ms: u64,
    pub seq: u64,
    pub power_delivered_kw: Option<f64>,
    pub power_returned_kw: Option<f64>,
    /// Total (all tariffs).
    pub energy_delivered_kwh: Option<f64>,
    pub energy_returned_kwh: Option<f64>,
    pub gas_m3: Option<f64>,
}

impl OwnReading {
    fn of(seq: u64, timestamp_ms: u64, payload: &ViewPayload) -> Option<Self> {
        let ViewPayload::Reading(r) = payload else {
            return None;
        };
        let sum = |total: Option<f64>, t1: Option<f64>, t2: Option<f64>| {
            total.or(match (t1, t2) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            })
        };
        Some(Self {
            timestamp_ms,
            seq,
            power_delivered_kw: r.power_delivered_kw,
            power_returned_kw: r.power_returned_kw,
            energy_delivered_kwh: sum(
                r.energy_delivered_total_kwh,
                r.energy_delivered_tariff1_kwh,
                r.energy_delivered_tariff2_kwh,
            ),
            energy_returned_kwh: sum(
                r.energy_returned_total_kwh,
                r.energy_returned_tariff1_kwh,
                r.energy_returned_tariff2_kwh,
            ),
            gas_m3: r.gas.as_ref().map(|g| g.value),
        })
    }
}

/// Export formats of the owner's own data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    Csv,
    Json,
}

impl std::str::FromStr for ExportFormat {
    type Err = WalletError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "csv" => Ok(Self::Csv),
            "json" => Ok(Self::Json),
            other => Err(WalletError::OwnView(format!(
                "unknown export format {other:?} (csv or json)"
            ))),
        }
    }
}

/// The running reader of the owner's own view (a [`Provider`] with the own-view keys).
///
/// It also keeps the stored readings small: on start and then about once a day (between two
/// events, so never while its own `Provider` appends a reading) it folds readings older than
/// [`RAW_WINDOW_MS`] into 15-minute aggregates ([`compact_dir`]). Run one reader per wallet
/// folder: a second process appending to the same files while this one compacts could lose
/// the readings it appends in that instant.
pub struct OwnReader {
    provider: Provider,
    dir: PathBuf,
    last_compaction: std::time::Instant,
    compaction: std::result::Result<CompactReport, String>,
}

impl OwnReader {
    /// Processes broker traffic for `d` (readings are stored as they arrive) and returns the
    /// events seen.
    pub async fn run_for(&mut self, d: Duration) -> Result<Vec<ProviderEvent>> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.next_event()).await {
                Err(_) => return Ok(out),
                Ok(Ok(ev)) => out.push(ev),
                Ok(Err(e)) => return Err(e),
            }
        }
    }

    /// The next event (readings are stored before it returns). Compacts the stored readings
    /// first when the last compaction is [`COMPACT_EVERY`] old.
    pub async fn next_event(&mut self) -> Result<ProviderEvent> {
        if self.last_compaction.elapsed() >= COMPACT_EVERY {
            self.compact_now();
        }
        self.provider
            .next_event()
            .await
            .map_err(|e| WalletError::OwnView(e.to_string()))
    }

    /// Compacts the stored readings now (also done on start and about daily).
    pub fn compact_now(&mut self) -> &std::result::Result<CompactReport, String> {
        let dir = self.dir.clone();
        self.compaction =
            blocking(move || compact_dir(&dir, crate::wallet::now_ms())).map_err(|e| e.to_string());
        self.last_compaction = std::time::Instant::now();
        &self.compaction
    }

    /// What the last compaction did (or why it failed; the readings are then untouched and it
    /// is tried again a day later).
    pub fn last_compaction(&self) -> &std::result::Result<CompactReport, String> {
        &self.compaction
    }

    /// Ends the session, keeping what was received.
    pub fn close(self) -> Result<()> {
        self.provider
            .close()
            .map(|_| ())
            .map_err(|e| WalletError::OwnView(e.to_string()))
    }
}

impl Wallet {
    /// Where the own view's reader state and readings live.
    pub fn own_view_dir(&self) -> PathBuf {
        self.data_dir().join("own-view")
    }

    /// Whether a consent is the owner's own view (hide it from "who has access").
    pub fn is_own_view(&self, c: &ConsentRecord) -> bool {
        c.grant.request.content().provider == own_view_keys(self.identity()).public()
    }

    /// The consents of the own view of a device (newest last), any status.
    fn own_consents(&self, device: &str) -> Result<Vec<(OpaqueId, ConsentStatus)>> {
        let state = self.state_at(now_s());
        let q = device.trim().to_ascii_lowercase();
        let me = own_view_keys(self.identity()).public();
        let mut v: Vec<&ConsentRecord> = state
            .consents
            .values()
            .filter(|c| c.grant.request.content().provider == me)
            .filter(|c| {
                !q.is_empty()
                    && (c.grant.device.to_hex().starts_with(&q)
                        || c.grant.device.opaque_id().to_hex().starts_with(&q)
                        || state
                            .devices
                            .get(&c.grant.device)
                            .is_some_and(|d| d.label.to_ascii_lowercase() == q))
            })
            .collect();
        v.sort_by_key(|c| c.granted_at_ms);
        Ok(v.iter().map(|c| (c.grant.consent_id, c.status)).collect())
    }

    /// Makes sure the owner's own view of `device` is granted (idempotent); returns its
    /// consent id. The app calls it after pairing and for meters paired before own views existed.
    pub async fn enable_own_view(&mut self, device: &str) -> Result<OpaqueId> {
        if let Some((cid, _)) = self
            .own_consents(device)?
            .into_iter()
            .rev()
            .find(|(_, s)| *s == ConsentStatus::Active)
        {
            return Ok(cid);
        }
        let keys = own_view_keys(self.identity());
        let req = RequestBuilder::new(OWN_CONTROLLER, "-")
            .purpose(OWN_PURPOSE)
            .fields(own_fields())
            .resolution(Resolution::Raw)
            .retention_days(1)
            .valid_for(OWN_VALID_S)
            .build(&keys)
            .map_err(|e| WalletError::OwnView(e.to_string()))?;
        let summary = self.open_request(&req.to_link())?;
        match self.grant(&summary.request_id, device).await {
            Ok(cid) => Ok(cid),
            Err(e) => {
                // Never leave the own-view request among the owner's pending requests.
                let _ = self.decline(&summary.request_id);
                Err(e)
            }
        }
    }

    /// The active own view of `device`, if any.
    pub fn own_view_of(&self, device: &str) -> Result<Option<OpaqueId>> {
        Ok(self
            .own_consents(device)?
            .into_iter()
            .rev()
            .find(|(_, s)| *s == ConsentStatus::Active)
            .map(|(cid, _)| cid))
    }

    /// Pairs a meter, then grants the owner's own view of it. If that grant fails the pairing
    /// still stands: the summary's `own_view_note` says so in plain words (granting again with
    /// [`Wallet::enable_own_view`] later is safe).
    pub async fn pair_with_own_view(&mut self, code: &str) -> Result<PairedSummary> {
        let mut paired = self.pair(code).await?;
        if let Err(e) = self.enable_own_view(&paired.device).await {
            paired.own_view_note = Some(own_view_note(&e));
        }
        Ok(paired)
    }

    /// Connects the own-view reader (inside a tokio runtime).
    pub fn own_reader(&self) -> Result<OwnReader> {
        let keys = own_view_keys(self.identity());
        let url = self.broker_url()?.to_string();
        let opts = ProviderOptions {
            client_id: Some(self.own_client_id(&keys)?),
            session_expiry_s: Some(7 * 86_400),
            store_readings: true,
        };
        let dir = self.own_view_dir();
        // Before the provider appends anything: nothing else writes the files now.
        let compaction = {
            let dir = dir.clone();
            blocking(move || compact_dir(&dir, crate::wallet::now_ms())).map_err(|e| e.to_string())
        };
        let provider = Provider::connect_with(keys, &url, &dir, opts)
            .map_err(|e| WalletError::OwnView(e.to_string()))?;
        Ok(OwnReader {
            provider,
            dir,
            last_compaction: std::time::Instant::now(),
            compaction,
        })
    }

    /// The MQTT client id of this wallet's own-view reader: the reader key's id plus a random
    /// suffix kept in the own-view folder, so a second wallet of the same owner (restored
    /// from the kit) has a session of its own instead of taking this one over.
    fn own_client_id(&self, keys: &ProviderKeys) -> Result<String> {
        let dir = self.own_view_dir();
        let path = dir.join("client-id");
        let suffix = match std::fs::read_to_string(&path) {
            Ok(t) if t.trim().len() == 16 && t.trim().bytes().all(|b| b.is_ascii_hexdigit()) => {
                t.trim().to_string()
            }
            Ok(_) | Err(_) => {
                let r: [u8; 8] = p1consent_shared::crypto::random_bytes();
                let t = p1consent_shared::crypto::hex(&r);
                std::fs::create_dir_all(&dir).map_err(|e| WalletError::io(&dir, e))?;
                crate::secrets::write_atomic(&path, t.as_bytes(), true)?;
                t
            }
        };
        Ok(format!("p1c-own-{}-{suffix}", keys.public().opaque_id()))
    }

    /// The data files of `device`'s own views, oldest consent first.
    fn own_files(&self, device: &str) -> Result<Vec<PathBuf>> {
        let data = self.own_view_dir().join("data");
        Ok(self
            .own_consents(device)?
            .into_iter()
            .map(|(cid, _)| data.join(format!("{cid}.jsonl")))
            .collect())
    }

    /// Everything stored for `device` at or after `since_ms`, raw readings and 15-minute
    /// aggregates (an aggregate counts from its start), oldest first.
    fn own_stored(&self, device: &str, since_ms: u64) -> Result<Vec<Stored>> {
        let mut out = Vec::new();
        for path in self.own_files(device)? {
            read_stored(&path, since_ms, &mut out)?;
        }
        out.sort_by_key(Stored::order);
        Ok(out)
    }

    /// The stored full-resolution readings of `device` (id prefix or label) at or after
    /// `since_ms`, oldest first. Damaged lines are skipped. Readings older than
    /// [`RAW_WINDOW_MS`] are folded into 15-minute aggregates by the reader: see
    /// [`Wallet::own_rows`] for everything.
    pub fn own_readings(&self, device: &str, since_ms: u64) -> Result<Vec<OwnReading>> {
        Ok(self
            .own_stored(device, since_ms)?
            .into_iter()
            .filter_map(|s| match s {
                Stored::Raw(r) => Some(r),
                Stored::Quarter(_) => None,
            })
            .collect())
    }

    /// Every stored row of `device` at or after `since_ms`: 15-minute aggregates (older than
    /// [`RAW_WINDOW_MS`]) and raw readings, oldest first, each saying its resolution.
    pub fn own_rows(&self, device: &str, since_ms: u64) -> Result<Vec<OwnRow>> {
        Ok(self
            .own_stored(device, since_ms)?
            .iter()
            .map(OwnRow::of)
            .collect())
    }

    /// The latest reading of `device` within the last day (`None` if the meter sent nothing
    /// for a day).
    pub fn own_latest(&self, device: &str) -> Result<Option<OwnReading>> {
        let now = crate::wallet::now_ms();
        // The last minutes first (the Devices page asks every few seconds; a day of readings
        // is ~26 MB), then the whole day.
        if let Some(r) = self
            .own_readings(device, now.saturating_sub(15 * 60_000))?
            .pop()
        {
            return Ok(Some(r));
        }
        Ok(self
            .own_readings(device, now.saturating_sub(86_400_000))?
            .pop())
    }

    /// Energy delivered since `since_ms` (e.g. local midnight): the latest meter total minus
    /// the first one at or after `since_ms`, in kWh, over raw readings and aggregates alike
    /// (aggregates keep the register's first and last values, so this is exact for any
    /// `since_ms` on a quarter hour, which every local midnight is). `None` without two
    /// readings.
    pub fn own_consumption_since(&self, device: &str, since_ms: u64) -> Result<Option<f64>> {
        Ok(consumption(&self.own_stored(device, since_ms)?))
    }

    /// The owner's own data of `device` as CSV or JSON text: every row, aggregates and raw
    /// readings, with a `resolution` column.
    pub fn export_own_data(&self, device: &str, format: ExportFormat) -> Result<String> {
        let r = self.own_rows(device, 0)?;
        Ok(match format {
            ExportFormat::Json => {
                serde_json::to_string_pretty(&r).map_err(|e| WalletError::OwnView(e.to_string()))?
            }
            ExportFormat::Csv => to_csv(&r),
        })
    }

    /// Writes the export to `path` (owner-only permissions, replaced atomically).
    pub fn export_own_data_to(
        &self,
        device: &str,
        format: ExportFormat,
        path: &Path,
    ) -> Result<usize> {
        let text = self.export_own_data(device, format)?;
        crate::secrets::write_atomic(path, text.as_bytes(), true)?;
        Ok(text.len())
    }

    /// Compacts the own view's stored readings now (the reader does it on start and daily).
    pub fn own_compact(&self) -> Result<CompactReport> {
        compact_dir(&self.own_view_dir(), crate::wallet::now_ms())
    }
}

// ------------------------------------------------------------------ retention

/// Readings younger than this stay at full resolution (two days).
pub const RAW_WINDOW_MS: u64 = 2 * 86_400_000;
/// The span of one aggregate: 15 minutes, aligned to the quarter hours of UTC (so to every
/// local midnight: all time zones are whole quarter hours from UTC).
pub const QUARTER_MS: u64 = 15 * 60_000;
/// Aggregates are kept as long as the own view lasts (ten years).
pub const KEEP_AGGREGATES_MS: u64 = OWN_VALID_S * 1000;
/// How often a running reader compacts.
pub const COMPACT_EVERY: Duration = Duration::from_secs(86_400);
/// Longest line read during compaction; a longer one is damaged.
const MAX_LINE: u64 = 1024 * 1024;

/// Power over 15 minutes: how many readings had it, their sum (for the mean) and maximum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PowerStat {
    pub n: u64,
    pub sum_kw: f64,
    pub max_kw: f64,
}

impl PowerStat {
    fn of(v: f64) -> Self {
        Self {
            n: 1,
            sum_kw: v,
            max_kw: v,
        }
    }
    fn merge(self, o: Self) -> Self {
        Self {
            n: self.n + o.n,
            sum_kw: self.sum_kw + o.sum_kw,
            max_kw: self.max_kw.max(o.max_kw),
        }
    }
    /// The mean power (kW).
    pub fn mean_kw(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum_kw / self.n as f64
        }
    }
}

/// A meter register (energy, gas) over 15 minutes: its first and last values, exactly as read,
/// with when they were read.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Register {
    pub first: f64,
    pub first_ms: u64,
    pub last: f64,
    pub last_ms: u64,
}

impl Register {
    fn of(v: f64, t: u64) -> Self {
        Self {
            first: v,
            first_ms: t,
            last: v,
            last_ms: t,
        }
    }
    fn merge(self, o: Self) -> Self {
        let (first, first_ms) = if o.first_ms < self.first_ms {
            (o.first, o.first_ms)
        } else {
            (self.first, self.first_ms)
        };
        let (last, last_ms) = if o.last_ms > self.last_ms {
            (o.last, o.last_ms)
        } else {
            (self.last, self.last_ms)
        };
        Self {
            first,
            first_ms,
            last,
            last_ms,
        }
    }
}

fn merge_opt<T: Copy>(a: Option<T>, b: Option<T>, f: impl Fn(T, T) -> T) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, b) => a.or(b),
    }
}

/// The readings of 15 minutes folded into one (older than [`RAW_WINDOW_MS`]). Merging two
/// aggregates of the same quarter is exact (counts and sums add, maxima and registers keep
/// their extremes), so readings arriving late are folded in later without loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnAggregate {
    /// Start of the quarter hour (Unix ms).
    pub start_ms: u64,
    /// How many readings were folded in.
    pub readings: u64,
    /// The highest sequence number folded in.
    pub last_seq: u64,
    pub power_delivered: Option<PowerStat>,
    pub power_returned: Option<PowerStat>,
    pub energy_delivered: Option<Register>,
    pub energy_returned: Option<Register>,
    pub gas: Option<Register>,
}

impl OwnAggregate {
    fn of(r: &OwnReading) -> Self {
        let t = r.timestamp_ms;
        Self {
            start_ms: t - t % QUARTER_MS,
            readings: 1,
            last_seq: r.seq,
            power_delivered: r.power_delivered_kw.map(PowerStat::of),
            power_returned: r.power_returned_kw.map(PowerStat::of),
            energy_delivered: r.energy_delivered_kwh.map(|v| Register::of(v, t)),
            energy_returned: r.energy_returned_kwh.map(|v| Register::of(v, t)),
            gas: r.gas_m3.map(|v| Register::of(v, t)),
        }
    }
    fn merge(&mut self, o: &OwnAggregate) {
        self.readings += o.readings;
        self.last_seq = self.last_seq.max(o.last_seq);
        self.power_delivered = merge_opt(self.power_delivered, o.power_delivered, PowerStat::merge);
        self.power_returned = merge_opt(self.power_returned, o.power_returned, PowerStat::merge);
        self.energy_delivered =
            merge_opt(self.energy_delivered, o.energy_delivered, Register::merge);
        self.energy_returned = merge_opt(self.energy_returned, o.energy_returned, Register::merge);
        self.gas = merge_opt(self.gas, o.gas, Register::merge);
    }
}

/// An aggregate as stored: a line of the same file as the raw readings (`timestamp_ms` first
/// so the seek over the file works for both).
#[derive(Serialize, Deserialize)]
struct QuarterLine {
    timestamp_ms: u64,
    quarter: OwnAggregate,
}

/// One stored row.
#[derive(Debug, Clone, PartialEq)]
enum Stored {
    Raw(OwnReading),
    Quarter(OwnAggregate),
}

impl Stored {
    fn order(&self) -> (u64, u64) {
        match self {
            Stored::Raw(r) => (r.timestamp_ms, r.seq),
            Stored::Quarter(a) => (a.start_ms, a.last_seq),
        }
    }
    fn readings(&self) -> u64 {
        match self {
            Stored::Raw(_) => 1,
            Stored::Quarter(a) => a.readings,
        }
    }
    fn energy_delivered(&self) -> Option<Register> {
        match self {
            Stored::Raw(r) => r
                .energy_delivered_kwh
                .map(|v| Register::of(v, r.timestamp_ms)),
            Stored::Quarter(a) => a.energy_delivered,
        }
    }
}

/// Energy delivered over `rows`: the last register value minus the first, by reading time.
fn consumption(rows: &[Stored]) -> Option<f64> {
    let n: u64 = rows.iter().map(Stored::readings).sum();
    let reg = rows
        .iter()
        .filter_map(Stored::energy_delivered)
        .reduce(Register::merge)?;
    (n >= 2).then(|| (reg.last - reg.first).max(0.0))
}

/// The resolution of an exported row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RowResolution {
    /// One reading as the meter sent it.
    #[serde(rename = "raw")]
    Raw,
    /// The readings of 15 minutes (older than two days).
    #[serde(rename = "15min")]
    QuarterHour,
}

impl RowResolution {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::QuarterHour => "15min",
        }
    }
}

/// One row of the owner's own data (export): a raw reading or a 15-minute aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnRow {
    /// `raw` or `15min`.
    pub resolution: RowResolution,
    /// The reading's time, or the start of the 15 minutes (Unix ms).
    pub timestamp_ms: u64,
    /// How many readings the row stands for (1 for `raw`).
    pub readings: u64,
    /// The reading's sequence number (`15min`: the last one's).
    pub seq: u64,
    /// The power drawn (kW): the reading, or the mean over the 15 minutes.
    pub power_delivered_kw: Option<f64>,
    /// The highest power drawn (kW) in the row.
    pub power_delivered_max_kw: Option<f64>,
    pub power_returned_kw: Option<f64>,
    pub power_returned_max_kw: Option<f64>,
    /// The energy register at the first reading of the row (kWh; equal to the last for `raw`).
    pub energy_delivered_first_kwh: Option<f64>,
    /// The energy register at the last reading of the row (kWh).
    pub energy_delivered_kwh: Option<f64>,
    pub energy_returned_first_kwh: Option<f64>,
    pub energy_returned_kwh: Option<f64>,
    /// The gas register at the last reading of the row (m³).
    pub gas_m3: Option<f64>,
}

impl OwnRow {
    fn of(s: &Stored) -> Self {
        match s {
            Stored::Raw(r) => Self {
                resolution: RowResolution::Raw,
                timestamp_ms: r.timestamp_ms,
                readings: 1,
                seq: r.seq,
                power_delivered_kw: r.power_delivered_kw,
                power_delivered_max_kw: r.power_delivered_kw,
                power_returned_kw: r.power_returned_kw,
                power_returned_max_kw: r.power_returned_kw,
                energy_delivered_first_kwh: r.energy_delivered_kwh,
                energy_delivered_kwh: r.energy_delivered_kwh,
                energy_returned_first_kwh: r.energy_returned_kwh,
                energy_returned_kwh: r.energy_returned_kwh,
                gas_m3: r.gas_m3,
            },
            Stored::Quarter(a) => Self {
                resolution: RowResolution::QuarterHour,
                timestamp_ms: a.start_ms,
                readings: a.readings,
                seq: a.last_seq,
                power_delivered_kw: a.power_delivered.map(|p| p.mean_kw()),
                power_delivered_max_kw: a.power_delivered.map(|p| p.max_kw),
                power_returned_kw: a.power_returned.map(|p| p.mean_kw()),
                power_returned_max_kw: a.power_returned.map(|p| p.max_kw),
                energy_delivered_first_kwh: a.energy_delivered.map(|r| r.first),
                energy_delivered_kwh: a.energy_delivered.map(|r| r.last),
                energy_returned_first_kwh: a.energy_returned.map(|r| r.first),
                energy_returned_kwh: a.energy_returned.map(|r| r.last),
                gas_m3: a.gas.map(|r| r.last),
            },
        }
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// The CSV header of the export.
pub const CSV_HEADER: &str = "resolution,timestamp_ms,readings,seq,power_delivered_kw,\
power_delivered_max_kw,power_returned_kw,power_returned_max_kw,energy_delivered_first_kwh,\
energy_delivered_kwh,energy_returned_first_kwh,energy_returned_kwh,gas_m3";

/// CSV of rows (names and numbers only: nothing needs quoting).
pub fn to_csv(rows: &[OwnRow]) -> String {
    let mut s = format!("{CSV_HEADER}\n");
    for x in rows {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            x.resolution.name(),
            x.timestamp_ms,
            x.readings,
            x.seq,
            opt(x.power_delivered_kw),
            opt(x.power_delivered_max_kw),
            opt(x.power_returned_kw),
            opt(x.power_returned_max_kw),
            opt(x.energy_delivered_first_kwh),
            opt(x.energy_delivered_kwh),
            opt(x.energy_returned_first_kwh),
            opt(x.energy_returned_kwh),
            opt(x.gas_m3),
        ));
    }
    s
}

/// A raw line as the provider SDK appends it.
#[derive(Deserialize)]
struct Line {
    seq: u64,
    timestamp_ms: u64,
    payload: serde_json::Value,
}

/// Only the time of a line (raw or aggregate), for the seek.
#[derive(Deserialize)]
struct Stamp {
    timestamp_ms: u64,
}

/// What a stored line is (a short-lived value, one line at a time: no need to box the row).
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Row(Stored),
    /// A well-formed line that is no reading (kept as it is).
    Other,
}

fn parse_line(l: &[u8]) -> Option<Parsed> {
    if let Ok(q) = serde_json::from_slice::<QuarterLine>(l) {
        return Some(Parsed::Row(Stored::Quarter(q.quarter)));
    }
    let line = serde_json::from_slice::<Line>(l).ok()?;
    let bytes = serde_json::to_vec(&line.payload).ok()?;
    let p = ViewPayload::from_bytes(&bytes).ok()?;
    Some(match OwnReading::of(line.seq, line.timestamp_ms, &p) {
        Some(r) => Parsed::Row(Stored::Raw(r)),
        None => Parsed::Other,
    })
}

/// Where to start reading `f` (of `len` bytes) for rows at or after `since_ms`: a binary
/// search over byte offsets (timestamps grow along the file: aggregates first, then raw
/// readings), so the Devices page reads the last minutes of a file of years without reading
/// the years. It may start a little early, never late for increasing timestamps; each line
/// is still filtered.
fn seek_since(f: &mut std::fs::File, len: u64, since_ms: u64) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    const PROBE: u64 = 4096;
    let (mut lo, mut hi) = (0u64, len);
    while hi.saturating_sub(lo) > PROBE {
        let mid = lo + (hi - lo) / 2;
        f.seek(SeekFrom::Start(mid))?;
        let mut buf = Vec::new();
        f.by_ref().take(PROBE).read_to_end(&mut buf)?;
        let ts = buf
            .split(|b| *b == b'\n')
            .nth(1)
            .and_then(|l| serde_json::from_slice::<Stamp>(l).ok())
            .map(|l| l.timestamp_ms);
        match ts {
            Some(t) if t < since_ms => lo = mid,
            Some(_) => hi = mid,
            // A line longer than the probe, or damaged: stop narrowing, read from `lo`.
            None => break,
        }
    }
    Ok(lo)
}

/// Appends the rows of `path` at or after `since_ms` (aggregates by their start) to `out`.
fn read_stored(path: &Path, since_ms: u64, out: &mut Vec<Stored>) -> Result<()> {
    use std::io::{Seek, SeekFrom};
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(WalletError::io(path, e)),
    };
    let len = f.metadata().map_err(|e| WalletError::io(path, e))?.len();
    let start = seek_since(&mut f, len, since_ms).map_err(|e| WalletError::io(path, e))?;
    f.seek(SeekFrom::Start(start))
        .map_err(|e| WalletError::io(path, e))?;
    let mut bytes = Vec::new();
    f.take(MAX_DATA_FILE)
        .read_to_end(&mut bytes)
        .map_err(|e| WalletError::io(path, e))?;
    // Lines are UTF-8 JSON; a line cut by the start offset or damaged is skipped.
    for l in bytes.split(|b| *b == b'\n') {
        if let Some(Parsed::Row(s)) = parse_line(l)
            && s.order().0 >= since_ms
        {
            out.push(s);
        }
    }
    Ok(())
}

#[cfg(test)]
fn read_lines(path: &Path, since_ms: u64, out: &mut Vec<OwnReading>) -> Result<()> {
    let mut all = Vec::new();
    read_stored(path, since_ms, &mut all)?;
    out.extend(all.into_iter().filter_map(|s| match s {
        Stored::Raw(r) => Some(r),
        Stored::Quarter(_) => None,
    }));
    Ok(())
}

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CompactReport {
    /// Files rewritten.
    pub files: usize,
    /// Raw readings folded into aggregates.
    pub folded: u64,
    /// Raw lines kept as they are (younger than the raw window, or not readings).
    pub kept_raw: u64,
    /// Aggregate lines in the rewritten files.
    pub aggregates: u64,
    /// Aggregates dropped after [`KEEP_AGGREGATES_MS`].
    pub expired: u64,
    /// Damaged lines, set aside in `<file>.damaged` (not lost, not read).
    pub damaged: u64,
    /// Left-over temporary files of an interrupted compaction, removed.
    pub stale_removed: usize,
}

impl CompactReport {
    fn add(&mut self, o: &CompactReport) {
        self.files += o.files;
        self.folded += o.folded;
        self.kept_raw += o.kept_raw;
        self.aggregates += o.aggregates;
        self.expired += o.expired;
        self.damaged += o.damaged;
        self.stale_removed += o.stale_removed;
    }
}

/// Runs `f`, telling a multi-threaded tokio runtime that it blocks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

const TMP_MARK: &str = ".compact-";

/// Compacts every reading file of an own-view folder (`<dir>/data/*.jsonl`): readings older
/// than [`RAW_WINDOW_MS`] before `now_ms` become 15-minute aggregates, aggregates older than
/// [`KEEP_AGGREGATES_MS`] are dropped. Left-over temporary files of an interrupted
/// compaction are removed first (the file they were made from is intact: it is only ever
/// replaced by a rename).
pub fn compact_dir(dir: &Path, now_ms: u64) -> Result<CompactReport> {
    let data = dir.join("data");
    let entries = match std::fs::read_dir(&data) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(CompactReport::default()),
        Err(e) => return Err(WalletError::io(&data, e)),
    };
    let mut files = Vec::new();
    let mut report = CompactReport::default();
    for e in entries {
        let e = e.map_err(|e| WalletError::io(&data, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.contains(TMP_MARK) {
            std::fs::remove_file(e.path()).map_err(|err| WalletError::io(e.path(), err))?;
            report.stale_removed += 1;
        } else if !name.starts_with('.') && name.ends_with(".jsonl") {
            files.push(e.path());
        }
    }
    files.sort();
    for f in files {
        report.add(&compact_file(&f, now_ms)?);
    }
    Ok(report)
}

/// A compacted file written next to the original, not yet in its place.
struct Prepared {
    tmp: PathBuf,
    report: CompactReport,
    damaged: Vec<u8>,
}

/// Compacts one reading file (see [`compact_dir`]): prepares the new file, then renames it
/// over the old one.
pub fn compact_file(path: &Path, now_ms: u64) -> Result<CompactReport> {
    match prepare(path, now_ms)? {
        None => Ok(CompactReport::default()),
        Some(p) => commit(path, p),
    }
}

/// Writes the compacted file to a temporary file (fsynced) in the same folder. `None` when
/// there is nothing to fold, expire or set aside.
fn prepare(path: &Path, now_ms: u64) -> Result<Option<Prepared>> {
    use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
    let io = |e| WalletError::io(path, e);
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let len = f.metadata().map_err(io)?.len();
    let cutoff = now_ms.saturating_sub(RAW_WINDOW_MS) / QUARTER_MS * QUARTER_MS;
    let expire_before = now_ms.saturating_sub(KEEP_AGGREGATES_MS);
    let mut quarters: std::collections::BTreeMap<u64, OwnAggregate> = Default::default();
    let mut kept: Vec<Vec<u8>> = Vec::new();
    let mut report = CompactReport::default();
    let mut damaged = Vec::new();
    let mut reader = BufReader::new(f.take(len));
    // Bytes up to the end of the last whole line; a line still being written is copied as is.
    let mut done = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .by_ref()
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .map_err(io)?;
        if n == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            if (n as u64) < MAX_LINE {
                break; // the end of the file, in the middle of a line
            }
            // An overlong line: damaged; skip the rest of it, a bounded piece at a time.
            let mut skipped = n as u64;
            let mut rest = Vec::new();
            let ended = loop {
                rest.clear();
                let m = reader
                    .by_ref()
                    .take(MAX_LINE)
                    .read_until(b'\n', &mut rest)
                    .map_err(io)?;
                skipped += m as u64;
                if m == 0 || rest.last() == Some(&b'\n') {
                    break m > 0;
                }
            };
            if !ended {
                break; // still being written: copied as it is below
            }
            done += skipped;
            report.damaged += 1;
            damaged.extend_from_slice(&line[..256.min(line.len())]);
            damaged.push(b'\n');
            continue;
        }
        done += n as u64;
        let text = &line[..line.len() - 1];
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_line(text) {
            Some(Parsed::Row(Stored::Quarter(a))) => {
                quarters
                    .entry(a.start_ms)
                    .and_modify(|q| q.merge(&a))
                    .or_insert(a);
            }
            Some(Parsed::Row(Stored::Raw(r))) if r.timestamp_ms < cutoff => {
                report.folded += 1;
                let a = OwnAggregate::of(&r);
                quarters
                    .entry(a.start_ms)
                    .and_modify(|q| q.merge(&a))
                    .or_insert(a);
            }
            Some(_) => kept.push(line.clone()),
            None => {
                report.damaged += 1;
                damaged.extend_from_slice(&line);
            }
        }
    }
    let before = quarters.len();
    quarters.retain(|start, _| start.saturating_add(QUARTER_MS) > expire_before);
    report.expired = (before - quarters.len()) as u64;
    if report.folded == 0 && report.expired == 0 && report.damaged == 0 {
        return Ok(None);
    }
    report.files = 1;
    report.kept_raw = kept.len() as u64;
    report.aggregates = quarters.len() as u64;

    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}{TMP_MARK}{}", OpaqueId::random()));
    let write = || -> std::io::Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let out = opts.open(&tmp)?;
        let mut w = std::io::BufWriter::new(out);
        for q in quarters.into_values() {
            let l = QuarterLine {
                timestamp_ms: q.start_ms,
                quarter: q,
            };
            serde_json::to_writer(&mut w, &l)?;
            w.write_all(b"\n")?;
        }
        for l in &kept {
            w.write_all(l)?;
        }
        // What was appended since (or was being written): copied as it is, until the file
        // stops growing.
        let mut src = std::fs::File::open(path)?;
        let mut at = done;
        loop {
            src.seek(SeekFrom::Start(at))?;
            at += std::io::copy(&mut src, &mut w)?;
            if src.metadata()?.len() <= at {
                break;
            }
        }
        let out = w.into_inner().map_err(|e| e.into_error())?;
        out.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(WalletError::io(&tmp, e));
    }
    Ok(Some(Prepared {
        tmp,
        report,
        damaged,
    }))
}

/// Sets damaged lines aside, then puts the prepared file in place (rename, folder fsync).
fn commit(path: &Path, p: Prepared) -> Result<CompactReport> {
    use std::io::Write;
    let result = (|| -> std::io::Result<()> {
        if !p.damaged.is_empty() {
            let mut side = path.as_os_str().to_owned();
            side.push(".damaged");
            let mut opts = std::fs::OpenOptions::new();
            opts.append(true).create(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(PathBuf::from(side))?;
            f.write_all(&p.damaged)?;
            f.sync_all()?;
        }
        std::fs::rename(&p.tmp, path)?;
        if let Some(d) = path.parent()
            && let Ok(d) = std::fs::File::open(if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            })
        {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&p.tmp);
        return Err(WalletError::io(path, e));
    }
    Ok(p.report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p1consent_shared::view::Reading;

    fn line(seq: u64, t: u64) -> String {
        let payload = ViewPayload::Reading(Reading {
            time_ms: t,
            power_delivered_kw: Some(seq as f64 / 1000.0),
            energy_delivered_tariff1_kwh: Some(100.0 + seq as f64),
            energy_delivered_tariff2_kwh: Some(1.0),
            ..Default::default()
        });
        serde_json::json!({"consent": "00", "seq": seq, "timestamp_ms": t, "payload": payload})
            .to_string()
    }

    #[test]
    fn reads_from_the_right_place_of_a_long_file_and_skips_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        let mut text = String::new();
        for seq in 0..20_000u64 {
            text.push_str(&line(seq, 1_000_000 + seq * 1000));
            text.push('\n');
            if seq == 19_990 {
                text.push_str("{not json\n\u{0}\u{1}garbage\n");
            }
        }
        std::fs::write(&path, &text).unwrap();
        for since_seq in [0u64, 1, 7_777, 19_980, 19_999, 20_000] {
            let mut out = Vec::new();
            read_lines(&path, 1_000_000 + since_seq * 1000, &mut out).unwrap();
            let seqs: Vec<u64> = out.iter().map(|r| r.seq).collect();
            let want: Vec<u64> = (since_seq..20_000).collect();
            assert_eq!(seqs, want, "since {since_seq}");
        }
        let mut out = Vec::new();
        read_lines(&path, 0, &mut out).unwrap();
        assert_eq!(out[5].energy_delivered_kwh, Some(106.0), "tariffs summed");
        assert_eq!(out[5].power_delivered_kw, Some(0.005));
        // Missing file: nothing, no error.
        let mut none = Vec::new();
        read_lines(&dir.path().join("absent"), 0, &mut none).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn csv_and_json_rows_say_their_resolution() {
        let raw = Stored::Raw(OwnReading {
            timestamp_ms: 5,
            seq: 1,
            power_delivered_kw: Some(0.5),
            power_returned_kw: None,
            energy_delivered_kwh: Some(1.25),
            energy_returned_kwh: None,
            gas_m3: None,
        });
        let quarter = Stored::Quarter(OwnAggregate {
            start_ms: 900_000,
            readings: 4,
            last_seq: 9,
            power_delivered: Some(PowerStat {
                n: 4,
                sum_kw: 2.0,
                max_kw: 1.5,
            }),
            power_returned: None,
            energy_delivered: Some(Register {
                first: 1.0,
                first_ms: 900_000,
                last: 1.75,
                last_ms: 1_700_000,
            }),
            energy_returned: None,
            gas: Some(Register {
                first: 3.0,
                first_ms: 900_000,
                last: 3.5,
                last_ms: 1_700_000,
            }),
        });
        let rows = [OwnRow::of(&quarter), OwnRow::of(&raw)];
        assert_eq!(
            to_csv(&rows),
            format!(
                "{CSV_HEADER}\n15min,900000,4,9,0.5,1.5,,,1,1.75,,,3.5\nraw,5,1,1,0.5,0.5,,,1.25,1.25,,,\n"
            )
        );
        assert!(CSV_HEADER.starts_with("resolution,timestamp_ms,"));
        let json: serde_json::Value = serde_json::to_value(&rows).unwrap();
        assert_eq!(json[0]["resolution"], "15min");
        assert_eq!(json[0]["power_delivered_kw"], 0.5);
        assert_eq!(json[1]["resolution"], "raw");
        let back: Vec<OwnRow> = serde_json::from_value(json).unwrap();
        assert_eq!(back, rows);
    }

    // ---------------------------------------------------------------- compaction

    /// 2026-01-05 00:00 UTC plus 13 h 7 min 30 s.
    const NOW: u64 = 1_767_571_200_000 + 13 * 3_600_000 + 450_000;
    const DAY: u64 = 86_400_000;
    /// One reading every 10 s.
    const STEP: u64 = 10_000;

    /// A reading with an energy register that grows unevenly and a power that varies.
    fn reading_line(seq: u64, t: u64) -> String {
        let payload = ViewPayload::Reading(Reading {
            time_ms: t,
            power_delivered_kw: Some((seq % 7) as f64 / 10.0),
            power_returned_kw: Some(0.0),
            energy_delivered_tariff1_kwh: Some(
                1000.0 + (seq * seq % 13) as f64 * 0.001 + seq as f64 * 0.0007,
            ),
            energy_delivered_tariff2_kwh: Some(2000.125),
            ..Default::default()
        });
        serde_json::json!({"consent": "00", "seq": seq, "timestamp_ms": t, "payload": payload})
            .to_string()
    }

    /// Readings from `from` (inclusive) to `to` (exclusive) every [`STEP`]: (text, count).
    fn readings(from: u64, to: u64, seq0: u64) -> (String, u64) {
        let mut text = String::new();
        let mut n = 0;
        let mut t = from;
        while t < to {
            text.push_str(&reading_line(seq0 + n, t));
            text.push('\n');
            n += 1;
            t += STEP;
        }
        (text, n)
    }

    fn stored(path: &Path, since: u64) -> Vec<Stored> {
        let mut v = Vec::new();
        read_stored(path, since, &mut v).unwrap();
        v.sort_by_key(Stored::order);
        v
    }

    fn cutoff() -> u64 {
        (NOW - RAW_WINDOW_MS) / QUARTER_MS * QUARTER_MS
    }

    #[test]
    fn compaction_folds_old_readings_keeps_recent_ones_and_the_energy_since_midnight() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let path = data.join("c.jsonl");
        let start = NOW - 4 * DAY;
        let (text, total) = readings(start, NOW, 0);
        std::fs::write(&path, &text).unwrap();
        let size_before = text.len() as u64;
        // Midnights (UTC, as a local midnight is a quarter hour too) in the folded part, at
        // the edge and in the raw part, and the start of everything.
        let midnights = [
            NOW - NOW % DAY - 3 * DAY,
            NOW - NOW % DAY - 2 * DAY,
            NOW - NOW % DAY - DAY,
            NOW - NOW % DAY,
            0,
        ];
        let before: Vec<Option<f64>> = midnights
            .iter()
            .map(|m| consumption(&stored(&path, *m)))
            .collect();
        assert!(
            before.iter().all(|k| k.is_some_and(|k| k > 0.0)),
            "{before:?}"
        );
        let raw_before: Vec<OwnReading> = stored(&path, cutoff())
            .into_iter()
            .filter_map(|s| match s {
                Stored::Raw(r) => Some(r),
                Stored::Quarter(_) => None,
            })
            .collect();

        let report = compact_dir(dir.path(), NOW).unwrap();
        let old = (cutoff() - start) / STEP;
        assert_eq!(report.files, 1);
        assert_eq!(report.folded, old);
        assert_eq!(report.kept_raw, total - old);
        // The first quarter is a part one (the readings start 7.5 minutes into it).
        assert_eq!(report.aggregates, (cutoff() - start).div_ceil(QUARTER_MS));
        assert_eq!(
            (report.damaged, report.expired, report.stale_removed),
            (0, 0, 0)
        );

        // The energy since every midnight is exactly the same.
        let after: Vec<Option<f64>> = midnights
            .iter()
            .map(|m| consumption(&stored(&path, *m)))
            .collect();
        assert_eq!(after, before);

        // Old readings are aggregates, recent ones stay raw and unchanged.
        let rows = stored(&path, 0);
        let quarters: Vec<&OwnAggregate> = rows
            .iter()
            .filter_map(|s| match s {
                Stored::Quarter(a) => Some(a),
                Stored::Raw(_) => None,
            })
            .collect();
        let raw: Vec<OwnReading> = rows
            .iter()
            .filter_map(|s| match s {
                Stored::Raw(r) => Some(r.clone()),
                Stored::Quarter(_) => None,
            })
            .collect();
        assert_eq!(raw, raw_before);
        assert!(raw.iter().all(|r| r.timestamp_ms >= cutoff()));
        assert!(
            quarters
                .iter()
                .all(|q| q.start_ms < cutoff() && q.start_ms % QUARTER_MS == 0)
        );
        assert_eq!(quarters.iter().map(|q| q.readings).sum::<u64>(), old);
        // One quarter checked against its readings: mean and max power, registers.
        let q = quarters[5];
        let seqs = (q.start_ms - start) / STEP..(q.start_ms - start + QUARTER_MS) / STEP;
        let powers: Vec<f64> = seqs.clone().map(|s| (s % 7) as f64 / 10.0).collect();
        let p = q.power_delivered.unwrap();
        assert_eq!(p.n, 90);
        assert_eq!(p.max_kw, 0.6);
        assert!((p.mean_kw() - powers.iter().sum::<f64>() / 90.0).abs() < 1e-12);
        let e = q.energy_delivered.unwrap();
        let first = OwnReading::of(
            seqs.start,
            q.start_ms,
            &payload_of(&reading_line(seqs.start, q.start_ms)),
        )
        .unwrap();
        assert_eq!(Some(e.first), first.energy_delivered_kwh);
        assert_eq!(e.first_ms, q.start_ms);
        assert_eq!(e.last_ms, q.start_ms + QUARTER_MS - STEP);
        assert_eq!(q.last_seq, seqs.end - 1);

        let size_after = std::fs::metadata(&path).unwrap().len();
        // The raw part is as it was; the folded two days take under 2 % of their raw size.
        let (recent, _) = readings(start + old * STEP, NOW, old);
        let raw_len = recent.len() as u64;
        let folded_len = size_after - raw_len;
        assert!(
            folded_len * 50 < size_before - raw_len,
            "{folded_len} for {} bytes of raw readings",
            size_before - raw_len
        );
        assert!(std::fs::read_to_string(&path).unwrap().ends_with(&recent));

        // Nothing more to do: the file is not rewritten.
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            compact_dir(dir.path(), NOW).unwrap(),
            CompactReport::default()
        );
        assert_eq!(std::fs::read(&path).unwrap(), bytes);

        // A reading of a folded quarter arriving late is folded into it on the next run.
        let late_t = quarters[5].start_ms + 5;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        use std::io::Write;
        writeln!(f, "{}", reading_line(1_000_000, late_t)).unwrap();
        drop(f);
        let r = compact_dir(dir.path(), NOW).unwrap();
        assert_eq!((r.folded, r.aggregates), (1, report.aggregates));
        let q5 = stored(&path, 0)
            .into_iter()
            .find_map(|s| match s {
                Stored::Quarter(a) if a.start_ms == quarters[5].start_ms => Some(a),
                _ => None,
            })
            .unwrap();
        assert_eq!(q5.readings, 91);
        assert_eq!(q5.last_seq, 1_000_000);
        assert_eq!(q5.energy_delivered.unwrap().first_ms, q.start_ms);
        assert_eq!(
            q5.energy_delivered.unwrap().last_ms,
            q.start_ms + QUARTER_MS - STEP
        );
    }

    fn payload_of(line: &str) -> ViewPayload {
        let l: Line = serde_json::from_str(line).unwrap();
        ViewPayload::from_bytes(&serde_json::to_vec(&l.payload).unwrap()).unwrap()
    }

    #[test]
    fn a_damaged_line_does_not_abort_compaction_and_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let path = data.join("c.jsonl");
        let start = NOW - 3 * DAY;
        let (old, n_old) = readings(start, start + DAY / 2, 0);
        let (recent, n_recent) = readings(NOW - 3_600_000, NOW, n_old);
        // Two damaged lines, one far too long, and a last line still being written.
        let long = "x".repeat(2 * MAX_LINE as usize + 10);
        let partial = "{\"consent\":\"00\",\"seq\":99999,\"timest";
        let text =
            format!("{old}{{\"seq\": 1, broken\n\u{0}\u{1}garbage\n{long}\n{recent}{partial}");
        std::fs::write(&path, &text).unwrap();
        let report = compact_dir(dir.path(), NOW).unwrap();
        assert_eq!(report.damaged, 3);
        assert_eq!(report.folded, n_old);
        assert_eq!(report.kept_raw, n_recent);
        let side = std::fs::read_to_string(data.join("c.jsonl.damaged")).unwrap();
        assert_eq!(
            side,
            format!(
                "{{\"seq\": 1, broken\n\u{0}\u{1}garbage\n{}\n",
                &long[..256]
            )
        );
        let after = std::fs::read_to_string(&path).unwrap();
        assert!(
            after.ends_with(&format!("{recent}{partial}")),
            "kept as it is"
        );
        let rows = stored(&path, 0);
        assert_eq!(
            rows.iter().map(Stored::readings).sum::<u64>(),
            n_old + n_recent
        );
        // The set-aside file is not compacted or read as readings.
        assert_eq!(
            compact_dir(dir.path(), NOW).unwrap(),
            CompactReport::default()
        );
    }

    #[test]
    fn a_crash_between_the_steps_loses_nothing_and_folds_once() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let path = data.join("c.jsonl");
        let start = NOW - 3 * DAY;
        let (text, total) = readings(start, NOW - DAY, 0);
        std::fs::write(&path, &text).unwrap();
        let since = start - start % DAY + DAY;
        let kwh = consumption(&stored(&path, since));

        // Crash after the new file was written, before the rename: the temporary file stays.
        let p = prepare(&path, NOW).unwrap().expect("something to fold");
        assert!(p.tmp.exists());
        drop(p);
        // And an older attempt that died half-way through writing.
        std::fs::write(
            data.join(format!(".c.jsonl{TMP_MARK}half")),
            b"{\"timestamp_ms\":1,\"qua",
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            text,
            "original untouched"
        );
        assert_eq!(consumption(&stored(&path, since)), kwh);

        // The meter goes on; the next start compacts.
        let (more, n_more) = readings(NOW - DAY, NOW - DAY + 5 * STEP, total);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        use std::io::Write;
        f.write_all(more.as_bytes()).unwrap();
        drop(f);
        let report = compact_dir(dir.path(), NOW).unwrap();
        assert_eq!(report.stale_removed, 2);
        let old = (cutoff() - start) / STEP;
        assert_eq!(report.folded, old, "folded once");
        let rows = stored(&path, 0);
        assert_eq!(
            rows.iter().map(Stored::readings).sum::<u64>(),
            total + n_more
        );
        assert_eq!(
            consumption(&stored(&path, since)).map(|k| k > 0.0),
            Some(true)
        );
        let left: Vec<String> = std::fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, vec!["c.jsonl".to_string()]);
        // Same energy over the part that was there before the crash.
        let until = NOW - DAY;
        let before_crash = |rows: Vec<Stored>| {
            rows.into_iter()
                .filter(|s| s.order().0 < until)
                .collect::<Vec<_>>()
        };
        assert_eq!(consumption(&before_crash(stored(&path, since))), {
            let mut v = Vec::new();
            let tmp = dir.path().join("orig.jsonl");
            std::fs::write(&tmp, &text).unwrap();
            read_stored(&tmp, since, &mut v).unwrap();
            consumption(&v)
        });
    }

    #[test]
    fn aggregates_older_than_ten_years_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let path = data.join("c.jsonl");
        let ancient = (NOW - KEEP_AGGREGATES_MS - DAY) / QUARTER_MS * QUARTER_MS;
        let (a, _) = readings(ancient, ancient + QUARTER_MS, 0);
        let old = (NOW - 3 * DAY) / QUARTER_MS * QUARTER_MS;
        let (b, nb) = readings(old, old + QUARTER_MS, 100);
        std::fs::write(&path, format!("{a}{b}")).unwrap();
        let r = compact_dir(dir.path(), NOW).unwrap();
        assert_eq!((r.expired, r.aggregates), (1, 1));
        let rows = stored(&path, 0);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].readings(), nb);
    }
}

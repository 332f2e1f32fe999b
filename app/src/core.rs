//! The app's command layer without Tauri: everything a `#[tauri::command]` does, callable from
//! tests with a temporary data directory and any [`SecretStore`].
//!
//! Every result is a plain serialisable value; every error is one plain sentence (the wallet
//! library's own wording), which the UI shows as is. No key ever leaves this layer.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use p1consent_shared::{consent::ConsentStatus, qr};
use p1consent_wallet::{
    ConsentLine, ExportFormat, KdfParams, RequestSummary, SecretStore, Wallet, WalletError,
    WalletOptions, recovery,
    summary::date,
    wallet::{PairedSummary, SyncReport, ThreadReport, now_s},
};
use serde::Serialize;
use tokio::sync::Mutex;
use zeroize::Zeroizing;

/// File name offered for a recovery kit (in the home folder).
pub const KIT_FILE_NAME: &str = "p1consent-recovery-kit.p1ck";

/// Makes the secret store of the data directory (the keyring in the app, a file in tests).
pub type SecretsFactory = Arc<dyn Fn(&Path) -> Box<dyn SecretStore> + Send + Sync>;

/// Everything the commands share: where the wallet lives and the open wallet.
pub struct AppCore {
    dir: PathBuf,
    secrets: SecretsFactory,
    secrets_kind: String,
    opts: WalletOptions,
    wallet: Mutex<Option<Wallet>>,
    /// A `p1consent://` link the app was started with (or sent) before the UI asked for it.
    pending_link: std::sync::Mutex<Option<String>>,
    /// The task reading the owner's own view (stores readings as they arrive).
    own_reader: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Failed own-view grants per meter (when, why): retried only after [`OWN_RETRY`], so a
    /// broker that is down does not hold the wallet on every refresh of the Devices page.
    own_failed: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, String)>>,
}

/// How long after a failed own-view grant `own_usage` tries again.
const OWN_RETRY: std::time::Duration = std::time::Duration::from_secs(120);

/// How many minutes of readings the live chart shows.
pub const CHART_MINUTES: u64 = 10;
/// At most this many chart points (evenly thinned).
const CHART_POINTS: usize = 120;

/// The owner's own use of one meter, for the Devices page.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OwnUsage {
    /// Power drawn from the grid now (kW), from the latest reading.
    pub power_kw: Option<f64>,
    /// Power fed back into the grid now (kW).
    pub returned_kw: Option<f64>,
    /// When the latest reading was taken (Unix ms).
    pub updated_ms: Option<u64>,
    /// Energy used since `since_ms` (the UI's local midnight), kWh.
    pub today_kwh: Option<f64>,
    /// `(Unix ms, kW drawn minus fed back)` of the last [`CHART_MINUTES`] minutes.
    pub chart: Vec<(u64, f64)>,
    /// Why the own view is not available, in words (the rest is then empty).
    pub problem: Option<String>,
}

/// What one camera frame showed ([`scan_frame`]).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "found", rename_all = "snake_case")]
pub enum FrameScan {
    /// No QR code could be read in this frame: keep looking.
    Nothing,
    /// A QR code that is not a meter's pairing code (e.g. a provider's request).
    Other,
    /// A meter's pairing code: the UI stops the camera and pairs with it (`pair`).
    Pairing {
        /// The `p1consent://pair?...` text.
        code: String,
    },
}

/// Reads one camera frame: `luma` is `width` × `height` bytes of greyscale, row by row (the
/// window scales frames down to at most 640 pixels per side). A frame without a readable QR
/// code is [`FrameScan::Nothing`], not an error; a frame whose size is zero, too large
/// (above [`qr::MAX_FRAME_DIMENSION`] per side) or does not match its bytes is a
/// [`qr::QrError`], checked before any decoding.
pub fn scan_frame(width: u32, height: u32, luma: &[u8]) -> Result<FrameScan, qr::QrError> {
    match qr::decode_luma(width, height, luma) {
        Ok(text) => {
            let text = text.trim();
            if text.starts_with("p1consent://pair?") {
                Ok(FrameScan::Pairing {
                    code: text.to_string(),
                })
            } else {
                Ok(FrameScan::Other)
            }
        }
        // Blur, a code cut by the frame's edge, a hand in front: the next frame may do.
        Err(qr::QrError::NotFound | qr::QrError::Decode(_)) => Ok(FrameScan::Nothing),
        Err(e) => Err(e),
    }
}

/// A failed command, as the sentence the UI shows.
pub type CmdResult<T> = std::result::Result<T, String>;

fn plain(e: WalletError) -> String {
    e.to_string()
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Status {
    pub initialised: bool,
    pub owner: Option<String>,
    pub data_dir: String,
    pub secret_store: String,
    pub broker: Option<String>,
    pub devices: usize,
    pub pending_requests: usize,
    /// Where a recovery kit is offered to be saved (the home folder).
    pub kit_hint: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeviceView {
    pub device: String,
    pub device_id: String,
    pub label: String,
    pub paired: bool,
    pub paired_at: String,
}

/// A request, with its dates already written out.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RequestView {
    #[serde(flatten)]
    pub summary: RequestSummary,
    pub retention: String,
    pub consent_expires: String,
    pub link_expires: String,
}

impl RequestView {
    fn of(summary: RequestSummary) -> Self {
        let retention = match summary.retention_days {
            0 => "not kept after use".to_string(),
            1 => "kept for 1 day".to_string(),
            d => format!("kept for {d} days"),
        };
        Self {
            consent_expires: date(summary.consent_expires_at),
            link_expires: date(summary.link_expires_at),
            retention,
            summary,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConsentView {
    #[serde(flatten)]
    pub line: ConsentLine,
    pub expires: String,
    /// The consent has ended and the meter has acknowledged a key change since it delivered
    /// the key to this provider: nothing sealed from then on can be read by it.
    pub key_changed: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConsentList {
    pub consents: Vec<ConsentView>,
    /// Set when the broker could not be read: the list is what this wallet last saw.
    pub offline: Option<String>,
}

/// What restoring from a recovery kit did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RestoreReport {
    pub status: Status,
    /// The state rebuilt from the signed logs on the broker.
    pub sync: Option<SyncReport>,
    /// Set when the broker could not be read: the identity is restored, the state follows
    /// with the next "Check for updates".
    pub offline: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Audit {
    /// True when every stored entry verified (signatures, chains, decryption, rules).
    pub verified: bool,
    pub entries: usize,
    pub rejected: usize,
    pub threads: Vec<ThreadReport>,
}

impl AppCore {
    pub fn new(
        dir: PathBuf,
        secrets: SecretsFactory,
        secrets_kind: impl Into<String>,
        opts: WalletOptions,
    ) -> Self {
        Self {
            dir,
            secrets,
            secrets_kind: secrets_kind.into(),
            opts,
            wallet: Mutex::new(None),
            pending_link: std::sync::Mutex::new(None),
            own_reader: std::sync::Mutex::new(None),
            own_failed: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `f` on the open wallet, opening it first if there is one on disk.
    async fn with<T>(&self, f: impl AsyncFnOnce(&mut Wallet) -> CmdResult<T>) -> CmdResult<T> {
        let mut guard = self.wallet.lock().await;
        if guard.is_none() {
            let w = Wallet::open(&self.dir, (self.secrets)(&self.dir), self.opts.clone()).map_err(
                |e| match e {
                    WalletError::NotInitialised(_) => {
                        "no identity yet: create one on the Welcome page first".to_string()
                    }
                    e => plain(e),
                },
            )?;
            *guard = Some(w);
        }
        let w = guard.as_mut().expect("opened above");
        f(w).await
    }

    pub async fn status(&self) -> CmdResult<Status> {
        let mut status = Status {
            initialised: false,
            owner: None,
            data_dir: self.dir.display().to_string(),
            secret_store: self.secrets_kind.clone(),
            broker: self.opts.broker.clone(),
            devices: 0,
            pending_requests: 0,
            kit_hint: home_dir()
                .map(|h| h.join(KIT_FILE_NAME).display().to_string())
                .unwrap_or_default(),
        };
        let opened = self
            .with(async |w| {
                let state = w.state_at(now_s());
                Ok((
                    w.owner().to_hex(),
                    w.raw_state().broker.clone(),
                    state.devices.values().filter(|d| d.is_paired()).count(),
                    w.pending_requests().len(),
                ))
            })
            .await;
        if let Ok((owner, broker, devices, pending)) = opened {
            status.initialised = true;
            status.owner = Some(owner);
            status.broker = status.broker.or(broker);
            status.devices = devices;
            status.pending_requests = pending;
        }
        Ok(status)
    }

    /// Creates the owner identity (keys into the secret store, empty state on disk).
    pub async fn create_identity(&self, broker: Option<String>) -> CmdResult<Status> {
        {
            let mut guard = self.wallet.lock().await;
            std::fs::create_dir_all(&self.dir)
                .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
            let mut opts = self.opts.clone();
            if let Some(b) = broker
                .map(|b| b.trim().to_string())
                .filter(|b| !b.is_empty())
            {
                opts.broker = Some(b);
            }
            let w = Wallet::init(&self.dir, (self.secrets)(&self.dir), opts).map_err(plain)?;
            *guard = Some(w);
        }
        self.status().await
    }

    /// Pairs a meter from the text of its pairing link.
    pub async fn pair(&self, code: String) -> CmdResult<PairedSummary> {
        let code = code.trim().to_string();
        if !code.starts_with("p1consent:") {
            return Err(
                "this is not a pairing code: it should start with p1consent://pair".to_string(),
            );
        }
        self.with(async |w| {
            // The owner's own view of the meter (see `p1consent_wallet::own`) is granted right
            // after pairing. If that fails the pairing stands, the summary's `own_view_note`
            // says why, and `own_usage` shows the same words until it tries again by itself
            // ([`OWN_RETRY`]).
            let paired = w.pair_with_own_view(&code).await.map_err(plain)?;
            if let Some(note) = &paired.own_view_note
                && let Ok(mut m) = self.own_failed.lock()
            {
                m.insert(
                    paired.device_id.clone(),
                    (std::time::Instant::now(), note.clone()),
                );
            }
            Ok(paired)
        })
        .await
    }

    /// Starts the own-view reader task unless it runs (inside the tokio runtime).
    fn ensure_own_reader(&self, w: &Wallet) -> CmdResult<()> {
        let mut guard = self
            .own_reader
            .lock()
            .map_err(|_| "the reader of your own data failed".to_string())?;
        if guard.as_ref().is_some_and(|h| !h.is_finished()) {
            return Ok(());
        }
        let mut reader = w.own_reader().map_err(plain)?;
        *guard = Some(tokio::spawn(async move {
            // Readings are stored by the reader; an error ends the task and the next
            // `own_usage` starts a new one.
            while reader.next_event().await.is_ok() {}
        }));
        Ok(())
    }

    /// The owner's own use of `device`: current power, energy since `since_ms` (local
    /// midnight, computed by the UI) and the last minutes for the chart. Grants the own view
    /// first if the meter has none (meters paired before own views existed).
    pub async fn own_usage(&self, device: String, since_ms: u64) -> CmdResult<OwnUsage> {
        self.with(async |w| {
            let mut usage = OwnUsage {
                power_kw: None,
                returned_kw: None,
                updated_ms: None,
                today_kwh: None,
                chart: Vec::new(),
                problem: None,
            };
            let recent_failure = self.own_failed.lock().ok().and_then(|m| {
                m.get(&device)
                    .filter(|(at, _)| at.elapsed() < OWN_RETRY)
                    .map(|(_, why)| why.clone())
            });
            if let Some(why) = recent_failure {
                usage.problem = Some(why);
                return Ok(usage);
            }
            if let Err(e) = w.enable_own_view(&device).await {
                let why = format!("Your own data is not available yet: {}.", plain(e));
                if let Ok(mut m) = self.own_failed.lock() {
                    m.insert(device.clone(), (std::time::Instant::now(), why.clone()));
                }
                usage.problem = Some(why);
                return Ok(usage);
            }
            if let Err(e) = self.ensure_own_reader(w) {
                usage.problem = Some(format!("Your own data is not available yet: {e}."));
            }
            let latest = w.own_latest(&device).map_err(plain)?;
            if let Some(r) = &latest {
                usage.power_kw = r.power_delivered_kw;
                usage.returned_kw = r.power_returned_kw;
                usage.updated_ms = Some(r.timestamp_ms);
                let from = r.timestamp_ms.saturating_sub(CHART_MINUTES * 60_000);
                let until = r.timestamp_ms;
                let points: Vec<(u64, f64)> = w
                    .own_readings(&device, from)
                    .map_err(plain)?
                    .iter()
                    // The reader task may have stored newer readings since `latest` was read:
                    // the chart ends with the reading shown as "now".
                    .filter(|r| r.timestamp_ms <= until)
                    .filter_map(|r| {
                        let d = r.power_delivered_kw?;
                        Some((r.timestamp_ms, d - r.power_returned_kw.unwrap_or(0.0)))
                    })
                    .collect();
                let step = points.len().div_ceil(CHART_POINTS).max(1);
                usage.chart = points.into_iter().step_by(step).collect();
            }
            usage.today_kwh = w.own_consumption_since(&device, since_ms).map_err(plain)?;
            Ok(usage)
        })
        .await
    }

    /// Writes the owner's own data of `device` as `format` (`csv` or `json`) to `path` (a
    /// full path or `~/...`). Returns the full path written.
    pub async fn export_own_data(
        &self,
        device: String,
        format: String,
        path: String,
    ) -> CmdResult<String> {
        let format: ExportFormat = format.parse().map_err(plain)?;
        let path = user_path(&path, "the export")?;
        self.with(async |w| w.export_own_data_to(&device, format, &path).map_err(plain))
            .await?;
        Ok(path.display().to_string())
    }

    /// Pairs a meter from a picture of its QR code (the bytes of a PNG or JPEG file).
    pub async fn pair_image(&self, image: Vec<u8>) -> CmdResult<PairedSummary> {
        let code =
            p1consent_shared::qr::decode_image(&image).map_err(|e| plain(WalletError::Qr(e)))?;
        self.pair(code).await
    }

    pub async fn devices(&self) -> CmdResult<Vec<DeviceView>> {
        self.with(async |w| {
            Ok(w.state_at(now_s())
                .devices
                .values()
                .map(|d| DeviceView {
                    device: d.device.to_hex(),
                    device_id: d.device.opaque_id().to_hex(),
                    label: d.label.clone(),
                    paired: d.is_paired(),
                    paired_at: date(d.paired_at_ms / 1000),
                })
                .collect())
        })
        .await
    }

    /// Verifies a provider's request link and keeps it as pending.
    pub async fn open_request(&self, link: String) -> CmdResult<RequestView> {
        self.with(async |w| w.open_request(&link).map(RequestView::of).map_err(plain))
            .await
    }

    pub async fn pending_requests(&self) -> CmdResult<Vec<RequestView>> {
        self.with(async |w| {
            Ok(w.pending_requests()
                .into_iter()
                .map(RequestView::of)
                .collect())
        })
        .await
    }

    /// Grants a pending request for one paired meter; returns the consent id.
    pub async fn grant(&self, request_id: String, device: String) -> CmdResult<String> {
        self.with(async |w| {
            w.grant(&request_id, &device)
                .await
                .map(|id| id.to_hex())
                .map_err(plain)
        })
        .await
    }

    /// Declines a pending request: forgotten, nothing is sent.
    pub async fn decline(&self, request_id: String) -> CmdResult<RequestView> {
        self.with(async |w| w.decline(&request_id).map(RequestView::of).map_err(plain))
            .await
    }

    /// The consents: read back from the broker when `refresh` (falling back to what this wallet
    /// last saw when the broker cannot be reached), else from the local logs.
    pub async fn consents(&self, refresh: bool) -> CmdResult<ConsentList> {
        self.with(async |w| {
            let (state, offline) = if refresh {
                match w.consents().await {
                    Ok(s) => (s, None),
                    Err(e) => (w.state_at(now_s()), Some(plain(e))),
                }
            } else {
                (w.state_at(now_s()), None)
            };
            let consents = state
                .consents
                .values()
                // The owner's own view is not "someone with access": the Devices page shows it.
                .filter(|c| !w.is_own_view(c))
                .map(|c| {
                    let line = ConsentLine::of(c);
                    // Epochs, not clocks: the owner's and the meter's clocks may differ.
                    let rotation = state
                        .devices
                        .get(&c.grant.device)
                        .and_then(|d| d.last_rotation);
                    let key_changed = c.status != ConsentStatus::Active
                        && match (c.last_key_delivered, rotation) {
                            (Some(k), Some(r)) => r.channel_id == k.channel_id && r.epoch > k.epoch,
                            _ => false,
                        };
                    ConsentView {
                        expires: date(line.expires_at),
                        line,
                        key_changed,
                    }
                })
                .collect();
            Ok(ConsentList { consents, offline })
        })
        .await
    }

    /// Withdraws a consent; with `erase` the provider is also asked to erase what it received.
    pub async fn revoke(&self, consent_id: String, erase: bool) -> CmdResult<String> {
        self.with(async |w| {
            w.revoke(&consent_id, erase)
                .await
                .map(|id| id.to_hex())
                .map_err(plain)
        })
        .await
    }

    /// Verifies every stored log from scratch.
    pub async fn audit(&self) -> CmdResult<Audit> {
        self.with(async |w| {
            let threads = w.verify_log();
            let entries = threads.iter().map(|t| t.entries.len()).sum();
            let rejected = threads.iter().map(|t| t.rejected.len()).sum();
            Ok(Audit {
                verified: rejected == 0,
                entries,
                rejected,
                threads,
            })
        })
        .await
    }

    /// The owner-signed receipt (JSON) of a consent.
    pub async fn receipt(&self, consent_id: String) -> CmdResult<String> {
        self.with(async |w| w.receipt(&consent_id).map_err(plain))
            .await
    }

    /// Rebuilds the state from the broker (second wallet, or after a reinstall).
    pub async fn sync(&self) -> CmdResult<SyncReport> {
        self.with(async |w| w.sync().await.map_err(plain)).await
    }

    /// Saves a recovery kit (the owner's keys, protected with `passphrase`) to `path`.
    /// Returns the full path written.
    pub async fn export_recovery(&self, passphrase: String, path: String) -> CmdResult<String> {
        let passphrase = Zeroizing::new(passphrase);
        let path = user_path(&path, "the recovery kit")?;
        let default_broker = self.opts.broker.clone();
        self.with(async |w| {
            let broker = default_broker.or_else(|| w.raw_state().broker.clone());
            recovery::save(
                &path,
                w.identity(),
                broker.as_deref(),
                &passphrase,
                KdfParams::default(),
            )
            .map_err(|e| e.to_string())
        })
        .await?;
        Ok(path.display().to_string())
    }

    /// Takes over the identity in the recovery kit at `path` (this folder must have no
    /// wallet yet), then rebuilds the state from the signed logs on the broker: `broker` if
    /// given (a kit saved before the first pairing knows none), else the kit's.
    pub async fn import_recovery(
        &self,
        path: String,
        passphrase: String,
        broker: Option<String>,
    ) -> CmdResult<RestoreReport> {
        let passphrase = Zeroizing::new(passphrase);
        let path = user_path(&path, "the recovery kit")?;
        let kit = recovery::load(&path, &passphrase).map_err(|e| e.to_string())?;
        {
            let mut guard = self.wallet.lock().await;
            if guard.is_some() {
                return Err(plain(WalletError::AlreadyInitialised(self.dir.clone())));
            }
            std::fs::create_dir_all(&self.dir)
                .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
            let mut opts = self.opts.clone();
            if opts.broker.is_none() {
                opts.broker = broker
                    .map(|b| b.trim().to_string())
                    .filter(|b| !b.is_empty())
                    .or_else(|| kit.broker.clone());
            }
            let w = Wallet::init_with_identity(
                &self.dir,
                (self.secrets)(&self.dir),
                kit.identity,
                opts,
            )
            .map_err(plain)?;
            *guard = Some(w);
        }
        let (sync, offline) = match self.sync().await {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(e)),
        };
        Ok(RestoreReport {
            status: self.status().await?,
            sync,
            offline,
        })
    }

    /// Remembers a link the app was opened with until the UI takes it.
    pub fn set_pending_link(&self, link: String) {
        *self.pending_link.lock().unwrap_or_else(|p| p.into_inner()) = Some(link);
    }

    /// The link the app was opened with, once.
    pub fn take_pending_link(&self) -> Option<String> {
        self.pending_link
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// Whether `url` is one of ours (`p1consent://request?...` or `p1consent://pair?...`).
pub fn is_our_link(url: &str) -> bool {
    let u = url.trim();
    u.starts_with("p1consent://request") || u.starts_with("p1consent://pair")
}

fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// A file path typed by the owner: full, or starting with `~/`. A relative path would land
/// wherever the app happened to start, so it is refused.
fn user_path(text: &str, what: &str) -> CmdResult<PathBuf> {
    let t = text.trim();
    if t.is_empty() {
        return Err(format!("choose a file for {what}"));
    }
    let p = match t.strip_prefix("~/") {
        Some(rest) => home_dir()
            .ok_or_else(|| "the home folder is not known: give the full path".to_string())?
            .join(rest),
        None => PathBuf::from(t),
    };
    if !p.is_absolute() {
        return Err(format!(
            "give the full path of the file (starting with / or ~/), not {t:?}"
        ));
    }
    Ok(p)
}

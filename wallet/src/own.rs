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
    wallet::{Wallet, now_s},
};

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
pub struct OwnReader {
    provider: Provider,
}

impl OwnReader {
    /// Processes broker traffic for `d` (readings are stored as they arrive) and returns the
    /// events seen.
    pub async fn run_for(&mut self, d: Duration) -> Result<Vec<ProviderEvent>> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.provider.next_event()).await {
                Err(_) => return Ok(out),
                Ok(Ok(ev)) => out.push(ev),
                Ok(Err(e)) => return Err(WalletError::OwnView(e.to_string())),
            }
        }
    }

    /// The next event (readings are stored before it returns).
    pub async fn next_event(&mut self) -> Result<ProviderEvent> {
        self.provider
            .next_event()
            .await
            .map_err(|e| WalletError::OwnView(e.to_string()))
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

    /// Connects the own-view reader (inside a tokio runtime).
    pub fn own_reader(&self) -> Result<OwnReader> {
        let keys = own_view_keys(self.identity());
        let url = self.broker_url()?.to_string();
        let opts = ProviderOptions {
            client_id: Some(self.own_client_id(&keys)?),
            session_expiry_s: Some(7 * 86_400),
            store_readings: true,
        };
        let provider = Provider::connect_with(keys, &url, &self.own_view_dir(), opts)
            .map_err(|e| WalletError::OwnView(e.to_string()))?;
        Ok(OwnReader { provider })
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

    /// The stored readings of `device` (id prefix or label) at or after `since_ms`, oldest
    /// first. Damaged lines are skipped.
    pub fn own_readings(&self, device: &str, since_ms: u64) -> Result<Vec<OwnReading>> {
        let mut out = Vec::new();
        for (cid, _) in self.own_consents(device)? {
            let path = self
                .own_view_dir()
                .join("data")
                .join(format!("{cid}.jsonl"));
            read_lines(&path, since_ms, &mut out)?;
        }
        out.sort_by_key(|r| (r.timestamp_ms, r.seq));
        Ok(out)
    }

    /// The latest reading of `device` within the last day (`None` if the meter sent nothing
    /// for a day).
    pub fn own_latest(&self, device: &str) -> Result<Option<OwnReading>> {
        let since = crate::wallet::now_ms().saturating_sub(86_400_000);
        Ok(self.own_readings(device, since)?.pop())
    }

    /// Energy delivered since `since_ms` (e.g. local midnight): the latest meter total minus
    /// the first one at or after `since_ms`, in kWh. `None` without two readings.
    pub fn own_consumption_since(&self, device: &str, since_ms: u64) -> Result<Option<f64>> {
        let r = self.own_readings(device, since_ms)?;
        let first = r.iter().find_map(|r| r.energy_delivered_kwh);
        let last = r.iter().rev().find_map(|r| r.energy_delivered_kwh);
        Ok(match (first, last) {
            (Some(a), Some(b)) if r.len() >= 2 => Some((b - a).max(0.0)),
            _ => None,
        })
    }

    /// The owner's own data of `device` as CSV or JSON text.
    pub fn export_own_data(&self, device: &str, format: ExportFormat) -> Result<String> {
        let r = self.own_readings(device, 0)?;
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
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// CSV of readings (numbers only: nothing needs quoting).
pub fn to_csv(r: &[OwnReading]) -> String {
    let mut s = String::from(
        "timestamp_ms,seq,power_delivered_kw,power_returned_kw,energy_delivered_kwh,energy_returned_kwh,gas_m3\n",
    );
    for x in r {
        s.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            x.timestamp_ms,
            x.seq,
            opt(x.power_delivered_kw),
            opt(x.power_returned_kw),
            opt(x.energy_delivered_kwh),
            opt(x.energy_returned_kwh),
            opt(x.gas_m3),
        ));
    }
    s
}

#[derive(Deserialize)]
struct Line {
    seq: u64,
    timestamp_ms: u64,
    payload: serde_json::Value,
}

/// Where to start reading `f` (of `len` bytes) for readings at or after `since_ms`: a binary
/// search over byte offsets (the agent's timestamps grow along the file), so the Devices page
/// reads the last minutes of a file of months without reading the months. It may start a
/// little early, never late for increasing timestamps; each line is still filtered.
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
            .and_then(|l| serde_json::from_slice::<Line>(l).ok())
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

fn read_lines(path: &Path, since_ms: u64, out: &mut Vec<OwnReading>) -> Result<()> {
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
        let Ok(line) = serde_json::from_slice::<Line>(l) else {
            continue;
        };
        if line.timestamp_ms < since_ms {
            continue;
        }
        let Ok(bytes) = serde_json::to_vec(&line.payload) else {
            continue;
        };
        let Ok(p) = ViewPayload::from_bytes(&bytes) else {
            continue;
        };
        if let Some(r) = OwnReading::of(line.seq, line.timestamp_ms, &p) {
            out.push(r);
        }
    }
    Ok(())
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
    fn csv_has_a_header_and_empty_cells_for_missing_values() {
        let r = OwnReading {
            timestamp_ms: 5,
            seq: 1,
            power_delivered_kw: Some(0.5),
            power_returned_kw: None,
            energy_delivered_kwh: Some(1.25),
            energy_returned_kwh: None,
            gas_m3: None,
        };
        assert_eq!(
            to_csv(&[r]),
            "timestamp_ms,seq,power_delivered_kw,power_returned_kw,energy_delivered_kwh,\
             energy_returned_kwh,gas_m3\n5,1,0.5,,1.25,,\n"
        );
    }
}

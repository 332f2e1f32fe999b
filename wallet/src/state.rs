//! The wallet's non-secret state: threads (envelope and every verified entry, as bytes),
//! pending requests and the unacknowledged outbox. One JSON file, replaced atomically.
//! Nothing in it is trusted on load: every entry is verified again before it counts.

use std::{collections::BTreeMap, io::Read, path::Path};

use serde::{Deserialize, Serialize};

use crate::{
    error::{Result, WalletError},
    secrets::write_atomic,
    transport::Outgoing,
};

pub const STATE_VERSION: u32 = 1;
/// Largest state file accepted.
const MAX_STATE_FILE: u64 = 256 * 1024 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalletState {
    pub version: u32,
    /// The broker the wallet uses (from the first pairing code, or set explicitly).
    pub broker: Option<String>,
    /// Thread id (hex) → thread.
    pub threads: BTreeMap<String, ThreadRecord>,
    /// Request id (hex) → request the owner opened and has not answered yet.
    pub requests: BTreeMap<String, PendingRequest>,
    /// Messages written but not yet acknowledged by the broker, in order.
    pub outbox: Vec<OutboxItem>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadRecord {
    /// The thread key envelope (hex), as published.
    pub envelope: Option<String>,
    /// Device participant, Ed25519 public key hex (known from pairing or the grant).
    pub device: Option<String>,
    /// Provider participant (consent threads).
    pub provider: Option<String>,
    /// Verified entries of all roles (hex).
    pub entries: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingRequest {
    /// The signed request bytes (hex).
    pub request: String,
    /// When the owner opened it (unix seconds).
    pub opened_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxItem {
    pub topic: String,
    pub payload: String,
    pub retain: bool,
}

impl OutboxItem {
    pub fn to_outgoing(&self) -> Option<Outgoing> {
        Some(Outgoing {
            topic: self.topic.clone(),
            payload: p1consent_shared::crypto::unhex(&self.payload)?,
            retain: self.retain,
            expiry_s: None,
        })
    }
}

impl WalletState {
    pub fn new() -> Self {
        Self {
            version: STATE_VERSION,
            ..Default::default()
        }
    }

    pub fn load(path: &Path) -> Result<Option<Self>> {
        let f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(WalletError::io(path, e)),
        };
        let mut bytes = Vec::new();
        f.take(MAX_STATE_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| WalletError::io(path, e))?;
        let corrupt = |reason: String| WalletError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        if bytes.len() as u64 > MAX_STATE_FILE {
            return Err(corrupt("larger than 256 MiB".into()));
        }
        let s: WalletState = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if s.version != STATE_VERSION {
            return Err(corrupt(format!("unsupported state version {}", s.version)));
        }
        Ok(Some(s))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| WalletError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        write_atomic(path, &bytes, true)
    }
}

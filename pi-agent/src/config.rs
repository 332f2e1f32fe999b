//! Agent configuration: a TOML file with documented defaults, overridable by environment
//! variables (`P1C_*`) and command-line flags. See docs/AGENT.md for every key.

use std::{net::SocketAddr, path::PathBuf};

use p1consent_shared::{crypto::KemSuite, mqtt::BrokerUrl};
use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path} is larger than 1 MiB")]
    TooLarge { path: PathBuf },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

/// Where telegrams come from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// The P1 port (a USB serial cable).
    Serial,
    /// A capture file, replayed.
    Replay,
    /// Simulated DSMR 5 meter (no hardware needed).
    Simulator,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeterConfig {
    /// `serial` (default), `replay` or `simulator`.
    pub source: SourceKind,
    /// Serial device, e.g. /dev/ttyUSB0.
    pub serial_path: PathBuf,
    /// `auto` (default), `dsmr45` (115200 8N1) or `dsmr22` (9600 7E1).
    pub serial_mode: String,
    /// Capture file for `replay`.
    pub replay_file: Option<PathBuf>,
    /// Replay at the recorded pace (true, default) or as fast as possible.
    pub replay_recorded_pace: bool,
    /// Start the capture again when it ends.
    pub replay_loop: bool,
    /// Simulator: milliseconds between telegrams (1000 = a DSMR 5 meter).
    pub simulator_interval_ms: u64,
}

impl Default for MeterConfig {
    fn default() -> Self {
        Self {
            source: SourceKind::Serial,
            serial_path: PathBuf::from("/dev/ttyUSB0"),
            serial_mode: "auto".into(),
            replay_file: None,
            replay_recorded_pace: true,
            replay_loop: true,
            simulator_interval_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// External broker URL (`mqtt://` or `mqtts://`). Empty: run the embedded broker.
    pub url: Option<String>,
    /// Where the embedded broker listens.
    pub embedded_listen: SocketAddr,
    /// The broker address written into the pairing QR code (what the wallet connects to).
    /// Default: the external URL, or `mqtt://<this host's LAN address>:<port>`.
    pub advertise: Option<String>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            url: None,
            embedded_listen: SocketAddr::from(([0, 0, 0, 0], 1883)),
            advertise: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PairingConfig {
    /// Name shown in the wallet for this meter.
    pub label: String,
    /// How long a pairing QR code stays valid, seconds.
    pub offer_ttl_s: u64,
    /// Also write the QR code as an SVG file here (default: `<state_dir>/pairing-qr.svg`).
    pub qr_svg: Option<PathBuf>,
    /// Failed pairing messages accepted per minute before the agent ignores more.
    pub max_attempts_per_minute: u32,
}

impl Default for PairingConfig {
    fn default() -> Self {
        Self {
            label: "My meter".into(),
            offer_ttl_s: 600,
            qr_svg: None,
            max_attempts_per_minute: 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Directory for the identity, the state database and the status file.
    pub state_dir: PathBuf,
    /// KEM suite of the device's own key: `x25519-sntrup761` (default) or `x25519-mlkem768`.
    pub kem_suite: String,
    /// Broker-side lifetime of data records when no consent says otherwise, seconds.
    pub default_data_expiry_s: u32,
    pub meter: MeterConfig,
    pub broker: BrokerConfig,
    pub pairing: PairingConfig,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/p1consent"),
            kem_suite: KemSuite::DEFAULT.name().into(),
            default_data_expiry_s: 86_400,
            meter: MeterConfig::default(),
            broker: BrokerConfig::default(),
            pairing: PairingConfig::default(),
        }
    }
}

impl AgentConfig {
    /// Reads the file (if given), then applies `P1C_*` environment overrides.
    pub fn load(path: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let mut cfg = match path {
            None => Self::default(),
            Some(p) => {
                let meta = std::fs::metadata(p).map_err(|e| ConfigError::Read {
                    path: p.into(),
                    source: e,
                })?;
                if meta.len() > 1024 * 1024 {
                    return Err(ConfigError::TooLarge { path: p.into() });
                }
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
                    path: p.into(),
                    source: e,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: p.into(),
                    message: e.to_string(),
                })?
            }
        };
        cfg.apply_env(|k| std::env::var(k).ok())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Environment overrides; `get` is injectable for tests.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get("P1C_STATE_DIR") {
            self.state_dir = v.into();
        }
        if let Some(v) = get("P1C_BROKER_URL") {
            self.broker.url = if v.is_empty() { None } else { Some(v) };
        }
        if let Some(v) = get("P1C_BROKER_LISTEN") {
            self.broker.embedded_listen = v.parse().map_err(|_| ConfigError::Invalid {
                key: "P1C_BROKER_LISTEN".into(),
                message: format!("{v:?} is not an address like 0.0.0.0:1883"),
            })?;
        }
        if let Some(v) = get("P1C_BROKER_ADVERTISE") {
            self.broker.advertise = Some(v);
        }
        if let Some(v) = get("P1C_SOURCE") {
            self.meter.source = match v.as_str() {
                "serial" => SourceKind::Serial,
                "replay" => SourceKind::Replay,
                "simulator" => SourceKind::Simulator,
                other => {
                    return Err(ConfigError::Invalid {
                        key: "P1C_SOURCE".into(),
                        message: format!("{other:?}: expected serial, replay or simulator"),
                    });
                }
            };
        }
        if let Some(v) = get("P1C_SERIAL_PATH") {
            self.meter.serial_path = v.into();
        }
        if let Some(v) = get("P1C_REPLAY_FILE") {
            self.meter.replay_file = Some(v.into());
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.kem_suite()?;
        self.broker_url()?;
        if self.meter.source == SourceKind::Replay && self.meter.replay_file.is_none() {
            return Err(ConfigError::Invalid {
                key: "meter.replay_file".into(),
                message: "the replay source needs a capture file".into(),
            });
        }
        if !["auto", "dsmr45", "dsmr22"].contains(&self.meter.serial_mode.as_str()) {
            return Err(ConfigError::Invalid {
                key: "meter.serial_mode".into(),
                message: "expected auto, dsmr45 or dsmr22".into(),
            });
        }
        if self.meter.simulator_interval_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "meter.simulator_interval_ms".into(),
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }

    pub fn kem_suite(&self) -> Result<KemSuite, ConfigError> {
        KemSuite::from_name(&self.kem_suite).ok_or_else(|| ConfigError::Invalid {
            key: "kem_suite".into(),
            message: format!(
                "{:?}: expected x25519-sntrup761 or x25519-mlkem768",
                self.kem_suite
            ),
        })
    }

    /// The external broker, or None for the embedded one.
    pub fn broker_url(&self) -> Result<Option<BrokerUrl>, ConfigError> {
        match &self.broker.url {
            None => Ok(None),
            Some(u) => u.parse().map(Some).map_err(|e| ConfigError::Invalid {
                key: "broker.url".into(),
                message: format!("{e}"),
            }),
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.state_dir.join("agent.redb")
    }
    pub fn identity_path(&self) -> PathBuf {
        self.state_dir.join("device.key")
    }
    pub fn status_path(&self) -> PathBuf {
        self.state_dir.join("status.json")
    }
    pub fn offer_path(&self) -> PathBuf {
        self.state_dir.join("pairing-offer.json")
    }
    pub fn qr_svg_path(&self) -> PathBuf {
        self.pairing
            .qr_svg
            .clone()
            .unwrap_or_else(|| self.state_dir.join("pairing-qr.svg"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = AgentConfig::default();
        c.validate().unwrap();
        assert_eq!(c.meter.source, SourceKind::Serial);
        assert_eq!(c.broker.embedded_listen.port(), 1883);
        assert!(c.broker_url().unwrap().is_none());
    }

    #[test]
    fn toml_and_env_overrides() {
        let mut c: AgentConfig = toml::from_str(
            r#"
            state_dir = "/tmp/x"
            [meter]
            source = "simulator"
            [broker]
            url = "mqtt://broker.lan:1884"
            "#,
        )
        .unwrap();
        assert_eq!(c.meter.source, SourceKind::Simulator);
        assert_eq!(c.broker_url().unwrap().unwrap().port, 1884);
        c.apply_env(|k| match k {
            "P1C_BROKER_URL" => Some(String::new()),
            "P1C_SOURCE" => Some("replay".into()),
            "P1C_REPLAY_FILE" => Some("/tmp/cap.txt".into()),
            _ => None,
        })
        .unwrap();
        assert!(c.broker_url().unwrap().is_none());
        assert_eq!(c.meter.source, SourceKind::Replay);
        c.validate().unwrap();
    }

    #[test]
    fn bad_values_are_clear_errors() {
        assert!(toml::from_str::<AgentConfig>("unknown_key = 1").is_err());
        let mut c = AgentConfig::default();
        let e = c
            .apply_env(|k| (k == "P1C_SOURCE").then(|| "usb".to_string()))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("expected serial, replay or simulator")
        );
        let c = AgentConfig {
            kem_suite: "rsa".into(),
            ..AgentConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("kem_suite"));
        let mut c = AgentConfig::default();
        c.broker.url = Some("http://x".into());
        assert!(c.validate().is_err());
    }
}

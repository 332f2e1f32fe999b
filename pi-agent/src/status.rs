//! What `pi-agent status` shows: written by the running agent to `<state_dir>/status.json`
//! every two seconds, read by the `status` command.

use p1consent_shared::crypto::PublicId;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConsentStatusLine {
    pub consent: String,
    pub provider: String,
    pub view: String,
    pub channel: String,
    pub epoch: u32,
    pub expires_at: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Status {
    pub device: String,
    pub device_id: String,
    pub updated_ms: u64,
    pub meter_seen: bool,
    pub source_connected: bool,
    pub source_detail: Option<String>,
    pub source_last_error: Option<String>,
    pub last_telegram_ms: Option<u64>,
    pub telegrams: u64,
    pub parse_errors: u64,
    pub sealed: u64,
    pub paired_owner: Option<String>,
    pub pairing_link: Option<String>,
    /// The broker address the running agent puts in pairing codes (so `pi-agent pair` gives
    /// the same one, including a `run --listen` port the config file does not know).
    #[serde(default)]
    pub broker_hint: Option<String>,
    pub broker_connected: bool,
    pub outbox_depth: u64,
    pub consents: Vec<ConsentStatusLine>,
}

impl Status {
    /// No report for 10 s (it is written every 2 s): the agent is not running.
    pub fn is_stale(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.updated_ms) > 10_000
    }

    pub fn new(device: PublicId) -> Self {
        Self {
            device: device.to_hex(),
            device_id: device.opaque_id().to_hex(),
            ..Self::default()
        }
    }

    /// Plain-language report for the owner.
    pub fn render(&self, now_ms: u64) -> String {
        let mut out = String::new();
        let age = |ms: u64| -> String {
            let s = now_ms.saturating_sub(ms) / 1000;
            if s < 120 {
                format!("{s} s ago")
            } else {
                format!("{} min ago", s / 60)
            }
        };
        out.push_str(&format!("Device        {}\n", self.device_id));
        let stale = self.is_stale(now_ms);
        out.push_str(&format!(
            "Agent         {}\n",
            if stale {
                format!("NOT RUNNING (last report {})", age(self.updated_ms))
            } else {
                "running".into()
            }
        ));
        out.push_str(&format!(
            "Meter         {}\n",
            match (self.meter_seen, self.last_telegram_ms) {
                (true, Some(t)) => format!(
                    "seen, last telegram {} ({} in total)",
                    age(t),
                    self.telegrams
                ),
                _ => "no telegram yet".into(),
            }
        ));
        if let Some(d) = &self.source_detail {
            out.push_str(&format!(
                "Source        {d}{}\n",
                if self.source_connected {
                    ""
                } else {
                    " (disconnected)"
                }
            ));
        }
        if let Some(e) = &self.source_last_error {
            out.push_str(&format!("Last problem  {e}\n"));
        }
        out.push_str(&format!(
            "Paired        {}\n",
            match &self.paired_owner {
                Some(o) => format!("yes, owner {}…", &o[..o.len().min(16)]),
                None =>
                    "no — scan the pairing code with the wallet (`pi-agent pair` shows it)".into(),
            }
        ));
        out.push_str(&format!(
            "Broker        {}\n",
            if self.broker_connected {
                "connected"
            } else {
                "not connected"
            }
        ));
        out.push_str(&format!(
            "Outbox        {} message(s) waiting\n",
            self.outbox_depth
        ));
        if self.consents.is_empty() {
            out.push_str("Consents      none active\n");
        } else {
            out.push_str("Consents\n");
            for c in &self.consents {
                out.push_str(&format!(
                    "  {} — {} — view {} (channel {}, key epoch {})\n",
                    c.consent, c.provider, c.view, c.channel, c.epoch
                ));
            }
        }
        out
    }
}

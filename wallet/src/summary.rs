//! Plain-language views of requests and consents for the owner.

use p1consent_shared::{
    consent::{ConsentRecord, ConsentStatus, SignedRequest},
    crypto::hex,
};
use serde::Serialize;

/// What a provider asks for, in words an owner can judge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestSummary {
    pub request_id: String,
    pub consent_id: String,
    pub controller: String,
    pub contact: String,
    /// Provider's Ed25519 key, hex.
    pub provider_key: String,
    pub purpose: String,
    pub policy_url: Option<String>,
    pub jurisdiction: String,
    pub fields: Vec<FieldLine>,
    pub resolution: String,
    pub resolution_description: String,
    pub retention_days: u32,
    pub consent_expires_at: u64,
    pub link_expires_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldLine {
    pub name: String,
    pub description: String,
}

impl RequestSummary {
    pub fn of(req: &SignedRequest) -> Self {
        let c = req.content();
        Self {
            request_id: hex(&req.id()),
            consent_id: req.consent_id().to_hex(),
            controller: c.controller.clone(),
            contact: c.contact.clone(),
            provider_key: c.provider.to_hex(),
            purpose: c.purpose.clone(),
            policy_url: c.policy_url.clone(),
            jurisdiction: c.jurisdiction.clone(),
            fields: c
                .fields
                .iter()
                .map(|f| FieldLine {
                    name: f.name().into(),
                    description: f.description().into(),
                })
                .collect(),
            resolution: c.resolution.name().into(),
            resolution_description: c.resolution.description().into(),
            retention_days: c.retention_days,
            consent_expires_at: c.consent_expires_at,
            link_expires_at: c.link_expires_at,
        }
    }
}

impl std::fmt::Display for RequestSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} ({}) asks to receive data from your smart meter.",
            self.controller, self.contact
        )?;
        writeln!(f, "Why: {}", self.purpose)?;
        writeln!(f, "What they would receive:")?;
        for l in &self.fields {
            writeln!(f, "  - {}", l.description)?;
        }
        writeln!(f, "How detailed: {}", self.resolution_description)?;
        let kept = match self.retention_days {
            0 => "not kept after use".to_string(),
            1 => "kept for 1 day".to_string(),
            d => format!("kept for {d} days"),
        };
        writeln!(f, "How long they keep it: {kept}")?;
        writeln!(
            f,
            "Access ends: {} (unless you revoke it earlier)",
            date(self.consent_expires_at)
        )?;
        writeln!(f, "Law that applies: {}", self.jurisdiction)?;
        if let Some(p) = &self.policy_url {
            writeln!(f, "Privacy policy: {p}")?;
        }
        writeln!(f, "This request can be answered until {}.", date(self.link_expires_at))?;
        write!(f, "Request id: {}", &self.request_id[..16])
    }
}

/// One consent, for listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsentLine {
    pub consent_id: String,
    pub controller: String,
    pub purpose: String,
    pub device: String,
    pub fields: Vec<String>,
    pub resolution: String,
    pub status: String,
    pub erase_requested: bool,
    pub expires_at: u64,
    pub key_delivered_epoch: Option<u32>,
    pub erasure_confirmed: bool,
}

impl ConsentLine {
    pub fn of(c: &ConsentRecord) -> Self {
        let req = c.grant.request.content();
        Self {
            consent_id: c.grant.consent_id.to_hex(),
            controller: req.controller.clone(),
            purpose: req.purpose.clone(),
            device: c.grant.device.opaque_id().to_hex(),
            fields: c.grant.fields.iter().map(|f| f.name().to_string()).collect(),
            resolution: c.grant.resolution.name().into(),
            status: c.status.name().into(),
            erase_requested: matches!(
                c.status,
                ConsentStatus::Revoked {
                    erase_requested: true,
                    ..
                }
            ),
            expires_at: c.grant.expires_at,
            key_delivered_epoch: c.last_key_delivered.map(|k| k.epoch),
            erasure_confirmed: c.erasure_confirmed_at_ms.is_some(),
        }
    }
}

impl std::fmt::Display for ConsentLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}  {:<9} {} — {} [{}; {}] until {}",
            &self.consent_id[..12],
            self.status,
            self.controller,
            self.purpose,
            self.fields.join(", "),
            self.resolution,
            date(self.expires_at)
        )?;
        match self.key_delivered_epoch {
            Some(e) if self.status == "active" => write!(f, "; meter delivered the key (epoch {e})")?,
            None if self.status == "active" => write!(f, "; waiting for the meter")?,
            _ => {}
        }
        if self.erase_requested {
            write!(
                f,
                "; erasure {}",
                if self.erasure_confirmed { "confirmed" } else { "requested" }
            )?;
        }
        Ok(())
    }
}

/// `YYYY-MM-DD HH:MM UTC` for unix seconds.
pub fn date(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3600,
        (secs % 3600) / 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::date(0), "1970-01-01 00:00 UTC");
        assert_eq!(super::date(1_767_225_600), "2026-01-01 00:00 UTC");
        assert_eq!(super::date(951_782_400 + 3661), "2000-02-29 01:01 UTC");
    }
}

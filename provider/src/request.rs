//! Building a signed consent request and its `p1consent://request?...` link.

use p1consent_shared::consent::{
    FieldSet, Resolution,
    request::{RequestDraft, RequestError, SignedRequest},
};
use p1consent_shared::crypto;
use thiserror::Error;

use crate::keys::ProviderKeys;

/// Why a request could not be built or rendered.
#[derive(Debug, Error)]
pub enum BuildError {
    #[error("missing {0}")]
    Missing(&'static str),
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("QR code: {0}")]
    Qr(#[from] p1consent_shared::qr::QrError),
}

/// A request to the owner for data: who asks (controller and contact), why (purpose), what
/// (fields at a resolution), for how long (retention, expiry). [`RequestBuilder::build`]
/// validates and signs it with the provider's key (shared `consent::request`).
///
/// ```
/// use p1consent_provider::{ProviderKeys, RequestBuilder};
/// use p1consent_shared::consent::{Field, FieldSet, Resolution, SignedRequest};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let keys = ProviderKeys::generate(p1consent_shared::crypto::KemSuite::DEFAULT);
/// let now = 1_767_225_600;
/// let req = RequestBuilder::new("Wattt Insights B.V.", "privacy@wattt.example")
///     .purpose("Energy saving advice")
///     .fields(FieldSet::empty().with(Field::EnergyDelivered))
///     .resolution(Resolution::QuarterHour)
///     .retention_days(90)
///     .valid_for(30 * 86_400)
///     .build_at(&keys, now)?;
/// let link = req.to_link();
/// assert!(link.starts_with("p1consent://request?v=1&d="));
/// let verified = SignedRequest::from_link(&link, now)?;
/// assert_eq!(verified.content().provider, keys.public());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    controller: String,
    contact: String,
    purpose: Option<String>,
    policy_url: Option<String>,
    jurisdiction: String,
    fields: FieldSet,
    resolution: Resolution,
    retention_days: u32,
    consent_secs: u64,
    link_secs: Option<u64>,
}

impl RequestBuilder {
    /// A request from `controller` (the legal entity), reachable at `contact`.
    pub fn new(controller: impl Into<String>, contact: impl Into<String>) -> Self {
        Self {
            controller: controller.into(),
            contact: contact.into(),
            purpose: None,
            policy_url: None,
            jurisdiction: "EU".into(),
            fields: FieldSet::empty(),
            resolution: Resolution::QuarterHour,
            retention_days: 30,
            consent_secs: 365 * 86_400,
            link_secs: None,
        }
    }
    pub fn purpose(mut self, p: impl Into<String>) -> Self {
        self.purpose = Some(p.into());
        self
    }
    pub fn policy_url(mut self, url: impl Into<String>) -> Self {
        self.policy_url = Some(url.into());
        self
    }
    /// `NL`, `EU`, ... (default `EU`).
    pub fn jurisdiction(mut self, j: impl Into<String>) -> Self {
        self.jurisdiction = j.into();
        self
    }
    pub fn fields(mut self, f: FieldSet) -> Self {
        self.fields = f;
        self
    }
    pub fn resolution(mut self, r: Resolution) -> Self {
        self.resolution = r;
        self
    }
    pub fn retention_days(mut self, d: u32) -> Self {
        self.retention_days = d;
        self
    }
    /// How long the consent may last, from creation (seconds; default one year).
    pub fn valid_for(mut self, secs: u64) -> Self {
        self.consent_secs = secs;
        self
    }
    /// How long the link may be answered (seconds; default: as long as the consent).
    pub fn link_valid_for(mut self, secs: u64) -> Self {
        self.link_secs = Some(secs);
        self
    }

    /// Validates and signs at the current time.
    pub fn build(&self, keys: &ProviderKeys) -> Result<SignedRequest, BuildError> {
        self.build_at(keys, crate::now_ms() / 1000)
    }

    /// Validates and signs as if the time were `now` (unix seconds).
    pub fn build_at(&self, keys: &ProviderKeys, now: u64) -> Result<SignedRequest, BuildError> {
        let purpose = self.purpose.clone().ok_or(BuildError::Missing("purpose"))?;
        let consent_expires_at = now.saturating_add(self.consent_secs);
        let link_expires_at = match self.link_secs {
            Some(s) => now.saturating_add(s).min(consent_expires_at),
            None => consent_expires_at,
        };
        let draft = RequestDraft {
            provider_kem: keys.kem_public().clone(),
            controller: self.controller.clone(),
            contact: self.contact.clone(),
            purpose,
            policy_url: self.policy_url.clone(),
            jurisdiction: self.jurisdiction.clone(),
            fields: self.fields,
            resolution: self.resolution,
            retention_days: self.retention_days,
            consent_expires_at,
            link_expires_at,
            nonce: crypto::random_bytes(),
            created_at: now,
        };
        Ok(SignedRequest::create(keys.signing(), draft)?)
    }
}

/// The link as a QR code for a terminal (Unicode half blocks).
pub fn terminal_qr(link: &str) -> Result<String, BuildError> {
    Ok(p1consent_shared::qr::render_terminal(link)?)
}

/// The link as a PNG QR code (8 pixels per module).
pub fn png_qr(link: &str) -> Result<Vec<u8>, BuildError> {
    Ok(p1consent_shared::qr::render_png(link, 8)?)
}

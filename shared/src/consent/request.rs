//! The provider's signed consent request (message type 0x10) and its deep-link form.
//!
//! The link is hostile input: it is length-checked before anything else, parsed strictly,
//! and its content is returned only after the provider's signature verified and every
//! rule and time check passed.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use thiserror::Error;

use super::scope::{FieldSet, MAX_RETENTION_DAYS, Resolution};
use crate::crypto::{
    CryptoError, KemPublicKey, OpaqueId, PUBLIC_ID_LEN, PublicId, SIGNATURE_LEN, SYMMETRIC_SUITE,
    SigningIdentity, hash,
};
use crate::wire::{Reader, WireError, Writer};

pub const MSG_REQUEST: u8 = 0x10;
pub const MAX_CONTROLLER_LEN: usize = 100;
pub const MAX_CONTACT_LEN: usize = 200;
pub const MAX_PURPOSE_LEN: usize = 500;
pub const MAX_POLICY_URL_LEN: usize = 200;
pub const MAX_JURISDICTION_LEN: usize = 8;
/// Largest encoded request (all text fields at their limits, ML-KEM-768 key) fits here.
pub const MAX_REQUEST_LEN: usize = 2560;
/// Longest accepted link, in characters (bytes: the link is ASCII).
pub const MAX_LINK_LEN: usize = 4096;
/// Allowed clock skew for `created_at`.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;
pub const LINK_PREFIX: &str = "p1consent://request?";

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestError {
    #[error("not a P1 Consent request link: {0}")]
    BadLink(&'static str),
    #[error("link too long: {len} characters, limit {limit}")]
    TooLong { len: usize, limit: usize },
    #[error("malformed request: {0}")]
    Malformed(WireError),
    #[error("the provider's signature does not verify")]
    BadSignature,
    #[error("this request link expired at {at} (unix seconds)")]
    LinkExpired { at: u64 },
    #[error("the consent period asked for has already ended")]
    ConsentAlreadyExpired,
    #[error("request was created in the future (clock skew over 5 minutes)")]
    FromTheFuture,
    #[error("invalid {field}: {reason}")]
    Invalid {
        field: &'static str,
        reason: &'static str,
    },
}

impl From<WireError> for RequestError {
    fn from(e: WireError) -> Self {
        RequestError::Malformed(e)
    }
}

fn from_crypto(e: CryptoError, field: &'static str) -> RequestError {
    match e {
        CryptoError::Wire(w) => RequestError::Malformed(w),
        CryptoError::BadSignature => RequestError::BadSignature,
        _ => RequestError::Malformed(WireError::Invalid {
            field,
            reason: "invalid public key",
        }),
    }
}

/// What a provider fills in; [`SignedRequest::create`] validates and signs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestDraft {
    pub provider_kem: KemPublicKey,
    pub controller: String,
    pub contact: String,
    pub purpose: String,
    pub policy_url: Option<String>,
    pub jurisdiction: String,
    pub fields: FieldSet,
    pub resolution: Resolution,
    pub retention_days: u32,
    pub consent_expires_at: u64,
    pub link_expires_at: u64,
    pub nonce: [u8; 16],
    pub created_at: u64,
}

/// The verified content of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRequest {
    pub provider: PublicId,
    pub provider_kem: KemPublicKey,
    pub controller: String,
    pub contact: String,
    pub purpose: String,
    pub policy_url: Option<String>,
    pub jurisdiction: String,
    pub fields: FieldSet,
    pub resolution: Resolution,
    pub retention_days: u32,
    pub consent_expires_at: u64,
    pub link_expires_at: u64,
    pub nonce: [u8; 16],
    pub created_at: u64,
}

/// A request whose signature and rules have been checked (but not its times: an embedded
/// request in an old grant is legitimately past its link expiry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    content: ProviderRequest,
    bytes: Vec<u8>,
}

/// A request from a link, checked at a given time: safe to show to the owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRequest {
    signed: SignedRequest,
}

impl VerifiedRequest {
    pub fn content(&self) -> &ProviderRequest {
        &self.signed.content
    }
    pub fn signed(&self) -> &SignedRequest {
        &self.signed
    }
    pub fn into_signed(self) -> SignedRequest {
        self.signed
    }
}

fn check_text(
    field: &'static str,
    s: &str,
    max: usize,
    allow_empty: bool,
) -> Result<(), RequestError> {
    if s.len() > max {
        return Err(RequestError::Invalid {
            field,
            reason: "too long",
        });
    }
    if !allow_empty && s.trim().is_empty() {
        return Err(RequestError::Invalid {
            field,
            reason: "must not be empty",
        });
    }
    // Control characters (incl. bidi overrides) could disguise what the owner reads.
    if s.chars().any(|c| {
        c.is_control()
            || ('\u{202A}'..='\u{202E}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    }) {
        return Err(RequestError::Invalid {
            field,
            reason: "contains control characters",
        });
    }
    Ok(())
}

impl ProviderRequest {
    /// Every rule a request must satisfy (independent of the current time).
    pub fn validate(&self) -> Result<(), RequestError> {
        check_text("controller", &self.controller, MAX_CONTROLLER_LEN, false)?;
        check_text("contact", &self.contact, MAX_CONTACT_LEN, false)?;
        check_text("purpose", &self.purpose, MAX_PURPOSE_LEN, false)?;
        if let Some(url) = &self.policy_url {
            check_text("policy_url", url, MAX_POLICY_URL_LEN, false)?;
            let rest = url.strip_prefix("https://").ok_or(RequestError::Invalid {
                field: "policy_url",
                reason: "must start with https://",
            })?;
            if rest.is_empty() || rest.starts_with('/') || rest.chars().any(char::is_whitespace) {
                return Err(RequestError::Invalid {
                    field: "policy_url",
                    reason: "must name a host and contain no spaces",
                });
            }
        }
        let j = &self.jurisdiction;
        if j.len() < 2
            || j.len() > MAX_JURISDICTION_LEN
            || !j
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(RequestError::Invalid {
                field: "jurisdiction",
                reason: "2 to 8 characters A-Z, 0-9 or '-' (e.g. NL, EU)",
            });
        }
        if self.fields.is_empty() {
            return Err(RequestError::Invalid {
                field: "fields",
                reason: "must request at least one field",
            });
        }
        if self.retention_days > MAX_RETENTION_DAYS {
            return Err(RequestError::Invalid {
                field: "retention_days",
                reason: "at most 3650 days",
            });
        }
        if self.consent_expires_at <= self.created_at {
            return Err(RequestError::Invalid {
                field: "consent_expires_at",
                reason: "must be after created_at",
            });
        }
        if self.link_expires_at <= self.created_at {
            return Err(RequestError::Invalid {
                field: "link_expires_at",
                reason: "must be after created_at",
            });
        }
        if self.link_expires_at > self.consent_expires_at {
            return Err(RequestError::Invalid {
                field: "link_expires_at",
                reason: "must not be after consent_expires_at",
            });
        }
        Ok(())
    }

    /// The time checks a link must pass at `now` (unix seconds).
    pub fn check_time(&self, now: u64) -> Result<(), RequestError> {
        if self.created_at > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
            return Err(RequestError::FromTheFuture);
        }
        if self.link_expires_at <= now {
            return Err(RequestError::LinkExpired {
                at: self.link_expires_at,
            });
        }
        if self.consent_expires_at <= now {
            return Err(RequestError::ConsentAlreadyExpired);
        }
        Ok(())
    }

    fn encode_unsigned(&self) -> Writer {
        let mut w = Writer::with_header(MSG_REQUEST, SYMMETRIC_SUITE);
        w.raw(self.provider.as_bytes());
        self.provider_kem.write(&mut w);
        w.str16(&self.controller)
            .str16(&self.contact)
            .str16(&self.purpose)
            .str16(self.policy_url.as_deref().unwrap_or(""))
            .str16(&self.jurisdiction)
            .u32(self.fields.bits())
            .u32(self.resolution.seconds())
            .u32(self.retention_days)
            .u64(self.consent_expires_at)
            .u64(self.link_expires_at)
            .raw(&self.nonce)
            .u64(self.created_at);
        w
    }
}

impl SignedRequest {
    /// Validates the draft, then signs it as `provider`.
    pub fn create(
        provider: &SigningIdentity,
        draft: RequestDraft,
    ) -> Result<SignedRequest, RequestError> {
        let content = ProviderRequest {
            provider: provider.public(),
            provider_kem: draft.provider_kem,
            controller: draft.controller,
            contact: draft.contact,
            purpose: draft.purpose,
            policy_url: draft.policy_url,
            jurisdiction: draft.jurisdiction,
            fields: draft.fields,
            resolution: draft.resolution,
            retention_days: draft.retention_days,
            consent_expires_at: draft.consent_expires_at,
            link_expires_at: draft.link_expires_at,
            nonce: draft.nonce,
            created_at: draft.created_at,
        };
        content.validate()?;
        let mut w = content.encode_unsigned();
        let sig = provider.sign(w.as_slice());
        w.raw(&sig);
        let bytes = w.into_bytes();
        if bytes.len() > MAX_REQUEST_LEN {
            return Err(RequestError::Malformed(WireError::TooLarge {
                size: bytes.len(),
                limit: MAX_REQUEST_LEN,
            }));
        }
        Ok(SignedRequest { content, bytes })
    }

    /// Decodes request bytes: size, header, provider key, **signature**, then fields and
    /// rules. No time checks (see [`ProviderRequest::check_time`]).
    pub fn decode(bytes: &[u8]) -> Result<SignedRequest, RequestError> {
        let (mut r, suite) = Reader::with_header(bytes, MSG_REQUEST, MAX_REQUEST_LEN)?;
        if suite != SYMMETRIC_SUITE {
            return Err(WireError::UnsupportedSuite(suite).into());
        }
        let provider = PublicId::read(&mut r).map_err(|e| from_crypto(e, "provider"))?;
        // Verify before parsing anything else: the rest is the provider's word only if signed.
        let min = 3 + PUBLIC_ID_LEN + SIGNATURE_LEN;
        if bytes.len() < min {
            return Err(WireError::Truncated {
                offset: bytes.len(),
                needed: min - bytes.len(),
            }
            .into());
        }
        let split = bytes.len() - SIGNATURE_LEN;
        let mut sig = [0u8; SIGNATURE_LEN];
        sig.copy_from_slice(&bytes[split..]);
        provider
            .verify(&bytes[..split], &sig)
            .map_err(|e| from_crypto(e, "provider"))?;
        let mut r = Reader::new(&bytes[..split]);
        r.raw(3 + PUBLIC_ID_LEN)?;
        let provider_kem =
            KemPublicKey::read(&mut r).map_err(|e| from_crypto(e, "provider_kem"))?;
        let controller = r.str16("controller", MAX_CONTROLLER_LEN)?.to_owned();
        let contact = r.str16("contact", MAX_CONTACT_LEN)?.to_owned();
        let purpose = r.str16("purpose", MAX_PURPOSE_LEN)?.to_owned();
        let policy_url = r.str16("policy_url", MAX_POLICY_URL_LEN)?;
        let policy_url = (!policy_url.is_empty()).then(|| policy_url.to_owned());
        let jurisdiction = r.str16("jurisdiction", MAX_JURISDICTION_LEN)?.to_owned();
        let fields = FieldSet::from_bits(r.u32()?)?;
        let resolution = Resolution::from_seconds(r.u32()?)?;
        let retention_days = r.u32()?;
        let consent_expires_at = r.u64()?;
        let link_expires_at = r.u64()?;
        let nonce = r.array()?;
        let created_at = r.u64()?;
        r.finish()?;
        let content = ProviderRequest {
            provider,
            provider_kem,
            controller,
            contact,
            purpose,
            policy_url,
            jurisdiction,
            fields,
            resolution,
            retention_days,
            consent_expires_at,
            link_expires_at,
            nonce,
            created_at,
        };
        content.validate()?;
        Ok(SignedRequest {
            content,
            bytes: bytes.to_vec(),
        })
    }

    /// Decodes and checks the times at `now` (unix seconds).
    pub fn verify_at(bytes: &[u8], now: u64) -> Result<VerifiedRequest, RequestError> {
        let signed = Self::decode(bytes)?;
        signed.content.check_time(now)?;
        Ok(VerifiedRequest { signed })
    }

    pub fn content(&self) -> &ProviderRequest {
        &self.content
    }
    /// The exact signed bytes (embedded in a grant).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// `hash("p1consent/v1/request-id", [signed bytes])`.
    pub fn id(&self) -> [u8; 32] {
        hash("p1consent/v1/request-id", &[&self.bytes])
    }
    /// The consent id a grant of this request carries: the first 16 bytes of [`Self::id`].
    pub fn consent_id(&self) -> OpaqueId {
        let mut id = [0u8; 16];
        id.copy_from_slice(&self.id()[..16]);
        OpaqueId(id)
    }

    /// `p1consent://request?v=1&d=<base64url, no padding>`.
    pub fn to_link(&self) -> String {
        format!("{LINK_PREFIX}v=1&d={}", URL_SAFE_NO_PAD.encode(&self.bytes))
    }

    /// Parses a link strictly, verifies the signature and rules, checks the times at `now`.
    pub fn from_link(link: &str, now: u64) -> Result<VerifiedRequest, RequestError> {
        if link.len() > MAX_LINK_LEN {
            return Err(RequestError::TooLong {
                len: link.len(),
                limit: MAX_LINK_LEN,
            });
        }
        let query = link
            .strip_prefix(LINK_PREFIX)
            .ok_or(RequestError::BadLink("expected p1consent://request?"))?;
        let mut version = None;
        let mut data = None;
        for param in query.split('&') {
            let (k, v) = param
                .split_once('=')
                .ok_or(RequestError::BadLink("parameter without '='"))?;
            let slot = match k {
                "v" => &mut version,
                "d" => &mut data,
                _ => return Err(RequestError::BadLink("unknown parameter")),
            };
            if slot.replace(v).is_some() {
                return Err(RequestError::BadLink("repeated parameter"));
            }
        }
        match version {
            Some("1") => {}
            Some(_) => return Err(RequestError::BadLink("unsupported link version")),
            None => return Err(RequestError::BadLink("missing v")),
        }
        let data = data.ok_or(RequestError::BadLink("missing d"))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(data)
            .map_err(|_| RequestError::BadLink("d is not base64url without padding"))?;
        Self::verify_at(&bytes, now)
    }
}

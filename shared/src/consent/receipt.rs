//! Consent receipts: JSON shaped after ISO/IEC TS 27560, signed by the owner.
//!
//! The signature covers the exact bytes of `serde_json::to_vec(&receipt)` (struct field
//! order is fixed, no maps, no floats), so anyone can verify offline by parsing, re-serialising
//! and checking Ed25519. Unknown fields are refused.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::fold::{ConsentState, ConsentStatus, HistoryKind};
use crate::crypto::{OpaqueId, PublicId, SigningIdentity, hex, unhex};

pub const RECEIPT_SCHEMA: &str = "p1consent-receipt/1 (ISO/IEC TS 27560)";
pub const MAX_RECEIPT_JSON: usize = 256 * 1024;
pub const WITHDRAWAL_METHOD: &str =
    "Revoke in the P1 Consent wallet; takes effect at the meter within seconds";

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReceiptError {
    #[error("receipt too large: {size} bytes, limit {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("receipt is not valid JSON of the expected shape: {0}")]
    Json(String),
    #[error("unsupported schema version or signature algorithm")]
    Unsupported,
    #[error("bad public key or signature encoding")]
    BadEncoding,
    #[error("signature does not verify")]
    BadSignature,
    #[error("signed by someone other than the expected owner")]
    WrongOwner,
    #[error("the signer is not the receipt's principal")]
    PrincipalMismatch,
    #[error("no consent with that id")]
    UnknownConsent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Party {
    pub name: String,
    pub contact: String,
    /// Ed25519 public key, hex.
    pub public_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    /// The owner's Ed25519 public key, hex.
    pub public_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataCategory {
    pub name: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolutionInfo {
    pub seconds: u32,
    pub name: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validity {
    /// Unix seconds.
    pub from: u64,
    /// Unix seconds.
    pub until: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptEvent {
    /// Unix milliseconds.
    pub time_ms: u64,
    /// given | key_delivered | withdrawn | erasure_requested | expired | erasure_confirmed
    #[serde(rename = "type")]
    pub kind: String,
    /// The consent's state after the event: active | withdrawn | expired.
    pub state: String,
    pub validity: Validity,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub schema_version: String,
    /// Consent id, hex (16 bytes).
    pub record_id: String,
    /// Request id (hash of the provider's signed request), hex.
    pub request_id: String,
    pub principal: Principal,
    pub controller: Party,
    pub purpose: String,
    pub data_categories: Vec<DataCategory>,
    pub recipients: Vec<Party>,
    /// The meter device (Ed25519 public key, hex) the data comes from.
    pub source_device: String,
    pub resolution: ResolutionInfo,
    pub retention_days: u32,
    pub jurisdiction: String,
    pub withdrawal_method: String,
    pub policy_url: Option<String>,
    pub state: String,
    pub events: Vec<ReceiptEvent>,
    /// Unix seconds.
    pub issued_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptSignature {
    pub alg: String,
    pub public_key: String,
    pub value: String,
}

/// `{"receipt": {...}, "signature": {"alg": "Ed25519", "public_key": hex, "value": hex}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedReceipt {
    pub receipt: Receipt,
    pub signature: ReceiptSignature,
}

fn canonical(r: &Receipt) -> Result<Vec<u8>, ReceiptError> {
    serde_json::to_vec(r).map_err(|e| ReceiptError::Json(e.to_string()))
}

impl Receipt {
    /// The receipt of consent `consent_id` as folded in `state`.
    pub fn from_state(
        state: &ConsentState,
        consent_id: &OpaqueId,
        owner: &PublicId,
        issued_at: u64,
    ) -> Result<Receipt, ReceiptError> {
        let c = state
            .consents
            .get(consent_id)
            .ok_or(ReceiptError::UnknownConsent)?;
        let g = &c.grant;
        let req = g.request.content();
        let provider = Party {
            name: req.controller.clone(),
            contact: req.contact.clone(),
            public_key: req.provider.to_hex(),
        };
        let validity = Validity {
            from: c.granted_at_ms / 1000,
            until: g.expires_at,
        };
        let mut current = "active";
        let mut events = Vec::new();
        for h in &c.history {
            let kind = match h.kind {
                HistoryKind::Given => "given",
                HistoryKind::KeyDelivered { .. } => "key_delivered",
                HistoryKind::Withdrawn {
                    erase_requested: false,
                } => "withdrawn",
                HistoryKind::Withdrawn {
                    erase_requested: true,
                } => "erasure_requested",
                HistoryKind::Expired => "expired",
                HistoryKind::ErasureConfirmed => "erasure_confirmed",
            };
            current = match h.kind {
                HistoryKind::Withdrawn { .. } => "withdrawn",
                HistoryKind::Expired => "expired",
                _ => current,
            };
            events.push(ReceiptEvent {
                time_ms: h.at_ms,
                kind: kind.to_owned(),
                state: current.to_owned(),
                validity: validity.clone(),
            });
        }
        Ok(Receipt {
            schema_version: RECEIPT_SCHEMA.to_owned(),
            record_id: consent_id.to_hex(),
            request_id: hex(&g.request.id()),
            principal: Principal {
                public_key: owner.to_hex(),
            },
            controller: provider.clone(),
            purpose: req.purpose.clone(),
            data_categories: g
                .fields
                .iter()
                .map(|f| DataCategory {
                    name: f.name().to_owned(),
                    description: f.description().to_owned(),
                })
                .collect(),
            recipients: vec![provider],
            source_device: g.device.to_hex(),
            resolution: ResolutionInfo {
                seconds: g.resolution.seconds(),
                name: g.resolution.name().to_owned(),
                description: g.resolution.description().to_owned(),
            },
            retention_days: req.retention_days,
            jurisdiction: req.jurisdiction.clone(),
            withdrawal_method: WITHDRAWAL_METHOD.to_owned(),
            policy_url: req.policy_url.clone(),
            state: match c.status {
                ConsentStatus::Active => "active",
                ConsentStatus::Revoked { .. } => "withdrawn",
                ConsentStatus::Expired { .. } => "expired",
            }
            .to_owned(),
            events,
            issued_at,
        })
    }

    /// Signs the canonical serialisation as the owner.
    pub fn sign(&self, owner: &SigningIdentity) -> Result<SignedReceipt, ReceiptError> {
        let sig = owner.sign(&canonical(self)?);
        Ok(SignedReceipt {
            receipt: self.clone(),
            signature: ReceiptSignature {
                alg: "Ed25519".to_owned(),
                public_key: owner.public().to_hex(),
                value: hex(&sig),
            },
        })
    }
}

impl SignedReceipt {
    pub fn to_json(&self) -> Result<String, ReceiptError> {
        serde_json::to_string_pretty(self).map_err(|e| ReceiptError::Json(e.to_string()))
    }

    /// Parses (size-limited, unknown fields refused), checks the signer is the principal
    /// (and `expected_owner` if given), and verifies the signature over the re-serialised
    /// receipt.
    pub fn verify(json: &str, expected_owner: Option<&PublicId>) -> Result<Receipt, ReceiptError> {
        if json.len() > MAX_RECEIPT_JSON {
            return Err(ReceiptError::TooLarge {
                size: json.len(),
                limit: MAX_RECEIPT_JSON,
            });
        }
        let s: SignedReceipt =
            serde_json::from_str(json).map_err(|e| ReceiptError::Json(e.to_string()))?;
        if s.signature.alg != "Ed25519" || s.receipt.schema_version != RECEIPT_SCHEMA {
            return Err(ReceiptError::Unsupported);
        }
        let pk: [u8; 32] = unhex(&s.signature.public_key)
            .and_then(|v| v.try_into().ok())
            .ok_or(ReceiptError::BadEncoding)?;
        let signer = PublicId::from_bytes(pk).map_err(|_| ReceiptError::BadEncoding)?;
        let sig: [u8; 64] = unhex(&s.signature.value)
            .and_then(|v| v.try_into().ok())
            .ok_or(ReceiptError::BadEncoding)?;
        if let Some(exp) = expected_owner
            && *exp != signer
        {
            return Err(ReceiptError::WrongOwner);
        }
        if !s
            .receipt
            .principal
            .public_key
            .eq_ignore_ascii_case(&s.signature.public_key)
        {
            return Err(ReceiptError::PrincipalMismatch);
        }
        signer
            .verify(&canonical(&s.receipt)?, &sig)
            .map_err(|_| ReceiptError::BadSignature)?;
        Ok(s.receipt)
    }
}

//! P1 Consent for data users ("providers"): ask an owner for smart-meter data, receive the
//! keys the owner's device hands out, and read the sealed channels while the consent lasts.
//!
//! - [`keys`]: the provider's identity (Ed25519) and KEM key, in a passphrase-protected file.
//! - [`request`]: [`RequestBuilder`] → a signed request → `p1consent://request?...` link / QR.
//! - [`client`]: [`Provider`] follows its inbox, the consent threads and the granted
//!   channels, and yields [`ProviderEvent`]s; erasure requests are honoured and confirmed.
//! - [`dashboard`]: the live local web page of `p1consent-provider dashboard` (feature `cli`,
//!   on by default).
//! - [`verify_receipt`]: checks an owner-signed consent receipt.
//!
//! All protocol and cryptography is `p1consent-shared`'s; this crate routes and stores.

pub mod client;
#[cfg(feature = "cli")]
pub mod dashboard;
pub mod fsutil;
pub mod keys;
pub mod request;

pub use client::{
    ConsentInfo, ConsentPhase, Provider, ProviderError, ProviderEvent, ProviderOptions,
    ReadingLine, read_state,
};
pub use keys::{KdfParams, KeyFileError, Protection, ProviderKeys};
pub use request::{BuildError, RequestBuilder};

use p1consent_shared::{
    consent::receipt::{Receipt, ReceiptError, SignedReceipt},
    crypto::PublicId,
};

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Verifies a consent receipt (JSON, as the owner's wallet exports it) signed by `owner`.
///
/// ```
/// use p1consent_provider::verify_receipt;
/// use p1consent_shared::crypto::SigningIdentity;
/// let owner = SigningIdentity::generate();
/// assert!(verify_receipt("{not json", &owner.public()).is_err());
/// ```
pub fn verify_receipt(json: &str, owner: &PublicId) -> Result<Receipt, ReceiptError> {
    SignedReceipt::verify(json, Some(owner))
}

/// Parses an owner key given as 64 hex characters.
pub fn parse_public_key(hex: &str) -> Option<PublicId> {
    let v = p1consent_shared::crypto::unhex(hex.trim())?;
    PublicId::from_bytes(v.try_into().ok()?).ok()
}

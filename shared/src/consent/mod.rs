//! Consent: scopes, requests, the owner log, receipts.
//!
//! - [`scope`]: meter fields, resolutions, retention, in plain words.
//! - [`request`]: the provider's signed request (0x10) and its `p1consent://` link.
//! - [`thread`]: thread ids and keys, the thread key envelope (0x11).
//! - [`log`]: log entries (0x12), event bodies, writer and verifier.
//! - [`fold`]: the owner's devices and consents from verified entries.
//! - [`receipt`]: ISO/IEC TS 27560-shaped JSON receipts signed by the owner.
//!
//! Byte layouts and rules: docs/PROTOCOL.md (Consent).

pub mod fold;
pub mod log;
pub mod receipt;
pub mod request;
pub mod scope;
pub mod thread;

pub use fold::{ConsentRecord, ConsentState, ConsentStatus, DeviceRecord};
pub use log::{
    Event, Grant, LogError, LogVerifier, LogWriter, Participants, ThreadLog, VerifiedEntry,
};
pub use receipt::{Receipt, ReceiptError, SignedReceipt};
pub use request::{ProviderRequest, RequestDraft, RequestError, SignedRequest, VerifiedRequest};
pub use scope::{Field, FieldSet, Resolution};
pub use thread::{OwnerRoot, Role, ThreadEnvelope, ThreadKey};

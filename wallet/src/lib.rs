//! The P1 Consent owner wallet, headless: the library the CLI (and later the desktop app)
//! is built on.
//!
//! - [`Wallet`]: identity, state, and the owner's operations: pair a meter, open a
//!   provider's request link, grant, decline, revoke, unpair, read the consents back from the
//!   broker, verify the logs, issue receipts, rebuild from the broker (second wallet).
//! - [`secrets`]: where the owner's keys live ([`SecretStore`], [`FileSecretStore`]).
//! - [`recovery`]: the recovery kit (the owner's keys, passphrase-protected) for another
//!   device.
//! - [`transport`]: the MQTT session (acknowledged publishing, reading retained state).
//!
//! All protocol and cryptography come from `p1consent-shared`.

pub mod error;
pub mod identity;
pub mod own;
pub mod pairing;
pub mod recovery;
pub mod secrets;
pub mod state;
pub mod summary;
pub mod transport;
pub mod wallet;

pub use error::{Result, WalletError};
pub use identity::OwnerIdentity;
pub use own::{
    CompactReport, ExportFormat, OwnAggregate, OwnReader, OwnReading, OwnRow, RowResolution,
};
pub use recovery::{KdfParams, Recovered, RecoveryError};
pub use secrets::{FileSecretStore, MemorySecretStore, SecretStore};
pub use summary::{ConsentLine, RequestSummary};
pub use wallet::{GrantScope, Wallet, WalletOptions};

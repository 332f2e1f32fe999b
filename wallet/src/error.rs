//! Every way a wallet operation can fail, as one typed error whose `Display` is a single
//! plain sentence (the CLI prints exactly that).

use std::path::PathBuf;

use p1consent_shared::{
    consent::{LogError, ReceiptError, RequestError},
    mqtt::UrlError,
    pairing::{PairingError, RejectReason},
    qr::QrError,
};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum WalletError {
    #[error("no wallet in {0}: run `p1consent-wallet init` first")]
    NotInitialised(PathBuf),
    #[error("a wallet already exists in {0}")]
    AlreadyInitialised(PathBuf),
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is damaged: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("secret store: {0}")]
    Secret(String),

    // ---- pairing
    #[error("this is not a valid pairing code: {0}")]
    BadPairingCode(PairingError),
    #[error("the pairing code has expired: ask the meter for a new one")]
    PairingCodeExpired,
    #[error("the meter refused the pairing ({}): {}", reason_name(*.0), reason_advice(*.0))]
    PairingRejected(RejectReason),
    #[error("pairing failed: {0}")]
    Pairing(PairingError),
    #[error("this meter is already paired with this wallet")]
    AlreadyPaired,
    #[error("cannot read a QR code from the image: {0}")]
    Qr(#[from] QrError),

    // ---- broker
    #[error("the broker address is not valid: {0}")]
    BrokerUrl(#[from] UrlError),
    #[error("no broker address known: pass --broker mqtt://host:port")]
    NoBroker,
    #[error("cannot reach the broker at {url} within {secs} s")]
    BrokerUnreachable { url: String, secs: u64 },
    #[error("no response from {what} within {secs} s")]
    NoResponse { what: &'static str, secs: u64 },
    #[error(
        "the broker did not confirm {pending} message(s) within {secs} s; they are kept and sent again with the next command"
    )]
    NotAcknowledged { pending: usize, secs: u64 },
    #[error("the broker connection closed")]
    LinkClosed,

    // ---- requests and consents
    #[error("the request link is not valid: {0}")]
    Request(#[from] RequestError),
    #[error("no pending request matches {0:?}")]
    UnknownRequest(String),
    #[error("no consent matches {0:?}")]
    UnknownConsent(String),
    #[error("no paired meter matches {0:?}")]
    UnknownDevice(String),
    #[error("{0:?} matches more than one item: use more characters")]
    Ambiguous(String),
    #[error("the consent {0} is not active")]
    ConsentNotActive(String),
    #[error("this request was already granted (consent {0})")]
    AlreadyGranted(String),
    #[error("cannot grant that: {0}")]
    BadScope(String),
    #[error("the request has already expired")]
    RequestExpired,
    #[error(
        "the meter and the provider use different key types; this provider cannot be granted access to this meter"
    )]
    SuiteMismatch,
    #[error("consent log: {0}")]
    Log(#[from] LogError),
    #[error("own view: {0}")]
    OwnView(String),
    #[error("receipt: {0}")]
    Receipt(#[from] ReceiptError),
}

fn reason_name(r: RejectReason) -> &'static str {
    match r {
        RejectReason::BadProof => "wrong answer",
        RejectReason::TooManyAttempts => "too many attempts",
        RejectReason::ChallengeExpired => "challenge expired",
    }
}

fn reason_advice(r: RejectReason) -> &'static str {
    match r {
        RejectReason::BadProof => "the code scanned does not match the meter's current code",
        RejectReason::TooManyAttempts => "show a new pairing code on the meter and scan it",
        RejectReason::ChallengeExpired => "try again a little faster, or with a new code",
    }
}

impl WalletError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<PairingError> for WalletError {
    fn from(e: PairingError) -> Self {
        match e {
            PairingError::Expired => Self::PairingCodeExpired,
            PairingError::Rejected { reason } => Self::PairingRejected(reason),
            PairingError::BadLink(_) | PairingError::Malformed(_) => Self::BadPairingCode(e),
            other => Self::Pairing(other),
        }
    }
}

pub type Result<T, E = WalletError> = std::result::Result<T, E>;

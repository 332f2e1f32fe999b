//! The wallet side of pairing over the broker: claim → challenge → answer → result.

use std::{
    io::Read,
    path::Path,
    time::{Duration, Instant},
};

use p1consent_shared::{
    crypto::{SigningIdentity, hex},
    mqtt::BrokerUrl,
    pairing::{Claim, PairedDevice, PairingError, PairingInvite, WalletPairing},
    qr, topics,
};

use crate::{
    error::{Result, WalletError},
    transport::{Outgoing, Session},
};

/// How often a claim or answer is sent again while nothing comes back.
const RESEND_EVERY: Duration = Duration::from_secs(2);

/// The pairing link from what the owner gave: the link text itself, or the path of an image
/// (PNG) with the QR code.
pub fn read_pairing_code(input: &str) -> Result<String> {
    let input = input.trim();
    if input.starts_with("p1consent:") {
        return Ok(input.to_string());
    }
    let path = Path::new(input);
    let f = std::fs::File::open(path).map_err(|e| WalletError::io(path, e))?;
    let mut bytes = Vec::new();
    f.take(qr::MAX_IMAGE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| WalletError::io(path, e))?;
    if bytes.len() > qr::MAX_IMAGE_BYTES {
        return Err(qr::QrError::ImageTooLarge {
            size: bytes.len(),
            max: qr::MAX_IMAGE_BYTES,
        }
        .into());
    }
    Ok(qr::decode_image(&bytes)?)
}

/// Runs the exchange with the device of `invite` through the broker at `url`.
pub async fn run(
    invite: PairingInvite,
    wallet: &SigningIdentity,
    url: &BrokerUrl,
    timeout: Duration,
    now: impl Fn() -> u64,
) -> Result<PairedDevice> {
    let device = invite.device_opaque_id();
    let (claim, mut awaiting) = WalletPairing::start(invite, wallet, now())?;
    let nonce = Claim::decode(&claim)?.wallet_nonce;
    let resp = topics::pair_responses(&device, &hex(&nonce));
    let req = topics::pair_requests(&device);
    let mut s = Session::connect(url, vec![resp.clone()], timeout).await?;
    let out = |payload: &[u8]| Outgoing {
        topic: req.clone(),
        payload: payload.to_vec(),
        retain: false,
        expiry_s: Some(300),
    };

    // Claim → challenge.
    let deadline = Instant::now() + timeout;
    let mut last_error: Option<PairingError> = None;
    let mut sent = Instant::now();
    s.send(&out(&claim))?;
    let (answer, mut awaiting_result) = loop {
        let until = deadline.min(sent + RESEND_EVERY);
        match s.next_message(until).await? {
            Some(m) if m.topic == resp && !m.payload.is_empty() => {
                match awaiting.on_challenge(&m.payload, wallet, now()) {
                    Ok(next) => break next,
                    Err(step) => {
                        // Possibly injected: keep waiting for the genuine challenge.
                        last_error = Some(step.error.clone());
                        awaiting = step.into_state();
                    }
                }
            }
            Some(_) => {}
            None if Instant::now() >= deadline => {
                return Err(match last_error {
                    Some(e) => e.into(),
                    None => WalletError::NoResponse {
                        what: "the meter",
                        secs: timeout.as_secs(),
                    },
                });
            }
            None => {
                s.send(&out(awaiting.claim_bytes()))?;
                sent = Instant::now();
            }
        }
    };

    // Answer → result.
    let deadline = Instant::now() + timeout;
    let mut last_error: Option<PairingError> = None;
    let mut sent = Instant::now();
    s.send(&out(&answer))?;
    loop {
        let until = deadline.min(sent + RESEND_EVERY);
        match s.next_message(until).await? {
            Some(m) if m.topic == resp && !m.payload.is_empty() => {
                match awaiting_result.on_result(&m.payload) {
                    Ok(paired) => return Ok(paired),
                    Err(step) => {
                        if let PairingError::Rejected { reason } = step.error {
                            return Err(WalletError::PairingRejected(reason));
                        }
                        last_error = Some(step.error.clone());
                        awaiting_result = step.into_state();
                    }
                }
            }
            Some(_) => {}
            None if Instant::now() >= deadline => {
                return Err(match last_error {
                    Some(e) => e.into(),
                    None => WalletError::NoResponse {
                        what: "the meter",
                        secs: timeout.as_secs(),
                    },
                });
            }
            None => {
                s.send(&out(awaiting_result.answer_bytes()))?;
                sent = Instant::now();
            }
        }
    }
}

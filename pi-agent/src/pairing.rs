//! The device side of pairing: the one-time offer behind the QR code, the exchange over the
//! broker, and a rate limit on failures.
//!
//! The offer lives in `<state_dir>/pairing-offer.json` (mode 0600) so `pi-agent pair`, run
//! while the daemon is running, can replace it: the daemon reloads the file when it changes.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::SystemTime,
};

use p1consent_shared::{
    crypto::{KemPublicKey, PublicId, hex, random_bytes, unhex},
    pairing::{Answer, Claim, DevicePairing, MSG_ANSWER, MSG_CLAIM, PairedOwner, PairingOffer},
    topics,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::identity::{DeviceIdentity, write_private};

#[derive(Serialize, Deserialize)]
struct OfferFile {
    device: String,
    secret: String,
    expires_at: u64,
    broker_hint: String,
    label: Option<String>,
}

/// Creates a fresh offer for `device`, saves it (0600) and returns its link.
pub fn new_offer(
    path: &Path,
    device: PublicId,
    broker_hint: &str,
    label: &str,
    expires_at: u64,
) -> Result<Zeroizing<String>, String> {
    let secret = Zeroizing::new(random_bytes::<16>());
    let label = (!label.is_empty()).then_some(label);
    let offer = PairingOffer::with_secret(device, broker_hint, label, expires_at, secret.clone())
        .map_err(|e| format!("cannot make a pairing code: {e}"))?;
    let f = OfferFile {
        device: device.to_hex(),
        secret: hex(&secret[..]),
        expires_at,
        broker_hint: broker_hint.into(),
        label: label.map(str::to_owned),
    };
    let text = Zeroizing::new(serde_json::to_string(&f).map_err(|e| e.to_string())?);
    write_private(path, text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(offer.to_link())
}

fn load_offer(path: &Path, device: PublicId) -> Option<PairingOffer> {
    let text = Zeroizing::new(std::fs::read_to_string(path).ok()?);
    if text.len() > 4096 {
        return None;
    }
    let f: OfferFile = serde_json::from_str(&text).ok()?;
    if f.device != device.to_hex() {
        return None; // an offer of a previous identity
    }
    let s = Zeroizing::new(unhex(&f.secret)?);
    let secret: Zeroizing<[u8; 16]> = Zeroizing::new(s.as_slice().try_into().ok()?);
    PairingOffer::with_secret(
        device,
        &f.broker_hint,
        f.label.as_deref(),
        f.expires_at,
        secret,
    )
    .ok()
}

pub fn offer_link(path: &Path, device: PublicId) -> Option<(Zeroizing<String>, u64)> {
    load_offer(path, device).map(|o| (o.to_link(), o.expires_at()))
}

/// What the agent should do after a pairing message.
pub enum PairingStep {
    Nothing,
    Reply {
        topic: String,
        bytes: Vec<u8>,
    },
    Paired {
        owner: PairedOwner,
        topic: String,
        bytes: Vec<u8>,
    },
}

pub struct PairingService {
    path: PathBuf,
    device: PublicId,
    current: Option<(Option<SystemTime>, DevicePairing)>,
    sessions: HashMap<PublicId, String>,
    window_start: u64,
    failures_in_window: u32,
    max_failures_per_minute: u32,
}

impl PairingService {
    pub fn new(path: PathBuf, device: PublicId, max_failures_per_minute: u32) -> Self {
        Self {
            path,
            device,
            current: None,
            sessions: HashMap::new(),
            window_start: 0,
            failures_in_window: 0,
            max_failures_per_minute,
        }
    }

    /// (Re)loads the offer file if it changed since it was last read.
    fn refresh(&mut self, identity: &DeviceIdentity, kem: &KemPublicKey) {
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if let Some((loaded, _)) = &self.current
            && *loaded == mtime
        {
            return;
        }
        self.current = load_offer(&self.path, self.device).and_then(|offer| {
            DevicePairing::new(offer, &identity.signing, kem)
                .ok()
                .map(|dp| (mtime, dp))
        });
        self.sessions.clear();
    }

    fn rate_limited(&mut self, now: u64) -> bool {
        if now >= self.window_start + 60 {
            self.window_start = now;
            self.failures_in_window = 0;
        }
        self.failures_in_window >= self.max_failures_per_minute
    }

    fn failed(&mut self) {
        self.failures_in_window = self.failures_in_window.saturating_add(1);
    }

    /// Handles a message from the device's pairing request topic.
    pub fn on_message(
        &mut self,
        bytes: &[u8],
        now: u64,
        identity: &DeviceIdentity,
    ) -> Result<PairingStep, String> {
        if self.rate_limited(now) {
            return Err("too many failed pairing attempts this minute; ignoring".into());
        }
        self.refresh(identity, identity.kem.public());
        let Some((_, dp)) = self.current.as_mut() else {
            self.failed();
            return Err("no pairing code is active (run `pi-agent pair`)".into());
        };
        let device_opaque = self.device.opaque_id();
        match bytes.first().copied() {
            Some(MSG_CLAIM) => {
                let claim = match Claim::decode(bytes) {
                    Ok(c) => c,
                    Err(e) => {
                        self.failed();
                        return Err(format!("bad claim: {e}"));
                    }
                };
                match dp.handle_claim(bytes, now) {
                    Ok(challenge) => {
                        let session = hex(&claim.wallet_nonce);
                        if self.sessions.len() > 64 {
                            self.sessions.clear();
                        }
                        self.sessions.insert(claim.wallet, session.clone());
                        Ok(PairingStep::Reply {
                            topic: topics::pair_responses(&device_opaque, &session),
                            bytes: challenge,
                        })
                    }
                    Err(e) => {
                        self.failed();
                        Err(format!("claim refused: {e}"))
                    }
                }
            }
            Some(MSG_ANSWER) => {
                let answer = match Answer::decode(bytes) {
                    Ok(a) => a,
                    Err(e) => {
                        self.failed();
                        return Err(format!("bad answer: {e}"));
                    }
                };
                let Some(session) = self.sessions.get(&answer.wallet).cloned() else {
                    self.failed();
                    return Err("answer without a claim".into());
                };
                let topic = topics::pair_responses(&device_opaque, &session);
                match dp.handle_answer(bytes, now) {
                    Ok((result, owner)) => {
                        // The secret is spent: remove the offer so it cannot be shown again.
                        let _ = std::fs::remove_file(&self.path);
                        self.current = None;
                        Ok(PairingStep::Paired {
                            owner,
                            topic,
                            bytes: result,
                        })
                    }
                    Err(e) => {
                        let rejection = dp.take_rejection();
                        self.failed();
                        match rejection {
                            Some(rejection) => {
                                tracing::warn!(error = %e, "pairing answer refused");
                                Ok(PairingStep::Reply {
                                    topic,
                                    bytes: rejection,
                                })
                            }
                            None => Err(format!("answer refused: {e}")),
                        }
                    }
                }
            }
            _ => {
                self.failed();
                Err("not a pairing message".into())
            }
        }
    }
}

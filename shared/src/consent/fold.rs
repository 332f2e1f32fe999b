//! Folding verified entries of all the owner's threads into the current state.
//!
//! Deterministic: the same entries give the same state whatever order the threads were
//! read in (entries are ordered by time, then thread, role and sequence number).

use std::collections::BTreeMap;

use super::log::{Event, Grant, RotationReason, VerifiedEntry};
use super::thread::Role;
use crate::crypto::{KemPublicKey, OpaqueId, PublicId};

/// A paired (or formerly paired) device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    pub device: PublicId,
    pub device_kem: KemPublicKey,
    pub label: String,
    pub thread_id: OpaqueId,
    pub paired_at_ms: u64,
    pub unpaired_at_ms: Option<u64>,
    /// Last `KeyRotated` acknowledgement: (channel, epoch, reason, time).
    pub last_rotation: Option<Rotation>,
}

impl DeviceRecord {
    pub fn is_paired(&self) -> bool {
        self.unpaired_at_ms.is_none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub channel_id: OpaqueId,
    pub epoch: u32,
    pub reason: RotationReason,
    pub at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyDelivery {
    pub channel_id: OpaqueId,
    pub epoch: u32,
    pub at_ms: u64,
}

/// Where a consent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentStatus {
    Active,
    Revoked { erase_requested: bool, at_ms: u64 },
    Expired { at_ms: u64 },
}

impl ConsentStatus {
    pub fn name(self) -> &'static str {
        match self {
            ConsentStatus::Active => "active",
            ConsentStatus::Revoked { .. } => "withdrawn",
            ConsentStatus::Expired { .. } => "expired",
        }
    }
}

/// One thing that happened to a consent, for receipts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryEvent {
    pub at_ms: u64,
    pub kind: HistoryKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryKind {
    Given,
    KeyDelivered { epoch: u32 },
    Withdrawn { erase_requested: bool },
    Expired,
    ErasureConfirmed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRecord {
    pub grant: Grant,
    pub thread_id: OpaqueId,
    pub granted_at_ms: u64,
    pub status: ConsentStatus,
    pub last_key_delivered: Option<KeyDelivery>,
    pub erasure_confirmed_at_ms: Option<u64>,
    pub history: Vec<HistoryEvent>,
}

/// Why an entry had no effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoreReason {
    DeviceAlreadyKnown,
    DeviceNotPaired,
    DuplicateConsentId,
    UnknownConsent,
    ConsentNotActive,
    WrongThread,
    WrongAuthor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ignored {
    pub thread_id: OpaqueId,
    pub role: Role,
    pub seq: u64,
    pub reason: IgnoreReason,
}

/// The owner's devices and consents as of `now`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsentState {
    pub devices: BTreeMap<PublicId, DeviceRecord>,
    pub consents: BTreeMap<OpaqueId, ConsentRecord>,
    pub ignored: Vec<Ignored>,
}

fn expire_if_due(c: &mut ConsentRecord, t_ms: u64) {
    let exp_ms = c.grant.expires_at.saturating_mul(1000);
    if c.status == ConsentStatus::Active && t_ms >= exp_ms {
        c.status = ConsentStatus::Expired { at_ms: exp_ms };
        c.history.push(HistoryEvent {
            at_ms: exp_ms,
            kind: HistoryKind::Expired,
        });
    }
}

impl ConsentState {
    /// Folds verified entries (of any number of threads) at `now_unix` (seconds).
    ///
    /// Rules: a grant for a device that is not paired is ignored; a second grant with the
    /// same consent id is ignored; revocation/expiry of an unknown or inactive consent is
    /// ignored; anything about a device after its unpairing is ignored (re-pairing needs a
    /// new device identity); unpairing withdraws the device's active consents; a consent is
    /// expired once time reaches `expires_at`, with or without a `ConsentExpired` event;
    /// acknowledgements count only from the grant's device / provider in the grant's thread.
    pub fn fold<'a>(entries: impl IntoIterator<Item = &'a VerifiedEntry>, now_unix: u64) -> Self {
        let mut sorted: Vec<&VerifiedEntry> = entries.into_iter().collect();
        sorted.sort_by_key(|e| (e.time_ms, e.thread_id, e.role, e.seq));
        let mut s = ConsentState::default();
        for e in sorted {
            if let Err(reason) = s.apply(e) {
                s.ignored.push(Ignored {
                    thread_id: e.thread_id,
                    role: e.role,
                    seq: e.seq,
                    reason,
                });
            }
        }
        let now_ms = now_unix.saturating_mul(1000);
        for c in s.consents.values_mut() {
            expire_if_due(c, now_ms);
        }
        s
    }

    fn active_consent(
        &mut self,
        consent_id: &OpaqueId,
        e: &VerifiedEntry,
    ) -> Result<&mut ConsentRecord, IgnoreReason> {
        let c = self
            .consents
            .get_mut(consent_id)
            .ok_or(IgnoreReason::UnknownConsent)?;
        if c.thread_id != e.thread_id {
            return Err(IgnoreReason::WrongThread);
        }
        expire_if_due(c, e.time_ms);
        Ok(c)
    }

    fn apply(&mut self, e: &VerifiedEntry) -> Result<(), IgnoreReason> {
        let t = e.time_ms;
        match &e.event {
            Event::DevicePaired {
                device,
                device_kem,
                label,
            } => {
                if self.devices.contains_key(device) {
                    return Err(IgnoreReason::DeviceAlreadyKnown);
                }
                self.devices.insert(
                    *device,
                    DeviceRecord {
                        device: *device,
                        device_kem: device_kem.clone(),
                        label: label.clone(),
                        thread_id: e.thread_id,
                        paired_at_ms: t,
                        unpaired_at_ms: None,
                        last_rotation: None,
                    },
                );
            }
            Event::DeviceUnpaired { device } => {
                let d = self
                    .devices
                    .get_mut(device)
                    .filter(|d| d.is_paired())
                    .ok_or(IgnoreReason::DeviceNotPaired)?;
                if d.thread_id != e.thread_id {
                    return Err(IgnoreReason::WrongThread);
                }
                d.unpaired_at_ms = Some(t);
                for c in self.consents.values_mut() {
                    if c.grant.device == *device {
                        expire_if_due(c, t);
                        if c.status == ConsentStatus::Active {
                            c.status = ConsentStatus::Revoked {
                                erase_requested: false,
                                at_ms: t,
                            };
                            c.history.push(HistoryEvent {
                                at_ms: t,
                                kind: HistoryKind::Withdrawn {
                                    erase_requested: false,
                                },
                            });
                        }
                    }
                }
            }
            Event::ConsentGranted(g) => {
                if !self.devices.get(&g.device).is_some_and(|d| d.is_paired()) {
                    return Err(IgnoreReason::DeviceNotPaired);
                }
                if self.consents.contains_key(&g.consent_id) {
                    return Err(IgnoreReason::DuplicateConsentId);
                }
                let mut c = ConsentRecord {
                    grant: (**g).clone(),
                    thread_id: e.thread_id,
                    granted_at_ms: t,
                    status: ConsentStatus::Active,
                    last_key_delivered: None,
                    erasure_confirmed_at_ms: None,
                    history: vec![HistoryEvent {
                        at_ms: t,
                        kind: HistoryKind::Given,
                    }],
                };
                expire_if_due(&mut c, t);
                self.consents.insert(g.consent_id, c);
            }
            Event::ConsentRevoked {
                consent_id,
                erase_requested,
            } => {
                let c = self.active_consent(consent_id, e)?;
                if c.status != ConsentStatus::Active {
                    return Err(IgnoreReason::ConsentNotActive);
                }
                c.status = ConsentStatus::Revoked {
                    erase_requested: *erase_requested,
                    at_ms: t,
                };
                c.history.push(HistoryEvent {
                    at_ms: t,
                    kind: HistoryKind::Withdrawn {
                        erase_requested: *erase_requested,
                    },
                });
            }
            Event::ConsentExpired { consent_id } => {
                let c = self.active_consent(consent_id, e)?;
                if c.status != ConsentStatus::Active {
                    return Err(IgnoreReason::ConsentNotActive);
                }
                c.status = ConsentStatus::Expired { at_ms: t };
                c.history.push(HistoryEvent {
                    at_ms: t,
                    kind: HistoryKind::Expired,
                });
            }
            Event::KeyDelivered {
                consent_id,
                channel_id,
                epoch,
            } => {
                let paired = self.devices.get(&e.author).is_some_and(|d| d.is_paired());
                let c = self.active_consent(consent_id, e)?;
                if c.grant.device != e.author {
                    return Err(IgnoreReason::WrongAuthor);
                }
                if !paired {
                    return Err(IgnoreReason::DeviceNotPaired);
                }
                if c.status != ConsentStatus::Active {
                    return Err(IgnoreReason::ConsentNotActive);
                }
                c.last_key_delivered = Some(KeyDelivery {
                    channel_id: *channel_id,
                    epoch: *epoch,
                    at_ms: t,
                });
                c.history.push(HistoryEvent {
                    at_ms: t,
                    kind: HistoryKind::KeyDelivered { epoch: *epoch },
                });
            }
            Event::KeyRotated {
                channel_id,
                epoch,
                reason,
            } => {
                let d = self
                    .devices
                    .get_mut(&e.author)
                    .filter(|d| d.is_paired())
                    .ok_or(IgnoreReason::DeviceNotPaired)?;
                d.last_rotation = Some(Rotation {
                    channel_id: *channel_id,
                    epoch: *epoch,
                    reason: *reason,
                    at_ms: t,
                });
            }
            Event::ErasureConfirmed { consent_id } => {
                let c = self.active_consent(consent_id, e)?;
                if c.grant.request.content().provider != e.author {
                    return Err(IgnoreReason::WrongAuthor);
                }
                c.erasure_confirmed_at_ms = Some(t);
                c.history.push(HistoryEvent {
                    at_ms: t,
                    kind: HistoryKind::ErasureConfirmed,
                });
            }
        }
        Ok(())
    }

    /// Consents of one device that are active now.
    pub fn active_for_device(&self, device: &PublicId) -> Vec<&ConsentRecord> {
        self.consents
            .values()
            .filter(|c| c.grant.device == *device && c.status == ConsentStatus::Active)
            .collect()
    }
}

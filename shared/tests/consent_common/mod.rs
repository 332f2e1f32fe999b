//! Fixtures shared by the consent tests.
#![allow(dead_code)]

use p1consent_shared::consent::{
    Event, FieldSet, Grant, LogWriter, OwnerRoot, Participants, RequestDraft, Resolution, Role,
    SignedRequest, ThreadKey, scope::Field,
};
use p1consent_shared::crypto::{KemSecretKey, KemSuite, OpaqueId, PublicId, SigningIdentity};

pub const NOW: u64 = 1_700_000_000;
pub const DAY: u64 = 86_400;

pub struct Party {
    pub id: SigningIdentity,
    pub kem: KemSecretKey,
}

pub fn party(seed: u8, suite: KemSuite) -> Party {
    Party {
        id: SigningIdentity::from_seed(&[seed; 32]),
        kem: KemSecretKey::from_seed(suite, &[seed.wrapping_add(100); 32]),
    }
}

pub fn owner() -> Party {
    party(1, KemSuite::DEFAULT)
}
pub fn device() -> Party {
    party(2, KemSuite::DEFAULT)
}
pub fn provider_a() -> Party {
    party(3, KemSuite::DEFAULT)
}
pub fn provider_b() -> Party {
    party(4, KemSuite::DEFAULT)
}

pub fn draft(p: &Party) -> RequestDraft {
    RequestDraft {
        provider_kem: p.kem.public().clone(),
        controller: "Wattt Insights B.V.".into(),
        contact: "privacy@wattt.example".into(),
        purpose: "Show you which appliances use the most electricity and how to save on your bill."
            .into(),
        policy_url: Some("https://wattt.example/privacy".into()),
        jurisdiction: "NL".into(),
        fields: FieldSet::empty()
            .with(Field::EnergyDelivered)
            .with(Field::PowerDelivered)
            .with(Field::Gas),
        resolution: Resolution::Minute,
        retention_days: 365,
        consent_expires_at: NOW + 365 * DAY,
        link_expires_at: NOW + DAY,
        nonce: [7; 16],
        created_at: NOW,
    }
}

pub fn request(p: &Party) -> SignedRequest {
    SignedRequest::create(&p.id, draft(p)).expect("valid draft")
}

pub fn grant(req: &SignedRequest, device: PublicId) -> Grant {
    Grant::new(
        req,
        device,
        FieldSet::empty()
            .with(Field::EnergyDelivered)
            .with(Field::PowerDelivered),
        Resolution::QuarterHour,
        NOW + 30 * DAY,
    )
    .expect("valid grant")
}

pub fn paired(d: &Party) -> Event {
    Event::DevicePaired {
        device: d.id.public(),
        device_kem: d.kem.public().clone(),
        label: "Meter cupboard".into(),
    }
}

/// The owner's side of one consent thread.
pub struct Thread {
    pub id: OpaqueId,
    pub key: ThreadKey,
    pub participants: Participants,
    pub owner_writer: LogWriter,
}

pub fn consent_thread(root: &OwnerRoot, owner: &Party, dev: &Party, prov: &Party) -> Thread {
    let id = root.consent_thread_id(&dev.id.public(), &prov.id.public());
    Thread {
        id,
        key: root.thread_key(&id),
        participants: Participants {
            owner: owner.id.public(),
            device: Some(dev.id.public()),
            provider: Some(prov.id.public()),
        },
        owner_writer: LogWriter::new(id, Role::Owner),
    }
}

pub fn device_thread(root: &OwnerRoot, owner: &Party, dev: &Party) -> Thread {
    let id = root.device_thread_id(&dev.id.public());
    Thread {
        id,
        key: root.thread_key(&id),
        participants: Participants {
            owner: owner.id.public(),
            device: Some(dev.id.public()),
            provider: None,
        },
        owner_writer: LogWriter::new(id, Role::Owner),
    }
}

pub fn ms(unix: u64) -> u64 {
    unix * 1000
}

//! Test vectors: shared/tests/vectors/consent.json.
//!
//! `consent_vectors_decode` decodes the committed bytes and checks every value, then checks
//! that regeneration reproduces them bit for bit. Regenerate with
//! `cargo test -p p1consent-shared --test consent_vectors -- --ignored`.

use p1consent_shared::consent::log::{Event, Grant, LogWriter, Participants};
use p1consent_shared::consent::scope::Field;
use p1consent_shared::consent::{
    FieldSet, OwnerRoot, RequestDraft, Resolution, Role, SignedRequest, ThreadEnvelope, ThreadLog,
};
use p1consent_shared::crypto::{KemSecretKey, KemSuite, SigningIdentity, hex, unhex};
use serde_json::{Value, json};

const NOW: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/consent.json");

struct Keys {
    owner: SigningIdentity,
    device: SigningIdentity,
    device_kem: KemSecretKey,
    provider: SigningIdentity,
    provider_kem: KemSecretKey,
}

fn keys() -> Keys {
    Keys {
        owner: SigningIdentity::from_seed(&[0x01; 32]),
        device: SigningIdentity::from_seed(&[0x02; 32]),
        device_kem: KemSecretKey::from_seed(KemSuite::X25519Sntrup761, &[0x12; 32]),
        provider: SigningIdentity::from_seed(&[0x03; 32]),
        provider_kem: KemSecretKey::from_seed(KemSuite::X25519Sntrup761, &[0x13; 32]),
    }
}

fn generate() -> Value {
    let k = keys();
    let req = SignedRequest::create(
        &k.provider,
        RequestDraft {
            provider_kem: k.provider_kem.public().clone(),
            controller: "Wattt Insights B.V.".into(),
            contact: "privacy@wattt.example".into(),
            purpose: "Energy saving advice".into(),
            policy_url: Some("https://wattt.example/privacy".into()),
            jurisdiction: "NL".into(),
            fields: FieldSet::empty()
                .with(Field::EnergyDelivered)
                .with(Field::PowerDelivered),
            resolution: Resolution::Minute,
            retention_days: 90,
            consent_expires_at: NOW + 365 * 86_400,
            link_expires_at: NOW + 86_400,
            nonce: [0xAA; 16],
            created_at: NOW,
        },
    )
    .unwrap();
    let root = OwnerRoot::from_identity(&k.owner);
    let thread = root.consent_thread_id(&k.device.public(), &k.provider.public());
    let env = ThreadEnvelope::create_deterministic(
        &k.owner,
        &root,
        thread,
        &[
            (Role::Device, k.device_kem.public()),
            (Role::Provider, k.provider_kem.public()),
        ],
        &[0x55; 32],
    )
    .unwrap();
    let grant = Grant::new(
        &req,
        k.device.public(),
        FieldSet::empty().with(Field::EnergyDelivered),
        Resolution::QuarterHour,
        NOW + 30 * 86_400,
    )
    .unwrap();
    let mut w = LogWriter::new(thread, Role::Owner);
    let entry = w
        .append_with_nonce(
            &k.owner,
            &root.thread_key(&thread),
            NOW * 1000 + 60_000,
            &Event::ConsentGranted(Box::new(grant)),
            &[0x66; 24],
        )
        .unwrap();
    json!({
        "description": "P1 Consent consent-domain test vectors (docs/PROTOCOL.md (Consent)). All keys from fixed seeds; envelope randomness from seed 0x55*32 via ThreadEnvelope::create_deterministic; entry nonce 0x66*24.",
        "now_unix": NOW,
        "seeds": {
            "owner_ed25519": hex(&[0x01; 32]),
            "device_ed25519": hex(&[0x02; 32]),
            "device_kem_x25519_sntrup761": hex(&[0x12; 32]),
            "provider_ed25519": hex(&[0x03; 32]),
            "provider_kem_x25519_sntrup761": hex(&[0x13; 32]),
            "envelope_randomness": hex(&[0x55; 32]),
            "entry_nonce": hex(&[0x66; 24])
        },
        "public": {
            "owner": k.owner.public().to_hex(),
            "device": k.device.public().to_hex(),
            "provider": k.provider.public().to_hex()
        },
        "request": {
            "hex": hex(req.bytes()),
            "link": req.to_link(),
            "request_id": hex(&req.id()),
            "consent_id": req.consent_id().to_hex(),
            "expected": {
                "controller": "Wattt Insights B.V.",
                "contact": "privacy@wattt.example",
                "purpose": "Energy saving advice",
                "policy_url": "https://wattt.example/privacy",
                "jurisdiction": "NL",
                "fields": ["energy_delivered", "power_delivered"],
                "fields_bits": req.content().fields.bits(),
                "resolution_seconds": 60,
                "retention_days": 90,
                "consent_expires_at": NOW + 365 * 86_400,
                "link_expires_at": NOW + 86_400,
                "nonce": hex(&[0xAA; 16]),
                "created_at": NOW
            }
        },
        "thread": {
            "consent_thread_id": thread.to_hex(),
            "thread_key": hex(root.thread_key(&thread).expose()),
            "device_thread_id": root.device_thread_id(&k.device.public()).to_hex()
        },
        "envelope": {
            "hex": hex(&env),
            "expected": { "suite": 1, "roles": [2, 3] }
        },
        "entry": {
            "hex": hex(&entry),
            "expected": {
                "role": 1, "seq": 0, "time_ms": NOW * 1000 + 60_000,
                "event": "consent_granted",
                "granted_fields": ["energy_delivered"],
                "resolution_seconds": 900,
                "expires_at": NOW + 30 * 86_400
            }
        }
    })
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| &v[*k])
}
fn bytes(v: &Value, path: &[&str]) -> Vec<u8> {
    unhex(s(v, path).as_str().expect("hex string")).expect("valid hex")
}

#[test]
fn consent_vectors_decode() {
    let text = std::fs::read_to_string(PATH).expect("vector file");
    let v: Value = serde_json::from_str(&text).unwrap();
    let k = keys();
    let now = v["now_unix"].as_u64().unwrap();
    assert_eq!(v["public"]["owner"], k.owner.public().to_hex());

    // Request: from bytes and from the link.
    let rb = bytes(&v, &["request", "hex"]);
    let vr = SignedRequest::from_link(v["request"]["link"].as_str().unwrap(), now).unwrap();
    assert_eq!(vr.signed().bytes(), &rb[..]);
    let c = vr.content();
    let e = &v["request"]["expected"];
    assert_eq!(c.provider, k.provider.public());
    assert_eq!(&c.provider_kem, k.provider_kem.public());
    assert_eq!(c.controller, e["controller"]);
    assert_eq!(c.contact, e["contact"]);
    assert_eq!(c.purpose, e["purpose"]);
    assert_eq!(c.policy_url.as_deref(), e["policy_url"].as_str());
    assert_eq!(c.jurisdiction, e["jurisdiction"]);
    let names: Vec<_> = c.fields.iter().map(Field::name).collect();
    assert_eq!(json!(names), e["fields"]);
    assert_eq!(
        u64::from(c.fields.bits()),
        e["fields_bits"].as_u64().unwrap()
    );
    assert_eq!(
        u64::from(c.resolution.seconds()),
        e["resolution_seconds"].as_u64().unwrap()
    );
    assert_eq!(
        u64::from(c.retention_days),
        e["retention_days"].as_u64().unwrap()
    );
    assert_eq!(
        c.consent_expires_at,
        e["consent_expires_at"].as_u64().unwrap()
    );
    assert_eq!(c.link_expires_at, e["link_expires_at"].as_u64().unwrap());
    assert_eq!(hex(&c.nonce), e["nonce"]);
    assert_eq!(c.created_at, e["created_at"].as_u64().unwrap());
    assert_eq!(hex(&vr.signed().id()), v["request"]["request_id"]);
    assert_eq!(
        vr.signed().consent_id().to_hex(),
        v["request"]["consent_id"]
    );

    // Thread ids and key.
    let root = OwnerRoot::from_identity(&k.owner);
    let thread = root.consent_thread_id(&k.device.public(), &k.provider.public());
    assert_eq!(thread.to_hex(), v["thread"]["consent_thread_id"]);
    assert_eq!(
        hex(root.thread_key(&thread).expose()),
        v["thread"]["thread_key"]
    );
    assert_eq!(
        root.device_thread_id(&k.device.public()).to_hex(),
        v["thread"]["device_thread_id"]
    );

    // Envelope: both recipients unwrap the thread key.
    let env =
        ThreadEnvelope::decode(&bytes(&v, &["envelope", "hex"]), Some(&k.owner.public())).unwrap();
    assert_eq!(env.suite as u8, 1);
    assert_eq!(env.thread_id, thread);
    assert_eq!(env.roles(), vec![Role::Device, Role::Provider]);
    let key = env.open(Role::Device, &k.device_kem).unwrap();
    assert_eq!(hex(key.expose()), v["thread"]["thread_key"]);
    assert_eq!(env.open(Role::Provider, &k.provider_kem).unwrap(), key);

    // Entry: the device verifies and decrypts the grant.
    let mut log = ThreadLog::new(
        thread,
        key,
        Participants {
            owner: k.owner.public(),
            device: Some(k.device.public()),
            provider: Some(k.provider.public()),
        },
    );
    let entry = log.verify(&bytes(&v, &["entry", "hex"])).unwrap();
    let e = &v["entry"]["expected"];
    assert_eq!(entry.role as u64, e["role"].as_u64().unwrap());
    assert_eq!(entry.seq, e["seq"].as_u64().unwrap());
    assert_eq!(entry.time_ms, e["time_ms"].as_u64().unwrap());
    assert_eq!(entry.event.name(), e["event"]);
    let Event::ConsentGranted(g) = &entry.event else {
        panic!("not a grant")
    };
    assert_eq!(g.request.bytes(), &rb[..]);
    assert_eq!(g.device, k.device.public());
    let names: Vec<_> = g.fields.iter().map(Field::name).collect();
    assert_eq!(json!(names), e["granted_fields"]);
    assert_eq!(
        u64::from(g.resolution.seconds()),
        e["resolution_seconds"].as_u64().unwrap()
    );
    assert_eq!(g.expires_at, e["expires_at"].as_u64().unwrap());

    // Everything is deterministic: regeneration reproduces the committed file's content.
    assert_eq!(
        generate(),
        v,
        "regenerate with --ignored after an intended format change"
    );
}

#[test]
#[ignore = "rewrites the committed vector file"]
fn regenerate_consent_vectors() {
    let text = serde_json::to_string_pretty(&generate()).unwrap();
    std::fs::write(PATH, text + "\n").unwrap();
}

//! Hostile input over every consent decoder: mutated and random bytes never panic.

mod consent_common;

use consent_common::*;
use p1consent_shared::consent::log::{EntryHeader, Event};
use p1consent_shared::consent::{
    ConsentState, LogWriter, OwnerRoot, Receipt, Role, SignedReceipt, SignedRequest,
    ThreadEnvelope, ThreadLog,
};
use p1consent_shared::crypto::KemSuite;

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut XorShift, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    match rng.below(5) {
        0 => {
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(v.len());
                if let Some(b) = v.get_mut(i) {
                    *b ^= 1 << rng.below(8);
                }
            }
        }
        1 => v.truncate(rng.below(v.len() + 1)),
        2 => {
            let i = rng.below(v.len());
            let n = rng.below(64);
            v.splice(i..i, (0..n).map(|_| rng.next() as u8));
        }
        3 => {
            // Overwrite a length-ish spot with large values.
            let i = rng.below(v.len());
            for j in i..(i + 4).min(v.len()) {
                v[j] = 0xFF;
            }
        }
        _ => {
            let n = rng.below(300);
            v = (0..n).map(|_| rng.next() as u8).collect();
            if let (Some(first), Some(s0)) = (v.first_mut(), seed.first()) {
                *first = *s0;
            }
            if v.len() > 2 {
                v[1] = 1;
            }
        }
    }
    v
}

#[test]
fn no_decoder_panics_on_hostile_input() {
    let (o, d, a) = (owner(), device(), provider_a());
    let a2 = party(5, KemSuite::X25519MlKem768);
    let root = OwnerRoot::from_identity(&o.id);
    let req = request(&a);
    let req2 = request(&a2);
    let mut t = consent_thread(&root, &o, &d, &a);
    let env = ThreadEnvelope::create(
        &o.id,
        &root,
        t.id,
        &[
            (Role::Device, d.kem.public()),
            (Role::Provider, a.kem.public()),
        ],
    )
    .unwrap();
    let g = grant(&req, d.id.public());
    let entry = t
        .owner_writer
        .append(&o.id, &t.key, ms(NOW), &Event::ConsentGranted(Box::new(g)))
        .unwrap();
    let mut dw = LogWriter::new(t.id, Role::Device);
    let ack = dw
        .append(
            &d.id,
            &t.key,
            ms(NOW + 1),
            &Event::KeyDelivered {
                consent_id: req.consent_id(),
                channel_id: p1consent_shared::crypto::OpaqueId([1; 16]),
                epoch: 1,
            },
        )
        .unwrap();
    let body = Event::ConsentGranted(Box::new(grant(&req, d.id.public()))).encode();
    let pair_body = paired(&d).encode();
    let mut log = ThreadLog::new(t.id, t.key.clone(), t.participants);
    log.verify(&entry).unwrap();
    log.verify(&ack).unwrap();
    let mut dt = device_thread(&root, &o, &d);
    let pe = dt
        .owner_writer
        .append(&o.id, &dt.key, ms(NOW - 10), &paired(&d))
        .unwrap();
    let mut dlog = ThreadLog::new(dt.id, dt.key.clone(), dt.participants);
    dlog.verify(&pe).unwrap();
    let state = ConsentState::fold(log.entries().iter().chain(dlog.entries()), NOW);
    let receipt = Receipt::from_state(&state, &req.consent_id(), &o.id.public(), NOW)
        .unwrap()
        .sign(&o.id)
        .unwrap()
        .to_json()
        .unwrap();
    let link = req.to_link();

    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut accepted = 0usize;
    for round in 0..3000 {
        let m = mutate(&mut rng, req.bytes());
        accepted += usize::from(SignedRequest::decode(&m).is_ok());
        let m = mutate(&mut rng, req2.bytes());
        accepted += usize::from(SignedRequest::decode(&m).is_ok());
        let m = mutate(&mut rng, link.as_bytes());
        if let Ok(s) = std::str::from_utf8(&m) {
            accepted += usize::from(SignedRequest::from_link(s, NOW).is_ok());
        }
        let m = mutate(&mut rng, &env);
        if let Ok(e) = ThreadEnvelope::decode(&m, None) {
            accepted += 1;
            let _ = e.open(Role::Device, &d.kem);
        }
        let m = mutate(&mut rng, &entry);
        let _ = EntryHeader::peek(&m);
        let mut l2 = ThreadLog::new(t.id, t.key.clone(), t.participants);
        accepted += usize::from(l2.verify(&m).is_ok());
        let m = mutate(&mut rng, &ack);
        let mut l3 = log.clone();
        accepted += usize::from(l3.verify(&m).is_ok());
        for src in [&body, &pair_body] {
            let m = mutate(&mut rng, src);
            for role in [Role::Owner, Role::Device, Role::Provider] {
                let _ = Event::decode(&m, role);
            }
        }
        if round % 10 == 0 {
            let m = mutate(&mut rng, receipt.as_bytes());
            if let Ok(s) = std::str::from_utf8(&m) {
                accepted += usize::from(SignedReceipt::verify(s, None).is_ok());
            }
        }
    }
    // Mutations that survive are only those that do not change the signed content
    // (e.g. the link with swapped but equivalent parameters): nothing forged gets in.
    assert!(accepted < 50, "{accepted} mutated inputs accepted");
    // Pure garbage of every length up to 512.
    for n in 0..512 {
        let g: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        assert!(SignedRequest::decode(&g).is_err());
        assert!(ThreadEnvelope::decode(&g, None).is_err());
        assert!(log.clone().verify(&g).is_err());
        for role in [Role::Owner, Role::Device, Role::Provider] {
            let _ = Event::decode(&g, role);
        }
    }
}

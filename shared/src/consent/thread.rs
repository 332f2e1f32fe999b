//! Threads of the owner's log: ids, keys, and the thread key envelope (message type 0x11).
//!
//! One thread per device (device events) and one per (device, provider) pair (consent
//! events). Only the participants hold the thread key, so nobody sees events about
//! others. Ids and keys derive from the owner's root key, itself derived from the owner's
//! identity seed: a fresh wallet with the owner's keys rebuilds everything from the broker.

use zeroize::Zeroizing;

use super::log::LogError;
use crate::crypto::{
    KemPublicKey, KemSecretKey, KemSuite, NONCE_LEN, OpaqueId, PublicId, SIGNATURE_LEN,
    SigningIdentity, SymmetricKey, WrappedSecret, derive_key, encapsulate_deterministic,
    seal_with_nonce,
};
use crate::wire::{Reader, WireError, Writer};

pub const MSG_THREAD_ENVELOPE: u8 = 0x11;
pub const MAX_ENVELOPE_LEN: usize = 4096;

/// Who wrote an entry or reads a thread. The byte is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Role {
    Owner = 1,
    Device = 2,
    Provider = 3,
}

impl Role {
    pub fn from_byte(b: u8) -> Result<Role, WireError> {
        match b {
            1 => Ok(Role::Owner),
            2 => Ok(Role::Device),
            3 => Ok(Role::Provider),
            _ => Err(WireError::Invalid {
                field: "role",
                reason: "must be 1 (owner), 2 (device) or 3 (provider)",
            }),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Device => "device",
            Role::Provider => "provider",
        }
    }
}

/// A thread's 32-byte key. Zeroized on drop; compared in constant time.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ThreadKey(SymmetricKey);

impl ThreadKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(SymmetricKey::from_bytes(bytes))
    }
    pub fn expose(&self) -> &[u8; 32] {
        self.0.expose()
    }
    /// Key that seals entry bodies: `thread_key.derive("p1consent/v1/log-entry", [])`.
    pub(crate) fn entry_key(&self) -> SymmetricKey {
        self.0.derive("p1consent/v1/log-entry", &[])
    }
}

/// The owner's root key: `HKDF(owner identity seed, "p1consent/v1/owner-root")`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct OwnerRoot(SymmetricKey);

impl OwnerRoot {
    pub fn from_identity(owner: &SigningIdentity) -> Self {
        Self::from_seed(&owner.to_seed())
    }
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(derive_key(seed, "p1consent/v1/owner-root", &[]))
    }

    fn keyed_id(&self, parts: &[&[u8]]) -> OpaqueId {
        let k = self.0.derive("p1consent/v1/thread-id", &[]);
        let mut h = blake3::Hasher::new_keyed(k.expose());
        for p in parts {
            h.update(p);
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&h.finalize().as_bytes()[..16]);
        OpaqueId(id)
    }

    /// `BLAKE3-keyed(K, 0x02 || device)[..16]`, K = root.derive("p1consent/v1/thread-id").
    pub fn device_thread_id(&self, device: &PublicId) -> OpaqueId {
        self.keyed_id(&[&[Role::Device as u8], device.as_bytes()])
    }

    /// `BLAKE3-keyed(K, 0x03 || device || provider)[..16]`.
    pub fn consent_thread_id(&self, device: &PublicId, provider: &PublicId) -> OpaqueId {
        self.keyed_id(&[
            &[Role::Provider as u8],
            device.as_bytes(),
            provider.as_bytes(),
        ])
    }

    /// `root.derive("p1consent/v1/thread-key", thread_id)`.
    pub fn thread_key(&self, thread_id: &OpaqueId) -> ThreadKey {
        ThreadKey(self.0.derive("p1consent/v1/thread-key", &thread_id.0))
    }
}

/// The thread key, wrapped to each non-owner participant and signed by the owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadEnvelope {
    pub suite: KemSuite,
    pub thread_id: OpaqueId,
    pub owner: PublicId,
    /// Sorted by role, each role at most once; never [`Role::Owner`].
    pub recipients: Vec<(Role, WrappedSecret)>,
}

fn wrap_context(thread_id: &OpaqueId, role: Role) -> [u8; 17] {
    let mut c = [0u8; 17];
    c[..16].copy_from_slice(&thread_id.0);
    c[16] = role as u8;
    c
}

fn check_recipient_roles(roles: impl Iterator<Item = Role>) -> Result<(), WireError> {
    let mut last = Role::Owner;
    let mut count = 0;
    for role in roles {
        if role <= last {
            return Err(WireError::Invalid {
                field: "recipients",
                reason: "roles must be device/provider, ascending, each once",
            });
        }
        last = role;
        count += 1;
    }
    if count == 0 {
        return Err(WireError::Invalid {
            field: "recipients",
            reason: "at least one recipient",
        });
    }
    Ok(())
}

impl ThreadEnvelope {
    /// Wraps the thread key of `thread_id` to every recipient and signs as the owner.
    /// Recipients must share one KEM suite.
    pub fn create(
        owner: &SigningIdentity,
        root: &OwnerRoot,
        thread_id: OpaqueId,
        recipients: &[(Role, &KemPublicKey)],
    ) -> Result<Vec<u8>, LogError> {
        Self::create_inner(owner, root, thread_id, recipients, None)
    }

    /// Deterministic form for test vectors only: all randomness derives from `seed`.
    pub fn create_deterministic(
        owner: &SigningIdentity,
        root: &OwnerRoot,
        thread_id: OpaqueId,
        recipients: &[(Role, &KemPublicKey)],
        seed: &[u8; 32],
    ) -> Result<Vec<u8>, LogError> {
        Self::create_inner(owner, root, thread_id, recipients, Some(seed))
    }

    fn create_inner(
        owner: &SigningIdentity,
        root: &OwnerRoot,
        thread_id: OpaqueId,
        recipients: &[(Role, &KemPublicKey)],
        seed: Option<&[u8; 32]>,
    ) -> Result<Vec<u8>, LogError> {
        let mut sorted: Vec<(Role, &KemPublicKey)> = recipients.to_vec();
        sorted.sort_by_key(|(r, _)| *r);
        check_recipient_roles(sorted.iter().map(|(r, _)| *r))?;
        let suite = sorted[0].1.suite();
        if sorted.iter().any(|(_, pk)| pk.suite() != suite) {
            return Err(LogError::Malformed(WireError::Invalid {
                field: "recipients",
                reason: "all recipients must use the same KEM suite",
            }));
        }
        let key = root.thread_key(&thread_id);
        let mut w = Writer::with_header(MSG_THREAD_ENVELOPE, suite as u8);
        w.raw(&thread_id.0).raw(owner.public().as_bytes());
        w.u8(sorted.len() as u8);
        for (role, pk) in sorted {
            let ctx = wrap_context(&thread_id, role);
            let wrapped = match seed {
                None => WrappedSecret::wrap(pk, key.expose(), &ctx)?,
                Some(seed) => {
                    let s = derive_key(seed, "p1consent/v1/vector-envelope", &[role as u8]);
                    let (kem, ss) = encapsulate_deterministic(pk, s.expose())?;
                    let k = ss.derive("p1consent/v1/wrap", &[]);
                    let n = s.derive("p1consent/v1/vector-nonce", &[]);
                    let mut nonce = [0u8; NONCE_LEN];
                    nonce.copy_from_slice(&n.expose()[..NONCE_LEN]);
                    let sealed = seal_with_nonce(&k, &nonce, &ctx, key.expose());
                    WrappedSecret { kem, nonce, sealed }
                }
            };
            w.u8(role as u8);
            wrapped.write(&mut w);
        }
        let sig = owner.sign(w.as_slice());
        w.raw(&sig);
        Ok(w.into_bytes())
    }

    /// Decodes and verifies the owner's signature. With `expected_owner`, also checks the
    /// envelope comes from that owner.
    pub fn decode(bytes: &[u8], expected_owner: Option<&PublicId>) -> Result<Self, LogError> {
        let (mut r, suite) = Reader::with_header(bytes, MSG_THREAD_ENVELOPE, MAX_ENVELOPE_LEN)?;
        let suite = KemSuite::from_byte(suite)?;
        let thread_id = OpaqueId(r.array()?);
        let owner = PublicId::read(&mut r)?;
        if expected_owner.is_some_and(|o| *o != owner) {
            return Err(LogError::WrongOwner);
        }
        let count = r.u8()?;
        if count == 0 || count > 2 {
            return Err(LogError::Malformed(WireError::Invalid {
                field: "recipients",
                reason: "one or two recipients",
            }));
        }
        let mut recipients = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let role = Role::from_byte(r.u8()?)?;
            let wrapped = WrappedSecret::read(&mut r)?;
            if wrapped.kem.suite() != suite {
                return Err(LogError::Malformed(WireError::Invalid {
                    field: "recipients",
                    reason: "KEM suite differs from the header",
                }));
            }
            recipients.push((role, wrapped));
        }
        check_recipient_roles(recipients.iter().map(|(r, _)| *r))?;
        let signed_len = r.position();
        let sig: [u8; SIGNATURE_LEN] = r.array()?;
        r.finish()?;
        owner.verify(&bytes[..signed_len], &sig)?;
        Ok(Self {
            suite,
            thread_id,
            owner,
            recipients,
        })
    }

    /// The roles this envelope is addressed to.
    pub fn roles(&self) -> Vec<Role> {
        self.recipients.iter().map(|(r, _)| *r).collect()
    }

    /// Unwraps the thread key as `role` with `sk`.
    pub fn open(&self, role: Role, sk: &KemSecretKey) -> Result<ThreadKey, LogError> {
        let (_, wrapped) = self
            .recipients
            .iter()
            .find(|(r, _)| *r == role)
            .ok_or(LogError::NotARecipient(role))?;
        let secret: Zeroizing<Vec<u8>> =
            wrapped.unwrap(sk, &wrap_context(&self.thread_id, role))?;
        let arr: [u8; 32] = secret
            .as_slice()
            .try_into()
            .map_err(|_| LogError::DecryptFailed)?;
        let key = ThreadKey::from_bytes(arr);
        let mut arr = arr;
        zeroize::Zeroize::zeroize(&mut arr);
        Ok(key)
    }
}

//! The owner's identity: an Ed25519 signing key (which is also the wallet's pairing key),
//! a hybrid KEM key, and the root from which every thread id and key derives.

use p1consent_shared::{
    consent::OwnerRoot,
    crypto::{KemSecretKey, KemSuite, PublicId, SigningIdentity},
};
use zeroize::Zeroizing;

use crate::{
    error::{Result, WalletError},
    secrets::SecretStore,
};

pub const SIGNING_SECRET: &str = "owner-ed25519-seed";
pub const KEM_SECRET: &str = "owner-kem";

pub struct OwnerIdentity {
    pub signing: SigningIdentity,
    pub kem: KemSecretKey,
    pub root: OwnerRoot,
}

impl std::fmt::Debug for OwnerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnerIdentity")
            .field("owner", &self.signing.public())
            .finish_non_exhaustive()
    }
}

impl OwnerIdentity {
    pub fn generate() -> Self {
        Self::from_parts(SigningIdentity::generate(), KemSecretKey::generate(KemSuite::DEFAULT))
    }

    fn from_parts(signing: SigningIdentity, kem: KemSecretKey) -> Self {
        let root = OwnerRoot::from_identity(&signing);
        Self { signing, kem, root }
    }

    pub fn public(&self) -> PublicId {
        self.signing.public()
    }

    /// Loads the identity from `store`; `None` if there is none.
    pub fn load(store: &dyn SecretStore) -> Result<Option<Self>> {
        let Some(seed) = store.get(SIGNING_SECRET)? else {
            return Ok(None);
        };
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
            seed.as_slice()
                .try_into()
                .map_err(|_| WalletError::Secret("the owner key has the wrong length".into()))?,
        );
        let kem = store
            .get(KEM_SECRET)?
            .ok_or_else(|| WalletError::Secret("the owner KEM key is missing".into()))?;
        if kem.len() != 33 {
            return Err(WalletError::Secret("the owner KEM key has the wrong length".into()));
        }
        let suite = KemSuite::from_byte(kem[0])
            .map_err(|_| WalletError::Secret("the owner KEM key has an unknown suite".into()))?;
        let kseed: Zeroizing<[u8; 32]> = Zeroizing::new(
            kem[1..]
                .try_into()
                .map_err(|_| WalletError::Secret("the owner KEM key has the wrong length".into()))?,
        );
        Ok(Some(Self::from_parts(
            SigningIdentity::from_seed(&seed),
            KemSecretKey::from_seed(suite, &kseed),
        )))
    }

    /// Writes the identity into `store`.
    pub fn save(&self, store: &dyn SecretStore) -> Result<()> {
        store.put(SIGNING_SECRET, &self.signing.to_seed()[..])?;
        let mut kem = Zeroizing::new(Vec::with_capacity(33));
        kem.push(self.kem.suite() as u8);
        kem.extend_from_slice(&self.kem.seed()[..]);
        store.put(KEM_SECRET, &kem)
    }
}

//! Every identity and key of a run, derived from the run id, so the meters and providers
//! processes agree on them without exchanging anything but protocol messages.

use p1consent_shared::{
    crypto::{self, KemSecretKey, KemSuite, OpaqueId, PublicId, SigningIdentity},
    topics::PREFIX,
};

const LABEL: &str = "p1consent/loadgen/v1";

/// Derivation of the run's identities (not secret: this is a load test).
#[derive(Debug, Clone, Copy)]
pub struct Ids {
    pub run: OpaqueId,
    pub suite: KemSuite,
}

impl Ids {
    pub fn new(run: OpaqueId, suite: KemSuite) -> Self {
        Self { run, suite }
    }

    fn seed(&self, what: &[u8], a: u64, b: u64) -> [u8; 32] {
        crypto::hash(
            LABEL,
            &[&self.run.0, what, &a.to_be_bytes(), &b.to_be_bytes()],
        )
    }

    fn id16(&self, what: &[u8], a: u64, b: u64) -> OpaqueId {
        let mut out = [0u8; 16];
        out.copy_from_slice(&self.seed(what, a, b)[..16]);
        OpaqueId(out)
    }

    /// Meter `i`'s device signing identity.
    pub fn meter_identity(&self, i: u64) -> SigningIdentity {
        SigningIdentity::from_seed(&self.seed(b"meter", i, 0))
    }

    /// Meter `i`'s device public key (what a provider verifies against).
    pub fn meter_public(&self, i: u64) -> PublicId {
        self.meter_identity(i).public()
    }

    /// Meter `i`'s channel (one raw view per meter).
    pub fn channel_id(&self, i: u64) -> OpaqueId {
        self.id16(b"channel", i, 0)
    }

    /// Provider `j`'s KEM key.
    pub fn provider_kem(&self, j: u64) -> KemSecretKey {
        KemSecretKey::from_seed(self.suite, &self.seed(b"provider", j, 0))
    }

    /// Provider `j`'s inbox id.
    pub fn provider_id(&self, j: u64) -> OpaqueId {
        self.id16(b"provider-id", j, 0)
    }

    /// The consent under which meter `i` delivers its key to provider `j`.
    pub fn consent_id(&self, i: u64, j: u64) -> OpaqueId {
        self.id16(b"consent", i, j)
    }

    /// Topic on which provider `j` publishes a probe to itself: receiving it proves its
    /// subscriptions are in place before any meter starts.
    pub fn probe_topic(&self, j: u64) -> String {
        format!("{PREFIX}/inbox/{}/probe", self.provider_id(j))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_per_index_and_per_run() {
        let a = Ids::new(OpaqueId([1; 16]), KemSuite::X25519MlKem768);
        let b = Ids::new(OpaqueId([2; 16]), KemSuite::X25519MlKem768);
        assert_ne!(a.channel_id(0), a.channel_id(1));
        assert_ne!(a.channel_id(0), b.channel_id(0));
        assert_ne!(a.consent_id(0, 1), a.consent_id(1, 0));
        assert_ne!(a.meter_public(0), a.meter_public(1));
        assert_eq!(a.meter_public(7), a.meter_identity(7).public());
        assert_eq!(
            a.provider_kem(3).public().to_bytes(),
            a.provider_kem(3).public().to_bytes()
        );
    }
}

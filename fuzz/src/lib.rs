//! Helpers shared by the fuzz targets (see docs/FUZZING.md).
//!
//! Most protocol messages are signed and the decoders check the signature before (or while)
//! parsing, so random bytes rarely get past the signature check. [`resign`] lets a target
//! *also* feed a copy of its input that carries a valid signature by a fixed test key, so the
//! fuzzer reaches the field parsing behind it.

use p1consent_shared::crypto::{KemSecretKey, KemSuite, PublicId, SigningIdentity, unhex};
use std::sync::OnceLock;

pub const SIG_LEN: usize = 64;
pub const KEY_LEN: usize = 32;

/// The fixed signing key the targets re-sign inputs with.
pub fn test_signer() -> &'static SigningIdentity {
    static S: OnceLock<SigningIdentity> = OnceLock::new();
    S.get_or_init(|| SigningIdentity::from_seed(&[7u8; 32]))
}

/// A copy of `input` with the 32 bytes at `key_at` replaced by `signer`'s public key (if
/// `key_at` is `Some`) and the trailing 64-byte signature replaced by `signer`'s signature over
/// `label || 0x00 || body` (or just `body` when `label` is `None`), where body is everything
/// before the signature. `None` when the input is too short to hold key and signature.
pub fn resign(
    input: &[u8],
    key_at: Option<usize>,
    signer: &SigningIdentity,
    label: Option<&str>,
) -> Option<Vec<u8>> {
    let min = key_at.map_or(0, |k| k + KEY_LEN) + SIG_LEN;
    if input.len() < min {
        return None;
    }
    let mut out = input.to_vec();
    if let Some(k) = key_at {
        out[k..k + KEY_LEN].copy_from_slice(signer.public().as_bytes());
    }
    let split = out.len() - SIG_LEN;
    let sig = match label {
        Some(l) => {
            let mut m = Vec::with_capacity(l.len() + 1 + split);
            m.extend_from_slice(l.as_bytes());
            m.push(0);
            m.extend_from_slice(&out[..split]);
            signer.sign(&m)
        }
        None => signer.sign(&out[..split]),
    };
    out[split..].copy_from_slice(&sig);
    Some(out)
}

/// shared/tests/vectors/channel.json, parsed.
pub fn channel_vectors() -> &'static serde_json::Value {
    static V: OnceLock<serde_json::Value> = OnceLock::new();
    V.get_or_init(|| {
        serde_json::from_str(include_str!("../../shared/tests/vectors/channel.json"))
            .expect("channel.json")
    })
}

/// A hex string of a vector file as bytes.
pub fn vec_hex(v: &serde_json::Value, pointer: &str) -> Vec<u8> {
    unhex(v.pointer(pointer).and_then(|s| s.as_str()).expect(pointer)).expect(pointer)
}

fn arr32(b: Vec<u8>) -> [u8; 32] {
    b.try_into().expect("32 bytes")
}

/// The channel vectors' device signing identity (signs records and deliveries).
pub fn channel_device() -> &'static SigningIdentity {
    static S: OnceLock<SigningIdentity> = OnceLock::new();
    S.get_or_init(|| SigningIdentity::from_seed(&arr32(vec_hex(channel_vectors(), "/device_seed"))))
}

/// The device public id of the channel vectors.
pub fn channel_device_public() -> PublicId {
    channel_device().public()
}

/// The reader KEM key of the channel vectors' ML-KEM delivery (deliveries[1]); ML-KEM key
/// generation is fast, so targets can rebuild state from it per input.
pub fn channel_reader_kem() -> &'static KemSecretKey {
    static K: OnceLock<KemSecretKey> = OnceLock::new();
    K.get_or_init(|| {
        let v = channel_vectors();
        let suite = v
            .pointer("/deliveries/1/kem_suite")
            .and_then(|s| s.as_str())
            .and_then(KemSuite::from_name)
            .expect("kem suite");
        KemSecretKey::from_seed(suite, &arr32(vec_hex(v, "/deliveries/1/kem_seed")))
    })
}

/// shared/tests/vectors/consent.json, parsed.
pub fn consent_vectors() -> &'static serde_json::Value {
    static V: OnceLock<serde_json::Value> = OnceLock::new();
    V.get_or_init(|| {
        serde_json::from_str(include_str!("../../shared/tests/vectors/consent.json"))
            .expect("consent.json")
    })
}

/// The consent vectors' thread id and thread key (`thread.consent_thread_id`, `thread.thread_key`).
pub fn consent_thread() -> (p1consent_shared::crypto::OpaqueId, [u8; 32]) {
    let v = consent_vectors();
    let id: [u8; 16] = vec_hex(v, "/thread/consent_thread_id").try_into().expect("16 bytes");
    (p1consent_shared::crypto::OpaqueId(id), arr32(vec_hex(v, "/thread/thread_key")))
}

/// base64url without padding (as the links use).
pub fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    s
}

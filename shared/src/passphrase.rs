//! Passphrase protection of a secret file: Argon2id (v0x13) stretches the passphrase into an
//! XChaCha20-Poly1305 key. The owner's recovery kit (wallet) and the provider's key file use it
//! after a header of their own (magic, version, ...), which it authenticates too:
//!
//! ```text
//! caller's header | m_cost_kib u32 | t_cost u32 | p_cost u32 | salt [16] | nonce [24] |
//! XChaCha20-Poly1305(key = Argon2id(passphrase, salt), aad = all bytes before, plaintext)
//! ```
//!
//! Opening is hostile-input safe: the Argon2 costs are bounded before anything is allocated.

use argon2::{Algorithm, Argon2, Params, Version};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::crypto::{self, NONCE_LEN, SymmetricKey, TAG_LEN};

pub const SALT_LEN: usize = 16;
/// Costs, salt and nonce: what sits between the caller's header and the ciphertext.
pub const PARAMS_LEN: usize = 12 + SALT_LEN + NONCE_LEN;
/// Bytes the protection adds to the plaintext.
pub const OVERHEAD: usize = PARAMS_LEN + TAG_LEN;

/// Why a passphrase-protected section could not be written or opened.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PassphraseError {
    /// Argon2 costs outside [`KdfParams::check`]'s bounds; the text says which.
    #[error("{0}")]
    CostOutOfRange(&'static str),
    /// The AEAD cannot tell these apart.
    #[error("wrong passphrase, or the data was altered")]
    WrongPassphraseOrTampered,
    #[error("cut short")]
    CutShort,
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane.
    fn default() -> Self {
        Self {
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

impl KdfParams {
    /// Cheap parameters for tests and doc examples only (8 MiB, 1 pass).
    pub fn insecure_fast() -> Self {
        Self {
            m_cost_kib: 8 * 1024,
            t_cost: 1,
            p_cost: 1,
        }
    }

    /// Refuses costs a hostile file could use to make us allocate gigabytes or spin for
    /// minutes: 8 MiB..=1 GiB, 1..=64 passes, 1..=16 lanes. (The recovery kit's bounds; the
    /// provider key file accepted up to 4 GiB and 100 passes before both shared this code, and
    /// the tighter set was kept.)
    pub fn check(&self) -> Result<(), PassphraseError> {
        if !(8 * 1024..=1024 * 1024).contains(&self.m_cost_kib) {
            return Err(PassphraseError::CostOutOfRange(
                "Argon2 memory cost out of range",
            ));
        }
        if !(1..=64).contains(&self.t_cost) || !(1..=16).contains(&self.p_cost) {
            return Err(PassphraseError::CostOutOfRange(
                "Argon2 time or lane cost out of range",
            ));
        }
        Ok(())
    }

    fn derive(&self, passphrase: &[u8], salt: &[u8]) -> Result<SymmetricKey, PassphraseError> {
        self.check()?;
        let params = Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| PassphraseError::Kdf(e.to_string()))?;
        let mut out = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(passphrase, salt, &mut out[..])
            .map_err(|e| PassphraseError::Kdf(e.to_string()))?;
        Ok(SymmetricKey::from_bytes(*out))
    }

    fn to_bytes(self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&self.m_cost_kib.to_be_bytes());
        b[4..8].copy_from_slice(&self.t_cost.to_be_bytes());
        b[8..].copy_from_slice(&self.p_cost.to_be_bytes());
        b
    }
}

/// Appends costs, a fresh salt and nonce, and the sealed `plaintext` to `out`, which holds the
/// caller's header: every byte already in `out` is authenticated. On error `out` is unchanged.
pub fn seal_after_header(
    out: &mut Vec<u8>,
    passphrase: &[u8],
    params: KdfParams,
    plaintext: &[u8],
) -> Result<(), PassphraseError> {
    let salt = crypto::random_bytes::<SALT_LEN>();
    let key = params.derive(passphrase, &salt)?;
    let nonce = crypto::random_bytes::<NONCE_LEN>();
    out.reserve(OVERHEAD + plaintext.len());
    out.extend_from_slice(&params.to_bytes());
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    let ct = crypto::seal_with_nonce(&key, &nonce, out, plaintext);
    out.extend_from_slice(&ct);
    Ok(())
}

/// A protected section read from `bytes`, its costs already checked, not yet opened (so a
/// caller can refuse a hostile file before asking for the passphrase).
#[derive(Debug)]
pub struct ProtectedSection<'a> {
    /// The caller's header, costs, salt and nonce.
    aad: &'a [u8],
    params: KdfParams,
    salt: &'a [u8],
    nonce: [u8; NONCE_LEN],
    ciphertext: &'a [u8],
}

impl<'a> ProtectedSection<'a> {
    /// Reads the section that starts after the caller's `header_len` bytes; everything after
    /// the nonce is the ciphertext.
    pub fn parse(bytes: &'a [u8], header_len: usize) -> Result<Self, PassphraseError> {
        let aad_len = header_len
            .checked_add(PARAMS_LEN)
            .ok_or(PassphraseError::CutShort)?;
        if bytes.len() < aad_len + TAG_LEN {
            return Err(PassphraseError::CutShort);
        }
        let (aad, ciphertext) = bytes.split_at(aad_len);
        let section = &aad[header_len..];
        let u32_at = |i: usize| {
            u32::from_be_bytes([section[i], section[i + 1], section[i + 2], section[i + 3]])
        };
        let params = KdfParams {
            m_cost_kib: u32_at(0),
            t_cost: u32_at(4),
            p_cost: u32_at(8),
        };
        params.check()?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&section[12 + SALT_LEN..]);
        Ok(Self {
            aad,
            params,
            salt: &section[12..12 + SALT_LEN],
            nonce,
            ciphertext,
        })
    }

    pub fn params(&self) -> KdfParams {
        self.params
    }

    /// Derives the key (the slow step) and opens the plaintext, zeroized when dropped.
    pub fn open(&self, passphrase: &[u8]) -> Result<Zeroizing<Vec<u8>>, PassphraseError> {
        let key = self.params.derive(passphrase, self.salt)?;
        crypto::open(&key, &self.nonce, self.aad, self.ciphertext)
            .map_err(|_| PassphraseError::WrongPassphraseOrTampered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &[u8] = b"HEADER\x01\x02";
    const PASS: &[u8] = b"correct horse battery";
    const SECRET: &[u8] = b"the secret seeds";

    fn sealed() -> Vec<u8> {
        let mut out = HEADER.to_vec();
        seal_after_header(&mut out, PASS, KdfParams::insecure_fast(), SECRET).unwrap();
        out
    }

    fn open(bytes: &[u8], pass: &[u8]) -> Result<Zeroizing<Vec<u8>>, PassphraseError> {
        ProtectedSection::parse(bytes, HEADER.len())?.open(pass)
    }

    #[test]
    fn round_trip_keeps_the_header_and_layout() {
        let bytes = sealed();
        assert_eq!(bytes.len(), HEADER.len() + OVERHEAD + SECRET.len());
        assert_eq!(&bytes[..HEADER.len()], HEADER);
        // Costs, big-endian, right after the header.
        let costs = &bytes[HEADER.len()..HEADER.len() + 12];
        assert_eq!(costs, &[0, 0, 0x20, 0, 0, 0, 0, 1, 0, 0, 0, 1]);
        let section = ProtectedSection::parse(&bytes, HEADER.len()).unwrap();
        assert_eq!(section.params(), KdfParams::insecure_fast());
        assert_eq!(&section.open(PASS).unwrap()[..], SECRET);
        // An empty plaintext is fine too; fresh salt and nonce every time.
        let mut empty = HEADER.to_vec();
        seal_after_header(&mut empty, PASS, KdfParams::insecure_fast(), b"").unwrap();
        assert!(open(&empty, PASS).unwrap().is_empty());
        assert_ne!(sealed(), bytes);
    }

    #[test]
    fn wrong_passphrase_is_refused() {
        let bytes = sealed();
        for wrong in [
            &b""[..],
            b"correct horse battery ",
            b"Correct horse battery",
        ] {
            assert_eq!(
                open(&bytes, wrong),
                Err(PassphraseError::WrongPassphraseOrTampered)
            );
        }
    }

    #[test]
    fn every_tampered_byte_is_rejected() {
        let bytes = sealed();
        let costs = HEADER.len()..HEADER.len() + 12;
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            let err = open(&bad, PASS).expect_err(&format!("byte {i} tampered"));
            if costs.contains(&i) {
                // Out of range, or in range and a different key.
                assert!(
                    matches!(
                        err,
                        PassphraseError::CostOutOfRange(_)
                            | PassphraseError::WrongPassphraseOrTampered
                    ),
                    "{i}: {err}"
                );
            } else {
                // The caller's header included: it is associated data.
                assert_eq!(err, PassphraseError::WrongPassphraseOrTampered, "{i}");
            }
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            open(&longer, PASS),
            Err(PassphraseError::WrongPassphraseOrTampered)
        );
    }

    #[test]
    fn absurd_costs_are_refused_before_deriving() {
        let bytes = sealed();
        let at = HEADER.len();
        // 4 TiB of memory (deriving would abort on allocation), under 8 MiB, 0 and 1000
        // passes, 0 and 17 lanes.
        for (offset, v) in [
            (0, u32::MAX),
            (0, 8 * 1024 - 1),
            (4, 0),
            (4, 1000),
            (8, 0),
            (8, 17),
        ] {
            let mut bad = bytes.clone();
            bad[at + offset..at + offset + 4].copy_from_slice(&v.to_be_bytes());
            assert!(
                matches!(
                    ProtectedSection::parse(&bad, at),
                    Err(PassphraseError::CostOutOfRange(_))
                ),
                "cost at {offset} = {v}"
            );
        }
        // Sealing with them is refused too, and leaves the header alone.
        let mut out = HEADER.to_vec();
        let huge = KdfParams {
            m_cost_kib: u32::MAX,
            ..KdfParams::insecure_fast()
        };
        assert!(matches!(
            seal_after_header(&mut out, PASS, huge, SECRET),
            Err(PassphraseError::CostOutOfRange(_))
        ));
        assert_eq!(out, HEADER);
        // The bounds themselves are accepted.
        for ok in [
            KdfParams {
                m_cost_kib: 1024 * 1024,
                t_cost: 64,
                p_cost: 16,
            },
            KdfParams::insecure_fast(),
            KdfParams::default(),
        ] {
            assert_eq!(ok.check(), Ok(()));
        }
    }

    #[test]
    fn cut_short_input_is_refused() {
        let bytes = sealed();
        for n in 0..HEADER.len() + OVERHEAD {
            assert!(
                matches!(
                    ProtectedSection::parse(&bytes[..n], HEADER.len()),
                    Err(PassphraseError::CutShort)
                ),
                "cut to {n} bytes"
            );
        }
        // Long enough for the tag but missing plaintext bytes: the AEAD notices.
        for n in HEADER.len() + OVERHEAD..bytes.len() {
            assert_eq!(
                open(&bytes[..n], PASS),
                Err(PassphraseError::WrongPassphraseOrTampered),
                "cut to {n} bytes"
            );
        }
        assert!(matches!(
            ProtectedSection::parse(&bytes, usize::MAX),
            Err(PassphraseError::CutShort)
        ));
    }
}

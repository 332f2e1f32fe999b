//! The P1 Consent protocol, shared by the Pi agent, the owner's wallet and providers.
//!
//! - [`dsmr`]: framing, CRC and parsing of P1 telegrams (DSMR 2.2–5.0, e-MUCS, variants).
//! - [`crypto`]: identities, hybrid post-quantum KEM, key wrapping, AEAD, hashing.
//! - [`channel`]: sealed, signed, hash-linked channels; key rotation; key delivery.
//! - [`consent`]: data scopes, provider request links, the owner's consent log, receipts.
//! - [`pairing`]: the QR payload and the claim/challenge/answer/result exchange.
//! - [`passphrase`]: Argon2id + XChaCha20-Poly1305 protection of secret files (recovery kit,
//!   provider key file).
//! - [`topics`]: the MQTT topic layout; [`mqtt`] (feature `mqtt`): the connection all parties use.
//! - [`wire`]: the byte codec all messages use.
//! - [`view`]: consented views: the reading/aggregate JSON a provider receives in a channel.
//! - [`qr`] (feature `qr`): QR codes for pairing and request links (terminal, SVG, PNG, decode).
//!
//! Message type bytes (first byte of every message; the second is the format version,
//! the third the suite id):
//!
//! | byte | message |
//! |------|---------|
//! | 0x01 | channel record (data or rotation) |
//! | 0x02 | key delivery |
//! | 0x10 | provider request |
//! | 0x11 | thread key envelope |
//! | 0x12 | log entry (owner event, device acknowledgement, provider confirmation) |
//! | 0x20 | pairing QR payload |
//! | 0x21–0x24 | pairing claim, challenge, answer, result |
//!
//! The specification with test vectors is docs/PROTOCOL.md.

pub mod channel;
pub mod consent;
pub mod crypto;
pub mod dsmr;
#[cfg(feature = "mqtt")]
pub mod mqtt;
pub mod pairing;
pub mod passphrase;
#[cfg(feature = "qr")]
pub mod qr;
pub mod topics;
pub mod view;
pub mod wire;

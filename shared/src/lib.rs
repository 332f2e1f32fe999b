//! The P1 Consent protocol, shared by the Pi agent, the owner's wallet and providers.
//!
//! - [`dsmr`]: framing, CRC and parsing of P1 telegrams (DSMR 2.2–5.0, e-MUCS, variants).
//! - [`wire`]: the byte codec all messages use.
//!
//! The specification with test vectors is docs/PROTOCOL.md.

pub mod dsmr;
pub mod wire;

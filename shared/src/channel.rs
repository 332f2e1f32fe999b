//! Sealed channels: see docs/PROTOCOL.md.

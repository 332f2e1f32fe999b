//! The P1 Consent agent: the daemon on a Raspberry Pi at the meter's P1 port.
//!
//! A telegram's path: [`source`] (serial port, replay, simulator) → parse
//! (`p1consent_shared::dsmr`) → seal into the channels of the views the owner consented to →
//! publish through a durable outbox to MQTT.

pub mod source;
pub mod store;

//! The P1 Consent agent: the daemon on a Raspberry Pi at the meter's P1 port.
//!
//! A telegram's path: [`source`] (serial port, replay, simulator) → parse
//! (`p1consent_shared::dsmr`) → [`views`] derive what each consent allows → seal into the
//! view's channel → [`store`] outbox → [`outbox`] publishes to MQTT. [`follower`] follows the
//! owner's consent log; [`agent`] ties it together.

pub mod agent;
pub mod broker;
pub mod config;
pub mod follower;
pub mod identity;
pub mod meter;
pub mod outbox;
pub mod pairing;
pub mod qr;
pub mod source;
pub mod status;
pub mod store;
pub mod views;

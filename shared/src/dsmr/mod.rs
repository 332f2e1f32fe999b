//! P1 / DSMR telegrams.

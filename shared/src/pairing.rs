//! Pairing a device with its owner.

//! Harness for the cross-crate scenarios in `tests/tests/`: a real broker, an in-process agent
//! with a simulated meter, an owner wallet and providers, driven through their public APIs.

//! `Container` implementations: the conformance suite on `LocalContainer`, `MockContainer`
//! as a charm's unit test uses it, and `PebbleContainer` against a real Pebble daemon.

#[cfg(feature = "testing")]
mod conformance;
#[cfg(feature = "mock")]
mod mock;
#[cfg(feature = "pebble")]
mod pebble;

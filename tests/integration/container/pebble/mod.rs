//! `PebbleContainer` and a real Pebble daemon (`source scripts/pebble.sh` puts `pebble`
//! on PATH): the conformance suite, the whole life cycle, and a client killed mid-run.

#[cfg(feature = "testing")]
mod conformance;
#[cfg(feature = "cli")]
mod killed;
mod lifecycle;

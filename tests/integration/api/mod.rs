//! The library API as a charm uses it: the `Backups` handle and offline unit tests.

#[cfg(all(feature = "mock", feature = "testing"))]
mod handle;
#[cfg(feature = "testing")]
mod offline;

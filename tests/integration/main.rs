//! The integration tests: one binary, one module per operation or component, so that
//! the test for X is in the file (or directory) named X. Real bash, tar, gpg, the aws
//! CLI and S3 servers on 127.0.0.1; Pebble and Synapse where the module says so.
//!
//! Run one module with `cargo test --all-features --test integration create::` (or
//! `s3::sse::`, `container::pebble::`, …). Modules that need a feature beyond the
//! default ones are compiled only with it; the README's test command uses
//! `--all-features`.

#![allow(
    clippy::too_many_lines,
    reason = "the 80-line rule is for the library; a scenario here reads top to bottom"
)]

#[path = "../support/mod.rs"]
mod support;

#[cfg(feature = "testing")]
mod api;
#[cfg(feature = "cli")]
mod cli;
mod container;
mod create;
mod delay_proxy;
mod extract;
mod incremental;
#[cfg(all(feature = "cli", feature = "mock"))]
mod lock;
#[cfg(feature = "testing")]
mod parsers;
mod passphrase;
mod priority;
mod progress;
mod prune;
mod quickstart;
mod restore;
mod s3;
mod synapse;

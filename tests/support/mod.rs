//! Support code of the integration tests (`crate::support` in tests/integration/main.rs).
//! benches/e2e.rs and examples/quickstart.rs include some of these files by `#[path]`,
//! which is why they live here and refer to each other as `super::`.

#[cfg(feature = "cli")]
pub mod cli_fixture;
pub mod delay_proxy;
pub mod env;
pub mod faulty;
pub mod pebble_daemon;
pub mod s3_server;
pub mod synapse_server;
pub mod synapse_tree;

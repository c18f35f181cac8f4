//! S3-compatible storage: the relation's parameters and a client.

pub mod client;
pub mod parameters;

pub use client::{ObjectHead, ObjectInfo, S3Client};
pub use parameters::{AddressingStyle, S3Parameters};

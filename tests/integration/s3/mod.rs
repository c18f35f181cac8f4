//! S3: the parameters and the relation data they come from, the SDK client, credentials,
//! server-side encryption, TLS, and the `ObjectStore` conformance suite on `S3Client`.

mod client;
#[cfg(all(feature = "cli", feature = "testing"))]
mod credentials;
mod parameters;
mod relation_checks;
mod relation_v1;
#[cfg(feature = "testing")]
mod sse;
#[cfg(feature = "testing")]
mod store_conformance;
#[cfg(feature = "testing")]
mod tls;

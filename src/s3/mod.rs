//! S3-compatible storage: the relation's parameters ([`S3Parameters`]) and where their
//! credentials come from ([`CredentialSource`]), a client
//! ([`S3Client`]) for the configured bucket, and the storage seam the catalog and the
//! lock use ([`ObjectStore`], with the in-memory [`MemoryStore`] and the
//! [`conformance`] suite under the `testing` feature).

pub mod aws_cli;
pub mod client;
#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod credentials;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
pub mod parameters;
pub mod sse;
pub mod store;
pub mod upload;

pub use client::{Conditional, MultipartUpload, ObjectHead, ObjectInfo, S3Client, VersionedObject};
pub use credentials::{AmbientCredentials, CredentialSource};
#[cfg(any(test, feature = "testing"))]
pub use memory::MemoryStore;
pub use parameters::{AddressingStyle, S3Parameters, S3ParametersBuilder};
pub use sse::{CustomerKey, ServerSideEncryption};
pub use store::{CloneStore, ObjectStore, RangeBody};
pub use upload::Uploaded;

/// The key prefix for a relation `path`: leading and trailing slashes stripped and
/// repeated slashes collapsed (`"/a//b/"` → `"a/b"`); empty for the bucket root.
pub fn normalize_prefix(path: &str) -> String {
    path.split('/')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

/// The object key for `name` under the relation `path`: the normalised prefix (see
/// [`normalize_prefix`]), one `/`, then `name` (its leading slashes dropped). An empty
/// path puts the key at the bucket root, with no leading `/`. This is the key layout
/// the reference charm and MinIO-compatible servers use (tested below, and public as
/// [`S3Client::object_key`](crate::S3Client::object_key)).
pub fn object_key(path: &str, name: &str) -> String {
    let prefix = normalize_prefix(path);
    let name = name.trim_start_matches('/');
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_have_exactly_one_slash_between_parts() {
        let cases = [
            ("", "b", "b"),
            ("/", "b", "b"),
            ("///", "b", "b"),
            ("a", "b", "a/b"),
            ("/a", "b", "a/b"),
            ("a/", "b", "a/b"),
            ("/a/", "b", "a/b"),
            ("a//b", "c", "a/b/c"),
            ("//a///b//", "c", "a/b/c"),
            ("a", "/b", "a/b"),
            ("", "/b", "b"),
            (
                "synapse backups/é",
                "backup-1",
                "synapse backups/é/backup-1",
            ),
        ];
        for (path, name, want) in cases {
            assert_eq!(object_key(path, name), want, "path {path:?} name {name:?}");
        }
    }

    #[test]
    fn prefixes_are_normalised() {
        assert_eq!(normalize_prefix(""), "");
        assert_eq!(normalize_prefix("//"), "");
        assert_eq!(normalize_prefix("/x//y/"), "x/y");
    }
}

//! Back up and restore a Matrix Synapse homeserver to S3-compatible storage, for Juju
//! charms.
//!
//! A backup is what the Python Synapse charm makes — a `tar` of the signing keys, the
//! SQLite database and the local media, encrypted with `gpg --symmetric`, streamed to
//! the bucket by the `aws` CLI inside the workload — made safe: a consistent SQLite
//! snapshot, no shell interpolation, secrets never in argv or logs, a manifest with the
//! SHA-256 of the object so a failed run never looks like a good backup, and restores
//! that stage, check, then swap with rollback. Everything runs through a
//! [`Container`] (shaped like `ops.Container`), so a charm framework plugs in its own.
//!
//! ```
//! # #[path = "../tests/support/s3_server.rs"]
//! # mod s3_server;
//! # #[path = "../tests/support/synapse_tree.rs"]
//! # mod synapse_tree;
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let server = s3_server::TestS3Server::start().await;
//! # server.create_bucket("synapse-backups");
//! # let relation_data = server.relation_data("synapse-backups");
//! # let dir = tempfile::tempdir()?;
//! # synapse_tree::SynapseTree::create(&dir.path().join("root"), &Default::default());
//! # let root = dir.path().join("root").to_string_lossy().into_owned();
//! use synapse_backup::{BackupOptions, Layout, LocalContainer, RestoreOptions, S3Client, S3Parameters};
//!
//! // The s3-integrator relation data: access-key, secret-key, bucket, endpoint, ...
//! let params = S3Parameters::from_relation_data(&relation_data)?;
//! let client = S3Client::new(&params)?;
//! assert!(client.can_use_bucket().await);
//!
//! // The workload: this host, with the Synapse tree under `root` (in the Synapse rock,
//! // `Layout::default()` and plain `create_backup(&container, &params, passphrase)`).
//! let container = LocalContainer::new();
//! let layout = Layout::default().root(root).user(None).group(None).service(None).bash("bash").aws("aws");
//! let passphrase = "a long random passphrase kept in a Juju secret";
//!
//! let report = synapse_backup::create_backup_with(&container, &params, passphrase, &layout, &BackupOptions::default()).await?;
//! let backups = synapse_backup::list_backups(&client).await?;
//! assert_eq!(backups[0].id, report.id);
//! let options = RestoreOptions::default();
//! synapse_backup::verify_backup_with(&container, &params, passphrase, &report.id, &layout, &options).await?;
//! synapse_backup::restore_backup_with(&container, &params, passphrase, &report.id, &layout, &options).await?;
//! # Ok(()) }
//! ```
//!
//! Crate features: `cli` (default: the `synapse-backup` operator command), `mock`
//! ([`MockContainer`] for downstream unit tests), `testing` (the [`Container`]
//! conformance suite in `testing::container_conformance`, the in-memory [`ObjectStore`]
//! `testing::MemoryStore` and its conformance suite in `testing::store_conformance`).

mod backup;
mod container;
mod error;
mod s3;

pub use backup::catalog::{BackupInfo, BackupStatus, PruneReport, RetentionPolicy};
pub use backup::catalog::{
    backup_status, delete_backup, delete_backup_with, exists_backup, list_backups,
    protected_backups, prune_backups, prune_backups_with, read_manifest, select_for_pruning,
};
pub use backup::layout::{DatabaseKind, HomeserverConfig, Layout};
pub use backup::lock::{BackupLock, LockGuard, LockInfo, LockMode, LockOptions, LockOwner};
pub use backup::manifest::{
    Cipher, DatabaseSnapshot, EntryKind, INNER_MANIFEST_MEMBER, InnerManifest, MANIFEST_FORMAT,
    Manifest, ManifestEntry, ManifestLayout, ManifestPath,
};
pub use backup::plan::{
    BackupId, BackupOptions, CancelToken, Compression, DEFAULT_SNAPSHOT_TIMEOUT, LiveChanges,
    check_passphrase,
};
pub use backup::progress::{Progress, ProgressCallback, ProgressMeter, ProgressStage};
pub use backup::{
    BackupReport, ExtractReport, ExtractTarget, RestoreOptions, RestoreReport, VerifyReport,
    create_backup, create_backup_with, extract_backup_with, remove_abandoned_work_dirs,
    restore_backup, restore_backup_with, verify_backup, verify_backup_with,
};
#[cfg(any(test, feature = "mock"))]
pub use container::MockContainer;
pub use container::local::{LocalContainer, ProcessSupervisor, ServiceManager, SystemdServices};
#[cfg(feature = "pebble")]
pub use container::pebble::PebbleContainer;
pub use container::{
    Container, ExecOptions, ExecOutput, FileInfo, FileKind, ListOptions, MakeDirOptions,
    PushOptions,
};
pub use error::{BackupError, ConfigError, ContainerError, FieldProblem, S3Error, Stage};
pub use s3::{
    AddressingStyle, AmbientCredentials, CloneStore, Conditional, CredentialSource, CustomerKey,
    MultipartUpload, ObjectHead, ObjectInfo, ObjectStore, S3Client, S3Parameters,
    S3ParametersBuilder, ServerSideEncryption, VersionedObject,
};

/// Test support (feature `testing`): the conformance suites that an implementation of
/// [`Container`] or [`ObjectStore`] should pass, and [`MemoryStore`](testing::MemoryStore),
/// an in-memory [`ObjectStore`] for fast tests of code over the catalog.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    pub use crate::container::conformance as container_conformance;
    pub use crate::s3::MemoryStore;
    pub use crate::s3::conformance as store_conformance;

    /// Internals that this crate's own tests and benchmark reach (the per-run aws CLI
    /// config, the archive listing parsers): no stability promise.
    pub mod internals {
        pub use crate::backup::plan::{WorkDir, aws_config_file, ca_bundle, script_env};
        pub use crate::backup::restore_plan::parse_members;
        pub use crate::s3::aws_cli::{
            Transfer, TransferSettings, config_file, credential_env, customer_key_file, sse_args,
        };
    }
}

/// The README's examples, compiled and run as doctests.
#[cfg(all(doctest, feature = "mock", feature = "pebble"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

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
//! conformance suite in [`container::conformance`], the in-memory [`ObjectStore`]
//! `MemoryStore` and its conformance suite in `s3::conformance`).

pub mod backup;
pub mod container;
pub mod error;
pub mod s3;

pub use backup::layout::{HomeserverConfig, Layout};
pub use backup::lock::{BackupLock, LockGuard, LockInfo, LockMode, LockOptions, LockOwner};
pub use backup::manifest::{Cipher, DatabaseSnapshot, EntryKind, Manifest};
pub use backup::plan::{BackupId, BackupOptions, CancelToken, Compression, LiveChanges};
pub use backup::progress::{Progress, ProgressCallback, ProgressMeter, ProgressStage};
pub use backup::{
    BackupInfo, BackupReport, BackupStatus, ExtractReport, ExtractTarget, PruneReport,
    RestoreOptions, RestoreReport, RetentionPolicy, VerifyReport, backup_status, create_backup,
    create_backup_with, delete_backup, delete_backup_with, exists_backup, extract_backup_with,
    list_backups, prune_backups, prune_backups_with, read_manifest, remove_abandoned_work_dirs,
    restore_backup, restore_backup_with, verify_backup, verify_backup_with,
};

#[cfg(any(test, feature = "mock"))]
pub use container::MockContainer;
pub use container::local::{LocalContainer, ProcessSupervisor, ServiceManager, SystemdServices};
pub use container::{
    Container, ExecOptions, ExecOutput, FileInfo, FileKind, ListOptions, MakeDirOptions,
    PushOptions,
};
pub use error::{BackupError, ConfigError, ContainerError, FieldProblem, S3Error, Stage};
#[cfg(any(test, feature = "testing"))]
pub use s3::MemoryStore;
pub use s3::{
    AddressingStyle, CloneStore, Conditional, CustomerKey, MultipartUpload, ObjectHead, ObjectInfo,
    ObjectStore, S3Client, S3Parameters, S3ParametersBuilder, ServerSideEncryption,
    VersionedObject,
};

/// The README's examples, compiled and run as doctests.
#[cfg(all(doctest, feature = "mock"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

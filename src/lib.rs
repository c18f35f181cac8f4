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
//! One handle, [`Backups`], carries the life cycle: make it once with the workload and
//! the s3 relation's parameters, then `create`, `list`, `verify`, `restore`, `extract`,
//! `status`, `delete`, `prune_plan` (an inspectable [`PrunePlan`]: what goes, what stays
//! and why) and `prune`. This compiles as copied (it needs `tokio` with its `macros` and
//! `rt-multi-thread` features):
//!
//! ```no_run
//! use std::collections::HashMap;
//!
//! use synapse_backup::{
//!     Backups, CreateOptions, Layout, LocalContainer, RestoreOptions, RetentionPolicy,
//!     S3Parameters, VerifyOptions,
//! };
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // The s3-integrator relation data (interface v0: the keys in the databag; for v1
//!     // use `S3Parameters::from_relation_data_with_secret`).
//!     let relation_data: HashMap<String, String> = [
//!         ("access-key", "AKIAIOSFODNN7EXAMPLE"),
//!         ("secret-key", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
//!         ("bucket", "synapse-backups"),
//!         ("endpoint", "https://s3.example.com"),
//!         ("region", "us-east-1"),
//!         ("path", "synapse"),
//!     ]
//!     .into_iter()
//!     .map(|(k, v)| (k.to_string(), v.to_string()))
//!     .collect();
//!     let params = S3Parameters::from_relation_data(&relation_data)?;
//!
//!     // The workload: this host, laid out as in the Synapse rock (config and data in
//!     // /data, user synapse). A Kubernetes charm passes its Pebble-backed `Container`.
//!     let backups = Backups::new(LocalContainer::new(), params, Layout::default())?;
//!     let passphrase = "a long random passphrase kept in a Juju secret";
//!
//!     let report = backups.create(passphrase, &CreateOptions::default()).await?;
//!     assert_eq!(backups.list().await?[0].id, report.id);
//!     backups.verify(passphrase, &report.id, &VerifyOptions::default()).await?;
//!     backups.restore(passphrase, &report.id, &RestoreOptions::default()).await?;
//!
//!     let plan = backups.prune_plan(&RetentionPolicy::default().keep_last(Some(7))).await?;
//!     for planned in plan.to_delete() {
//!         println!("deleting {}: {:?}", planned.backup.id, planned.reasons);
//!     }
//!     backups.prune(&plan).await?;
//!     Ok(())
//! }
//! ```
//!
//! The card-shaped functions stay as thin wrappers over the same internals, for an
//! action that needs one call: [`create_backup`]`(&container, &params, passphrase)`
//! returns the new [`BackupId`]; [`verify_backup`], [`restore_backup`],
//! [`list_backups`], [`delete_backup`] and [`prune_backups`] likewise.
//!
//! Crate features: `cli` (default: the `synapse-backup` operator command), `mock`
//! (`MockContainer` for downstream unit tests), `testing` (the [`Container`]
//! conformance suite in `testing::container_conformance`, the in-memory [`ObjectStore`]
//! `testing::MemoryStore` and its conformance suite in `testing::store_conformance`).

/// The attribute an implementation of [`Container`] or [`ObjectStore`] needs,
/// re-exported so that it needs no dependency of its own:
/// `#[synapse_backup::async_trait] impl Container for MyWorkload { … }`.
pub use async_trait::async_trait;

mod backup;
mod container;
mod error;
mod s3;

pub use backup::aws_ranges::{
    AWS_RANGED_CHUNK_MIB, AWS_RANGED_CONCURRENCY, AWS_STREAMED_CHUNK_MIB,
};
pub use backup::bandwidth::Bandwidth;
pub use backup::catalog::{
    BackupChain, BackupInfo, BackupStatus, ListedKind, PruneReport, RetentionPolicy,
};
pub use backup::catalog::{
    backup_status, chain_in, delete_backup, delete_backup_with, delete_backup_with_dependents,
    describe_backup, exists_backup, list_backups, protected_backups, prune_backups,
    prune_backups_with, read_manifest, select_for_pruning,
};
pub use backup::handle::{Backups, CreateOptions, VerifyOptions};
pub use backup::incremental::{
    BackupKind, BaseState, ChainLink, ChainPolicy, DATABASE_SUFFIX, DEFAULT_FULL_EVERY,
    DEFAULT_MAX_SUPERSEDED_PERCENT, FullReason, IncrementalPlan, IndexEntry, IndexReader,
    IndexSummary, IndexWriter, PackChain, TreeFile, TreeListing, Usage, chain_of, choose_base,
    full_after_plan, index_suffix, members_of, parse_database_name, parse_index_name,
    plan_incremental,
};
pub use backup::layout::{DatabaseKind, HomeserverConfig, Layout};
pub use backup::lock::{BackupLock, LockGuard, LockInfo, LockMode, LockOptions, LockOwner};
pub use backup::manifest::{
    Cipher, DatabasePack, DatabaseSnapshot, EntryKind, INNER_MANIFEST_MEMBER, InnerManifest,
    MANIFEST_FORMAT, Manifest, ManifestChain, ManifestEntry, ManifestLayout, ManifestPath,
};
pub use backup::phases::RestorePhases;
pub use backup::plan::{
    BackupId, BackupOptions, CancelToken, Compression, DEFAULT_SNAPSHOT_TIMEOUT, LiveChanges,
    check_passphrase,
};
pub use backup::priority::{IoPriority, Priority};
pub use backup::progress::{Progress, ProgressCallback, ProgressMeter, ProgressStage, human_bytes};
pub use backup::prune_plan::{
    ClockSource, ID_TIME_AHEAD_TOLERANCE, ID_TIME_BEHIND_TOLERANCE, LeftoverRule, PlanContext,
    PlannedBackup, PruneAction, PrunePlan, PruneReason, StaleUpload, plan_prune,
};
pub use backup::reserve::{DEFAULT_SPACE_RESERVE_MIB, DEFAULT_SPACE_RESERVE_PERCENT};
pub use backup::transfer::{
    LIBRARY_PART_MIB, LIBRARY_PARTS_IN_FLIGHT, LIBRARY_RANGE_MIB, LIBRARY_RANGES_IN_FLIGHT,
    LIBRARY_RANGES_IN_FLIGHT_MAX, READ_AHEAD_MAX_MIB, READ_AHEAD_RANGE_MIB, Transfer,
};
pub use backup::{
    BackupReport, DEFAULT_SMALL_PACK_MIB, ExtractReport, ExtractTarget, RestoreOptions,
    RestoreReport, VerifyReport, create_backup, create_backup_with, extract_backup_with,
    remove_abandoned_work_dirs, restore_backup, restore_backup_with, verify_backup,
    verify_backup_with,
};
#[cfg(any(test, feature = "mock"))]
pub use container::MockContainer;
pub use container::local::{LocalContainer, ProcessSupervisor, ServiceManager, SystemdServices};
#[cfg(feature = "pebble")]
pub use container::pebble::PebbleContainer;
pub use container::{
    Container, ExecExit, ExecOptions, ExecOutput, ExecProcess, ExecStdin, ExecStdout, FileInfo,
    FileKind, ListOptions, MakeDirOptions, PushOptions,
};
pub use error::{
    BackupError, ConfigError, ContainerError, FieldProblem, IndexError, S3Error, Stage, Transport,
};
pub use s3::{
    AddressingStyle, AmbientCredentials, CloneStore, Conditional, CredentialSource, CustomerKey,
    MultipartUpload, ObjectHead, ObjectInfo, ObjectStore, RangeBody, S3Client, S3Parameters,
    S3ParametersBuilder, ServerSideEncryption, Uploaded, VersionedObject,
};

/// Test support (feature `testing`): the conformance suites that an implementation of
/// [`Container`] or [`ObjectStore`] should pass, and [`MemoryStore`](testing::MemoryStore),
/// an in-memory [`ObjectStore`] for fast tests of code over the catalog.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    pub use crate::backup::fake::{
        FAKE_CIPHERTEXT_HEADER, FAKE_HOMESERVER_YAML, FakeWorkload, put_backup,
    };
    pub use crate::container::conformance as container_conformance;
    pub use crate::s3::MemoryStore;
    pub use crate::s3::conformance as store_conformance;

    /// Internals that this crate's own tests and benchmark reach (the per-run aws CLI
    /// config, the archive listing parsers): no stability promise.
    pub mod internals {
        pub use crate::backup::plan::{WorkDir, aws_config_file, ca_bundle, script_env};

        /// The aws CLI settings a verify, restore or extract with `options` gives the
        /// workload's download of `key` (`size` bytes) from `store`: the range size set,
        /// or the one a probe of the object chooses.
        pub async fn workload_download_settings(
            options: &crate::RestoreOptions,
            store: &dyn crate::ObjectStore,
            key: &str,
            size: u64,
        ) -> crate::BackupOptions {
            options
                .download_settings_for(
                    crate::Transfer::Workload,
                    crate::backup::aws_ranges::probe(store, key, size),
                )
                .await
        }
        pub use crate::backup::restore_plan::parse_members;
        pub use crate::s3::aws_cli::{
            Transfer, TransferSettings, config_file, credential_env, customer_key_file, sse_args,
        };
        pub use crate::s3::client::{
            MAX_LIST_OBJECTS, MAX_LIST_PAGES, check_next_page, check_objects,
        };
    }
}

/// The README's examples, compiled and run as doctests.
#[cfg(all(doctest, feature = "mock", feature = "testing", feature = "pebble"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

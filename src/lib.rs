//! Back up and restore a Matrix Synapse homeserver to S3-compatible storage.

pub mod backup;
pub mod container;
pub mod error;
pub mod s3;

pub use backup::layout::{HomeserverConfig, Layout};
pub use backup::manifest::Manifest;
pub use backup::plan::{BackupId, BackupOptions, Compression};
pub use backup::{
    BackupInfo, BackupReport, BackupStatus, PruneReport, RestoreOptions, RestoreReport,
    RetentionPolicy, VerifyReport, backup_status, create_backup, create_backup_with, delete_backup,
    exists_backup, list_backups, prune_backups, restore_backup, restore_backup_with, verify_backup,
    verify_backup_with,
};

#[cfg(any(test, feature = "mock"))]
pub use container::MockContainer;
pub use container::local::{LocalContainer, ProcessSupervisor, ServiceManager, SystemdServices};
pub use container::{
    Container, ExecOptions, ExecOutput, FileInfo, FileKind, ListOptions, MakeDirOptions,
    PushOptions,
};
pub use error::{BackupError, ConfigError, ContainerError, FieldProblem, S3Error, Stage};
pub use s3::{
    AddressingStyle, MultipartUpload, ObjectHead, ObjectInfo, S3Client, S3Parameters,
    S3ParametersBuilder,
};

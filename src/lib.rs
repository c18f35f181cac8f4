//! Back up and restore a Matrix Synapse homeserver to S3-compatible storage.

pub mod backup;
pub mod container;
pub mod error;
pub mod s3;

pub use backup::layout::{HomeserverConfig, Layout};
pub use backup::manifest::Manifest;
pub use backup::plan::{BackupId, BackupOptions, Compression};

pub use container::local::{LocalContainer, ProcessSupervisor, ServiceManager, SystemdServices};
pub use container::{Container, ExecOptions, ExecOutput, FileInfo, FileKind, ListOptions, MakeDirOptions, PushOptions};
#[cfg(any(test, feature = "mock"))]
pub use container::MockContainer;
pub use error::{BackupError, ConfigError, ContainerError, FieldProblem, S3Error, Stage};
pub use s3::{AddressingStyle, ObjectHead, ObjectInfo, S3Client, S3Parameters};

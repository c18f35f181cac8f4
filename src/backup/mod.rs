//! The backup life cycle, run through a [`Container`](crate::Container): the I/O layer
//! over the pure [`plan`], [`restore_plan`], [`layout`] and [`manifest`] modules.

pub mod catalog;
mod create;
pub mod decryption;
mod extract;
pub mod layout;
mod listing;
pub mod lock;
pub mod manifest;
pub mod plan;
pub mod progress;
mod restore;
pub mod restore_plan;
mod run;
mod scripts;
mod work;

pub use catalog::{
    BackupInfo, BackupStatus, PruneReport, RetentionPolicy, backup_status, delete_backup,
    delete_backup_with, exists_backup, list_backups, protected_backups, prune_backups,
    prune_backups_with, read_manifest, select_for_pruning,
};
pub use create::{BackupReport, create_backup, create_backup_with, remove_abandoned_work_dirs};
pub use extract::{ExtractReport, ExtractTarget, extract_backup_with};
pub use lock::{BackupLock, LockGuard, LockInfo, LockMode, LockOptions, LockOwner};
pub use restore::{
    RestoreOptions, RestoreReport, VerifyReport, restore_backup, restore_backup_with,
    verify_backup, verify_backup_with,
};

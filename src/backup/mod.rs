//! The backup life cycle, run through a [`Container`](crate::Container): the I/O layer
//! over the pure [`plan`], [`restore_plan`], [`layout`] and [`manifest`] modules.

pub(crate) mod aws_ranges;
pub(crate) mod bandwidth;
pub(crate) mod catalog;
mod chain;
mod chain_fetch;
mod chain_read;
mod create;
pub(crate) mod decryption;
mod extract;
#[cfg(any(test, feature = "testing"))]
pub(crate) mod fake;
mod fetch;
mod gate;
pub(crate) mod handle;
pub(crate) mod incremental;
mod index_read;
pub(crate) mod layout;
mod listing;
pub(crate) mod lock;
pub(crate) mod manifest;
mod packets;
mod passphrase;
pub(crate) mod phases;
pub(crate) mod plan;
pub(crate) mod priority;
pub(crate) mod progress;
pub(crate) mod prune_plan;
pub(crate) mod reserve;
mod restore;
pub(crate) mod restore_plan;
mod run;
mod scripts;
pub(crate) mod transfer;
mod upload;
mod work;

pub use create::{BackupReport, create_backup, create_backup_with, remove_abandoned_work_dirs};
pub use extract::{ExtractReport, ExtractTarget, extract_backup_with};
pub use restore::{
    DEFAULT_SMALL_PACK_MIB, RestoreOptions, RestoreReport, VerifyReport, restore_backup,
    restore_backup_with, verify_backup, verify_backup_with,
};

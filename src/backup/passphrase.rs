//! What `create` checks before it sends anything to the bucket or runs the pipeline:
//! the local preconditions (the passphrase, the layout, the workload's `homeserver.yaml`
//! and its database kind).

use super::layout::{HomeserverConfig, Layout};
use super::plan::{self, BackupOptions};
use super::run::Run;
use super::work;
use crate::container::Container;
use crate::error::BackupError;

/// The local preconditions of an operation on the live tree: a passphrase gpg can read,
/// a valid layout, and a readable `homeserver.yaml` whose database kind is known. No
/// request goes to the bucket.
///
/// # Errors
/// [`BackupError::InvalidPassphrase`], [`BackupError::Config`] naming the layout field
/// or the `homeserver.yaml` path and what is wrong with it.
pub(crate) async fn local_preconditions<C: Container + ?Sized>(
    container: &C,
    layout: &Layout,
    passphrase: &str,
) -> Result<HomeserverConfig, BackupError> {
    plan::check_passphrase(passphrase)?;
    layout.validate()?;
    Ok(work::read_homeserver_config(container, layout).await?)
}

/// Everything `create` checks before it takes the lock: the local preconditions first
/// (so that a missing `homeserver.yaml` is reported as such, never as an error of the
/// bucket).
///
/// # Errors
/// As [`local_preconditions`].
pub(crate) async fn before_create<C: Container + ?Sized>(
    run: &Run<'_, C>,
    _options: &BackupOptions,
) -> Result<(), BackupError> {
    local_preconditions(run.container, run.layout, run.passphrase).await?;
    Ok(())
}

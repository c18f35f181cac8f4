//! [`Backups`]: one handle over the backup life cycle of one workload and one bucket.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::backup::catalog::{
    self, BackupChain, BackupInfo, BackupStatus, PruneReport, RetentionPolicy,
};
use crate::backup::create::{self, BackupReport};
use crate::backup::extract::{self, ExtractReport, ExtractTarget};
use crate::backup::layout::Layout;
use crate::backup::lock::LockOptions;
use crate::backup::manifest::Manifest;
use crate::backup::passphrase;
use crate::backup::plan::{BackupId, BackupOptions, CancelToken};
use crate::backup::progress::ProgressCallback;
use crate::backup::prune_plan::PrunePlan;
use crate::backup::restore::{self, RestoreOptions, RestoreReport, VerifyReport};
use crate::backup::run::Run;
use crate::container::Container;
use crate::error::BackupError;
use crate::s3::{ObjectStore, S3Client, S3Parameters};

/// Options of [`Backups::create`]: the tuning of [`BackupOptions`] (compression, part
/// size, bandwidth, timeouts, cancellation, the lock, progress), with a setter per field.
pub type CreateOptions = BackupOptions;

/// Options of [`Backups::verify`], with a setter per field:
///
/// ```
/// use std::time::Duration;
/// use synapse_backup::{CancelToken, VerifyOptions};
///
/// let cancel = CancelToken::new();
/// let options = VerifyOptions::default()
///     .timeout(Some(Duration::from_secs(3600)))
///     .cancel(cancel.clone());
/// assert_eq!(options.timeout, Some(Duration::from_secs(3600)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, derive_setters::Setters)]
#[non_exhaustive]
#[setters(prefix = "", generate = true)]
pub struct VerifyOptions {
    /// Kill the download pipeline after this long.
    pub timeout: Option<Duration>,
    /// Cap the download; no cap when `None`.
    pub max_bandwidth: Option<crate::Bandwidth>,
    /// Make the work dir in the workload's temp dir (see
    /// [`RestoreOptions::temp_work_dir`]).
    pub temp_work_dir: bool,
    /// Receives the download's progress; none when `None`.
    pub progress: Option<ProgressCallback>,
    /// Cancels the verification when cancelled: the pipeline is killed and
    /// [`BackupError::Cancelled`] returned (its work dir, holding no secret, is removed by
    /// the next run's sweep).
    pub cancel: CancelToken,
    /// The CPU and I/O priority of the download pipeline (see
    /// [`BackupOptions::priority`](crate::BackupOptions::priority)).
    pub priority: crate::backup::priority::Priority,
    /// The size of the download's ranged GETs in MiB, or `None` (the default) to
    /// choose it per object (see [`RestoreOptions::download_chunk_mib`]).
    #[setters(strip_option)]
    pub download_chunk_mib: Option<u32>,
    /// How many ranges are downloaded at once, or `None` (the default) as the range
    /// size says (see [`RestoreOptions::download_concurrency`]).
    #[setters(strip_option)]
    pub download_concurrency: Option<u32>,
    /// Where the download runs (see [`RestoreOptions::transfer`]).
    pub transfer: crate::backup::transfer::Transfer,
    /// With [`Transfer::Library`](crate::Transfer::Library), the size of its ranged
    /// GETs in MiB, or `None` (the default) to choose it per object (see
    /// [`RestoreOptions::library_range_mib`]: ranges of up to
    /// [`READ_AHEAD_MAX_MIB`](crate::READ_AHEAD_MAX_MIB) are read ahead).
    #[setters(strip_option)]
    pub library_range_mib: Option<u32>,
    /// With [`Transfer::Library`](crate::Transfer::Library), how many ranged GETs are
    /// in flight (see [`RestoreOptions::library_ranges_in_flight`]).
    pub library_ranges_in_flight: u32,
    /// The free space staging the database for its check leaves, in MiB, or `None`
    /// (the default; see [`RestoreOptions::space_reserve_mib`]).
    #[setters(strip_option)]
    pub space_reserve_mib: Option<u32>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        let restore = RestoreOptions::default();
        VerifyOptions {
            timeout: None,
            max_bandwidth: None,
            temp_work_dir: false,
            progress: None,
            cancel: CancelToken::default(),
            priority: crate::backup::priority::Priority::default(),
            download_chunk_mib: restore.download_chunk_mib,
            download_concurrency: restore.download_concurrency,
            transfer: restore.transfer,
            library_range_mib: restore.library_range_mib,
            library_ranges_in_flight: restore.library_ranges_in_flight,
            space_reserve_mib: restore.space_reserve_mib,
        }
    }
}

impl VerifyOptions {
    fn restore_options(&self) -> RestoreOptions {
        let mut restore = RestoreOptions::default()
            .timeout(self.timeout)
            .max_bandwidth(self.max_bandwidth)
            .temp_work_dir(self.temp_work_dir)
            .progress(self.progress.clone())
            .priority(self.priority)
            .transfer(self.transfer)
            .library_ranges_in_flight(self.library_ranges_in_flight);
        restore.library_range_mib = self.library_range_mib;
        restore.download_chunk_mib = self.download_chunk_mib;
        restore.download_concurrency = self.download_concurrency;
        restore.space_reserve_mib = self.space_reserve_mib;
        restore
    }
}

/// The backup life cycle of one workload (a [`Container`] and its [`Layout`]) and one
/// bucket (its [`S3Parameters`]), in the shape of `rustic_core`'s repository: make it
/// once, then `create`, `list`, `describe`, `verify`, `restore`, `extract`, `status`,
/// `delete` (or `delete_with_dependents`), `prune_plan` and `prune`.
///
/// ```no_run
/// use synapse_backup::{Backups, CreateOptions, Layout, RetentionPolicy, S3Parameters};
/// # type PebbleLike = synapse_backup::LocalContainer;
/// # async fn action(container: PebbleLike, relation_data: std::collections::HashMap<String, String>, passphrase: &str) -> Result<(), Box<dyn std::error::Error>> {
/// let params = S3Parameters::from_relation_data(&relation_data)?;
/// let backups = Backups::new(container, params, Layout::default())?;
/// let report = backups.create(passphrase, &CreateOptions::default()).await?;
/// let plan = backups.prune_plan(&RetentionPolicy::default().keep_last(Some(7))).await?;
/// for planned in plan.to_delete() {
///     println!("{} goes: {:?}", planned.backup.id, planned.reasons);
/// }
/// backups.prune(&plan).await?;
/// # let _ = report; Ok(()) }
/// ```
///
/// Local preconditions (the passphrase, the layout, the workload's `homeserver.yaml`
/// and its database kind) are checked before the first request to the bucket.
///
/// Every bucket request of every operation goes through the handle's [`ObjectStore`]
/// (an [`S3Client`] made from the parameters, or the store given to
/// [`Backups::with_store`], e.g. a `MemoryStore` (feature `testing`)): the catalog
/// operations (`list`, `describe`, `status`, `read_manifest`, `delete`,
/// `delete_with_dependents`, `prune_plan`, `prune`), and
/// the lock, HEADs, manifest reads and writes and clean-up of `create`, `verify`,
/// `restore` and `extract`. Only the data itself moves with the workload's aws CLI (to
/// the bucket of the parameters).
pub struct Backups<C> {
    container: C,
    params: S3Parameters,
    layout: Layout,
    store: Arc<dyn ObjectStore>,
    lock: LockOptions,
}

impl<C> fmt::Debug for Backups<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backups")
            .field("params", &self.params)
            .field("layout", &self.layout)
            .field("store", &self.store)
            .field("lock", &self.lock)
            .finish_non_exhaustive()
    }
}

impl<C: Container> Backups<C> {
    /// A handle on `container` laid out as `layout`, backing up to the bucket of
    /// `params` (it makes the [`S3Client`]; nothing is sent yet).
    ///
    /// # Errors
    /// [`BackupError::Config`] when the layout or the parameters are invalid,
    /// [`BackupError::S3`] when the client cannot be made.
    pub fn new(container: C, params: S3Parameters, layout: Layout) -> Result<Self, BackupError> {
        let client = S3Client::new(&params)?;
        Self::with_store(container, params, layout, client)
    }

    /// As [`Backups::new`], with every bucket request of every operation on `store`
    /// (e.g. a `MemoryStore` (feature `testing`) in a unit test: no request then leaves
    /// the process; only the workload's pipeline moves data, with its aws CLI).
    ///
    /// # Errors
    /// [`BackupError::Config`] when the layout is invalid.
    pub fn with_store(
        container: C,
        params: S3Parameters,
        layout: Layout,
        store: impl ObjectStore + 'static,
    ) -> Result<Self, BackupError> {
        layout.validate()?;
        Ok(Backups {
            container,
            params,
            layout,
            store: Arc::new(store),
            lock: LockOptions::default(),
        })
    }

    /// How `delete`, `prune` (and, unless their options say otherwise, nothing else)
    /// take the backup lock; default [`LockOptions::default`].
    #[must_use]
    pub fn lock_options(mut self, lock: LockOptions) -> Self {
        self.lock = lock;
        self
    }

    /// The workload.
    pub fn container(&self) -> &C {
        &self.container
    }

    /// The bucket's parameters.
    pub fn params(&self) -> &S3Parameters {
        &self.params
    }

    /// The workload's layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The store every bucket request goes through.
    pub fn store(&self) -> &dyn ObjectStore {
        &*self.store
    }

    /// An operation's context on the handle's store (the passphrase and the layout
    /// checked; nothing sent).
    fn run<'a>(&'a self, passphrase: &'a str) -> Result<Run<'a, C>, BackupError> {
        Run::with_store(
            &self.container,
            &self.params,
            &self.layout,
            passphrase,
            Arc::clone(&self.store),
        )
    }

    /// Backs up the workload (see [`create_backup_with`](crate::create_backup_with)).
    ///
    /// # Errors
    /// As [`create_backup_with`](crate::create_backup_with).
    pub async fn create(
        &self,
        passphrase: &str,
        options: &CreateOptions,
    ) -> Result<BackupReport, BackupError> {
        let run = self.run(passphrase)?.with_transfer(options.transfer);
        create::create_in(&run, options).await
    }

    /// Downloads, decrypts and checks a backup in the workload, touching no live file
    /// (see [`verify_backup_with`](crate::verify_backup_with)).
    ///
    /// # Errors
    /// As [`verify_backup_with`](crate::verify_backup_with), and
    /// [`BackupError::Cancelled`].
    pub async fn verify(
        &self,
        passphrase: &str,
        id: &BackupId,
        options: &VerifyOptions,
    ) -> Result<VerifyReport, BackupError> {
        if options.cancel.is_cancelled() {
            return Err(BackupError::Cancelled);
        }
        let restore_options = options.restore_options();
        let run = self.run(passphrase)?.with_transfer(options.transfer);
        let verify = restore::verify_in(&run, id, &restore_options);
        tokio::select! {
            result = verify => result,
            () = options.cancel.cancelled() => Err(BackupError::Cancelled),
        }
    }

    /// Restores a backup over the live data, with rollback (see
    /// [`restore_backup_with`](crate::restore_backup_with)).
    ///
    /// # Errors
    /// As [`restore_backup_with`](crate::restore_backup_with); a missing or unreadable
    /// `homeserver.yaml` is reported before anything is asked of the bucket.
    pub async fn restore(
        &self,
        passphrase: &str,
        id: &BackupId,
        options: &RestoreOptions,
    ) -> Result<RestoreReport, BackupError> {
        passphrase::local_preconditions(&self.container, &self.layout, passphrase).await?;
        let run = self.run(passphrase)?.with_transfer(options.transfer);
        restore::restore_with_run(&run, id, options).await
    }

    /// Extracts a backup (or part of it) into a directory (see
    /// [`extract_backup_with`](crate::extract_backup_with)).
    ///
    /// # Errors
    /// As [`extract_backup_with`](crate::extract_backup_with).
    pub async fn extract(
        &self,
        passphrase: &str,
        id: &BackupId,
        target: &ExtractTarget,
        options: &RestoreOptions,
    ) -> Result<ExtractReport, BackupError> {
        let run = self.run(passphrase)?.with_transfer(options.transfer);
        extract::extract_with_run(&run, id, target, options).await
    }

    /// Every backup, newest first by the server's time (see
    /// [`list_backups`](crate::list_backups)).
    ///
    /// # Errors
    /// [`BackupError::S3`] when listing fails.
    pub async fn list(&self) -> Result<Vec<BackupInfo>, BackupError> {
        catalog::list_backups(&*self.store).await
    }

    /// The status of one backup, or `None` when nothing of it exists.
    ///
    /// # Errors
    /// [`BackupError::S3`] when a request fails.
    pub async fn status(&self, id: &BackupId) -> Result<Option<BackupStatus>, BackupError> {
        catalog::backup_status(&*self.store, id).await
    }

    /// A backup's manifest (see [`read_manifest`](crate::read_manifest)).
    ///
    /// # Errors
    /// As [`read_manifest`](crate::read_manifest).
    pub async fn read_manifest(&self, id: &BackupId) -> Result<Manifest, BackupError> {
        catalog::read_manifest(&*self.store, id).await
    }

    /// Deletes a backup, holding the lock (see [`delete_backup`](crate::delete_backup)).
    ///
    /// # Errors
    /// As [`delete_backup`](crate::delete_backup).
    pub async fn delete(&self, id: &BackupId) -> Result<(), BackupError> {
        catalog::delete_backup_with(&*self.store, id, &self.lock).await
    }

    /// Deletes a backup and every backup whose chain needs it, newest first, holding
    /// the lock once for all (see
    /// [`delete_backup_with_dependents`](crate::delete_backup_with_dependents)). Returns
    /// the deleted ids in the order they were deleted, `id` last.
    ///
    /// # Errors
    /// As [`delete_backup_with_dependents`](crate::delete_backup_with_dependents).
    pub async fn delete_with_dependents(
        &self,
        id: &BackupId,
    ) -> Result<Vec<BackupId>, BackupError> {
        catalog::delete_backup_with_dependents(&*self.store, id, &self.lock, &mut |_| {}).await
    }

    /// A backup's kind, chain and sizes from one listing (see
    /// [`describe_backup`](crate::describe_backup)).
    ///
    /// # Errors
    /// As [`describe_backup`](crate::describe_backup).
    pub async fn describe(&self, id: &BackupId) -> Result<BackupChain, BackupError> {
        catalog::describe_backup(&*self.store, id).await
    }

    /// Plans a prune without deleting anything or taking the lock: every backup with
    /// keep or delete and why, ordered and aged by the server's time (see
    /// [`PrunePlan`]). `policy.dry_run` is ignored: a plan is a dry run.
    ///
    /// # Errors
    /// [`BackupError::S3`] when a request fails, [`BackupError::LockUnsupported`] from
    /// the lock probe.
    pub async fn prune_plan(&self, policy: &RetentionPolicy) -> Result<PrunePlan, BackupError> {
        catalog::plan_pruning(&*self.store, policy, &self.lock, None).await
    }

    /// As [`Backups::prune_plan`], and the newest backup that `passphrase` opens is kept
    /// whatever the policy ([`PruneReason::OpensWithPassphrase`](crate::PruneReason::OpensWithPassphrase)):
    /// a passphrase only ever protects more, never less. Each of the ten newest
    /// restorable backups is tried in turn (a ranged read of its head, decrypted in the
    /// workload's temp dir); a backup that cannot be checked is simply not protected
    /// by it.
    ///
    /// # Errors
    /// As [`Backups::prune_plan`], and [`BackupError::InvalidPassphrase`],
    /// [`BackupError::Container`] when the check cannot run in the workload.
    pub async fn prune_plan_opening(
        &self,
        policy: &RetentionPolicy,
        passphrase: &str,
    ) -> Result<PrunePlan, BackupError> {
        let run = self.run(passphrase)?;
        let backups = catalog::list_backups(&*self.store).await?;
        let opens = passphrase::newest_opening(&run, &backups).await?;
        catalog::plan_pruning(&*self.store, policy, &self.lock, opens).await
    }

    /// Carries out `plan`, holding the lock: the bucket is planned again under the lock
    /// and only what both plans delete goes; what `plan` protects stays protected.
    ///
    /// # Errors
    /// [`BackupError::LockHeld`] / [`BackupError::LockUnsupported`] from the lock,
    /// [`BackupError::S3`] when listing or deleting fails.
    pub async fn prune(&self, plan: &PrunePlan) -> Result<PruneReport, BackupError> {
        let policy = RetentionPolicy {
            dry_run: false,
            ..plan.policy.clone()
        };
        catalog::prune_locked(&*self.store, &policy, &self.lock, Some(plan)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::transfer::Ranges;

    /// Every download setting of `VerifyOptions` reaches the read it runs.
    #[test]
    fn verify_options_carry_every_download_setting() {
        let options = VerifyOptions::default()
            .download_chunk_mib(64)
            .download_concurrency(3)
            .transfer(crate::Transfer::Library)
            .library_range_mib(16)
            .library_ranges_in_flight(5)
            .temp_work_dir(true)
            .timeout(Some(Duration::from_secs(9)));
        let restore = options.restore_options();
        assert_eq!(
            (restore.download_chunk_mib, restore.download_concurrency),
            (Some(64), Some(3))
        );
        assert_eq!(restore.transfer, crate::Transfer::Library);
        assert_eq!(
            (restore.library_range_mib, restore.library_ranges_in_flight),
            (Some(16), 5)
        );
        assert!(restore.temp_work_dir);
        assert_eq!(restore.timeout, Some(Duration::from_secs(9)));
        let fixed = |range, in_flight| Ranges::Fixed { range, in_flight };
        assert_eq!(restore.library_ranges(), fixed(16 << 20, 5));
        let clamped = RestoreOptions::default()
            .library_range_mib(0)
            .library_ranges_in_flight(1000);
        assert_eq!(clamped.library_ranges(), fixed(1 << 20, 64));
        // By default the range is chosen per object, 12 in flight; so does a
        // verify's default.
        assert_eq!(
            RestoreOptions::default().library_ranges(),
            Ranges::Auto { in_flight: 12 }
        );
        assert_eq!(
            VerifyOptions::default().restore_options().library_ranges(),
            Ranges::Auto { in_flight: 12 }
        );
    }
}

//! The run context create, verify and restore share: the checks every operation starts
//! with, the S3 client, the backup lock, and the work dir's life cycle.

use std::sync::Arc;

use super::aws_ranges::{self, Probed};
use super::layout::Layout;
use super::lock::{BackupLock, LockConfirmer, LockOptions, LockOwner};
use super::plan::{self, BackupOptions, CancelToken, WorkDir};
use super::restore::RestoreOptions;
use super::transfer::Transfer;
use super::work::{self, WorkPlace};
use crate::container::Container;
use crate::error::{BackupError, ContainerError};
use crate::s3::{ObjectStore, S3Client, S3Parameters};

/// One operation's context, built once by [`Run::new`]: the passphrase and the layout
/// are checked and the store is made before anything runs in the workload.
pub(crate) struct Run<'a, C: Container + ?Sized> {
    pub(crate) container: &'a C,
    pub(crate) params: &'a S3Parameters,
    pub(crate) layout: &'a Layout,
    pub(crate) passphrase: &'a str,
    /// Every bucket request of the run (the lock, HEADs, the manifest, the clean-up)
    /// goes through it: an [`S3Client`] made from `params`, or the handle's store (a
    /// `MemoryStore` in a unit test). The data itself moves with the workload's aws CLI.
    pub(crate) client: Arc<dyn ObjectStore>,
    /// Confirms the lock [`Run::locked`] holds (nothing before, or without a lock).
    lock: std::sync::Mutex<LockConfirmer>,
    /// Where backups are downloaded ([`Run::with_transfer`]): with
    /// [`Transfer::Library`] the work dirs get no aws config, CA bundle or SSE-C key and
    /// the reads stream the data in.
    pub(crate) transfer: Transfer,
    /// How the server serves a range, once probed ([`Run::probed`]): one probe serves
    /// every download of the run.
    probed: tokio::sync::OnceCell<Probed>,
}

impl<'a, C: Container + ?Sized> Run<'a, C> {
    /// Checks the passphrase and the layout and makes the S3 client from `params`.
    ///
    /// # Errors
    /// [`BackupError::InvalidPassphrase`], [`BackupError::Config`].
    pub(crate) fn new(
        container: &'a C,
        params: &'a S3Parameters,
        layout: &'a Layout,
        passphrase: &'a str,
    ) -> Result<Self, BackupError> {
        plan::check_passphrase(passphrase)?;
        layout.validate()?;
        let client: Arc<dyn ObjectStore> = Arc::new(S3Client::new(params)?);
        Self::with_store(container, params, layout, passphrase, client)
    }

    /// As [`Run::new`], with every bucket request on `store` (the handle's).
    ///
    /// # Errors
    /// [`BackupError::InvalidPassphrase`], [`BackupError::Config`].
    pub(crate) fn with_store(
        container: &'a C,
        params: &'a S3Parameters,
        layout: &'a Layout,
        passphrase: &'a str,
        store: Arc<dyn ObjectStore>,
    ) -> Result<Self, BackupError> {
        plan::check_passphrase(passphrase)?;
        layout.validate()?;
        Ok(Run {
            container,
            params,
            layout,
            passphrase,
            client: store,
            lock: std::sync::Mutex::default(),
            transfer: Transfer::Workload,
            probed: tokio::sync::OnceCell::new(),
        })
    }

    /// How the server serves a range of an object: probed on `key` (`size` bytes) the
    /// first time a download of the run asks ([`aws_ranges::probe`]), the same answer
    /// after that. An object no larger than [`aws_ranges::PROBED_ABOVE`] is not probed
    /// (one streamed GET), nor counted as the run's answer.
    pub(crate) async fn probed(&self, key: &str, size: u64) -> Probed {
        if size <= aws_ranges::PROBED_ABOVE {
            return Probed::Streamed;
        }
        *self
            .probed
            .get_or_init(|| aws_ranges::probe(&*self.client, key, size))
            .await
    }

    /// The aws CLI settings of a download of `key` (`size` bytes) made as `transfer`
    /// says: those `options` set, or, where they leave the ranges to a probe
    /// ([`RestoreOptions::probes`]), those the run's probe chose ([`Run::probed`]).
    pub(crate) async fn download_settings(
        &self,
        options: &RestoreOptions,
        key: &str,
        size: u64,
        transfer: Transfer,
    ) -> BackupOptions {
        options
            .download_settings_for(transfer, self.probed(key, size))
            .await
    }

    /// This run, downloading as `transfer` says.
    pub(crate) fn with_transfer(mut self, transfer: Transfer) -> Self {
        self.transfer = transfer;
        self
    }

    /// Runs `operation` holding the backup lock, taken as `options` say (a wait for it
    /// ends when `cancel` is cancelled) and released whatever the outcome.
    ///
    /// # Errors
    /// [`BackupError::LockHeld`] / [`BackupError::LockUnsupported`] from the lock,
    /// [`BackupError::Cancelled`] when cancelled while waiting, else the operation's.
    pub(crate) async fn locked<T>(
        &self,
        name: &str,
        options: &LockOptions,
        cancel: &CancelToken,
        operation: impl Future<Output = Result<T, BackupError>>,
    ) -> Result<T, BackupError> {
        if cancel.is_cancelled() {
            return Err(BackupError::Cancelled);
        }
        let owner = LockOwner::current(name);
        let lock = tokio::select! {
            lock = BackupLock::acquire(&*self.client, &owner, options) => lock?,
            () = cancel.cancelled() => return Err(BackupError::Cancelled),
        };
        *self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = lock.confirmer();
        let result = operation.await;
        lock.finish().await;
        result
    }

    /// Confirms the lock [`Run::locked`] holds right before the irreversible `step`
    /// (see [`LockGuard::confirm`](super::lock::LockGuard::confirm)).
    ///
    /// # Errors
    /// [`BackupError::LockLost`] when the lock is no longer this run's.
    pub(crate) async fn confirm_lock(&self, step: &str) -> Result<(), BackupError> {
        let confirmer = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        confirmer.confirm(step).await
    }

    /// Makes this run's private work dir (`.synapse-backup-<purpose>.XXXXXXXXXX`, as the
    /// workload user) and puts the aws CLI config, CA bundle and SSE-C key in it (not
    /// with [`Transfer::Library`]: nothing of the bucket's goes in). When
    /// filling it fails, it is removed before the error is returned.
    ///
    /// # Errors
    /// [`BackupError::Container`] when it cannot be made or written.
    pub(crate) async fn work_dir(
        &self,
        purpose: &str,
        options: &BackupOptions,
    ) -> Result<WorkGuard<'_, 'a, C>, BackupError> {
        let base = WorkDir::base(self.layout);
        self.work_dir_in(WorkPlace::Under(&base), purpose, options)
            .await
    }

    /// As [`Run::work_dir`], made in `place` (the temp dir, an extraction's target).
    ///
    /// # Errors
    /// As [`Run::work_dir`].
    pub(crate) async fn work_dir_in(
        &self,
        place: WorkPlace<'_>,
        purpose: &str,
        options: &BackupOptions,
    ) -> Result<WorkGuard<'_, 'a, C>, BackupError> {
        self.work_dir_for(place, purpose, options, self.transfer)
            .await
    }

    /// As [`Run::work_dir_in`], for a download made as `transfer` says (a small pack
    /// of a chain the library downloads in a run with [`Transfer::Workload`]).
    ///
    /// # Errors
    /// As [`Run::work_dir`].
    pub(crate) async fn work_dir_for(
        &self,
        place: WorkPlace<'_>,
        purpose: &str,
        options: &BackupOptions,
        transfer: Transfer,
    ) -> Result<WorkGuard<'_, 'a, C>, BackupError> {
        let dir = work::make_dir_with(self.container, self.layout, place, purpose).await?;
        let guard = WorkGuard {
            run: self,
            dir,
            ending: std::sync::Mutex::new(Ending::Remove),
            finished: false,
        };
        if transfer == Transfer::Library {
            // Nothing of the bucket's enters the workload: the library downloads.
            return Ok(guard);
        }
        match work::fill_work_dir(
            self.container,
            self.params,
            self.layout,
            &guard.dir,
            options,
        )
        .await
        {
            Ok(()) => Ok(guard),
            Err(e) => {
                guard.finish().await;
                Err(e)
            }
        }
    }
}

/// A run's work dir. [`WorkGuard::finish`] removes it (an archive unpacked in it may
/// hold read-only dirs: `workdir.sh remove` makes them writable when `rm` alone
/// cannot remove them) unless [`WorkGuard::keep`] was called; each operation calls it
/// on every path. A guard dropped unfinished (a dropped future) leaves the dir to the
/// owner-record sweep of the next run.
pub(crate) struct WorkGuard<'r, 'a, C: Container + ?Sized> {
    run: &'r Run<'a, C>,
    dir: WorkDir,
    ending: std::sync::Mutex<Ending>,
    finished: bool,
}

/// What [`WorkGuard::finish`] does with its dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Removes it (the usual end).
    Remove,
    /// Sweeps it ([`WorkGuard::keep`]): set-aside files and logs stay.
    Sweep,
    /// Leaves it as [`WorkGuard::sweep_now`] did: `kept`, set-aside files and logs stayed.
    Swept { kept: bool },
}

impl<C: Container + ?Sized> WorkGuard<'_, '_, C> {
    /// The work dir.
    pub(crate) fn dir(&self) -> &WorkDir {
        &self.dir
    }

    /// Keeps what a person must see when the run finishes (the live files a failed
    /// rollback set aside, and the swap's logs): the dir is swept
    /// ([`work::sweep_work_dir`]), not removed, so its keys and staging still go.
    pub(crate) fn keep(&self) {
        let mut ending = self.ending();
        // Swept already, it stays as the sweep left it (what it kept, or nothing).
        if *ending == Ending::Remove {
            *ending = Ending::Sweep;
        }
    }

    fn ending(&self) -> std::sync::MutexGuard<'_, Ending> {
        // A panic while it was held changed nothing half-way: the value is whole.
        self.ending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sweeps the dir now ([`work::sweep_work_dir`]): `true` when it keeps set-aside
    /// files and logs, which `finish` then leaves; `false` when it is gone.
    ///
    /// # Errors
    /// The sweep's; the dir is then as it was, and `finish` decides.
    pub(crate) async fn sweep_now(&self) -> Result<bool, ContainerError> {
        let kept = work::sweep_work_dir(self.run.container, self.run.layout, &self.dir).await?;
        *self.ending() = Ending::Swept { kept };
        Ok(kept)
    }

    /// Removes the work dir as the workload user (unless kept), logging a failure.
    pub(crate) async fn finish(mut self) {
        self.finished = true;
        let run = self.run;
        let ending = *self.ending();
        let kept = match ending {
            Ending::Swept { kept } => Ok(kept),
            Ending::Sweep => work::sweep_work_dir(run.container, run.layout, &self.dir).await,
            Ending::Remove => {
                work::remove_work_dir(run.container, run.layout, &self.dir).await;
                return;
            }
        };
        match kept {
            Ok(true) => {
                tracing::error!(dir = %self.dir.dir, "the rollback failed: the set-aside live files are kept there");
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(dir = %self.dir.dir, error = %e, "the rollback failed and its work dir could not be swept: the set-aside live files, keys and staging are there");
            }
        }
    }
}

impl<C: Container + ?Sized> Drop for WorkGuard<'_, '_, C> {
    fn drop(&mut self) {
        work::release(&self.dir.dir);
        if !self.finished {
            tracing::debug!(dir = %self.dir.dir, "work dir left to the next run's sweep (the run was dropped)");
        }
    }
}

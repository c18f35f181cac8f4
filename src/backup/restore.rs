//! Verifying and restoring backups through a [`Container`].

use std::time::{Duration, Instant};

use crate::backup::aws_ranges::{
    AWS_RANGED_CHUNK_MIB, AWS_RANGED_CONCURRENCY, AWS_STREAMED_CHUNK_MIB, Probed,
};
use crate::backup::catalog::BackupStatus;
use crate::backup::chain_fetch::{self, Backup};
use crate::backup::fetch::{
    Fetch, Fetched, Staged, check_staged, check_staged_db, extract_call, locate_compact,
    staging_need, verify_rules,
};
use crate::backup::layout::{Layout, join};
use crate::backup::phases::{Phase, PhaseClock, RestorePhases};
use crate::backup::plan::{self, BackupId, BackupOptions, CancelToken, ScriptCall, WorkDir};
use crate::backup::reserve::Reserve;
use crate::backup::restore_plan::{self, CheckedMembers, MemberRef, MemberSource, RestoreRules};
use crate::backup::run::{Run, WorkGuard};
use crate::backup::scripts::{Exit, WorkFile};
use crate::backup::transfer::Transfer;
use crate::backup::work::{self, Outputs, WorkPlace};
use crate::container::Container;
use crate::error::{BackupError, ContainerError, Stage};
use crate::s3::S3Parameters;

/// What [`verify_backup`] found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct VerifyReport {
    /// The backup id.
    pub id: BackupId,
    /// Complete (checked against its manifest) or legacy (gpg's check only).
    pub status: BackupStatus,
    /// Size of the encrypted object.
    pub ciphertext_bytes: u64,
    /// SHA-256 of the encrypted object.
    pub ciphertext_sha256: String,
    /// Number of archive members (the inner manifest not counted).
    pub members: usize,
    /// Whether the encrypted stream carries the inner manifest (id and nonce
    /// authenticated by the passphrase).
    pub authenticated_manifest: bool,
    /// How many packs were read: 1 for a full backup; for an incremental one, its
    /// own and every older pack its index assigns files to.
    pub packs: usize,
    /// Things the operator should know (e.g. modes a restore would strip).
    pub warnings: Vec<String>,
    /// Wall time.
    pub duration: Duration,
}

/// What [`restore_backup_with`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct RestoreReport {
    /// The backup id.
    pub id: BackupId,
    /// Complete or legacy.
    pub status: BackupStatus,
    /// The top-level paths replaced (relative to the root).
    pub restored: Vec<String>,
    /// Live paths moved out because the restored database replaces them (every
    /// SQLite sidecar of the database: `-wal`, `-shm`, `-journal`, `-mj…`).
    pub dropped: Vec<String>,
    /// Restored entries whose set-id, sticky or world-writable bits were stripped, as
    /// `path: archived mode -> restored mode` (octal).
    pub stripped_modes: Vec<String>,
    /// Rows removed from the database's `e2e_one_time_keys_json` (one-time keys handed
    /// out after the backup must never be handed out again); `None` when there is no
    /// such table, no database was restored, or they were kept
    /// ([`RestoreOptions::keep_one_time_keys`]).
    pub one_time_keys_removed: Option<u64>,
    /// Size of the encrypted object.
    pub ciphertext_bytes: u64,
    /// How many packs were read (see [`VerifyReport::packs`]).
    pub packs: usize,
    /// Things the operator should know.
    pub warnings: Vec<String>,
    /// Wall time.
    pub duration: Duration,
    /// Where the wall time went: before the download, the download with its
    /// decryption and extraction, the checks, the swap, the cleanup.
    pub phases: RestorePhases,
}

/// Options for verify and restore, changed with a setter per field:
///
/// ```
/// use std::time::Duration;
/// use synapse_backup::{LockOptions, RestoreOptions};
///
/// let options = RestoreOptions::default()
///     .timeout(Some(Duration::from_secs(3600)))
///     .lock(LockOptions::new().wait(Duration::from_secs(60)))
///     .keep_one_time_keys(true);
/// assert!(options.keep_one_time_keys);
/// ```
///
/// The download has its own transfer settings, apart from the upload's
/// ([`BackupOptions::part_size_mib`]): [`download_chunk_mib`](Self::download_chunk_mib)
/// and [`download_concurrency`](Self::download_concurrency).
#[derive(Debug, Clone, PartialEq, Eq, derive_setters::Setters)]
#[non_exhaustive]
#[setters(prefix = "", generate = true)]
pub struct RestoreOptions {
    /// Kill the download pipeline after this long (each pack's, for an incremental
    /// backup, which is read one pack at a time).
    pub timeout: Option<Duration>,
    /// How a restore takes the backup lock (verify does not take it).
    pub lock: crate::backup::lock::LockOptions,
    /// Keep (`true`) the restored database's `e2e_one_time_keys_json` rows; by default
    /// they are removed, as Synapse advises for a restored database.
    pub keep_one_time_keys: bool,
    /// Cap the download (the aws CLI's `max_bandwidth`); no cap when `None`.
    pub max_bandwidth: Option<crate::Bandwidth>,
    /// Make verify's work dir in the workload's temp dir (`$TMPDIR` or `/tmp`, with
    /// `mktemp -d` as the workload user) instead of under the layout's work base.
    /// Verify does so anyway when the work base does not exist (no Synapse tree there);
    /// it keeps only small files in it. A restore stages beside the data and ignores it.
    pub temp_work_dir: bool,
    /// Receives the download's progress (see [`Progress`](crate::Progress)); none when
    /// `None`.
    pub progress: Option<crate::backup::progress::ProgressCallback>,
    /// The CPU and I/O priority of the download pipeline (see
    /// [`BackupOptions::priority`]).
    pub priority: crate::backup::priority::Priority,
    /// The size of the download's ranged GETs in MiB (the aws CLI's
    /// `multipart_chunksize` and `multipart_threshold` of the download's config file;
    /// an object no larger than this is fetched with one streamed GET). `None` (the
    /// default) chooses per object, by a probe from this process (a HEAD and a ranged
    /// GET of 4 KiB, timed): [`AWS_RANGED_CHUNK_MIB`](crate::AWS_RANGED_CHUNK_MIB) (8)
    /// where the server answers the range in about a HEAD's time (AWS S3, MinIO, Ceph,
    /// s3s-fs), else [`AWS_STREAMED_CHUNK_MIB`](crate::AWS_STREAMED_CHUNK_MIB) (1024: a
    /// backup of up to 1 GiB is one streamed GET), as where the server reads the whole
    /// object for every range (moto), for an object of 16 MiB or less, and with a
    /// [`max_bandwidth`](Self::max_bandwidth) cap. Each range is a request, and servers
    /// that re-read the object for every range or sit across a real network pay for
    /// every one. At least 5; best a multiple of the upload's part size
    /// ([`BackupOptions::part_size_mib`]), so a range never spans more parts than it
    /// needs.
    #[setters(strip_option)]
    pub download_chunk_mib: Option<u32>,
    /// How many ranges are downloaded at once (the aws CLI's `max_concurrent_requests`
    /// of the download). `None` (the default):
    /// [`AWS_RANGED_CONCURRENCY`](crate::AWS_RANGED_CONCURRENCY) (2) with the ranges the
    /// probe chose, else 1. Ranges that arrive out of order wait in the CLI's memory (up
    /// to about `download_concurrency × download_chunk_mib`, capped by the CLI near
    /// 256 MiB), so raise it together with a smaller `download_chunk_mib`, for a server
    /// far away, not with large ranges. On a server that serves a range without reading
    /// the whole object, 2 × 8 MiB restored 1 GB from s3s-fs about 1.5 times faster than
    /// one GET for some 15 MB more in the aws CLI (README, "Download settings"; CLI
    /// `--aws-ranges 2x8`). 0 counts as 1.
    #[setters(strip_option)]
    pub download_concurrency: Option<u32>,
    /// Where the download runs: the workload's aws CLI ([`Transfer::Workload`], the
    /// default) or this library, streaming the ciphertext into the workload's pipeline
    /// ([`Transfer::Library`]: no S3 credential or SSE-C key enters the workload; see
    /// the trade-off there). With `Library`, [`download_chunk_mib`](Self::download_chunk_mib),
    /// [`download_concurrency`](Self::download_concurrency) and
    /// [`max_bandwidth`](Self::max_bandwidth) (settings of the aws CLI) do not apply:
    /// [`library_range_mib`](Self::library_range_mib) and
    /// [`library_ranges_in_flight`](Self::library_ranges_in_flight) do.
    pub transfer: Transfer,
    /// With [`Transfer::Library`] (and for the small packs the library downloads), the
    /// size of its ranged GETs in MiB; `None` (the default) chooses per object, by the
    /// timing of its first 16 MiB (read as the start of one streamed GET): [`READ_AHEAD_RANGE_MIB`](crate::READ_AHEAD_RANGE_MIB)
    /// (4) read ahead where the server serves a range for no more than its bytes (AWS
    /// S3, MinIO, Ceph, s3s-fs), [`LIBRARY_RANGE_MIB`](crate::LIBRARY_RANGE_MIB) (1024,
    /// streamed: a backup of up to 1 GiB is one GET) where it reads the whole object for
    /// every range (moto). A range of at most
    /// [`READ_AHEAD_MAX_MIB`](crate::READ_AHEAD_MAX_MIB) is read ahead: the ranges in
    /// flight download side by side into memory while the one before them is written,
    /// so this process holds up to `(library_ranges_in_flight + 1) × range` MiB (the
    /// range being summed as the next arrives): 52 MiB by default. On s3s-fs 4 MiB
    /// ranges 12 in flight restore a chain 11 % faster than 16 MiB ranges 3 in flight,
    /// and those 1.3 times faster than one stream; on moto ranged reads took 29 s
    /// instead of 4 for the same restore (README, Benchmark). `Some(0)` counts as 1.
    #[setters(strip_option)]
    pub library_range_mib: Option<u32>,
    /// With [`Transfer::Library`], how many ranged GETs are in flight at once (the one
    /// being written and those requested ahead). Default
    /// [`LIBRARY_RANGES_IN_FLIGHT`](crate::LIBRARY_RANGES_IN_FLIGHT) (12); 0 counts as 1,
    /// and more than [`LIBRARY_RANGES_IN_FLIGHT_MAX`](crate::LIBRARY_RANGES_IN_FLIGHT_MAX)
    /// (64) as that many. Where the default [`library_range_mib`](Self::library_range_mib)
    /// finds ranges costly, 2 of its 1 GiB ranges are in flight, whatever this says.
    pub library_ranges_in_flight: u32,
    /// With [`Transfer::Workload`], a pack of an incremental backup's chain (an older
    /// pack, its own pack, its database pack) of at most this many MiB is downloaded by
    /// this library and streamed into the workload's pipeline, as with
    /// [`Transfer::Library`]: the workload's aws CLI takes about half a CPU-second and
    /// half a second to start, more than carrying a small pack costs, and a chain of 7
    /// starts it 8 times. Its work dir then gets no aws config. 0 keeps every download
    /// in the workload; so does a [`max_bandwidth`](Self::max_bandwidth) cap (the aws
    /// CLI's). A full backup is always downloaded as the transfer says. Default
    /// [`DEFAULT_SMALL_PACK_MIB`].
    pub small_pack_mib: u32,
    /// The free space staging leaves on the file system it goes on (the layout's work
    /// base, beside the live data), in MiB: `None` (the default) keeps the smaller of
    /// [`DEFAULT_SPACE_RESERVE_MIB`](crate::DEFAULT_SPACE_RESERVE_MIB) (256) and
    /// [`DEFAULT_SPACE_RESERVE_PERCENT`](crate::DEFAULT_SPACE_RESERVE_PERCENT) (5 %) of
    /// it, `Some(0)` none. The homeserver keeps running and writing there while a
    /// backup is fetched: the room staging needs is checked with the reserve added
    /// before it starts, and tar stops once less than the reserve is free (a legacy
    /// backup, compressed by gpg, or a manifest that understates its size, staging more
    /// than was checked), failing with [`BackupError::SpaceReserve`] and removing what
    /// it staged, so the homeserver never meets a full volume on the restore's account.
    /// Applies to restore, extraction and verify (its staged database, and its check
    /// that the restore's staging would fit with the reserve free).
    #[setters(strip_option)]
    pub space_reserve_mib: Option<u32>,
}

/// The default [`RestoreOptions::small_pack_mib`]: 128 MiB, an increment's new media and
/// most databases (measured in the README's incremental section).
pub const DEFAULT_SMALL_PACK_MIB: u32 = 128;

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            timeout: None,
            lock: crate::backup::lock::LockOptions::default(),
            keep_one_time_keys: false,
            max_bandwidth: None,
            temp_work_dir: false,
            progress: None,
            priority: crate::backup::priority::Priority::default(),
            download_chunk_mib: None,
            download_concurrency: None,
            transfer: Transfer::Workload,
            library_range_mib: None,
            library_ranges_in_flight: crate::backup::transfer::LIBRARY_RANGES_IN_FLIGHT as u32,
            small_pack_mib: DEFAULT_SMALL_PACK_MIB,
            space_reserve_mib: None,
        }
    }
}

impl RestoreOptions {
    /// The aws CLI settings of a download not probed (the per-run config file): the
    /// download's own range size ([`download_chunk_mib`](Self::download_chunk_mib), or
    /// one streamed GET) and concurrency, never the upload's part size.
    pub(super) fn download_settings(&self) -> BackupOptions {
        self.aws_settings(self.download_chunk_mib.unwrap_or(AWS_STREAMED_CHUNK_MIB), 1)
    }

    /// The aws CLI settings of a download in `mib` MiB ranges, `in_flight` at once
    /// unless [`download_concurrency`](Self::download_concurrency) says otherwise.
    fn aws_settings(&self, mib: u32, in_flight: u32) -> BackupOptions {
        BackupOptions::default()
            .max_bandwidth(self.max_bandwidth)
            .part_size_mib(mib.max(5))
            .upload_concurrency(self.download_concurrency.unwrap_or(in_flight).max(1))
    }

    /// Whether a download made as `transfer` says has its ranges chosen by a probe: in
    /// the workload, with no range size set and no bandwidth cap.
    pub(crate) fn probes(&self, transfer: Transfer) -> bool {
        self.download_chunk_mib.is_none()
            && self.max_bandwidth.is_none()
            && transfer == Transfer::Workload
    }

    /// The aws CLI settings of a download whose ranges the probe chose: `probed`.
    pub(crate) fn probed_settings(&self, probed: Probed) -> BackupOptions {
        match probed {
            Probed::Seeks => self.aws_settings(AWS_RANGED_CHUNK_MIB, AWS_RANGED_CONCURRENCY),
            Probed::Streamed => self.download_settings(),
        }
    }

    /// The aws CLI settings of a download made as `transfer` says:
    /// [`download_settings`](Self::download_settings), but for a download that
    /// [`probes`](Self::probes), whose ranges `probed` chooses (awaited only then: a
    /// run's probe, `Run::probed`, or a probe of the object).
    pub(crate) async fn download_settings_for(
        &self,
        transfer: Transfer,
        probed: impl Future<Output = Probed>,
    ) -> BackupOptions {
        if !self.probes(transfer) {
            return self.download_settings();
        }
        self.probed_settings(probed.await)
    }

    /// The library's download settings: the range size in bytes (or chosen per object)
    /// and how many ranges are in flight (1 to
    /// [`LIBRARY_RANGES_IN_FLIGHT_MAX`](crate::LIBRARY_RANGES_IN_FLIGHT_MAX)).
    pub(crate) fn library_ranges(&self) -> crate::backup::transfer::Ranges {
        use crate::backup::transfer::Ranges;
        let in_flight = usize::try_from(self.library_ranges_in_flight)
            .unwrap_or(usize::MAX)
            .clamp(1, crate::backup::transfer::LIBRARY_RANGES_IN_FLIGHT_MAX);
        match self.library_range_mib {
            None => Ranges::Auto { in_flight },
            Some(mib) => Ranges::Fixed {
                range: u64::from(mib.max(1)) << 20,
                in_flight,
            },
        }
    }

    /// How a run whose transfer is `transfer` downloads a pack of a chain of `size`
    /// bytes ([`small_pack_mib`](Self::small_pack_mib)).
    pub(crate) fn pack_transfer(&self, transfer: Transfer, size: u64) -> Transfer {
        let small = self.small_pack_mib > 0 && size <= u64::from(self.small_pack_mib) << 20;
        if transfer == Transfer::Workload && small && self.max_bandwidth.is_none() {
            Transfer::Library
        } else {
            transfer
        }
    }
}

/// Downloads, decrypts and lists a backup inside the workload (no live file is
/// touched), and checks it against its manifest: size, SHA-256 and member list. An
/// incremental backup is checked pack by pack, as [`restore_backup_with`] reads it.
///
/// # Errors
/// [`BackupError::NotFound`], [`BackupError::MissingManifest`] (our data without a
/// manifest), [`BackupError::WrongPassphrase`], [`BackupError::Corrupted`] (a flipped
/// byte, a truncated object, a missing member), [`BackupError::StageFailed`] otherwise.
pub async fn verify_backup<C: Container + ?Sized>(
    container: &C,
    s3_parameters: &S3Parameters,
    passphrase: &str,
    id: &BackupId,
) -> Result<VerifyReport, BackupError> {
    verify_backup_with(
        container,
        s3_parameters,
        passphrase,
        id,
        &Layout::default(),
        &RestoreOptions::default(),
    )
    .await
}

/// [`verify_backup`] with a layout and options.
///
/// The member rules are those of [`restore_backup_with`] (from the workload's
/// `homeserver.yaml`, or without one the layout the backup recorded), so a backup that
/// verifies is one restore accepts. Restore's database check runs too: the database
/// alone is staged in verify's work dir (under the layout's work base, or in the
/// workload's temp dir when there is no live tree or with
/// [`RestoreOptions::temp_work_dir`]) and must pass `PRAGMA integrity_check`. Where the
/// live tree is (its `homeserver.yaml` exists), what the swap would need is checked as
/// restore checks it before stopping anything: write access to every path it moves,
/// and space where a move crosses file systems. Without a live tree, the backup alone
/// is checked.
///
/// # Errors
/// As [`verify_backup`], plus [`BackupError::UnsafeMember`], [`BackupError::Corrupted`]
/// for a database that fails SQLite's check, [`BackupError::StageFailed`]
/// ([`Stage::Swap`]) and [`BackupError::InsufficientSpace`] from the swap's check,
/// [`BackupError::SpaceReserve`] when staging the database, or the restore's staging,
/// would not leave [`RestoreOptions::space_reserve_mib`] free.
pub async fn verify_backup_with<C: Container + ?Sized>(
    container: &C,
    s3_parameters: &S3Parameters,
    passphrase: &str,
    id: &BackupId,
    layout: &Layout,
    options: &RestoreOptions,
) -> Result<VerifyReport, BackupError> {
    let run =
        Run::new(container, s3_parameters, layout, passphrase)?.with_transfer(options.transfer);
    verify_in(&run, id, options).await
}

/// As [`verify_backup_with`], in the context `run` (its store takes every bucket request).
pub(crate) async fn verify_in<C: Container + ?Sized>(
    run: &Run<'_, C>,
    id: &BackupId,
    options: &RestoreOptions,
) -> Result<VerifyReport, BackupError> {
    let (container, layout) = (run.container, run.layout);
    let started = Instant::now();
    let mut fetched = locate_compact(&run.client, id).await?;
    let chain = chain_fetch::plan(run, id, &mut fetched).await?;
    let base = WorkDir::base(layout);
    let place = if options.temp_work_dir || !container.exists(&base).await.unwrap_or(false) {
        WorkPlace::Temp
    } else {
        WorkPlace::Under(&base)
    };
    let backup = Backup {
        id,
        fetched: &fetched,
        chain: chain.as_ref(),
    };
    let settings = backup.download_settings(run, options).await;
    let work = run.work_dir_in(place, "verify", &settings).await?;
    // The database is staged (alone) in the work dir for restore's own check of it.
    let db = verify_rules(container, layout, &fetched, None)
        .await?
        .database();
    let call = verify_call(run, work.dir(), &fetched, db.as_deref());
    let result = backup
        .read(run, work.dir(), call, options, chain_fetch::Read::List)
        .await;
    let result = match result {
        Ok(got) => {
            let reserve = Reserve::of(options.space_reserve_mib);
            verify_checks(run, work.dir(), id, db.as_deref(), &fetched, got, reserve).await
        }
        Err(e) => Err(e),
    };
    work.finish().await;
    let (got, rules, checked) = result?;
    if rules.database() != db
        && let Some(other) = rules.database()
        && got.all_members().any(|m| m.name == other.as_bytes())
    {
        return Err(BackupError::Corrupted {
            id: id.to_string(),
            reason: format!(
                "the backup's own manifest names the database {other}, not the {} verify checked",
                db.as_deref().unwrap_or("none")
            ),
        });
    }
    let members = got.archived().count();
    let mut warnings = fetched.warnings;
    warnings.extend(got.warnings);
    warnings.extend(checked.stripped.iter().map(|(name, mode)| {
        format!(
            "a restore strips set-id, sticky and world-writable bits: {}",
            restore_plan::describe_stripped(name, *mode)
        )
    }));
    tracing::info!(backup_id = %id, members, "backup verified");
    Ok(VerifyReport {
        id: id.clone(),
        status: fetched.status,
        ciphertext_bytes: fetched.size,
        ciphertext_sha256: got.sha256,
        members,
        authenticated_manifest: got.inner.is_some(),
        packs: chain.as_ref().map_or(1, |c| c.older_read() + 1),
        warnings,
        duration: started.elapsed(),
    })
}

/// The list pass of a verify: with the database `db` (member name) staged alone for
/// its check, and room for it checked first when the manifest gives its size.
fn verify_call<C: Container + ?Sized>(
    run: &Run<'_, C>,
    work: &WorkDir,
    fetched: &Fetched,
    db: Option<&str>,
) -> ScriptCall {
    let mut call = restore_plan::list_call(
        run.layout,
        run.params,
        work,
        &fetched.key,
        fetched.compression(),
    );
    let Some(db) = db else { return call };
    call.env.insert("SB_VERIFY_DB".into(), db.to_string());
    if let Some(size) = fetched
        .entries()
        .find(|(path, _, _)| path.as_ref() == db.as_bytes())
        .map(|(_, _, size)| size)
    {
        call.env.insert(
            "SB_NEED_BYTES".into(),
            size.saturating_add(size / 8).to_string(),
        );
        call.env.insert("SB_SPACE_DIR".into(), work.dir.clone());
    }
    call
}

/// Checks, before anything is stopped or moved, what swapping `units` in needs (`swap.sh
/// preflight`): the workload user may write where each is set aside and placed, and
/// there is room where a move crosses file systems (a media store on another volume),
/// with `to_come` (verify's: the restore's staging in bytes still to come in the
/// layout's work base, and the free-space reserve it keeps; none for the restore's own,
/// staged already).
///
/// # Errors
/// [`BackupError::StageFailed`] ([`Stage::Swap`]) naming a path that is not writable,
/// [`BackupError::InsufficientSpace`], [`BackupError::SpaceReserve`] (with `to_come`,
/// the reserve would not stay free).
pub(super) async fn preflight<'m, C: Container + ?Sized>(
    run: &Run<'_, C>,
    work: &WorkDir,
    rules: &RestoreRules,
    members: impl IntoIterator<Item = MemberRef<'m>>,
    units: &[String],
    to_come: Option<(u64, Reserve)>,
) -> Result<(), BackupError> {
    let (container, layout) = (run.container, run.layout);
    work::write_file(
        container,
        layout,
        work,
        WorkFile::SwapSizes,
        restore_plan::unit_sizes(rules, members, units),
    )
    .await?;
    let staging = to_come.map_or(0, |(bytes, _)| bytes);
    let mut call =
        restore_plan::preflight_call(layout, run.params, work, &WorkDir::base(layout), staging);
    // Staging still to come keeps the reserve free, as the restore's own check will.
    if let Some((_, reserve)) = to_come {
        reserve.apply(&mut call.env, false);
    }
    match container
        .exec(&call.argv, work::exec_options(layout, &call, work, None))
        .await
    {
        Ok(_) => Ok(()),
        Err(ContainerError::ExitedNonZero {
            exit_code, stderr, ..
        }) if Exit::from_code(exit_code) == Exit::SwapNoSpace => {
            // `<need> <available> <path>`: the path may hold spaces.
            let outputs = Outputs::new(container, layout, work);
            let needed = outputs.field(WorkFile::Preflight, 0).await?;
            let available = outputs.field(WorkFile::Preflight, 1).await?;
            let text = outputs.text(WorkFile::Preflight).await?;
            let path = text.splitn(3, ' ').nth(2).map_or(stderr, str::to_string);
            Err(BackupError::InsufficientSpace {
                path,
                needed,
                available,
            })
        }
        Err(ContainerError::ExitedNonZero { exit_code, .. })
            if Exit::from_code(exit_code) == Exit::SwapBelowReserve =>
        {
            let outputs = Outputs::new(container, layout, work);
            Err(BackupError::SpaceReserve {
                path: layout.host_path(layout.work_base()),
                needed: outputs.field(WorkFile::Need, 0).await?,
                available: outputs.field(WorkFile::Reserve, 0).await?,
                reserve: outputs.field(WorkFile::Reserve, 1).await?,
            })
        }
        Err(ContainerError::ExitedNonZero {
            exit_code, stderr, ..
        }) => Err(BackupError::StageFailed {
            stage: Stage::Swap,
            exit_code,
            stderr: format!("the swap would fail: {stderr}"),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Verify's checks of what the list pass found, in its work dir: restore's database
/// check, restore's member rules, and, where the live tree is (its `homeserver.yaml`
/// exists), what the swap would need ([`preflight`]).
async fn verify_checks<C: Container + ?Sized>(
    run: &Run<'_, C>,
    work: &WorkDir,
    id: &BackupId,
    db: Option<&str>,
    fetched: &Fetched,
    got: Fetch,
    reserve: Reserve,
) -> Result<(Fetch, RestoreRules, CheckedMembers), BackupError> {
    let (container, layout) = (run.container, run.layout);
    verify_db(run, work, id, db, &got).await?;
    let rules = verify_rules(container, layout, fetched, got.inner.as_ref()).await?;
    let checked = rules
        .check_refs(got.all_members(), MemberSource::Listing)
        .map_err(|(member, reason)| BackupError::UnsafeMember { member, reason })?;
    let live = layout.host_path(&layout.homeserver_config_path());
    if container.exists(&live).await.unwrap_or(false) {
        let units: Vec<String> = checked
            .units
            .iter()
            .filter(|u| !rules.is_db_sidecar(u))
            .cloned()
            .collect();
        preflight(
            run,
            work,
            &rules,
            got.all_members(),
            &units,
            Some((staging_need(fetched), reserve)),
        )
        .await?;
    }
    Ok((got, rules, checked))
}

/// Runs restore's check of the database ([`check_staged_db`]: `PRAGMA
/// integrity_check`) on the copy the list pass staged in the work dir, when the
/// archive holds the database `db` (member name).
async fn verify_db<C: Container + ?Sized>(
    run: &Run<'_, C>,
    work: &WorkDir,
    id: &BackupId,
    db: Option<&str>,
    got: &Fetch,
) -> Result<(), BackupError> {
    let Some(db) = db else { return Ok(()) };
    if !got
        .all_members()
        .any(|m| m.name == db.as_bytes() && m.kind == '-')
    {
        return Ok(());
    }
    let staged = join(&work.path(WorkFile::Stage), db);
    if work::file_size(run.container, run.layout, &staged)
        .await
        .is_none()
    {
        let why = Outputs::new(run.container, run.layout, work)
            .text(WorkFile::DbTarErr)
            .await?;
        return Err(BackupError::StageFailed {
            stage: Stage::Check,
            exit_code: 0,
            stderr: format!("the database {db} could not be staged for its check: {why}"),
        });
    }
    check_staged_db(run, work, id, db, true).await.map(drop)
}

/// Restores a backup into a workload laid out as in the Synapse rock.
///
/// # Errors
/// See [`restore_backup_with`].
pub async fn restore_backup<C: Container + ?Sized>(
    container: &C,
    s3_parameters: &S3Parameters,
    passphrase: &str,
    id: &BackupId,
) -> Result<RestoreReport, BackupError> {
    restore_backup_with(
        container,
        s3_parameters,
        passphrase,
        id,
        &Layout::default(),
        &RestoreOptions::default(),
    )
    .await
}

/// Restores a backup safely, every step in the workload as the workload user: download,
/// decrypt and extract into a staging dir beside the data; only when gpg's status shows
/// the stream was decrypted with the passphrase and passed its integrity check, the
/// inner manifest matches the id asked for and the manifest, every member (in tar's
/// listing and in the staged tree) is a plain file or dir under the restorable paths,
/// and the staged database passes `PRAGMA integrity_check`: stop the service, move the
/// live paths (and SQLite's own `homeserver.db-wal`, `-shm`, `-journal`, `-mj…`) aside, move the staged ones in,
/// start the service, and drop the set-aside copies. Set-id, sticky and
/// world-writable bits are stripped (and reported); the archived mode is kept otherwise
/// and everything is owned by the workload user. The restored database's one-time keys
/// are removed unless [`RestoreOptions::keep_one_time_keys`].
///
/// An incremental backup is read pack by pack: its index and every older pack its
/// index assigns files to are checked against the chain its own (authenticated) inner
/// manifest records, each older pack gives exactly those files, and its own pack the
/// rest, every pack with the checks above (README, "Incremental backups").
///
/// Any failure before the swap leaves live data untouched; a failure during the swap,
/// or a service that does not start again, rolls the swap back. A service that was
/// running before is running after, unless that roll-back could not put every live
/// file back: then it is left stopped, and the error names the work dir that keeps the
/// set-aside files and the logs of what was moved.
///
/// Holds the backup lock ([`RestoreOptions::lock`], see [`crate::BackupLock`]) for the
/// whole run: refreshed while it runs, released at the end and on every failure.
///
/// # Errors
/// As [`verify_backup`], plus [`BackupError::LockHeld`] /
/// [`BackupError::LockUnsupported`] from the lock, [`BackupError::InsufficientSpace`],
/// [`BackupError::SpaceReserve`] (staging would take the free-space reserve:
/// [`RestoreOptions::space_reserve_mib`]), [`BackupError::NoSpaceLeft`],
/// [`BackupError::UnsafeMember`],
/// [`BackupError::StageFailed`] with [`Stage::Swap`] or [`Stage::Service`].
pub async fn restore_backup_with<C: Container + ?Sized>(
    container: &C,
    s3_parameters: &S3Parameters,
    passphrase: &str,
    id: &BackupId,
    layout: &Layout,
    options: &RestoreOptions,
) -> Result<RestoreReport, BackupError> {
    let run =
        Run::new(container, s3_parameters, layout, passphrase)?.with_transfer(options.transfer);
    restore_with_run(&run, id, options).await
}

/// As [`restore_backup_with`], in the context `run` (its store takes every bucket request).
pub(crate) async fn restore_with_run<C: Container + ?Sized>(
    run: &Run<'_, C>,
    id: &BackupId,
    options: &RestoreOptions,
) -> Result<RestoreReport, BackupError> {
    let cancel = CancelToken::new();
    run.locked(
        "restore",
        &options.lock,
        &cancel,
        restore_locked(run, id, options),
    )
    .await
}

async fn restore_locked<C: Container + ?Sized>(
    run: &Run<'_, C>,
    id: &BackupId,
    options: &RestoreOptions,
) -> Result<RestoreReport, BackupError> {
    let started = Instant::now();
    let mut clock = PhaseClock::start();
    let config = work::read_homeserver_config(run.container, run.layout).await?;
    let rules = RestoreRules::new(run.layout, &config);
    let mut fetched = locate_compact(&run.client, id).await?;
    let chain = chain_fetch::plan(run, id, &mut fetched).await?;
    let backup = Backup {
        id,
        fetched: &fetched,
        chain: chain.as_ref(),
    };
    // What killed runs left: a killed restore's keys and staging go; the live files a
    // half-done swap set aside stay, and this report says how to roll back.
    let swept = work::sweep_work_dirs(run.container, run.layout, false).await;
    let settings = backup.download_settings(run, options).await;
    let work = run.work_dir("restore", &settings).await?;
    clock.mark(Phase::Prepare);
    let result = restore_in(run, &work, options, &rules, &backup, &mut clock).await;
    work.finish().await;
    clock.mark(Phase::Cleanup);
    let done = result?;
    tracing::info!(backup_id = %id, "backup restored");
    let mut warnings = fetched.warnings;
    warnings.extend(swept.kept);
    warnings.extend(done.warnings);
    Ok(RestoreReport {
        id: id.clone(),
        status: fetched.status,
        restored: done.restored,
        dropped: done.dropped,
        stripped_modes: done.stripped,
        one_time_keys_removed: done.one_time_keys_removed,
        ciphertext_bytes: fetched.size,
        packs: chain.as_ref().map_or(1, |c| c.older_read() + 1),
        warnings,
        duration: started.elapsed(),
        phases: clock.phases(),
    })
}

/// What the swap did.
struct Restored {
    restored: Vec<String>,
    dropped: Vec<String>,
    stripped: Vec<String>,
    one_time_keys_removed: Option<u64>,
    warnings: Vec<String>,
}

/// Fetches, checks and swaps in. A failed rollback keeps the work dir (it holds the
/// set-aside live files): [`WorkGuard::keep`].
async fn restore_in<C: Container + ?Sized>(
    run: &Run<'_, C>,
    guard: &WorkGuard<'_, '_, C>,
    options: &RestoreOptions,
    rules: &RestoreRules,
    backup: &Backup<'_>,
    clock: &mut PhaseClock,
) -> Result<Restored, BackupError> {
    let ready = stage_checked(run, guard.dir(), options, rules, backup, clock).await?;
    run.confirm_lock("the swap").await?;
    let running = stop_service(run).await?;
    let dropped = swap_in(run, guard, ready.db.as_deref(), running.as_deref()).await?;
    start_or_roll_back(run, guard, running.as_deref()).await?;
    clock.mark(Phase::Swap);
    Ok(ready.restored(rules, dropped))
}

/// What is staged and checked, ready to swap in.
struct Ready {
    got: Fetch,
    staged: CheckedMembers,
    units: Vec<String>,
    /// The database's member name, when the backup restores it.
    db: Option<String>,
    one_time_keys_removed: Option<u64>,
}

impl Ready {
    /// The report of the swap that put these units in place (`dropped`: the live
    /// database sidecars set aside).
    fn restored(self, rules: &RestoreRules, dropped: Vec<String>) -> Restored {
        let units = self.units;
        let stripped: Vec<String> = self
            .staged
            .stripped
            .iter()
            .filter(|(name, _)| rules.unit(name).is_some_and(|u| units.contains(&u)))
            .map(|(name, mode)| restore_plan::describe_stripped(name, *mode))
            .collect();
        let mut warnings = self.got.warnings;
        if !stripped.is_empty() {
            warnings.push(format!(
                "set-id, sticky and world-writable bits were stripped from {} restored entries",
                stripped.len()
            ));
        }
        if let Some(n) = self.one_time_keys_removed {
            tracing::info!(rows = n, "removed the restored database's one-time keys");
        }
        Restored {
            restored: units,
            dropped,
            stripped,
            one_time_keys_removed: self.one_time_keys_removed,
            warnings,
        }
    }
}

/// Fetches into staging and checks it all before anything live is touched: the staged
/// tree, the database, what the swap needs; writes the swap's list.
async fn stage_checked<C: Container + ?Sized>(
    run: &Run<'_, C>,
    work: &WorkDir,
    options: &RestoreOptions,
    rules: &RestoreRules,
    backup: &Backup<'_>,
    clock: &mut PhaseClock,
) -> Result<Ready, BackupError> {
    let (container, params, layout) = (run.container, run.params, run.layout);
    let (id, fetched) = (backup.id, backup.fetched);
    let call = extract_call(layout, params, work, fetched);
    let got = backup
        .read(run, work, call, options, chain_fetch::Read::Extract)
        .await?;
    clock.mark(Phase::Fetch);
    let Staged { staged, units } = check_staged(run, work, id, rules, &got).await?;
    let db = rules.database().filter(|db| staged.units.contains(db));
    let one_time_keys_removed = match &db {
        Some(db) => check_staged_db(run, work, id, db, options.keep_one_time_keys).await?,
        None => None,
    };
    preflight(run, work, rules, got.all_members(), &units, None).await?;
    work::write_file(
        container,
        layout,
        work,
        WorkFile::SwapList,
        plan::files_list(&units),
    )
    .await
    .map_err(BackupError::from)?;
    clock.mark(Phase::Checks);
    Ok(Ready {
        got,
        staged,
        units,
        db,
        one_time_keys_removed,
    })
}

/// Stops the layout's service around the swap when it is running; gives the service
/// to start again (`None`: none was running).
async fn stop_service<C: Container + ?Sized>(
    run: &Run<'_, C>,
) -> Result<Option<Vec<String>>, BackupError> {
    let container = run.container;
    let service = run.layout.service.clone();
    let was_running = match &service {
        Some(s) => container.is_running(s).await.map_err(BackupError::from)?,
        None => false,
    };
    // The service to stop around the swap and start again: only one that was running.
    let running = service
        .as_deref()
        .filter(|_| was_running)
        .map(|s| vec![s.to_string()]);
    if let Some(svc) = &running
        && let Err(e) = container.stop(svc).await
    {
        let _ = container.start(svc).await;
        return Err(BackupError::StageFailed {
            stage: Stage::Service,
            exit_code: -1,
            stderr: format!("could not stop {}: {e}", svc[0]),
        });
    }
    Ok(running)
}

/// Runs the swap; gives the live database sidecars it set aside. On failure the
/// service `running` is started again on the data the swap's own undo put back, or
/// when nothing had been moved; otherwise (the undo failed, exit 31, or the swap ended
/// half-way) it is left stopped and the work dir keeps the set-aside files and logs.
async fn swap_in<C: Container + ?Sized>(
    run: &Run<'_, C>,
    guard: &WorkGuard<'_, '_, C>,
    db: Option<&str>,
    running: Option<&[String]>,
) -> Result<Vec<String>, BackupError> {
    let (container, params, layout, work) = (run.container, run.params, run.layout, guard.dir());
    let swap = restore_plan::swap_call(layout, params, work, false, db);
    let swapped = container
        .exec(&swap.argv, work::exec_options(layout, &swap, work, None))
        .await;
    match swapped {
        Ok(out) => Ok(out
            .stdout
            .split(|b| *b == 0)
            .filter(|d| !d.is_empty())
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .collect()),
        Err(e) => {
            // Only a swap that undid itself (30) leaves the live tree known. Any other
            // end (an undo that failed, a swap killed or cut off half-way) is swept at
            // once: when nothing had been set aside or placed, the dir goes and the
            // tree is as it was; else the set-aside files and logs are kept (keys and
            // staging removed) and the service is not started on that half-swapped
            // tree (what it wrote there would be lost to the roll-back).
            let undone = Exit::of(&e) == Some(Exit::SwapUndone)
                || matches!(guard.sweep_now().await, Ok(false));
            if !undone {
                guard.keep();
            }
            if undone
                && let Some(svc) = running
                && let Err(se) = container.start(svc).await
            {
                tracing::error!(service = %svc[0], error = %se, "could not start the service again after a failed swap");
            }
            let (exit_code, mut stderr) = match e {
                ContainerError::ExitedNonZero {
                    exit_code, stderr, ..
                } => (exit_code, stderr),
                other => (-1, other.to_string()),
            };
            if !undone && let Some(svc) = running {
                stderr.push_str(&format!(
                    "; {} was left stopped: the previous live files are not all back in place (those set aside are in {}/{}, listed in {}/{})",
                    svc[0],
                    work.dir,
                    WorkFile::Aside,
                    work.dir,
                    WorkFile::AsideLog
                ));
            }
            Err(BackupError::StageFailed {
                stage: Stage::Swap,
                exit_code,
                stderr,
            })
        }
    }
}

/// Starts the service `running` again on the restored data; when it does not start,
/// rolls the swap back and starts it on the previous data.
async fn start_or_roll_back<C: Container + ?Sized>(
    run: &Run<'_, C>,
    guard: &WorkGuard<'_, '_, C>,
    running: Option<&[String]>,
) -> Result<(), BackupError> {
    let (container, params, layout, work) = (run.container, run.params, run.layout, guard.dir());
    let Some(svc) = running else { return Ok(()) };
    let Err(e) = container.start(svc).await else {
        return Ok(());
    };
    let s = &svc[0];
    tracing::error!(service = %s, error = %e, "the service did not start on the restored data: rolling back");
    let back = restore_plan::swap_call(layout, params, work, true, None);
    let rolled = container
        .exec(&back.argv, work::exec_options(layout, &back, work, None))
        .await;
    // Started again only on the previous data put back whole (see `swap_in`).
    let restarted = if rolled.is_ok() {
        container.start(svc).await
    } else {
        guard.keep();
        Ok(())
    };
    let mut message =
        format!("{s} did not start on the restored data ({e}); the previous data was put back");
    if let Err(re) = rolled {
        message = format!(
            "{s} did not start on the restored data ({e}) and the rollback failed ({re}); the previous live files are in {}, and {s} was left stopped",
            work.dir
        );
    }
    if let Err(se) = restarted {
        message.push_str(&format!(
            "; starting {s} on the previous data failed too: {se}"
        ));
    }
    Err(BackupError::StageFailed {
        stage: Stage::Service,
        exit_code: -1,
        stderr: message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> S3Parameters {
        S3Parameters::builder("AKIDEXAMPLE", "secret", "backups")
            .endpoint("http://127.0.0.1:9000")
            .build()
            .unwrap()
    }

    /// A chain's pack up to `small_pack_mib` is the library's to download in the
    /// workload transfer, unless the option is 0 or the download is capped.
    #[test]
    fn a_small_pack_of_a_chain_is_the_librarys_to_download_unless_capped_or_off() {
        let mib = 1u64 << 20;
        let default = RestoreOptions::default();
        assert_eq!(default.small_pack_mib, 128);
        for (options, size, want) in [
            (default.clone(), 128 * mib, Transfer::Library),
            (default.clone(), 128 * mib + 1, Transfer::Workload),
            (default.clone().small_pack_mib(0), 1, Transfer::Workload),
            (
                default
                    .clone()
                    .max_bandwidth(Some("10MB/s".parse().unwrap())),
                1,
                Transfer::Workload,
            ),
        ] {
            assert_eq!(
                options.pack_transfer(Transfer::Workload, size),
                want,
                "{size}"
            );
        }
        // A run that downloads in the library does so for every pack.
        assert_eq!(
            default
                .small_pack_mib(0)
                .pack_transfer(Transfer::Library, 1 << 40),
            Transfer::Library
        );
    }

    /// A download in the workload with no range size set is probed, and takes ranges
    /// where the store answers a range at once; with a range size set, a bandwidth
    /// cap, the library's transfer or a small object, it is not (one streamed GET, or
    /// the size set).
    #[tokio::test]
    async fn the_workload_download_probes_its_object_for_ranges() {
        use crate::s3::{MemoryStore, ObjectStore as _};
        let store = MemoryStore::new("");
        let size: u64 = 17 << 20;
        for (key, len) in [("big", size), ("small", 16 << 20)] {
            let body = vec![1u8; usize::try_from(len).unwrap()];
            store
                .put_object(key, body, "application/octet-stream", &Default::default())
                .await
                .unwrap();
        }
        let settings = |options: RestoreOptions, key: &'static str, transfer| {
            let store = &store;
            async move {
                let len = if key == "small" { 16 << 20 } else { size };
                let got = options
                    .download_settings_for(
                        transfer,
                        crate::backup::aws_ranges::probe(store, key, len),
                    )
                    .await;
                (got.part_size_mib, got.upload_concurrency)
            }
        };
        let default = RestoreOptions::default();
        // The store answers at once; a stalled test thread could make one probe late,
        // three in a row would not.
        let mut seeking = Vec::new();
        for _ in 0..3 {
            seeking.push(settings(default.clone(), "big", Transfer::Workload).await);
            if seeking.last() == Some(&(8, 2)) {
                break;
            }
        }
        assert_eq!(seeking.last(), Some(&(8, 2)), "{seeking:?}");
        let cases = [
            (default.clone().download_chunk_mib(64), "big", (64, 1)),
            (
                default
                    .clone()
                    .download_concurrency(0)
                    .download_chunk_mib(64),
                "big",
                (64, 1),
            ),
            (
                default
                    .clone()
                    .max_bandwidth(Some(crate::Bandwidth::mib(30))),
                "big",
                (1024, 1),
            ),
            (default.clone(), "small", (1024, 1)),
            (default.clone(), "missing", (1024, 1)),
        ];
        for (options, key, want) in cases {
            assert_eq!(
                settings(options, key, Transfer::Workload).await,
                want,
                "{key}"
            );
        }
        let library = settings(default.clone(), "big", Transfer::Library).await;
        assert_eq!(library, (1024, 1));
    }

    /// The download's config file carries the download's range size and concurrency,
    /// never the upload's 5 MiB parts.
    #[test]
    fn downloads_have_their_own_transfer_settings() {
        let config =
            plan::aws_config_file(&params(), &RestoreOptions::default().download_settings())
                .unwrap();
        assert!(
            config.contains("  multipart_chunksize = 1024MB\n"),
            "{config}"
        );
        assert!(
            config.contains("  multipart_threshold = 1024MB\n"),
            "{config}"
        );
        assert!(
            config.contains("  max_concurrent_requests = 1\n"),
            "{config}"
        );
        let options = RestoreOptions::default()
            .download_chunk_mib(64)
            .download_concurrency(2)
            .max_bandwidth(Some(crate::Bandwidth::mib(30)));
        let config = plan::aws_config_file(&params(), &options.download_settings()).unwrap();
        assert!(
            config.contains("  multipart_chunksize = 64MB\n"),
            "{config}"
        );
        assert!(
            config.contains("  max_concurrent_requests = 2\n"),
            "{config}"
        );
        assert!(config.contains("  max_bandwidth = 30MB/s\n"), "{config}");
        // Out-of-range values are raised to what the aws CLI accepts.
        let tiny = RestoreOptions::default()
            .download_chunk_mib(1)
            .download_concurrency(0);
        let config = plan::aws_config_file(&params(), &tiny.download_settings()).unwrap();
        assert!(config.contains("  multipart_chunksize = 5MB\n"), "{config}");
        assert!(
            config.contains("  max_concurrent_requests = 1\n"),
            "{config}"
        );
        assert_ne!(
            RestoreOptions::default().download_settings().part_size_mib,
            BackupOptions::default().part_size_mib
        );
    }
}

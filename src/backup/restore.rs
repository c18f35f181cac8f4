//! Verifying and restoring backups through a [`Container`].

use std::time::{Duration, Instant};

use crate::backup::catalog::{BackupStatus, backup_status};
use crate::backup::decryption::{Untrusted, check_status};
use crate::backup::layout::{HomeserverConfig, Layout, join};
use crate::backup::manifest::{InnerManifest, Manifest};
use crate::backup::plan::{
    self, BackupId, BackupOptions, CancelToken, MANIFEST_SUFFIX, ScriptCall, WorkDir,
};
use crate::backup::progress::{self, ProgressStage};
use crate::backup::restore_plan::{
    self, ArchiveMember, CheckedMembers, MemberSource, RestoreRules, parse_members, parse_staged,
};
use crate::backup::run::{Run, WorkGuard};
use crate::backup::scripts::{Exit, Pipeline, WorkFile};
use crate::backup::work::{self, Outputs, WorkPlace, parse_field};
use crate::container::Container;
use crate::error::{BackupError, ContainerError, S3Error, Stage};
use crate::s3::{ObjectStore, S3Parameters};

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
    /// Things the operator should know.
    pub warnings: Vec<String>,
    /// Wall time.
    pub duration: Duration,
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
#[derive(Debug, Clone, Default, PartialEq, Eq, derive_setters::Setters)]
#[non_exhaustive]
#[setters(prefix = "", generate = true)]
pub struct RestoreOptions {
    /// Kill the download pipeline after this long.
    pub timeout: Option<Duration>,
    /// How a restore takes the backup lock (verify does not take it).
    pub lock: crate::backup::lock::LockOptions,
    /// Keep (`true`) the restored database's `e2e_one_time_keys_json` rows; by default
    /// they are removed, as Synapse advises for a restored database.
    pub keep_one_time_keys: bool,
    /// Cap the download at this many MiB/s (the aws CLI's `max_bandwidth`); no cap
    /// when `None`.
    pub max_bandwidth_mib: Option<u32>,
    /// Make verify's work dir in the workload's temp dir (`$TMPDIR` or `/tmp`, with
    /// `mktemp -d` as the workload user) instead of under the layout's work base.
    /// Verify does so anyway when the work base does not exist (no Synapse tree there);
    /// it keeps only small files in it. A restore stages beside the data and ignores it.
    pub temp_work_dir: bool,
    /// Receives the download's progress (see [`Progress`](crate::Progress)); none when
    /// `None`.
    pub progress: Option<crate::backup::progress::ProgressCallback>,
}

impl RestoreOptions {
    /// The aws CLI settings of the download (the per-run config file).
    pub(super) fn transfer(&self) -> BackupOptions {
        BackupOptions::default().max_bandwidth_mib(self.max_bandwidth_mib)
    }
}

pub(super) struct Fetched {
    pub(super) status: BackupStatus,
    pub(super) manifest: Option<Manifest>,
    pub(super) key: String,
    pub(super) size: u64,
    pub(super) warnings: Vec<String>,
}

/// What the fetch pipeline produced and the checks of it found.
pub(super) struct Fetch {
    /// The SHA-256 of the encrypted stream, as the pipeline computed it.
    pub(super) sha256: String,
    pub(super) members: Vec<ArchiveMember>,
    pub(super) inner: Option<InnerManifest>,
    pub(super) warnings: Vec<String>,
}

/// Finds the backup and its manifest; refuses incomplete ones.
pub(super) async fn locate(
    client: &(impl ObjectStore + ?Sized),
    id: &BackupId,
) -> Result<Fetched, BackupError> {
    let key = client.object_key(id.as_str());
    let status = backup_status(client, id)
        .await?
        .ok_or_else(|| BackupError::NotFound { id: id.to_string() })?;
    let head = match client.head_object(&key).await {
        Ok(h) => h,
        Err(S3Error::NotFound { .. }) => {
            return Err(BackupError::Corrupted {
                id: id.to_string(),
                reason: "its manifest exists but its data object is missing".into(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let mut warnings = Vec::new();
    let manifest = match status {
        BackupStatus::Complete => {
            let bytes = client
                .get_object(
                    &format!("{key}{MANIFEST_SUFFIX}"),
                    crate::backup::catalog::MAX_MANIFEST_BYTES,
                )
                .await?;
            let m = Manifest::from_json(&bytes).map_err(|e| BackupError::Corrupted {
                id: id.to_string(),
                reason: format!("unreadable manifest: {e}"),
            })?;
            if m.ciphertext_bytes != head.size {
                return Err(BackupError::Corrupted {
                    id: id.to_string(),
                    reason: format!(
                        "the object is {} bytes but its manifest says {} (truncated or replaced)",
                        head.size, m.ciphertext_bytes
                    ),
                });
            }
            Some(m)
        }
        BackupStatus::Incomplete => {
            return Err(BackupError::MissingManifest { id: id.to_string() });
        }
        BackupStatus::Legacy => {
            tracing::warn!(backup_id = %id, "legacy backup (no manifest): integrity is checked by gpg only");
            warnings
                .push("legacy backup without a manifest: integrity is checked by gpg only".into());
            None
        }
    };
    Ok(Fetched {
        status,
        manifest,
        key,
        size: head.size,
        warnings,
    })
}

/// The space a restore needs in staging: the archive's plaintext (with an eighth more
/// for file system overhead) when a manifest says it, else the encrypted size (a lower
/// bound: gpg may have compressed it; running out is caught while staging). Saturates,
/// and stays within what the script's shell arithmetic can compare.
pub(super) fn staging_need(fetched: &Fetched) -> u64 {
    let base = fetched
        .manifest
        .as_ref()
        .map_or(fetched.size, |m| m.plaintext_bytes.max(fetched.size));
    base.saturating_add(base / 8)
        .min(u64::try_from(i64::MAX).unwrap_or(u64::MAX))
}

/// Runs the fetch script and turns its outcome into the precise error: wrong
/// passphrase, corruption (checksum, truncation, gpg's integrity check), data not
/// encrypted with the passphrase, claims that do not match the stream, no space.
pub(super) async fn fetch<C: Container + ?Sized>(
    run: &Run<'_, C>,
    work: &WorkDir,
    call: &ScriptCall,
    id: &BackupId,
    fetched: &Fetched,
    options: &RestoreOptions,
    stage: ProgressStage,
) -> Result<Fetch, BackupError> {
    let (container, layout, passphrase) = (run.container, run.layout, run.passphrase);
    let outcome = progress::exec_with_progress(
        container,
        layout,
        work,
        &call.argv,
        work::pipeline_options(layout, call, work, options.timeout, passphrase),
        options.progress.as_ref(),
        stage,
        Some(fetched.size),
    )
    .await;
    // A failed run may have stopped before the checksum and gpg wrote theirs.
    let outputs = Outputs::new(container, layout, work);
    let sha = outputs
        .text_if_written(WorkFile::Sha256)
        .await?
        .and_then(|s| parse_field::<String>(&s, 0));
    let length: Option<u64> = outputs
        .text_if_written(WorkFile::Length)
        .await?
        .and_then(|s| parse_field(&s, 0));
    let status = outputs
        .read_if_written(WorkFile::GpgStatus)
        .await?
        .unwrap_or_default();
    let checksum_problem = match &fetched.manifest {
        Some(m) if length.is_some_and(|l| l != m.ciphertext_bytes) => Some(format!(
            "downloaded {} bytes but the manifest says {} (truncated)",
            length.unwrap_or(0),
            m.ciphertext_bytes
        )),
        Some(m) if sha.as_deref().is_some_and(|s| s != m.ciphertext_sha256) => {
            Some("the SHA-256 of the object does not match its manifest".to_string())
        }
        _ => None,
    };
    let corrupted = |reason: String| BackupError::Corrupted {
        id: id.to_string(),
        reason,
    };
    let untrusted = |why: Untrusted| match why {
        Untrusted::BadPassphrase => BackupError::WrongPassphrase { id: id.to_string() },
        other => corrupted(format!("refused: {other}")),
    };
    match outcome {
        Ok(_) => {}
        Err(ContainerError::ExitedNonZero {
            exit_code, stderr, ..
        }) => {
            let exit = Exit::from_code(exit_code);
            if exit == Exit::FilledWhileStaging {
                // tar's listing up to where the space ran out, when tar got that far.
                let listed: u64 = outputs
                    .read_if_written(WorkFile::Members)
                    .await?
                    .and_then(|l| parse_members(&l).ok())
                    .map_or(0, |m| {
                        m.iter().fold(0u64, |sum, a| sum.saturating_add(a.size))
                    });
                return Err(BackupError::NoSpaceLeft {
                    path: layout.host_path(layout.work_base()),
                    needed_about: staging_need(fetched).max(listed),
                });
            }
            if exit == Exit::NoSpace {
                let available = outputs.field(WorkFile::Avail, 0).await?;
                let needed = call
                    .env
                    .get("SB_NEED_BYTES")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                return Err(BackupError::InsufficientSpace {
                    path: work.dir.clone(),
                    needed,
                    available,
                });
            }
            if let Some(reason) = checksum_problem {
                return Err(corrupted(reason));
            }
            let stage = match exit {
                Exit::Stage(position) => Pipeline::Fetch.stage(position),
                _ => Stage::Check,
            };
            if stage == Stage::Gpg {
                // gpg's status lines alone tell a wrong passphrase from corruption.
                return Err(match check_status(&status) {
                    Err(why) => untrusted(why),
                    Ok(()) => corrupted(format!("gpg could not decrypt it: {stderr}")),
                });
            }
            return Err(match stage {
                // GNU tar skips a member named with `..` and exits 2 like for any other
                // error; it has no status output and leaves the member out of its
                // listing, so its (C locale) message is the only sign.
                Stage::Extract
                    if stderr.contains("contains '..'")
                        || stderr.contains("Member name contains") =>
                {
                    BackupError::UnsafeMember {
                        member: stderr
                            .lines()
                            .find(|l| l.contains("contains"))
                            .unwrap_or(&stderr)
                            .to_string(),
                        reason: "member names with '..' are refused".into(),
                    }
                }
                stage => BackupError::StageFailed {
                    stage,
                    exit_code,
                    stderr,
                },
            });
        }
        Err(e @ ContainerError::TimedOut { .. }) => {
            return Err(BackupError::StageFailed {
                stage: Stage::Download,
                exit_code: -1,
                stderr: e.to_string(),
            });
        }
        Err(e) => return Err(e.into()),
    }
    if let Some(reason) = checksum_problem {
        return Err(corrupted(reason));
    }
    if fetched.manifest.is_some() && sha.is_none() {
        return Err(corrupted(
            "the checksum of the download could not be computed".into(),
        ));
    }
    // The pipeline succeeded: its checksum is there (else the error names the file).
    let sha256 = match sha {
        Some(sha) => sha,
        None => outputs.field(WorkFile::Sha256, 0).await?,
    };
    // Nothing is trusted, listed or swapped in before gpg's status says the stream was
    // decrypted with the passphrase and passed its integrity check.
    check_status(&status).map_err(untrusted)?;
    let listing = outputs.read(WorkFile::Members).await?;
    let members = parse_members(&listing).map_err(|e| corrupted(e.to_string()))?;
    // Only an archive that starts with an inner manifest has a head to keep.
    let head = outputs.read_if_written(WorkFile::Head).await?;
    let (inner, warnings) = restore_plan::check_claims(
        id.as_str(),
        &members,
        head.as_deref(),
        fetched.manifest.as_ref(),
    )
    .map_err(corrupted)?;
    Ok(Fetch {
        sha256,
        members,
        inner,
        warnings,
    })
}

/// The member rules for a verify: the workload's own when its `homeserver.yaml` can be
/// read (so that verify accepts what restore accepts), else the layout the backup
/// recorded (the inner manifest's, authenticated, before the external one's), else the
/// layout's defaults.
pub(super) async fn verify_rules<C: Container + ?Sized>(
    container: &C,
    layout: &Layout,
    fetched: &Fetched,
    inner: Option<&InnerManifest>,
) -> Result<RestoreRules, BackupError> {
    let path = layout.host_path(&layout.homeserver_config_path());
    if container.exists(&path).await.unwrap_or(false) {
        let config = work::read_homeserver_config(container, layout).await?;
        return Ok(RestoreRules::new(layout, &config));
    }
    if let Some(recorded) = inner
        .map(|i| &i.layout)
        .or(fetched.manifest.as_ref().map(|m| &m.layout))
    {
        return Ok(RestoreRules::from_manifest(recorded));
    }
    let config = HomeserverConfig::parse("", &layout.homeserver_config_path(), layout)?;
    Ok(RestoreRules::new(layout, &config))
}

/// Downloads, decrypts and lists a backup inside the workload (no live file is
/// touched), and checks it against its manifest: size, SHA-256 and member list.
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
/// ([`Stage::Swap`]) and [`BackupError::InsufficientSpace`] from the swap's check.
pub async fn verify_backup_with<C: Container + ?Sized>(
    container: &C,
    s3_parameters: &S3Parameters,
    passphrase: &str,
    id: &BackupId,
    layout: &Layout,
    options: &RestoreOptions,
) -> Result<VerifyReport, BackupError> {
    let run = Run::new(container, s3_parameters, layout, passphrase)?;
    verify_in(&run, id, options).await
}

/// As [`verify_backup_with`], in the context `run` (its store takes every bucket request).
pub(crate) async fn verify_in<C: Container + ?Sized>(
    run: &Run<'_, C>,
    id: &BackupId,
    options: &RestoreOptions,
) -> Result<VerifyReport, BackupError> {
    let (container, s3_parameters, layout) = (run.container, run.params, run.layout);
    let started = Instant::now();
    let fetched = locate(&run.client, id).await?;
    let base = WorkDir::base(layout);
    let place = if options.temp_work_dir || !container.exists(&base).await.unwrap_or(false) {
        WorkPlace::Temp
    } else {
        WorkPlace::Under(&base)
    };
    let work = run
        .work_dir_in(place, "verify", &options.transfer(), true)
        .await?;
    // The database is staged (alone) in the work dir for restore's own check of it.
    let db = verify_rules(container, layout, &fetched, None)
        .await?
        .database();
    let mut call = restore_plan::list_call(layout, s3_parameters, work.dir(), &fetched.key);
    if let Some(db) = &db {
        call.env.insert("SB_VERIFY_DB".into(), db.clone());
        if let Some(size) = fetched.manifest.as_ref().and_then(|m| {
            m.files
                .iter()
                .find(|f| f.path.as_bytes() == db.as_bytes())
                .map(|f| f.size)
        }) {
            call.env.insert(
                "SB_NEED_BYTES".into(),
                size.saturating_add(size / 8).to_string(),
            );
            call.env
                .insert("SB_SPACE_DIR".into(), work.dir().dir.clone());
        }
    }
    let result = fetch(
        run,
        work.dir(),
        &call,
        id,
        &fetched,
        options,
        ProgressStage::Verify,
    )
    .await;
    let result = match result {
        Ok(got) => verify_checks(run, work.dir(), id, db.as_deref(), &fetched, got).await,
        Err(e) => Err(e),
    };
    work.finish().await;
    let (got, rules, checked) = result?;
    if rules.database() != db
        && let Some(other) = rules.database()
        && got.members.iter().any(|m| m.name == other.as_bytes())
    {
        return Err(BackupError::Corrupted {
            id: id.to_string(),
            reason: format!(
                "the backup's own manifest names the database {other}, not the {} verify checked",
                db.as_deref().unwrap_or("none")
            ),
        });
    }
    let mut warnings = fetched.warnings;
    warnings.extend(got.warnings);
    warnings.extend(checked.stripped.iter().map(|(name, mode)| {
        format!(
            "a restore strips set-id, sticky and world-writable bits: {}",
            restore_plan::describe_stripped(name, *mode)
        )
    }));
    let members = got.members.len()
        - restore_plan::inner_manifest_position(&got.members).map_or(0, |p| p + 1);
    tracing::info!(backup_id = %id, members, "backup verified");
    Ok(VerifyReport {
        id: id.clone(),
        status: fetched.status,
        ciphertext_bytes: fetched.size,
        ciphertext_sha256: got.sha256,
        members,
        authenticated_manifest: got.inner.is_some(),
        warnings,
        duration: started.elapsed(),
    })
}

/// Checks, before anything is stopped or moved, what swapping `units` in needs (`swap.sh
/// preflight`): the workload user may write where each is set aside and placed, and
/// there is room where a move crosses file systems (a media store on another volume),
/// with `staging` bytes of staging still to come in the layout's work base.
///
/// # Errors
/// [`BackupError::StageFailed`] ([`Stage::Swap`]) naming a path that is not writable,
/// [`BackupError::InsufficientSpace`].
pub(super) async fn preflight<C: Container + ?Sized>(
    run: &Run<'_, C>,
    work: &WorkDir,
    rules: &RestoreRules,
    members: &[ArchiveMember],
    units: &[String],
    staging: u64,
) -> Result<(), BackupError> {
    let (container, layout) = (run.container, run.layout);
    work::write_file(
        container,
        layout,
        work,
        WorkFile::SwapSizes,
        &restore_plan::unit_sizes(rules, members, units),
    )
    .await?;
    let call =
        restore_plan::preflight_call(layout, run.params, work, &WorkDir::base(layout), staging);
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
) -> Result<(Fetch, RestoreRules, CheckedMembers), BackupError> {
    let (container, layout) = (run.container, run.layout);
    verify_db(run, work, id, db, &got).await?;
    let rules = verify_rules(container, layout, fetched, got.inner.as_ref()).await?;
    let checked = rules
        .check(&got.members, MemberSource::Listing)
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
            &got.members,
            &units,
            staging_need(fetched),
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
        .members
        .iter()
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
/// Any failure before the swap leaves live data untouched; a failure during the swap,
/// or a service that does not start again, rolls the swap back. A service that was
/// running before is running after.
///
/// Holds the backup lock ([`RestoreOptions::lock`], see [`crate::BackupLock`]) for the
/// whole run: refreshed while it runs, released at the end and on every failure.
///
/// # Errors
/// As [`verify_backup`], plus [`BackupError::LockHeld`] /
/// [`BackupError::LockUnsupported`] from the lock, [`BackupError::InsufficientSpace`],
/// [`BackupError::NoSpaceLeft`], [`BackupError::UnsafeMember`],
/// [`BackupError::StageFailed`] with [`Stage::Swap`] or [`Stage::Service`].
pub async fn restore_backup_with<C: Container + ?Sized>(
    container: &C,
    s3_parameters: &S3Parameters,
    passphrase: &str,
    id: &BackupId,
    layout: &Layout,
    options: &RestoreOptions,
) -> Result<RestoreReport, BackupError> {
    let run = Run::new(container, s3_parameters, layout, passphrase)?;
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
    let config = work::read_homeserver_config(run.container, run.layout).await?;
    let rules = RestoreRules::new(run.layout, &config);
    let fetched = locate(&run.client, id).await?;
    let need = staging_need(&fetched);
    // What killed runs left: a killed restore's keys and staging go; the live files a
    // half-done swap set aside stay, and this report says how to roll back.
    let swept = work::sweep_work_dirs(run.container, run.layout, false).await;
    let work = run.work_dir("restore", &options.transfer(), true).await?;
    let result = restore_in(run, &work, options, &rules, id, &fetched, need).await;
    work.finish().await;
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
        warnings,
        duration: started.elapsed(),
    })
}

/// Checks the staged database `db` (member name): `PRAGMA integrity_check`, its
/// one-time keys removed unless `keep_one_time_keys`, made one self-contained file.
/// Gives the number of one-time keys removed.
pub(super) async fn check_staged_db<C: Container + ?Sized>(
    run: &Run<'_, C>,
    work: &WorkDir,
    id: &BackupId,
    db: &str,
    keep_one_time_keys: bool,
) -> Result<Option<u64>, BackupError> {
    let (container, layout) = (run.container, run.layout);
    let check = restore_plan::check_db_call(layout, run.params, work, db, keep_one_time_keys);
    match container
        .exec(&check.argv, work::exec_options(layout, &check, work, None))
        .await
    {
        Ok(out) => Ok(out
            .stdout_text()
            .trim()
            .strip_prefix("otk ")
            .and_then(|n| n.parse::<u64>().ok())),
        Err(ContainerError::ExitedNonZero {
            exit_code, stderr, ..
        }) if Exit::from_code(exit_code) == Exit::DatabaseCheckFailed => {
            Err(BackupError::Corrupted {
                id: id.to_string(),
                reason: format!("the restored database {db} fails SQLite's check: {stderr}"),
            })
        }
        Err(ContainerError::ExitedNonZero {
            exit_code, stderr, ..
        }) => Err(BackupError::StageFailed {
            stage: Stage::Check,
            exit_code,
            stderr,
        }),
        Err(e) => Err(e.into()),
    }
}

/// What the swap did.
struct Restored {
    restored: Vec<String>,
    dropped: Vec<String>,
    stripped: Vec<String>,
    one_time_keys_removed: Option<u64>,
    warnings: Vec<String>,
}

/// What [`check_staged`] found in staging.
pub(super) struct Staged {
    /// The staged tree's members, checked.
    pub(super) staged: CheckedMembers,
    /// The units to restore: the staged ones without database sidecars (the database
    /// is checked and made self-contained in staging, and every live sidecar is set
    /// aside).
    pub(super) units: Vec<String>,
}

/// The checks between a fetch and anything placed: every member of tar's listing and
/// of the staged tree (walked NUL-separated, so no name in the listing can hide what
/// tar made) passes `rules`, the two agree, and something is left to restore.
///
/// # Errors
/// [`BackupError::UnsafeMember`], [`BackupError::Corrupted`], or the container's error
/// reading the walk.
pub(super) async fn check_staged<C: Container + ?Sized>(
    run: &Run<'_, C>,
    work: &WorkDir,
    id: &BackupId,
    rules: &RestoreRules,
    got: &Fetch,
) -> Result<Staged, BackupError> {
    let corrupted = |reason: &str| BackupError::Corrupted {
        id: id.to_string(),
        reason: reason.to_string(),
    };
    let unsafe_member =
        |(member, reason): (String, String)| BackupError::UnsafeMember { member, reason };
    let listed = rules
        .check(&got.members, MemberSource::Listing)
        .map_err(unsafe_member)?;
    let walk = Outputs::new(run.container, run.layout, work)
        .read(WorkFile::Staged)
        .await?;
    let staged_members =
        parse_staged(&walk).map_err(|e| corrupted(&format!("the staged tree: {e}")))?;
    let staged = rules
        .check(&staged_members, MemberSource::Staged)
        .map_err(unsafe_member)?;
    if staged.units != listed.units || staged.has_inner_manifest != listed.has_inner_manifest {
        return Err(corrupted(
            "the staged tree does not match the archive's listing",
        ));
    }
    let units: Vec<String> = staged
        .units
        .iter()
        .filter(|u| !rules.is_db_sidecar(u))
        .cloned()
        .collect();
    if units.is_empty() {
        return Err(corrupted("the archive holds nothing to restore"));
    }
    Ok(Staged { staged, units })
}

/// Fetches, checks and swaps in. A failed rollback keeps the work dir (it holds the
/// set-aside live files): [`WorkGuard::keep`].
async fn restore_in<C: Container + ?Sized>(
    run: &Run<'_, C>,
    guard: &WorkGuard<'_, '_, C>,
    options: &RestoreOptions,
    rules: &RestoreRules,
    id: &BackupId,
    fetched: &Fetched,
    need: u64,
) -> Result<Restored, BackupError> {
    let (container, params, layout, work) = (run.container, run.params, run.layout, guard.dir());
    let call = restore_plan::extract_call(layout, params, work, &fetched.key, need);
    let got = fetch(
        run,
        work,
        &call,
        id,
        fetched,
        options,
        ProgressStage::Restore,
    )
    .await?;
    let Staged { staged, units } = check_staged(run, work, id, rules, &got).await?;
    let db = rules.database().filter(|db| staged.units.contains(db));
    let one_time_keys_removed = match &db {
        Some(db) => check_staged_db(run, work, id, db, options.keep_one_time_keys).await?,
        None => None,
    };
    preflight(run, work, rules, &got.members, &units, 0).await?;
    work::write_file(
        container,
        layout,
        work,
        WorkFile::SwapList,
        &plan::files_list(&units),
    )
    .await
    .map_err(BackupError::from)?;

    run.confirm_lock("the swap").await?;
    let service = layout.service.clone();
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
    let swap = restore_plan::swap_call(layout, params, work, false, db.as_deref());
    let swapped = container
        .exec(&swap.argv, work::exec_options(layout, &swap, work, None))
        .await;
    let dropped = match swapped {
        Ok(out) => out
            .stdout
            .split(|b| *b == 0)
            .filter(|d| !d.is_empty())
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .collect(),
        Err(e) => {
            if matches!(&e, ContainerError::ExitedNonZero { exit_code, .. }
                if Exit::from_code(*exit_code) == Exit::SwapUndoFailed)
            {
                guard.keep();
            }
            if let Some(svc) = &running
                && let Err(se) = container.start(svc).await
            {
                tracing::error!(service = %svc[0], error = %se, "could not start the service again after a failed swap");
            }
            let (exit_code, stderr) = match e {
                ContainerError::ExitedNonZero {
                    exit_code, stderr, ..
                } => (exit_code, stderr),
                other => (-1, other.to_string()),
            };
            return Err(BackupError::StageFailed {
                stage: Stage::Swap,
                exit_code,
                stderr,
            });
        }
    };
    if let Some(svc) = &running
        && let Err(e) = container.start(svc).await
    {
        let s = &svc[0];
        tracing::error!(service = %s, error = %e, "the service did not start on the restored data: rolling back");
        let back = restore_plan::swap_call(layout, params, work, true, None);
        let rolled = container
            .exec(&back.argv, work::exec_options(layout, &back, work, None))
            .await;
        let restarted = container.start(svc).await;
        if rolled.is_err() {
            guard.keep();
        }
        let mut message =
            format!("{s} did not start on the restored data ({e}); the previous data was put back");
        if let Err(re) = rolled {
            message = format!(
                "{s} did not start on the restored data ({e}) and the rollback failed ({re}); the previous live files are in {}",
                work.dir
            );
        }
        if let Err(se) = restarted {
            message.push_str(&format!(
                "; starting {s} on the previous data failed too: {se}"
            ));
        }
        return Err(BackupError::StageFailed {
            stage: Stage::Service,
            exit_code: -1,
            stderr: message,
        });
    }
    let stripped: Vec<String> = staged
        .stripped
        .iter()
        .filter(|(name, _)| rules.unit(name).is_some_and(|u| units.contains(&u)))
        .map(|(name, mode)| restore_plan::describe_stripped(name, *mode))
        .collect();
    let mut warnings = got.warnings;
    if !stripped.is_empty() {
        warnings.push(format!(
            "set-id, sticky and world-writable bits were stripped from {} restored entries",
            stripped.len()
        ));
    }
    if let Some(n) = one_time_keys_removed {
        tracing::info!(rows = n, "removed the restored database's one-time keys");
    }
    Ok(Restored {
        restored: units,
        dropped,
        stripped,
        one_time_keys_removed,
        warnings,
    })
}

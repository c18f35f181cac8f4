//! Extracting a backup into a directory (`restore --target`): restore's download,
//! decryption and checks, without the lock, the service or the swap.

use std::time::{Duration, Instant};

use crate::backup::catalog::BackupStatus;
use crate::backup::chain_fetch::{self, Backup};
use crate::backup::fetch;
use crate::backup::layout::Layout;
use crate::backup::phases::{Phase, PhaseClock, RestorePhases};
use crate::backup::plan::{self, BackupId, WorkDir};
use crate::backup::restore::RestoreOptions;
use crate::backup::restore_plan;
use crate::backup::run::{Run, WorkGuard};
use crate::backup::scripts::{Exit, WorkFile};
use crate::backup::work::{self, WorkPlace};
use crate::container::Container;
use crate::error::{BackupError, ConfigError, ContainerError, FieldProblem, Stage};
use crate::s3::S3Parameters;

/// Where [`extract_backup_with`] puts a backup, and which of it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExtractTarget {
    /// The directory, a path in the container taken as it is (not under
    /// [`Layout::root`]). It is made (mode 0700) when missing and must be empty; it and
    /// every dir above it must be owned by root or the workload user and not writable
    /// by other users (a sticky ancestor such as `/tmp` excepted), and none of them a
    /// symbolic link. A failed extraction removes the dirs it made.
    pub dir: String,
    /// Only these paths: member names relative to the root, as the manifest lists them
    /// (`data/homeserver.db`; a leading `/` is accepted), each a file or a directory with
    /// everything under it. Everything restorable when empty.
    pub include: Vec<String>,
}

impl ExtractTarget {
    /// Everything restorable, into `dir`.
    pub fn new(dir: impl Into<String>) -> Self {
        ExtractTarget {
            dir: dir.into(),
            include: Vec::new(),
        }
    }

    /// Adds `path` to the paths extracted (see [`ExtractTarget::include`]).
    #[must_use]
    pub fn include(mut self, path: impl Into<String>) -> Self {
        self.include.push(path.into());
        self
    }
}

/// What [`extract_backup_with`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ExtractReport {
    /// The backup id.
    pub id: BackupId,
    /// Complete or legacy.
    pub status: BackupStatus,
    /// The directory extracted into.
    pub target: String,
    /// The paths placed in it (relative to it, as member names).
    pub extracted: Vec<String>,
    /// Extracted entries whose set-id, sticky or world-writable bits were stripped, as
    /// `path: archived mode -> extracted mode` (octal).
    pub stripped_modes: Vec<String>,
    /// Rows removed from the extracted database's `e2e_one_time_keys_json`, as a
    /// restore removes them; `None` when no database was extracted, it has no such
    /// table, or they were kept ([`RestoreOptions::keep_one_time_keys`]).
    pub one_time_keys_removed: Option<u64>,
    /// Size of the encrypted object.
    pub ciphertext_bytes: u64,
    /// Things the operator should know.
    pub warnings: Vec<String>,
    /// Wall time.
    pub duration: Duration,
    /// Where the wall time went: before the download (with the target dir made), the
    /// download with its decryption and extraction into staging, the checks, the
    /// members moved into the target (`swap`), the cleanup.
    pub phases: RestorePhases,
}

fn check_target(dir: &str) -> Result<(), ConfigError> {
    let problem = if !dir.starts_with('/') {
        Some("must be an absolute path")
    } else if dir.split('/').any(|c| c == "..") {
        Some("must not contain `..`")
    } else if dir.contains('\0') {
        Some("must not contain a NUL byte")
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(message) => Err(ConfigError::Invalid {
            problems: vec![FieldProblem {
                field: "target".into(),
                message: format!("{dir:?} {message}"),
            }],
        }),
    }
}

/// Extracts a backup (all of it, or [`ExtractTarget::include`]) into a directory, with
/// the checks of [`restore_backup_with`](crate::restore_backup_with): nothing is placed
/// before gpg's status shows the stream was decrypted with the passphrase and passed its
/// integrity check, the inner manifest matches the id and the manifest, and every member
/// (in tar's listing and in the staged tree) is a plain file or dir under the
/// restorable paths; an extracted database passes `PRAGMA integrity_check` and loses its
/// one-time keys unless [`RestoreOptions::keep_one_time_keys`]. Set-id, sticky and
/// world-writable bits are stripped.
///
/// No live file, no service and no lock is touched (the bucket is not changed), and no
/// Synapse tree is needed: the member rules come from the workload's `homeserver.yaml`
/// when there is one, else from the layout the backup recorded. Every step runs in the
/// workload as the workload user; the work dir (staging) is made inside the target, so
/// placing the files is a rename.
///
/// # Errors
/// As [`verify_backup`](crate::verify_backup), plus [`BackupError::Config`] (field
/// `target`) for a target another user owns or may write to, [`BackupError::TargetNotEmpty`],
/// [`BackupError::NotInBackup`] for an include that names nothing in the archive,
/// [`BackupError::InsufficientSpace`], [`BackupError::SpaceReserve`], [`BackupError::NoSpaceLeft`],
/// [`BackupError::UnsafeMember`], [`BackupError::StageFailed`].
pub async fn extract_backup_with<C: Container + ?Sized>(
    container: &C,
    s3_parameters: &S3Parameters,
    passphrase: &str,
    id: &BackupId,
    layout: &Layout,
    target: &ExtractTarget,
    options: &RestoreOptions,
) -> Result<ExtractReport, BackupError> {
    let run =
        Run::new(container, s3_parameters, layout, passphrase)?.with_transfer(options.transfer);
    extract_with_run(&run, id, target, options).await
}

/// As [`extract_backup_with`], in the context `run` (its store takes every bucket request).
pub(crate) async fn extract_with_run<C: Container + ?Sized>(
    run: &Run<'_, C>,
    id: &BackupId,
    target: &ExtractTarget,
    options: &RestoreOptions,
) -> Result<ExtractReport, BackupError> {
    let (container, layout) = (run.container, run.layout);
    let started = Instant::now();
    let mut clock = PhaseClock::start();
    check_target(&target.dir)?;
    let mut fetched = fetch::locate_compact(&run.client, id).await?;
    let chain = chain_fetch::plan(run, id, &mut fetched).await?;
    // An include the manifest does not list is refused before the download (the
    // listing of the archive decides again after it). The manifest of a backup of a
    // chain lists its own pack only: the listing of every pack decides.
    if fetched.manifest.is_some() && !target.include.is_empty() && chain.is_none() {
        let listed = || fetched.entries().map(|(path, _, _)| path);
        restore_plan::select_includes(listed, &[], &target.include, |_| false).map_err(
            |reason| BackupError::NotInBackup {
                id: id.to_string(),
                reason,
            },
        )?;
    }
    let backup = Backup {
        id,
        fetched: &fetched,
        chain: chain.as_ref(),
    };
    let made = work::prepare_target(container, layout, &target.dir).await?;
    let result = extract_into(run, options, target, &backup, &mut clock).await;
    if result.is_err()
        && let Some(top) = &made
    {
        // A failed extraction leaves no empty dir of its own behind.
        work::unmake_target(container, layout, &target.dir, top).await;
    }
    let done = result?;
    tracing::info!(backup_id = %id, target = %target.dir, "backup extracted");
    let mut warnings = fetched.warnings;
    warnings.extend(done.warnings);
    Ok(ExtractReport {
        id: id.clone(),
        status: fetched.status,
        target: target.dir.clone(),
        extracted: done.placed,
        stripped_modes: done.stripped,
        one_time_keys_removed: done.one_time_keys_removed,
        ciphertext_bytes: fetched.size,
        warnings,
        duration: started.elapsed(),
        phases: clock.phases(),
    })
}

/// The work dir in the target, the extraction, and the work dir's removal.
async fn extract_into<C: Container + ?Sized>(
    run: &Run<'_, C>,
    options: &RestoreOptions,
    target: &ExtractTarget,
    backup: &Backup<'_>,
    clock: &mut PhaseClock,
) -> Result<Extracted, BackupError> {
    let settings = backup.download_settings(run, options).await;
    let work = match run
        .work_dir_in(WorkPlace::EmptyDir(&target.dir), "extract", &settings)
        .await
    {
        Err(BackupError::Container(e)) if Exit::of(&e) == Some(Exit::DirNotEmpty) => {
            return Err(BackupError::TargetNotEmpty {
                path: target.dir.clone(),
            });
        }
        other => other?,
    };
    clock.mark(Phase::Prepare);
    let result = extract_in(run, &work, options, target, backup, clock).await;
    work.finish().await;
    clock.mark(Phase::Cleanup);
    result
}

struct Extracted {
    placed: Vec<String>,
    stripped: Vec<String>,
    one_time_keys_removed: Option<u64>,
    warnings: Vec<String>,
}

/// Moves the `placed` members from staging into the target (`swap.sh place`).
async fn place_into<C: Container + ?Sized>(
    run: &Run<'_, C>,
    work: &WorkDir,
    target: &ExtractTarget,
    placed: &[String],
) -> Result<(), BackupError> {
    let (container, layout) = (run.container, run.layout);
    work::write_file(
        container,
        layout,
        work,
        WorkFile::PlaceList,
        plan::files_list(placed),
    )
    .await?;
    let place = restore_plan::place_call(layout, run.params, work, &target.dir);
    match container
        .exec(&place.argv, work::exec_options(layout, &place, work, None))
        .await
    {
        Ok(_) => Ok(()),
        Err(ContainerError::ExitedNonZero {
            exit_code, stderr, ..
        }) => Err(BackupError::StageFailed {
            stage: Stage::Extract,
            exit_code,
            stderr,
        }),
        Err(other) => Err(BackupError::StageFailed {
            stage: Stage::Extract,
            exit_code: -1,
            stderr: other.to_string(),
        }),
    }
}

async fn extract_in<C: Container + ?Sized>(
    run: &Run<'_, C>,
    guard: &WorkGuard<'_, '_, C>,
    options: &RestoreOptions,
    target: &ExtractTarget,
    backup: &Backup<'_>,
    clock: &mut PhaseClock,
) -> Result<Extracted, BackupError> {
    let (container, params, layout, work) = (run.container, run.params, run.layout, guard.dir());
    let (id, fetched) = (backup.id, backup.fetched);
    let call = fetch::extract_call(layout, params, work, fetched);
    let got = backup
        .read(run, work, call, options, chain_fetch::Read::Extract)
        .await?;
    clock.mark(Phase::Fetch);
    let rules = fetch::verify_rules(container, layout, fetched, got.inner.as_ref()).await?;
    let fetch::Staged { staged, units } = fetch::check_staged(run, work, id, &rules, &got).await?;
    let placed = restore_plan::select_includes(
        || got.archived().map(|m| m.name),
        &units,
        &target.include,
        |p| rules.is_db_sidecar(p),
    )
    .map_err(|reason| BackupError::NotInBackup {
        id: id.to_string(),
        reason,
    })?;
    let under = |path: &str| {
        placed
            .iter()
            .any(|p| path == p || path.starts_with(&format!("{p}/")))
    };
    let db = rules
        .database()
        .filter(|db| staged.units.contains(db) && under(db));
    let one_time_keys_removed = match &db {
        Some(db) => fetch::check_staged_db(run, work, id, db, options.keep_one_time_keys).await?,
        None => None,
    };
    clock.mark(Phase::Checks);
    place_into(run, work, target, &placed).await?;
    clock.mark(Phase::Swap);
    let stripped: Vec<String> = staged
        .stripped
        .iter()
        .filter(|(name, _)| under(name))
        .map(|(name, mode)| restore_plan::describe_stripped(name, *mode))
        .collect();
    let mut warnings = got.warnings;
    if !stripped.is_empty() {
        warnings.push(format!(
            "set-id, sticky and world-writable bits were stripped from {} extracted entries",
            stripped.len()
        ));
    }
    Ok(Extracted {
        placed,
        stripped,
        one_time_keys_removed,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_must_be_a_plain_absolute_path() {
        assert!(check_target("/srv/extracted").is_ok());
        for bad in ["relative", "/a/../b", "/a\0b", ""] {
            let e = check_target(bad).unwrap_err();
            assert_eq!(e.fields(), vec!["target"], "{bad:?}");
        }
    }
}

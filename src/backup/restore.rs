//! Verifying and restoring backups through a [`Container`].

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::backup::catalog::{BackupStatus, backup_status};
use crate::backup::layout::Layout;
use crate::backup::manifest::Manifest;
use crate::backup::plan::{self, BackupId, BackupOptions, MANIFEST_SUFFIX, ScriptCall, WorkDir};
use crate::backup::restore_plan::{self, ArchiveMember, RestoreRules, parse_members};
use crate::backup::scripts::{Exit, Pipeline};
use crate::backup::work;
use crate::container::Container;
use crate::error::{BackupError, ContainerError, S3Error, Stage};
use crate::s3::{S3Client, S3Parameters};

/// What [`verify_backup`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The backup id.
    pub id: BackupId,
    /// Complete (checked against its manifest) or legacy (gpg's check only).
    pub status: BackupStatus,
    /// Size of the encrypted object.
    pub ciphertext_bytes: u64,
    /// SHA-256 of the encrypted object.
    pub ciphertext_sha256: String,
    /// Number of archive members.
    pub members: usize,
    /// Things the operator should know.
    pub warnings: Vec<String>,
    /// Wall time.
    pub duration: Duration,
}

/// What [`restore_backup_with`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// The backup id.
    pub id: BackupId,
    /// Complete or legacy.
    pub status: BackupStatus,
    /// The top-level paths replaced (relative to the root).
    pub restored: Vec<String>,
    /// Live paths moved out because the archive does not carry them (`-wal`, `-shm`).
    pub dropped: Vec<String>,
    /// Size of the encrypted object.
    pub ciphertext_bytes: u64,
    /// Things the operator should know.
    pub warnings: Vec<String>,
    /// Wall time.
    pub duration: Duration,
}

/// Options for verify and restore.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Kill the download pipeline after this long.
    pub timeout: Option<Duration>,
    /// How a restore takes the backup lock (verify does not take it).
    pub lock: crate::backup::lock::LockOptions,
}

struct Fetched {
    status: BackupStatus,
    manifest: Option<Manifest>,
    key: String,
    size: u64,
    warnings: Vec<String>,
}

/// Finds the backup and its manifest; refuses incomplete ones.
async fn locate(client: &S3Client, id: &BackupId) -> Result<Fetched, BackupError> {
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
                .get_object(&format!("{key}{MANIFEST_SUFFIX}"))
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

/// Runs the fetch script and turns its outcome into the precise error: wrong
/// passphrase, corruption (checksum, truncation, gpg's integrity check), no space.
#[allow(clippy::too_many_arguments)]
async fn fetch<C: Container + ?Sized>(
    container: &C,
    layout: &Layout,
    work: &WorkDir,
    call: &ScriptCall,
    id: &BackupId,
    fetched: &Fetched,
    timeout: Option<Duration>,
    passphrase: &str,
) -> Result<Vec<ArchiveMember>, BackupError> {
    let outcome = container
        .exec(
            &call.argv,
            work::pipeline_options(layout, call, work, timeout, passphrase),
        )
        .await;
    let sha = work::read_text(container, layout, &work.file("sha256"))
        .await
        .and_then(|s| s.split_whitespace().next().map(str::to_string));
    let length: Option<u64> = work::read_text(container, layout, &work.file("length"))
        .await
        .and_then(|s| s.parse().ok());
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
    match outcome {
        Ok(_) => {}
        Err(ContainerError::ExitedNonZero {
            exit_code, stderr, ..
        }) => {
            let exit = Exit::from_code(exit_code);
            if exit == Exit::NoSpace {
                let available = work::read_text(container, layout, &work.file("avail"))
                    .await
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
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
            return Err(match stage {
                Stage::Gpg if stderr.contains("Bad session key") => {
                    BackupError::WrongPassphrase { id: id.to_string() }
                }
                Stage::Gpg => corrupted(format!("gpg could not decrypt it: {stderr}")),
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
    let listing = work::read_file(container, layout, &work.file("members")).await?;
    let members = parse_members(&listing).map_err(|e| corrupted(e.to_string()))?;
    if let Some(m) = &fetched.manifest {
        let names: BTreeSet<&[u8]> = members.iter().map(|a| a.name.as_slice()).collect();
        if let Some(missing) = m.files.iter().find(|f| !names.contains(f.path.as_bytes())) {
            return Err(corrupted(format!(
                "the archive lacks {:?}, which its manifest lists",
                String::from_utf8_lossy(missing.path.as_bytes())
            )));
        }
    }
    Ok(members)
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
/// # Errors
/// As [`verify_backup`].
pub async fn verify_backup_with<C: Container + ?Sized>(
    container: &C,
    s3_parameters: &S3Parameters,
    passphrase: &str,
    id: &BackupId,
    layout: &Layout,
    options: &RestoreOptions,
) -> Result<VerifyReport, BackupError> {
    let started = Instant::now();
    plan::check_passphrase(passphrase)?;
    layout.validate()?;
    let client = S3Client::new(s3_parameters)?;
    let fetched = locate(&client, id).await?;
    let work = work::make_work_dir(container, layout, "verify").await?;
    let call = restore_plan::list_call(layout, s3_parameters, &work, &fetched.key);
    let result = match work::fill_work_dir(
        container,
        s3_parameters,
        layout,
        &work,
        &BackupOptions::default(),
    )
    .await
    {
        Ok(()) => {
            fetch(
                container,
                layout,
                &work,
                &call,
                id,
                &fetched,
                options.timeout,
                passphrase,
            )
            .await
        }
        Err(e) => Err(e),
    };
    let sha = work::read_text(container, layout, &work.file("sha256"))
        .await
        .and_then(|s| s.split_whitespace().next().map(str::to_string));
    work::remove_work_dir(container, layout, &work).await;
    let members = result?;
    tracing::info!(backup_id = %id, members = members.len(), "backup verified");
    Ok(VerifyReport {
        id: id.clone(),
        status: fetched.status,
        ciphertext_bytes: fetched.size,
        ciphertext_sha256: sha.unwrap_or_default(),
        members: members.len(),
        warnings: fetched.warnings,
        duration: started.elapsed(),
    })
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

/// Restores a backup safely: download, decrypt and extract into a staging dir beside
/// the data; only when gpg's integrity check passed, the manifest matches and every
/// member is a plain file or dir under the restorable paths, stop the service, move
/// the live paths aside, move the staged ones in, start the service, and drop the
/// set-aside copies. Any failure before the swap leaves live data untouched; a failure
/// during the swap, or a service that does not start again, rolls the swap back. A
/// service that was running before is running after.
///
/// Holds the backup lock ([`RestoreOptions::lock`], see [`crate::BackupLock`]) for the
/// whole run: refreshed while it runs, released at the end and on every failure.
///
/// # Errors
/// As [`verify_backup`], plus [`BackupError::LockHeld`] /
/// [`BackupError::LockUnsupported`] from the lock, [`BackupError::InsufficientSpace`],
/// [`BackupError::UnsafeMember`], [`BackupError::StageFailed`] with
/// [`Stage::Swap`] or [`Stage::Service`].
pub async fn restore_backup_with<C: Container + ?Sized>(
    container: &C,
    s3_parameters: &S3Parameters,
    passphrase: &str,
    id: &BackupId,
    layout: &Layout,
    options: &RestoreOptions,
) -> Result<RestoreReport, BackupError> {
    plan::check_passphrase(passphrase)?;
    layout.validate()?;
    let client = S3Client::new(s3_parameters)?;
    let owner = crate::backup::lock::LockOwner::current("restore");
    let lock = crate::BackupLock::acquire(&client, &owner, &options.lock).await?;
    let result = restore_locked(container, s3_parameters, passphrase, id, layout, options).await;
    lock.finish().await;
    result
}

async fn restore_locked<C: Container + ?Sized>(
    container: &C,
    s3_parameters: &S3Parameters,
    passphrase: &str,
    id: &BackupId,
    layout: &Layout,
    options: &RestoreOptions,
) -> Result<RestoreReport, BackupError> {
    let started = Instant::now();
    plan::check_passphrase(passphrase)?;
    layout.validate()?;
    let client = S3Client::new(s3_parameters)?;
    let config = work::read_homeserver_config(container, layout).await?;
    let rules = RestoreRules::new(layout, &config);
    let fetched = locate(&client, id).await?;
    let need = 2 * fetched
        .manifest
        .as_ref()
        .map_or(fetched.size, |m| m.plaintext_bytes.max(fetched.size));
    let work = work::make_work_dir(container, layout, "restore").await?;
    let result = match work::fill_work_dir(
        container,
        s3_parameters,
        layout,
        &work,
        &BackupOptions::default(),
    )
    .await
    {
        Ok(()) => {
            restore_in(
                container,
                s3_parameters,
                layout,
                options,
                &rules,
                id,
                &fetched,
                &work,
                need,
                passphrase,
            )
            .await
        }
        Err(e) => Err((e, false)),
    };
    match result {
        Ok((restored, dropped)) => {
            work::remove_work_dir(container, layout, &work).await;
            tracing::info!(backup_id = %id, "backup restored");
            Ok(RestoreReport {
                id: id.clone(),
                status: fetched.status,
                restored,
                dropped,
                ciphertext_bytes: fetched.size,
                warnings: fetched.warnings,
                duration: started.elapsed(),
            })
        }
        Err((e, keep_work)) => {
            if keep_work {
                tracing::error!(dir = %work.dir, "the rollback failed: the set-aside live files are kept there");
            } else {
                work::remove_work_dir(container, layout, &work).await;
            }
            Err(e)
        }
    }
}

type RestoreResult = Result<(Vec<String>, Vec<String>), (BackupError, bool)>;

#[allow(clippy::too_many_arguments)]
async fn restore_in<C: Container + ?Sized>(
    container: &C,
    params: &S3Parameters,
    layout: &Layout,
    options: &RestoreOptions,
    rules: &RestoreRules,
    id: &BackupId,
    fetched: &Fetched,
    work: &WorkDir,
    need: u64,
    passphrase: &str,
) -> RestoreResult {
    let call = restore_plan::extract_call(layout, params, work, &fetched.key, need);
    let members = fetch(
        container,
        layout,
        work,
        &call,
        id,
        fetched,
        options.timeout,
        passphrase,
    )
    .await
    .map_err(|e| (e, false))?;
    // The inner manifest (the stream's first member) describes the backup: never restored.
    let members: Vec<ArchiveMember> = members
        .into_iter()
        .filter(|m| m.name != crate::backup::manifest::INNER_MANIFEST_MEMBER.as_bytes())
        .collect();
    let units = rules
        .check(&members)
        .map_err(|(member, reason)| (BackupError::UnsafeMember { member, reason }, false))?;
    if units.is_empty() {
        return Err((
            BackupError::Corrupted {
                id: id.to_string(),
                reason: "the archive holds nothing to restore".into(),
            },
            false,
        ));
    }
    let drops = rules.drops(&units);
    let units: Vec<String> = units.into_iter().collect();
    for (name, list) in [("swap.list", &units), ("drop.list", &drops)] {
        work::write_file(container, layout, work, name, &plan::files_list(list))
            .await
            .map_err(|e| (e.into(), false))?;
    }

    let service = layout.service.clone();
    let was_running = match &service {
        Some(s) => container
            .is_running(s)
            .await
            .map_err(|e| (e.into(), false))?,
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
        return Err((
            BackupError::StageFailed {
                stage: Stage::Service,
                exit_code: -1,
                stderr: format!("could not stop {}: {e}", svc[0]),
            },
            false,
        ));
    }
    let swap = restore_plan::swap_call(layout, params, work, false);
    let swapped = container
        .exec(&swap.argv, work::exec_options(layout, &swap, work, None))
        .await;
    if let Err(e) = swapped {
        let keep = matches!(&e, ContainerError::ExitedNonZero { exit_code, .. }
            if Exit::from_code(*exit_code) == Exit::SwapUndoFailed);
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
        return Err((
            BackupError::StageFailed {
                stage: Stage::Swap,
                exit_code,
                stderr,
            },
            keep,
        ));
    }
    if let Some(svc) = &running
        && let Err(e) = container.start(svc).await
    {
        let s = &svc[0];
        tracing::error!(service = %s, error = %e, "the service did not start on the restored data: rolling back");
        let back = restore_plan::swap_call(layout, params, work, true);
        let rolled = container
            .exec(&back.argv, work::exec_options(layout, &back, work, None))
            .await;
        let restarted = container.start(svc).await;
        let keep = rolled.is_err();
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
        return Err((
            BackupError::StageFailed {
                stage: Stage::Service,
                exit_code: -1,
                stderr: message,
            },
            keep,
        ));
    }
    Ok((units, drops))
}

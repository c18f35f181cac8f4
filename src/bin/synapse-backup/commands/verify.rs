//! `verify`: download and decrypt a backup (or `--all` of them) and check it against its
//! manifest, touching no live data.

use std::collections::BTreeMap;

use futures_util::{StreamExt, stream};
use serde::Serialize;
use synapse_backup::{
    BackupError, BackupId, BackupInfo, BackupStatus, Layout, VerifyReport, list_backups,
    verify_backup_with,
};

use crate::cli::{GlobalArgs, IdArg};
use crate::config::Passphrase;
use crate::failure::{Failure, Kind};
use crate::interrupt;
use crate::output::{self, emit, emit_json};
use crate::target::{Target, container, passphrase, restore_options};
use crate::workload::reader_layout;

/// `verify --json`: the library's report, with what the command line adds.
#[derive(Serialize)]
struct Verified<'a> {
    #[serde(flatten)]
    report: &'a VerifyReport,
    /// Whether the archive was checked against a manifest (complete backups).
    manifest_checked: bool,
    duration_seconds: f64,
}

impl<'a> Verified<'a> {
    fn new(report: &'a VerifyReport) -> Self {
        Verified {
            report,
            manifest_checked: report.status == BackupStatus::Complete,
            duration_seconds: report.duration.as_secs_f64(),
        }
    }
}

/// One backup in `verify --all --json`.
#[derive(Serialize)]
#[serde(untagged)]
enum Outcome<'a> {
    /// Verified: the report, and `"result": "ok"`.
    Ok {
        #[serde(flatten)]
        verified: Verified<'a>,
        result: &'static str,
    },
    /// Failed or skipped, and why.
    NotOk {
        id: &'a BackupId,
        status: BackupStatus,
        /// `failed` or `skipped`.
        result: &'static str,
        /// The failure's kind, as a `--json` error names it.
        #[serde(skip_serializing_if = "Option::is_none")]
        kind: Option<&'static str>,
        reason: String,
    },
}

/// Why `verify --all` skips an incomplete backup.
const SKIPPED: &str = "incomplete (no manifest or no data: a failed, interrupted or \
                       running create), not restorable; prune removes leftovers";

/// Verifies one backup; an interruption is a failure of its own.
async fn verify_one(
    global: &GlobalArgs,
    target: &Target,
    layout: &Layout,
    passphrase: &Passphrase,
    id: &BackupId,
    temp_work_dir: bool,
) -> Result<Result<VerifyReport, BackupError>, Failure> {
    let container = container(global, layout);
    let view = output::ProgressView::new(format!("verifying {id}"));
    let options = restore_options(global)
        .temp_work_dir(temp_work_dir)
        .progress(Some(view.callback()));
    let run = view
        .run(interrupt::cancellable_in_workload(
            verify_backup_with(
                &*container,
                &target.params,
                passphrase.expose(),
                id,
                layout,
                &options,
            ),
            &*container,
            layout,
        ))
        .await;
    run.map_err(|(signal, cleaned)| {
        Failure::new(
            Kind::Interrupted(signal),
            format!("interrupted: the verification was stopped ({cleaned})"),
        )
    })
}

/// `verify ID`.
pub(crate) async fn verify(
    global: &GlobalArgs,
    id: &IdArg,
    temp_work_dir: bool,
) -> Result<(), Failure> {
    let target = Target::load(global)?;
    let passphrase = passphrase(global)?;
    let layout = reader_layout(global).await?;
    target.check_bucket().await?;
    let id = &target.resolve(id).await?;
    let report = verify_one(global, &target, &layout, &passphrase, id, temp_work_dir)
        .await?
        .map_err(|e| target.failure(e, false))?;
    for warning in &report.warnings {
        output::warn(warning);
    }
    if global.json {
        emit_json(&Verified::new(&report));
        return Ok(());
    }
    let checked = match report.status {
        BackupStatus::Complete => "decrypted and matches its manifest",
        _ => "decrypted (no manifest: integrity checked by gpg only)",
    };
    emit(&format!(
        "ok: {id} ({}) {checked}: {} archive members, {} encrypted, sha256 {}, in {} ({})\n",
        report.status,
        report.members,
        output::size(report.ciphertext_bytes),
        report.ciphertext_sha256,
        output::seconds(report.duration),
        output::rate(report.ciphertext_bytes, report.duration),
    ));
    Ok(())
}

/// How `verify --all` went, backup by backup.
#[derive(Default)]
struct Tally {
    ok: usize,
    failed: usize,
    skipped: usize,
}

/// `verify --all`: every backup, newest first, one line (or JSON entry) each; `jobs`
/// of them verified at once, their results printed in the listing's order.
pub(crate) async fn verify_all(
    global: &GlobalArgs,
    temp_work_dir: bool,
    jobs: usize,
) -> Result<(), Failure> {
    let target = Target::load(global)?;
    let passphrase = passphrase(global)?;
    let layout = reader_layout(global).await?;
    target.check_bucket().await?;
    let backups = list_backups(&target.client)
        .await
        .map_err(|e| target.failure(e, true))?;
    let (target, layout, passphrase) = (&target, &layout, &passphrase);
    // The next verify starts as soon as any one ends (a large backup does not hold
    // back the small ones behind it); the results wait in `ready` for their turn.
    let mut verified = stream::iter(backups.iter().enumerate())
        .map(|(i, backup)| async move {
            if backup.status == BackupStatus::Incomplete {
                return (i, Ok(None));
            }
            let result = verify_one(
                global,
                target,
                layout,
                passphrase,
                &backup.id,
                temp_work_dir,
            )
            .await
            .map(|r| Some(r.map_err(|e| target.failure(e, false))));
            (i, result)
        })
        .buffer_unordered(jobs.max(1));
    let mut tally = Tally::default();
    let mut results = Vec::with_capacity(backups.len());
    let mut ready = BTreeMap::new();
    for (i, backup) in backups.iter().enumerate() {
        while !ready.contains_key(&i) {
            let Some((done, result)) = verified.next().await else {
                break;
            };
            ready.insert(done, result);
        }
        let result = ready.remove(&i).transpose()?.flatten();
        match &result {
            None => tally.skipped += 1,
            Some(Ok(_)) => tally.ok += 1,
            Some(Err(_)) => tally.failed += 1,
        }
        if !global.json {
            emit(&line(backup, result.as_ref()));
        }
        results.push(result);
    }
    drop(verified);
    if global.json {
        let outcomes: Vec<Outcome<'_>> = backups
            .iter()
            .zip(&results)
            .map(|(backup, result)| outcome(backup, result.as_ref()))
            .collect();
        emit_json(&outcomes);
    } else if backups.is_empty() {
        emit(&format!("no backups in {}\n", target.describe()));
    }
    finish(&tally)
}

/// A backup's line in `verify --all`, after the warnings of its report; `result` is
/// `None` for a skipped backup.
fn line(backup: &BackupInfo, result: Option<&Result<VerifyReport, Failure>>) -> String {
    let id = &backup.id;
    match result {
        Some(Ok(report)) => {
            for warning in &report.warnings {
                output::warn(&format!("{id}: {warning}"));
            }
            format!(
                "{id} ok ({}): {} archive members, {} encrypted\n",
                report.status,
                report.members,
                output::size(report.ciphertext_bytes)
            )
        }
        Some(Err(failure)) => format!("{id} FAILED: {}\n", failure.message),
        None => format!("{id} skipped: {SKIPPED}\n"),
    }
}

/// A backup's entry in `verify --all --json`.
fn outcome<'a>(
    backup: &'a BackupInfo,
    result: Option<&'a Result<VerifyReport, Failure>>,
) -> Outcome<'a> {
    match result {
        Some(Ok(report)) => Outcome::Ok {
            verified: Verified::new(report),
            result: "ok",
        },
        Some(Err(failure)) => Outcome::NotOk {
            id: &backup.id,
            status: backup.status,
            result: "failed",
            kind: Some(failure.kind_name()),
            reason: failure.message.clone(),
        },
        None => Outcome::NotOk {
            id: &backup.id,
            status: backup.status,
            result: "skipped",
            kind: None,
            reason: SKIPPED.to_string(),
        },
    }
}

/// The end of `verify --all`: exit 1 when any failed (its output already says which).
fn finish(tally: &Tally) -> Result<(), Failure> {
    let Tally {
        ok,
        failed,
        skipped,
    } = tally;
    let counts = format!("{ok} ok, {failed} failed, {skipped} skipped");
    if *failed > 0 {
        return Err(Failure::new(
            Kind::Reported,
            format!(
                "{failed} of {} backup(s) failed verification ({counts})",
                ok + failed
            ),
        ));
    }
    output::info(&format!("verified {} backup(s): {counts}", ok + failed));
    Ok(())
}

//! `prune`: old backups and the leftovers of failed creates.

use std::path::PathBuf;

use serde::Serialize;
use synapse_backup::{BackupInfo, BackupStatus, PruneReport, RetentionPolicy, prune_backups_with};

use crate::cli::GlobalArgs;
use crate::failure::{Failure, Kind};
use crate::interrupt;
use crate::output::{self, emit, emit_json};
use crate::target::{Target, lock_options};

/// `prune --json`: the library's report (with its plan: every backup, keep or delete,
/// and why), and the plan's warnings at the top as before.
#[derive(Serialize)]
struct Pruned<'a> {
    #[serde(flatten)]
    report: &'a PruneReport,
    warnings: &'a [String],
}

/// Where the age limit of a prune comes from, to name it in the reasons.
enum AgeSource {
    Flag,
    File(PathBuf),
}

/// Why a prune deletes `backup`, as the policy says.
fn prune_reason(backup: &BackupInfo, policy: &RetentionPolicy, age: &AgeSource) -> String {
    if backup.status == BackupStatus::Incomplete {
        return "incomplete (no manifest or no data: a failed or interrupted create), not restorable"
            .into();
    }
    match (policy.older_than_days, policy.keep_last) {
        (Some(days), keep) => {
            let source = match age {
                AgeSource::Flag => format!("--older-than-days {days}"),
                AgeSource::File(file) => {
                    format!("delete-older-than-days: {days} in {}", file.display())
                }
            };
            let beyond = keep.map_or(String::new(), |n| {
                format!(" and not among the {n} newest kept by --keep-at-least {n}")
            });
            format!(
                "stored {} (the server's time), older than {days} days ({source}){beyond}",
                output::rfc3339(backup.last_modified)
            )
        }
        (None, Some(n)) => {
            format!("not among the {n} newest restorable backups kept by --keep-at-least {n}")
        }
        (None, None) => "the retention policy".into(),
    }
}

/// `prune`: deletes (or with `--dry-run` lists) what the retention policy lets go.
pub(crate) async fn prune(
    global: &GlobalArgs,
    keep_at_least: Option<u64>,
    older_than_days: Option<u32>,
    dry_run: bool,
) -> Result<(), Failure> {
    let target = Target::load(global)?;
    let mut policy = RetentionPolicy::from_parameters(&target.params);
    let age = if older_than_days.is_some() {
        policy.older_than_days = older_than_days;
        AgeSource::Flag
    } else {
        AgeSource::File(target.s3_file.clone())
    };
    if let Some(n) = keep_at_least {
        policy.keep_last = Some(usize::try_from(n).unwrap_or(usize::MAX));
    }
    policy.dry_run = dry_run;
    target.check_bucket().await?;
    if policy.older_than_days.is_none() && policy.keep_last.is_none() {
        output::info(&format!(
            "note: no retention set (--older-than-days, --keep-at-least, or delete-older-than-days in {}): only incomplete leftovers are removed",
            target.s3_file.display()
        ));
    }
    let lock = lock_options(global);
    let report = output::with_spinner(
        format!("pruning {}", target.describe()),
        interrupt::cancellable(prune_backups_with(&target.client, &policy, &lock)),
    )
    .await
    .map_err(|signal| {
        Failure::new(
            Kind::Interrupted(signal),
            "interrupted: the prune was stopped",
        )
    })?
    .map_err(|e| target.failure(e, true))?;
    if global.json {
        emit_json(&Pruned {
            report: &report,
            warnings: &report.plan.warnings,
        });
        return Ok(());
    }
    for warning in &report.plan.warnings {
        output::warn(warning);
    }
    emit(&pruned_text(&report, &policy, &age));
    Ok(())
}

/// The report of a prune, for a person: each backup deleted and why, the ones kept
/// whatever the policy, and the counts.
fn pruned_text(report: &PruneReport, policy: &RetentionPolicy, age: &AgeSource) -> String {
    let dry_run = report.dry_run;
    let verb = if dry_run { "would delete" } else { "deleted" };
    let mut text = String::new();
    for b in &report.deleted {
        text.push_str(&format!(
            "{verb} {} ({}, {}, {}): {}\n",
            b.id,
            b.status,
            output::size(b.size),
            output::rfc3339(b.last_modified),
            prune_reason(b, policy, age),
        ));
    }
    for id in &report.protected {
        text.push_str(&format!(
            "kept {id}: the newest restorable backup is never deleted, whatever the policy\n"
        ));
    }
    if let Some(holder) = &report.create_running {
        text.push_str(&format!(
            "incomplete backups and uploads left alone: the lock is held by {holder}\n"
        ));
    }
    let n = report.deleted.len();
    let uploads = report.aborted_uploads;
    let kept = report.kept.len();
    if dry_run {
        text.push_str(&format!(
            "dry run: would delete {n} backup(s) and abort {uploads} stale upload(s); {kept} kept\n"
        ));
    } else {
        text.push_str(&format!(
            "deleted {n} backup(s), aborted {uploads} stale upload(s); {kept} kept\n"
        ));
    }
    text
}

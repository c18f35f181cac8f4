//! `verify`: download and decrypt a backup (or `--all` of them) and check it against its manifest, touching no live data.

use serde_json::json;
use synapse_backup::{
    BackupError, BackupId, BackupStatus, Layout, RestoreOptions, VerifyReport, list_backups,
    verify_backup_with,
};

use crate::cli::{GlobalArgs, IdArg};
use crate::config::Passphrase;
use crate::failure::{Failure, Kind};
use crate::interrupt;
use crate::output::{self, emit, emit_json};
use crate::target::{Target, container, passphrase};
use crate::workload::reader_layout;

/// Verifies one backup; an interruption is a failure of its own.
pub(crate) async fn verify_one(
    global: &GlobalArgs,
    target: &Target,
    layout: &Layout,
    passphrase: &Passphrase,
    id: &BackupId,
    temp_work_dir: bool,
) -> Result<Result<VerifyReport, BackupError>, Failure> {
    let container = container(global, layout);
    let view = output::ProgressView::new(format!("verifying {id}"), global.json);
    let options = RestoreOptions::default()
        .max_bandwidth_mib(global.limit_download)
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
        emit_json(&json!({
            "id": id.as_str(),
            "status": report.status,
            "manifest_checked": report.status == BackupStatus::Complete,
            "members": report.members,
            "ciphertext_bytes": report.ciphertext_bytes,
            "ciphertext_sha256": report.ciphertext_sha256,
            "duration_seconds": report.duration.as_secs_f64(),
            "warnings": report.warnings,
        }));
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

pub(crate) async fn verify_all(global: &GlobalArgs, temp_work_dir: bool) -> Result<(), Failure> {
    let target = Target::load(global)?;
    let passphrase = passphrase(global)?;
    let layout = reader_layout(global).await?;
    target.check_bucket().await?;
    let backups = list_backups(&target.client)
        .await
        .map_err(|e| target.failure(e, true))?;
    let mut results = Vec::with_capacity(backups.len());
    let (mut ok, mut failed, mut skipped) = (0usize, 0usize, 0usize);
    for backup in &backups {
        let id = &backup.id;
        let (line, value) = if backup.status == BackupStatus::Incomplete {
            skipped += 1;
            let reason = "incomplete (no manifest or no data: a failed, interrupted or \
                          running create), not restorable; prune removes leftovers";
            (
                format!("{id} skipped: {reason}\n"),
                json!({ "id": id.as_str(), "status": backup.status, "result": "skipped", "reason": reason }),
            )
        } else {
            match verify_one(global, &target, &layout, &passphrase, id, temp_work_dir).await? {
                Ok(report) => {
                    ok += 1;
                    for warning in &report.warnings {
                        output::warn(&format!("{id}: {warning}"));
                    }
                    (
                        format!(
                            "{id} ok ({}): {} archive members, {} encrypted\n",
                            report.status,
                            report.members,
                            output::size(report.ciphertext_bytes)
                        ),
                        json!({
                            "id": id.as_str(),
                            "status": report.status,
                            "result": "ok",
                            "members": report.members,
                            "ciphertext_bytes": report.ciphertext_bytes,
                            "ciphertext_sha256": report.ciphertext_sha256,
                            "duration_seconds": report.duration.as_secs_f64(),
                            "warnings": report.warnings,
                        }),
                    )
                }
                Err(e) => {
                    failed += 1;
                    let failure = target.failure(e, false);
                    (
                        format!("{id} FAILED: {}\n", failure.message),
                        json!({
                            "id": id.as_str(),
                            "status": backup.status,
                            "result": "failed",
                            "kind": failure.kind_name(),
                            "reason": failure.message,
                        }),
                    )
                }
            }
        };
        if !global.json {
            emit(&line);
        }
        results.push(value);
    }
    if global.json {
        emit_json(&serde_json::Value::Array(results));
    } else if backups.is_empty() {
        emit(&format!("no backups in {}\n", target.describe()));
    }
    let counts = format!("{ok} ok, {failed} failed, {skipped} skipped");
    if failed > 0 {
        return Err(Failure::new(
            Kind::Reported,
            format!(
                "{failed} of {} backup(s) failed verification ({counts})",
                ok + failed
            ),
        ));
    }
    eprintln!("verified {} backup(s): {counts}", ok + failed);
    Ok(())
}

//! `restore`: a backup over the live data, or with `--target` into a directory.

use std::io::{self, IsTerminal};
use std::path::Path;

use serde::Serialize;
use synapse_backup::{
    BackupError, BackupId, BackupStatus, ExtractReport, ExtractTarget, Layout, RestoreReport,
    backup_status, extract_backup_with, restore_backup_with,
};

use crate::cli::{GlobalArgs, IdArg};
use crate::failure::{Failure, Kind};
use crate::interrupt;
use crate::output::{self, confirm, emit, emit_json};
use crate::target::{Target, container, lock_options, passphrase, restore_options};
use crate::workload::{pipeline_layout, reader_layout};

/// What an in-place restore without `--service` says, in its prompt and its report.
const NO_SERVICE: &str = "no service was stopped (no --service): if Synapse is running, \
                          it still has the replaced database open; restart it now";

/// `restore --json`: the library's report, with what the command line adds.
#[derive(Serialize)]
struct Restored<'a> {
    #[serde(flatten)]
    report: &'a RestoreReport,
    /// The root the live data was restored under.
    root: &'a str,
    /// The service stopped and started around the swap (`--service`), if any.
    service: Option<&'a str>,
    /// `--keep-one-time-keys`.
    one_time_keys_kept: bool,
    duration_seconds: f64,
}

/// `restore --target --json`: the library's report, with what the command line adds.
#[derive(Serialize)]
struct Extracted<'a> {
    #[serde(flatten)]
    report: &'a ExtractReport,
    /// `--keep-one-time-keys`.
    one_time_keys_kept: bool,
    duration_seconds: f64,
}

/// `restore ID`: the backup over the live data, after confirmation.
pub(crate) async fn restore(
    global: &GlobalArgs,
    id: &IdArg,
    yes: bool,
    keep_one_time_keys: bool,
) -> Result<(), Failure> {
    let target = Target::load(global)?;
    let passphrase = passphrase(global)?;
    let layout = pipeline_layout(global).await?;
    let can_ask = io::stdin().is_terminal() && io::stderr().is_terminal();
    if !yes && !can_ask {
        return Err(Failure::usage(format!(
            "restore replaces the live data under {}; pass --yes to confirm (there is no terminal to ask on)",
            layout.root
        )));
    }
    target.check_bucket().await?;
    let id = &target.resolve(id).await?;
    if !yes {
        ask(&target, &layout, id).await?;
    }
    let container = container(global, &layout);
    let view = output::ProgressView::new(format!("restoring {id} into {}", layout.root));
    let options = restore_options(global)
        .lock(lock_options(global))
        .keep_one_time_keys(keep_one_time_keys)
        .progress(Some(view.callback()));
    let report = interrupt::shielded(
        view.run(restore_backup_with(
            &*container,
            &target.params,
            passphrase.expose(),
            id,
            &layout,
            &options,
        )),
        "a restore",
    )
    .await
    .map_err(|e| target.failure(e, false))?;
    for warning in &report.warnings {
        output::warn(warning);
    }
    if global.json {
        emit_json(&Restored {
            report: &report,
            root: &layout.root,
            service: layout.service.as_deref(),
            one_time_keys_kept: keep_one_time_keys,
            duration_seconds: report.duration.as_secs_f64(),
        });
    } else {
        emit(&restored_text(&report, &layout, keep_one_time_keys));
    }
    if global.json && layout.service.is_none() {
        // Standard output is the JSON: the operator still reads this on stderr.
        output::warn(NO_SERVICE);
    }
    Ok(())
}

/// Asks before the live data is replaced, once the backup is known to be restorable.
async fn ask(target: &Target, layout: &Layout, id: &BackupId) -> Result<(), Failure> {
    match backup_status(&target.client, id)
        .await
        .map_err(|e| target.failure(e, false))?
    {
        None => return Err(BackupError::NotFound { id: id.to_string() }.into()),
        Some(BackupStatus::Incomplete) => {
            return Err(Failure::failed(format!(
                "backup {id} is incomplete (no manifest or no data) and cannot be restored"
            )));
        }
        Some(_) => {}
    }
    let service = match &layout.service {
        Some(s) => format!("The service {s} is stopped and started around the swap."),
        None => "No service is stopped (no --service): stop Synapse first, or pass \
                 --service NAME; a running Synapse keeps the replaced database open."
            .to_string(),
    };
    let question = format!(
        "Restore {id} from {} over the live data under {}?\n\
         The signing keys, the database and the local media are replaced once the backup \
         has been downloaded and checked. {service}\nType yes to continue: ",
        target.describe(),
        layout.root
    );
    if confirm(&question) {
        Ok(())
    } else {
        Err(Failure::new(
            Kind::Declined,
            "restore cancelled at the prompt; nothing was changed",
        ))
    }
}

/// The report of an in-place restore, for a person.
fn restored_text(report: &RestoreReport, layout: &Layout, keep_one_time_keys: bool) -> String {
    let mut text = format!(
        "restored {} ({}) into {}: {} encrypted, in {} ({})\n",
        report.id,
        report.status,
        layout.root,
        output::size(report.ciphertext_bytes),
        output::seconds(report.duration),
        output::rate(report.ciphertext_bytes, report.duration),
    );
    text.push_str(&format!("  time: {}\n", report.phases));
    for path in &report.restored {
        text.push_str(&format!("  replaced {path}\n"));
    }
    for path in &report.dropped {
        text.push_str(&format!(
            "  removed {path} (a sidecar of the replaced database)\n"
        ));
    }
    push_modes_and_keys(
        &mut text,
        &report.stripped_modes,
        report.one_time_keys_removed,
        "restored",
    );
    if report.one_time_keys_removed.is_none() && keep_one_time_keys {
        text.push_str("  one-time keys kept (--keep-one-time-keys)\n");
    }
    match &layout.service {
        Some(service) => {
            text.push_str(&format!("  stopped and started the service {service}\n"));
        }
        None => text.push_str(&format!("  {NO_SERVICE}\n")),
    }
    text
}

/// The report lines restore and extract share: the entries whose modes were stripped,
/// and the one-time keys removed from the `done` (restored, extracted) database.
fn push_modes_and_keys(text: &mut String, stripped: &[String], removed: Option<u64>, done: &str) {
    for entry in stripped {
        text.push_str(&format!(
            "  stripped set-id, sticky and world-writable bits: {entry}\n"
        ));
    }
    if let Some(n) = removed {
        text.push_str(&format!(
            "  removed {n} one-time key{} from the {done} database (--keep-one-time-keys keeps them)\n",
            if n == 1 { "" } else { "s" }
        ));
    }
}

/// `restore ID --target DIR`: the backup extracted into a directory, nothing live
/// touched.
pub(crate) async fn extract(
    global: &GlobalArgs,
    id: &IdArg,
    dir: &Path,
    include: Vec<String>,
    keep_one_time_keys: bool,
) -> Result<(), Failure> {
    let target = Target::load(global)?;
    let passphrase = passphrase(global)?;
    let layout = reader_layout(global).await?;
    let dir = std::path::absolute(dir)
        .map_err(|e| Failure::usage(format!("--target {}: {e}", dir.display())))?;
    let dir = dir
        .to_str()
        .ok_or_else(|| Failure::usage(format!("--target {}: must be valid UTF-8", dir.display())))?
        .to_string();
    target.check_bucket().await?;
    let id = &target.resolve(id).await?;
    let container = container(global, &layout);
    let mut into = ExtractTarget::new(dir.clone());
    for path in include {
        into = into.include(path);
    }
    let view = output::ProgressView::new(format!("extracting {id} into {dir}"));
    let options = restore_options(global)
        .keep_one_time_keys(keep_one_time_keys)
        .progress(Some(view.callback()));
    let report = interrupt::shielded(
        view.run(extract_backup_with(
            &*container,
            &target.params,
            passphrase.expose(),
            id,
            &layout,
            &into,
            &options,
        )),
        "an extraction",
    )
    .await
    .map_err(|e| target.failure(e, false))?;
    for warning in &report.warnings {
        output::warn(warning);
    }
    if global.json {
        emit_json(&Extracted {
            report: &report,
            one_time_keys_kept: keep_one_time_keys,
            duration_seconds: report.duration.as_secs_f64(),
        });
    } else {
        emit(&extracted_text(&report));
    }
    Ok(())
}

/// The report of an extraction, for a person.
fn extracted_text(report: &ExtractReport) -> String {
    let mut text = format!(
        "extracted {} ({}) into {}: {} encrypted, in {} ({})\n",
        report.id,
        report.status,
        report.target,
        output::size(report.ciphertext_bytes),
        output::seconds(report.duration),
        output::rate(report.ciphertext_bytes, report.duration),
    );
    text.push_str(&format!("  time: {}\n", report.phases));
    for path in &report.extracted {
        text.push_str(&format!("  extracted {path}\n"));
    }
    push_modes_and_keys(
        &mut text,
        &report.stripped_modes,
        report.one_time_keys_removed,
        "extracted",
    );
    text
}

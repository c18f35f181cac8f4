//! `create`: a new backup, its id alone on stdout.

use serde::Serialize;
use synapse_backup::{
    BackupError, BackupKind, BackupOptions, BackupReport, CancelToken, Compression,
    create_backup_with,
};

use crate::cli::GlobalArgs;
use crate::failure::{Failure, Kind};
use crate::interrupt;
use crate::output::{self, emit, emit_json};
use crate::target::{Target, container, lock_options, passphrase};
use crate::workload::pipeline_layout;

/// `create --json`: the library's report, with the manifest's totals and warnings at
/// the top as before.
#[derive(Serialize)]
struct Created<'a> {
    #[serde(flatten)]
    report: &'a BackupReport,
    plaintext_bytes: u64,
    ciphertext_bytes: u64,
    duration_seconds: f64,
    warnings: &'a [String],
}

/// `create`'s own flags.
pub(crate) struct CreateFlags {
    /// `--snapshot-timeout` (`None` for no limit).
    pub(crate) snapshot_timeout: Option<u64>,
    /// `--new-passphrase`.
    pub(crate) new_passphrase: bool,
    /// `--incremental`.
    pub(crate) incremental: bool,
    /// `--compression`.
    pub(crate) compression: Compression,
}

/// `create`: backs up, stopping cleanly (nothing kept) on `SIGINT`, `SIGTERM` or
/// `SIGHUP`.
pub(crate) async fn create(global: &GlobalArgs, flags: &CreateFlags) -> Result<(), Failure> {
    let target = Target::load(global)?;
    let passphrase = passphrase(global)?;
    let layout = pipeline_layout(global).await?;
    target.check_bucket().await?;
    let container = container(global, &layout);
    let token = CancelToken::new();
    let view = output::ProgressView::new(format!(
        "backing up {} to {}",
        layout.root,
        target.describe()
    ));
    let mut options = BackupOptions::default()
        .snapshot_timeout(flags.snapshot_timeout.map(std::time::Duration::from_secs))
        .cancel(token.clone())
        .lock(lock_options(global))
        .max_bandwidth(global.limit_upload)
        .priority(global.priority)
        .new_passphrase(flags.new_passphrase)
        .incremental(flags.incremental)
        .compression(flags.compression)
        .transfer(global.transfer)
        .progress(Some(view.callback()));
    options.space_reserve_mib = global.space_reserve_mib;
    let (result, signal) = view
        .run(interrupt::cancel_on_signal(
            create_backup_with(
                &*container,
                &target.params,
                passphrase.expose(),
                &layout,
                &options,
            ),
            &token,
        ))
        .await;
    let report = match (result, signal) {
        (Ok(report), _) => report,
        (Err(BackupError::Cancelled), Some(signal)) => {
            return Err(Failure::new(
                Kind::Interrupted(signal),
                "interrupted: the backup was stopped and nothing kept (removed the work dir and the partial upload)",
            ));
        }
        (Err(e), Some(signal)) => {
            return Err(Failure::new(
                Kind::Interrupted(signal),
                format!("interrupted: the backup was stopped and nothing kept ({e})"),
            ));
        }
        (Err(e), None) => return Err(target.failure(e, false)),
    };
    print_report(global, flags, &target, &report);
    Ok(())
}

/// Prints what `create` made: its warnings, its kind (with `--incremental`), its id (or
/// JSON) on stdout and the summary line.
fn print_report(global: &GlobalArgs, flags: &CreateFlags, target: &Target, report: &BackupReport) {
    let manifest = &report.manifest;
    for warning in &manifest.warnings {
        output::warn(warning);
    }
    if flags.incremental {
        output::info(&match &report.kind {
            BackupKind::Incremental { base } => format!("an incremental backup on top of {base}"),
            BackupKind::Full { reason } => format!("a full backup: {reason}"),
            _ => "a backup".to_string(),
        });
    }
    if global.json {
        emit_json(&Created {
            report,
            plaintext_bytes: manifest.plaintext_bytes,
            ciphertext_bytes: manifest.ciphertext_bytes,
            duration_seconds: report.duration.as_secs_f64(),
            warnings: &manifest.warnings,
        });
    } else {
        emit(&format!("{}\n", report.id));
    }
    output::info(&format!(
        "created {} in {}: {} files, {} archived, {} stored, in {} ({})",
        report.id,
        target.describe(),
        report.files,
        output::size(manifest.plaintext_bytes),
        output::size(manifest.ciphertext_bytes),
        output::seconds(report.duration),
        output::rate(manifest.plaintext_bytes, report.duration),
    ));
}

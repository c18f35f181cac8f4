//! `synapse-backup`: back up and restore a Matrix Synapse homeserver to S3-compatible
//! storage from the command line. It drives [`LocalContainer`] (this host, or a tree
//! elsewhere with `--root`) with the same code a charm uses. Run
//! `synapse-backup --help` for the flags, environment variables and exit codes.

mod config;
mod interrupt;
mod output;

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};
use synapse_backup::{
    BackupError, BackupId, BackupLock, BackupOptions, BackupStatus, CancelToken, ConfigError,
    ContainerError, Layout, LocalContainer, LockMode, LockOptions, RestoreOptions, RetentionPolicy,
    S3Client, S3Error, S3Parameters, SystemdServices, backup_status, create_backup_with,
    delete_backup_with, list_backups, prune_backups_with, restore_backup_with, verify_backup_with,
};

use crate::config::{ENV_PASSPHRASE, LayoutFlags, Passphrase};

const AFTER_HELP: &str = "\
The --s3 file holds the s3-integrator relation keys (YAML, or JSON when it ends in .json):
  bucket (required), endpoint and/or region (one is required), access-key, secret-key,
  path, s3-uri-style (path|host), tls-ca-chain, storage-class, delete-older-than-days.

Environment:
  SYNAPSE_BACKUP_ACCESS_KEY   access-key (overrides the --s3 file)
  SYNAPSE_BACKUP_SECRET_KEY   secret-key (overrides the --s3 file)
  SYNAPSE_BACKUP_PASSPHRASE   the passphrase when --passphrase-file is not given
  RUST_LOG                    log filter (overrides -v), e.g. synapse_backup=debug

create, restore, delete and prune hold a lock object (<path>/.synapse-backup.lock) so
that units sharing the bucket never run them at once; list and verify do not take it.

Exit codes: 0 ok, 1 the operation failed, 2 bad usage or configuration (nothing changed),
3 another operation holds the backup lock (the message names it; nothing changed).";

/// Back up and restore a Matrix Synapse homeserver (signing keys, SQLite database,
/// local media) to S3-compatible storage as gpg-encrypted tar archives.
#[derive(Parser)]
#[command(name = "synapse-backup", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct GlobalArgs {
    /// Directory the workload's paths (/data, media_store_path) resolve under.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/",
        global = true,
        env = "SYNAPSE_BACKUP_ROOT"
    )]
    root: PathBuf,
    /// S3 parameters: a YAML or JSON file with the s3-integrator relation keys [required].
    #[arg(long, value_name = "FILE", global = true, env = "SYNAPSE_BACKUP_S3")]
    s3: Option<PathBuf>,
    /// File holding the encryption passphrase (one trailing newline is ignored).
    #[arg(long, value_name = "FILE", global = true)]
    passphrase_file: Option<PathBuf>,
    /// Run the pipelines as this user (default: run as root, the owner of the data dir;
    /// otherwise the invoking user).
    #[arg(long, value_name = "USER", global = true)]
    user: Option<String>,
    /// Run the pipelines with this group (default: run as root, the data dir's group).
    #[arg(long, value_name = "GROUP", global = true)]
    group: Option<String>,
    /// systemd unit stopped and started around a restore's swap (default: none).
    #[arg(long, value_name = "NAME", global = true)]
    service: Option<String>,
    /// Synapse's config dir (homeserver.yaml, signing key), under --root.
    #[arg(long, value_name = "DIR", default_value = "/data", global = true)]
    config_dir: String,
    /// Synapse's data dir (homeserver.db, media_store), under --root.
    #[arg(long, value_name = "DIR", default_value = "/data", global = true)]
    data_dir: String,
    /// bash to run the pipelines with.
    #[arg(long, value_name = "PATH", default_value = "bash", global = true)]
    bash: String,
    /// GNU tar.
    #[arg(long, value_name = "PATH", default_value = "tar", global = true)]
    tar: String,
    /// gpg (GnuPG 2).
    #[arg(long, value_name = "PATH", default_value = "gpg", global = true)]
    gpg: String,
    /// The aws CLI.
    #[arg(long, value_name = "PATH", default_value = "aws", global = true)]
    aws: String,
    /// python3 with its sqlite3 module (the database snapshot).
    #[arg(long, value_name = "PATH", default_value = "python3", global = true)]
    python3: String,
    /// The sqlite3 CLI, used when python3 has no sqlite3 module.
    #[arg(long, value_name = "PATH", default_value = "sqlite3", global = true)]
    sqlite3: String,
    /// Do not take the backup lock: only for a single unit on an S3 server without
    /// conditional writes (If-None-Match / If-Match).
    #[arg(long, global = true)]
    no_lock: bool,
    /// Wait up to this many seconds for a backup lock held by another operation
    /// (default: fail at once with exit code 3).
    #[arg(long, value_name = "SECONDS", default_value_t = 0, global = true)]
    lock_wait: u64,
    /// How long the lock lives after its last refresh (it is refreshed every third of
    /// that while held); a killed process's lock expires after it.
    #[arg(long, value_name = "SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..), global = true)]
    lock_ttl: u64,
    /// More logs on stderr: -v progress, -vv debug, -vvv trace.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
}

#[derive(Subcommand)]
enum Command {
    /// Check that the bucket exists and the credentials can use it.
    Check,
    /// Back up the signing keys, a consistent snapshot of the SQLite database and the
    /// local media; print the new backup id alone on stdout.
    Create {
        /// Give up the database snapshot after this many seconds (a database another
        /// process keeps locked); 0 for no limit.
        #[arg(long, value_name = "SECONDS", default_value_t = 600)]
        snapshot_timeout: u64,
    },
    /// List the backups under the bucket and path, newest first.
    List {
        /// Print a JSON array of {id, status, last_modified, size, key}.
        #[arg(long)]
        json: bool,
    },
    /// Download and decrypt a backup without touching live data, and check it
    /// against its manifest.
    Verify {
        /// The backup id, e.g. backup-20261126071900123456.
        #[arg(value_parser = parse_id)]
        id: BackupId,
    },
    /// Restore a backup over the live data, safely: it is downloaded, decrypted and
    /// checked before anything live is touched.
    Restore {
        /// The backup id.
        #[arg(value_parser = parse_id)]
        id: BackupId,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(short, long)]
        yes: bool,
    },
    /// Delete a backup (its manifest, then its data).
    Delete {
        /// The backup id.
        #[arg(value_parser = parse_id)]
        id: BackupId,
    },
    /// Delete old backups and the leftovers of failed creates; the newest restorable
    /// backup (and the newest complete one) is always kept.
    Prune {
        /// Always keep this many of the newest restorable backups.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        keep_last: Option<u64>,
        /// Delete backups older than this (default: delete-older-than-days from the
        /// --s3 file).
        #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..))]
        older_than_days: Option<u32>,
        /// Only print what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove the backup lock left by an operation that is known to be gone (e.g. a
    /// killed process), after confirmation. A lock otherwise expires by itself.
    Unlock {
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(short, long)]
        yes: bool,
    },
}

fn parse_id(text: &str) -> Result<BackupId, String> {
    text.parse().map_err(|e: ConfigError| match e {
        ConfigError::Invalid { problems } => problems
            .into_iter()
            .map(|p| p.message)
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    })
}

/// Why the command failed, and so its exit code.
#[derive(Debug)]
enum Failure {
    /// Bad usage or configuration: exit 2, nothing was changed.
    Usage(String),
    /// The operation failed: exit 1.
    Failed(String),
    /// Stopped by this signal (after cleaning up): exit 128 + signal.
    Interrupted(i32, String),
    /// Another operation holds the backup lock: exit 3, nothing was changed.
    Locked(String),
}

impl Failure {
    fn code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Failed(_) => 1,
            Failure::Locked(_) => 3,
            Failure::Interrupted(signal, _) => u8::try_from(128 + signal).unwrap_or(1),
        }
    }

    fn message(&self) -> &str {
        match self {
            Failure::Usage(m)
            | Failure::Failed(m)
            | Failure::Interrupted(_, m)
            | Failure::Locked(m) => m,
        }
    }
}

impl From<BackupError> for Failure {
    fn from(error: BackupError) -> Self {
        if matches!(error, BackupError::LockHeld { .. }) {
            return Failure::Locked(error.to_string());
        }
        let usage = matches!(
            error,
            BackupError::Config(_)
                | BackupError::InvalidPassphrase(_)
                | BackupError::NothingToBackUp { .. }
                | BackupError::Container(ContainerError::UnknownUser { .. })
                | BackupError::S3(S3Error::Client(_))
                | BackupError::LockUnsupported { .. }
        );
        if usage {
            Failure::Usage(error.to_string())
        } else {
            Failure::Failed(error.to_string())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.global.s3.is_none() {
        Cli::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "the following required argument was not provided: --s3 <FILE>\n\n\
                 It is a YAML or JSON file with the s3-integrator keys (bucket, endpoint or region, …).",
            )
            .exit();
    }
    output::init_logging(cli.global.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli));
    drop(runtime);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message());
            ExitCode::from(failure.code())
        }
    }
}

/// What every command needs: the parameters, a client and where the backups are.
struct Target {
    params: S3Parameters,
    client: S3Client,
    s3_file: PathBuf,
}

impl Target {
    fn load(global: &GlobalArgs) -> Result<Target, Failure> {
        let s3_file = global.s3.clone().unwrap_or_default();
        let params = config::load_s3_parameters(&s3_file).map_err(Failure::Usage)?;
        let client = S3Client::new(&params)
            .map_err(|e| Failure::Usage(format!("{}: {e}", s3_file.display())))?;
        Ok(Target {
            params,
            client,
            s3_file,
        })
    }

    /// `s3://bucket/prefix at endpoint` (no secret).
    fn describe(&self) -> String {
        let prefix = self.client.prefix();
        let location = if prefix.is_empty() {
            format!("s3://{}", self.client.bucket())
        } else {
            format!("s3://{}/{prefix}", self.client.bucket())
        };
        match self.params.endpoint() {
            Some(endpoint) => format!("{location} at {endpoint}"),
            None => format!("{location} in {}", self.client.region()),
        }
    }
}

fn layout_flags(global: &GlobalArgs) -> LayoutFlags {
    LayoutFlags {
        root: global.root.clone(),
        config_dir: global.config_dir.clone(),
        data_dir: global.data_dir.clone(),
        user: global.user.clone(),
        group: global.group.clone(),
        service: global.service.clone(),
        bash: global.bash.clone(),
        tar: global.tar.clone(),
        gpg: global.gpg.clone(),
        aws: global.aws.clone(),
        python3: global.python3.clone(),
        sqlite3: global.sqlite3.clone(),
    }
}

/// The layout with its tools resolved, for the commands that run pipelines.
fn pipeline_layout(global: &GlobalArgs) -> Result<Layout, Failure> {
    let mut layout = config::layout(&layout_flags(global)).map_err(Failure::Usage)?;
    config::resolve_tools(&mut layout).map_err(Failure::Usage)?;
    Ok(layout)
}

/// How create, restore, delete and prune take the backup lock.
fn lock_options(global: &GlobalArgs) -> LockOptions {
    let mode = if global.no_lock {
        LockMode::Off
    } else {
        LockMode::Required
    };
    LockOptions::new()
        .mode(mode)
        .ttl(std::time::Duration::from_secs(global.lock_ttl))
        .wait(std::time::Duration::from_secs(global.lock_wait))
}

fn passphrase(global: &GlobalArgs) -> Result<Passphrase, Failure> {
    config::load_passphrase(global.passphrase_file.as_deref()).map_err(Failure::Usage)
}

/// This host; with `--service`, its systemd units.
fn container(layout: &Layout) -> LocalContainer {
    if layout.service.is_some() {
        LocalContainer::with_services(SystemdServices::new())
    } else {
        LocalContainer::new()
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn emit(text: &str) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let global = &cli.global;
    match cli.command {
        Command::Check => check(global).await,
        Command::Create { snapshot_timeout } => {
            create(global, (snapshot_timeout > 0).then_some(snapshot_timeout)).await
        }
        Command::List { json } => list(global, json).await,
        Command::Verify { id } => verify(global, &id).await,
        Command::Restore { id, yes } => restore(global, &id, yes).await,
        Command::Delete { id } => {
            let target = Target::load(global)?;
            let lock = lock_options(global);
            let run = output::with_spinner(
                format!("deleting {id}"),
                interrupt::cancellable(delete_backup_with(&target.client, &id, &lock)),
            )
            .await;
            run.map_err(|signal| {
                Failure::Interrupted(signal, "interrupted: the delete was stopped".into())
            })??;
            emit(&format!("deleted {id} from {}\n", target.describe()));
            Ok(())
        }
        Command::Unlock { yes } => unlock(global, yes).await,
        Command::Prune {
            keep_last,
            older_than_days,
            dry_run,
        } => prune(global, keep_last, older_than_days, dry_run).await,
    }
}

async fn check(global: &GlobalArgs) -> Result<(), Failure> {
    let target = Target::load(global)?;
    // A passphrase given is checked too, so `check` catches every config mistake.
    let has_passphrase = global.passphrase_file.is_some()
        || std::env::var_os(ENV_PASSPHRASE).is_some_and(|v| !v.is_empty());
    if has_passphrase {
        passphrase(global)?;
    }
    let usable = output::with_spinner(
        format!("checking {}", target.describe()),
        target.client.can_use_bucket(),
    )
    .await;
    if usable {
        emit(&format!("ok: {} is usable\n", target.describe()));
        Ok(())
    } else {
        Err(Failure::Failed(format!(
            "{} cannot be used (the warning above says why)",
            target.describe()
        )))
    }
}

async fn create(global: &GlobalArgs, snapshot_timeout: Option<u64>) -> Result<(), Failure> {
    let target = Target::load(global)?;
    let passphrase = passphrase(global)?;
    let layout = pipeline_layout(global)?;
    let container = container(&layout);
    let token = CancelToken::new();
    let options = BackupOptions {
        snapshot_timeout: snapshot_timeout.map(std::time::Duration::from_secs),
        cancel: token.clone(),
        lock: lock_options(global),
        ..BackupOptions::default()
    };
    let (result, signal) = output::with_spinner(
        format!("backing up {} to {}", layout.root, target.describe()),
        interrupt::cancel_on_signal(
            create_backup_with(
                &container,
                &target.params,
                passphrase.expose(),
                &layout,
                &options,
            ),
            &token,
        ),
    )
    .await;
    let report = match (result, signal) {
        (Ok(report), _) => report,
        (Err(BackupError::Cancelled), Some(signal)) => {
            return Err(Failure::Interrupted(
                signal,
                "interrupted: the backup was stopped and nothing kept (removed the work dir and the partial upload)".into(),
            ));
        }
        (Err(e), Some(signal)) => {
            return Err(Failure::Interrupted(
                signal,
                format!("interrupted: the backup was stopped and nothing kept ({e})"),
            ));
        }
        (Err(e), None) => return Err(e.into()),
    };
    emit(&format!("{}\n", report.id));
    let manifest = &report.manifest;
    for warning in &manifest.warnings {
        output::warn(warning);
    }
    let files = manifest.files.iter().filter(|f| f.kind == 'f').count();
    eprintln!(
        "created {} in {}: {files} files, {} archived, {} stored, in {} ({})",
        report.id,
        target.describe(),
        output::size(manifest.plaintext_bytes),
        output::size(manifest.ciphertext_bytes),
        output::seconds(report.duration),
        output::rate(manifest.plaintext_bytes, report.duration),
    );
    Ok(())
}

async fn list(global: &GlobalArgs, json: bool) -> Result<(), Failure> {
    let target = Target::load(global)?;
    let backups = output::with_spinner(
        format!("listing {}", target.describe()),
        list_backups(&target.client),
    )
    .await?;
    if json {
        emit(&format!("{}\n", output::backups_json(&backups)));
    } else if backups.is_empty() {
        emit(&format!("no backups in {}\n", target.describe()));
    } else {
        emit(&output::backups_table(&backups));
    }
    Ok(())
}

async fn verify(global: &GlobalArgs, id: &BackupId) -> Result<(), Failure> {
    let target = Target::load(global)?;
    let passphrase = passphrase(global)?;
    let layout = pipeline_layout(global)?;
    let container = container(&layout);
    let run = output::with_spinner(
        format!("verifying {id}"),
        interrupt::cancellable_in_workload(
            verify_backup_with(
                &container,
                &target.params,
                passphrase.expose(),
                id,
                &layout,
                &RestoreOptions::default(),
            ),
            &container,
            &layout,
        ),
    )
    .await;
    let report = match run {
        Ok(result) => result?,
        Err((signal, cleaned)) => {
            return Err(Failure::Interrupted(
                signal,
                format!("interrupted: the verification was stopped ({cleaned})"),
            ));
        }
    };
    for warning in &report.warnings {
        output::warn(warning);
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

async fn restore(global: &GlobalArgs, id: &BackupId, yes: bool) -> Result<(), Failure> {
    let target = Target::load(global)?;
    let passphrase = passphrase(global)?;
    let layout = pipeline_layout(global)?;
    if !yes {
        if !(io::stdin().is_terminal() && io::stderr().is_terminal()) {
            return Err(Failure::Usage(format!(
                "restore replaces the live data under {}; pass --yes to confirm (there is no terminal to ask on)",
                layout.root
            )));
        }
        match backup_status(&target.client, id).await? {
            None => return Err(BackupError::NotFound { id: id.to_string() }.into()),
            Some(BackupStatus::Incomplete) => {
                return Err(Failure::Failed(format!(
                    "backup {id} is incomplete (no manifest or no data) and cannot be restored"
                )));
            }
            Some(_) => {}
        }
        let service = match &layout.service {
            Some(s) => format!(" The service {s} is stopped and started around the swap."),
            None => String::new(),
        };
        let question = format!(
            "Restore {id} from {} over the live data under {}?\n\
             The signing keys, the database and the local media are replaced once the backup \
             has been downloaded and checked.{service}\nType yes to continue: ",
            target.describe(),
            layout.root
        );
        if !confirm(&question) {
            return Err(Failure::Failed(
                "restore cancelled; nothing was changed".into(),
            ));
        }
    }
    let container = container(&layout);
    let report = interrupt::shielded(
        output::with_spinner(
            format!("restoring {id} into {}", layout.root),
            restore_backup_with(
                &container,
                &target.params,
                passphrase.expose(),
                id,
                &layout,
                &RestoreOptions {
                    lock: lock_options(global),
                    ..RestoreOptions::default()
                },
            ),
        ),
        "a restore",
    )
    .await?;
    for warning in &report.warnings {
        output::warn(warning);
    }
    let mut text = format!(
        "restored {id} ({}) into {}: {} encrypted, in {} ({})\n",
        report.status,
        layout.root,
        output::size(report.ciphertext_bytes),
        output::seconds(report.duration),
        output::rate(report.ciphertext_bytes, report.duration),
    );
    for path in &report.restored {
        text.push_str(&format!("  replaced {path}\n"));
    }
    for path in &report.dropped {
        text.push_str(&format!("  removed {path} (not in the backup)\n"));
    }
    emit(&text);
    Ok(())
}

/// Asks on the terminal; only `yes` or `y` agrees.
fn confirm(question: &str) -> bool {
    eprint!("{question}");
    let _ = io::stderr().flush();
    let mut answer = String::new();
    if io::stdin().lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_ascii_lowercase().as_str(), "yes" | "y")
}

async fn prune(
    global: &GlobalArgs,
    keep_last: Option<u64>,
    older_than_days: Option<u32>,
    dry_run: bool,
) -> Result<(), Failure> {
    let target = Target::load(global)?;
    let mut policy = RetentionPolicy::from_parameters(&target.params);
    if older_than_days.is_some() {
        policy.older_than_days = older_than_days;
    }
    if let Some(n) = keep_last {
        policy.keep_last = Some(usize::try_from(n).unwrap_or(usize::MAX));
    }
    policy.dry_run = dry_run;
    if policy.older_than_days.is_none() && policy.keep_last.is_none() {
        eprintln!(
            "note: no retention set (--older-than-days, --keep-last, or delete-older-than-days in {}): only incomplete leftovers older than a day are removed",
            target.s3_file.display()
        );
    }
    let lock = lock_options(global);
    let report = output::with_spinner(
        format!("pruning {}", target.describe()),
        interrupt::cancellable(prune_backups_with(&target.client, &policy, &lock)),
    )
    .await
    .map_err(|signal| {
        Failure::Interrupted(signal, "interrupted: the prune was stopped".into())
    })??;
    let verb = if dry_run { "would delete" } else { "deleted" };
    let mut text = String::new();
    for b in &report.deleted {
        text.push_str(&format!(
            "{verb} {} ({}, {}, {})\n",
            b.id,
            b.status,
            output::size(b.size),
            output::rfc3339(b.last_modified)
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
    emit(&text);
    Ok(())
}

async fn unlock(global: &GlobalArgs, yes: bool) -> Result<(), Failure> {
    let target = Target::load(global)?;
    let info = match BackupLock::inspect(&target.client).await? {
        Some(info) if !info.released => info,
        _ => {
            emit(&format!(
                "no backup lock is held in {}\n",
                target.describe()
            ));
            return Ok(());
        }
    };
    let held = format!(
        "the backup lock {} is held by {} since {}, last written {} (server time)",
        info.key,
        info.holder(),
        output::rfc3339(info.since),
        output::rfc3339(info.last_modified)
    );
    if !yes {
        if !(io::stdin().is_terminal() && io::stderr().is_terminal()) {
            return Err(Failure::Usage(format!(
                "{held}; pass --yes to remove it (there is no terminal to ask on)"
            )));
        }
        let question = format!(
            "{held}.\nRemove it only if that operation is no longer running: a create, \
             restore, delete or prune could then run at the same time.\nType yes to continue: "
        );
        if !confirm(&question) {
            return Err(Failure::Failed(
                "unlock cancelled; the lock was left in place".into(),
            ));
        }
    }
    if BackupLock::force_release(&target.client, &info).await? {
        emit(&format!(
            "removed the backup lock held by {}\n",
            info.holder()
        ));
        Ok(())
    } else {
        Err(Failure::Failed(
            "the lock changed while unlocking (refreshed or taken by another operation); nothing was removed".into(),
        ))
    }
}

//! `synapse-backup`: back up and restore a Matrix Synapse homeserver to S3-compatible
//! storage from the command line. It drives [`LocalContainer`] (this host, or a tree
//! elsewhere with `--root`), or with `--pebble SOCKET` a Pebble-managed workload through
//! [`PebbleContainer`], with the same code a charm uses. Run
//! `synapse-backup --help` for the flags, environment variables and exit codes.

mod config;
mod contents;
mod diagnose;
mod interrupt;
mod output;

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};
use serde_json::json;
use synapse_backup::{
    BackupError, BackupId, BackupInfo, BackupLock, BackupOptions, BackupStatus, CancelToken,
    ConfigError, Container, ContainerError, ExecOptions, ExtractTarget, Layout, LocalContainer,
    LockMode, LockOptions, PebbleContainer, RestoreOptions, RetentionPolicy, S3Client, S3Error,
    S3Parameters, SystemdServices, VerifyReport, backup_status, create_backup_with,
    delete_backup_with, extract_backup_with, list_backups, prune_backups_with, read_manifest,
    restore_backup_with, verify_backup_with,
};

use crate::config::{ENV_PASSPHRASE, Passphrase};
use crate::diagnose::S3Problem;

const AFTER_HELP: &str = "\
The --s3 file holds the s3-integrator relation keys (YAML, or JSON when it ends in .json):
  bucket (required), endpoint and/or region (one is required), access-key, secret-key,
  path, s3-uri-style (path|host), tls-ca-chain, storage-class, delete-older-than-days.
  Any other key is an error. The passphrase file must not be writable by others.

Environment:
  SYNAPSE_BACKUP_ACCESS_KEY        access-key (overrides the --s3 file)
  SYNAPSE_BACKUP_SECRET_KEY        secret-key (overrides the --s3 file)
  AWS_SESSION_TOKEN                session-token (temporary credentials)
  SYNAPSE_BACKUP_S3                the --s3 file
  SYNAPSE_BACKUP_ROOT              --root
  SYNAPSE_BACKUP_PEBBLE            --pebble (the Pebble daemon's socket)
  SYNAPSE_BACKUP_PASSPHRASE_FILE   the --passphrase-file
  SYNAPSE_BACKUP_PASSPHRASE        the passphrase itself, when no passphrase file is given
  SYNAPSE_BACKUP_S3_TIMEOUT        --s3-timeout
  SYNAPSE_BACKUP_PROGRESS_EVERY    seconds between progress lines on stderr when it is not a
                                   terminal or with --json (default 30; 0: every report)
  RUST_LOG                         log filter (overrides -v), e.g. synapse_backup=debug

Wherever a backup id is taken, `latest` names the newest complete backup.
With --json, every command prints JSON on stdout, and a failure prints
{\"error\": {\"kind\", \"message\", \"exit_code\"}}.

create, restore, delete and prune hold a lock object (<path>/.synapse-backup.lock) so
that units sharing the bucket never run them at once; list, ls, verify and
restore --target (which change nothing in the bucket) do not take it.

Exit codes:
  0    ok
  1    the operation failed (the message says why: e.g. missing bucket, unreachable
       endpoint, refused credentials, backup not found)
  2    bad usage or configuration (nothing changed)
  3    another operation holds the backup lock (the message names it; nothing changed)
  4    declined at the confirmation prompt (nothing changed)
  129  stopped by SIGHUP, 130 by SIGINT (Ctrl-C), 143 by SIGTERM, after cleaning up";

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
    // Where the workload lives and which tools run: --root, --data-dir, --bash, ….
    #[command(flatten)]
    layout: Layout,
    /// Run everything in a Pebble-managed workload through the Pebble daemon's socket
    /// (e.g. /charm/containers/synapse/pebble.socket): the paths, --user and the tools
    /// are the workload's, --service names a Pebble service, and the default owner is the
    /// data dir's owner in the workload.
    #[arg(
        long,
        value_name = "SOCKET",
        global = true,
        env = "SYNAPSE_BACKUP_PEBBLE"
    )]
    pebble: Option<PathBuf>,
    /// S3 parameters: a YAML or JSON file with the s3-integrator relation keys [required].
    #[arg(long, value_name = "FILE", global = true, env = "SYNAPSE_BACKUP_S3")]
    s3: Option<PathBuf>,
    /// File holding the encryption passphrase (one trailing newline is ignored).
    #[arg(
        long,
        value_name = "FILE",
        global = true,
        env = "SYNAPSE_BACKUP_PASSPHRASE_FILE"
    )]
    passphrase_file: Option<PathBuf>,
    /// Do not take the backup lock: only for a single unit on an S3 server without
    /// conditional writes (If-None-Match / If-Match).
    #[arg(long, global = true)]
    no_lock: bool,
    /// Wait up to this many seconds for a backup lock held by another operation
    /// (default: fail at once with exit code 3).
    #[arg(long, value_name = "SECONDS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(..=604_800), global = true)]
    lock_wait: u64,
    /// Give up an S3 request without an answer after this many seconds (each attempt;
    /// all attempts together get three times it), so an endpoint that never answers
    /// cannot hang a command.
    #[arg(long, value_name = "SECONDS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86_400), global = true, env = "SYNAPSE_BACKUP_S3_TIMEOUT")]
    s3_timeout: u64,
    /// How long the lock lives after its last refresh (it is refreshed every third of
    /// that while held); a killed process's lock expires after it.
    #[arg(long, value_name = "SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400), global = true)]
    lock_ttl: u64,
    /// Cap create's upload at this many MiB/s (the aws CLI's max_bandwidth), so a
    /// backup does not saturate the network (default: no cap).
    #[arg(long, value_name = "MiB/s", value_parser = clap::value_parser!(u32).range(1..), global = true)]
    limit_upload: Option<u32>,
    /// Cap the download of verify and restore at this many MiB/s (default: no cap).
    #[arg(long, value_name = "MiB/s", value_parser = clap::value_parser!(u32).range(1..), global = true)]
    limit_download: Option<u32>,
    /// More logs on stderr: -v progress, -vv debug, -vvv trace.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Print the result as JSON on stdout, and a failure as {"error": {"kind",
    /// "message", "exit_code"}}.
    #[arg(long, global = true)]
    json: bool,
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
        /// The passphrase is new on purpose. Without it, create refuses a passphrase
        /// that does not open the newest backup (a mistyped one would make backups
        /// nobody can restore); the backup made with it becomes the newest, so later
        /// creates check against the new passphrase.
        #[arg(long)]
        new_passphrase: bool,
    },
    /// List the backups under the bucket and path, newest first (with --json, an
    /// array of {id, status, last_modified, size, key}).
    List,
    /// Print a backup's contents (kind, size, path) as its manifest lists them (with
    /// --json, an array of {path, kind, size}).
    ///
    /// The manifest is an index beside the encrypted data: `ls` checks that it names
    /// this backup and that the data object has the size it states, but only
    /// `verify ID` (a download and decryption) checks that the archive holds exactly
    /// what it lists.
    Ls {
        /// The backup id, or `latest` (the newest complete backup).
        #[arg(value_parser = parse_id)]
        id: IdArg,
    },
    /// Download and decrypt a backup without touching live data, and check it
    /// against its manifest.
    Verify {
        /// The backup id, e.g. backup-20261126071900123456, or `latest`.
        #[arg(value_parser = parse_id, required_unless_present = "all")]
        id: Option<IdArg>,
        /// Verify every backup, newest first: one line each (id, ok / FAILED and why,
        /// or skipped for the incomplete leftovers of failed creates); exit code 1 when
        /// any failed. With --json, an array of {id, status, result, reason, …}.
        #[arg(long, conflicts_with = "id")]
        all: bool,
        /// Make the work dir in the temp dir ($TMPDIR or /tmp) instead of beside the
        /// data (the default where there is no Synapse tree under --root). Verify keeps
        /// only small files there: the archive is read, not written.
        #[arg(long)]
        temp_work_dir: bool,
    },
    /// Restore a backup over the live data, safely: it is downloaded, decrypted and
    /// checked before anything live is touched.
    Restore {
        /// The backup id, or `latest` (the newest complete backup).
        #[arg(value_parser = parse_id)]
        id: IdArg,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(short, long)]
        yes: bool,
        /// Keep the restored database's one-time keys (e2e_one_time_keys_json). By
        /// default they are removed, as Synapse advises: keys handed out after the
        /// backup was made must never be handed out again.
        #[arg(long)]
        keep_one_time_keys: bool,
        /// Extract the backup into DIR instead (made when missing; it must be empty),
        /// with the same download, decryption and checks: no live file, service or lock
        /// is touched, and no Synapse tree is needed under --root.
        #[arg(long, value_name = "DIR")]
        target: Option<PathBuf>,
        /// With --target, extract only PATH: a file or a directory (and everything
        /// under it) as `ls` names them, e.g. data/homeserver.db or
        /// /data/media_store/local_content. Repeatable.
        #[arg(long, value_name = "PATH", requires = "target")]
        include: Vec<String>,
    },
    /// Delete a backup (its manifest, then its data).
    Delete {
        /// The backup id, or `latest` (the newest complete backup).
        #[arg(value_parser = parse_id)]
        id: IdArg,
    },
    /// Delete old backups and the leftovers of failed creates; the newest restorable
    /// backup (and the newest complete one) is always kept.
    Prune {
        /// Keep at least the N newest restorable backups, however old. Without
        /// --older-than-days (or delete-older-than-days), the older ones are deleted.
        #[arg(
            long,
            alias = "keep-last",
            value_name = "N",
            value_parser = clap::value_parser!(u64).range(1..)
        )]
        keep_at_least: Option<u64>,
        /// Delete backups older than this (default: delete-older-than-days from the
        /// --s3 file).
        #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..))]
        older_than_days: Option<u32>,
        /// Only print each backup that would be deleted, and why.
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

/// A backup id as given: an id, or `latest`.
#[derive(Clone, Debug)]
enum IdArg {
    /// The newest complete backup.
    Latest,
    /// This backup.
    Id(BackupId),
}

fn parse_id(text: &str) -> Result<IdArg, String> {
    if text == "latest" {
        return Ok(IdArg::Latest);
    }
    text.parse().map(IdArg::Id).map_err(|e: ConfigError| {
        let problem = match e {
            ConfigError::Invalid { problems } => problems
                .into_iter()
                .map(|p| p.message)
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        };
        format!("{problem} (or `latest` for the newest complete backup)")
    })
}

/// Why the command failed: its kind (named in `--json` errors, and the exit code) and
/// the message.
#[derive(Debug)]
struct Failure {
    kind: Kind,
    message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Bad usage or configuration: exit 2, nothing was changed.
    Usage,
    /// The operation failed: exit 1.
    Failed,
    /// The operation failed and its output (e.g. `verify --all`'s results) already says
    /// how: exit 1, and no JSON error object after that output.
    Reported,
    /// The backup does not exist: exit 1.
    NotFound,
    /// A common S3 mistake (missing bucket, unreachable endpoint, …): exit 1.
    S3(&'static str),
    /// Another operation holds the backup lock: exit 3, nothing was changed.
    Locked,
    /// The operator answered no at the prompt: exit 4, nothing was changed.
    Declined,
    /// Stopped by this signal (after cleaning up): exit 128 + signal.
    Interrupted(i32),
}

impl Failure {
    fn new(kind: Kind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }

    fn usage(message: impl Into<String>) -> Failure {
        Failure::new(Kind::Usage, message)
    }

    fn failed(message: impl Into<String>) -> Failure {
        Failure::new(Kind::Failed, message)
    }

    fn code(&self) -> u8 {
        match self.kind {
            Kind::Usage => 2,
            Kind::Failed | Kind::Reported | Kind::NotFound | Kind::S3(_) => 1,
            Kind::Locked => 3,
            Kind::Declined => 4,
            Kind::Interrupted(signal) => u8::try_from(128 + signal).unwrap_or(1),
        }
    }

    /// The kind named in `--json` errors.
    fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Usage => "usage",
            Kind::Failed | Kind::Reported => "failed",
            Kind::NotFound => "not-found",
            Kind::S3(kind) => kind,
            Kind::Locked => "locked",
            Kind::Declined => "declined",
            Kind::Interrupted(_) => "interrupted",
        }
    }

    /// Prints the failure (stderr, and with `--json` a JSON object on stdout) and
    /// gives the exit code.
    fn report(&self, json: bool) -> ExitCode {
        eprintln!("error: {}", self.message);
        if json && self.kind != Kind::Reported {
            emit_json(&json!({
                "error": {
                    "kind": self.kind_name(),
                    "message": self.message,
                    "exit_code": self.code(),
                }
            }));
        }
        ExitCode::from(self.code())
    }
}

impl From<BackupError> for Failure {
    fn from(error: BackupError) -> Self {
        let kind = match &error {
            BackupError::LockHeld { .. } => Kind::Locked,
            BackupError::NotFound { .. } => Kind::NotFound,
            BackupError::Config(_)
            | BackupError::InvalidPassphrase(_)
            | BackupError::PassphraseMismatch { .. }
            | BackupError::NothingToBackUp { .. }
            | BackupError::Container(ContainerError::UnknownUser { .. })
            | BackupError::S3(S3Error::Client(_))
            | BackupError::LockUnsupported { .. }
            | BackupError::TargetNotEmpty { .. } => Kind::Usage,
            _ => Kind::Failed,
        };
        Failure::new(kind, error.to_string())
    }
}

/// Whether `--json` is among the arguments, for errors found before they are parsed.
fn json_requested() -> bool {
    std::env::args_os()
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

/// A command-line error (exit 2): clap's own text, or with `--json` a JSON error.
fn usage_exit(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let informational = matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if informational || !json_requested() {
        error.exit();
    }
    let text = error.render().to_string();
    let message = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("bad usage")
        .trim_start_matches("error: ")
        .to_string();
    Failure::usage(message).report(true)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_exit(e),
    };
    if cli.global.s3.is_none() {
        return usage_exit(Cli::command().error(
            clap::error::ErrorKind::MissingRequiredArgument,
            "the following required argument was not provided: --s3 <FILE>\n\n\
             It is a YAML or JSON file with the s3-integrator keys (bucket, endpoint or region, …).",
        ));
    }
    output::init_logging(cli.global.verbose);
    let json = cli.global.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return Failure::failed(format!("cannot start the async runtime: {e}")).report(json);
        }
    };
    let result = runtime.block_on(run(cli));
    drop(runtime);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(json),
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
        let params = config::load_s3_parameters(&s3_file)
            .map_err(Failure::usage)?
            .with_request_timeout(std::time::Duration::from_secs(global.s3_timeout));
        let client = S3Client::new(&params)
            .map_err(|e| Failure::usage(format!("{}: {e}", s3_file.display())))?;
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

    /// The failure for `error`: the common S3 mistakes named with their fix (see
    /// [`diagnose`]), anything else as it is. `listing` says the failed request listed
    /// the bucket.
    fn failure(&self, error: BackupError, listing: bool) -> Failure {
        let problem = match &error {
            BackupError::S3(e) => diagnose::classify(e, listing),
            _ => None,
        };
        match problem {
            Some(problem) => self.s3_failure(&problem),
            None => error.into(),
        }
    }

    fn s3_failure(&self, problem: &S3Problem) -> Failure {
        let file = self.s3_file.display().to_string();
        let cx = diagnose::Context {
            bucket: self.client.bucket(),
            endpoint: self.params.endpoint(),
            region: self.client.region(),
            s3_file: &file,
        };
        Failure::new(Kind::S3(problem.kind()), problem.message(&cx))
    }

    /// Checks that the bucket exists and these credentials can list it (one small
    /// listing), before anything else is done.
    async fn check_bucket(&self) -> Result<(), Failure> {
        let probe = self.client.object_key(".synapse-backup-check");
        self.client
            .list_objects_with_prefix(&probe)
            .await
            .map(drop)
            .map_err(|e| self.failure(e.into(), true))
    }

    /// The backup `id` names: itself, or for `latest` the newest complete backup.
    async fn resolve(&self, id: &IdArg) -> Result<BackupId, Failure> {
        match id {
            IdArg::Id(id) => Ok(id.clone()),
            IdArg::Latest => {
                let backups = list_backups(&self.client)
                    .await
                    .map_err(|e| self.failure(e, true))?;
                backups
                    .into_iter()
                    .find(|b| b.status == BackupStatus::Complete)
                    .map(|b| b.id)
                    .ok_or_else(|| {
                        Failure::new(
                            Kind::NotFound,
                            format!(
                                "no complete backup in {}, so `latest` names none",
                                self.describe()
                            ),
                        )
                    })
            }
        }
    }
}

/// The layout with its tools resolved, for the commands that run pipelines over a
/// Synapse tree (create, restore): its config and data dirs must exist.
async fn pipeline_layout(global: &GlobalArgs) -> Result<Layout, Failure> {
    let Some(socket) = &global.pebble else {
        let mut layout = config::layout(&global.layout).map_err(Failure::usage)?;
        check_tree(&layout)?;
        config::resolve_tools(&mut layout).map_err(Failure::usage)?;
        return Ok(layout);
    };
    let layout = config::workload_layout(&global.layout).map_err(Failure::usage)?;
    let workload = PebbleContainer::new(socket.clone());
    check_workload_tree(&workload, &layout, socket).await?;
    workload_owner(&workload, layout, socket).await
}

/// The layout with its tools resolved, for the commands that touch no live data
/// (verify, restore --target): without a Synapse tree under --root, their work dir is
/// made in the temp dir.
async fn reader_layout(global: &GlobalArgs) -> Result<Layout, Failure> {
    let Some(socket) = &global.pebble else {
        let mut layout = config::layout(&global.layout).map_err(Failure::usage)?;
        config::resolve_tools(&mut layout).map_err(Failure::usage)?;
        return Ok(layout);
    };
    let layout = config::workload_layout(&global.layout).map_err(Failure::usage)?;
    let workload = PebbleContainer::new(socket.clone());
    workload_owner(&workload, layout, socket).await
}

/// Fails, naming --root, --data-dir and --config-dir, when the config or data dir is
/// missing.
fn check_tree(layout: &Layout) -> Result<(), Failure> {
    for (field, dir) in [
        ("config_dir", &layout.config_dir),
        ("data_dir", &layout.data_dir),
    ] {
        let flag = config::flag(field);
        let full = Path::new(&layout.root).join(dir.trim_start_matches('/'));
        if !full.is_dir() {
            return Err(Failure::usage(format!(
                "no Synapse tree here: {flag} {dir} does not exist under --root {} ({} is missing); \
                 pass --root DIR where the tree is (e.g. a mounted volume), or --data-dir / \
                 --config-dir where this one keeps its files",
                layout.root,
                full.display()
            )));
        }
    }
    Ok(())
}

/// A workload path under the layout's root.
fn in_root(layout: &Layout, dir: &str) -> String {
    format!(
        "{}/{}",
        layout.root.trim_end_matches('/'),
        dir.trim_start_matches('/')
    )
}

/// A container error on the `--pebble` workload: a failure naming the socket.
fn workload_failure(socket: &Path, error: &ContainerError) -> Failure {
    let shown = socket.display().to_string();
    let message = error.to_string();
    if message.contains(&shown) {
        Failure::failed(message)
    } else {
        Failure::failed(format!("the Pebble workload at {shown}: {message}"))
    }
}

/// [`check_tree`] in the Pebble workload: the config and data dirs must exist there.
async fn check_workload_tree(
    workload: &PebbleContainer,
    layout: &Layout,
    socket: &Path,
) -> Result<(), Failure> {
    for (field, dir) in [
        ("config_dir", &layout.config_dir),
        ("data_dir", &layout.data_dir),
    ] {
        let full = in_root(layout, dir);
        let found = workload
            .exists(&full)
            .await
            .map_err(|e| workload_failure(socket, &e))?;
        if !found {
            let flag = config::flag(field);
            return Err(Failure::usage(format!(
                "no Synapse tree in the Pebble workload at {}: {flag} {dir} does not exist under \
                 --root {} ({full} is missing); pass --data-dir / --config-dir where it keeps \
                 its files",
                socket.display(),
                layout.root,
            )));
        }
    }
    Ok(())
}

/// The layout with, when `--user` is not given, the owner and group of the data dir in
/// the workload (read there with `stat`, never from this host's file system), as
/// [`config::layout`] does for a local tree: a data dir owned by root, or missing, keeps
/// the daemon's user. An owner with no name in the workload's passwd is run as by its
/// numeric ids (`Layout::user_id`/`group_id`).
async fn workload_owner(
    workload: &PebbleContainer,
    layout: Layout,
    socket: &Path,
) -> Result<Layout, Failure> {
    if layout.user.is_some() || layout.user_id.is_some() {
        return Ok(layout);
    }
    let data = in_root(&layout, &layout.data_dir);
    if !workload
        .exists(&data)
        .await
        .map_err(|e| workload_failure(socket, &e))?
    {
        return Ok(layout);
    }
    // `stat` without -L: a link at the data dir is reported as itself, never followed.
    let argv: Vec<String> = ["stat", "-c", "%u:%g:%U:%G", "--", &data]
        .iter()
        .map(ToString::to_string)
        .collect();
    let options = ExecOptions {
        working_dir: Some("/".into()),
        timeout: Some(std::time::Duration::from_secs(60)),
        ..ExecOptions::default()
    };
    let out = workload
        .exec(&argv, options)
        .await
        .map_err(|e| workload_failure(socket, &e))?;
    let text = out.stdout_text();
    let owner = parse_owner(text.trim()).ok_or_else(|| {
        Failure::failed(format!(
            "the Pebble workload at {}: cannot read the owner of {data} from `stat` \
             (it printed {:?}); pass --user and --group",
            socket.display(),
            text.trim()
        ))
    })?;
    if owner.uid == 0 {
        return Ok(layout);
    }
    let Some(user) = owner.user else {
        tracing::info!(uid = owner.uid, gid = owner.gid, dir = %data, "running the pipelines as the owner of the data dir in the workload (a uid with no name)");
        return Ok(layout
            .user(None)
            .group(None)
            .user_id(Some(owner.uid))
            .group_id(Some(owner.gid)));
    };
    let group = layout.group.clone().or(owner.group);
    tracing::info!(user, group = ?group, dir = %data, "running the pipelines as the owner of the data dir in the workload");
    Ok(layout.user(Some(user)).group(group))
}

/// The data dir's owner as `stat -c %u:%g:%U:%G` prints it.
#[derive(Debug, PartialEq, Eq)]
struct Owner {
    uid: u32,
    gid: u32,
    user: Option<String>,
    group: Option<String>,
}

/// Parses `uid:gid:user:group`; `UNKNOWN` (stat's word for an id without a name) is
/// no name.
fn parse_owner(text: &str) -> Option<Owner> {
    let mut fields = text.split(':');
    let uid = fields.next()?.parse().ok()?;
    let gid = fields.next()?.parse().ok()?;
    let name = |field: &str| (!field.is_empty() && field != "UNKNOWN").then(|| field.to_string());
    let user = name(fields.next()?);
    let group = name(fields.next()?);
    fields.next().is_none().then_some(Owner {
        uid,
        gid,
        user,
        group,
    })
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
    config::load_passphrase(global.passphrase_file.as_deref()).map_err(Failure::usage)
}

/// The workload: with `--pebble`, the Pebble daemon's workload (and `--service` a Pebble
/// service); otherwise this host, and with `--service` its systemd units.
fn container(global: &GlobalArgs, layout: &Layout) -> Box<dyn Container> {
    if let Some(socket) = &global.pebble {
        Box::new(PebbleContainer::new(socket.clone()))
    } else if layout.service.is_some() {
        Box::new(LocalContainer::with_services(SystemdServices::new()))
    } else {
        Box::new(LocalContainer::new())
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn emit(text: &str) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Writes `value` as pretty JSON and a newline to stdout.
fn emit_json(value: &serde_json::Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into());
    emit(&format!("{text}\n"));
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let global = &cli.global;
    match cli.command {
        Command::Check => check(global).await,
        Command::Create {
            snapshot_timeout,
            new_passphrase,
        } => {
            create(
                global,
                (snapshot_timeout > 0).then_some(snapshot_timeout),
                new_passphrase,
            )
            .await
        }
        Command::List => list(global).await,
        Command::Ls { id } => ls(global, &id).await,
        Command::Verify {
            id: Some(id),
            temp_work_dir,
            ..
        } => verify(global, &id, temp_work_dir).await,
        Command::Verify {
            id: None,
            temp_work_dir,
            ..
        } => verify_all(global, temp_work_dir).await,
        Command::Restore {
            id,
            target: Some(dir),
            include,
            keep_one_time_keys,
            ..
        } => extract(global, &id, &dir, include, keep_one_time_keys).await,
        Command::Restore {
            id,
            yes,
            keep_one_time_keys,
            ..
        } => restore(global, &id, yes, keep_one_time_keys).await,
        Command::Delete { id } => delete(global, &id).await,
        Command::Unlock { yes } => unlock(global, yes).await,
        Command::Prune {
            keep_at_least,
            older_than_days,
            dry_run,
        } => prune(global, keep_at_least, older_than_days, dry_run).await,
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
    // With --pebble, the daemon must answer too (a wrong socket fails here, not in create).
    if let Some(socket) = &global.pebble {
        let layout = config::workload_layout(&global.layout).map_err(Failure::usage)?;
        PebbleContainer::new(socket.clone())
            .exists(&layout.root)
            .await
            .map_err(|e| workload_failure(socket, &e))?;
    }
    output::with_spinner(
        format!("checking {}", target.describe()),
        target.check_bucket(),
    )
    .await?;
    if global.json {
        emit_json(&json!({
            "ok": true,
            "bucket": target.client.bucket(),
            "path": target.client.prefix(),
            "endpoint": target.params.endpoint(),
            "region": target.client.region(),
        }));
    } else {
        emit(&format!("ok: {} is usable\n", target.describe()));
    }
    Ok(())
}

async fn create(
    global: &GlobalArgs,
    snapshot_timeout: Option<u64>,
    new_passphrase: bool,
) -> Result<(), Failure> {
    let target = Target::load(global)?;
    let passphrase = passphrase(global)?;
    let layout = pipeline_layout(global).await?;
    target.check_bucket().await?;
    let container = container(global, &layout);
    let token = CancelToken::new();
    let view = output::ProgressView::new(
        format!("backing up {} to {}", layout.root, target.describe()),
        global.json,
    );
    let options = BackupOptions::default()
        .snapshot_timeout(snapshot_timeout.map(std::time::Duration::from_secs))
        .cancel(token.clone())
        .lock(lock_options(global))
        .max_bandwidth_mib(global.limit_upload)
        .new_passphrase(new_passphrase)
        .progress(Some(view.callback()));
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
    let manifest = &report.manifest;
    for warning in &manifest.warnings {
        output::warn(warning);
    }
    let files = report.files;
    if global.json {
        emit_json(&json!({
            "id": report.id.as_str(),
            "files": files,
            "plaintext_bytes": manifest.plaintext_bytes,
            "ciphertext_bytes": manifest.ciphertext_bytes,
            "duration_seconds": report.duration.as_secs_f64(),
            "warnings": manifest.warnings,
        }));
    } else {
        emit(&format!("{}\n", report.id));
    }
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

async fn list(global: &GlobalArgs) -> Result<(), Failure> {
    let target = Target::load(global)?;
    let backups = output::with_spinner(
        format!("listing {}", target.describe()),
        list_backups(&target.client),
    )
    .await
    .map_err(|e| target.failure(e, true))?;
    if global.json {
        emit(&format!("{}\n", output::backups_json(&backups)));
    } else if backups.is_empty() {
        emit(&format!("no backups in {}\n", target.describe()));
    } else {
        emit(&output::backups_table(&backups));
    }
    for b in backups.iter().filter(|b| b.id_time_disagrees()) {
        eprintln!(
            "warning: {}: its id says {} but the server stored it at {} (a wrong clock on the host that made it); backups are ordered and aged by the server's time",
            b.id,
            output::rfc3339(b.id.created()),
            output::rfc3339(b.last_modified)
        );
    }
    Ok(())
}

async fn ls(global: &GlobalArgs, id: &IdArg) -> Result<(), Failure> {
    let target = Target::load(global)?;
    target.check_bucket().await?;
    let id = &target.resolve(id).await?;
    let manifest = match read_manifest(&target.client, id).await {
        Ok(manifest) => manifest,
        Err(BackupError::MissingManifest { .. }) => {
            return Err(Failure::failed(format!(
                "backup {id} has no manifest, so there is no listing of it: an incomplete \
                 backup is not restorable, and a legacy one's contents are known only by \
                 downloading it (`verify {id}` does)"
            )));
        }
        Err(e) => return Err(target.failure(e, false)),
    };
    let entries = contents::entries(&manifest);
    if global.json {
        emit_json(&contents::to_json(&entries));
    } else {
        emit(&contents::table(&entries));
    }
    Ok(())
}

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

async fn verify(global: &GlobalArgs, id: &IdArg, temp_work_dir: bool) -> Result<(), Failure> {
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

async fn verify_all(global: &GlobalArgs, temp_work_dir: bool) -> Result<(), Failure> {
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

async fn restore(
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
            return Err(Failure::new(
                Kind::Declined,
                "restore cancelled at the prompt; nothing was changed",
            ));
        }
    }
    let container = container(global, &layout);
    let view =
        output::ProgressView::new(format!("restoring {id} into {}", layout.root), global.json);
    let options = RestoreOptions::default()
        .lock(lock_options(global))
        .max_bandwidth_mib(global.limit_download)
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
        emit_json(&json!({
            "id": id.as_str(),
            "status": report.status,
            "root": layout.root,
            "restored": report.restored,
            "removed": report.dropped,
            "stripped_modes": report.stripped_modes,
            "one_time_keys_removed": report.one_time_keys_removed,
            "one_time_keys_kept": keep_one_time_keys,
            "ciphertext_bytes": report.ciphertext_bytes,
            "duration_seconds": report.duration.as_secs_f64(),
            "warnings": report.warnings,
        }));
        return Ok(());
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
    emit(&text);
    Ok(())
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

/// `restore --target`: the backup extracted into a directory, nothing live touched.
async fn extract(
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
    let view = output::ProgressView::new(format!("extracting {id} into {dir}"), global.json);
    let options = RestoreOptions::default()
        .max_bandwidth_mib(global.limit_download)
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
        emit_json(&json!({
            "id": id.as_str(),
            "status": report.status,
            "target": dir,
            "extracted": report.extracted,
            "stripped_modes": report.stripped_modes,
            "one_time_keys_removed": report.one_time_keys_removed,
            "one_time_keys_kept": keep_one_time_keys,
            "ciphertext_bytes": report.ciphertext_bytes,
            "duration_seconds": report.duration.as_secs_f64(),
            "warnings": report.warnings,
        }));
        return Ok(());
    }
    let mut text = format!(
        "extracted {id} ({}) into {dir}: {} encrypted, in {} ({})\n",
        report.status,
        output::size(report.ciphertext_bytes),
        output::seconds(report.duration),
        output::rate(report.ciphertext_bytes, report.duration),
    );
    for path in &report.extracted {
        text.push_str(&format!("  extracted {path}\n"));
    }
    push_modes_and_keys(
        &mut text,
        &report.stripped_modes,
        report.one_time_keys_removed,
        "extracted",
    );
    emit(&text);
    Ok(())
}

async fn delete(global: &GlobalArgs, id: &IdArg) -> Result<(), Failure> {
    let target = Target::load(global)?;
    target.check_bucket().await?;
    let id = &target.resolve(id).await?;
    let lock = lock_options(global);
    let run = output::with_spinner(
        format!("deleting {id}"),
        interrupt::cancellable(delete_backup_with(&target.client, id, &lock)),
    )
    .await;
    run.map_err(|signal| {
        Failure::new(
            Kind::Interrupted(signal),
            "interrupted: the delete was stopped",
        )
    })?
    .map_err(|e| target.failure(e, false))?;
    if global.json {
        emit_json(&json!({ "deleted": id.as_str() }));
    } else {
        emit(&format!("deleted {id} from {}\n", target.describe()));
    }
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

async fn prune(
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
        eprintln!(
            "note: no retention set (--older-than-days, --keep-at-least, or delete-older-than-days in {}): only incomplete leftovers are removed",
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
        Failure::new(
            Kind::Interrupted(signal),
            "interrupted: the prune was stopped",
        )
    })?
    .map_err(|e| target.failure(e, true))?;
    if global.json {
        let deleted: Vec<serde_json::Value> = report
            .deleted
            .iter()
            .map(|b| {
                json!({
                    "id": b.id.as_str(),
                    "status": b.status,
                    "size": b.size,
                    "last_modified": output::rfc3339(b.last_modified),
                    "reason": prune_reason(b, &policy, &age),
                })
            })
            .collect();
        let ids = |ids: &[BackupId]| {
            ids.iter()
                .map(|i| i.as_str().to_string())
                .collect::<Vec<_>>()
        };
        emit_json(&json!({
            "dry_run": dry_run,
            "deleted": deleted,
            "kept": ids(&report.kept),
            "protected": ids(&report.protected),
            "aborted_uploads": report.aborted_uploads,
            "create_running": report.create_running,
            "warnings": report.plan.warnings,
            "plan": report.plan,
        }));
        return Ok(());
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    let mut text = String::new();
    for warning in &report.plan.warnings {
        eprintln!("warning: {warning}");
    }
    for b in &report.deleted {
        text.push_str(&format!(
            "{verb} {} ({}, {}, {}): {}\n",
            b.id,
            b.status,
            output::size(b.size),
            output::rfc3339(b.last_modified),
            prune_reason(b, &policy, &age),
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
    target.check_bucket().await?;
    let info = match BackupLock::inspect(&target.client)
        .await
        .map_err(|e| target.failure(e, false))?
    {
        Some(info) if !info.released => info,
        _ => {
            if global.json {
                emit_json(&json!({ "removed": false, "held": false }));
            } else {
                emit(&format!(
                    "no backup lock is held in {}\n",
                    target.describe()
                ));
            }
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
            return Err(Failure::usage(format!(
                "{held}; pass --yes to remove it (there is no terminal to ask on)"
            )));
        }
        let question = format!(
            "{held}.\nRemove it only if that operation is no longer running: a create, \
             restore, delete or prune could then run at the same time.\nType yes to continue: "
        );
        if !confirm(&question) {
            return Err(Failure::new(
                Kind::Declined,
                "unlock cancelled at the prompt; the lock was left in place",
            ));
        }
    }
    if BackupLock::force_release(&target.client, &info)
        .await
        .map_err(|e| target.failure(e, false))?
    {
        if global.json {
            emit_json(&json!({ "removed": true, "held": true, "holder": info.holder() }));
        } else {
            emit(&format!(
                "removed the backup lock held by {}\n",
                info.holder()
            ));
        }
        Ok(())
    } else {
        Err(Failure::failed(
            "the lock changed while unlocking (refreshed or taken by another operation); nothing was removed",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::{Owner, parse_owner};

    #[test]
    fn the_workload_owner_is_read_from_stat_with_unknown_names_as_none() {
        assert_eq!(
            parse_owner("65534:65534:nobody:nogroup"),
            Some(Owner {
                uid: 65534,
                gid: 65534,
                user: Some("nobody".into()),
                group: Some("nogroup".into()),
            })
        );
        assert_eq!(
            parse_owner("1234:5678:UNKNOWN:UNKNOWN"),
            Some(Owner {
                uid: 1234,
                gid: 5678,
                user: None,
                group: None,
            })
        );
        for bad in ["", "x:1:a:b", "1:x:a:b", "1:2:a:b:c", "1:2"] {
            assert_eq!(parse_owner(bad), None, "{bad:?}");
        }
    }
}

//! The public error types, one per concern.
//!
//! Every enum is `#[non_exhaustive]` so variants can be added without a breaking
//! change. Messages are lower-case, name the bad value or field, and never carry a
//! secret (passphrase, secret key, environment values).

use std::fmt;
use std::time::Duration;

/// One problem found while validating configuration: the field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    /// The field, named as the input that held it spells it:
    ///
    /// - a key of the S3 relation data (or of a file holding it): the relation key,
    ///   kebab-case, e.g. `bucket`, `access-key`, `s3-uri-style`;
    /// - a key of `homeserver.yaml`: the YAML key, dotted below the top level, e.g.
    ///   `media_store_path`, `database.args.database`;
    /// - an environment variable: its name, e.g. `AWS_PROFILE`;
    /// - a value given through this crate's API (a [`Layout`](crate::Layout) field, an
    ///   argument such as [`extract_backup_with`](crate::extract_backup_with)'s `target`, a [`BackupId`](crate::BackupId)):
    ///   its Rust name, snake_case, e.g. `data_dir`, `target`, `backup_id`.
    ///
    /// A program that takes these values from elsewhere (the CLI's `--data-dir`) maps the
    /// names to its own in one place.
    pub field: String,
    /// What is wrong with it, e.g. `must be 3 to 63 characters long`.
    pub message: String,
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Invalid or unreadable configuration (S3 parameters, layout, options).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// One or more fields failed validation; every problem is listed.
    #[error("invalid configuration: {}", join_problems(.problems))]
    Invalid {
        /// Every problem found, each naming its field.
        problems: Vec<FieldProblem>,
    },
    /// The data could not be parsed at all (wrong type, malformed document).
    #[error("could not parse {what}: {message}")]
    Parse {
        /// What was being parsed, e.g. `s3 parameters`.
        what: String,
        /// The parser's message (never contains secret values).
        message: String,
    },
}

fn join_problems(problems: &[FieldProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl ConfigError {
    /// The field names that have a problem (empty for [`ConfigError::Parse`]).
    pub fn fields(&self) -> Vec<&str> {
        match self {
            ConfigError::Invalid { problems } => {
                problems.iter().map(|p| p.field.as_str()).collect()
            }
            ConfigError::Parse { .. } => Vec::new(),
        }
    }

    /// One problem with one field.
    pub(crate) fn field(field: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            problems: vec![FieldProblem {
                field: field.into(),
                message: message.into(),
            }],
        }
    }
}

/// A failure talking to S3-compatible storage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum S3Error {
    /// The client could not be built from the parameters (e.g. a bad CA certificate).
    #[error("could not build the s3 client: {0}")]
    Client(String),
    /// The object (or bucket) does not exist.
    #[error("object not found: s3://{bucket}/{key}")]
    NotFound {
        /// The bucket.
        bucket: String,
        /// The full object key.
        key: String,
    },
    /// The server does not implement this operation (some S3-compatible servers).
    #[error("{operation} is not implemented by the server")]
    NotImplemented {
        /// The S3 operation, e.g. `ListMultipartUploads`.
        operation: &'static str,
    },
    /// A request failed. Match its fields, not its text: `status` and `code` when the
    /// server answered, `transport` when no answer came, and the SDK's error as the
    /// `source` (its chain down to the I/O or TLS error).
    #[error("{operation} failed for s3://{bucket}/{key}: {message}")]
    Request {
        /// The S3 operation, e.g. `HeadObject`.
        operation: &'static str,
        /// The bucket.
        bucket: String,
        /// The key or prefix involved (may be empty).
        key: String,
        /// The HTTP status of the server's answer; `None` when no answer came.
        status: Option<u16>,
        /// The service's error code (e.g. `AccessDenied`, `SignatureDoesNotMatch`,
        /// `NoSuchBucket`); `None` when the answer had none (a HEAD's has no body).
        code: Option<Box<str>>,
        /// Why no answer came (refused, TLS, …); `None` when the server answered.
        transport: Option<Transport>,
        /// The error as the SDK or server reported it (no credentials), for people.
        message: Box<str>,
        /// The SDK's error, whose chain leads to the cause.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A streamed upload ([`ObjectStore::put_object_stream`](crate::ObjectStore::put_object_stream))
    /// was given up before any request failed: its body could not be read, or needed
    /// more parts than S3 allows. Its multipart upload was aborted.
    #[error("the upload to s3://{bucket}/{key} was given up: {reason}")]
    UploadGivenUp {
        /// The bucket.
        bucket: String,
        /// The full object key.
        key: String,
        /// Why, e.g. `reading the body failed`.
        reason: String,
        /// The read's error, when reading the body failed.
        #[source]
        source: Option<std::io::Error>,
    },
    /// An object read whole (a lock object, a manifest) is longer than the most this
    /// crate reads of such an object; it was not read past that.
    #[error(
        "s3://{bucket}/{key} is larger than {limit} bytes, the most read of such an object: not one this crate wrote (remove or replace it)"
    )]
    TooLarge {
        /// The bucket.
        bucket: String,
        /// The full object key.
        key: String,
        /// The cap, in bytes.
        limit: u64,
    },
    /// A listing was given up: the server sent continuation tokens that repeat (a
    /// cycle) or more pages or objects than any bucket of backups holds.
    #[error("{operation} of s3://{bucket}/{prefix} was given up: {reason}")]
    Listing {
        /// The S3 operation, e.g. `ListObjectsV2`.
        operation: &'static str,
        /// The bucket.
        bucket: String,
        /// The key prefix listed (may be empty).
        prefix: String,
        /// What the server did, e.g. `continuation token "b" was sent twice (a cycle)`.
        reason: String,
    },
    /// The server did not answer within the per-request deadline
    /// ([`S3Parameters::with_request_timeout`](crate::S3Parameters::with_request_timeout)).
    #[error(
        "{operation} of s3://{bucket}/{key} got no answer within {} s (the per-request deadline; is the endpoint up and reachable?)",
        .timeout.as_secs()
    )]
    TimedOut {
        /// The S3 operation, e.g. `HeadBucket`.
        operation: &'static str,
        /// The bucket.
        bucket: String,
        /// The key or prefix involved (may be empty).
        key: String,
        /// The deadline that passed.
        timeout: Duration,
    },
}

/// Why an S3 request got no answer ([`S3Error::Request::transport`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// Nothing listens at the endpoint: the connection was refused.
    ConnectionRefused,
    /// The connection or the answer did not come in time.
    TimedOut,
    /// The server's TLS certificate is not trusted (unknown issuer, wrong name, expired).
    UntrustedCertificate,
    /// The server does not speak TLS (e.g. `https://` to a plain-HTTP port).
    NotTls,
    /// Anything else (a name that does not resolve, a reset connection, …): the
    /// `source` chain says what.
    Other,
}

impl Transport {
    /// Classifies a request's error by its chain (the I/O and TLS errors in it).
    pub(crate) fn of(error: &(dyn std::error::Error + 'static)) -> Transport {
        // An io::Error's `source` skips the error it wraps (`get_ref`), and TLS errors
        // come wrapped twice: both ways down are walked, and a TLS error anywhere wins
        // over the I/O error kinds around it.
        let mut found = Transport::Other;
        let mut pending = vec![error];
        let mut seen = 0;
        while let Some(e) = pending.pop() {
            seen += 1;
            if seen > 64 {
                break;
            }
            match Self::of_one(e) {
                Some(kind @ (Transport::UntrustedCertificate | Transport::NotTls)) => return kind,
                Some(kind) => found = kind,
                None => {}
            }
            if let Some(inner) = e
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
            {
                pending.push(inner);
            }
            pending.extend(e.source());
        }
        found
    }

    fn of_one(e: &(dyn std::error::Error + 'static)) -> Option<Transport> {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return match tls {
                rustls::Error::InvalidCertificate(_) => Some(Transport::UntrustedCertificate),
                rustls::Error::InvalidMessage(_) => Some(Transport::NotTls),
                _ => None,
            };
        }
        match e.downcast_ref::<std::io::Error>()?.kind() {
            std::io::ErrorKind::ConnectionRefused => Some(Transport::ConnectionRefused),
            std::io::ErrorKind::TimedOut => Some(Transport::TimedOut),
            _ => None,
        }
    }
}

/// A failure of a [`Container`](crate::Container) operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContainerError {
    /// An argument was rejected before anything ran (relative path, NUL byte, …).
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidArgument {
        /// What the value is, e.g. `path` or `argument`.
        what: &'static str,
        /// The offending value (never a secret: environment values are not checked here).
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The path does not exist.
    #[error("path not found: {path}")]
    NotFound {
        /// The missing path.
        path: String,
    },
    /// The user or group does not exist.
    #[error("unknown {kind} {name:?}")]
    UnknownUser {
        /// `user` or `group`.
        kind: &'static str,
        /// The name given.
        name: String,
    },
    /// Permission was denied (e.g. switching user without being root).
    #[error("permission denied for {path}: {reason}")]
    PermissionDenied {
        /// The path or command involved.
        path: String,
        /// Why.
        reason: String,
    },
    /// The command could not be started (missing binary, bad working dir, …).
    #[error("could not start {command:?}: {source}")]
    CouldNotStart {
        /// The program name (`argv[0]`).
        command: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The command ran and exited with a non-zero status (or was killed by a signal).
    #[error("{command:?} exited with code {exit_code}: {stderr}")]
    ExitedNonZero {
        /// The program name (`argv[0]`).
        command: String,
        /// The exit code; `128 + signal number` when killed by a signal (as a shell
        /// reports it, e.g. 137 for `SIGKILL`).
        exit_code: i32,
        /// Standard error, trimmed to about 1 KiB (its end is kept).
        stderr: String,
    },
    /// The command was killed after running longer than its timeout.
    #[error("{command:?} timed out after {timeout:?}")]
    TimedOut {
        /// The program name (`argv[0]`).
        command: String,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// A service operation failed.
    #[error("service {service:?}: {message}")]
    Service {
        /// The service name.
        service: String,
        /// What went wrong.
        message: String,
    },
    /// Any other I/O failure on a path.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The path involved.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The container does not implement this operation (e.g. a third-party
    /// [`Container`](crate::Container) written before [`Container::exec_streaming`](crate::Container::exec_streaming)
    /// existed).
    #[error("{operation} is not supported by this container")]
    Unsupported {
        /// The operation, e.g. `exec_streaming`.
        operation: &'static str,
    },
}

/// The stage of a backup or restore that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// Collecting the paths to back up.
    Collect,
    /// Taking the SQLite snapshot.
    Snapshot,
    /// Archiving with tar.
    Tar,
    /// Compressing or decompressing with zstd
    /// ([`Compression::Zstd`](crate::Compression::Zstd)).
    Compress,
    /// Encrypting or decrypting with gpg.
    Gpg,
    /// Uploading or downloading with the aws CLI.
    Upload,
    /// Downloading.
    Download,
    /// Checking the uploaded object.
    Check,
    /// Writing or reading the manifest.
    Manifest,
    /// Extracting into staging.
    Extract,
    /// Swapping staged files into place.
    Swap,
    /// Stopping or starting the service.
    Service,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Stage::Collect => "collect",
            Stage::Snapshot => "snapshot",
            Stage::Tar => "tar",
            Stage::Compress => "compress",
            Stage::Gpg => "gpg",
            Stage::Upload => "upload",
            Stage::Download => "download",
            Stage::Check => "check",
            Stage::Manifest => "manifest",
            Stage::Extract => "extract",
            Stage::Swap => "swap",
            Stage::Service => "service",
        };
        f.write_str(s)
    }
}

/// A failure of a backup life-cycle operation (create, verify, restore, …).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// Bad configuration (parameters, layout, homeserver.yaml, passphrase).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An S3 request failed.
    #[error(transparent)]
    S3(#[from] S3Error),
    /// A container operation failed outside the pipeline.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// The passphrase is unusable (empty, or contains a newline or NUL).
    #[error("invalid passphrase: {0}")]
    InvalidPassphrase(&'static str),
    /// There is nothing to back up.
    #[error("nothing to back up under {root}: no signing key, database or local media found")]
    NothingToBackUp {
        /// The layout root searched.
        root: String,
    },
    /// A pipeline stage failed.
    #[error("{stage} failed (exit code {exit_code}): {stderr}")]
    StageFailed {
        /// The failing stage.
        stage: Stage,
        /// The stage's exit code.
        exit_code: i32,
        /// The stage's trimmed standard error.
        stderr: String,
    },
    /// The backup does not exist.
    #[error("backup not found: {id}")]
    NotFound {
        /// The backup id.
        id: String,
    },
    /// The backup is a pack other backups need (incremental backups built on it):
    /// deleting it alone would break their chains. Delete those first (newest first),
    /// or all of them with [`delete_backup_with_dependents`](crate::delete_backup_with_dependents)
    /// ([`Backups::delete_with_dependents`](crate::Backups::delete_with_dependents), the
    /// CLI's `delete ID --with-dependents`).
    #[error("backup {id} is needed by {}: delete those first (newest first), or delete it with its dependents (--with-dependents), or keep it", .dependents.join(", "))]
    NeededByOthers {
        /// The backup id.
        id: String,
        /// The backups that need it, newest first.
        dependents: Vec<String>,
    },
    /// The backup has no manifest, so its integrity cannot be checked.
    #[error("backup {id} has no manifest")]
    MissingManifest {
        /// The backup id.
        id: String,
    },
    /// gpg could not decrypt: wrong passphrase.
    #[error("wrong passphrase for backup {id}")]
    WrongPassphrase {
        /// The backup id.
        id: String,
    },
    /// A create's passphrase does not open the newest backup: refused, unless the
    /// change is intended ([`BackupOptions::new_passphrase`](crate::BackupOptions::new_passphrase)).
    #[error(
        "the passphrase does not open the newest backup {id}: a mistyped passphrase would make backups nobody can restore; if the new passphrase is intended, create with --new-passphrase (BackupOptions::new_passphrase)"
    )]
    PassphraseMismatch {
        /// The newest backup, which the passphrase does not open.
        id: String,
    },
    /// The object does not match its manifest or failed gpg's integrity check.
    #[error("backup {id} is corrupted: {reason}")]
    Corrupted {
        /// The backup id.
        id: String,
        /// What did not match.
        reason: String,
    },
    /// The archive holds a member that would land outside the expected paths.
    #[error("unsafe archive member {member:?}: {reason}")]
    UnsafeMember {
        /// The member name.
        member: String,
        /// Why it is refused.
        reason: String,
    },
    /// Another operation holds the backup lock (and did not free it within the wait).
    #[error(
        "the backup lock {key} is held by {holder} since {}, last refreshed {refreshed_seconds_ago} s ago by the server's clock (it expires {ttl_seconds} s after its last refresh); wait, or if that process is gone remove the lock with `synapse-backup unlock`",
        .since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )]
    LockHeld {
        /// The lock object's key.
        key: String,
        /// Who holds it: unit, operation, host and pid.
        holder: String,
        /// When the holder took it (the holder's clock).
        since: chrono::DateTime<chrono::Utc>,
        /// Seconds since its last refresh, by the server's clock.
        refreshed_seconds_ago: u64,
        /// The holder's time to live in seconds.
        ttl_seconds: u64,
    },
    /// The S3 server does not honour conditional writes, so the lock cannot be safe.
    #[error(
        "the s3 server does not honour conditional writes, so the backup lock cannot be made safe ({detail}; probed with {key}); on a single-unit deployment turn locking off with LockMode::Off (synapse-backup --no-lock)"
    )]
    LockUnsupported {
        /// The probe object's key.
        key: String,
        /// What the probe saw.
        detail: String,
    },
    /// The lock could not be taken or was lost while held.
    #[error("the backup lock {key} was lost: {reason}")]
    LockLost {
        /// The lock object's key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The operation was cancelled (see [`CancelToken`](crate::backup::plan::CancelToken));
    /// its work dir and partial upload were removed.
    #[error(
        "cancelled: the backup was stopped, its work dir removed and its partial upload deleted"
    )]
    Cancelled,
    /// Not enough free space: checked before staging (restore, extraction, verify), the
    /// database snapshot (`create`) or the swap's copies across file systems, so nothing
    /// was written and live data was not touched.
    #[error("not enough free space in {path}: need {needed} bytes, {available} available")]
    InsufficientSpace {
        /// A directory on the file system that lacks the room: where the run's work
        /// dir was made (the data dir, or the workload's temp dir), or where the swap
        /// would copy to.
        path: String,
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// The directory a backup is extracted into is not empty (an extraction never
    /// replaces files; see [`crate::extract_backup_with`]).
    #[error("{path} is not empty: extract into a new or empty directory")]
    TargetNotEmpty {
        /// The target directory.
        path: String,
    },
    /// What an extraction was asked to include is not in the backup.
    #[error("cannot extract from backup {id}: {reason}")]
    NotInBackup {
        /// The backup id.
        id: String,
        /// Which path, and why.
        reason: String,
    },
    /// The staging file system filled up while a backup of unknown size (a legacy one)
    /// was extracted; live data was not touched.
    #[error("no space left in {path} (needed about {needed_about} bytes)")]
    NoSpaceLeft {
        /// Where the staging work dir was made (the data dir, or the workload's temp
        /// dir).
        path: String,
        /// An estimate of the space the backup needs.
        needed_about: u64,
    },
    /// Staging, or `create`'s database snapshot, would have left less free space than
    /// the reserve kept for the live homeserver beside it
    /// ([`RestoreOptions::space_reserve_mib`](crate::RestoreOptions::space_reserve_mib),
    /// [`BackupOptions::space_reserve_mib`](crate::BackupOptions::space_reserve_mib)):
    /// found before it started, or while staging ran (tar was stopped there, and what it
    /// staged removed); live data was not touched.
    #[error(
        "not enough free space in {path}: {needed} bytes needed and {reserve} kept free for the live homeserver, {available} available"
    )]
    SpaceReserve {
        /// Where the work dir of staging or the snapshot was made (the data dir, or the
        /// workload's temp dir).
        path: String,
        /// What staging needs: the estimate checked before it, or more when it was
        /// stopped while staging (what it had taken by then, or tar had listed).
        needed: u64,
        /// The free bytes before staging.
        available: u64,
        /// The bytes kept free.
        reserve: u64,
    },
    /// A failure of this crate itself, not of the backup, the bucket or the host: work
    /// of ours run as a task panicked or was cancelled (a bug to report, with the
    /// message).
    #[error("internal error while {doing}: {source}")]
    Internal {
        /// What was being done, e.g. `parsing the manifest KEY of backup ID`.
        doing: String,
        /// The cause (for a task, its [`tokio::task::JoinError`]).
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

/// Trims text to at most `max` bytes, keeping its end (where errors usually are).
pub(crate) fn trim_tail(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

/// A file index or tree listing of an incremental backup that cannot be used (see
/// [`crate::IndexEntry`]). Every variant names where: the list and its line (record).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// A line (record) does not parse.
    #[error("{what} line {line}: {message}")]
    Malformed {
        /// Which list: `file index` or `tree listing`.
        what: &'static str,
        /// The 1-based line (record) number.
        line: u64,
        /// What is wrong with it.
        message: String,
    },
    /// A path is not after the one before it in byte order (lists are sorted, each path
    /// once, so they are compared in one pass without being held).
    #[error(
        "{what} line {line}: {path:?} does not sort after {previous:?} (paths must be in byte order, each once)"
    )]
    Unsorted {
        /// Which list.
        what: &'static str,
        /// The 1-based line (record) number.
        line: u64,
        /// The path out of order (lossy UTF-8).
        path: String,
        /// The path before it.
        previous: String,
    },
    /// An index entry names a pack that is not in the backup's chain.
    #[error(
        "file index line {line}: {path:?} names pack {pack}, which is not in the chain ({chain})"
    )]
    UnknownPack {
        /// The 1-based line number.
        line: u64,
        /// The entry's path (lossy UTF-8).
        path: String,
        /// The pack it names.
        pack: String,
        /// The chain's packs, comma-separated.
        chain: String,
    },
    /// The index read is not the one the pack's inner manifest authenticates.
    #[error(
        "the file index of {id} has SHA-256 {actual} but its pack's inner manifest records {expected}: the index was altered or swapped"
    )]
    Mismatch {
        /// The backup whose index it is.
        id: String,
        /// The SHA-256 the inner manifest records.
        expected: String,
        /// The SHA-256 of what was read.
        actual: String,
    },
    /// A line of a list read from the bucket is longer than any this crate writes (a
    /// damaged or foreign object): refused before it is held whole.
    #[error(
        "{what} {key} line {line}: longer than {limit} bytes without a newline (a damaged or foreign object)"
    )]
    LineTooLong {
        /// Which list.
        what: &'static str,
        /// The object's key.
        key: String,
        /// The 1-based line number.
        line: u64,
        /// The longest line read.
        limit: usize,
    },
    /// A list read from the bucket is longer than any this crate reads.
    #[error("{what} {key} is longer than {limit} bytes")]
    TooLarge {
        /// Which list.
        what: &'static str,
        /// The object's key.
        key: String,
        /// The largest list read.
        limit: u64,
    },
    /// Reading or writing a list failed.
    #[error("could not {action} the {what}: {source}")]
    Io {
        /// `read` or `write`.
        action: &'static str,
        /// Which list.
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_tail_keeps_the_end_on_a_char_boundary() {
        let s = format!("{}é-end", "a".repeat(2000));
        let t = trim_tail(&s, 6);
        assert!(t.ends_with("é-end") || t.ends_with("-end"), "{t}");
        assert!(t.starts_with('…'));
        assert_eq!(trim_tail("  short \n", 10), "short");
    }

    #[test]
    fn invalid_lists_every_field() {
        let e = ConfigError::Invalid {
            problems: vec![
                FieldProblem {
                    field: "bucket".into(),
                    message: "is required".into(),
                },
                FieldProblem {
                    field: "region".into(),
                    message: "or endpoint must be set".into(),
                },
            ],
        };
        let s = e.to_string();
        assert!(
            s.contains("bucket: is required") && s.contains("region: or endpoint"),
            "{s}"
        );
        assert_eq!(e.fields(), vec!["bucket", "region"]);
    }
}

//! The pure backup plan: ids, object keys, the constant shell scripts with their
//! arguments and environment, the aws CLI config. No I/O: unit-tested exactly.
//!
//! Nothing variable is ever interpolated into shell text: the scripts are constants,
//! values go in as environment variables or positional parameters, and the list of
//! paths goes in as a NUL-separated file read by `tar --null --verbatim-files-from`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

use crate::backup::layout::{Layout, join};
use crate::backup::scripts::{self, WorkFile};
use crate::error::{BackupError, ConfigError};
use crate::s3::S3Parameters;
use crate::s3::aws_cli::{self, Transfer, TransferSettings};

/// The metadata key our data objects carry (`x-amz-meta-created-by`).
pub const METADATA_KEY: &str = "created-by";
/// The suffix of a backup's manifest object.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";
/// The value of [`METADATA_KEY`] on objects this crate wrote.
pub fn metadata_value() -> String {
    format!("synapse-backup/{}", env!("CARGO_PKG_VERSION"))
}

/// A backup id: `backup-` and a UTC timestamp `%Y%m%d%H%M%S` plus microseconds, as the
/// reference charm names them.
///
/// ```
/// use synapse_backup::BackupId;
/// let id: BackupId = "backup-20261126071900123456".parse()?;
/// assert_eq!(id.created().to_rfc3339(), "2026-11-26T07:19:00.123456+00:00");
/// # Ok::<(), synapse_backup::ConfigError>(())
/// ```
///
/// In a manifest it is the same string; deserialising checks the form, so a manifest
/// naming a malformed id fails to parse rather than being listed or restored.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct BackupId(String);

impl<'de> serde::Deserialize<'de> for BackupId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "{text:?} is not a backup id of the form backup-YYYYMMDDhhmmssffffff"
            ))
        })
    }
}

static LAST_ID_MICROS: Mutex<i64> = Mutex::new(0);

impl BackupId {
    /// A new id for now (UTC), later than every id this process made before, so two
    /// calls in the same microsecond still get distinct ids.
    pub fn generate() -> Self {
        Self::generate_at(Utc::now())
    }

    pub(crate) fn generate_at(now: DateTime<Utc>) -> Self {
        let mut last = LAST_ID_MICROS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let micros = now.timestamp_micros().max(*last + 1);
        *last = micros;
        Self::from_time(Utc.timestamp_micros(micros).single().unwrap_or(now))
    }

    /// The id for a given time.
    pub fn from_time(time: DateTime<Utc>) -> Self {
        BackupId(format!("backup-{}", time.format("%Y%m%d%H%M%S%6f")))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The time in the id (UTC for ids this crate made; the reference charm may have
    /// used local time).
    pub fn created(&self) -> DateTime<Utc> {
        NaiveDateTime::parse_from_str(&self.0["backup-".len()..], "%Y%m%d%H%M%S%6f")
            .map(|t| t.and_utc())
            .unwrap_or_default()
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for BackupId {
    type Err = crate::error::ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.strip_prefix("backup-").unwrap_or("");
        let ok = digits.len() == 20
            && digits.bytes().all(|b| b.is_ascii_digit())
            && NaiveDateTime::parse_from_str(digits, "%Y%m%d%H%M%S%6f").is_ok();
        if ok {
            Ok(BackupId(s.to_string()))
        } else {
            Err(crate::error::ConfigError::field(
                "backup_id",
                format!("{s:?} is not of the form backup-YYYYMMDDhhmmssffffff"),
            ))
        }
    }
}

/// The compression of the archive, before it is encrypted.
///
/// In a manifest it is its [`name`](Self::name) (`none`, `zlib-6`, `zstd-3`);
/// deserialising accepts exactly those names.
///
/// ```
/// use synapse_backup::Compression;
///
/// let zstd: Compression = "zstd-3".parse()?;
/// assert_eq!(zstd, Compression::Zstd(3));
/// assert_eq!(zstd.to_string(), "zstd-3");
/// # Ok::<(), synapse_backup::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    /// No compression (the default: media is already compressed, gpg's zlib is the
    /// reference pipeline's bottleneck, and the object stays restorable by the charm's
    /// plain `aws s3 cp | gpg --decrypt | tar -x`).
    #[default]
    None,
    /// gpg's ZLIB at a level 1-9 (the reference uses gpg's default, ZLIB level 6); worth
    /// it only for text-heavy deployments, at several times the CPU cost.
    Zlib(u8),
    /// zstd at a level 1-19, between tar and gpg (`tar | zstd | gpg`): the database
    /// shrinks 2 to 3 times at zstd's speed, and zstd passes media it cannot compress
    /// almost for free (see the README's benchmark). The workload needs the `zstd`
    /// command ([`Layout::zstd`](crate::Layout::zstd)) to make and to restore such a
    /// backup; by hand, `gpg --decrypt | zstd -d | tar -x`.
    Zstd(u8),
}

impl Compression {
    /// zstd's level, when the archive goes through zstd.
    pub(crate) fn zstd_level(self) -> Option<u8> {
        match self {
            Compression::Zstd(level) => Some(level.clamp(1, 19)),
            Compression::None | Compression::Zlib(_) => None,
        }
    }

    fn gpg_args(self) -> Vec<String> {
        match self {
            Compression::None | Compression::Zstd(_) => {
                vec!["--compress-algo".into(), "none".into()]
            }
            Compression::Zlib(level) => {
                vec![
                    "--compress-algo".into(),
                    "zlib".into(),
                    "--compress-level".into(),
                    level.clamp(1, 9).to_string(),
                ]
            }
        }
    }

    /// A short name for the manifest, e.g. `none`, `zlib-6` or `zstd-3`.
    pub fn name(self) -> String {
        match self {
            Compression::None => "none".into(),
            Compression::Zlib(level) => format!("zlib-{}", level.clamp(1, 9)),
            Compression::Zstd(level) => format!("zstd-{}", level.clamp(1, 19)),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for Compression {
    type Err = ConfigError;

    /// Parses a [`name`](Self::name): `none`, `zlib-1` to `zlib-9` or `zstd-1` to
    /// `zstd-19`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "none" {
            return Ok(Compression::None);
        }
        // Digits only, no leading zero: one spelling per level.
        let level = |digits: &str, top: u8| {
            Some(digits)
                .filter(|d| !d.starts_with('0') && d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse::<u8>().ok())
                .filter(|l| (1..=top).contains(l))
        };
        let parsed = match (s.strip_prefix("zlib-"), s.strip_prefix("zstd-")) {
            (Some(d), _) => level(d, 9).map(Compression::Zlib),
            (_, Some(d)) => level(d, 19).map(Compression::Zstd),
            _ => None,
        };
        parsed.ok_or_else(|| ConfigError::Parse {
            what: "compression".into(),
            message: format!("{s:?} is not none, zlib-1 to zlib-9 or zstd-1 to zstd-19"),
        })
    }
}

impl serde::Serialize for Compression {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Compression {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse::<Compression>()
            .map_err(|e| match e {
                ConfigError::Parse { message, .. } => serde::de::Error::custom(message),
                other => serde::de::Error::custom(other),
            })
    }
}

/// Stops a running [`create_backup_with`](crate::create_backup_with) cleanly: once
/// [`cancel`](Self::cancel) is called, the backup stops its pipeline (killing its
/// process group), removes its own work dir, deletes its partial upload and returns
/// [`BackupError::Cancelled`]. Clones share the same state: keep one, pass one in
/// [`BackupOptions::cancel`], and call `cancel` from a signal handler.
///
/// A thin wrapper over [`tokio_util::sync::CancellationToken`]: made from one
/// (`CancelToken::from(token)`, e.g. a child of the charm's own), it is cancelled with
/// it; [`as_cancellation_token`](Self::as_cancellation_token) gives it back.
///
/// ```
/// use synapse_backup::CancelToken;
/// use tokio_util::sync::CancellationToken;
///
/// let charm = CancellationToken::new();
/// let cancel = CancelToken::from(charm.child_token());
/// charm.cancel();
/// assert!(cancel.is_cancelled());
/// ```
#[derive(Clone, Default)]
pub struct CancelToken(std::sync::Arc<tokio_util::sync::CancellationToken>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every operation holding a clone of this token to stop.
    pub fn cancel(&self) {
        self.0.cancel();
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once the token is cancelled.
    pub async fn cancelled(&self) {
        self.0.cancelled().await;
    }

    /// The `CancellationToken` this wraps (cancelling either cancels both).
    pub fn as_cancellation_token(&self) -> &tokio_util::sync::CancellationToken {
        &self.0
    }
}

impl From<tokio_util::sync::CancellationToken> for CancelToken {
    fn from(token: tokio_util::sync::CancellationToken) -> Self {
        CancelToken(std::sync::Arc::new(token))
    }
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// Two tokens are equal when they are clones of one another.
impl PartialEq for CancelToken {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for CancelToken {}

/// Tuning for [`create_backup_with`](crate::create_backup_with). `Default` holds the
/// measured defaults (see the README's benchmark); a setter per field changes one:
///
/// ```
/// use std::time::Duration;
/// use synapse_backup::{BackupOptions, Bandwidth, Compression};
///
/// let options = BackupOptions::default()
///     .compression(Compression::Zlib(1))
///     .max_bandwidth(Some("500K".parse::<Bandwidth>()?))
///     .timeout(Some(Duration::from_secs(4 * 3600)));
/// assert_eq!(options.max_bandwidth, Some(Bandwidth::kib(500)));
/// # Ok::<(), synapse_backup::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, derive_setters::Setters)]
#[non_exhaustive]
#[setters(prefix = "", generate = true)]
pub struct BackupOptions {
    /// The archive's compression before gpg encrypts it: none by default, see
    /// [`Compression`].
    pub compression: Compression,
    /// The aws CLI's `max_concurrent_requests` (the reference uses 1).
    pub upload_concurrency: u32,
    /// The aws CLI's `multipart_chunksize` in MiB; the CLI raises it when
    /// `--expected-size` would need more than 10,000 parts. The CLI reads up to ten parts
    /// ahead, so its memory is about `10 × part_size_mib` + 45 MB.
    pub part_size_mib: u32,
    /// gpg's S2K iteration count: how many bytes of salted passphrase SHA-256 hashes to
    /// derive the key (65011712 is the maximum, the one gpg calibrates to on current
    /// machines; passing it spares a gpg-agent start per backup).
    pub s2k_count: u32,
    /// Kill the pipeline after this long.
    pub timeout: Option<std::time::Duration>,
    /// Give up the SQLite snapshot after this long (a database another process keeps
    /// locked would otherwise stall the backup forever); no limit when `None`.
    pub snapshot_timeout: Option<std::time::Duration>,
    /// Cancels the backup when cancelled (see [`CancelToken`]).
    pub cancel: CancelToken,
    /// Cap the upload (the aws CLI's `max_bandwidth`), so a backup does not saturate
    /// the workload's network; no cap when `None`.
    pub max_bandwidth: Option<crate::Bandwidth>,
    /// How the backup lock is taken (default: required, fail at once when held).
    pub lock: crate::backup::lock::LockOptions,
    /// Receives the pipeline's progress (see [`Progress`](crate::Progress)); none when
    /// `None`.
    pub progress: Option<crate::backup::progress::ProgressCallback>,
    /// The passphrase is new on purpose: do not refuse it when it does not open the
    /// newest backup (the backup made becomes the newest, so later creates check
    /// against it). By default a create refuses a passphrase that does not open the
    /// newest complete backup (or, on a bucket of legacy backups only, the newest
    /// legacy one): a mistyped passphrase would make backups nobody can restore.
    pub new_passphrase: bool,
    /// The CPU and I/O priority of the snapshot and the pipeline (default:
    /// [`Priority::gentle`](crate::Priority::gentle), which yields to the homeserver;
    /// [`Priority::inherit`](crate::Priority::inherit) keeps the caller's own).
    pub priority: crate::backup::priority::Priority,
    /// Make an incremental backup: a pack of the keys, the database and only the media
    /// files no pack of the newest backup's chain holds with the same path, size and
    /// modification time, the rest referenced through the backup's file index. Full
    /// anyway (with the reason logged and in [`BackupReport::kind`](crate::BackupReport))
    /// on a first backup, a base without an index or that does not check, a legacy
    /// base, [`Self::new_passphrase`], or when [`Self::chain`] says so. Default: full.
    pub incremental: bool,
    /// When an incremental create makes a full backup anyway.
    pub chain: crate::backup::incremental::ChainPolicy,
    /// Where the upload runs: the workload's aws CLI ([`Transfer::Workload`](crate::Transfer::Workload),
    /// the default) or this library, reading the ciphertext from the workload's
    /// pipeline ([`Transfer::Library`](crate::Transfer::Library): no S3 credential,
    /// config or SSE-C key enters the workload; see the trade-off there). With
    /// `Library`, [`upload_concurrency`](Self::upload_concurrency),
    /// [`part_size_mib`](Self::part_size_mib) and [`max_bandwidth`](Self::max_bandwidth)
    /// (settings of the aws CLI) do not apply: the library uploads
    /// [`library_part_mib`](Self::library_part_mib) MiB parts,
    /// [`library_parts_in_flight`](Self::library_parts_in_flight) at once.
    pub transfer: crate::backup::transfer::Transfer,
    /// The part size of [`Transfer::Library`](crate::Transfer::Library)'s upload, in
    /// MiB (default [`LIBRARY_PART_MIB`](crate::LIBRARY_PART_MIB); at least 5, S3's
    /// smallest, and raised for a backup that would need more than 8,000 parts). This
    /// process holds up to `library_parts_in_flight + 1` parts: larger parts mean fewer
    /// requests (each one a round trip, and a fixed cost on servers such as moto) for
    /// more memory. Not used with `Transfer::Workload`.
    pub library_part_mib: u32,
    /// How many parts of [`Transfer::Library`](crate::Transfer::Library)'s upload are
    /// uploaded at once (default
    /// [`LIBRARY_PARTS_IN_FLIGHT`](crate::LIBRARY_PARTS_IN_FLIGHT); at least 1). More
    /// hides more of a real network's round trips, and holds one more part each. Not
    /// used with `Transfer::Workload`.
    pub library_parts_in_flight: u32,
    /// The free space the database snapshot leaves on the file system it is written to
    /// (the work dir's, beside the live data), in MiB: `None` (the default) keeps the
    /// smaller of [`DEFAULT_SPACE_RESERVE_MIB`](crate::DEFAULT_SPACE_RESERVE_MIB) (256)
    /// and [`DEFAULT_SPACE_RESERVE_PERCENT`](crate::DEFAULT_SPACE_RESERVE_PERCENT) (5 %)
    /// of it, `Some(0)` none. The snapshot stays there until the upload ends, while the
    /// homeserver keeps writing beside it: a snapshot that fits but would leave less free
    /// is not taken ([`BackupError::SpaceReserve`](crate::BackupError::SpaceReserve)).
    /// See [`RestoreOptions::space_reserve_mib`](crate::RestoreOptions::space_reserve_mib).
    #[setters(strip_option)]
    pub space_reserve_mib: Option<u32>,
}

/// The default [`BackupOptions::snapshot_timeout`]: ten minutes, far more than the
/// online backup of a healthy database takes.
pub const DEFAULT_SNAPSHOT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

impl Default for BackupOptions {
    fn default() -> Self {
        // Measured with `cargo bench --bench e2e` (README): on a loopback server the
        // throughput barely depends on the concurrency (1-8 within noise: the pipeline is
        // CPU-bound), 4 hides per-request latency on real networks at no memory cost.
        // The aws CLI reads up to 10 parts ahead whatever the concurrency, so its memory
        // is ~10 × the part size + ~45 MB: 5 MiB (S3's minimum) keeps the pipeline at
        // ~1.4× the reference's RSS where 8 MiB reaches 1.5× and 16 MiB 1.8×, for ~3-5%
        // less throughput.
        BackupOptions {
            compression: Compression::None,
            upload_concurrency: 4,
            part_size_mib: 5,
            s2k_count: 65_011_712,
            timeout: None,
            snapshot_timeout: Some(DEFAULT_SNAPSHOT_TIMEOUT),
            cancel: CancelToken::default(),
            max_bandwidth: None,
            lock: crate::backup::lock::LockOptions::default(),
            progress: None,
            new_passphrase: false,
            priority: crate::backup::priority::Priority::gentle(),
            incremental: false,
            chain: crate::backup::incremental::ChainPolicy::default(),
            transfer: crate::backup::transfer::Transfer::Workload,
            library_part_mib: crate::backup::transfer::LIBRARY_PART_MIB,
            library_parts_in_flight: crate::backup::transfer::LIBRARY_PARTS_IN_FLIGHT,
            space_reserve_mib: None,
        }
    }
}

/// Checks a passphrase gpg can read whole from a file.
///
/// # Errors
/// [`BackupError::InvalidPassphrase`] when it is empty or has a newline or NUL (gpg
/// reads only the first line of a passphrase file and would silently truncate it).
pub fn check_passphrase(passphrase: &str) -> Result<(), BackupError> {
    if passphrase.is_empty() {
        Err(BackupError::InvalidPassphrase("it is empty"))
    } else if passphrase.contains(['\n', '\r']) {
        Err(BackupError::InvalidPassphrase(
            "it contains a line break (gpg would read only the first line)",
        ))
    } else if passphrase.contains('\0') {
        Err(BackupError::InvalidPassphrase("it contains a NUL byte"))
    } else {
        Ok(())
    }
}

/// The aws CLI config file used for one run instead of `aws configure set` (see
/// [`aws_cli::config_file`]: every value checked against the file's syntax).
///
/// # Errors
/// [`ConfigError::Invalid`] when a value cannot be written safely.
pub fn aws_config_file(
    params: &S3Parameters,
    options: &BackupOptions,
) -> Result<String, ConfigError> {
    let mut settings = TransferSettings::new(options.upload_concurrency, options.part_size_mib);
    settings.max_bandwidth = options.max_bandwidth;
    aws_cli::config_file(params, &settings)
}

fn region(params: &S3Parameters) -> String {
    params
        .region()
        .filter(|r| !r.is_empty())
        .unwrap_or("us-east-1")
        .to_string()
}

/// Files in a run's private work dir (mode 0700, owned by the workload user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkDir {
    /// The work dir (container path, already under the layout root).
    pub dir: String,
}

impl WorkDir {
    /// The prefix every work dir's name starts with.
    pub const PREFIX: &'static str = ".synapse-backup-";

    /// The work dir already made at `dir` (a container path, under the layout root).
    pub fn at(dir: impl Into<String>) -> Self {
        WorkDir { dir: dir.into() }
    }

    /// The container path a run's work dir is made in (`mktemp -d` there, as the
    /// workload user).
    pub fn base(layout: &Layout) -> String {
        layout.host_path(layout.work_base())
    }

    /// A work dir named `name` (without a random part) under the layout's work base.
    #[cfg(test)]
    pub fn new(layout: &Layout, name: &str) -> Self {
        WorkDir {
            dir: layout.host_path(&join(
                layout.work_base(),
                &format!(".synapse-backup-{name}"),
            )),
        }
    }

    /// A file in the work dir.
    pub fn file(&self, name: &str) -> String {
        join(&self.dir, name)
    }

    /// The dir it was made in (the layout's work base, or the workload's temp dir): the
    /// one to name for its file system's free space, which outlives the work dir.
    pub fn parent(&self) -> &str {
        match self.dir.trim_end_matches('/').rsplit_once('/') {
            Some(("", _)) | None => "/",
            Some((parent, _)) => parent,
        }
    }
}

/// A command to run in the workload: argv and environment.
#[derive(Clone, PartialEq, Eq)]
pub struct ScriptCall {
    /// argv: `bash -c <constant script> bash <args…>`.
    pub argv: Vec<String>,
    /// Environment (may hold secrets: never logged).
    pub env: BTreeMap<String, String>,
}

impl fmt::Debug for ScriptCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptCall")
            .field("argv", &self.argv)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The environment of both scripts: tool paths, work dir, S3 credentials (see
/// [`aws_cli::credential_env`]: static keys, or the AWS chain's variables), the region,
/// the endpoint and the per-run aws CLI config file.
pub fn script_env(
    layout: &Layout,
    params: &S3Parameters,
    work: &WorkDir,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("SB_WORK".into(), work.dir.clone());
    env.insert("SB_ROOT".into(), layout.root.clone());
    env.insert("SB_TAR".into(), layout.tar.clone());
    env.insert("SB_GPG".into(), layout.gpg.clone());
    env.insert("SB_AWS".into(), layout.aws.clone());
    env.insert("SB_PYTHON".into(), layout.python3.clone());
    env.insert("SB_SQLITE3".into(), layout.sqlite3.clone());
    env.insert("SB_ZSTD".into(), layout.zstd.clone());
    env.insert("SB_HASH_PY".into(), scripts::HASH_PY.into());
    env.insert("GNUPGHOME".into(), work.path(WorkFile::Gnupg));
    // No credentials file of the workload user's: static keys, or the AWS chain's own
    // (its absolute path in credential_env).
    env.insert(
        "AWS_SHARED_CREDENTIALS_FILE".into(),
        work.path(WorkFile::AwsCredentials),
    );
    env.extend(aws_cli::credential_env(params));
    env.insert("AWS_DEFAULT_REGION".into(), region(params));
    env.insert("AWS_CONFIG_FILE".into(), work.path(WorkFile::AwsConfig));
    env.insert("AWS_RETRY_MODE".into(), "standard".into());
    if let Some(endpoint) = params.endpoint().filter(|e| !e.is_empty()) {
        env.insert("AWS_ENDPOINT_URL".into(), endpoint.into());
    }
    if !params.tls_ca_chain().is_empty() {
        env.insert("AWS_CA_BUNDLE".into(), work.path(WorkFile::CaBundle));
    }
    env
}

/// The CA bundle file content for `tls-ca-chain`, if any.
pub fn ca_bundle(params: &S3Parameters) -> Option<String> {
    if params.tls_ca_chain().is_empty() {
        return None;
    }
    let mut out = String::new();
    for pem in params.tls_ca_chain() {
        out.push_str(pem.trim());
        out.push('\n');
    }
    Some(out)
}

/// The aws CLI arguments common to every call: `--endpoint-url` (older CLIs ignore
/// `AWS_ENDPOINT_URL`).
pub fn aws_common_args(params: &S3Parameters) -> Vec<String> {
    match params.endpoint().filter(|e| !e.is_empty()) {
        Some(endpoint) => vec!["--endpoint-url".into(), endpoint.into()],
        None => Vec::new(),
    }
}

/// `s3://bucket/key`.
pub fn s3_url(params: &S3Parameters, key: &str) -> String {
    format!("s3://{}/{}", params.bucket(), key)
}

/// The call that runs `prepare.sh`. `db` is the live database (container path)
/// to snapshot, if any.
pub fn prepare_call(
    layout: &Layout,
    params: &S3Parameters,
    work: &WorkDir,
    db: Option<&str>,
) -> ScriptCall {
    let mut env = script_env(layout, params, work);
    if let Some(db) = db {
        env.insert("SB_DB".into(), layout.host_path(db));
        env.insert("SB_DB_MEMBER".into(), Layout::member_name(db));
    }
    ScriptCall {
        argv: vec![
            layout.bash.clone(),
            "-c".into(),
            scripts::PREPARE.into(),
            "bash".into(),
        ],
        env,
    }
}

/// The call that runs `backup.sh` for the object `key`.
pub fn backup_call(
    layout: &Layout,
    params: &S3Parameters,
    options: &BackupOptions,
    work: &WorkDir,
    key: &str,
    expected_size: u64,
) -> ScriptCall {
    let mut env = script_env(layout, params, work);
    env.insert("SB_URL".into(), s3_url(params, key));
    env.insert("SB_EXPECTED_SIZE".into(), expected_size.max(1).to_string());
    let mut argv = vec![
        layout.bash.clone(),
        "-c".into(),
        scripts::BACKUP.into(),
        "bash".into(),
    ];
    argv.extend(["--s2k-count".into(), options.s2k_count.to_string()]);
    argv.extend(options.compression.gpg_args());
    if let Some(level) = options.compression.zstd_level() {
        env.insert("SB_ZSTD_LEVEL".into(), level.to_string());
    }
    argv.push("--".into());
    argv.extend(aws_common_args(params));
    argv.extend(aws_cli::sse_args(
        params,
        Transfer::Upload,
        &work.path(WorkFile::SseCKey),
    ));
    if let Some(class) = params.storage_class().filter(|c| !c.is_empty()) {
        argv.extend(["--storage-class".into(), class.into()]);
    }
    argv.extend([
        "--metadata".into(),
        format!("{{\"{METADATA_KEY}\":\"{}\"}}", metadata_value()),
    ]);
    ScriptCall { argv, env }
}

/// What tar said about a live tree that changed while it was archived (GNU tar's exit
/// 1, or exit 2 for top-level members that vanished).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct LiveChanges {
    /// Files removed after tar listed their directory: left out of the archive.
    pub removed: u64,
    /// Files that changed (grew or were rewritten) while tar read them: archived at
    /// the size tar first saw.
    pub changed: Vec<String>,
    /// Files that shrank while tar read them: archived zero-padded to their first
    /// size, so their content is not what Synapse wrote.
    pub shrunk: Vec<String>,
    /// Directories whose entries changed (a file added: it is not in this backup).
    pub dirs_changed: Vec<String>,
    /// Top-level media dirs (`local_*`) that vanished before tar reached them.
    pub vanished: Vec<String>,
}

impl LiveChanges {
    /// One warning line per kind of change, for the manifest and the operator.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.removed > 0 {
            out.push(format!(
                "{} file(s) were removed while the backup ran and are not in it",
                self.removed
            ));
        }
        for name in &self.shrunk {
            out.push(format!(
                "{name} shrank while it was archived: it was zero-padded to its first size, so its content in this backup is damaged"
            ));
        }
        if !self.changed.is_empty() {
            out.push(format!(
                "{} file(s) changed while they were archived (kept at the size first seen): {}",
                self.changed.len(),
                self.changed.join(", ")
            ));
        }
        if !self.dirs_changed.is_empty() {
            out.push(format!(
                "files were added while the backup ran and are not in it, under: {}",
                self.dirs_changed.join(", ")
            ));
        }
        for name in &self.vanished {
            out.push(format!(
                "{name} vanished while the backup ran and is not in it"
            ));
        }
        out
    }
}

/// Reads tar's standard error after it exited with `status` (1 or 2) while creating
/// an archive of a live tree. `media_members` are the top-level `local_*` members,
/// which may vanish (a media purge); nothing else may.
///
/// # Errors
/// The first line that is not one of those warnings (a read error, a vanished key):
/// the backup must fail.
pub fn read_tar_warnings(
    status: i32,
    stderr: &str,
    media_members: &[String],
) -> Result<LiveChanges, String> {
    let mut changes = LiveChanges::default();
    if status != 1 && status != 2 {
        return Err(format!("tar exited with status {status}"));
    }
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        // `<program>: <name>: <message>`, the name escaped (--quoting-style=escape).
        let Some((_, rest)) = line.split_once(": ") else {
            return Err(line.to_string());
        };
        if rest == "Exiting with failure status due to previous errors" {
            continue;
        }
        let name_of = |suffix: &str| {
            rest.strip_suffix(suffix)
                .map(|n| String::from_utf8_lossy(&crate::backup::listing::unescape(n)).into_owned())
        };
        if let Some(name) = name_of(": File removed before we read it") {
            let _ = name;
            changes.removed += 1;
        } else if let Some(name) = name_of(": file changed as we read it") {
            changes.changed.push(name);
        } else if let Some(name) = name_of(": socket ignored") {
            let _ = name;
        } else if let Some(name) = name_of(": Cannot stat: No such file or directory")
            && status == 2
            && media_members.contains(&name)
        {
            changes.vanished.push(name);
        } else if let Some((name, _)) = rest.split_once(": File shrank by ")
            && rest.ends_with(" bytes; padding with zeros")
        {
            changes.shrunk.push(
                String::from_utf8_lossy(&crate::backup::listing::unescape(name)).into_owned(),
            );
        } else {
            return Err(line.to_string());
        }
    }
    Ok(changes)
}

/// The NUL-separated member list (relative to the root) for `tar --files-from`.
pub fn files_list(members: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in members {
        out.extend_from_slice(m.as_bytes());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_work_dirs_parent_is_the_dir_it_was_made_in() {
        assert_eq!(WorkDir::at("/data/.synapse-backup-x").parent(), "/data");
        assert_eq!(
            WorkDir::at("/r/data/.synapse-backup-x/").parent(),
            "/r/data"
        );
        assert_eq!(WorkDir::at("/.synapse-backup-x").parent(), "/");
        assert_eq!(WorkDir::at("relative").parent(), "/");
    }
    use std::collections::HashMap;

    fn params(extra: &[(&str, &str)]) -> S3Parameters {
        let mut m: HashMap<String, String> = [
            ("access-key", "AKIDEXAMPLE"),
            ("secret-key", "s3cr3t-value"),
            ("bucket", "synapse-backups"),
            ("endpoint", "http://127.0.0.1:9000"),
            ("s3-uri-style", "path"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            m.insert(k.to_string(), v.to_string());
        }
        S3Parameters::from_relation_data(&m).unwrap()
    }

    #[test]
    fn ids_are_formatted_like_the_reference_and_unique() {
        let t = Utc.with_ymd_and_hms(2026, 11, 26, 7, 19, 0).unwrap();
        assert_eq!(
            BackupId::from_time(t).as_str(),
            "backup-20261126071900000000"
        );
        let a = BackupId::generate_at(t);
        let b = BackupId::generate_at(t);
        assert_ne!(a, b);
        assert!(b > a);
        assert_eq!(
            b.created().timestamp_micros() - a.created().timestamp_micros(),
            1
        );
        assert!("backup-2026".parse::<BackupId>().is_err());
        assert!("backup-20261326071900000000".parse::<BackupId>().is_err());
        let e = "nope".parse::<BackupId>().unwrap_err();
        assert!(e.to_string().contains("backup_id") && e.to_string().contains("nope"));
    }

    #[test]
    fn passphrase_rules() {
        assert!(check_passphrase("correct horse").is_ok());
        for bad in ["", "a\nb", "a\rb", "a\0b"] {
            let e = check_passphrase(bad).unwrap_err();
            assert!(matches!(e, BackupError::InvalidPassphrase(_)));
            assert!(!e.to_string().contains(bad) || bad.is_empty());
        }
    }

    #[test]
    fn backup_call_is_exact_and_carries_no_secret_in_argv() {
        let layout = Layout {
            root: "/tmp/root".into(),
            ..Layout::default()
        };
        let p = params(&[("storage-class", "STANDARD_IA")]);
        let work = WorkDir::new(&layout, "backup-1");
        assert_eq!(work.dir, "/tmp/root/data/.synapse-backup-backup-1");
        let call = backup_call(
            &layout,
            &p,
            &BackupOptions::default(),
            &work,
            "pfx/backup-1",
            1234,
        );
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            call.argv[3..],
            [
                "bash",
                "--s2k-count",
                "65011712",
                "--compress-algo",
                "none",
                "--",
                "--endpoint-url",
                "http://127.0.0.1:9000",
                "--storage-class",
                "STANDARD_IA",
                "--metadata",
                &format!("{{\"created-by\":\"synapse-backup/{version}\"}}"),
            ]
        );
        assert_eq!(call.argv[0], "/usr/bin/bash");
        assert_eq!(call.argv[2], scripts::BACKUP);
        for arg in &call.argv {
            assert!(
                !arg.contains("s3cr3t-value") && !arg.contains("AKIDEXAMPLE"),
                "secret in argv: {arg}"
            );
        }
        assert_eq!(call.env["SB_URL"], "s3://synapse-backups/pfx/backup-1");
        assert_eq!(call.env["SB_EXPECTED_SIZE"], "1234");
        assert_eq!(call.env["AWS_SECRET_ACCESS_KEY"], "s3cr3t-value");
        assert_eq!(call.env["AWS_ACCESS_KEY_ID"], "AKIDEXAMPLE");
        assert_eq!(call.env["AWS_ENDPOINT_URL"], "http://127.0.0.1:9000");
        assert_eq!(call.env["AWS_DEFAULT_REGION"], "us-east-1");
        assert_eq!(
            call.env["AWS_CONFIG_FILE"],
            "/tmp/root/data/.synapse-backup-backup-1/aws-config"
        );
        assert_eq!(
            call.env["GNUPGHOME"],
            "/tmp/root/data/.synapse-backup-backup-1/gnupg"
        );
        assert!(!call.env.contains_key("AWS_CA_BUNDLE"));
        let debug = format!("{call:?}");
        assert!(!debug.contains("s3cr3t-value"), "{debug}");
    }

    #[test]
    fn compression_and_options_reach_gpg() {
        let layout = Layout::default();
        let p = params(&[]);
        let work = WorkDir::new(&layout, "x");
        let opts = BackupOptions {
            compression: Compression::Zlib(6),
            s2k_count: 1024,
            ..BackupOptions::default()
        };
        let call = backup_call(&layout, &p, &opts, &work, "k", 0);
        let sep = call.argv.iter().position(|a| a == "--").unwrap();
        assert_eq!(
            call.argv[4..sep],
            [
                "--s2k-count",
                "1024",
                "--compress-algo",
                "zlib",
                "--compress-level",
                "6"
            ]
        );
        assert_eq!(call.env["SB_EXPECTED_SIZE"], "1");
        assert_eq!(Compression::Zlib(42).name(), "zlib-9");
        assert!(!call.env.contains_key("SB_ZSTD_LEVEL"));
    }

    #[test]
    fn zstd_runs_before_gpg_which_then_compresses_nothing() {
        let layout = Layout::default().zstd("/opt/zstd".to_string());
        let p = params(&[]);
        let work = WorkDir::new(&layout, "x");
        let opts = BackupOptions::default().compression(Compression::Zstd(30));
        let call = backup_call(&layout, &p, &opts, &work, "k", 0);
        let sep = call.argv.iter().position(|a| a == "--").unwrap();
        assert_eq!(call.argv[6..sep], ["--compress-algo", "none"]);
        assert_eq!(call.env["SB_ZSTD_LEVEL"], "19", "levels above 19 clamp");
        assert_eq!(call.env["SB_ZSTD"], "/opt/zstd");
        assert_eq!(Compression::Zstd(0).name(), "zstd-1");
        assert_eq!(Compression::Zlib(3).zstd_level(), None);
    }

    #[test]
    fn prepare_call_snapshots_the_database_member() {
        let layout = Layout {
            root: "/r".into(),
            ..Layout::default()
        };
        let p = params(&[]);
        let work = WorkDir::new(&layout, "x");
        let call = prepare_call(&layout, &p, &work, Some("/data/homeserver.db"));
        assert_eq!(call.argv, ["/usr/bin/bash", "-c", scripts::PREPARE, "bash"]);
        assert_eq!(call.env["SB_DB"], "/r/data/homeserver.db");
        assert_eq!(call.env["SB_DB_MEMBER"], "data/homeserver.db");
        assert!(
            !prepare_call(&layout, &p, &work, None)
                .env
                .contains_key("SB_DB")
        );
    }

    #[test]
    fn aws_config_replaces_configure_set() {
        let p = params(&[]);
        let text = aws_config_file(
            &p,
            &BackupOptions {
                upload_concurrency: 8,
                part_size_mib: 64,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            text,
            "[default]\nregion = us-east-1\ns3 =\n  addressing_style = path\n  max_concurrent_requests = 8\n  multipart_chunksize = 64MB\n  multipart_threshold = 64MB\n"
        );
        let capped = aws_config_file(
            &p,
            &BackupOptions {
                max_bandwidth: Some(crate::Bandwidth::mib(5)),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(capped.ends_with("  max_bandwidth = 5MB/s\n"), "{capped}");
        let v = params(&[("s3-uri-style", "host"), ("region", "eu-west-1")]);
        let text = aws_config_file(&v, &BackupOptions::default()).unwrap();
        assert!(
            text.contains("addressing_style = virtual") && text.contains("region = eu-west-1"),
            "{text}"
        );
    }

    #[test]
    fn files_list_is_nul_separated_and_verbatim() {
        let members = vec![
            "data/a b.key".to_string(),
            "-rf".to_string(),
            "data/$(touch x)".to_string(),
        ];
        assert_eq!(
            files_list(&members),
            b"data/a b.key\0-rf\0data/$(touch x)\0"
        );
    }
}

//! The fetch side of reading a backup back, shared by verify, restore and extract:
//! find the backup and its manifest ([`locate_compact`]), download, decrypt and list or stage
//! it in the workload ([`fetch`]), and check what was staged ([`check_staged`],
//! [`check_staged_db`]) before anything live is touched.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::backup::catalog::{BackupStatus, MAX_MANIFEST_BYTES, backup_status};
use crate::backup::decryption::{Untrusted, check_status};
use crate::backup::gate::Gated;
use crate::backup::layout::{HomeserverConfig, Layout};
use crate::backup::manifest::{EntryKind, InnerManifest, Manifest, ManifestFiles};
use crate::backup::plan::{BackupId, Compression, MANIFEST_SUFFIX, ScriptCall, WorkDir};
use crate::backup::progress::{self, ProgressStage};
use crate::backup::reserve::Reserve;
use crate::backup::restore::RestoreOptions;
use crate::backup::restore_plan::{
    self, ArchiveMember, CheckedMembers, MemberRef, MemberSource, Members, Part, RestoreRules,
    parse_member_line, parse_members, parse_staged_record,
};
use crate::backup::run::Run;
use crate::backup::scripts::{Exit, Pipeline, WorkFile};
use crate::backup::transfer::{self, Transfer};
use crate::backup::work::{self, Outputs, parse_field};
use crate::container::{Container, ExecOptions, ExecOutput};
use crate::error::{BackupError, ContainerError, S3Error, Stage};
use crate::s3::{ObjectStore, S3Parameters};
use tokio::io::AsyncWriteExt;

/// A backup found in the bucket: its status, manifest (when complete), key and size.
pub(crate) struct Fetched {
    pub(crate) status: BackupStatus,
    /// Its manifest; found by [`locate_compact`], without its file list (in `files`).
    pub(crate) manifest: Option<Manifest>,
    /// The manifest's file list, compact, when found by [`locate_compact`].
    pub(crate) files: ManifestFiles,
    pub(crate) key: String,
    pub(crate) size: u64,
    pub(crate) warnings: Vec<String>,
    /// Members its manifest lists that another pack of the backup holds (an
    /// incremental backup's database pack), sorted: its own pack's listing is checked
    /// against the manifest without them.
    pub(crate) apart: Vec<Vec<u8>>,
}

impl Fetched {
    /// How its archive was compressed, as its manifest says (none without one: a
    /// backup without a manifest predates zstd). A manifest that lies only makes the
    /// read fail: zstd or tar refuse what they cannot read.
    pub(crate) fn compression(&self) -> Compression {
        self.manifest
            .as_ref()
            .map_or(Compression::None, |m| m.compression)
    }

    /// The manifest's entries, `(path, kind, size)`, wherever they are held.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (Cow<'_, [u8]>, EntryKind, u64)> + Clone {
        self.manifest
            .iter()
            .flat_map(|m| m.files.iter())
            .map(|f| (Cow::Borrowed(f.path.as_bytes()), f.kind, f.size))
            .chain(
                self.files
                    .iter()
                    .map(|(path, kind, size)| (Cow::Owned(path), kind, size)),
            )
    }
}

/// What the fetch pipeline produced and the checks of it found.
pub(crate) struct Fetch {
    /// The SHA-256 of the encrypted stream, as the pipeline computed it.
    pub(crate) sha256: String,
    /// tar's listing of the stream, compact (for a chain read, the backup's own pack's
    /// followed by the older packs' members once joined).
    pub(crate) listing: Members,
    pub(crate) inner: Option<InnerManifest>,
    pub(crate) warnings: Vec<String>,
}

impl Fetch {
    /// tar's listing of the stream (with the older packs' members after a chain read),
    /// in order, wherever it is held.
    pub(crate) fn all_members(&self) -> impl Iterator<Item = MemberRef<'_>> + Clone + '_ {
        self.listing.iter()
    }

    /// The members after the inner manifest (and its directory) that leads them.
    pub(crate) fn archived(&self) -> impl Iterator<Item = MemberRef<'_>> + Clone + '_ {
        let skip = restore_plan::inner_position(self.all_members()).map_or(0, |p| p + 1);
        self.all_members().skip(skip)
    }
}

/// Finds the backup and its manifest, its file list held compact
/// ([`Fetched::files`]); refuses incomplete ones.
pub(crate) async fn locate_compact(
    client: &(impl ObjectStore + ?Sized),
    id: &BackupId,
) -> Result<Fetched, BackupError> {
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
    let mut files = ManifestFiles::default();
    let manifest = match status {
        BackupStatus::Complete => {
            let m;
            let manifest_key = format!("{key}{MANIFEST_SUFFIX}");
            (m, files) = read_manifest(client, id, &manifest_key, MAX_MANIFEST_BYTES).await?;
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
        files,
        key,
        size: head.size,
        warnings,
        apart: Vec::new(),
    })
}

/// Reads the manifest at `key` and parses it as it arrives (one ranged GET, its chunks
/// handed to the parser on a blocking thread), so that its JSON is never held whole
/// beside the compact file list: at most `max` bytes ([`MAX_MANIFEST_BYTES`]) are
/// read. A store without ranged reads gives the object whole, parsed as before.
///
/// # Errors
/// [`BackupError::S3`] when the GET fails; [`BackupError::Corrupted`], naming the key,
/// when it is longer than the cap or not a manifest (cut short included).
async fn read_manifest(
    client: &(impl ObjectStore + ?Sized),
    id: &BackupId,
    key: &str,
    max: u64,
) -> Result<(Manifest, ManifestFiles), BackupError> {
    let unreadable = |e: crate::error::ConfigError| BackupError::Corrupted {
        id: id.to_string(),
        reason: format!("unreadable manifest {key}: {e}"),
    };
    let body = match client
        .get_object_range_stream(key, 0, max.saturating_add(1))
        .await
    {
        Ok(body) => body,
        Err(S3Error::NotImplemented { .. }) => {
            let bytes = client.get_object(key, max).await?;
            return Manifest::from_json_compact(&bytes).map_err(unreadable);
        }
        Err(e) => return Err(e.into()),
    };
    let mut reader = BodyReader {
        body,
        chunk: bytes::Bytes::new(),
        read: 0,
        max,
        runtime: tokio::runtime::Handle::current(),
        failed: None,
        too_long: false,
    };
    let (parsed, failed, too_long) = tokio::task::spawn_blocking(move || {
        let parsed = Manifest::from_json_compact_reader(&mut reader);
        (parsed, reader.failed, reader.too_long)
    })
    .await
    .map_err(|e| parse_task_failed(id, key, e))?;
    // The read's own failure (a GET error, too long) rather than the parser's.
    if let Some(e) = failed {
        return Err(e.into());
    }
    if too_long {
        return Err(BackupError::Corrupted {
            id: id.to_string(),
            reason: format!(
                "its manifest {key} is longer than {max} bytes, the most read of a manifest: not one this crate wrote"
            ),
        });
    }
    parsed.map_err(unreadable)
}

/// The error of the blocking manifest parse of `key` that did not finish (it panicked or
/// was cancelled): a failure of ours, not of the backup, so not
/// [`BackupError::Corrupted`].
fn parse_task_failed(id: &BackupId, key: &str, e: tokio::task::JoinError) -> BackupError {
    BackupError::Internal {
        doing: format!("parsing the manifest {key} of backup {id}"),
        source: Box::new(e),
    }
}

/// A ranged GET's body as a blocking [`std::io::Read`] (for a parser on a blocking
/// thread): each chunk is awaited on `runtime`, at most `max` bytes are given (`too_long` says a longer body was cut there), and the first failure of the
/// read is kept in `failed`.
struct BodyReader {
    body: crate::s3::RangeBody,
    chunk: bytes::Bytes,
    read: u64,
    max: u64,
    runtime: tokio::runtime::Handle,
    failed: Option<S3Error>,
    too_long: bool,
}

impl std::io::Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use futures_util::StreamExt as _;
        while self.chunk.is_empty() {
            if self.failed.is_some() || self.too_long {
                return Err(std::io::Error::other("the manifest's read failed"));
            }
            match self.runtime.block_on(self.body.next()) {
                None => return Ok(0),
                Some(Ok(chunk)) => {
                    self.read += chunk.len() as u64;
                    if self.read > self.max {
                        self.too_long = true;
                    } else {
                        self.chunk = chunk;
                    }
                }
                Some(Err(e)) => self.failed = Some(e),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// The call that extracts the whole backup `fetched` into `work`'s stage: its
/// compression, and room for [`staging_need`] checked first.
pub(crate) fn extract_call(
    layout: &Layout,
    params: &S3Parameters,
    work: &WorkDir,
    fetched: &Fetched,
) -> ScriptCall {
    restore_plan::extract_call(
        layout,
        params,
        work,
        &fetched.key,
        fetched.compression(),
        staging_need(fetched),
    )
}

/// The space a restore needs in staging, when a manifest says it: what its entries take
/// on disk ([`EntryKind::on_disk`]: a media store of small files and thumbnail dirs
/// takes several times its bytes), and no less than the archive's plaintext; else the
/// encrypted size (a lower bound: gpg may have compressed it; running out is caught
/// while staging). An eighth more either way for the file system's own overhead.
/// Saturates, and stays within what the script's shell arithmetic can compare.
pub(crate) fn staging_need(fetched: &Fetched) -> u64 {
    let base = fetched.manifest.as_ref().map_or(fetched.size, |m| {
        let on_disk = fetched.entries().fold(0u64, |sum, (_, kind, size)| {
            sum.saturating_add(kind.on_disk(size))
        });
        m.plaintext_bytes.max(fetched.size).max(on_disk)
    });
    base.saturating_add(base / 8)
        .min(u64::try_from(i64::MAX).unwrap_or(u64::MAX))
}

/// What the fetch pipeline left in the work dir whatever its outcome: a failed run may
/// have stopped before the checksum and gpg wrote theirs.
struct Written {
    /// The encrypted stream's SHA-256.
    sha: Option<String>,
    /// The encrypted stream's length.
    length: Option<u64>,
    /// gpg's status lines (empty when gpg never ran).
    status: Vec<u8>,
}

impl Written {
    /// Reads what the pipeline wrote; its length and SHA-256 are `fed`'s when the
    /// library fed it (and summed it: the pipeline then wrote neither).
    async fn read<C: Container + ?Sized>(
        outputs: &Outputs<'_, C>,
        fed: Option<(u64, Option<String>)>,
    ) -> Result<Self, BackupError> {
        let (sha, length) = match fed {
            Some((length, sha)) => (sha, Some(length)),
            None => (
                outputs
                    .text_if_written(WorkFile::Sha256)
                    .await?
                    .and_then(|s| parse_field::<String>(&s, 0)),
                outputs
                    .text_if_written(WorkFile::Length)
                    .await?
                    .and_then(|s| parse_field(&s, 0)),
            ),
        };
        Ok(Written {
            sha,
            length,
            status: outputs
                .read_if_written(WorkFile::GpgStatus)
                .await?
                .unwrap_or_default(),
        })
    }

    /// How the download differs from what its manifest says, if it does.
    fn checksum_problem(&self, fetched: &Fetched) -> Option<String> {
        match &fetched.manifest {
            Some(m) if self.length.is_some_and(|l| l != m.ciphertext_bytes) => Some(format!(
                "downloaded {} bytes but the manifest says {} (truncated)",
                self.length.unwrap_or(0),
                m.ciphertext_bytes
            )),
            Some(m)
                if self
                    .sha
                    .as_deref()
                    .is_some_and(|s| s != m.ciphertext_sha256) =>
            {
                Some("the SHA-256 of the object does not match its manifest".to_string())
            }
            _ => None,
        }
    }
}

/// The backup `id` is corrupted: `reason`.
fn corrupted(id: &BackupId, reason: String) -> BackupError {
    BackupError::Corrupted {
        id: id.to_string(),
        reason,
    }
}

/// What gpg's status says when it does not vouch for the stream.
fn untrusted(id: &BackupId, why: Untrusted) -> BackupError {
    match why {
        Untrusted::BadPassphrase => BackupError::WrongPassphrase { id: id.to_string() },
        other => corrupted(id, format!("refused: {other}")),
    }
}

/// Runs the fetch script and turns its outcome into the precise error: wrong
/// passphrase, corruption (checksum, truncation, gpg's integrity check), data not
/// encrypted with the passphrase, claims that do not match the stream, no space.
/// `part` says what the stream is read as ([`Part`]); `transfer` who downloads it
/// (the caller's choice, for which `work` was made: [`RestoreOptions::pack_transfer`]
/// for a pack of a chain).
#[allow(clippy::too_many_arguments)] // the pieces of one read, each from its own place
pub(crate) async fn fetch<C: Container + ?Sized>(
    run: &Run<'_, C>,
    work: &WorkDir,
    call: &ScriptCall,
    id: &BackupId,
    fetched: &Fetched,
    options: &RestoreOptions,
    stage: ProgressStage,
    part: Part,
    transfer: Transfer,
) -> Result<Fetch, BackupError> {
    let (container, layout, passphrase) = (run.container, run.layout, run.passphrase);
    let library = transfer == Transfer::Library;
    let streamed_call;
    let call = if library {
        streamed_call = restore_plan::streamed_input(call);
        &streamed_call
    } else {
        call
    };
    let mut exec = work::pipeline_options(layout, call, work, options.timeout, passphrase);
    options.priority.apply(&mut exec.environment);
    // A fetch that checks its space (an extraction; verify staging the database).
    if exec.environment.contains_key("SB_SPACE_DIR") {
        Reserve::of(options.space_reserve_mib).apply(&mut exec.environment, true);
    }
    let progress = options.progress.as_ref();
    let total = Some(fetched.size);
    // With the library feeding the pipeline, it counts and sums the bytes as it writes
    // them, and the workload does not (fetch.sh's stdin mode has no checksum stage).
    let count = AtomicU64::new(0);
    let mut summed = None;
    let outcome = if library {
        let ranges = options.library_ranges();
        let feed = |exec| streamed(run, &call.argv, exec, fetched, ranges, &count);
        match progress::run_with_progress(
            container,
            layout,
            work,
            exec,
            progress,
            stage,
            total,
            Some(&count),
            feed,
        )
        .await
        {
            Ok((out, sum)) => {
                summed = sum;
                Ok(out)
            }
            Err(Streamed::Exec(e)) => Err(e),
            Err(Streamed::Download(e)) => return Err(download_error(id, e)),
            Err(Streamed::NotAMessage(why)) => {
                return Err(untrusted(id, Untrusted::NotAMessage(why)));
            }
        }
    } else {
        progress::exec_with_progress(
            container, layout, work, &call.argv, exec, progress, stage, total,
        )
        .await
    };
    let outputs = Outputs::new(container, layout, work);
    // What the library wrote, when it fed the pipeline: its SHA-256 only when it wrote
    // the whole object (a pipeline that ended before reading all of it has none, and
    // is refused for it).
    let fed = library.then(|| (count.load(Ordering::Relaxed), summed));
    let written = Written::read(&outputs, fed).await?;
    let failure = Failure {
        outputs: &outputs,
        call,
        id,
        fetched,
        written: &written,
    };
    match outcome {
        Ok(_) => checked(&outputs, id, fetched, written, part).await,
        Err(ContainerError::ExitedNonZero {
            exit_code, stderr, ..
        }) => Err(failure.exited(exit_code, stderr).await),
        Err(e @ ContainerError::TimedOut { .. }) => Err(BackupError::StageFailed {
            stage: Stage::Download,
            exit_code: -1,
            stderr: e.to_string(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// The checksum stage's statuses when its gate refused the stream (`hash.py`,
/// `common.sh`'s `openpgp_gate`): 3 for what it read, 4 for a stream that ended before
/// its first packets were whole.
const GATE_REFUSED: [i32; 2] = [3, 4];

/// Why a pipeline the library fed failed.
pub(crate) enum Streamed {
    /// The pipeline's own outcome (its exit, a timeout, a container failure).
    Exec(ContainerError),
    /// The library's download (the pipeline was killed).
    Download(S3Error),
    /// The object does not start as an encrypted message (why): none of it was
    /// written into the pipeline, which was killed ([`Gated`]).
    NotAMessage(String),
}

/// Runs the pipeline `argv` with `exec` (its `stdin` is the passphrase line) streamed
/// ([`Container::exec_streaming`]), writing the passphrase line then the first `size`
/// bytes of the object `fetched.key` into its standard input ([`transfer::feed`], in
/// ranges as `ranges` says, counting them in `count`), and
/// waits for it. Gives its output and, when every byte was
/// written, their SHA-256. A download that fails kills the pipeline; a pipeline that
/// stops reading (it failed) ends the download, and its outcome tells why. The object
/// goes through [`Gated`]: gpg sees none of it unless it starts as an encrypted message.
///
/// # Errors
/// [`Streamed::Download`] when a GET fails, [`Streamed::NotAMessage`] when the gate
/// refused the object, else [`Streamed::Exec`].
pub(crate) async fn streamed<C: Container + ?Sized>(
    run: &Run<'_, C>,
    argv: &[String],
    mut exec: ExecOptions,
    fetched: &Fetched,
    ranges: transfer::Ranges,
    count: &AtomicU64,
) -> Result<(ExecOutput, Option<String>), Streamed> {
    let (key, size) = (fetched.key.as_str(), fetched.size);
    let first = exec.stdin.take().unwrap_or_default();
    let mut process = run
        .container
        .exec_streaming(argv, exec)
        .await
        .map_err(Streamed::Exec)?;
    let Some(mut stdin) = process.stdin.take() else {
        return Err(Streamed::Exec(ContainerError::Unsupported {
            operation: "exec_streaming with standard input",
        }));
    };
    let store = &*run.client;
    let feed = async move {
        if stdin.write_all(&first).await.is_err() {
            return Ok(transfer::Fed::Stopped(0));
        }
        match ranges {
            transfer::Ranges::Fixed { range, in_flight } => {
                tracing::debug!(key, range, in_flight, "the library's download starts");
            }
            transfer::Ranges::Auto { in_flight } => tracing::debug!(
                key,
                in_flight,
                "the library's download starts, its ranges chosen by the first's timing"
            ),
        }
        let mut gated = Gated::new(&mut stdin);
        let fed = transfer::feed(store, key, size, ranges, &mut gated, count).await;
        let _ = gated.shutdown().await;
        // A GET that failed is the cause, whatever the gate made of what came before.
        match (fed, gated.refusal()) {
            (Err(e), _) => Err(Streamed::Download(e)),
            (Ok(_), Some(why)) => Err(Streamed::NotAMessage(why.to_string())),
            (Ok(fed), None) => Ok(fed),
        }
    };
    let wait = process.wait();
    tokio::pin!(wait);
    tokio::select! {
        // The pipeline ended first (it failed, or was killed, or stopped reading): its
        // outcome says why, and nothing was summed.
        done = &mut wait => done.map(|out| (out, None)).map_err(Streamed::Exec),
        fed = feed => match fed {
            // Dropping `wait` kills the pipeline's session.
            Err(e) => Err(e),
            Ok(fed) => {
                tracing::debug!(bytes = fed.bytes(), key, "the library's download ended");
                let sum = match fed {
                    transfer::Fed::All(tally) => Some(tally.sha256),
                    transfer::Fed::Stopped(_) => None,
                };
                wait.await.map(|out| (out, sum)).map_err(Streamed::Exec)
            }
        },
    }
}

/// The error of a GET of the library's transfer: a body that does not match the
/// checksum the server stored for the object (the SDK checks it when the server sends
/// one) is the object's corruption, like a SHA-256 that does not match its manifest;
/// anything else is the bucket's error.
fn download_error(id: &BackupId, e: S3Error) -> BackupError {
    match &e {
        S3Error::Request { message, .. } if message.contains("checksum mismatch") => corrupted(
            id,
            format!("the object does not match the checksum its server stored for it: {message}"),
        ),
        _ => e.into(),
    }
}

/// A failed fetch, and what is needed to tell why.
struct Failure<'a, 'o, C: Container + ?Sized> {
    outputs: &'a Outputs<'o, C>,
    call: &'a ScriptCall,
    id: &'a BackupId,
    fetched: &'a Fetched,
    written: &'a Written,
}

impl<C: Container + ?Sized> Failure<'_, '_, C> {
    /// The error of a fetch script that exited with `exit_code`: no space, a download
    /// that does not match its manifest, gpg's verdict, an unsafe member, a stage.
    async fn exited(&self, exit_code: i32, stderr: String) -> BackupError {
        let id = self.id;
        let exit = Exit::from_code(exit_code);
        if matches!(
            exit,
            Exit::FilledWhileStaging | Exit::NoSpace | Exit::BelowReserve
        ) {
            return self.no_space(exit).await.unwrap_or_else(BackupError::from);
        }
        let (stage, own_status) = match exit {
            Exit::Stage(position) => {
                // zstd fails inside tar's position, under its own name.
                let (name, status) = match self.outputs.failed_stage().await {
                    Ok((name, status)) => (name, Some(status)),
                    Err(_) => (String::new(), None),
                };
                (Pipeline::Fetch.stage_named(position, &name), status)
            }
            _ => (Stage::Check, None),
        };
        // The checksum stage's gate (hash.py, or openpgp_gate without python3) found
        // no encrypted message and passed gpg nothing: its reason is its stderr.
        if stage == Stage::Check && own_status.is_some_and(|s| GATE_REFUSED.contains(&s)) {
            let why = stderr.lines().last().unwrap_or("its first packets").trim();
            return untrusted(id, Untrusted::NotAMessage(why.to_string()));
        }
        // A download that failed before its first byte (no aws CLI, no access) says so:
        // it gave nothing because it failed, not because the object is empty. One that
        // gave bytes and then failed (a cut connection, the aws CLI's own checksum of a
        // damaged object) is judged by what it gave. So does a workload without the
        // zstd a backup needs (found missing before the download started).
        let gave_nothing = (stage == Stage::Download && self.written.length.unwrap_or(0) == 0)
            || (stage == Stage::Compress && own_status == Some(127));
        if !gave_nothing && let Some(reason) = self.written.checksum_problem(self.fetched) {
            return corrupted(id, reason);
        }
        match stage {
            // gpg's status lines alone tell a wrong passphrase from corruption.
            Stage::Gpg => match check_status(&self.written.status) {
                Err(why) => untrusted(id, why),
                Ok(()) => corrupted(id, format!("gpg could not decrypt it: {stderr}")),
            },
            // GNU tar skips a member named with `..` and exits 2 like for any other
            // error; it has no status output and leaves the member out of its
            // listing, so its (C locale) message is the only sign.
            Stage::Extract
                if stderr.contains("contains '..'") || stderr.contains("Member name contains") =>
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
            // The stage's own status, as the work dir's `failed` gives it.
            stage => BackupError::StageFailed {
                stage,
                exit_code: own_status.unwrap_or(exit_code),
                stderr,
            },
        }
    }

    /// The error of a fetch that ran out of space (`exit`: before staging or while) or
    /// reached the free-space reserve.
    async fn no_space(&self, exit: Exit) -> Result<BackupError, ContainerError> {
        let outputs = self.outputs;
        let needed = self
            .call
            .env
            .get("SB_NEED_BYTES")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        // tar's listing up to where it stopped, when tar got that far.
        let listed = || async {
            Ok::<u64, ContainerError>(
                outputs
                    .read_if_written(WorkFile::Members)
                    .await?
                    .and_then(|l| parse_members(&l).ok())
                    .map_or(0, |m| {
                        m.iter().fold(0u64, |sum, a| sum.saturating_add(a.size))
                    }),
            )
        };
        // The file system's dir, which outlives the work dir: the work base, or the
        // workload's temp dir for a verify there.
        let path = outputs.work().parent().to_string();
        if exit == Exit::FilledWhileStaging {
            return Ok(BackupError::NoSpaceLeft {
                path,
                needed_about: staging_need(self.fetched).max(listed().await?),
            });
        }
        let available: u64 = outputs.field(WorkFile::Avail, 0).await?;
        if exit == Exit::BelowReserve {
            // `<free> <reserve>`: before staging, or where tar was stopped (then it
            // needs at least what it had taken, or listed, by then).
            let left: u64 = outputs.field(WorkFile::Reserve, 0).await?;
            return Ok(BackupError::SpaceReserve {
                path,
                needed: needed
                    .max(available.saturating_sub(left))
                    .max(listed().await?),
                available,
                reserve: outputs.field(WorkFile::Reserve, 1).await?,
            });
        }
        Ok(BackupError::InsufficientSpace {
            path,
            needed,
            available,
        })
    }
}

/// The checks of a fetch that succeeded: the checksum against the manifest, gpg's
/// verdict, then tar's listing and the claims of the inner manifest.
async fn checked<C: Container + ?Sized>(
    outputs: &Outputs<'_, C>,
    id: &BackupId,
    fetched: &Fetched,
    written: Written,
    part: Part,
) -> Result<Fetch, BackupError> {
    if let Some(reason) = written.checksum_problem(fetched) {
        return Err(corrupted(id, reason));
    }
    if fetched.manifest.is_some() && written.sha.is_none() {
        return Err(corrupted(
            id,
            "the checksum of the download could not be computed".into(),
        ));
    }
    // The pipeline succeeded: its checksum is there (else the error names the file).
    let sha256 = match written.sha {
        Some(sha) => sha,
        None => outputs.field(WorkFile::Sha256, 0).await?,
    };
    // Nothing is trusted, listed or swapped in before gpg's status says the stream was
    // decrypted with the passphrase and passed its integrity check.
    check_status(&written.status).map_err(|why| untrusted(id, why))?;
    let listing = read_listing(outputs, id).await?;
    // Only an archive that starts with an inner manifest has a head to keep.
    let head = outputs.read_if_written(WorkFile::Head).await?;
    let (inner, warnings) = restore_plan::check_claims(
        id.as_str(),
        listing.iter(),
        head.as_deref(),
        fetched.manifest.as_ref().map(|m| {
            (
                m,
                fetched
                    .entries()
                    .filter(|(p, _, _)| {
                        fetched
                            .apart
                            .binary_search_by(|a| a.as_slice().cmp(p.as_ref()))
                            .is_err()
                    })
                    .map(|(p, kind, _)| (p, kind)),
            )
        }),
        part,
    )
    .map_err(|reason| corrupted(id, reason))?;
    Ok(Fetch {
        sha256,
        listing,
        inner,
        warnings,
    })
}

/// How much of a listing is read at a time.
pub(crate) const LISTING_CHUNK: u64 = 512 << 10;

/// tar's listing of the stream, read and parsed a chunk at a time: its text (as large
/// as the members parsed from it) is never held whole, and its members are held
/// compact, whatever the part read.
async fn read_listing<C: Container + ?Sized>(
    outputs: &Outputs<'_, C>,
    id: &BackupId,
) -> Result<Members, BackupError> {
    let mut listing = Members::default();
    let mut number = 0;
    outputs
        .for_each_record(WorkFile::Members, b'\n', LISTING_CHUNK, |line| {
            number += 1;
            if let Some(member) =
                parse_member_line(number, line).map_err(|e| corrupted(id, e.to_string()))?
            {
                listing.push(&member.as_ref());
            }
            Ok::<_, BackupError>(())
        })
        .await?;
    listing.shrink_to_fit();
    Ok(listing)
}

/// The member rules for a verify: the workload's own when its `homeserver.yaml` can be
/// read (so that verify accepts what restore accepts), else the layout the backup
/// recorded (the inner manifest's, authenticated, before the external one's), else the
/// layout's defaults.
pub(crate) async fn verify_rules<C: Container + ?Sized>(
    container: &C,
    layout: &Layout,
    fetched: &Fetched,
    inner: Option<&InnerManifest>,
) -> Result<RestoreRules, BackupError> {
    let path = layout.host_path(&layout.homeserver_config_path());
    if container.exists(&path).await.unwrap_or(false) {
        let config = work::read_homeserver_config(container, layout).await?;
        return Ok(RestoreRules::new(layout, &config));
    }
    if let Some(recorded) = inner
        .map(|i| &i.layout)
        .or(fetched.manifest.as_ref().map(|m| &m.layout))
    {
        return Ok(RestoreRules::from_manifest(recorded));
    }
    let config = HomeserverConfig::parse("", &layout.homeserver_config_path(), layout)?;
    Ok(RestoreRules::new(layout, &config))
}

/// Checks the staged database `db` (member name): `PRAGMA integrity_check`, its
/// one-time keys removed unless `keep_one_time_keys`, made one self-contained file.
/// Gives the number of one-time keys removed.
pub(crate) async fn check_staged_db<C: Container + ?Sized>(
    run: &Run<'_, C>,
    work: &WorkDir,
    id: &BackupId,
    db: &str,
    keep_one_time_keys: bool,
) -> Result<Option<u64>, BackupError> {
    let (container, layout) = (run.container, run.layout);
    let check = restore_plan::check_db_call(layout, run.params, work, db, keep_one_time_keys);
    match container
        .exec(&check.argv, work::exec_options(layout, &check, work, None))
        .await
    {
        Ok(out) => Ok(out
            .stdout_text()
            .trim()
            .strip_prefix("otk ")
            .and_then(|n| n.parse::<u64>().ok())),
        Err(ContainerError::ExitedNonZero {
            exit_code, stderr, ..
        }) if Exit::from_code(exit_code) == Exit::DatabaseCheckFailed => {
            Err(BackupError::Corrupted {
                id: id.to_string(),
                reason: format!("the restored database {db} fails SQLite's check: {stderr}"),
            })
        }
        Err(ContainerError::ExitedNonZero {
            exit_code, stderr, ..
        }) => Err(BackupError::StageFailed {
            stage: Stage::Check,
            exit_code,
            stderr,
        }),
        Err(e) => Err(e.into()),
    }
}

/// Why the walk of the staged tree is refused, or could not be read.
enum WalkError {
    /// The walk could not be read.
    Read(ContainerError),
    /// A record does not parse.
    Parse(crate::error::ConfigError),
    /// A member the rules refuse: `(member, reason)`.
    Refused((String, String)),
}

impl From<ContainerError> for WalkError {
    fn from(e: ContainerError) -> Self {
        WalkError::Read(e)
    }
}

/// How many walk records are checked at a time.
const WALK_BATCH: usize = 4096;

/// Checks a batch of the walk with `rules`, adding what it finds to `found`.
fn check_batch(
    rules: &RestoreRules,
    batch: &mut Vec<ArchiveMember>,
    found: &mut CheckedMembers,
) -> Result<(), WalkError> {
    let checked = rules
        .check(batch, MemberSource::Staged)
        .map_err(WalkError::Refused)?;
    batch.clear();
    found.units.extend(checked.units);
    found.stripped.extend(checked.stripped);
    found.has_inner_manifest |= checked.has_inner_manifest;
    Ok(())
}

/// The walk of the staged tree, read a chunk at a time and checked with `rules` a
/// batch of members at a time (the walk is in no order and each member is checked on
/// its own, so the batches' findings add up to those of the whole), never held whole.
async fn check_walk<C: Container + ?Sized>(
    run: &Run<'_, C>,
    work: &WorkDir,
    rules: &RestoreRules,
) -> Result<CheckedMembers, WalkError> {
    let mut found = CheckedMembers::default();
    let mut batch: Vec<ArchiveMember> = Vec::with_capacity(WALK_BATCH);
    let mut number = 0;
    Outputs::new(run.container, run.layout, work)
        .for_each_record(
            WorkFile::Staged,
            0,
            LISTING_CHUNK,
            |record| -> Result<(), WalkError> {
                if record.is_empty() {
                    return Ok(());
                }
                number += 1;
                batch.push(parse_staged_record(number, record).map_err(WalkError::Parse)?);
                if batch.len() == WALK_BATCH {
                    check_batch(rules, &mut batch, &mut found)?;
                }
                Ok(())
            },
        )
        .await?;
    check_batch(rules, &mut batch, &mut found)?;
    Ok(found)
}

/// What [`check_staged`] found in staging.
pub(crate) struct Staged {
    /// The staged tree's members, checked.
    pub(crate) staged: CheckedMembers,
    /// The units to restore: the staged ones without database sidecars (the database
    /// is checked and made self-contained in staging, and every live sidecar is set
    /// aside).
    pub(crate) units: Vec<String>,
}

/// The checks between a fetch and anything placed: every member of tar's listing and
/// of the staged tree (walked NUL-separated, so no name in the listing can hide what
/// tar made) passes `rules`, the two agree, and something is left to restore.
///
/// # Errors
/// [`BackupError::UnsafeMember`], [`BackupError::Corrupted`], or the container's error
/// reading the walk.
pub(crate) async fn check_staged<C: Container + ?Sized>(
    run: &Run<'_, C>,
    work: &WorkDir,
    id: &BackupId,
    rules: &RestoreRules,
    got: &Fetch,
) -> Result<Staged, BackupError> {
    let corrupted = |reason: &str| BackupError::Corrupted {
        id: id.to_string(),
        reason: reason.to_string(),
    };
    let unsafe_member =
        |(member, reason): (String, String)| BackupError::UnsafeMember { member, reason };
    let listed = rules
        .check_refs(got.all_members(), MemberSource::Listing)
        .map_err(unsafe_member)?;
    let staged = check_walk(run, work, rules).await.map_err(|e| match e {
        WalkError::Read(e) => e.into(),
        WalkError::Parse(e) => corrupted(&format!("the staged tree: {e}")),
        WalkError::Refused(refused) => unsafe_member(refused),
    })?;
    if staged.units != listed.units || staged.has_inner_manifest != listed.has_inner_manifest {
        return Err(corrupted(
            "the staged tree does not match the archive's listing",
        ));
    }
    let units: Vec<String> = staged
        .units
        .iter()
        .filter(|u| !rules.is_db_sidecar(u))
        .cloned()
        .collect();
    if units.is_empty() {
        return Err(corrupted("the archive holds nothing to restore"));
    }
    Ok(Staged { staged, units })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::MemoryStore;

    /// A manifest of `n` files as a create writes it.
    fn manifest_json(n: usize) -> Vec<u8> {
        let mut json = crate::backup::manifest::ManifestJson::with_capacity(0);
        for i in 0..n {
            json.push(&crate::backup::manifest::ManifestEntry {
                path: crate::backup::manifest::ManifestPath::Text(format!(
                    "data/media_store/local_content/ab/cd/{i:020}"
                )),
                kind: EntryKind::File,
                size: i as u64,
            })
            .unwrap();
        }
        let whole = Manifest::from_json(
            br#"{"format":1,"backup_id":"backup-20261126071900123456","created":"2026-11-26T07:19:00.123456Z","created_by":"synapse-backup/0.2.0","server_name":"example.org","layout":{"config_dir":"/data","data_dir":"/data","media_store_path":"/data/media_store","members":[]},"database":"sqlite","warnings":[],"files":[],"plaintext_bytes":4,"ciphertext_bytes":99,"ciphertext_sha256":"ab","cipher":"AES256","compression":"zlib-6","nonce":"00ff"}"#,
        )
        .unwrap();
        json.finish(&whole).unwrap()
    }

    async fn store_with(key: &str, body: &[u8]) -> MemoryStore {
        let store = MemoryStore::new("");
        store
            .put_object(key, body.to_vec(), "application/json", &Default::default())
            .await
            .unwrap();
        store
    }

    /// The manifest read as it arrives (in the store's chunks of 1,000 bytes) is the
    /// one parsed whole.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_streamed_manifest_parses_as_the_whole_one() {
        let id: BackupId = "backup-20261126071900123456".parse().unwrap();
        let json = manifest_json(500);
        assert!(json.len() > 10_000);
        let store = store_with("m", &json).await;
        let streamed = read_manifest(&store, &id, "m", MAX_MANIFEST_BYTES)
            .await
            .unwrap();
        let whole = Manifest::from_json_compact(&json).unwrap();
        assert_eq!(streamed, whole);
        assert_eq!(streamed.1.len(), 500);
        // Exactly at the cap is not too long.
        let at_cap = read_manifest(&store, &id, "m", json.len() as u64).await;
        assert_eq!(at_cap.unwrap(), whole);
    }

    /// A manifest cut short, or longer than the cap, is refused with an error naming
    /// its key; a missing one is the store's error.
    #[tokio::test(flavor = "current_thread")]
    async fn a_cut_or_over_long_manifest_is_refused_naming_its_key() {
        let id: BackupId = "backup-20261126071900123456".parse().unwrap();
        let json = manifest_json(100);
        let key = "p/backup-20261126071900123456.manifest.json";
        let cut = store_with(key, &json[..json.len() - 7]).await;
        let err = read_manifest(&cut, &id, key, MAX_MANIFEST_BYTES)
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, BackupError::Corrupted { .. }), "{err:?}");
        assert!(
            text.contains(&format!("unreadable manifest {key}: ")),
            "{text}"
        );
        assert!(text.contains("EOF"), "{text}");

        let whole = store_with(key, &json).await;
        let max = json.len() as u64 - 1;
        let err = read_manifest(&whole, &id, key, max).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, BackupError::Corrupted { .. }), "{err:?}");
        assert!(
            text.contains(&format!("its manifest {key} is longer than {max} bytes")),
            "{text}"
        );

        let err = read_manifest(&whole, &id, "p/other", MAX_MANIFEST_BYTES)
            .await
            .unwrap_err();
        assert!(
            matches!(err, BackupError::S3(S3Error::NotFound { .. })),
            "{err:?}"
        );
    }

    /// A manifest parse task that panicked or was cancelled is an internal error of
    /// ours naming the manifest and the backup, with the task's error as its source;
    /// the backup is not blamed (it was `Corrupted`).
    #[tokio::test(flavor = "current_thread")]
    async fn a_parse_task_that_did_not_finish_is_an_internal_error() {
        let id: BackupId = "backup-20261126071900123456".parse().unwrap();
        let key = "p/backup-20261126071900123456.manifest.json";
        let panicked = tokio::task::spawn_blocking(|| panic!("parser bug"))
            .await
            .unwrap_err();
        let pending = tokio::spawn(std::future::pending::<()>());
        pending.abort();
        let cancelled = pending.await.unwrap_err();
        for (e, what) in [(panicked, "panicked"), (cancelled, "cancelled")] {
            let err = parse_task_failed(&id, key, e);
            let text = err.to_string();
            assert!(
                text.starts_with(&format!(
                    "internal error while parsing the manifest {key} of backup {id}: "
                )),
                "{text}"
            );
            assert!(text.contains(what), "{text}");
            let BackupError::Internal { source, .. } = err else {
                panic!("not an internal error: {err:?}");
            };
            let join = source
                .downcast_ref::<tokio::task::JoinError>()
                .expect("the task's error is kept as the source");
            assert_eq!(join.is_panic(), what == "panicked");
            assert_eq!(join.is_cancelled(), what == "cancelled");
        }
    }

    fn member(kind: char, name: &str, mode: u32) -> ArchiveMember {
        ArchiveMember {
            kind,
            name: name.as_bytes().to_vec(),
            size: 0,
            mode,
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn a_walk_checked_in_batches_finds_what_it_finds_whole() {
        let rules = crate::backup::restore_plan::tests::rules();
        let walk = vec![
            member('d', ".synapse-backup", 0o700),
            member('-', "data/media_store/local_content/a", 0o4755),
            member('-', "data/signing.key", 0o600),
            member('-', crate::backup::manifest::INNER_MANIFEST_MEMBER, 0o600),
            member('d', "data/media_store/local_thumbnails", 0o1777),
            member('-', "data/homeserver.db", 0o600),
        ];
        let whole = rules.check(&walk, MemberSource::Staged).unwrap();
        for size in 1..=walk.len() {
            let mut found = CheckedMembers::default();
            for part in walk.chunks(size) {
                let mut batch = part.to_vec();
                assert!(check_batch(&rules, &mut batch, &mut found).is_ok());
                assert!(batch.is_empty());
            }
            assert_eq!(found, whole, "batches of {size}");
        }
        // A refused member in any batch is refused.
        let mut bad = vec![member('l', "data/media_store/local_content/l", 0o777)];
        let mut found = CheckedMembers::default();
        assert!(matches!(
            check_batch(&rules, &mut bad, &mut found),
            Err(WalkError::Refused((name, _))) if name == "data/media_store/local_content/l"
        ));
    }
}

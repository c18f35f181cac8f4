//! Running `backup.sh` for one object key with either [`Transfer`]: the workload's aws
//! CLI uploads ([`Transfer::Workload`]), or the pipeline writes the ciphertext to its
//! standard output and the library uploads it ([`Transfer::Library`], through
//! [`ObjectStore::put_object_stream`](crate::ObjectStore::put_object_stream)). The
//! stream's SHA-256 and length come from the checksum stage in the workload (written to
//! the work dir) or, when the library uploads, from the library as it reads the stream
//! (the workload then runs no checksum stage). A failure names its stage.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};

use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use super::plan::{self, BackupOptions, ScriptCall, WorkDir};
use super::progress::{self, ProgressStage};
use super::run::Run;
use super::scripts::{Exit, Pipeline};
use super::transfer::{Tally, Transfer};
use super::work::{self, Outputs};
use crate::container::{Container, ExecOptions, ExecOutput, ExecStdout};
use crate::error::{BackupError, ContainerError, S3Error, Stage};

/// Runs `backup.sh` for the object `key` (its size expected near `expected_size`, `env`
/// added to its environment), with the run's transfer, reporting progress as `options`
/// say. The caller has marked the
/// upload as started (a failure removes what was uploaded under `key`); with
/// [`Transfer::Library`] a failed or dropped upload is aborted here too.
///
/// Gives the library's [`Tally`] of the stream when the library uploaded it; `None`
/// when the workload's checksum stage wrote the sum and length to the work dir.
///
/// # Errors
/// [`BackupError::StageFailed`] naming the failed stage (tar, gpg, check, upload) with
/// its stderr (for the library's upload, the S3 error), [`BackupError::Container`].
pub(crate) async fn run_backup_pipeline<C: Container + ?Sized>(
    run: &Run<'_, C>,
    options: &BackupOptions,
    work: &WorkDir,
    key: &str,
    expected_size: u64,
    env: &[(&str, &str)],
) -> Result<Option<Tally>, BackupError> {
    let (container, layout) = (run.container, run.layout);
    let mut call = plan::backup_call(layout, run.params, options, work, key, expected_size);
    for (name, value) in env {
        call.env.insert((*name).into(), (*value).into());
    }
    if run.transfer == Transfer::Library {
        call = streamed_output(&call);
    }
    options.priority.apply(&mut call.env);
    let exec = work::pipeline_options(layout, &call, work, options.timeout, run.passphrase);
    let progress = options.progress.as_ref();
    let total = Some(expected_size);
    let count = AtomicU64::new(0);
    let outcome = match run.transfer {
        Transfer::Library => {
            let upload =
                |exec| streamed(run, &call.argv, exec, key, expected_size, options, &count);
            progress::run_with_progress(
                container,
                layout,
                work,
                exec,
                progress,
                ProgressStage::Backup,
                total,
                Some(&count),
                upload,
            )
            .await
            .map(Some)
        }
        _ => progress::exec_with_progress(
            container,
            layout,
            work,
            &call.argv,
            exec,
            progress,
            ProgressStage::Backup,
            total,
        )
        .await
        .map(|_| None)
        .map_err(Piped::Exec),
    };
    let outputs = Outputs::new(container, layout, work);
    match outcome {
        Ok(tally) => Ok(tally),
        Err(Piped::Exec(e)) => Err(pipeline_error(e, &outputs).await),
        Err(Piped::Upload(e)) => Err(BackupError::StageFailed {
            stage: Stage::Upload,
            exit_code: 0,
            stderr: format!("the library's upload failed: {e}"),
        }),
    }
}

/// `call` (a `backup.sh` call) writing the ciphertext to its standard output
/// (`SB_OUTPUT=stdout`), for [`Transfer::Library`]: gpg's arguments and the `--` that
/// ends them only (no aws CLI argument, so no SSE-C key path), and no `AWS_*` variable,
/// `SB_AWS`, object address or expected size in its environment; nor the checksum
/// stage's python (the library sums the stream).
pub(crate) fn streamed_output(call: &ScriptCall) -> ScriptCall {
    let mut env: std::collections::BTreeMap<String, String> = call
        .env
        .iter()
        .filter(|(k, _)| {
            !k.starts_with("AWS_")
                && !matches!(
                    k.as_str(),
                    "SB_AWS" | "SB_URL" | "SB_EXPECTED_SIZE" | "SB_PYTHON" | "SB_HASH_PY"
                )
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.insert("SB_OUTPUT".into(), "stdout".into());
    let end = call
        .argv
        .iter()
        .skip(4)
        .position(|a| a == "--")
        .map_or(call.argv.len(), |p| p + 5);
    ScriptCall {
        argv: call.argv[..end].to_vec(),
        env,
    }
}

/// `call` without anything of the bucket's (no `AWS_*` variable, `SB_AWS`), for a
/// script that needs none (`prepare.sh`) in a run with [`Transfer::Library`].
pub(crate) fn without_bucket(call: &mut ScriptCall) {
    call.env
        .retain(|k, _| !k.starts_with("AWS_") && !matches!(k.as_str(), "SB_AWS" | "SB_URL"));
}

/// Why a pipeline whose output the library uploaded failed.
enum Piped {
    /// The pipeline's own outcome (its exit, a timeout, a container failure).
    Exec(ContainerError),
    /// The library's upload (the pipeline was killed).
    Upload(S3Error),
}

/// The part size of the library's upload for a stream of about `expected_size`
/// bytes: `part_mib` MiB (at least 5, S3's smallest part), larger when the stream
/// would need more than 8,000 parts (S3 allows 10,000: the margin is for a stream
/// larger than expected).
fn part_size(expected_size: u64, part_mib: u32) -> usize {
    let asked = u64::from(part_mib.max(5)) << 20;
    let needed = expected_size.div_ceil(8_000).next_multiple_of(1 << 20);
    usize::try_from(asked.max(needed)).unwrap_or(usize::MAX)
}

/// Runs the pipeline `argv` with `exec` (its `stdin` is the passphrase line) streamed
/// ([`Container::exec_streaming`]): writes the passphrase line and closes its standard
/// input, and uploads its standard output to `key`, summing and counting it (`count`
/// holds the bytes read so far, for the progress). The upload completes only once the
/// pipeline exited 0: a pipeline that fails makes the upload's body fail, so it is
/// aborted, never completed from a cut stream. A failed upload kills the pipeline.
/// The parts' size and how many go up at once are `options`'
/// [`library_part_mib`](BackupOptions::library_part_mib) and
/// [`library_parts_in_flight`](BackupOptions::library_parts_in_flight).
async fn streamed<C: Container + ?Sized>(
    run: &Run<'_, C>,
    argv: &[String],
    mut exec: ExecOptions,
    key: &str,
    expected_size: u64,
    options: &BackupOptions,
    count: &AtomicU64,
) -> Result<Tally, Piped> {
    let first = exec.stdin.take().unwrap_or_default();
    let mut process = run
        .container
        .exec_streaming(argv, exec)
        .await
        .map_err(Piped::Exec)?;
    let (Some(mut stdin), Some(stdout)) = (process.stdin.take(), process.stdout.take()) else {
        return Err(Piped::Exec(ContainerError::Unsupported {
            operation: "exec_streaming with standard input and output",
        }));
    };
    // The passphrase line is all the pipeline reads; a pipeline that already failed
    // says why in its exit.
    let _ = stdin.write_all(&first).await;
    let _ = stdin.shutdown().await;
    drop(stdin);
    let mut body = Output {
        stdout,
        exit: Some(Box::pin(process.wait())),
        outcome: None,
        ended: false,
        sum: Sha256::new(),
        count,
    };
    let metadata =
        std::collections::HashMap::from([(plan::METADATA_KEY.to_string(), plan::metadata_value())]);
    let uploaded = run
        .client
        .put_object_stream(
            key,
            &mut body,
            "application/octet-stream",
            &metadata,
            part_size(expected_size, options.library_part_mib),
            usize::try_from(options.library_parts_in_flight.max(1)).unwrap_or(1),
        )
        .await;
    match (uploaded, body.outcome.take()) {
        (Ok(up), Some(Ok(_))) => {
            tracing::debug!(
                key,
                bytes = up.size,
                parts = up.parts,
                "the library's upload ended"
            );
            Ok(Tally {
                sha256: super::incremental::hex(&body.sum.finalize()),
                length: count.load(Ordering::Relaxed),
            })
        }
        // The pipeline failed: its outcome says why (the upload was aborted).
        (_, Some(Err(e))) => Err(Piped::Exec(e)),
        // The upload failed while the pipeline ran: dropping `body` kills it.
        (Err(e), _) => Err(Piped::Upload(e)),
        (Ok(_), None) => Err(Piped::Exec(ContainerError::Unsupported {
            operation: "exec_streaming that ends its output before its exit",
        })),
    }
}

type Exited = Pin<Box<dyn Future<Output = Result<ExecOutput, ContainerError>> + Send>>;

/// A pipeline's standard output that ends only once the pipeline exited 0: its exit is
/// polled as it is read, a failed exit is a read error at once, and the end of the
/// output waits for the exit. Every byte read is summed and counted: the upload sends
/// each byte it reads once, in order, or fails.
struct Output<'a> {
    stdout: ExecStdout,
    /// The pipeline's exit, until it came (dropping it kills the pipeline's session).
    exit: Option<Exited>,
    outcome: Option<Result<ExecOutput, ContainerError>>,
    ended: bool,
    /// The SHA-256 of the bytes read so far (summed in the read: one core's SHA
    /// extensions sum a GiB in about half a second, the upload takes several).
    sum: Sha256,
    count: &'a AtomicU64,
}

impl Output<'_> {
    fn failed() -> std::io::Error {
        std::io::Error::other("the backup pipeline failed")
    }
}

impl AsyncRead for Output<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(exit) = &mut this.exit
            && let Poll::Ready(outcome) = exit.as_mut().poll(cx)
        {
            this.exit = None;
            this.outcome = Some(outcome);
        }
        if matches!(this.outcome, Some(Err(_))) {
            return Poll::Ready(Err(Output::failed()));
        }
        if !this.ended {
            let before = buf.filled().len();
            match Pin::new(&mut this.stdout).poll_read(cx, buf) {
                Poll::Ready(Ok(())) if buf.filled().len() == before => this.ended = true,
                Poll::Ready(Ok(())) => {
                    let read = &buf.filled()[before..];
                    this.sum.update(read);
                    this.count.fetch_add(read.len() as u64, Ordering::Relaxed);
                    return Poll::Ready(Ok(()));
                }
                other => return other,
            }
        }
        match this.outcome {
            Some(Ok(_)) => Poll::Ready(Ok(())),
            Some(Err(_)) => Poll::Ready(Err(Output::failed())),
            // The exit was polled above: it wakes this task when it comes.
            None => Poll::Pending,
        }
    }
}

/// The error of a failed `backup.sh`: the stage that failed, with its own status (from
/// the work dir's `failed`: `<stage> <status>`).
async fn pipeline_error<C: Container + ?Sized>(
    e: ContainerError,
    outputs: &Outputs<'_, C>,
) -> BackupError {
    match (Exit::of(&e), e) {
        (Some(Exit::Stage(position)), ContainerError::ExitedNonZero { stderr, .. }) => {
            match outputs.failed_stage().await {
                Ok((name, status)) => BackupError::StageFailed {
                    stage: Pipeline::Backup.stage_named(position, &name),
                    exit_code: status,
                    stderr,
                },
                Err(read) => read.into(),
            }
        }
        (
            Some(Exit::ChecksumReaders),
            ContainerError::ExitedNonZero {
                exit_code, stderr, ..
            },
        ) => BackupError::StageFailed {
            stage: Stage::Check,
            exit_code,
            stderr,
        },
        (_, other) => work::stage_error(Stage::Upload, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::layout::Layout;
    use crate::s3::S3Parameters;

    #[test]
    fn the_streamed_call_has_nothing_of_the_buckets() {
        let layout = Layout::default();
        let data = std::collections::HashMap::from([
            ("bucket".to_string(), "backups".to_string()),
            ("access-key".to_string(), "AKIDEXAMPLE".to_string()),
            ("secret-key".to_string(), "s3cr3t-value".to_string()),
            ("endpoint".to_string(), "http://127.0.0.1:9000".to_string()),
            ("storage-class".to_string(), "STANDARD_IA".to_string()),
        ]);
        let params = S3Parameters::from_relation_data(&data).unwrap();
        let work = WorkDir::new(&layout, "backup-1");
        let full = plan::backup_call(&layout, &params, &BackupOptions::default(), &work, "k", 10);
        let call = streamed_output(&full);
        assert_eq!(
            call.argv[3..],
            [
                "bash",
                "--s2k-count",
                "65011712",
                "--compress-algo",
                "none",
                "--"
            ]
        );
        assert_eq!(call.env["SB_OUTPUT"], "stdout");
        // The library sums the stream: no checksum stage's python.
        assert!(!call.env.contains_key("SB_HASH_PY") && !call.env.contains_key("SB_PYTHON"));
        for (name, value) in &call.env {
            assert!(
                !name.starts_with("AWS_") && !["SB_AWS", "SB_URL"].contains(&name.as_str()),
                "{name}"
            );
            assert!(
                !value.contains("s3cr3t") && !value.contains("AKID"),
                "{name}"
            );
        }
        let mut prepare = plan::prepare_call(&layout, &params, &work, None);
        without_bucket(&mut prepare);
        assert!(prepare.env.keys().all(|k| !k.starts_with("AWS_")));
        assert!(prepare.env.contains_key("SB_WORK"));
    }

    #[test]
    fn parts_grow_for_streams_that_would_need_too_many() {
        let default = (crate::backup::transfer::LIBRARY_PART_MIB as usize) << 20;
        assert_eq!(
            part_size(0, crate::backup::transfer::LIBRARY_PART_MIB),
            default
        );
        assert_eq!(
            part_size(1 << 30, crate::backup::transfer::LIBRARY_PART_MIB),
            default
        );
        let huge = 200_u64 << 30;
        let size = part_size(huge, crate::backup::transfer::LIBRARY_PART_MIB) as u64;
        assert!(huge.div_ceil(size) <= 8_000 && size.is_multiple_of(1 << 20));
        // The part size asked, never below S3's smallest part, still raised for a
        // stream that would need too many.
        assert_eq!(part_size(1 << 30, 16), 16 << 20);
        assert_eq!(part_size(0, 1), 5 << 20);
        assert_eq!(part_size(0, 0), 5 << 20);
        assert_eq!(part_size(huge, 16), size as usize);
        assert_eq!(part_size(huge, 64), 64 << 20);
    }
}

//! Conformance checks of [`Container::exec_streaming`]: streaming without buffering,
//! exit mapping, end-of-file on a dropped writer, options honoured, and the session
//! killed when the process is dropped.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{QUICK, TwoChildren, argv, bash, is_root, quick};
use crate::container::{Container, ExecOptions, ExecProcess};
use crate::error::ContainerError;

/// Starts `items` streaming, panicking with the error when it cannot start.
async fn start(c: &dyn Container, items: &[&str], options: ExecOptions) -> ExecProcess {
    let command = argv(items);
    match c.exec_streaming(&command, options).await {
        Ok(process) => process,
        Err(e) => panic!("exec_streaming {command:?} failed: {e} ({e:?})"),
    }
}

/// Deterministic, incompressible-looking bytes: block `n` of 64 KiB.
fn block(n: u32) -> Vec<u8> {
    (0..64 * 1024_u32)
        .map(|i| {
            let x = (n.wrapping_mul(65_536).wrapping_add(i)).wrapping_mul(2_654_435_761);
            (x >> 13) as u8
        })
        .collect()
}

/// 64 MiB streamed through `cat` come back whole (same length and SHA-256), without the
/// caller ever holding more than a block; and output is readable before standard input
/// is closed (the implementation streams rather than collecting the input first).
pub async fn exec_streaming_cat_64_mib(c: &dyn Container) {
    let long = ExecOptions {
        timeout: Some(Duration::from_secs(300)),
        ..ExecOptions::default()
    };
    let mut process = start(c, &["cat"], long).await;
    let mut stdin = process.stdin.take().expect("stdin");
    let mut stdout = process.stdout.take().expect("stdout");

    // Output before end-of-file: 1 MiB in, 1 MiB out, stdin still open.
    let first = block(0);
    let mut echoed = vec![0_u8; first.len()];
    let (written, read) = tokio::join!(stdin.write_all(&first), stdout.read_exact(&mut echoed));
    written.expect("writing the first block");
    read.expect("cat echoes a block while its input is still open");
    assert!(echoed == first, "the first block came back different");

    const BLOCKS: u32 = 1024; // 64 MiB in all
    let writer = async move {
        let mut sent = Sha256::new();
        sent.update(&first);
        for n in 1..BLOCKS {
            let data = block(n);
            sent.update(&data);
            stdin.write_all(&data).await.expect("writing to cat");
        }
        stdin.shutdown().await.expect("closing cat's stdin");
        sent.finalize()
    };
    let reader = async move {
        let mut got = Sha256::new();
        got.update(&echoed);
        let mut total = echoed.len() as u64;
        let mut buffer = vec![0_u8; 64 * 1024];
        loop {
            let n = stdout
                .read(&mut buffer)
                .await
                .expect("reading cat's stdout");
            if n == 0 {
                break;
            }
            total += n as u64;
            got.update(&buffer[..n]);
        }
        (total, got.finalize())
    };
    let (sent, (total, got)) = tokio::join!(writer, reader);
    assert_eq!(
        total,
        u64::from(BLOCKS) * 64 * 1024,
        "bytes out != bytes in"
    );
    assert!(sent == got, "64 MiB through cat: the SHA-256 differs");
    let out = process.wait().await.expect("cat exits 0");
    assert_eq!(out.exit_code, 0);
    assert!(out.stdout.is_empty(), "stdout was streamed, not collected");
}

/// A non-zero exit is [`ContainerError::ExitedNonZero`] from `wait` with the code and the
/// trimmed stderr; a timeout is [`ContainerError::TimedOut`] (counted from the start,
/// without `wait` being called); a missing program is [`ContainerError::CouldNotStart`]
/// (from the call or from `wait`); [`ExecOptions::stdin`] is refused.
pub async fn exec_streaming_exit_errors(c: &dyn Container) {
    let script = "cat >/dev/null; printf 'it went wrong\\n' >&2; exit 3";
    let mut process = start(c, &["bash", "-c", script, "bash"], quick()).await;
    let mut stdin = process.stdin.take().expect("stdin");
    stdin.write_all(b"ignored").await.expect("write");
    drop(stdin);
    match process.wait().await {
        Err(ContainerError::ExitedNonZero {
            command,
            exit_code,
            stderr,
        }) => {
            assert_eq!(command, "bash");
            assert_eq!(exit_code, 3);
            assert_eq!(stderr, "it went wrong");
        }
        other => panic!("expected ExitedNonZero(3), got {other:?}"),
    }

    let ok = start(c, &["bash", "-c", "echo note >&2", "bash"], quick()).await;
    let out = ok.wait().await.expect("exit 0");
    assert_eq!(out.stderr, b"note\n", "stderr of a success is returned");

    let timeout = Duration::from_secs(1);
    let process = start(
        c,
        &["sleep", "30"],
        ExecOptions {
            timeout: Some(timeout),
            ..ExecOptions::default()
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    match process.wait().await {
        Err(ContainerError::TimedOut {
            command,
            timeout: t,
        }) => {
            assert_eq!(command, "sleep");
            assert_eq!(t, timeout);
        }
        other => panic!("expected TimedOut, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the timeout expired before wait: wait should return at once"
    );

    let missing = argv(&["/nonexistent/synapse-backup-no-such-program"]);
    let result = match c.exec_streaming(&missing, quick()).await {
        Ok(process) => process.wait().await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(
        matches!(result, Err(ContainerError::CouldNotStart { .. })),
        "a missing program: expected CouldNotStart, got {result:?}"
    );

    let result = c
        .exec_streaming(
            &argv(&["cat"]),
            ExecOptions {
                stdin: Some(b"x".to_vec()),
                ..quick()
            },
        )
        .await;
    assert!(
        matches!(
            result,
            Err(ContainerError::InvalidArgument { what: "stdin", .. })
        ),
        "ExecOptions::stdin with exec_streaming: expected InvalidArgument, got {result:?}"
    );
}

/// Dropping the standard input writer (no explicit shutdown) gives the command
/// end-of-file; a process whose stdin and stdout were never taken still finishes.
pub async fn exec_streaming_stdin_eof_on_drop(c: &dyn Container) {
    let mut process = start(c, &["wc", "-c"], quick()).await;
    let mut stdin = process.stdin.take().expect("stdin");
    let mut stdout = process.stdout.take().expect("stdout");
    stdin.write_all(b"12345").await.expect("write");
    stdin.flush().await.expect("flush");
    drop(stdin);
    let mut text = String::new();
    tokio::time::timeout(QUICK, stdout.read_to_string(&mut text))
        .await
        .expect("wc saw end-of-file when the writer was dropped")
        .expect("reading wc's output");
    assert_eq!(text.trim(), "5");
    process.wait().await.expect("wc exits 0");

    // Neither stream taken: wait closes stdin and discards stdout.
    let untouched = start(c, &["bash", "-c", "cat; seq 1 100000", "bash"], quick()).await;
    untouched
        .wait()
        .await
        .expect("a process whose streams were never taken finishes");
}

/// The environment asked for (and nothing else of the caller's), the working directory
/// (`/tmp`),
/// and (as root) the user are honoured.
pub async fn exec_streaming_options(c: &dyn Container) {
    let mut environment = BTreeMap::new();
    environment.insert(
        "SYNAPSE_BACKUP_STREAMED".to_string(),
        "value with spaces".to_string(),
    );
    let root = is_root(c).await;
    let expected_uid = if root {
        bash(c, "id -u nobody", &[]).await
    } else {
        bash(c, "id -u", &[]).await
    };
    let options = ExecOptions {
        environment,
        working_dir: Some("/tmp".to_string()),
        user: root.then(|| "nobody".to_string()),
        ..quick()
    };
    let script = r#"printf '%s|%s|%s|%s\n' "$SYNAPSE_BACKUP_STREAMED" "$(pwd)" "$(id -u)" "${AWS_SECRET_ACCESS_KEY-unset}""#;
    let mut process = start(c, &["bash", "-c", script, "bash"], options).await;
    let mut stdout = process.stdout.take().expect("stdout");
    let mut text = String::new();
    stdout.read_to_string(&mut text).await.expect("read");
    process.wait().await.expect("exit 0");
    let pwd = bash(c, "cd /tmp && pwd -P", &[]).await;
    let fields: Vec<&str> = text.trim_end().split('|').collect();
    assert_eq!(fields.len(), 4, "unexpected output {text:?}");
    assert_eq!(fields[0], "value with spaces", "environment not honoured");
    assert!(
        fields[1] == "/tmp" || fields[1] == pwd,
        "working dir not honoured: {}",
        fields[1]
    );
    assert_eq!(fields[2], expected_uid, "user not honoured");
    assert_eq!(fields[3], "unset", "the caller's environment leaked in");
}

/// Dropping the process, or the future of its `wait`, before the command exited kills
/// every process of its session: a background child and one in a group of its own.
pub async fn exec_streaming_drop_kills_everything(c: &dyn Container, scratch: &str) {
    let long = || ExecOptions {
        timeout: Some(Duration::from_secs(120)),
        ..ExecOptions::default()
    };
    let children = TwoChildren::new(c, scratch, "streaming-dropped").await;
    let mut process = c
        .exec_streaming(&children.command, long())
        .await
        .expect("start");
    // Streams taken and kept alive: dropping the process alone must kill.
    let _stdin = process.stdin.take();
    let _stdout = process.stdout.take();
    let pids = children.pids(c).await;
    drop(process);
    TwoChildren::assert_both_gone(c, pids, "a dropped ExecProcess").await;

    let children = TwoChildren::new(c, scratch, "streaming-dropped-wait").await;
    let process = c
        .exec_streaming(&children.command, long())
        .await
        .expect("start");
    let pids = tokio::select! {
        result = process.wait() => panic!("the command should still be running, got {result:?}"),
        pids = children.pids(c) => pids,
    };
    TwoChildren::assert_both_gone(c, pids, "a dropped wait future").await;
}

/// Every streaming check in turn.
pub async fn exec_streaming_all(c: &dyn Container, scratch: &str) {
    exec_streaming_cat_64_mib(c).await;
    exec_streaming_exit_errors(c).await;
    exec_streaming_stdin_eof_on_drop(c).await;
    exec_streaming_options(c).await;
    exec_streaming_drop_kills_everything(c, scratch).await;
}

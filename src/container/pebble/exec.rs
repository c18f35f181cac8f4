//! `exec` over Pebble: `POST /v1/exec`, the task's `control`, `stdio` and `stderr`
//! websockets, the exit code from the change, and the whole session killed on timeout or
//! when the future is dropped.
//!
//! The command runs under a small bash wrapper (`exec_wrapper.sh`) that makes the
//! environment exactly the one asked for (Pebble merges its own in), gives the command a
//! private `HOME`, changes to the working directory as the command's user, and prints
//! the session id first on standard output; `kill_session.sh` kills that session as the
//! daemon's user (Pebble signals only its direct child).

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::UnixStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::client::{Client, REQUEST_TIMEOUT, answer_error, failed};
use crate::container::{ExecExit, ExecOptions, ExecOutput, ExecProcess};
use crate::error::{ContainerError, trim_tail};

const WRAPPER: &str = include_str!("exec_wrapper.sh");
const KILL_SESSION: &str = include_str!("kill_session.sh");
/// The first line the wrapper prints: `synapse-backup-exec SID HOME`.
const HEADER: &[u8] = b"synapse-backup-exec ";
/// Standard input goes to Pebble in frames of at most this many bytes.
const STDIN_FRAME: usize = 64 * 1024;
/// Pebble fails the task when its websockets are not connected within 5 s: ours.
const WEBSOCKET_TIMEOUT: Duration = Duration::from_secs(5);
/// How many bytes of standard input or output a streaming exec buffers in each direction.
const STREAM_BUFFER: usize = 256 * 1024;
/// How much of a failed command's standard error is kept.
const STDERR_LIMIT: usize = 1024;
/// The text frame that ends a stream, in both directions.
const END: &str = r#"{"command":"end"}"#;

type Ws = WebSocketStream<UnixStream>;

/// The session to kill: its id and the private `HOME` to remove.
type Session = Arc<Mutex<Option<(String, String)>>>;

/// The task of a kill started by a [`KillGuard`].
type Killer = Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>;

/// Who the command runs as, in Pebble's terms.
#[derive(Debug, Clone, Default)]
pub(crate) struct Identity {
    pub(crate) user: Option<String>,
    pub(crate) user_id: Option<u32>,
    pub(crate) group: Option<String>,
    pub(crate) group_id: Option<u32>,
}

/// Whether `name` is a variable name bash can keep and unset.
fn shell_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Runs `command` through Pebble as [`crate::Container::exec`] describes.
/// `stdin` is passed apart from `options` (whose own is ignored), so that a caller
/// holding the bytes elsewhere needs no copy.
pub(crate) async fn exec(
    client: &Arc<Client>,
    command: &[String],
    options: &ExecOptions,
    identity: Identity,
    stdin: Option<&[u8]>,
) -> Result<ExecOutput, ContainerError> {
    let (program, body) = request(command, options, &identity)?;
    // A kill started by the guard (future dropped or timed out) leaves its task here.
    let killer: Killer = Arc::default();
    let run = async {
        let started = start(client, &program, &body, &identity).await?;
        let session: Session = Arc::default();
        let mut guard = KillGuard::new(client, &session, &killer);
        let result = drive(
            client,
            &program,
            &started,
            Io::Buffered(stdin),
            &session,
            &mut guard,
        )
        .await;
        guard.armed = false;
        result
    };
    timed(run, options.timeout, &killer, program.clone()).await
}

/// Starts `command` through Pebble as [`crate::Container::exec_streaming`] describes:
/// the exec is accepted before this returns; a task connects its websockets and pumps
/// standard input and output through bounded pipes.
pub(crate) async fn exec_streaming(
    client: &Arc<Client>,
    command: &[String],
    options: &ExecOptions,
    identity: Identity,
) -> Result<ExecProcess, ContainerError> {
    crate::container::local::refuse_stdin(options)?;
    let (program, body) = request(command, options, &identity)?;
    let started = start(client, &program, &body, &identity).await?;
    let (stdin_user, stdin_ours) = tokio::io::duplex(STREAM_BUFFER);
    let (stdout_ours, stdout_user) = tokio::io::duplex(STREAM_BUFFER);
    let task = AbortOnDrop(tokio::spawn(streaming_task(
        Arc::clone(client),
        program.clone(),
        started,
        Pipes {
            stdin: stdin_ours,
            stdout: stdout_ours,
        },
        options.timeout,
    )));
    let what = format!("pebble exec of {program:?}");
    let exit: ExecExit = Box::pin(async move {
        let mut task = task;
        match (&mut task.0).await {
            Ok(result) => result,
            Err(e) => Err(failed(&what, format!("the exec task failed: {e}"))),
        }
    });
    Ok(ExecProcess::new(
        program,
        Some(Box::new(stdin_user)),
        Some(Box::new(stdout_user)),
        exit,
    ))
}

/// The program name and the `POST /v1/exec` body for `command` under the wrapper.
fn request(
    command: &[String],
    options: &ExecOptions,
    identity: &Identity,
) -> Result<(String, Value), ContainerError> {
    crate::container::local::validate_exec(command, options)?;
    for name in options.environment.keys() {
        if !shell_name(name) {
            return Err(ContainerError::InvalidArgument {
                what: "environment variable name",
                value: name.clone(),
                reason: "must be letters, digits and '_', not starting with a digit".into(),
            });
        }
    }
    let program = command[0].clone();
    let mut environment: BTreeMap<String, String> = options.environment.clone();
    environment
        .entry("LANG".into())
        .or_insert_with(|| "C.UTF-8".into());
    let mut argv: Vec<String> = vec![
        "bash".into(),
        "-c".into(),
        WRAPPER.into(),
        "synapse-backup-exec".into(),
    ];
    argv.extend(options.environment.keys().cloned());
    argv.push("--".into());
    argv.push(options.working_dir.clone().unwrap_or_else(|| "/".into()));
    argv.extend(command.iter().cloned());

    let mut body = json!({
        "command": argv,
        "environment": environment,
        "working-dir": "/",
        "split-stderr": true,
        "terminal": false,
        "interactive": false,
    });
    if let Some(user) = &identity.user {
        body["user"] = json!(user);
    }
    if let Some(id) = identity.user_id {
        body["user-id"] = json!(id);
    }
    if let Some(group) = &identity.group {
        body["group"] = json!(group);
    }
    if let Some(id) = identity.group_id {
        body["group-id"] = json!(id);
    }
    Ok((program, body))
}

/// Runs `run` within `timeout`: on expiry `run` is dropped (its guard starts the kill of
/// the session), the kill is awaited (bounded) and [`ContainerError::TimedOut`] returned.
async fn timed<T>(
    run: impl std::future::Future<Output = Result<T, ContainerError>>,
    timeout: Option<Duration>,
    killer: &Killer,
    program: String,
) -> Result<T, ContainerError> {
    match timeout {
        None => run.await,
        Some(limit) => match tokio::time::timeout(limit, run).await {
            Ok(done) => done,
            Err(_) => {
                let task = killer.lock().unwrap_or_else(PoisonError::into_inner).take();
                if let Some(task) = task {
                    // Bounded: the kill is one short exec.
                    let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
                }
                Err(ContainerError::TimedOut {
                    command: program,
                    timeout: limit,
                })
            }
        },
    }
}

/// Our ends of a streaming exec's standard input and output.
struct Pipes {
    stdin: DuplexStream,
    stdout: DuplexStream,
}

/// Aborts a task when dropped (the process was dropped: the guard in the task kills).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The task behind an [`ExecProcess`]: connects, pumps, waits for the exit code, all
/// within the timeout, with a guard that kills the session when the task is aborted.
async fn streaming_task(
    client: Arc<Client>,
    program: String,
    started: Started,
    pipes: Pipes,
    timeout: Option<Duration>,
) -> Result<ExecOutput, ContainerError> {
    let killer: Killer = Arc::default();
    let run = async {
        let session: Session = Arc::default();
        let mut guard = KillGuard::new(&client, &session, &killer);
        let result = drive(
            &client,
            &program,
            &started,
            Io::Piped(pipes),
            &session,
            &mut guard,
        )
        .await;
        guard.armed = false;
        result
    };
    timed(run, timeout, &killer, program.clone()).await
}

/// An accepted exec: its change and task.
struct Started {
    change: String,
    task: String,
}

/// `POST /v1/exec`, with Pebble's refusals mapped to the trait's errors.
async fn start(
    client: &Client,
    program: &str,
    body: &Value,
    identity: &Identity,
) -> Result<Started, ContainerError> {
    let answer = client
        .json(Method::POST, "/v1/exec", Some(body), REQUEST_TIMEOUT)
        .await?;
    if answer.is_error() {
        return Err(refusal(program, identity, &answer));
    }
    let task = answer
        .result
        .get("task-id")
        .and_then(Value::as_str)
        .map(str::to_string);
    match (answer.change, task) {
        (Some(change), Some(task)) => Ok(Started { change, task }),
        _ => Err(failed(
            "pebble POST /v1/exec",
            "the answer has no change or task-id",
        )),
    }
}

/// Maps Pebble's refusal of an exec to the trait's errors.
fn refusal(program: &str, identity: &Identity, answer: &super::client::Answer) -> ContainerError {
    let message = answer.message();
    if answer.status == hyper::StatusCode::BAD_REQUEST {
        if message.contains("unknown userid") || message.contains("unknown user id") {
            let id = identity.user_id.map(|i| i.to_string()).unwrap_or_default();
            return ContainerError::InvalidArgument {
                what: "user_id",
                value: id,
                reason: "has no passwd entry, so it has no primary group: give a group or \
                         group_id too"
                    .into(),
            };
        }
        if message.contains("unknown user") {
            return ContainerError::UnknownUser {
                kind: "user",
                name: identity.user.clone().unwrap_or_default(),
            };
        }
        if message.contains("unknown group") {
            return ContainerError::UnknownUser {
                kind: "group",
                name: identity.group.clone().unwrap_or_default(),
            };
        }
        if message.contains("does not match user-id") {
            return ContainerError::InvalidArgument {
                what: "user_id",
                value: identity.user_id.map(|i| i.to_string()).unwrap_or_default(),
                reason: message,
            };
        }
        if message.contains("does not match group-id") {
            return ContainerError::InvalidArgument {
                what: "group_id",
                value: identity.group_id.map(|i| i.to_string()).unwrap_or_default(),
                reason: message,
            };
        }
        if message.contains("cannot find executable") {
            return ContainerError::CouldNotStart {
                command: program.to_string(),
                source: io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{message} (the workload needs bash on the daemon's PATH)"),
                ),
            };
        }
    }
    answer_error(&format!("pebble exec of {program:?}"), answer)
}

/// Kills the session of an exec whose future was dropped (from a task of its own).
struct KillGuard {
    client: Arc<Client>,
    session: Session,
    /// Kept connected until the kill is done.
    control: Option<Ws>,
    armed: bool,
    killer: Killer,
}

impl KillGuard {
    /// An armed guard for the session that `session` will name.
    fn new(client: &Arc<Client>, session: &Session, killer: &Killer) -> Self {
        KillGuard {
            client: Arc::clone(client),
            session: Arc::clone(session),
            control: None,
            armed: true,
            killer: Arc::clone(killer),
        }
    }
}

impl Drop for KillGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let client = Arc::clone(&self.client);
        let session = self
            .session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let control = self.control.take();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let task = runtime.spawn(async move {
                kill(&client, session, control).await;
            });
            *self.killer.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
        }
    }
}

/// Kills every process of the session (or, before its id is known, the wrapper through
/// the control websocket), then closes the control websocket.
async fn kill(client: &Client, session: Option<(String, String)>, control: Option<Ws>) {
    let mut control = control;
    match session {
        Some((sid, home)) => {
            let argv = vec![
                "bash".to_string(),
                "-c".into(),
                KILL_SESSION.into(),
                "synapse-backup-kill".into(),
                sid,
                home,
            ];
            if let Err(e) = run_plain(client, argv).await {
                tracing::warn!("could not kill the session of a cancelled exec: {e}");
            }
        }
        None => {
            if let Some(ws) = control.as_mut() {
                let signal = json!({"command": "signal", "signal": {"name": "SIGKILL"}});
                let _ = ws.send(Message::Text(signal.to_string().into())).await;
            }
        }
    }
    if let Some(mut ws) = control {
        let _ = ws.close(None).await;
    }
}

/// Connects the task's websocket `name`.
async fn websocket(client: &Client, task: &str, name: &str) -> Result<Ws, ContainerError> {
    let what = format!("pebble exec websocket {name} of task {task}");
    let stream = client.connect().await?;
    let url = format!("ws://localhost/v1/tasks/{task}/websocket/{name}");
    let (ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .map_err(|e| failed(&what, format!("could not connect: {e}")))?;
    Ok(ws)
}

/// Connects control, then stdio and (when `stderr`) stderr at once, within our own
/// timeout. Control comes first: Pebble starts the command once stdio (and stderr) are
/// connected, and a control request it serves after the command's change is done gets
/// a plain 200, no upgrade (its `Connect` returns the change's error, none); a short
/// command could otherwise run and exit between the two (CI saw "could not connect:
/// HTTP error: 200 OK" reading a work file on a loaded machine). As `ops` does.
async fn connect_all(
    client: &Client,
    task: &str,
    stderr: bool,
) -> Result<(Ws, Ws, Option<Ws>), ContainerError> {
    let all = async {
        // Without control nothing is connected: stdio would start a command no one
        // could signal.
        let control = websocket(client, task, "control").await?;
        let (stdio, err) = tokio::join!(websocket(client, task, "stdio"), async {
            if stderr {
                websocket(client, task, "stderr").await.map(Some)
            } else {
                Ok(None)
            }
        });
        Ok::<_, ContainerError>((control, stdio?, err?))
    };
    match tokio::time::timeout(WEBSOCKET_TIMEOUT, all).await {
        Ok(connected) => connected,
        Err(_) => Err(failed(
            &format!("pebble exec websockets of task {task}"),
            format!("not connected within {WEBSOCKET_TIMEOUT:?}"),
        )),
    }
}

/// Reads one output websocket to its end (`{"command":"end"}`, a close, or the end of
/// the connection). `on_data` sees every chunk.
async fn read_output(
    mut rx: impl futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
    + Unpin,
    what: &str,
    mut on_data: impl FnMut(&[u8]),
) -> Result<(), ContainerError> {
    while let Some(message) = rx.next().await {
        match message {
            Ok(Message::Binary(data)) => on_data(&data),
            Ok(Message::Text(text)) => {
                if text.as_str().contains("\"end\"") {
                    return Ok(());
                }
            }
            Ok(Message::Close(_)) => return Ok(()),
            Ok(_) => {}
            Err(e) => {
                return Err(failed(what, format!("the websocket failed: {e}")));
            }
        }
    }
    Ok(())
}

/// Sends `stdin` in bounded frames, then the end message.
async fn send_input(
    tx: &mut (impl futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin),
    stdin: Option<&[u8]>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    for chunk in stdin.unwrap_or_default().chunks(STDIN_FRAME) {
        tx.send(Message::Binary(bytes::Bytes::copy_from_slice(chunk)))
            .await?;
    }
    tx.send(Message::Text(END.into())).await
}

/// Standard output with the wrapper's first line taken off, as it streams in.
struct Stdout {
    bytes: Vec<u8>,
    header_done: bool,
    session: Session,
}

impl Stdout {
    fn push(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        if self.header_done {
            return;
        }
        let Some(end) = self.bytes.iter().position(|b| *b == b'\n') else {
            return;
        };
        if let Some(rest) = self.bytes[..end].strip_prefix(HEADER) {
            let text = String::from_utf8_lossy(rest).into_owned();
            let (sid, home) = text.split_once(' ').unwrap_or((text.as_str(), ""));
            if !sid.is_empty() && sid.bytes().all(|b| b.is_ascii_digit()) {
                *self.session.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some((sid.to_string(), home.to_string()));
                self.header_done = true;
                self.bytes.drain(..=end);
            }
        }
    }

    fn started(&self) -> bool {
        self.header_done
    }
}

/// What the command's standard input and output are connected to.
enum Io<'a> {
    /// Input given whole (none: empty); output collected whole.
    Buffered(Option<&'a [u8]>),
    /// Both streamed through pipes ([`Container::exec_streaming`](crate::Container::exec_streaming)).
    Piped(Pipes),
}

/// Connects, feeds stdin (given whole or from a pipe), drains stdout (collected, or
/// into a pipe) and stderr, and waits for the exit code.
async fn drive(
    client: &Client,
    program: &str,
    started: &Started,
    io: Io<'_>,
    session: &Session,
    guard: &mut KillGuard,
) -> Result<ExecOutput, ContainerError> {
    let (control, stdio, stderr_ws) = connect_all(client, &started.task, true).await?;
    guard.control = Some(control);
    let (mut stdio_tx, stdio_rx) = stdio.split();
    let mut stdout = Stdout {
        bytes: Vec::new(),
        header_done: false,
        session: Arc::clone(session),
    };
    let mut stderr = Vec::new();
    let mut sent = false;
    let streamed = matches!(io, Io::Piped(_));
    let (input, output) = match io {
        Io::Buffered(bytes) => (Input::Bytes(bytes), None),
        Io::Piped(Pipes { stdin, stdout }) => (Input::Pipe(stdin), Some(stdout)),
    };
    {
        let what_out = format!("pebble exec stdio of {program:?}");
        let what_err = format!("pebble exec stderr of {program:?}");
        let readers = async {
            let out = async {
                match output {
                    Some(pipe) => pump_stdout(stdio_rx, &what_out, &mut stdout, pipe).await,
                    None => read_output(stdio_rx, &what_out, |d| stdout.push(d)).await,
                }
            };
            let (a, b) = tokio::join!(out, async {
                match stderr_ws {
                    Some(ws) => read_output(ws, &what_err, |d| stderr.extend_from_slice(d)).await,
                    None => Ok(()),
                }
            });
            a.and(b)
        };
        let send = async {
            match input {
                Input::Bytes(bytes) => send_input(&mut stdio_tx, bytes).await,
                Input::Pipe(pipe) => pump_stdin(&mut stdio_tx, pipe).await,
            }
        };
        tokio::pin!(readers, send);
        loop {
            tokio::select! {
                done = &mut readers => { done?; break; }
                // A command that exits without reading its input may leave the send
                // pending: the readers decide when we are done.
                _ = &mut send, if !sent => sent = true,
            }
        }
    }
    if sent {
        // After the end message: a clean close. With input still pending (the command
        // exited without reading it all) Pebble reads no more: just drop the socket.
        let _ = tokio::time::timeout(Duration::from_secs(1), stdio_tx.close()).await;
    }
    drop(stdio_tx);
    let started_ok = stdout.started();
    let out = exit_outcome(client, program, started, started_ok, stderr).await?;
    // Streamed output went to its pipe as it came.
    Ok(ExecOutput {
        stdout: if streamed { Vec::new() } else { stdout.bytes },
        ..out
    })
}

/// Where the command's standard input comes from.
enum Input<'a> {
    Bytes(Option<&'a [u8]>),
    Pipe(DuplexStream),
}

/// Waits for the change of a finished exec and maps its exit as `exec` does
/// (`launched`: the wrapper printed its first line, so the command was started).
async fn exit_outcome(
    client: &Client,
    program: &str,
    started: &Started,
    launched: bool,
    stderr: Vec<u8>,
) -> Result<ExecOutput, ContainerError> {
    let outcome = client.wait_change(&started.change).await?;
    let stderr_text = trim_tail(&String::from_utf8_lossy(&stderr), STDERR_LIMIT);
    let code = match outcome.exit_code {
        Some(code) if code >= 0 => code,
        _ => {
            return Err(failed(
                &format!("pebble change {} (exec of {program:?})", started.change),
                format!(
                    "the change ended {} without an exit code: {}",
                    outcome.status,
                    outcome.err.unwrap_or_else(|| "no error given".into())
                ),
            ));
        }
    };
    if !launched {
        return Err(ContainerError::CouldNotStart {
            command: program.to_string(),
            source: io::Error::other(if stderr_text.is_empty() {
                format!("the exec wrapper exited with code {code} before starting it")
            } else {
                stderr_text
            }),
        });
    }
    if code != 0 {
        return Err(ContainerError::ExitedNonZero {
            command: program.to_string(),
            exit_code: i32::try_from(code).unwrap_or(i32::MAX),
            stderr: stderr_text,
        });
    }
    Ok(ExecOutput {
        exit_code: 0,
        stdout: Vec::new(),
        stderr,
    })
}

/// Copies the task's stdio websocket to `out`, the wrapper's first line taken off, until
/// the end message; a reader of `out` that went away makes the rest be discarded.
async fn pump_stdout(
    mut rx: impl futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
    + Unpin,
    what: &str,
    stdout: &mut Stdout,
    mut out: DuplexStream,
) -> Result<(), ContainerError> {
    let mut reader_gone = false;
    while let Some(message) = rx.next().await {
        match message {
            Ok(Message::Binary(data)) => {
                stdout.push(&data);
                if stdout.started() && !stdout.bytes.is_empty() {
                    let chunk = std::mem::take(&mut stdout.bytes);
                    if !reader_gone && out.write_all(&chunk).await.is_err() {
                        reader_gone = true;
                    }
                }
            }
            Ok(Message::Text(text)) if text.as_str().contains("\"end\"") => break,
            Ok(Message::Close(_)) => break,
            Ok(_) => {}
            Err(e) => return Err(failed(what, format!("the websocket failed: {e}"))),
        }
    }
    let _ = out.shutdown().await;
    Ok(())
}

/// Sends what is written to `input` in bounded frames, then the end message once the
/// writer closed it.
async fn pump_stdin(
    tx: &mut (impl futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin),
    mut input: DuplexStream,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let mut buffer = vec![0_u8; STDIN_FRAME];
    loop {
        let n = match input.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        tx.send(Message::Binary(bytes::Bytes::copy_from_slice(&buffer[..n])))
            .await?;
    }
    tx.send(Message::Text(END.into())).await
}

/// Runs `argv` as the daemon's user with no input, for our own housekeeping (no wrapper:
/// nothing of the caller's goes in), and waits for it to succeed.
async fn run_plain(client: &Client, argv: Vec<String>) -> Result<(), ContainerError> {
    let body = json!({
        "command": argv,
        "working-dir": "/",
        "split-stderr": false,
    });
    let started = start(client, &argv_name(&argv), &body, &Identity::default()).await?;
    let (control, stdio, _) = connect_all(client, &started.task, false).await?;
    let (mut tx, rx) = stdio.split();
    let _ = send_input(&mut tx, None).await;
    read_output(rx, "pebble housekeeping exec", |_| {}).await?;
    let _ = tokio::time::timeout(Duration::from_secs(1), tx.close()).await;
    drop(control);
    let outcome = client.wait_change(&started.change).await?;
    match outcome.exit_code {
        Some(0) => Ok(()),
        other => Err(failed(
            &format!("pebble change {}", started.change),
            format!(
                "housekeeping exec ended {} with exit code {other:?}: {}",
                outcome.status,
                outcome.err.unwrap_or_default()
            ),
        )),
    }
}

fn argv_name(argv: &[String]) -> String {
    argv.first().cloned().unwrap_or_default()
}

//! The [`Container`] trait: the seam through which every workload operation runs.
//!
//! It is shaped like the Python `ops.Container` (Pebble's exec and files API), so a
//! Kubernetes charm framework can implement it over Pebble, while machine charms and
//! tests use [`LocalContainer`](crate::LocalContainer), which runs on this host.
//!
//! All container paths are absolute. Implementations must reject relative paths and
//! NUL bytes with [`ContainerError::InvalidArgument`] before doing anything.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::ContainerError;

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod local;
#[cfg(feature = "pebble")]
pub mod pebble;

/// Options for [`Container::exec`].
///
/// `Debug` shows environment variable *names* only: values may be secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ExecOptions {
    /// Extra environment variables (added to a minimal base environment).
    pub environment: BTreeMap<String, String>,
    /// Working directory (absolute); the implementation's default when `None`.
    pub working_dir: Option<String>,
    /// User to run as (name); the current user when `None` (and no `user_id`).
    pub user: Option<String>,
    /// User to run as (numeric id), alone or with `user`; with both, they must name
    /// the same user, else [`ContainerError::InvalidArgument`]. A uid with no passwd
    /// entry works, given a `group` or `group_id` (its primary group is unknown).
    pub user_id: Option<u32>,
    /// Group to run as (name); the user's primary group when `None` (and no `group_id`).
    pub group: Option<String>,
    /// Group to run as (numeric id), alone or with `group`; with both, they must name
    /// the same group, else [`ContainerError::InvalidArgument`].
    pub group_id: Option<u32>,
    /// Kill the command (and every process of its session) after this long.
    pub timeout: Option<Duration>,
    /// Bytes written to the command's standard input (closed afterwards).
    pub stdin: Option<Vec<u8>>,
}

impl fmt::Debug for ExecOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecOptions")
            .field("environment", &self.environment.keys().collect::<Vec<_>>())
            .field("working_dir", &self.working_dir)
            .field("user", &self.user)
            .field("user_id", &self.user_id)
            .field("group", &self.group)
            .field("group_id", &self.group_id)
            .field("timeout", &self.timeout)
            .field(
                "stdin",
                &self.stdin.as_ref().map(|s| format!("<{} bytes>", s.len())),
            )
            .finish()
    }
}

/// What a command that exited with code 0 produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// The exit code (always 0 for a successful [`Container::exec`]).
    pub exit_code: i32,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    /// Standard output as text (lossy UTF-8).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// The standard input of an [`ExecProcess`]: write to it, then shut it down (or drop
/// it) to give the command end-of-file.
pub type ExecStdin = Box<dyn AsyncWrite + Send + Unpin>;

/// The standard output of an [`ExecProcess`], read as it is produced.
pub type ExecStdout = Box<dyn AsyncRead + Send + Unpin>;

/// The future an [`ExecProcess`] waits on: the command's exit, mapped as
/// [`Container::exec`] maps it.
pub type ExecExit = Pin<Box<dyn Future<Output = Result<ExecOutput, ContainerError>> + Send>>;

/// A command started by [`Container::exec_streaming`]: its standard input and output as
/// streams, and its exit.
///
/// Shaped like [`tokio::process::Child`] (and `ops.pebble`'s `ExecProcess`): take
/// [`ExecProcess::stdin`] and [`ExecProcess::stdout`] (each an `Option`, so they can be
/// moved out and driven from different tasks), then call [`ExecProcess::wait`].
/// Standard error is collected for the error [`ExecProcess::wait`] returns.
///
/// Dropping the process (or the future of [`ExecProcess::wait`]) before the command
/// exited kills every process of its session, as [`Container::exec`] documents for a
/// dropped future. Dropping [`ExecProcess::stdin`] closes the command's standard input;
/// dropping [`ExecProcess::stdout`] closes the read end of its standard output (a
/// command still writing to it gets `SIGPIPE`/`EPIPE`).
///
/// # Example
/// ```no_run
/// # async fn demo(container: &dyn synapse_backup::Container) -> Result<(), Box<dyn std::error::Error>> {
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// use synapse_backup::ExecOptions;
///
/// let command = ["sha256sum".to_string()];
/// let mut process = container.exec_streaming(&command, ExecOptions::default()).await?;
/// let mut stdin = process.stdin.take().ok_or("no stdin")?;
/// let mut stdout = process.stdout.take().ok_or("no stdout")?;
/// let writer = async move {
///     stdin.write_all(b"hello").await?;
///     stdin.shutdown().await // end-of-file for the command
/// };
/// let mut sum = String::new();
/// let (written, read) = tokio::join!(writer, stdout.read_to_string(&mut sum));
/// written?;
/// read?;
/// process.wait().await?; // Err(ExitedNonZero) with its stderr on a non-zero exit
/// # Ok(())
/// # }
/// ```
pub struct ExecProcess {
    /// The command's standard input (`None` once taken).
    pub stdin: Option<ExecStdin>,
    /// The command's standard output (`None` once taken).
    pub stdout: Option<ExecStdout>,
    command: String,
    exit: ExecExit,
}

impl fmt::Debug for ExecProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecProcess")
            .field("command", &self.command)
            .field("stdin", &self.stdin.as_ref().map(|_| "<stream>"))
            .field("stdout", &self.stdout.as_ref().map(|_| "<stream>"))
            .finish_non_exhaustive()
    }
}

impl ExecProcess {
    /// A process made of its streams and its exit future, for implementations of
    /// [`Container::exec_streaming`] (and for mocks: e.g. `tokio::io::duplex` halves
    /// and `Box::pin(async { Ok(ExecOutput::default()) })`).
    ///
    /// `command` is the program name (`argv[0]`), shown by `Debug`. `exit` resolves
    /// when the command has exited; dropping it before must kill the command's session.
    pub fn new(
        command: impl Into<String>,
        stdin: Option<ExecStdin>,
        stdout: Option<ExecStdout>,
        exit: ExecExit,
    ) -> Self {
        Self {
            stdin,
            stdout,
            command: command.into(),
            exit,
        }
    }

    /// The program name (`argv[0]`).
    pub fn command(&self) -> &str {
        &self.command
    }

    /// Waits for the command to exit.
    ///
    /// A standard input not taken is closed first; a standard output not taken is read
    /// and discarded meanwhile (so the command cannot block on a full pipe). On success
    /// the output has exit code 0, an empty `stdout` (it was streamed) and the command's
    /// standard error.
    ///
    /// # Errors
    /// As [`Container::exec`]: [`ContainerError::ExitedNonZero`] with the trimmed end of
    /// standard error, [`ContainerError::TimedOut`] when [`ExecOptions::timeout`] expired
    /// (counted from the start; the whole session is killed),
    /// [`ContainerError::CouldNotStart`] when the program could not be started, and
    /// transport or I/O errors of the implementation.
    pub async fn wait(mut self) -> Result<ExecOutput, ContainerError> {
        drop(self.stdin.take());
        let drain = async {
            if let Some(mut stdout) = self.stdout.take() {
                // Whatever comes is not wanted; a read error ends the draining only.
                let _ = tokio::io::copy(&mut stdout, &mut tokio::io::sink()).await;
            }
        };
        let (result, ()) = tokio::join!(&mut self.exit, drain);
        result
    }
}

/// Options for [`Container::push`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushOptions {
    /// Create missing parent directories.
    pub make_dirs: bool,
    /// File mode, e.g. `0o600`; `0o644` when `None`.
    pub permissions: Option<u32>,
    /// Owner (name); unchanged when `None`.
    pub user: Option<String>,
    /// Group (name); unchanged when `None`.
    pub group: Option<String>,
}

/// Options for [`Container::make_dir`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MakeDirOptions {
    /// Create missing parents too, and succeed if the directory exists.
    pub make_parents: bool,
    /// Directory mode, e.g. `0o700`; `0o755` when `None`.
    pub permissions: Option<u32>,
    /// Owner (name); unchanged when `None`.
    pub user: Option<String>,
    /// Group (name); unchanged when `None`.
    pub group: Option<String>,
}

/// Options for [`Container::list_files`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Only entries whose name matches this glob (e.g. `local_*`).
    pub pattern: Option<String>,
    /// List the directory itself rather than its contents.
    pub itself: bool,
}

/// The kind of a file system entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link (not followed).
    Symlink,
    /// A socket, FIFO or device.
    Other,
}

/// One entry returned by [`Container::list_files`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// The absolute path.
    pub path: String,
    /// The last path component.
    pub name: String,
    /// What it is.
    pub kind: FileKind,
    /// Size in bytes (of the link itself for symlinks).
    pub size: u64,
    /// Permission bits, e.g. `0o644`.
    pub permissions: u32,
}

/// A workload container: run commands, move files, control services.
///
/// Shaped like `ops.Container`. Implementations are `Send + Sync` and the trait is
/// dyn-compatible, so `&dyn Container` and `Box<dyn Container>` work.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Container: Send + Sync {
    /// Runs `command` (argv, no shell) and waits for it.
    ///
    /// The command sees exactly the environment described by [`ExecOptions::environment`]
    /// on top of the implementation's documented base (`PATH`, `HOME`, `LANG`), nothing
    /// else; `HOME` is a writable directory (a private one when the user has none).
    ///
    /// The command runs as the leader of a new session. When `options.timeout` expires,
    /// or when the returned future is dropped before the command finished, every process
    /// of that session is killed, including descendants that moved to a process group of
    /// their own (`setpgid`): none is left behind. A descendant that starts a session of
    /// its own (`setsid`) has left the command and is out of reach. After a normal exit,
    /// descendants that closed standard output and error are left alone.
    ///
    /// # Errors
    /// [`ContainerError::InvalidArgument`] for an empty command or a NUL byte,
    /// [`ContainerError::CouldNotStart`] when the program cannot be started,
    /// [`ContainerError::ExitedNonZero`] when it exits non-zero (with its trimmed stderr),
    /// [`ContainerError::TimedOut`] when `options.timeout` expires (the whole session is
    /// killed), [`ContainerError::UnknownUser`] / [`ContainerError::PermissionDenied`]
    /// for a user or group that cannot be used, [`ContainerError::InvalidArgument`] when a
    /// user (or group) name and id disagree, or a uid without a passwd entry comes with no
    /// group.
    async fn exec(
        &self,
        command: &[String],
        options: ExecOptions,
    ) -> Result<ExecOutput, ContainerError>;

    /// Starts `command` (argv, no shell) with its standard input and output as streams,
    /// and returns without waiting for it: see [`ExecProcess`].
    ///
    /// Everything [`Container::exec`] says about the environment, the user, the session
    /// and the timeout holds (the timeout counts from the start, whether or not
    /// [`ExecProcess::wait`] was called yet); only standard input and output differ: the
    /// caller streams them, and the implementation buffers a bounded amount of either,
    /// never a whole stream. [`ExecOptions::stdin`] must be `None` (write to
    /// [`ExecProcess::stdin`] instead).
    ///
    /// The default implementation returns [`ContainerError::Unsupported`], so
    /// implementations written before this method existed keep compiling.
    ///
    /// # Errors
    /// [`ContainerError::Unsupported`] when the container cannot stream;
    /// [`ContainerError::InvalidArgument`] for [`ExecOptions::stdin`] given, and the
    /// argument errors of [`Container::exec`]; [`ContainerError::CouldNotStart`],
    /// [`ContainerError::UnknownUser`] and [`ContainerError::PermissionDenied`] as
    /// there. Exit errors come from [`ExecProcess::wait`].
    async fn exec_streaming(
        &self,
        command: &[String],
        options: ExecOptions,
    ) -> Result<ExecProcess, ContainerError> {
        let _ = (command, options);
        Err(ContainerError::Unsupported {
            operation: "exec_streaming",
        })
    }

    /// Writes `content` to `path` atomically (a reader sees the old file or the new one).
    ///
    /// # Errors
    /// [`ContainerError::NotFound`] when the parent is missing and `make_dirs` is false;
    /// [`ContainerError::InvalidArgument`] for a relative path; I/O and ownership errors.
    async fn push(
        &self,
        path: &str,
        content: &[u8],
        options: PushOptions,
    ) -> Result<(), ContainerError>;

    /// Reads the whole file at `path`.
    ///
    /// # Errors
    /// [`ContainerError::NotFound`] when it does not exist; other I/O errors.
    async fn pull(&self, path: &str) -> Result<Vec<u8>, ContainerError>;

    /// Lists the directory `path` (or the entry itself with `options.itself`).
    ///
    /// # Errors
    /// [`ContainerError::NotFound`] when `path` does not exist;
    /// [`ContainerError::InvalidArgument`] for a bad glob pattern.
    async fn list_files(
        &self,
        path: &str,
        options: ListOptions,
    ) -> Result<Vec<FileInfo>, ContainerError>;

    /// Removes a file, or a directory (with its contents when `recursive`).
    ///
    /// # Errors
    /// [`ContainerError::NotFound`] when `path` does not exist; I/O errors (e.g. a
    /// non-empty directory without `recursive`).
    async fn remove_path(&self, path: &str, recursive: bool) -> Result<(), ContainerError>;

    /// Creates a directory.
    ///
    /// # Errors
    /// [`ContainerError::NotFound`] when the parent is missing and `make_parents` is false;
    /// I/O and ownership errors.
    async fn make_dir(&self, path: &str, options: MakeDirOptions) -> Result<(), ContainerError>;

    /// Whether `path` exists (a dangling symlink counts as existing).
    ///
    /// # Errors
    /// [`ContainerError::InvalidArgument`] for a relative path; I/O errors other than
    /// "not found".
    async fn exists(&self, path: &str) -> Result<bool, ContainerError>;

    /// Starts the named services (already running ones are left alone).
    ///
    /// # Errors
    /// [`ContainerError::Service`] when a service is unknown or fails to start.
    async fn start(&self, services: &[String]) -> Result<(), ContainerError>;

    /// Stops the named services (stopped ones are left alone).
    ///
    /// # Errors
    /// [`ContainerError::Service`] when a service is unknown or fails to stop.
    async fn stop(&self, services: &[String]) -> Result<(), ContainerError>;

    /// Restarts the named services: stops each one (when running), then starts it.
    ///
    /// The default implementation calls [`Container::stop`] then [`Container::start`].
    ///
    /// # Errors
    /// [`ContainerError::Service`] when a service is unknown or fails to stop or start.
    async fn restart(&self, services: &[String]) -> Result<(), ContainerError> {
        self.stop(services).await?;
        self.start(services).await
    }

    /// Whether the named service is running.
    ///
    /// A service that the service manager is restarting by itself after it exited
    /// (Pebble's `backoff` state, systemd's `activating` after a failure) counts as
    /// running: it is not stopped, and [`Container::stop`] is what stops it.
    ///
    /// # Errors
    /// [`ContainerError::Service`] when the service is unknown.
    async fn is_running(&self, service: &str) -> Result<bool, ContainerError>;
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A container written before `exec_streaming` existed: every method fails.
    struct Old;

    #[async_trait]
    impl Container for Old {
        async fn exec(&self, _: &[String], _: ExecOptions) -> Result<ExecOutput, ContainerError> {
            Err(ContainerError::Unsupported { operation: "exec" })
        }
        async fn push(&self, _: &str, _: &[u8], _: PushOptions) -> Result<(), ContainerError> {
            Ok(())
        }
        async fn pull(&self, _: &str) -> Result<Vec<u8>, ContainerError> {
            Ok(Vec::new())
        }
        async fn list_files(
            &self,
            _: &str,
            _: ListOptions,
        ) -> Result<Vec<FileInfo>, ContainerError> {
            Ok(Vec::new())
        }
        async fn remove_path(&self, _: &str, _: bool) -> Result<(), ContainerError> {
            Ok(())
        }
        async fn make_dir(&self, _: &str, _: MakeDirOptions) -> Result<(), ContainerError> {
            Ok(())
        }
        async fn exists(&self, _: &str) -> Result<bool, ContainerError> {
            Ok(false)
        }
        async fn start(&self, _: &[String]) -> Result<(), ContainerError> {
            Ok(())
        }
        async fn stop(&self, _: &[String]) -> Result<(), ContainerError> {
            Ok(())
        }
        async fn is_running(&self, _: &str) -> Result<bool, ContainerError> {
            Ok(false)
        }
    }

    #[tokio::test]
    async fn exec_streaming_defaults_to_unsupported() {
        let result = Old
            .exec_streaming(&["cat".to_string()], ExecOptions::default())
            .await;
        match result {
            Err(e @ ContainerError::Unsupported { .. }) => assert_eq!(
                e.to_string(),
                "exec_streaming is not supported by this container"
            ),
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }

    /// How a test sets up `MockContainer::exec_streaming`: duplex halves for the streams
    /// and a ready exit future.
    #[tokio::test]
    async fn mock_exec_streaming_with_duplex_streams() {
        let mut mock = MockContainer::new();
        let (theirs_in, mut ours_in) = tokio::io::duplex(1024);
        let (mut ours_out, theirs_out) = tokio::io::duplex(1024);
        ours_out.write_all(b"from the mock").await.expect("write");
        drop(ours_out);
        let parts = std::sync::Mutex::new(Some((theirs_in, theirs_out)));
        mock.expect_exec_streaming()
            .withf(|command, _| command == ["cat".to_string()])
            .times(1)
            .returning(move |_, _| {
                let (stdin, stdout) = parts.lock().expect("lock").take().expect("once");
                Ok(ExecProcess::new(
                    "cat",
                    Some(Box::new(stdin)),
                    Some(Box::new(stdout)),
                    Box::pin(async { Ok(ExecOutput::default()) }),
                ))
            });
        let mut process = mock
            .exec_streaming(&["cat".to_string()], ExecOptions::default())
            .await
            .expect("mocked");
        let shown = format!("{process:?}");
        assert!(
            shown.contains("\"cat\"") && shown.contains("<stream>"),
            "{shown}"
        );
        let mut stdin = process.stdin.take().expect("stdin");
        stdin.write_all(b"to the mock").await.expect("write");
        drop(stdin);
        let mut text = String::new();
        let mut stdout = process.stdout.take().expect("stdout");
        stdout.read_to_string(&mut text).await.expect("read");
        assert_eq!(text, "from the mock");
        let mut got = Vec::new();
        ours_in.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"to the mock");
        assert_eq!(process.wait().await.expect("exit").exit_code, 0);
    }
}

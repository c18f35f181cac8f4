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
use std::time::Duration;

use async_trait::async_trait;

use crate::error::ContainerError;

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod local;

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

//! [`LocalContainer`]: a [`Container`] that runs commands and touches files on this host.
//!
//! Machine charms use it directly, and tests use it with the backup layout's root pointed
//! at a temporary directory. A container path is a host path: nothing is rewritten.
//!
//! Services are delegated to a [`ServiceManager`]: [`ProcessSupervisor`] (a tiny, real
//! supervisor of child processes, for tests and demos) or [`SystemdServices`] (`systemctl`).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Gid, Group, Pid, Uid, User, getegid, geteuid};
use process_wrap::tokio::{ChildWrapper, CommandWrap, ProcessSession};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use super::{
    Container, ExecExit, ExecOptions, ExecOutput, ExecProcess, ExecStdin, ExecStdout, FileInfo,
    FileKind, ListOptions, MakeDirOptions, PushOptions,
};
use crate::error::{ContainerError, trim_tail};

/// How much of a failed command's standard error is kept in [`ContainerError::ExitedNonZero`].
const STDERR_LIMIT: usize = 1024;

/// `PATH` used when this process has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Starts, stops and inspects named services for a [`LocalContainer`].
///
/// Implement it to plug another init system in; [`ProcessSupervisor`] and
/// [`SystemdServices`] are provided.
#[async_trait]
pub trait ServiceManager: Send + Sync {
    /// Starts `service`; does nothing when it is already running.
    ///
    /// # Errors
    /// [`ContainerError::Service`] when the service is unknown or cannot be started.
    async fn start(&self, service: &str) -> Result<(), ContainerError>;

    /// Stops `service`; does nothing when it is not running.
    ///
    /// # Errors
    /// [`ContainerError::Service`] when the service is unknown or cannot be stopped.
    async fn stop(&self, service: &str) -> Result<(), ContainerError>;

    /// Whether `service` is running.
    ///
    /// # Errors
    /// [`ContainerError::Service`] when the service is unknown or its state cannot be read.
    async fn is_running(&self, service: &str) -> Result<bool, ContainerError>;
}

/// A [`Container`] backed by this host: real processes (`tokio::process`) and real files
/// (`tokio::fs`).
///
/// # Commands
/// Each command runs as the leader of a new session (`setsid`, through the
/// `process-wrap` crate) with a minimal environment: `PATH` (this process's),
/// `LANG=C.UTF-8` and `HOME` (this process's, or the switched user's, see below), then
/// [`ExecOptions::environment`] on top. Without a working directory it inherits this
/// process's. On timeout, or when the `exec` future is dropped before the command
/// finished, every process of the session (found in `/proc` by its session id, until
/// none is left) gets `SIGKILL`, also one that moved to a process group of its own.
/// A command killed by a signal reports exit code `128 + signal` (as a shell does).
/// `exec` waits for standard output and error to close, so a background child that keeps
/// them open keeps `exec` waiting (until the timeout, if any).
///
/// # Users
/// When this process runs as root, [`ExecOptions::user`] / [`ExecOptions::user_id`] and
/// [`ExecOptions::group`] / [`ExecOptions::group_id`] switch user and group (the user's
/// primary group unless a group is given; a uid without a passwd entry needs a group). Supplementary
/// groups are dropped, not set to the user's (the standard library offers no safe
/// `initgroups`). `HOME` is the user's home directory when it exists and is writable by
/// them, else (and always for a uid without a passwd entry) a private directory owned by
/// the user, created for the call and removed afterwards. When not
/// root, asking for another user or group fails with [`ContainerError::PermissionDenied`].
///
/// # Files
/// [`Container::push`] writes a temporary file in the target directory, syncs it and
/// renames it over the target, so readers see the old content or the new one.
///
/// # Services
/// Delegated to the [`ServiceManager`] given to [`LocalContainer::with_services`]; without
/// one, every service is unknown.
#[derive(Clone, Default)]
pub struct LocalContainer {
    services: Option<Arc<dyn ServiceManager>>,
}

impl fmt::Debug for LocalContainer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalContainer")
            .field("has_service_manager", &self.services.is_some())
            .finish()
    }
}

impl LocalContainer {
    /// A container for this host without services (every service name is unknown).
    pub fn new() -> Self {
        Self::default()
    }

    /// A container for this host whose services are handled by `services`.
    pub fn with_services(services: impl ServiceManager + 'static) -> Self {
        Self {
            services: Some(Arc::new(services)),
        }
    }

    fn service_manager(&self, service: &str) -> Result<&dyn ServiceManager, ContainerError> {
        self.services
            .as_deref()
            .ok_or_else(|| ContainerError::Service {
                service: service.to_string(),
                message: "unknown service (this LocalContainer has no service manager)".into(),
            })
    }
}

// ---------------------------------------------------------------------------------------
// Validation and small helpers
// ---------------------------------------------------------------------------------------

fn invalid(what: &'static str, value: &str, reason: &str) -> ContainerError {
    ContainerError::InvalidArgument {
        what,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// Checks that `path` is absolute and has no NUL byte.
pub(crate) fn check_path<'a>(
    what: &'static str,
    path: &'a str,
) -> Result<&'a Path, ContainerError> {
    if path.contains('\0') {
        return Err(invalid(what, path, "contains a NUL byte"));
    }
    if !path.starts_with('/') {
        return Err(invalid(what, path, "must be an absolute path"));
    }
    Ok(Path::new(path))
}

fn check_name(what: &'static str, name: &str) -> Result<(), ContainerError> {
    if name.is_empty() {
        return Err(invalid(what, name, "is empty"));
    }
    if name.contains('\0') {
        return Err(invalid(what, name, "contains a NUL byte"));
    }
    Ok(())
}

fn check_mode(mode: u32) -> Result<u32, ContainerError> {
    if mode > 0o7777 {
        return Err(invalid(
            "permissions",
            &format!("{mode:#o}"),
            "must be at most 0o7777",
        ));
    }
    Ok(mode)
}

fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Maps an I/O error on `path` to [`ContainerError::NotFound`], `PermissionDenied` or `Io`.
fn io_error(path: &Path, error: io::Error) -> ContainerError {
    match error.kind() {
        io::ErrorKind::NotFound => ContainerError::NotFound {
            path: display(path),
        },
        io::ErrorKind::PermissionDenied => ContainerError::PermissionDenied {
            path: display(path),
            reason: error.to_string(),
        },
        _ => ContainerError::Io {
            path: display(path),
            source: error,
        },
    }
}

fn nix_error(path: &Path, errno: nix::errno::Errno) -> ContainerError {
    io_error(path, io::Error::from(errno))
}

/// Looks `name` up in the user or group database (`kind`) off the async runtime.
async fn lookup<T: Send + 'static>(
    kind: &'static str,
    name: &str,
    find: fn(&str) -> nix::Result<Option<T>>,
) -> Result<T, ContainerError> {
    check_name(kind, name)?;
    let owned = name.to_string();
    let database = || format!("{kind} database");
    let found = tokio::task::spawn_blocking(move || find(&owned))
        .await
        .map_err(|e| ContainerError::Io {
            path: database(),
            source: io::Error::other(e),
        })?
        .map_err(|e| ContainerError::Io {
            path: database(),
            source: e.into(),
        })?;
    found.ok_or_else(|| ContainerError::UnknownUser {
        kind,
        name: name.to_string(),
    })
}

async fn lookup_user(name: &str) -> Result<User, ContainerError> {
    lookup("user", name, User::from_name).await
}

async fn lookup_group(name: &str) -> Result<Group, ContainerError> {
    lookup("group", name, Group::from_name).await
}

/// The uid/gid a command must switch to (`None`: keep the current one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Switch {
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
}

/// Decides how to run `command` as the requested user/group, given the current ids.
///
/// `user` is `(name, uid, primary gid)`, `group` is `(name, gid)`. Root may become anyone
/// (the group defaults to the user's primary group); anyone else may only "switch" to
/// themselves, otherwise [`ContainerError::PermissionDenied`].
pub(crate) fn decide_switch(
    current_uid: u32,
    current_gid: u32,
    command: &str,
    user: Option<(&str, u32, u32)>,
    group: Option<(&str, u32)>,
) -> Result<Switch, ContainerError> {
    if current_uid == 0 {
        return Ok(Switch {
            uid: user.map(|(_, uid, _)| uid),
            gid: group.map(|(_, gid)| gid).or(user.map(|(_, _, gid)| gid)),
        });
    }
    if let Some((name, uid, _)) = user
        && uid != current_uid
    {
        return Err(ContainerError::PermissionDenied {
            path: command.to_string(),
            reason: format!(
                "cannot run as user {name:?} (uid {uid}): this process runs as uid {current_uid}, \
                 not root"
            ),
        });
    }
    if let Some((name, gid)) = group
        && gid != current_gid
    {
        return Err(ContainerError::PermissionDenied {
            path: command.to_string(),
            reason: format!(
                "cannot run as group {name:?} (gid {gid}): this process runs as uid {current_uid} \
                 with gid {current_gid}, not root"
            ),
        });
    }
    Ok(Switch::default())
}

/// Resolved owner for files (`None`: unchanged).
#[derive(Debug, Clone, Copy, Default)]
struct Owner {
    uid: Option<Uid>,
    gid: Option<Gid>,
}

impl Owner {
    fn is_some(&self) -> bool {
        self.uid.is_some() || self.gid.is_some()
    }
}

/// Resolves `user`/`group` names for chown; the group defaults to the user's primary group.
async fn resolve_owner(
    path: &str,
    user: Option<&str>,
    group: Option<&str>,
) -> Result<Owner, ContainerError> {
    let user = match user {
        Some(name) => Some(lookup_user(name).await?),
        None => None,
    };
    let group = match group {
        Some(name) => Some(lookup_group(name).await?),
        None => None,
    };
    let euid = geteuid();
    if let Some(u) = &user
        && !euid.is_root()
        && u.uid != euid
    {
        return Err(ContainerError::PermissionDenied {
            path: path.to_string(),
            reason: format!(
                "cannot give the file to user {:?}: this process is not root",
                u.name
            ),
        });
    }
    Ok(Owner {
        uid: user.as_ref().map(|u| u.uid),
        gid: group.map(|g| g.gid).or(user.map(|u| u.gid)),
    })
}

fn apply_owner(path: &Path, owner: Owner) -> Result<(), ContainerError> {
    if owner.is_some() {
        nix::unistd::chown(path, owner.uid, owner.gid).map_err(|e| nix_error(path, e))?;
    }
    Ok(())
}

/// Sets the owner, then the mode, of the directory just made at `path` through a
/// descriptor opened without following a symlink: whoever can write to its parent may
/// have swapped it for a link meanwhile, and a chown by path would follow that link.
fn own_new_dir(path: &Path, mode: u32, owner: Owner) -> Result<(), ContainerError> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    fd_owner_and_mode(path, &dir, mode, owner)
}

/// chown (when `owner` names one) then chmod through an open descriptor: never by
/// path. chown first: it may clear set-id bits.
fn fd_owner_and_mode(
    path: &Path,
    file: &impl std::os::fd::AsFd,
    mode: u32,
    owner: Owner,
) -> Result<(), ContainerError> {
    if owner.is_some() {
        nix::unistd::fchown(file, owner.uid, owner.gid).map_err(|e| nix_error(path, e))?;
    }
    nix::sys::stat::fchmod(file, nix::sys::stat::Mode::from_bits_truncate(mode))
        .map_err(|e| nix_error(path, e))
}

/// Creates `dir` and its missing ancestors with `mode` and `owner` (existing ones are left
/// alone). Returns whether `dir` itself was created.
async fn create_dirs(dir: &Path, mode: u32, owner: Owner) -> Result<bool, ContainerError> {
    let mut missing = Vec::new();
    let mut current = Some(dir);
    while let Some(p) = current {
        match tokio::fs::metadata(p).await {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(p);
                current = p.parent();
            }
            Err(e) => return Err(io_error(p, e)),
        }
    }
    let created_target = missing.first().is_some_and(|p| *p == dir);
    for p in missing.into_iter().rev() {
        match tokio::fs::create_dir(p).await {
            Ok(()) => {}
            // Created concurrently: fine if it is a directory; leave it as it is.
            Err(e)
                if e.kind() == io::ErrorKind::AlreadyExists
                    && tokio::fs::metadata(p).await.is_ok_and(|m| m.is_dir()) =>
            {
                continue;
            }
            Err(e) => return Err(io_error(p, e)),
        }
        own_new_dir(p, mode, owner)?;
    }
    Ok(created_target)
}

/// The parent of an absolute path naming a file (not `/`).
fn parent_of<'a>(what: &'static str, path: &'a Path) -> Result<&'a Path, ContainerError> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(_)) => Ok(parent),
        _ => Err(invalid(what, &display(path), "must name an entry below /")),
    }
}

async fn ensure_parent_exists(parent: &Path) -> Result<(), ContainerError> {
    match tokio::fs::metadata(parent).await {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(ContainerError::Io {
            path: display(parent),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        }),
        Err(e) => Err(io_error(parent, e)),
    }
}

fn file_info(path: &Path, name: String, meta: &std::fs::Metadata) -> FileInfo {
    let ft = meta.file_type();
    let kind = if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_dir() {
        FileKind::Directory
    } else if ft.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    };
    FileInfo {
        path: display(path),
        name,
        kind,
        size: meta.len(),
        permissions: meta.mode() & 0o7777,
    }
}

// ---------------------------------------------------------------------------------------
// exec
// ---------------------------------------------------------------------------------------

/// The live (not zombie) processes whose session id is `sid`, read from `/proc`.
fn session_members(sid: i32) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            // /proc/PID/stat: "pid (comm) state ppid pgrp session …"; comm may hold
            // spaces and parentheses, so split after its last ')'.
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let Some((_, rest)) = stat.rsplit_once(')') else {
                    return false;
                };
                let mut fields = rest.split_whitespace();
                let state = fields.next();
                let session = fields.nth(2).and_then(|f| f.parse::<i32>().ok());
                state != Some("Z") && session == Some(sid)
            })
        })
        .map(Pid::from_raw)
        .collect()
}

/// Sends `SIGKILL` to every process of the session `sid`, again and again until none is
/// left alive (a process may fork between the scan and the kill), for at most ~2 s.
fn kill_session(sid: Pid) {
    for _ in 0..1000 {
        let members = session_members(sid.as_raw());
        if members.is_empty() {
            return;
        }
        for pid in members {
            // ESRCH: it is already gone.
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Kills every process of a session with `SIGKILL` when dropped while armed (the `exec`
/// future was dropped or timed out), so no descendant of a cancelled command survives
/// it, not even one that moved to a process group of its own.
///
/// The session id is the leader's pid: it stays ours (and is not reused) until the
/// leader is reaped, which happens only after the kill.
struct SessionGuard {
    sid: Option<Pid>,
}

impl SessionGuard {
    fn kill(&mut self) {
        if let Some(sid) = self.sid.take() {
            kill_session(sid);
        }
    }

    fn disarm(&mut self) {
        self.sid = None;
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop<T = ()>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The exit code of a finished process: its code, or `128 + signal` when killed.
fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => -1,
    }
}

async fn read_all(stream: Option<impl AsyncRead + Unpin>) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if let Some(mut s) = stream {
        s.read_to_end(&mut buf).await?;
    }
    Ok(buf)
}

/// Whether `uid`/`gid` may write to the directory `dir` (by its mode bits).
async fn writable_dir(dir: &Path, uid: u32, gid: u32) -> bool {
    let Ok(meta) = tokio::fs::metadata(dir).await else {
        return false;
    };
    if !meta.is_dir() {
        return false;
    }
    if uid == 0 {
        return true;
    }
    let mode = meta.mode();
    (meta.uid() == uid && mode & 0o200 != 0)
        || (meta.gid() == gid && mode & 0o020 != 0)
        || mode & 0o002 != 0
}

/// A private, temporary `HOME` owned by `uid`/`gid`, removed when dropped.
fn private_home(uid: Option<u32>, gid: Option<u32>) -> Result<tempfile::TempDir, ContainerError> {
    let dir = tempfile::Builder::new()
        .prefix("synapse-backup-home-")
        .tempdir()
        .map_err(|e| io_error(&std::env::temp_dir(), e))?;
    apply_owner(
        dir.path(),
        Owner {
            uid: uid.map(Uid::from_raw),
            gid: gid.map(Gid::from_raw),
        },
    )?;
    Ok(dir)
}

pub(crate) fn validate_exec(
    command: &[String],
    options: &ExecOptions,
) -> Result<(), ContainerError> {
    let Some(program) = command.first() else {
        return Err(invalid("command", "", "is empty (no program given)"));
    };
    if program.is_empty() {
        return Err(invalid("command", "", "has an empty program name"));
    }
    for arg in command {
        if arg.contains('\0') {
            return Err(invalid("argument", arg, "contains a NUL byte"));
        }
    }
    for (key, value) in &options.environment {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(invalid(
                "environment variable name",
                key,
                "must be non-empty without '=' or NUL",
            ));
        }
        if value.contains('\0') {
            // Name the variable, never its value (it may be a secret).
            return Err(invalid(
                "environment variable",
                key,
                "its value contains a NUL byte",
            ));
        }
    }
    if let Some(dir) = &options.working_dir {
        check_path("working directory", dir)?;
    }
    if let Some(user) = &options.user {
        check_name("user", user)?;
    }
    if let Some(group) = &options.group {
        check_name("group", group)?;
    }
    Ok(())
}

/// Refuses [`ExecOptions::stdin`] for `exec_streaming` (its input is the stream).
pub(crate) fn refuse_stdin(options: &ExecOptions) -> Result<(), ContainerError> {
    match &options.stdin {
        Some(bytes) => Err(invalid(
            "stdin",
            &format!("<{} bytes>", bytes.len()),
            "must be None for exec_streaming: write to ExecProcess::stdin instead",
        )),
        None => Ok(()),
    }
}

/// Everything needed to spawn, decided before anything runs.
struct Prepared {
    command: Command,
    /// Keeps a private `HOME` alive for the duration of the call.
    _home: Option<tempfile::TempDir>,
}

/// The user a command runs as: its passwd entry when it has one.
enum RunAs {
    Known(User),
    /// A uid with no passwd entry.
    Bare(u32),
}

impl RunAs {
    fn uid(&self) -> u32 {
        match self {
            RunAs::Known(u) => u.uid.as_raw(),
            RunAs::Bare(uid) => *uid,
        }
    }

    fn label(&self) -> String {
        match self {
            RunAs::Known(u) => u.name.clone(),
            RunAs::Bare(uid) => format!("uid {uid}"),
        }
    }
}

/// Resolves [`ExecOptions::user`] / [`ExecOptions::user_id`] (they must agree).
async fn resolve_user(options: &ExecOptions) -> Result<Option<RunAs>, ContainerError> {
    match (&options.user, options.user_id) {
        (None, None) => Ok(None),
        (Some(name), id) => {
            let user = lookup_user(name).await?;
            if let Some(id) = id
                && id != user.uid.as_raw()
            {
                return Err(invalid(
                    "user_id",
                    &id.to_string(),
                    &format!("does not match user {name:?} (uid {})", user.uid),
                ));
            }
            Ok(Some(RunAs::Known(user)))
        }
        (None, Some(id)) => {
            let found = tokio::task::spawn_blocking(move || User::from_uid(Uid::from_raw(id)))
                .await
                .map_err(|e| ContainerError::Io {
                    path: "user database".into(),
                    source: io::Error::other(e),
                })?
                .map_err(|e| ContainerError::Io {
                    path: "user database".into(),
                    source: e.into(),
                })?;
            Ok(Some(found.map_or(RunAs::Bare(id), RunAs::Known)))
        }
    }
}

/// Resolves [`ExecOptions::group`] / [`ExecOptions::group_id`] (they must agree) to a
/// label and a gid.
async fn resolve_group(options: &ExecOptions) -> Result<Option<(String, u32)>, ContainerError> {
    match (&options.group, options.group_id) {
        (None, None) => Ok(None),
        (Some(name), id) => {
            let group = lookup_group(name).await?;
            if let Some(id) = id
                && id != group.gid.as_raw()
            {
                return Err(invalid(
                    "group_id",
                    &id.to_string(),
                    &format!("does not match group {name:?} (gid {})", group.gid),
                ));
            }
            Ok(Some((group.name, group.gid.as_raw())))
        }
        (None, Some(id)) => Ok(Some((format!("gid {id}"), id))),
    }
}

async fn prepare(command: &[String], options: &ExecOptions) -> Result<Prepared, ContainerError> {
    validate_exec(command, options)?;
    let program = &command[0];
    let user = resolve_user(options).await?;
    let group = resolve_group(options).await?;
    // A uid without a passwd entry has no primary group: it needs one given.
    let primary_gid = match (&user, &group) {
        (Some(RunAs::Known(u)), _) => Some(u.gid.as_raw()),
        (Some(RunAs::Bare(_)), Some((_, gid))) => Some(*gid),
        (Some(RunAs::Bare(uid)), None) => {
            return Err(invalid(
                "user_id",
                &uid.to_string(),
                "has no passwd entry, so it has no primary group: give a group or group_id too",
            ));
        }
        (None, _) => None,
    };
    let label = user.as_ref().map(RunAs::label);
    let switch = decide_switch(
        geteuid().as_raw(),
        getegid().as_raw(),
        program,
        user.as_ref()
            .zip(label.as_deref())
            .zip(primary_gid)
            .map(|((u, name), gid)| (name, u.uid(), gid)),
        group.as_ref().map(|(name, gid)| (name.as_str(), *gid)),
    )?;
    let (home, private) = home_for(user.as_ref(), &switch).await?;
    Ok(Prepared {
        command: command_for(command, options, home.as_deref(), &switch),
        _home: private,
    })
}

/// The `HOME` of a command run as `user` (`None`: as this process): the user's own
/// when it can write there, else a private one made for the call (kept alive by the
/// second value).
async fn home_for(
    user: Option<&RunAs>,
    switch: &Switch,
) -> Result<(Option<PathBuf>, Option<tempfile::TempDir>), ContainerError> {
    let private = || -> Result<_, ContainerError> {
        let dir = private_home(switch.uid, switch.gid)?;
        Ok((Some(dir.path().to_path_buf()), Some(dir)))
    };
    match user {
        Some(RunAs::Known(u)) => {
            let gid = switch.gid.unwrap_or(u.gid.as_raw());
            if writable_dir(&u.dir, u.uid.as_raw(), gid).await {
                Ok((Some(u.dir.clone()), None))
            } else {
                private()
            }
        }
        Some(RunAs::Bare(_)) => private(),
        None => Ok((
            match std::env::var_os("HOME") {
                Some(h) if !h.is_empty() => Some(PathBuf::from(h)),
                _ => User::from_uid(geteuid()).ok().flatten().map(|u| u.dir),
            },
            None,
        )),
    }
}

/// The command to spawn: its exact environment (`PATH`, `LANG`, `HOME` and the
/// variables asked for), working dir, ids and pipes.
fn command_for(
    command: &[String],
    options: &ExecOptions,
    home: Option<&std::path::Path>,
    switch: &Switch,
) -> Command {
    let program = &command[0];
    let mut env: BTreeMap<&OsStr, &OsStr> = BTreeMap::new();
    let path_var = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    env.insert(OsStr::new("PATH"), &path_var);
    env.insert(OsStr::new("LANG"), OsStr::new("C.UTF-8"));
    if let Some(h) = home {
        env.insert(OsStr::new("HOME"), h.as_os_str());
    }
    for (k, v) in &options.environment {
        env.insert(OsStr::new(k), OsStr::new(v));
    }

    let mut cmd = Command::new(program);
    // No process_group(0): the command becomes a session leader at spawn (setsid fails
    // for a process that already leads a group).
    cmd.args(&command[1..])
        .env_clear()
        .envs(env)
        .kill_on_drop(true)
        .stdin(if options.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = &options.working_dir {
        cmd.current_dir(dir);
    }
    if let Some(gid) = switch.gid {
        cmd.gid(gid);
    }
    if let Some(uid) = switch.uid {
        // std drops root's supplementary groups (setgroups(0)) before setuid.
        cmd.uid(uid);
    }
    cmd
}

/// Spawns `command` as the leader of a new session, with the guard that kills that
/// session when dropped.
fn spawn_session(
    program: &str,
    command: tokio::process::Command,
) -> Result<(Box<dyn ChildWrapper>, SessionGuard), ContainerError> {
    let mut wrapped = CommandWrap::from(command);
    wrapped.wrap(ProcessSession);
    let child: Box<dyn ChildWrapper> =
        wrapped
            .spawn()
            .map_err(|source| ContainerError::CouldNotStart {
                command: program.to_string(),
                source,
            })?;
    let guard = SessionGuard {
        sid: child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw),
    };
    Ok((child, guard))
}

async fn run(
    program: &str,
    prepared: Prepared,
    stdin: Option<Vec<u8>>,
    timeout: Option<Duration>,
) -> Result<ExecOutput, ContainerError> {
    let Prepared { command, _home } = prepared;
    // `guard` is bound after `child`, so dropped (and the session killed) before it.
    let (mut child, mut guard) = spawn_session(program, command)?;

    // Feed stdin from a task so a large input cannot deadlock against a full stdout pipe.
    let _feeder = match (child.stdin().take(), stdin) {
        (Some(mut pipe), Some(bytes)) => Some(AbortOnDrop(tokio::spawn(async move {
            // A command that exits without reading everything gives EPIPE: not our error.
            let _ = pipe.write_all(&bytes).await;
            let _ = pipe.shutdown().await;
        }))),
        _ => None,
    };
    let stdout = child.stdout().take();
    let stderr = child.stderr().take();

    let finished = async {
        let (status, out, err) = tokio::join!(child.wait(), read_all(stdout), read_all(stderr));
        (status, out, err)
    };
    let (status, out, err) = match timeout {
        None => finished.await,
        Some(limit) => match tokio::time::timeout(limit, finished).await {
            Ok(done) => done,
            Err(_) => {
                guard.kill();
                // Reap the leader (it got SIGKILL, so this is quick).
                let _ = child.wait().await;
                return Err(ContainerError::TimedOut {
                    command: program.to_string(),
                    timeout: limit,
                });
            }
        },
    };
    guard.disarm();
    let stdout = out.map_err(|source| ContainerError::Io {
        path: format!("{program} (stdout)"),
        source,
    })?;
    outcome(program, status, stdout, err)
}

/// Maps a finished command (its status, captured output and standard error) to the
/// result of [`Container::exec`].
fn outcome(
    program: &str,
    status: io::Result<ExitStatus>,
    stdout: Vec<u8>,
    stderr: io::Result<Vec<u8>>,
) -> Result<ExecOutput, ContainerError> {
    let status = status.map_err(|source| ContainerError::Io {
        path: program.to_string(),
        source,
    })?;
    let stderr = stderr.map_err(|source| ContainerError::Io {
        path: format!("{program} (stderr)"),
        source,
    })?;
    let code = exit_code(status);
    if code != 0 {
        return Err(ContainerError::ExitedNonZero {
            command: program.to_string(),
            exit_code: code,
            stderr: trim_tail(&String::from_utf8_lossy(&stderr), STDERR_LIMIT),
        });
    }
    Ok(ExecOutput {
        exit_code: 0,
        stdout,
        stderr,
    })
}

/// A command started by `exec_streaming`, in the order it must be dropped: the session
/// guard (which kills every process of the session) before the child.
struct Running {
    guard: SessionGuard,
    child: Box<dyn ChildWrapper>,
    /// Keeps a private `HOME` alive until the command is done.
    _home: Option<tempfile::TempDir>,
}

/// The bytes a streamed command's standard input and output pipes hold: 1 MiB, so that
/// a stream of a gigabyte crosses them in writes and reads of up to that size, not
/// Linux's default 64 KiB (each a wake-up of the other side).
const STREAM_PIPE_BYTES: i32 = 1 << 20;

/// Grows `pipe` to [`STREAM_PIPE_BYTES`] when the system allows (an unprivileged
/// process may be held to `/proc/sys/fs/pipe-max-size`); the default size otherwise.
fn widen_pipe(pipe: &impl std::os::fd::AsFd) {
    if let Err(e) = nix::fcntl::fcntl(pipe, nix::fcntl::FcntlArg::F_SETPIPE_SZ(STREAM_PIPE_BYTES)) {
        tracing::debug!(error = %e, "the stream's pipe keeps its default size");
    }
}

/// Spawns a prepared command with piped stdin and stdout for the caller and a task that
/// collects its stderr, waits for its exit and enforces the timeout.
fn spawn_streaming(
    program: &str,
    prepared: Prepared,
    timeout: Option<Duration>,
) -> Result<ExecProcess, ContainerError> {
    let Prepared { mut command, _home } = prepared;
    command.stdin(Stdio::piped());
    let (mut child, guard) = spawn_session(program, command)?;
    let stdin = child.stdin().take().map(|s| {
        widen_pipe(&s);
        Box::new(s) as ExecStdin
    });
    let stdout = child.stdout().take().map(|s| {
        widen_pipe(&s);
        Box::new(s) as ExecStdout
    });
    let stderr = child.stderr().take();
    let running = Running {
        guard,
        child,
        _home,
    };
    let name = program.to_string();
    let task = AbortOnDrop(tokio::spawn(finish(name.clone(), running, stderr, timeout)));
    let what = name.clone();
    let exit: ExecExit = Box::pin(async move {
        let mut task = task;
        match (&mut task.0).await {
            Ok(result) => result,
            Err(e) => Err(ContainerError::Io {
                path: what,
                source: io::Error::other(e),
            }),
        }
    });
    Ok(ExecProcess::new(name, stdin, stdout, exit))
}

/// Waits for a streaming command to exit (and its stderr to close), killing its session
/// when `timeout` expires first. Dropping this future (the process was dropped) drops
/// `running`, which kills the session.
async fn finish(
    program: String,
    mut running: Running,
    stderr: Option<tokio::process::ChildStderr>,
    timeout: Option<Duration>,
) -> Result<ExecOutput, ContainerError> {
    let finished = async { tokio::join!(running.child.wait(), read_all(stderr)) };
    let (status, err) = match timeout {
        None => finished.await,
        Some(limit) => match tokio::time::timeout(limit, finished).await {
            Ok(done) => done,
            Err(_) => {
                running.guard.kill();
                let _ = running.child.wait().await;
                return Err(ContainerError::TimedOut {
                    command: program,
                    timeout: limit,
                });
            }
        },
    };
    running.guard.disarm();
    outcome(&program, status, Vec::new(), err)
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn temp_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        ".synapse-backup-push.{}.{}.{nanos}.tmp",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

async fn write_temp(
    tmp: &Path,
    content: &[u8],
    mode: u32,
    owner: Owner,
) -> Result<(), ContainerError> {
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .await
        .map_err(|e| io_error(tmp, e))?;
    file.write_all(content)
        .await
        .map_err(|e| io_error(tmp, e))?;
    file.flush().await.map_err(|e| io_error(tmp, e))?;
    // Through the descriptor, never by path: the temp file's dir may be writable by the
    // owner-to-be, who could swap the name for a symlink to a file of ours.
    let std_file = file.into_std().await;
    fd_owner_and_mode(tmp, &std_file, mode, owner)?;
    std_file.sync_all().map_err(|e| io_error(tmp, e))?;
    Ok(())
}

#[async_trait]
impl Container for LocalContainer {
    async fn exec(
        &self,
        command: &[String],
        options: ExecOptions,
    ) -> Result<ExecOutput, ContainerError> {
        let prepared = prepare(command, &options).await?;
        let ExecOptions { stdin, timeout, .. } = options;
        run(&command[0], prepared, stdin, timeout).await
    }

    async fn exec_streaming(
        &self,
        command: &[String],
        options: ExecOptions,
    ) -> Result<ExecProcess, ContainerError> {
        refuse_stdin(&options)?;
        let prepared = prepare(command, &options).await?;
        spawn_streaming(&command[0], prepared, options.timeout)
    }

    async fn push(
        &self,
        path: &str,
        content: &[u8],
        options: PushOptions,
    ) -> Result<(), ContainerError> {
        let target = check_path("path", path)?;
        let mode = check_mode(options.permissions.unwrap_or(0o644))?;
        let parent = parent_of("path", target)?;
        let owner = resolve_owner(path, options.user.as_deref(), options.group.as_deref()).await?;
        if options.make_dirs {
            create_dirs(parent, 0o755, owner).await?;
        } else {
            ensure_parent_exists(parent).await?;
        }
        let tmp = parent.join(temp_name());
        let result = async {
            write_temp(&tmp, content, mode, owner).await?;
            tokio::fs::rename(&tmp, target)
                .await
                .map_err(|e| io_error(target, e))?;
            // Make the rename itself durable.
            let dir = tokio::fs::File::open(parent)
                .await
                .map_err(|e| io_error(parent, e))?;
            dir.sync_all().await.map_err(|e| io_error(parent, e))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    async fn pull(&self, path: &str) -> Result<Vec<u8>, ContainerError> {
        let path = check_path("path", path)?;
        tokio::fs::read(path).await.map_err(|e| io_error(path, e))
    }

    async fn list_files(
        &self,
        path: &str,
        options: ListOptions,
    ) -> Result<Vec<FileInfo>, ContainerError> {
        let dir = check_path("path", path)?;
        let pattern = match &options.pattern {
            Some(p) => {
                Some(glob::Pattern::new(p).map_err(|e| invalid("pattern", p, &e.to_string()))?)
            }
            None => None,
        };
        let matches = |name: &str| pattern.as_ref().is_none_or(|p| p.matches(name));
        let meta = tokio::fs::symlink_metadata(dir)
            .await
            .map_err(|e| io_error(dir, e))?;
        if options.itself || !meta.is_dir() {
            let name = dir
                .file_name()
                .map_or_else(|| "/".to_string(), |n| n.to_string_lossy().into_owned());
            return Ok(if matches(&name) {
                vec![file_info(dir, name, &meta)]
            } else {
                Vec::new()
            });
        }
        let mut entries = tokio::fs::read_dir(dir)
            .await
            .map_err(|e| io_error(dir, e))?;
        let mut out = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(|e| io_error(dir, e))? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !matches(&name) {
                continue;
            }
            let entry_path = entry.path();
            // DirEntry::metadata does not follow symlinks.
            match entry.metadata().await {
                Ok(meta) => out.push(file_info(&entry_path, name, &meta)),
                // Removed while we were listing.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&entry_path, e)),
            }
        }
        out.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        Ok(out)
    }

    async fn remove_path(&self, path: &str, recursive: bool) -> Result<(), ContainerError> {
        let target = check_path("path", path)?;
        parent_of("path", target)?;
        let meta = tokio::fs::symlink_metadata(target)
            .await
            .map_err(|e| io_error(target, e))?;
        let result = if !meta.is_dir() {
            tokio::fs::remove_file(target).await
        } else if recursive {
            tokio::fs::remove_dir_all(target).await
        } else {
            tokio::fs::remove_dir(target).await
        };
        result.map_err(|e| io_error(target, e))
    }

    async fn make_dir(&self, path: &str, options: MakeDirOptions) -> Result<(), ContainerError> {
        let target = check_path("path", path)?;
        let mode = check_mode(options.permissions.unwrap_or(0o755))?;
        let owner = resolve_owner(path, options.user.as_deref(), options.group.as_deref()).await?;
        if options.make_parents {
            match tokio::fs::metadata(target).await {
                Ok(m) if m.is_dir() => return Ok(()),
                Ok(_) => {
                    return Err(ContainerError::Io {
                        path: path.to_string(),
                        source: io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            "exists and is not a directory",
                        ),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(target, e)),
            }
            create_dirs(target, mode, owner).await?;
            return Ok(());
        }
        let parent = parent_of("path", target)?;
        ensure_parent_exists(parent).await?;
        tokio::fs::create_dir(target)
            .await
            .map_err(|e| io_error(target, e))?;
        own_new_dir(target, mode, owner)
    }

    async fn exists(&self, path: &str) -> Result<bool, ContainerError> {
        let path = check_path("path", path)?;
        match tokio::fs::symlink_metadata(path).await {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(io_error(path, e)),
        }
    }

    async fn start(&self, services: &[String]) -> Result<(), ContainerError> {
        let mut first_error = None;
        for service in services {
            let result = match self.service_manager(service) {
                Ok(manager) => manager.start(service).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn stop(&self, services: &[String]) -> Result<(), ContainerError> {
        // Try every service, then report the first failure.
        let mut first_error = None;
        for service in services {
            let result = match self.service_manager(service) {
                Ok(manager) => manager.stop(service).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn restart(&self, services: &[String]) -> Result<(), ContainerError> {
        // Each service is stopped then started; every one is tried, the first failure
        // is reported.
        let mut first_error = None;
        for service in services {
            let result = match self.service_manager(service) {
                Ok(manager) => match manager.stop(service).await {
                    Ok(()) => manager.start(service).await,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn is_running(&self, service: &str) -> Result<bool, ContainerError> {
        self.service_manager(service)?.is_running(service).await
    }
}

// ---------------------------------------------------------------------------------------
// Services
// ---------------------------------------------------------------------------------------

fn service_error(service: &str, message: impl Into<String>) -> ContainerError {
    ContainerError::Service {
        service: service.to_string(),
        message: message.into(),
    }
}

fn unknown_service(service: &str) -> ContainerError {
    service_error(service, "unknown service")
}

#[derive(Debug)]
struct Supervised {
    command: Vec<String>,
    child: Option<Child>,
}

#[derive(Debug, Default)]
struct SupervisorState {
    services: Mutex<HashMap<String, Supervised>>,
}

impl Drop for SupervisorState {
    fn drop(&mut self) {
        // Take the whole group of every running service down with the supervisor.
        let services = self
            .services
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for service in services.values_mut() {
            if let Some(child) = &mut service.child
                && matches!(child.try_wait(), Ok(None))
                && let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok())
            {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// A tiny, real process supervisor: named commands started as children of this process.
///
/// Each service runs in its own process group with this process's environment, standard
/// input, output and error on `/dev/null`. [`ServiceManager::stop`] sends `SIGTERM` to the
/// group, then `SIGKILL` after the grace period. Clones share the same services; when the
/// last clone is dropped, running services are killed.
///
/// ```no_run
/// # async fn demo() -> Result<(), synapse_backup::ContainerError> {
/// use synapse_backup::Container;
/// use synapse_backup::{LocalContainer, ProcessSupervisor};
///
/// let supervisor = ProcessSupervisor::new();
/// supervisor.add("synapse", ["python3", "-m", "synapse.app.homeserver"]);
/// let container = LocalContainer::with_services(supervisor);
/// container.start(&["synapse".to_string()]).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ProcessSupervisor {
    grace: Duration,
    start_check: Duration,
    state: Arc<SupervisorState>,
}

impl Default for ProcessSupervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessSupervisor {
    /// A supervisor with no services, a 10 s stop grace period and a 500 ms start check.
    pub fn new() -> Self {
        Self {
            grace: Duration::from_secs(10),
            start_check: Duration::from_millis(500),
            state: Arc::default(),
        }
    }

    /// Sets how long [`ServiceManager::start`] watches a new process: one that exits
    /// within it failed to start (Pebble uses 1 s). Default 500 ms.
    #[must_use]
    pub fn with_start_check(mut self, check: Duration) -> Self {
        self.start_check = check;
        self
    }

    /// Sets how long [`ServiceManager::stop`] waits after `SIGTERM` before `SIGKILL`.
    #[must_use]
    pub fn with_grace_period(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Registers (or replaces the command of) the service `name`; it is not started.
    pub fn add<S: Into<String>>(
        &self,
        name: impl Into<String>,
        command: impl IntoIterator<Item = S>,
    ) -> &Self {
        let command: Vec<String> = command.into_iter().map(Into::into).collect();
        let mut services = self
            .state
            .services
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match services.entry(name.into()) {
            std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().command = command,
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(Supervised {
                    command,
                    child: None,
                });
            }
        }
        self
    }
}

/// Whether `child` is still running (a finished child is reaped).
fn still_running(child: &mut Child) -> bool {
    matches!(child.try_wait(), Ok(None))
}

#[async_trait]
impl ServiceManager for ProcessSupervisor {
    async fn start(&self, service: &str) -> Result<(), ContainerError> {
        {
            let mut services = self
                .state
                .services
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let entry = services
                .get_mut(service)
                .ok_or_else(|| unknown_service(service))?;
            if entry.child.as_mut().is_some_and(still_running) {
                return Ok(());
            }
            let Some((program, args)) = entry.command.split_first() else {
                return Err(service_error(service, "has an empty command"));
            };
            let child = Command::new(program)
                .args(args)
                .process_group(0)
                .kill_on_drop(true)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| service_error(service, format!("could not start {program:?}: {e}")))?;
            entry.child = Some(child);
        }
        // Like Pebble, a service that exits within its start check failed to start.
        let deadline = tokio::time::Instant::now() + self.start_check;
        loop {
            let exited = {
                let mut services = self
                    .state
                    .services
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                match services.get_mut(service).and_then(|e| e.child.as_mut()) {
                    Some(child) => match child.try_wait() {
                        Ok(Some(status)) => Some(status),
                        _ => None,
                    },
                    None => None,
                }
            };
            if let Some(status) = exited {
                return Err(service_error(
                    service,
                    format!("exited during its start check ({status})"),
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(&self, service: &str) -> Result<(), ContainerError> {
        let child = {
            let mut services = self
                .state
                .services
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let entry = services
                .get_mut(service)
                .ok_or_else(|| unknown_service(service))?;
            entry.child.take()
        };
        let Some(mut child) = child else {
            return Ok(());
        };
        if !still_running(&mut child) {
            return Ok(());
        }
        let Some(pgid) = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw)
        else {
            return Ok(());
        };
        let _ = killpg(pgid, Signal::SIGTERM);
        let waited = tokio::time::timeout(self.grace, child.wait()).await;
        // Also take down group members that outlived the leader (or ignored SIGTERM).
        let _ = killpg(pgid, Signal::SIGKILL);
        if waited.is_err() {
            child.wait().await.map_err(|e| {
                service_error(service, format!("could not wait for it to stop: {e}"))
            })?;
        }
        Ok(())
    }

    async fn is_running(&self, service: &str) -> Result<bool, ContainerError> {
        let mut services = self
            .state
            .services
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = services
            .get_mut(service)
            .ok_or_else(|| unknown_service(service))?;
        Ok(entry.child.as_mut().is_some_and(still_running))
    }
}

/// Services managed by systemd through `systemctl`, for machine charms.
///
/// Runs `systemctl start -- <unit>`, `systemctl stop -- <unit>` and
/// `systemctl show --property=LoadState,ActiveState -- <unit>` (a unit whose `LoadState`
/// is `not-found` is unknown; `active`, `reloading`, `refreshing` and `activating`, which
/// includes systemd restarting the unit by itself, count as running).
/// The program is configurable so tests can use a fake.
#[derive(Debug, Clone)]
pub struct SystemdServices {
    program: PathBuf,
}

impl Default for SystemdServices {
    fn default() -> Self {
        Self::new()
    }
}

impl SystemdServices {
    /// Uses `systemctl` from `PATH`.
    pub fn new() -> Self {
        Self {
            program: PathBuf::from("systemctl"),
        }
    }

    /// Uses `program` instead of `systemctl` (e.g. an absolute path, or a fake in tests).
    pub fn with_program(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
        }
    }

    async fn systemctl(
        &self,
        service: &str,
        args: &[&str],
    ) -> Result<std::process::Output, ContainerError> {
        if service.is_empty() || service.contains('\0') {
            return Err(service_error(service, "invalid unit name"));
        }
        Command::new(&self.program)
            .args(args)
            .arg("--")
            .arg(service)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| {
                service_error(
                    service,
                    format!("could not run {}: {e}", self.program.display()),
                )
            })
    }

    async fn change(&self, service: &str, verb: &str) -> Result<(), ContainerError> {
        let out = self.systemctl(service, &[verb]).await?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = trim_tail(&String::from_utf8_lossy(&out.stderr), STDERR_LIMIT);
        Err(service_error(
            service,
            format!(
                "systemctl {verb} failed (exit code {}): {stderr}",
                exit_code(out.status)
            ),
        ))
    }
}

#[async_trait]
impl ServiceManager for SystemdServices {
    async fn start(&self, service: &str) -> Result<(), ContainerError> {
        self.change(service, "start").await
    }

    async fn stop(&self, service: &str) -> Result<(), ContainerError> {
        self.change(service, "stop").await
    }

    async fn is_running(&self, service: &str) -> Result<bool, ContainerError> {
        let out = self
            .systemctl(service, &["show", "--property=LoadState,ActiveState"])
            .await?;
        if !out.status.success() {
            let stderr = trim_tail(&String::from_utf8_lossy(&out.stderr), STDERR_LIMIT);
            return Err(service_error(
                service,
                format!("systemctl show failed: {stderr}"),
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let property = |name: &str| {
            text.lines()
                .find_map(|line| {
                    line.strip_prefix(name)
                        .and_then(|rest| rest.strip_prefix('='))
                })
                .map(str::trim)
        };
        if property("LoadState") == Some("not-found") {
            return Err(unknown_service(service));
        }
        match property("ActiveState") {
            Some(state) => Ok(matches!(
                state,
                "active" | "reloading" | "refreshing" | "activating"
            )),
            None => Err(service_error(
                service,
                "systemctl show printed no ActiveState",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn argv(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn root_may_become_anyone_with_the_users_primary_group() {
        let s = decide_switch(0, 0, "id", Some(("nobody", 65534, 65533)), None).unwrap();
        assert_eq!(
            s,
            Switch {
                uid: Some(65534),
                gid: Some(65533)
            }
        );
        let s =
            decide_switch(0, 0, "id", Some(("nobody", 65534, 65533)), Some(("adm", 4))).unwrap();
        assert_eq!(
            s,
            Switch {
                uid: Some(65534),
                gid: Some(4)
            }
        );
        let s = decide_switch(0, 0, "id", None, Some(("adm", 4))).unwrap();
        assert_eq!(
            s,
            Switch {
                uid: None,
                gid: Some(4)
            }
        );
        assert_eq!(
            decide_switch(0, 0, "id", None, None).unwrap(),
            Switch::default()
        );
    }

    #[test]
    fn non_root_may_only_be_itself() {
        assert_eq!(
            decide_switch(1000, 1000, "id", Some(("me", 1000, 1000)), None).unwrap(),
            Switch::default()
        );
        assert_eq!(
            decide_switch(1000, 1000, "id", None, Some(("me", 1000))).unwrap(),
            Switch::default()
        );
        match decide_switch(1000, 1000, "tar", Some(("nobody", 65534, 65534)), None) {
            Err(ContainerError::PermissionDenied { path, reason }) => {
                assert_eq!(path, "tar");
                assert!(
                    reason.contains("nobody") && reason.contains("not root"),
                    "{reason}"
                );
            }
            other => panic!("expected PermissionDenied, got {other:?}"),
        }
        match decide_switch(1000, 1000, "tar", None, Some(("adm", 4))) {
            Err(ContainerError::PermissionDenied { reason, .. }) => {
                assert!(reason.contains("adm"), "{reason}")
            }
            other => panic!("expected PermissionDenied, got {other:?}"),
        }
    }

    #[test]
    fn signals_map_to_128_plus_signal() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
    }

    #[test]
    fn debug_shows_no_internals() {
        assert_eq!(
            format!("{:?}", LocalContainer::new()),
            "LocalContainer { has_service_manager: false }"
        );
    }

    /// Whether `pid` is gone (or a zombie) within 5 s.
    async fn wait_gone(pid: i32) -> bool {
        for _ in 0..250 {
            let state = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let zombie_or_gone = state.is_empty()
                || state
                    .lines()
                    .any(|l| l.starts_with("State:") && l.contains('Z'));
            if zombie_or_gone {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test]
    async fn stop_escalates_to_sigkill_for_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("bg.pid");
        let supervisor = ProcessSupervisor::new().with_grace_period(Duration::from_millis(300));
        // Ignores SIGTERM (and so does its background child, which inherits SIG_IGN).
        let script = format!(
            r#"trap "" TERM; sleep 1000 & echo $! > {}; wait"#,
            pid_file.display()
        );
        supervisor.add("stubborn", ["bash", "-c", script.as_str()]);
        supervisor.start("stubborn").await.unwrap();
        assert!(supervisor.is_running("stubborn").await.unwrap());
        while std::fs::metadata(&pid_file).map(|m| m.len()).unwrap_or(0) == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let started = std::time::Instant::now();
        supervisor.stop("stubborn").await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "stop took {:?}",
            started.elapsed()
        );
        assert!(!supervisor.is_running("stubborn").await.unwrap());
        assert!(wait_gone(pid).await, "group member {pid} survived stop");
    }

    #[tokio::test]
    async fn supervisor_reports_unknown_services_and_bad_commands() {
        let supervisor = ProcessSupervisor::new();
        for result in [
            supervisor.start("nope").await,
            supervisor.stop("nope").await,
            supervisor.is_running("nope").await.map(|_| ()),
        ] {
            match result {
                Err(ContainerError::Service { service, message }) => {
                    assert_eq!(service, "nope");
                    assert!(message.contains("unknown"), "{message}");
                }
                other => panic!("expected Service error, got {other:?}"),
            }
        }
        supervisor.add("missing", ["/nonexistent/program"]);
        match supervisor.start("missing").await {
            Err(ContainerError::Service { message, .. }) => {
                assert!(message.contains("could not start"), "{message}")
            }
            other => panic!("expected Service error, got {other:?}"),
        }
        assert!(!supervisor.is_running("missing").await.unwrap());
    }

    #[tokio::test]
    async fn a_container_without_services_knows_none() {
        let c = LocalContainer::new();
        match c.start(&argv(&["synapse"])).await {
            Err(ContainerError::Service { service, message }) => {
                assert_eq!(service, "synapse");
                assert!(message.contains("unknown service"), "{message}");
            }
            other => panic!("expected Service error, got {other:?}"),
        }
        assert!(matches!(
            c.is_running("synapse").await,
            Err(ContainerError::Service { .. })
        ));
        assert!(matches!(
            c.stop(&argv(&["synapse"])).await,
            Err(ContainerError::Service { .. })
        ));
    }

    /// A fake `systemctl` that keeps unit state in files next to it and logs its argv.
    fn fake_systemctl(dir: &Path) -> PathBuf {
        let program = dir.join("systemctl");
        let script = r#"#!/bin/bash
set -u
here=$(dirname "$0")
printf '%s\n' "$*" >> "$here/log"
verb=$1; shift
while [ $# -gt 0 ] && [ "$1" != "--" ]; do shift; done
[ "${1:-}" = "--" ] || { echo "expected -- before the unit" >&2; exit 2; }
unit=${2:-}
case "$unit" in
  synapse|synapse.service) ;;
  broken) [ "$verb" = show ] || { echo "Job for broken.service failed." >&2; exit 1; } ;;
  *) if [ "$verb" = show ]; then printf 'LoadState=not-found\nActiveState=inactive\n'; exit 0; fi
     echo "Unit $unit.service not found." >&2; exit 5 ;;
esac
case "$verb" in
  start) touch "$here/$unit.active" ;;
  stop) rm -f "$here/$unit.active" ;;
  show) echo LoadState=loaded
        if [ -e "$here/$unit.active" ]; then echo ActiveState=active; else echo ActiveState=inactive; fi ;;
  *) echo "unknown verb $verb" >&2; exit 2 ;;
esac
"#;
        std::fs::write(&program, script).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        program
    }

    #[tokio::test]
    async fn systemd_services_drive_systemctl() {
        let dir = tempfile::tempdir().unwrap();
        let systemd = SystemdServices::with_program(fake_systemctl(dir.path()));
        assert!(!systemd.is_running("synapse").await.unwrap());
        systemd.start("synapse").await.unwrap();
        assert!(systemd.is_running("synapse").await.unwrap());
        systemd.stop("synapse").await.unwrap();
        assert!(!systemd.is_running("synapse").await.unwrap());
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert_eq!(
            log.lines().collect::<Vec<_>>(),
            [
                "show --property=LoadState,ActiveState -- synapse",
                "start -- synapse",
                "show --property=LoadState,ActiveState -- synapse",
                "stop -- synapse",
                "show --property=LoadState,ActiveState -- synapse",
            ]
        );
        match systemd.start("broken").await {
            Err(ContainerError::Service { service, message }) => {
                assert_eq!(service, "broken");
                assert!(
                    message.contains("exit code 1")
                        && message.contains("Job for broken.service failed"),
                    "{message}"
                );
            }
            other => panic!("expected Service error, got {other:?}"),
        }
        assert!(matches!(
            systemd.is_running("other").await,
            Err(ContainerError::Service { .. })
        ));
        let missing = SystemdServices::with_program("/nonexistent/systemctl");
        assert!(matches!(
            missing.start("synapse").await,
            Err(ContainerError::Service { .. })
        ));
    }
}

//! [`PebbleContainer`]: a [`Container`] over the Pebble daemon of a Kubernetes charm's
//! workload container, reached on its unix socket.

mod client;
mod exec;
mod files;
mod services;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use hyper::Method;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use self::client::{Client, REQUEST_TIMEOUT, failed};
use self::exec::Identity;
use super::local::check_path;
use super::{
    Container, ExecOptions, ExecOutput, ExecProcess, FileInfo, ListOptions, MakeDirOptions,
    PushOptions,
};
use crate::error::ContainerError;

/// A [`Container`] backed by a [Pebble](https://github.com/canonical/pebble) daemon: the
/// workload container of a Kubernetes charm, whose socket the charm container mounts at
/// `/charm/containers/<name>/pebble.socket`.
///
/// Needs the `pebble` feature. [`PebbleContainer::new`] does no I/O: a missing socket
/// or a daemon that refuses the caller shows up as a [`ContainerError`] of the first
/// call. Every call is bounded in time (a daemon that never answers is an error, not a
/// hang). Exec, files and services need Pebble admin access: the charm runs as root, or
/// as the daemon's user. Supported Pebble versions: v1.32.1 and newer (tested).
///
/// ```no_run
/// # async fn demo() -> Result<(), synapse_backup::ContainerError> {
/// use synapse_backup::{Container, PebbleContainer};
///
/// let workload = PebbleContainer::new("/charm/containers/synapse/pebble.socket");
/// workload.restart(&["synapse".to_string()]).await?;
/// # Ok(()) }
/// ```
///
/// # Commands
/// `POST /v1/exec`, then the task's `control`, `stdio` and `stderr` websockets (all
/// connected at once, within 5 s of our own), standard input in 64 KiB frames then the
/// end message, standard output and error drained concurrently, and the exit code from
/// the change. The workload needs `bash` (on the daemon's `PATH`), `mktemp`, `env` and
/// `rm`: each command runs under a small bash wrapper that
/// - keeps exactly `PATH` (the daemon's unless given), `LANG` (`C.UTF-8` unless given),
///   `HOME` and the variables asked for: Pebble merges its own environment in, and echoes
///   the merged one in its answer, which is never logged;
/// - gives the command a private `HOME` (a fresh 0700 directory under `/tmp`, removed
///   afterwards) unless the environment names one, since Pebble's default, the user's
///   passwd home, often does not exist (as for `nobody`);
/// - changes to the working directory (`/` by default) as the command's user;
/// - reports its session id. Pebble runs each exec in a session of its own but signals
///   only its direct child: on timeout, or when the `exec` future is dropped, a second
///   exec (as the daemon's user) kills every process of that session, while the control
///   websocket stays connected.
///
/// A group without a user runs as the daemon's own user with that group (Pebble refuses
/// a group alone). Environment variable names must be shell names (letters, digits, `_`).
///
/// # Files
/// Pebble's daemon runs as root and its file calls follow symlinks. So a [`push`] or
/// [`make_dir`] with an owner runs as that owner through exec, except where the nearest
/// existing directory is root's alone (nobody else can plant a link there), and
/// [`list_files`] and [`exists`] look a path up in its parent's listing, which does not
/// follow links. [`pull`] reads through `/v1/files` as the daemon's user and follows
/// symlinks, as [`LocalContainer`](crate::LocalContainer)'s does: read a path that a
/// less privileged user can change through exec as that user (the crate's backup code
/// does). Pebble's per-file error inside a 200 answer is always checked. Glob patterns
/// are Go's `path.Match` dialect (`*`, `?`, `[a-z]`, `[^…]`, `\` escapes).
///
/// # Services
/// `POST /v1/services` (start, stop, restart), waiting for Pebble's change; a service in
/// `backoff` (Pebble restarting it by itself) counts as running.
///
/// [`push`]: Container::push
/// [`make_dir`]: Container::make_dir
/// [`list_files`]: Container::list_files
/// [`exists`]: Container::exists
/// [`pull`]: Container::pull
#[derive(Clone)]
pub struct PebbleContainer {
    client: Arc<Client>,
    daemon_uid: Arc<OnceCell<u32>>,
}

impl fmt::Debug for PebbleContainer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PebbleContainer")
            .field("socket", &self.client.socket())
            .finish()
    }
}

impl PebbleContainer {
    /// A container reached through the Pebble socket at `socket_path` (no I/O here).
    pub fn new(socket_path: impl Into<PathBuf>) -> Self {
        Self {
            client: Arc::new(Client::new(socket_path.into())),
            daemon_uid: Arc::default(),
        }
    }

    /// The socket this container talks to.
    pub fn socket_path(&self) -> &Path {
        self.client.socket()
    }

    /// The daemon's uid: the owner of its `/proc/self` (Pebble's list follows the link).
    async fn daemon_uid(&self) -> Result<u32, ContainerError> {
        self.daemon_uid
            .get_or_try_init(|| async {
                let answer = self
                    .client
                    .json(
                        Method::GET,
                        "/v1/files?action=list&path=%2Fproc%2Fself&itself=true",
                        None,
                        REQUEST_TIMEOUT,
                    )
                    .await?;
                if answer.is_error() {
                    return Err(client::answer_error("pebble list of /proc/self", &answer));
                }
                answer
                    .result
                    .get(0)
                    .and_then(|e| e.get("user-id"))
                    .and_then(Value::as_u64)
                    .and_then(|id| u32::try_from(id).ok())
                    .ok_or_else(|| failed("pebble list of /proc/self", "no user-id in the answer"))
            })
            .await
            .copied()
    }

    async fn identity(&self, options: &ExecOptions) -> Result<Identity, ContainerError> {
        let mut identity = Identity {
            user: options.user.clone(),
            user_id: options.user_id,
            group: options.group.clone(),
            group_id: options.group_id,
        };
        let has_group = identity.group.is_some() || identity.group_id.is_some();
        let has_user = identity.user.is_some() || identity.user_id.is_some();
        if has_group && !has_user {
            identity.user_id = Some(self.daemon_uid().await?);
        }
        Ok(identity)
    }

    /// Runs one of our own file scripts as `user`/`group` (no secrets: paths and modes),
    /// with `stdin` borrowed (no copy of a pushed file's content).
    async fn run_as(
        &self,
        script: &str,
        name: &str,
        args: &[&str],
        user: Option<String>,
        group: Option<String>,
        stdin: Option<&[u8]>,
    ) -> Result<ExecOutput, ContainerError> {
        let mut argv = vec![
            "bash".to_string(),
            "-c".to_string(),
            script.to_string(),
            name.to_string(),
        ];
        argv.extend(args.iter().map(|a| (*a).to_string()));
        let options = ExecOptions {
            user,
            group,
            timeout: Some(std::time::Duration::from_secs(600)),
            ..ExecOptions::default()
        };
        let identity = self.identity(&options).await?;
        exec::exec(&self.client, &argv, &options, identity, stdin).await
    }
}

fn check_mode(mode: u32) -> Result<String, ContainerError> {
    if mode > 0o777 {
        return Err(ContainerError::InvalidArgument {
            what: "permissions",
            value: format!("{mode:#o}"),
            reason: "must be at most 0o777 for Pebble".into(),
        });
    }
    Ok(format!("{mode:03o}"))
}

/// Maps the file scripts' failures (`not-found: DIR` on stderr, exit 2) to the trait's.
fn script_error(path: &str, error: ContainerError) -> ContainerError {
    match error {
        ContainerError::ExitedNonZero {
            exit_code, stderr, ..
        } => {
            if exit_code == 2
                && let Some(dir) = stderr.trim().strip_prefix("not-found: ")
            {
                return ContainerError::NotFound {
                    path: dir.to_string(),
                };
            }
            if stderr.contains("Permission denied") {
                return ContainerError::PermissionDenied {
                    path: path.to_string(),
                    reason: stderr,
                };
            }
            failed(path, stderr)
        }
        other => other,
    }
}

#[async_trait]
impl Container for PebbleContainer {
    async fn exec(
        &self,
        command: &[String],
        options: ExecOptions,
    ) -> Result<ExecOutput, ContainerError> {
        super::local::validate_exec(command, &options)?;
        let identity = self.identity(&options).await?;
        exec::exec(
            &self.client,
            command,
            &options,
            identity,
            options.stdin.as_deref(),
        )
        .await
    }

    async fn exec_streaming(
        &self,
        command: &[String],
        options: ExecOptions,
    ) -> Result<ExecProcess, ContainerError> {
        super::local::validate_exec(command, &options)?;
        let identity = self.identity(&options).await?;
        exec::exec_streaming(&self.client, command, &options, identity).await
    }

    async fn push(
        &self,
        path: &str,
        content: &[u8],
        options: PushOptions,
    ) -> Result<(), ContainerError> {
        let target = check_path("path", path)?;
        let mode = check_mode(options.permissions.unwrap_or(0o644))?;
        let parent = match (target.parent(), target.file_name()) {
            (Some(p), Some(_)) => p.to_string_lossy().into_owned(),
            _ => {
                return Err(ContainerError::InvalidArgument {
                    what: "path",
                    value: path.to_string(),
                    reason: "must name an entry below /".into(),
                });
            }
        };
        for (kind, name) in [("user", &options.user), ("group", &options.group)] {
            if let Some(n) = name
                && (n.is_empty() || n.contains('\0'))
            {
                return Err(ContainerError::InvalidArgument {
                    what: kind,
                    value: n.clone(),
                    reason: "must be a non-empty name without NUL".into(),
                });
            }
        }
        if options.user.is_some() && !files::root_only(&self.client, &parent).await? {
            let make_dirs = if options.make_dirs { "1" } else { "0" };
            return self
                .run_as(
                    files::PUSH_AS_OWNER,
                    "synapse-backup-push",
                    &[path, &mode, make_dirs],
                    options.user,
                    options.group,
                    Some(content),
                )
                .await
                .map(|_| ())
                .map_err(|e| script_error(path, e));
        }
        let mut entry = json!({"path": path, "make-dirs": options.make_dirs, "permissions": mode});
        if let Some(user) = &options.user {
            entry["user"] = json!(user);
        } else if options.group.is_some() {
            // Pebble refuses a group without a user: keep the daemon's own user.
            entry["user-id"] = json!(self.daemon_uid().await?);
        }
        if let Some(group) = &options.group {
            entry["group"] = json!(group);
        }
        let request = json!({"action": "write", "files": [entry]});
        files::write(&self.client, path, content, request)
            .await
            .map_err(|e| owner_error(e, &options.user, &options.group))
    }

    async fn pull(&self, path: &str) -> Result<Vec<u8>, ContainerError> {
        files::pull(&self.client, path).await
    }

    async fn list_files(
        &self,
        path: &str,
        options: ListOptions,
    ) -> Result<Vec<FileInfo>, ContainerError> {
        files::list_files(&self.client, path, &options).await
    }

    async fn remove_path(&self, path: &str, recursive: bool) -> Result<(), ContainerError> {
        files::remove(&self.client, path, recursive).await
    }

    async fn make_dir(&self, path: &str, options: MakeDirOptions) -> Result<(), ContainerError> {
        let target = check_path("path", path)?;
        let mode = check_mode(options.permissions.unwrap_or(0o755))?;
        let Some(parent) = target.parent().map(|p| p.to_string_lossy().into_owned()) else {
            return Err(ContainerError::InvalidArgument {
                what: "path",
                value: path.to_string(),
                reason: "must name an entry below /".into(),
            });
        };
        if options.user.is_some() && !files::root_only(&self.client, &parent).await? {
            let make_parents = if options.make_parents { "1" } else { "0" };
            return self
                .run_as(
                    files::MAKE_DIR_AS_OWNER,
                    "synapse-backup-mkdir",
                    &[path, &mode, make_parents],
                    options.user,
                    options.group,
                    None,
                )
                .await
                .map(|_| ())
                .map_err(|e| script_error(path, e));
        }
        if options.make_parents {
            // Pebble's make-parents accepts an existing directory; it must not be a file.
            if let Some(entry) = files::lstat(&self.client, path).await? {
                return if entry.get("type").and_then(Value::as_str) == Some("directory") {
                    Ok(())
                } else {
                    Err(failed(path, "exists and is not a directory"))
                };
            }
        }
        let mut entry =
            json!({"path": path, "make-parents": options.make_parents, "permissions": mode});
        if let Some(user) = &options.user {
            entry["user"] = json!(user);
        } else if options.group.is_some() {
            // Pebble refuses a group without a user: keep the daemon's own user.
            entry["user-id"] = json!(self.daemon_uid().await?);
        }
        if let Some(group) = &options.group {
            entry["group"] = json!(group);
        }
        let body = json!({"action": "make-dirs", "dirs": [entry]});
        files::files_json(
            &self.client,
            path,
            &body,
            &format!("pebble make-dirs of {path}"),
        )
        .await
        .map_err(|e| owner_error(e, &options.user, &options.group))
    }

    async fn exists(&self, path: &str) -> Result<bool, ContainerError> {
        files::exists(&self.client, path).await
    }

    async fn start(&self, services: &[String]) -> Result<(), ContainerError> {
        services::act(&self.client, "start", services).await
    }

    async fn stop(&self, services: &[String]) -> Result<(), ContainerError> {
        services::act(&self.client, "stop", services).await
    }

    async fn restart(&self, services: &[String]) -> Result<(), ContainerError> {
        services::act(&self.client, "restart", services).await
    }

    async fn is_running(&self, service: &str) -> Result<bool, ContainerError> {
        services::is_running(&self.client, service).await
    }
}

/// Pebble reports an unknown owner as a generic file error: make it `UnknownUser`.
fn owner_error(
    error: ContainerError,
    user: &Option<String>,
    group: &Option<String>,
) -> ContainerError {
    let text = error.to_string();
    if let Some(name) = user
        && text.contains("unknown user")
    {
        return ContainerError::UnknownUser {
            kind: "user",
            name: name.clone(),
        };
    }
    if let Some(name) = group
        && text.contains("unknown group")
    {
        return ContainerError::UnknownUser {
            kind: "group",
            name: name.clone(),
        };
    }
    error
}

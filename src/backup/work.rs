//! The private work dir of one run (passphrase, aws config, GnuPG home, CA bundle,
//! snapshot, staging) and how its scripts run: shared by create, verify and restore.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::backup::layout::{HomeserverConfig, Layout};
use crate::backup::plan::{self, BackupOptions, ScriptCall, WorkDir};
use crate::backup::scripts::{self, Exit, WorkFile};
use crate::container::{Container, ExecOptions, FileKind, ListOptions};
use crate::error::{BackupError, ConfigError, ContainerError, Stage};
use crate::s3::S3Parameters;

/// Who made a work dir: the host, process id and process start time (clock ticks
/// since boot, with the boot id), so a later run can tell a dead run's dir from a live
/// one's, even after the pid was reused; and the PID namespace the pid belongs to, since
/// the containers of one pod share a host name and a boot id but not their pids (a CLI
/// in the workload must never judge the charm's live run dead by a pid it cannot see).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnerRecord {
    pub(crate) host: String,
    pub(crate) pid: u32,
    pub(crate) start: u64,
    pub(crate) boot: String,
    /// `readlink /proc/self/ns/pid` of the owner (`pid:[4026531836]`); empty in a
    /// record written before it was recorded, or where it cannot be read.
    pub(crate) pid_ns: String,
}

/// How long a run in another PID namespace (whose pid cannot be checked from here) is
/// presumed alive after it started: far beyond any backup or restore, so a live run is
/// never swept, while a dir left by a run killed in a container that is gone (a pod
/// restarted on the same node) is still removed in the end.
pub(crate) const FOREIGN_NAMESPACE_RUN_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// The start time (clock ticks since boot) of a process, from `/proc/<pid>/stat`.
fn process_start(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields resume after
    // the last `)`, at field 3; the start time is field 22.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

/// This process's PID namespace, as `readlink /proc/self/ns/pid` prints it.
fn pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|p| p.into_os_string().into_string().ok())
        .unwrap_or_default()
}

/// The time since boot, in clock ticks (the unit of a process's start time).
fn uptime_ticks() -> Option<u64> {
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    let seconds: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100);
    Some((seconds * per_second as f64) as u64)
}

/// What the sweep knows of where it runs, for [`OwnerRecord::is_dead_given`].
#[derive(Debug, Clone)]
pub(crate) struct Here {
    /// This process's record (host, boot id, PID namespace).
    pub(crate) record: OwnerRecord,
    /// Clock ticks since boot now; `None` when unknown.
    pub(crate) now_ticks: Option<u64>,
    /// Clock ticks per second.
    pub(crate) ticks_per_second: u64,
}

impl Here {
    fn current() -> Self {
        Here {
            record: OwnerRecord::current(),
            now_ticks: uptime_ticks(),
            ticks_per_second: nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
                .ok()
                .flatten()
                .filter(|t| *t > 0)
                .map_or(100, |t| t as u64),
        }
    }
}

impl OwnerRecord {
    /// This process.
    pub(crate) fn current() -> Self {
        OwnerRecord {
            host: host_name(),
            pid: std::process::id(),
            start: process_start("self").unwrap_or(0),
            boot: boot_id(),
            pid_ns: pid_namespace(),
        }
    }

    /// The record as written to the work dir's `owner` file.
    pub(crate) fn to_text(&self) -> String {
        let mut text = format!(
            "host {}\npid {}\nstart {}\nboot {}\n",
            self.host.replace(['\n', '\r'], " "),
            self.pid,
            self.start,
            self.boot
        );
        if !self.pid_ns.is_empty() {
            text.push_str(&format!(
                "pidns {}\n",
                self.pid_ns.replace(['\n', '\r'], " ")
            ));
        }
        text
    }

    /// Reads an `owner` file; `None` when it is not one.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let mut host = None;
        let mut pid = None;
        let mut start = None;
        let mut boot = None;
        let mut pid_ns = String::new();
        for line in text.lines() {
            let (key, value) = line.split_once(' ')?;
            match key {
                "host" => host = Some(value.to_string()),
                "pid" => pid = Some(value.parse().ok()?),
                "start" => start = Some(value.parse().ok()?),
                "boot" => boot = Some(value.to_string()),
                "pidns" => pid_ns = value.to_string(),
                _ => return None,
            }
        }
        Some(OwnerRecord {
            host: host?,
            pid: pid?,
            start: start?,
            boot: boot?,
            pid_ns,
        })
    }

    /// Whether the run that wrote this record is certainly gone, judged from this
    /// process (see [`OwnerRecord::is_dead_given`]).
    pub(crate) fn is_dead_here(&self) -> bool {
        self.is_dead_given(&Here::current(), |pid| process_start(&pid.to_string()))
    }

    /// Whether the run that wrote this record is certainly gone, seen from `here`, with
    /// `start_of` giving the start time of a pid in this PID namespace:
    /// - a record from another host is never judged dead;
    /// - on this host, one from before the last reboot (another boot id) is dead;
    /// - in this PID namespace (or a record that does not name one: written before it
    ///   was recorded, always by a process that judged pids in its own namespace), it is
    ///   dead when no process with its pid and start time exists;
    /// - in another PID namespace (another container of the pod: its pids mean nothing
    ///   here) it is never judged dead by pid, only when it started more than
    ///   [`FOREIGN_NAMESPACE_RUN_LIFETIME`] ago (start times count from the shared
    ///   boot), and never when the age is unknown.
    pub(crate) fn is_dead_given(&self, here: &Here, start_of: impl Fn(u32) -> Option<u64>) -> bool {
        if self.host != here.record.host || self.host.is_empty() {
            return false;
        }
        if self.boot != here.record.boot {
            return !self.boot.is_empty() && !here.record.boot.is_empty();
        }
        if !self.pid_ns.is_empty() && self.pid_ns != here.record.pid_ns {
            let Some(now) = here.now_ticks else {
                return false;
            };
            let bound = FOREIGN_NAMESPACE_RUN_LIFETIME
                .as_secs()
                .saturating_mul(here.ticks_per_second);
            return now.saturating_sub(self.start) > bound;
        }
        start_of(self.pid) != Some(self.start)
    }
}

/// The argv of `workdir.sh` in `mode` with `args`.
fn workdir_argv(layout: &Layout, mode: &str, args: &[&str]) -> Vec<String> {
    let mut argv = vec![
        layout.bash.clone(),
        "-c".into(),
        scripts::WORKDIR.into(),
        "bash".into(),
        mode.into(),
    ];
    argv.extend(args.iter().map(|a| (*a).to_string()));
    argv
}

/// Runs `workdir.sh` as the workload user.
async fn workdir_exec<C: Container + ?Sized>(
    container: &C,
    layout: &Layout,
    mode: &str,
    args: &[&str],
    stdin: Option<Vec<u8>>,
) -> Result<Vec<u8>, ContainerError> {
    let options = ExecOptions {
        user: layout.user.clone(),
        user_id: layout.user_id,
        group: layout.group.clone(),
        group_id: layout.group_id,
        stdin,
        ..ExecOptions::default()
    };
    Ok(container
        .exec(&workdir_argv(layout, mode, args), options)
        .await?
        .stdout)
}

/// Where [`make_dir_with`] makes a work dir.
#[derive(Clone, Copy)]
pub(crate) enum WorkPlace<'a> {
    /// In this dir (a container path), which exists.
    Under(&'a str),
    /// In the workload's temp dir (`${TMPDIR:-/tmp}`).
    Temp,
    /// In this dir (a container path), made first if missing; it must be empty.
    EmptyDir(&'a str),
}

/// Makes this run's private work dir (`mktemp -d`, mode 0700) in `place`, as the
/// workload user, with an empty `gnupg` dir and the [`OwnerRecord`] of this process.
/// `purpose` goes in its name (`.synapse-backup-<purpose>.XXXXXXXXXX`). Nothing is
/// made or chowned by this (possibly privileged) process.
///
/// # Errors
/// The exec's error; for [`WorkPlace::EmptyDir`] a dir that is not empty is
/// [`ContainerError::ExitedNonZero`] with [`Exit::DirNotEmpty`]'s code.
pub(crate) async fn make_dir_with<C: Container + ?Sized>(
    container: &C,
    layout: &Layout,
    place: WorkPlace<'_>,
    purpose: &str,
) -> Result<WorkDir, ContainerError> {
    let prefix = format!("{}{purpose}", WorkDir::PREFIX);
    let making = Making::start();
    let (mode, args, base) = match place {
        WorkPlace::Under(base) => ("make", vec![base, prefix.as_str()], Some(base)),
        WorkPlace::Temp => ("make-temp", vec![prefix.as_str()], None),
        WorkPlace::EmptyDir(dir) => ("make-in", vec![dir, prefix.as_str()], Some(dir)),
    };
    let out = workdir_exec(
        container,
        layout,
        mode,
        &args,
        Some(OwnerRecord::current().to_text().into_bytes()),
    )
    .await?;
    let shown = base.unwrap_or("the temp dir").to_string();
    let made = String::from_utf8(out)
        .ok()
        .map(|s| s.trim_end_matches('\n').to_string())
        .filter(|d| is_made_dir(d, base, &prefix))
        .map(WorkDir::at)
        .ok_or_else(|| ContainerError::Io {
            path: shown,
            source: std::io::Error::other("mktemp did not print the work dir it made"),
        })?;
    // Held before the count of dirs being made falls: no sweep of this process's own
    // dirs sees it unheld. Its guard releases it.
    held().names.insert(dir_name(&made.dir).to_string());
    drop(making);
    Ok(made)
}

/// Whether `dir` (as `workdir.sh` printed it) is a dir named `<prefix>.…` directly in
/// `base` (any absolute dir free of `..` when `None`).
fn is_made_dir(dir: &str, base: Option<&str>, prefix: &str) -> bool {
    let Some((parent, name)) = dir.rsplit_once('/') else {
        return false;
    };
    let parent_ok = match base {
        Some(base) => parent == base.trim_end_matches('/'),
        None => {
            dir.starts_with('/')
                && !parent.split('/').any(|c| c == ".." || c == ".")
                && !dir.contains('\0')
        }
    };
    parent_ok && name.starts_with(prefix) && name.len() > prefix.len()
}

/// The temp dir [`WorkPlace::Temp`] work dirs are swept from: `/tmp`, the workload's
/// temp dir when `TMPDIR` is not set (as in [`LocalContainer`](crate::LocalContainer)'s
/// clean environment).
pub(crate) const TEMP_BASE: &str = "/tmp";

/// What [`sweep_work_dirs`] did.
#[derive(Debug, Default)]
pub(crate) struct Swept {
    /// The dirs removed.
    pub(crate) removed: Vec<String>,
    /// For each dead restore whose swap had begun: what is left and how to roll back.
    pub(crate) kept: Vec<String>,
}

/// What a person must know about a dead restore's dir kept by the sweep.
fn rollback_advice(dir: &str, root: &str) -> String {
    let (aside, aside_log, placed_log) = (WorkFile::Aside, WorkFile::AsideLog, WorkFile::PlacedLog);
    format!(
        "a restore was killed during its swap: the live files it had set aside (the only copy of the previous data) are kept in {dir}/{aside}, listed in {dir}/{aside_log}, and the files it had already put in place are listed in {dir}/{placed_log} (a move the kill interrupted may be missing from the logs); its keys and staging were removed. To roll back, stop Synapse, remove each path of {placed_log} from {root} and move everything in {dir}/{aside} back to the same path under {root} (each path of {aside_log}, and any other it holds); where such a path still exists under {root} after that, a move across file systems was interrupted and either copy may be partial: copy the set-aside one over it, merging (cp -a {dir}/{aside}/PATH/. {root}/PATH/), never replacing it; then remove {dir}"
    )
}

/// The work dirs this process's runs hold (by name: made and not yet dropped), and how
/// many it is making: a sweep of this process's own dirs leaves them alone, so
/// `remove_abandoned_work_dirs` can run beside this process's running operations (a
/// charm's other task, another test) without taking their dirs from under them.
struct Held {
    names: BTreeSet<String>,
    making: usize,
}

static HELD: Mutex<Held> = Mutex::new(Held {
    names: BTreeSet::new(),
    making: 0,
});

fn held() -> MutexGuard<'static, Held> {
    HELD.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A work dir's name: its last component.
fn dir_name(dir: &str) -> &str {
    dir.trim_end_matches('/').rsplit('/').next().unwrap_or(dir)
}

/// A work dir being made by this process (its owner record may be written before the
/// dir is held): counted from before the make to after the dir is held, on every path.
struct Making;

impl Making {
    fn start() -> Making {
        held().making += 1;
        Making
    }
}

impl Drop for Making {
    fn drop(&mut self) {
        let mut held = held();
        held.making = held.making.saturating_sub(1);
    }
}

/// The work dir `dir` is no longer held by a run of this process (its guard was
/// dropped, finished or not).
pub(crate) fn release(dir: &str) {
    held().names.remove(dir_name(dir));
}

/// Whether a sweep of this process's own dirs must leave `dir` alone: a run of this
/// process holds it, or one is making a dir (which may be this one).
fn held_here(dir: &str) -> bool {
    let held = held();
    held.making > 0 || held.names.contains(dir_name(dir))
}

/// Sweeps the work dirs under the layout's work base (and [`TEMP_BASE`]) that runs now
/// dead left behind (a killed process, a dropped future): only dirs whose
/// [`OwnerRecord`] names a process of this host that no longer exists. `backup` and
/// `verify` dirs are removed; a dead restore's dir is removed too, unless its swap had
/// begun: then its keys, aws config and staging are removed and the set-aside live
/// files and the swap's logs kept (reported in [`Swept::kept`], with how to roll back).
/// Dirs of live runs, of other hosts and without a readable record are never touched.
/// With `including_own`, this process's own dirs are swept too (its runs were
/// dropped), except those a run of this process still holds.
pub(crate) async fn sweep_work_dirs<C: Container + ?Sized>(
    container: &C,
    layout: &Layout,
    including_own: bool,
) -> Swept {
    let base = WorkDir::base(layout);
    let pattern = format!("{}*", WorkDir::PREFIX);
    let mut entries = Vec::new();
    let bases = if base == TEMP_BASE {
        vec![base]
    } else {
        vec![base, TEMP_BASE.to_string()]
    };
    for dir in bases {
        if let Ok(found) = container
            .list_files(
                &dir,
                ListOptions {
                    pattern: Some(pattern.clone()),
                    itself: false,
                },
            )
            .await
        {
            entries.extend(found);
        }
    }
    let mut swept = Swept::default();
    for entry in entries {
        let purpose = &entry.name[WorkDir::PREFIX.len()..];
        let restore = purpose.starts_with("restore.");
        let sweepable = restore
            || ["backup-", "verify."]
                .iter()
                .any(|p| purpose.starts_with(p));
        if entry.kind != FileKind::Directory || !sweepable {
            continue;
        }
        let work = WorkDir::at(entry.path);
        // A dir without a readable record is never touched.
        let Some(record) = Outputs::new(container, layout, &work)
            .text_if_written(WorkFile::Owner)
            .await
            .ok()
            .flatten()
            .and_then(|t| OwnerRecord::parse(&t))
        else {
            continue;
        };
        let own = including_own && record == OwnerRecord::current() && !held_here(&work.dir);
        if !(record.is_dead_here() || own) {
            continue;
        }
        if !restore {
            tracing::info!(dir = %work.dir, pid = record.pid, "removing the work dir of a run that is gone");
            remove_work_dir(container, layout, &work).await;
            swept.removed.push(work.dir);
            continue;
        }
        match sweep_work_dir(container, layout, &work).await {
            Ok(true) => {
                let advice = rollback_advice(&work.dir, &layout.host_path("/"));
                tracing::error!(dir = %work.dir, pid = record.pid, "{advice}");
                swept.kept.push(advice);
            }
            Ok(_) => {
                tracing::info!(dir = %work.dir, pid = record.pid, "removed the work dir of a restore that is gone");
                swept.removed.push(work.dir);
            }
            Err(e) => {
                tracing::warn!(dir = %work.dir, error = %e, "could not sweep the work dir of a restore that is gone");
            }
        }
    }
    swept
}

/// Writes `content` to the new work file `file` (mode 0600), as the workload user
/// (through the exec's standard input; an owned `content` is not copied).
pub(crate) async fn write_file<C: Container + ?Sized>(
    container: &C,
    layout: &Layout,
    work: &WorkDir,
    file: WorkFile,
    content: impl Into<Vec<u8>>,
) -> Result<(), ContainerError> {
    workdir_exec(
        container,
        layout,
        "write",
        &[&work.dir, file.name()],
        Some(content.into()),
    )
    .await
    .map(drop)
}

/// Writes the new work file `file` in `work` from `pieces`, one exec each (the first
/// makes it, the others append), so that a long list is never held whole: see
/// [`write_file`].
///
/// # Errors
/// The first exec's error (the file exists, the dir is gone).
pub(crate) async fn write_file_pieces<C: Container + ?Sized>(
    container: &C,
    layout: &Layout,
    work: &WorkDir,
    file: WorkFile,
    pieces: impl Iterator<Item = Vec<u8>> + Send,
) -> Result<(), ContainerError> {
    let mut mode = "write";
    for piece in pieces {
        workdir_exec(
            container,
            layout,
            mode,
            &[&work.dir, file.name()],
            Some(piece),
        )
        .await?;
        mode = "append";
    }
    if mode == "write" {
        write_file(container, layout, work, file, Vec::new()).await?;
    }
    Ok(())
}

/// Reads up to `length` bytes of a workload file from byte `offset`, as the workload
/// user (so a link that user planted is followed with that user's rights only): a
/// short read means the end of the file. Work files are read through [`Outputs`].
///
/// # Errors
/// The exec's error: the file is missing or unreadable.
pub(crate) async fn read_range<C: Container + ?Sized>(
    container: &C,
    layout: &Layout,
    path: &str,
    offset: u64,
    length: u64,
) -> Result<Vec<u8>, ContainerError> {
    workdir_exec(
        container,
        layout,
        "read",
        &[path, &offset.to_string(), &length.to_string()],
        None,
    )
    .await
}

/// The size of a work dir file, read as the workload user; `None` when unknown.
pub(crate) async fn file_size<C: Container + ?Sized>(
    container: &C,
    layout: &Layout,
    path: &str,
) -> Option<u64> {
    let out = workdir_exec(container, layout, "size", &[path], None)
        .await
        .ok()?;
    String::from_utf8(out).ok()?.trim().parse().ok()
}

/// One entry of [`list_dir`]: its kind (a symlink not followed) and name.
pub(crate) type Entry = (FileKind, String);

fn kind_from_letter(letter: &[u8]) -> FileKind {
    match letter {
        b"f" => FileKind::File,
        b"d" => FileKind::Directory,
        b"l" => FileKind::Symlink,
        _ => FileKind::Other,
    }
}

/// The entries of the workload dir `dir` (a host path, followed when it is a symlink)
/// whose names match the glob `pattern`, listed as the workload user (so a link that
/// user planted leads only where that user may look); `None` when `dir` does not
/// exist. Names that are not UTF-8 are left out (with a warning).
///
/// # Errors
/// The exec's error: `dir` is not a directory or cannot be read by the workload user.
pub(crate) async fn list_dir<C: Container + ?Sized>(
    container: &C,
    layout: &Layout,
    dir: &str,
    pattern: &str,
) -> Result<Option<Vec<Entry>>, ContainerError> {
    let out = match workdir_exec(container, layout, "list", &[dir, pattern], None).await {
        Ok(out) => out,
        Err(e) if Exit::of(&e) == Some(Exit::NoSuchPath) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut entries = Vec::new();
    for record in out.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let Some((letter, name)) = record.split_first_chunk::<2>() else {
            continue;
        };
        match std::str::from_utf8(name) {
            Ok(name) => entries.push((kind_from_letter(&letter[..1]), name.to_string())),
            Err(_) => tracing::warn!(
                dir,
                name = %String::from_utf8_lossy(name),
                "skipping an entry whose name is not UTF-8"
            ),
        }
    }
    Ok(Some(entries))
}

/// The kind of the workload path `path` (a host path, a final symlink not followed),
/// looked up as the workload user; `None` when it does not exist.
///
/// # Errors
/// The exec's error: the workload user cannot look there.
pub(crate) async fn kind_of<C: Container + ?Sized>(
    container: &C,
    layout: &Layout,
    path: &str,
) -> Result<Option<FileKind>, ContainerError> {
    match workdir_exec(container, layout, "kind", &[path], None).await {
        Ok(out) => Ok(Some(kind_from_letter(&out))),
        Err(e) if Exit::of(&e) == Some(Exit::NoSuchPath) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Checks an extraction's target dir as the workload user and makes what is missing of
/// it (`workdir.sh target`): every existing component owned by root or that user and
/// not writable by others (sticky ancestors excepted, never the target itself).
/// Gives the topmost dir it made, for [`unmake_target`] after a failure.
///
/// # Errors
/// [`ConfigError::Invalid`] (field `target`) when the target is refused; the exec's
/// error otherwise.
pub(crate) async fn prepare_target<C: Container + ?Sized>(
    container: &C,
    layout: &Layout,
    dir: &str,
) -> Result<Option<String>, BackupError> {
    match workdir_exec(container, layout, "target", &[dir], None).await {
        Ok(out) => {
            let top = String::from_utf8_lossy(&out)
                .trim_end_matches('\n')
                .to_string();
            Ok((!top.is_empty()).then_some(top))
        }
        Err(ContainerError::ExitedNonZero {
            exit_code, stderr, ..
        }) if Exit::from_code(exit_code) == Exit::TargetRefused => {
            Err(BackupError::Config(ConfigError::field(
                "target",
                format!(
                    "{dir:?} is refused: {}: the restored signing key and database must not be readable or movable by another user",
                    stderr.trim()
                ),
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// Removes the dirs [`prepare_target`] made (`dir` and its parents up to `top`) while
/// they are empty, as the workload user; logs a failure.
pub(crate) async fn unmake_target<C: Container + ?Sized>(
    container: &C,
    layout: &Layout,
    dir: &str,
    top: &str,
) {
    if let Err(e) = workdir_exec(container, layout, "unmake", &[dir, top], None).await {
        tracing::warn!(dir, error = %e, "could not remove the target dir this run made");
    }
}

/// Puts the aws CLI config, the CA bundle and, when the relation asks for SSE-C, the
/// customer key (raw, for `--sse-c-key fileb://`) in the work dir. The passphrase is never
/// written anywhere: it reaches gpg on a file descriptor (see [`pipeline_options`]).
/// The caller removes the work dir whatever happens.
pub(crate) async fn fill_work_dir<C: Container + ?Sized>(
    container: &C,
    params: &S3Parameters,
    layout: &Layout,
    work: &WorkDir,
    options: &BackupOptions,
) -> Result<(), BackupError> {
    let config = plan::aws_config_file(params, options)?;
    write_file(
        container,
        layout,
        work,
        WorkFile::AwsConfig,
        config.as_bytes(),
    )
    .await?;
    if let Some(key) = crate::s3::aws_cli::customer_key_file(params) {
        write_file(container, layout, work, WorkFile::SseCKey, key).await?;
    }
    if let Some(bundle) = plan::ca_bundle(params) {
        write_file(
            container,
            layout,
            work,
            WorkFile::CaBundle,
            bundle.as_bytes(),
        )
        .await?;
    }
    Ok(())
}

/// Sweeps a restore's work dir as the workload user (`workdir.sh sweep`): when its swap
/// had begun (something set aside or placed, or logged), only the set-aside live files
/// and the swap's logs stay, and `true` says so; else the whole dir goes. Its keys, aws
/// config and staging never stay.
///
/// # Errors
/// The exec's, when the sweep could not run or failed.
pub(crate) async fn sweep_work_dir<C: Container + ?Sized>(
    container: &C,
    layout: &Layout,
    work: &WorkDir,
) -> Result<bool, ContainerError> {
    let out = workdir_exec(container, layout, "sweep", &[&work.dir], None).await?;
    Ok(out.starts_with(b"kept"))
}

/// Removes the work dir as the workload user, logging (not failing) when it cannot.
pub(crate) async fn remove_work_dir<C: Container + ?Sized>(
    container: &C,
    layout: &Layout,
    work: &WorkDir,
) {
    if let Err(e) = workdir_exec(container, layout, "remove", &[&work.dir], None).await {
        tracing::warn!(dir = %work.dir, error = %e, "could not remove the work dir");
    }
}

/// How a script of the plan runs: as the workload user, in the work dir.
pub(crate) fn exec_options(
    layout: &Layout,
    call: &ScriptCall,
    work: &WorkDir,
    timeout: Option<Duration>,
) -> ExecOptions {
    ExecOptions {
        environment: call.env.clone(),
        working_dir: Some(work.dir.clone()),
        user: layout.user.clone(),
        user_id: layout.user_id,
        group: layout.group.clone(),
        group_id: layout.group_id,
        timeout,
        ..ExecOptions::default()
    }
}

/// How a pipeline script that runs gpg runs: as [`exec_options`], with the passphrase
/// and a newline on its standard input, which the script keeps on fd 3 for
/// `gpg --passphrase-fd 3`. The passphrase is never written to a file.
pub(crate) fn pipeline_options(
    layout: &Layout,
    call: &ScriptCall,
    work: &WorkDir,
    timeout: Option<Duration>,
    passphrase: &str,
) -> ExecOptions {
    let mut line = Vec::with_capacity(passphrase.len() + 1);
    line.extend_from_slice(passphrase.as_bytes());
    line.push(b'\n');
    ExecOptions {
        stdin: Some(line),
        ..exec_options(layout, call, work, timeout)
    }
}

/// What a run's scripts wrote in its work dir, read as the workload user (so a link
/// that user planted is followed with that user's rights only). Every read of a work
/// file goes through [`Outputs::read_part`]: a file the protocol says is there and is
/// missing is an error naming it, never a silent default; a file a failed script may
/// not have reached is read with the `_if_written` forms, which say so in the type.
pub(crate) struct Outputs<'a, C: Container + ?Sized> {
    container: &'a C,
    layout: &'a Layout,
    work: &'a WorkDir,
}

/// The error of a work file that is missing, unreadable or not what its script
/// writes: names the file.
fn output_error(path: String, kind: std::io::ErrorKind, message: String) -> ContainerError {
    ContainerError::Io {
        path,
        source: std::io::Error::new(kind, message),
    }
}

impl<'a, C: Container + ?Sized> Outputs<'a, C> {
    /// The outputs in `work`.
    pub(crate) fn new(container: &'a C, layout: &'a Layout, work: &'a WorkDir) -> Self {
        Outputs {
            container,
            layout,
            work,
        }
    }

    /// The work dir read.
    pub(crate) fn work(&self) -> &WorkDir {
        self.work
    }

    /// The one read: the whole file, or `length` bytes of it from byte `offset`;
    /// `None` when it does not exist.
    async fn read_part(
        &self,
        file: WorkFile,
        range: Option<(u64, u64)>,
    ) -> Result<Option<Vec<u8>>, ContainerError> {
        let path = self.work.path(file);
        let bounds = range.map(|(offset, length)| [offset.to_string(), length.to_string()]);
        let mut args = vec![path.as_str()];
        if let Some([offset, length]) = &bounds {
            args.extend([offset.as_str(), length.as_str()]);
        }
        match workdir_exec(self.container, self.layout, "read", &args, None).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if Exit::of(&e) == Some(Exit::NoSuchPath) => Ok(None),
            Err(e) => Err(output_error(
                path,
                std::io::ErrorKind::Other,
                format!("cannot read the work file {file}: {e}"),
            )),
        }
    }

    /// The missing file's error.
    fn missing(&self, file: WorkFile) -> ContainerError {
        output_error(
            self.work.path(file),
            std::io::ErrorKind::NotFound,
            format!("the work file {file} is missing: the script that writes it did not"),
        )
    }

    /// A work file, whole.
    ///
    /// # Errors
    /// The file is missing or cannot be read (the error names it).
    pub(crate) async fn read(&self, file: WorkFile) -> Result<Vec<u8>, ContainerError> {
        self.read_part(file, None)
            .await?
            .ok_or_else(|| self.missing(file))
    }

    /// A work file a failed script may not have written; `None` when it is missing.
    ///
    /// # Errors
    /// The file exists and cannot be read.
    pub(crate) async fn read_if_written(
        &self,
        file: WorkFile,
    ) -> Result<Option<Vec<u8>>, ContainerError> {
        self.read_part(file, None).await
    }

    /// Up to `length` bytes of a work file from byte `offset`: a short read means the
    /// end of the file.
    ///
    /// # Errors
    /// As [`Outputs::read`].
    pub(crate) async fn chunk(
        &self,
        file: WorkFile,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, ContainerError> {
        self.read_part(file, Some((offset, length)))
            .await?
            .ok_or_else(|| self.missing(file))
    }

    /// A work file read in chunks of `chunk` bytes and handed to `each` one record at a
    /// time, empty ones included (the records end with `separator`; the last may lack
    /// it), so that a listing of 100,000 members is never held whole.
    ///
    /// # Errors
    /// As [`Outputs::read`], or the first error of `each`.
    pub(crate) async fn for_each_record<E: From<ContainerError>>(
        &self,
        file: WorkFile,
        separator: u8,
        chunk: u64,
        mut each: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut offset = 0;
        // The start of a record a chunk cut (only it is copied: a chunk's whole records
        // are handed over where they are).
        let mut carry: Vec<u8> = Vec::new();
        loop {
            let part = self.chunk(file, offset, chunk).await?;
            offset += part.len() as u64;
            let last = (part.len() as u64) < chunk;
            let mut rest = part.as_slice();
            if !carry.is_empty() {
                match rest.iter().position(|b| *b == separator) {
                    Some(end) => {
                        carry.extend_from_slice(&rest[..end]);
                        each(&carry)?;
                        carry.clear();
                        rest = &rest[end + 1..];
                    }
                    None => {
                        carry.extend_from_slice(rest);
                        rest = &[];
                    }
                }
            }
            let complete = if last {
                rest.len()
            } else {
                rest.iter()
                    .rposition(|b| *b == separator)
                    .map_or(0, |p| p + 1)
            };
            let mut records = rest[..complete].split(|b| *b == separator).peekable();
            while let Some(record) = records.next() {
                // The piece after the last separator is not a record when empty.
                if !(record.is_empty() && records.peek().is_none()) {
                    each(record)?;
                }
            }
            carry.extend_from_slice(&rest[complete..]);
            if last {
                // A last record without its separator.
                if !carry.is_empty() {
                    each(&carry)?;
                }
                return Ok(());
            }
        }
    }

    /// A small text file, trimmed.
    ///
    /// # Errors
    /// As [`Outputs::read`].
    pub(crate) async fn text(&self, file: WorkFile) -> Result<String, ContainerError> {
        Ok(trimmed(&self.read(file).await?))
    }

    /// A small text file a failed script may not have written, trimmed; `None` when it
    /// is missing.
    ///
    /// # Errors
    /// The file exists and cannot be read.
    pub(crate) async fn text_if_written(
        &self,
        file: WorkFile,
    ) -> Result<Option<String>, ContainerError> {
        Ok(self.read_if_written(file).await?.map(|b| trimmed(&b)))
    }

    /// The whitespace-separated field `index` of a small text file, parsed (`0` for
    /// a file of one number).
    ///
    /// # Errors
    /// As [`Outputs::read`], and a field that is missing or does not parse (the
    /// error names the file and what it holds).
    pub(crate) async fn field<T: std::str::FromStr>(
        &self,
        file: WorkFile,
        index: usize,
    ) -> Result<T, ContainerError> {
        let text = self.text(file).await?;
        parse_field(&text, index).ok_or_else(|| self.malformed(file, &text))
    }

    /// The stage a pipeline's `common.sh` named in [`WorkFile::Failed`]: its name and
    /// its own exit status (`<stage> <status>`), read once.
    ///
    /// # Errors
    /// As [`Outputs::field`].
    pub(crate) async fn failed_stage(&self) -> Result<(String, i32), ContainerError> {
        let text = self.text(WorkFile::Failed).await?;
        parse_field(&text, 0)
            .zip(parse_field(&text, 1))
            .ok_or_else(|| self.malformed(WorkFile::Failed, &text))
    }

    /// The error of a work file that does not hold what its script writes.
    fn malformed(&self, file: WorkFile, text: &str) -> ContainerError {
        output_error(
            self.work.path(file),
            std::io::ErrorKind::InvalidData,
            format!(
                "the work file {file} holds {:?}, not what its script writes",
                crate::error::trim_tail(text, 200)
            ),
        )
    }
}

/// A work file's bytes as trimmed text.
fn trimmed(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

/// The whitespace-separated field `index` of `text`, parsed.
pub(crate) fn parse_field<T: std::str::FromStr>(text: &str, index: usize) -> Option<T> {
    text.split_whitespace().nth(index)?.parse().ok()
}

/// The largest `homeserver.yaml` read (Synapse's own are a few KiB).
const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Reads and parses the workload's `homeserver.yaml`, as the workload user: a
/// symlink that user planted never makes a privileged caller read a file the workload
/// user could not (through any [`Container`]: the read is an exec, not the file API).
pub(crate) async fn read_homeserver_config<C: Container + ?Sized>(
    container: &C,
    layout: &Layout,
) -> Result<HomeserverConfig, ConfigError> {
    let path = layout.homeserver_config_path();
    let unreadable = |message: String| ConfigError::Parse {
        what: path.clone(),
        message,
    };
    let bytes = read_range(
        container,
        layout,
        &layout.host_path(&path),
        0,
        MAX_CONFIG_BYTES + 1,
    )
    .await
    .map_err(|e| unreadable(format!("cannot read it as the workload user: {e}")))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(unreadable(format!(
            "it is larger than {MAX_CONFIG_BYTES} bytes"
        )));
    }
    let yaml = String::from_utf8(bytes).map_err(|_| unreadable("not valid UTF-8".into()))?;
    HomeserverConfig::parse(&yaml, &path, layout)
}

/// The error of a pipeline step that failed in `stage`: exited non-zero (its exit code
/// and trimmed stderr) or timed out, as [`BackupError::StageFailed`]; any other
/// container error as itself.
pub(crate) fn stage_error(stage: Stage, e: ContainerError) -> BackupError {
    match e {
        ContainerError::ExitedNonZero {
            exit_code, stderr, ..
        } => BackupError::StageFailed {
            stage,
            exit_code,
            stderr,
        },
        ContainerError::TimedOut { timeout, .. } => BackupError::StageFailed {
            stage,
            exit_code: -1,
            stderr: format!("timed out after {timeout:?}"),
        },
        other => BackupError::Container(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{ExecOutput, MockContainer};

    /// A dir is held by its name from its make until its guard releases it, wherever it
    /// is listed from; while a dir is being made, no own dir is sweepable.
    #[test]
    fn a_held_dir_is_left_to_its_run_and_a_released_one_is_not() {
        let dir = "/srv/data/.synapse-backup-verify.HeldTest01";
        assert!(!held_here(dir) || held().making > 0);
        held().names.insert(dir_name(dir).to_string());
        assert!(held_here(dir));
        assert!(
            held_here(&format!("{dir}/")),
            "a listed path with a trailing slash"
        );
        assert!(
            held_here("/tmp/.synapse-backup-verify.HeldTest01"),
            "by name"
        );
        release(dir);
        let making = Making::start();
        assert!(held_here("/srv/data/.synapse-backup-backup-Other01"));
        drop(making);
        assert!(!held_here(dir) || held().making > 0, "released");
    }

    /// A workload whose work dir `/r/w` holds `size` ("10"), `failed` ("gpg x") and an
    /// unreadable `head`; every other file is missing (`workdir.sh read` exits with
    /// [`Exit::NoSuchPath`]'s code).
    fn workload() -> MockContainer {
        let mut c = MockContainer::new();
        c.expect_exec().returning(|argv, _| {
            assert_eq!(
                (argv[2].as_str(), argv[4].as_str()),
                (scripts::WORKDIR, "read")
            );
            let fail = |code: i32| {
                Err(ContainerError::ExitedNonZero {
                    command: "bash".into(),
                    exit_code: code,
                    stderr: "cat: denied".into(),
                })
            };
            let ok = |text: &str| {
                Ok(ExecOutput {
                    stdout: text.as_bytes().to_vec(),
                    ..ExecOutput::default()
                })
            };
            match argv[5].as_str() {
                "/r/w/size" => ok("10\n"),
                "/r/w/failed" => ok("gpg x\n"),
                "/r/w/head" => fail(1),
                _ => fail(Exit::NoSuchPath.code()),
            }
        });
        c
    }

    /// With the real `workdir.sh` in real bash: a work file written in pieces is
    /// their concatenation, a list of none is an empty file, and `append` refuses a
    /// name that is not a regular file (a symlink planted in its place).
    #[tokio::test]
    async fn a_work_file_written_in_pieces_is_their_concatenation() {
        // This process's user runs the script (no user to switch to).
        let layout = Layout {
            user: None,
            user_id: None,
            group: None,
            group_id: None,
            ..Layout::default()
        };
        let c = crate::LocalContainer::new();
        let tmp = tempfile::tempdir().unwrap();
        let work = WorkDir::at(tmp.path().to_str().unwrap());
        let pieces = [b"a\0b\0".to_vec(), b"c\0".to_vec(), b"d\0".to_vec()];
        write_file_pieces(
            &c,
            &layout,
            &work,
            WorkFile::PackMembers,
            pieces.into_iter(),
        )
        .await
        .unwrap();
        let path = tmp.path().join(WorkFile::PackMembers.name());
        assert_eq!(std::fs::read(&path).unwrap(), b"a\0b\0c\0d\0");
        // Written again: refused, as `write_file` refuses an existing file.
        let again = [b"x".to_vec()].into_iter();
        assert!(
            write_file_pieces(&c, &layout, &work, WorkFile::PackMembers, again)
                .await
                .is_err()
        );
        std::fs::remove_file(&path).unwrap();
        write_file_pieces(
            &c,
            &layout,
            &work,
            WorkFile::PackMembers,
            std::iter::empty(),
        )
        .await
        .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        // `append` writes only to the regular file `write` made, never through a link.
        std::fs::remove_file(&path).unwrap();
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::write(&elsewhere, b"kept").unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        let appended = workdir_exec(
            &c,
            &layout,
            "append",
            &[&work.dir, WorkFile::PackMembers.name()],
            Some(b"more".to_vec()),
        )
        .await;
        assert!(
            matches!(
                appended,
                Err(ContainerError::ExitedNonZero { exit_code: 52, .. })
            ),
            "{appended:?}"
        );
        assert_eq!(std::fs::read(&elsewhere).unwrap(), b"kept");
    }

    #[tokio::test]
    async fn an_output_is_read_as_text_or_a_field() {
        let (c, layout, work) = (workload(), Layout::default(), WorkDir::at("/r/w"));
        let outputs = Outputs::new(&c, &layout, &work);
        assert_eq!(outputs.field::<u64>(WorkFile::Size, 0).await.unwrap(), 10);
        assert_eq!(outputs.text(WorkFile::Failed).await.unwrap(), "gpg x");
        assert_eq!(outputs.read(WorkFile::Size).await.unwrap(), b"10\n");
        assert_eq!(
            outputs.text_if_written(WorkFile::Size).await.unwrap(),
            Some("10".into())
        );
    }

    /// A workload whose work file `/r/w/members` holds `content`, read in the ranges
    /// asked for.
    fn ranged(content: &'static [u8]) -> MockContainer {
        let mut c = MockContainer::new();
        c.expect_exec().returning(move |argv, _| {
            assert_eq!(argv[5], "/r/w/members");
            let offset: usize = argv[6].parse().unwrap();
            let length: usize = argv[7].parse().unwrap();
            let start = offset.min(content.len());
            let end = (offset + length).min(content.len());
            Ok(ExecOutput {
                stdout: content[start..end].to_vec(),
                ..ExecOutput::default()
            })
        });
        c
    }

    #[tokio::test]
    async fn records_are_handed_over_whole_whatever_the_chunk_size() {
        let layout = Layout::default();
        let work = WorkDir::at("/r/w");
        for (content, expected) in [
            (&b"ab\ncdefgh\n\nij"[..], vec!["ab", "cdefgh", "", "ij"]),
            (b"ab\ncdefgh\n", vec!["ab", "cdefgh"]),
            (b"", vec![]),
            (b"\n\n", vec!["", ""]),
            (b"abcdefg", vec!["abcdefg"]),
            (b"\nabcdefg\nh\n\n", vec!["", "abcdefg", "h", ""]),
        ] {
            for chunk in [1, 2, 3, 5, 64] {
                let c = ranged(content);
                let outputs = Outputs::new(&c, &layout, &work);
                let mut got: Vec<String> = Vec::new();
                outputs
                    .for_each_record(WorkFile::Members, b'\n', chunk, |r| {
                        got.push(String::from_utf8(r.to_vec()).unwrap());
                        Ok::<_, ContainerError>(())
                    })
                    .await
                    .unwrap();
                assert_eq!(got, expected, "{content:?} in chunks of {chunk}");
            }
        }
        // The callback's error stops the read and is given back.
        let c = ranged(b"a\nb\nc\n");
        let outputs = Outputs::new(&c, &layout, &work);
        let mut seen = 0;
        let e = outputs
            .for_each_record(WorkFile::Members, b'\n', 2, |r| {
                seen += 1;
                if r == b"b" {
                    return Err(ContainerError::Io {
                        path: "b".into(),
                        source: std::io::Error::other("stop"),
                    });
                }
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("stop") || matches!(e, ContainerError::Io { .. }));
        assert_eq!(seen, 2);
    }

    #[tokio::test]
    async fn a_missing_output_is_an_error_naming_the_file() {
        let (c, layout, work) = (workload(), Layout::default(), WorkDir::at("/r/w"));
        let outputs = Outputs::new(&c, &layout, &work);
        for e in [
            outputs.read(WorkFile::Sha256).await.unwrap_err(),
            outputs.text(WorkFile::Sha256).await.unwrap_err(),
            outputs.field::<u64>(WorkFile::Sha256, 0).await.unwrap_err(),
            outputs.chunk(WorkFile::Sha256, 0, 8).await.unwrap_err(),
        ] {
            let shown = e.to_string();
            assert!(
                shown.contains("/r/w/sha256") && shown.contains("sha256 is missing"),
                "{shown}"
            );
        }
        // Where a failed script may not have written it, a missing file is `None`.
        assert_eq!(
            outputs.read_if_written(WorkFile::Sha256).await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn an_unreadable_or_malformed_output_is_an_error_naming_the_file() {
        let (c, layout, work) = (workload(), Layout::default(), WorkDir::at("/r/w"));
        let outputs = Outputs::new(&c, &layout, &work);
        // Unreadable: an error even where the file may be missing.
        let e = outputs.read_if_written(WorkFile::Head).await.unwrap_err();
        assert!(
            e.to_string().contains("cannot read the work file head"),
            "{e}"
        );
        // Not a number, or no such field.
        let e = outputs.field::<u64>(WorkFile::Failed, 0).await.unwrap_err();
        assert!(
            e.to_string().contains("/r/w/failed") && e.to_string().contains("\"gpg x\""),
            "{e}"
        );
        assert!(outputs.field::<String>(WorkFile::Failed, 2).await.is_err());
        assert_eq!(
            outputs.field::<String>(WorkFile::Failed, 1).await.unwrap(),
            "x"
        );
        // A stage whose status is no number.
        let e = outputs.failed_stage().await.unwrap_err();
        assert!(
            e.to_string().contains("/r/w/failed") && e.to_string().contains("\"gpg x\""),
            "{e}"
        );
    }

    /// A failed stage's name and status come from one read of `failed`.
    #[tokio::test]
    async fn a_failed_stage_is_read_once() {
        let mut c = MockContainer::new();
        c.expect_exec().times(1).returning(|argv, _| {
            assert_eq!(argv[5], "/r/w/failed");
            Ok(ExecOutput {
                stdout: b"tee 3\n".to_vec(),
                ..ExecOutput::default()
            })
        });
        let (layout, work) = (Layout::default(), WorkDir::at("/r/w"));
        let outputs = Outputs::new(&c, &layout, &work);
        assert_eq!(outputs.failed_stage().await.unwrap(), ("tee".into(), 3));
    }

    fn here(pid_ns: &str, now_ticks: Option<u64>) -> Here {
        Here {
            record: OwnerRecord {
                host: "synapse-0".into(),
                pid: 1,
                start: 50,
                boot: "b00t".into(),
                pid_ns: pid_ns.into(),
            },
            now_ticks,
            ticks_per_second: 100,
        }
    }

    fn record(pid_ns: &str, start: u64) -> OwnerRecord {
        OwnerRecord {
            host: "synapse-0".into(),
            pid: 4242,
            start,
            boot: "b00t".into(),
            pid_ns: pid_ns.into(),
        }
    }

    const NO_SUCH_PID: fn(u32) -> Option<u64> = |_| None;

    #[test]
    fn a_run_in_another_pid_namespace_is_not_judged_dead_by_a_pid_missing_here() {
        let here = here("pid:[1]", Some(1_000_000));
        // The charm container's live run: its pid does not exist in the workload's
        // namespace; it must not be swept.
        assert!(!record("pid:[2]", 900_000).is_dead_given(&here, NO_SUCH_PID));
        // Nor when a process of ours happens to hold that pid with another start.
        assert!(!record("pid:[2]", 900_000).is_dead_given(&here, |_| Some(7)));
        // Unknown uptime: never dead.
        assert!(
            !record("pid:[2]", 0).is_dead_given(&super::tests::here("pid:[1]", None), NO_SUCH_PID)
        );
    }

    #[test]
    fn a_run_in_another_pid_namespace_is_dead_once_older_than_the_bound() {
        let bound = FOREIGN_NAMESPACE_RUN_LIFETIME.as_secs() * 100;
        let now = bound + 10_000;
        let here = here("pid:[1]", Some(now));
        assert!(record("pid:[2]", 9_999).is_dead_given(&here, NO_SUCH_PID));
        assert!(!record("pid:[2]", 10_000).is_dead_given(&here, NO_SUCH_PID));
    }

    #[test]
    fn a_run_in_this_pid_namespace_or_an_unnamed_one_is_judged_by_its_pid() {
        let here = here("pid:[1]", Some(1_000_000));
        for ns in ["pid:[1]", ""] {
            assert!(record(ns, 900_000).is_dead_given(&here, NO_SUCH_PID));
            assert!(record(ns, 900_000).is_dead_given(&here, |_| Some(5)));
            assert!(!record(ns, 900_000).is_dead_given(&here, |_| Some(900_000)));
        }
        // Another host or an unknown one: never; another boot: always.
        let mut other = record("pid:[1]", 1);
        other.host = "elsewhere".into();
        assert!(!other.is_dead_given(&here, NO_SUCH_PID));
        let mut rebooted = record("pid:[2]", 1);
        rebooted.boot = "earlier".into();
        assert!(rebooted.is_dead_given(&here, |_| Some(1)));
    }

    #[test]
    fn the_owner_record_carries_the_pid_namespace_through_its_text() {
        let me = OwnerRecord::current();
        assert!(me.pid_ns.starts_with("pid:["), "{me:?}");
        assert_eq!(OwnerRecord::parse(&me.to_text()), Some(me.clone()));
        // A record written before the namespace was recorded still parses.
        let legacy = OwnerRecord::parse("host h\npid 3\nstart 4\nboot b\n").unwrap();
        assert_eq!(legacy.pid_ns, "");
    }

    #[test]
    fn only_a_dir_named_by_the_prefix_directly_in_the_base_is_accepted() {
        let p = ".synapse-backup-verify";
        let made = "/r/data/.synapse-backup-verify.Ab3";
        assert!(is_made_dir(made, Some("/r/data"), p));
        assert!(is_made_dir(made, Some("/r/data/"), p));
        assert!(!is_made_dir(made, Some("/r"), p));
        assert!(!is_made_dir(
            "/r/data/x/.synapse-backup-verify.A",
            Some("/r/data"),
            p
        ));
        assert!(!is_made_dir(
            "/r/data/.synapse-backup-verify",
            Some("/r/data"),
            p
        ));
        assert!(!is_made_dir("/r/data/other.A", Some("/r/data"), p));
        // In the temp dir: any absolute dir without `..`.
        assert!(is_made_dir("/tmp/.synapse-backup-verify.Q1", None, p));
        assert!(is_made_dir("/var/tmp/u/.synapse-backup-verify.Q1", None, p));
        assert!(!is_made_dir("tmp/.synapse-backup-verify.Q1", None, p));
        assert!(!is_made_dir(
            "/tmp/../etc/.synapse-backup-verify.Q1",
            None,
            p
        ));
        assert!(!is_made_dir("", None, p));
    }
}

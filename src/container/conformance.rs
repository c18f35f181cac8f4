//! The [`Container`] conformance suite: one set of checks that every implementation must
//! pass (compiled with the `testing` feature, and in this crate's own tests).
//!
//! Each check is an `async fn` taking `&dyn Container` plus what it needs, and panics with
//! a message saying what went wrong. Run each from its own test, e.g.
//!
//! ```no_run
//! # async fn demo() {
//! use synapse_backup::testing::container_conformance as conformance;
//! use synapse_backup::LocalContainer;
//!
//! let container = LocalContainer::new();
//! let scratch = tempfile::tempdir().unwrap();
//! conformance::exec_output_and_exit_codes(&container).await;
//! conformance::push_modes_and_make_dirs(&container, scratch.path().to_str().unwrap()).await;
//! # }
//! ```
//!
//! Requirements on the container under test: `bash`, `cat`, `env`, `id`, `ln`, `pwd`,
//! `seq`, `stat`, `touch`, `sleep`, `grep` and `wc` on its `PATH`, `/proc`, and a user `nobody`.
//! `scratch` is an existing, absolute directory inside the container that the checks may
//! fill (each check works in its own sub-directory). Checks that need root run their root
//! branch when the container's commands run as root, and check the refusal otherwise.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{
    Container, ExecOptions, ExecOutput, FileInfo, FileKind, ListOptions, MakeDirOptions,
    PushOptions,
};
use crate::error::ContainerError;

mod streaming;
pub use streaming::{
    exec_streaming_all, exec_streaming_cat_64_mib, exec_streaming_drop_kills_everything,
    exec_streaming_exit_errors, exec_streaming_options, exec_streaming_stdin_eof_on_drop,
};

/// A generous bound for commands that should finish at once.
const QUICK: Duration = Duration::from_secs(20);

fn argv(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_string()).collect()
}

fn quick() -> ExecOptions {
    ExecOptions {
        timeout: Some(QUICK),
        ..ExecOptions::default()
    }
}

async fn run(c: &dyn Container, items: &[&str], options: ExecOptions) -> ExecOutput {
    let command = argv(items);
    match c.exec(&command, options).await {
        Ok(out) => out,
        Err(e) => panic!("exec {command:?} failed: {e} ({e:?})"),
    }
}

/// Runs `bash -c script bash args…` and returns its trimmed standard output.
async fn bash(c: &dyn Container, script: &str, args: &[&str]) -> String {
    let mut items = vec!["bash", "-c", script, "bash"];
    items.extend_from_slice(args);
    run(c, &items, quick())
        .await
        .stdout_text()
        .trim()
        .to_string()
}

async fn is_root(c: &dyn Container) -> bool {
    bash(c, "id -u", &[]).await == "0"
}

/// Creates (and returns) a fresh sub-directory `name` of `scratch`.
async fn subdir(c: &dyn Container, scratch: &str, name: &str) -> String {
    assert!(
        scratch.starts_with('/'),
        "the scratch directory must be absolute, got {scratch:?}"
    );
    let dir = format!("{}/{name}", scratch.trim_end_matches('/'));
    if c.exists(&dir).await.unwrap_or(false) {
        c.remove_path(&dir, true)
            .await
            .unwrap_or_else(|e| panic!("could not clear {dir}: {e}"));
    }
    c.make_dir(
        &dir,
        MakeDirOptions {
            make_parents: true,
            ..MakeDirOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("make_dir {dir} failed: {e}"));
    dir
}

async fn stat_owner(c: &dyn Container, path: &str) -> String {
    bash(c, r#"stat -c %U:%G -- "$1""#, &[path]).await
}

async fn info(c: &dyn Container, path: &str) -> FileInfo {
    let list = c
        .list_files(
            path,
            ListOptions {
                itself: true,
                ..ListOptions::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("list_files({path}, itself) failed: {e}"));
    assert_eq!(
        list.len(),
        1,
        "list_files({path}, itself) should return one entry, got {list:?}"
    );
    list.into_iter().next().unwrap_or_else(|| unreachable!())
}

fn expect_not_found<T: std::fmt::Debug>(what: &str, result: Result<T, ContainerError>, path: &str) {
    match result {
        Err(ContainerError::NotFound { path: p }) => {
            assert!(
                path.starts_with(&p) || p == path,
                "{what}: NotFound should name {path} (or its missing parent), got {p}"
            );
        }
        other => panic!("{what}: expected ContainerError::NotFound for {path}, got {other:?}"),
    }
}

fn expect_invalid<T: std::fmt::Debug>(what: &str, result: Result<T, ContainerError>, value: &str) {
    match result {
        Err(e @ ContainerError::InvalidArgument { .. }) => {
            let ContainerError::InvalidArgument { value: v, .. } = &e else {
                unreachable!()
            };
            assert_eq!(
                v, value,
                "{what}: InvalidArgument should name the bad value"
            );
            let shown = e.to_string();
            assert!(
                shown.contains(&format!("{value:?}")),
                "{what}: message should name {value:?}: {shown}"
            );
        }
        other => panic!(
            "{what}: expected ContainerError::InvalidArgument naming {value:?}, got {other:?}"
        ),
    }
}

/// Standard output and error are captured, a zero exit is `Ok` with exit code 0, and a
/// non-zero exit is [`ContainerError::ExitedNonZero`] with `argv[0]`, the code, and the
/// trimmed end of standard error; a command killed by a signal reports `128 + signal`.
pub async fn exec_output_and_exit_codes(c: &dyn Container) {
    let out = run(
        c,
        &["bash", "-c", "printf 'out\\n'; printf 'err\\n' >&2", "bash"],
        quick(),
    )
    .await;
    assert_eq!(out.exit_code, 0);
    assert_eq!(out.stdout, b"out\n", "stdout");
    assert_eq!(out.stderr, b"err\n", "stderr");
    assert_eq!(out.stdout_text(), "out\n");

    let out = run(
        c,
        &[
            "bash",
            "-c",
            r#"printf '%s|' "$@""#,
            "bash",
            "a b",
            "'q'",
            "$(x)",
            "",
        ],
        quick(),
    )
    .await;
    assert_eq!(
        out.stdout_text(),
        "a b|'q'|$(x)||",
        "arguments must reach the command verbatim"
    );
    exec_failures_are_reported(c).await;
}

/// The failure half of [`exec_output_and_exit_codes`]: exit codes, trimmed stderr, a
/// killed command, and a timeout that does not expire.
async fn exec_failures_are_reported(c: &dyn Container) {
    match c
        .exec(
            &argv(&["bash", "-c", "echo doing; echo 'it broke' >&2; exit 3"]),
            quick(),
        )
        .await
    {
        Err(ContainerError::ExitedNonZero {
            command,
            exit_code,
            stderr,
        }) => {
            assert_eq!(command, "bash", "ExitedNonZero.command is argv[0]");
            assert_eq!(exit_code, 3);
            assert_eq!(
                stderr, "it broke",
                "ExitedNonZero.stderr is the trimmed standard error"
            );
        }
        other => panic!("expected ExitedNonZero for exit 3, got {other:?}"),
    }

    let noisy =
        "for i in $(seq 1 2000); do echo \"line $i of noise\" >&2; done; echo THE-END >&2; exit 1";
    match c.exec(&argv(&["bash", "-c", noisy]), quick()).await {
        Err(ContainerError::ExitedNonZero {
            exit_code, stderr, ..
        }) => {
            assert_eq!(exit_code, 1);
            assert!(
                stderr.len() <= 1100,
                "stderr should be trimmed to about 1 KiB, got {} bytes",
                stderr.len()
            );
            assert!(
                stderr.ends_with("THE-END"),
                "the end of stderr is kept: {stderr:?}"
            );
        }
        other => panic!("expected ExitedNonZero, got {other:?}"),
    }

    match c
        .exec(&argv(&["bash", "-c", "kill -KILL $$"]), quick())
        .await
    {
        Err(ContainerError::ExitedNonZero { exit_code, .. }) => {
            assert_eq!(
                exit_code, 137,
                "a command killed by SIGKILL reports 128 + 9"
            );
        }
        other => panic!("expected ExitedNonZero for a killed command, got {other:?}"),
    }

    let out = run(
        c,
        &["true"],
        ExecOptions {
            timeout: Some(Duration::from_secs(30)),
            ..quick()
        },
    )
    .await;
    assert_eq!(
        out.exit_code, 0,
        "a timeout that does not expire changes nothing"
    );
}

/// A program that does not exist (by path or by name) or a missing working directory is
/// [`ContainerError::CouldNotStart`], not `ExitedNonZero`; an empty command is invalid.
pub async fn exec_could_not_start(c: &dyn Container, scratch: &str) {
    for program in [
        "/nonexistent/definitely-not-a-program",
        "definitely-not-a-program-4f1c",
    ] {
        match c.exec(&argv(&[program, "--help"]), quick()).await {
            Err(ContainerError::CouldNotStart { command, .. }) => assert_eq!(command, program),
            other => panic!("expected CouldNotStart for {program}, got {other:?}"),
        }
    }
    let dir = subdir(c, scratch, "could-not-start").await;
    let missing = format!("{dir}/missing");
    let options = ExecOptions {
        working_dir: Some(missing.clone()),
        ..quick()
    };
    match c.exec(&argv(&["true"]), options).await {
        Err(ContainerError::CouldNotStart { command, .. }) => assert_eq!(command, "true"),
        other => panic!(
            "expected CouldNotStart for the missing working directory {missing}, got {other:?}"
        ),
    }
    match c.exec(&[], quick()).await {
        Err(ContainerError::InvalidArgument { what, .. }) => assert_eq!(what, "command"),
        other => panic!("expected InvalidArgument for an empty command, got {other:?}"),
    }
}

/// The environment reaches the command, the base environment has `PATH`, `HOME` and
/// `LANG`, the working directory is applied, and an environment value never appears in an
/// error (`Display` or `Debug`) nor in `ExecOptions`' `Debug`.
pub async fn exec_environment(c: &dyn Container, scratch: &str) {
    let secret = "s3cr3t-Value-9d2f/+=";
    let mut environment = BTreeMap::new();
    environment.insert("SYNAPSE_BACKUP_TEST".to_string(), "hello world".to_string());
    environment.insert("SECRET_KEY".to_string(), secret.to_string());
    let options = ExecOptions {
        environment: environment.clone(),
        ..quick()
    };
    let script = r#"printf '%s\n' "$SYNAPSE_BACKUP_TEST" "$SECRET_KEY" "${PATH:+path}" "${HOME:+home}" "$LANG""#;
    let out = run(c, &["bash", "-c", script], options.clone()).await;
    assert_eq!(
        out.stdout_text(),
        format!("hello world\n{secret}\npath\nhome\nC.UTF-8\n"),
        "environment, PATH, HOME and LANG=C.UTF-8"
    );

    let shown = format!("{options:?}");
    assert!(
        !shown.contains(secret),
        "ExecOptions' Debug must not show environment values: {shown}"
    );
    assert!(
        shown.contains("SECRET_KEY"),
        "ExecOptions' Debug shows the names: {shown}"
    );

    let failing = ExecOptions {
        environment,
        ..quick()
    };
    let err = c
        .exec(
            &argv(&[
                "bash",
                "-c",
                r#"test -n "$SECRET_KEY"; echo failed >&2; exit 4"#,
            ]),
            failing,
        )
        .await
        .expect_err("the command exits 4");
    assert!(
        matches!(err, ContainerError::ExitedNonZero { exit_code: 4, .. }),
        "expected exit 4, got {err:?}"
    );
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(
            !text.contains(secret),
            "an environment value leaked into the error: {text}"
        );
    }

    let dir = subdir(c, scratch, "environment").await;
    let out = run(
        c,
        &["pwd"],
        ExecOptions {
            working_dir: Some(dir.clone()),
            ..quick()
        },
    )
    .await;
    assert_eq!(out.stdout_text().trim(), dir, "working_dir");
}

/// Standard input is delivered and closed (small and 1 MiB), and without stdin a command
/// reading it sees end-of-file at once.
pub async fn exec_stdin(c: &dyn Container) {
    let out = run(
        c,
        &["cat"],
        ExecOptions {
            stdin: Some(b"hello\n".to_vec()),
            ..quick()
        },
    )
    .await;
    assert_eq!(out.stdout, b"hello\n");

    let big: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let out = run(
        c,
        &["cat"],
        ExecOptions {
            stdin: Some(big.clone()),
            ..quick()
        },
    )
    .await;
    assert!(
        out.stdout == big,
        "1 MiB through cat came back different ({} bytes)",
        out.stdout.len()
    );
    let out = run(
        c,
        &["wc", "-c"],
        ExecOptions {
            stdin: Some(big),
            ..quick()
        },
    )
    .await;
    assert_eq!(out.stdout_text().trim(), "1048576");

    let out = run(c, &["cat"], quick()).await;
    assert!(
        out.stdout.is_empty(),
        "no stdin: cat should see EOF and print nothing"
    );

    // A command that does not read its input still finishes normally.
    let out = run(
        c,
        &["true"],
        ExecOptions {
            stdin: Some(vec![b'x'; 1024 * 1024]),
            ..quick()
        },
    )
    .await;
    assert_eq!(out.exit_code, 0);
}

/// Whether the process `pid` is gone (a zombie counts as gone), checked inside `c`.
async fn gone(c: &dyn Container, pid: &str) -> bool {
    let script = r#"if kill -0 "$1" 2>/dev/null && ! grep -qs '^State:[[:space:]]*Z' "/proc/$1/status"; then echo alive; else echo gone; fi"#;
    bash(c, script, &[pid]).await == "gone"
}

/// On timeout the whole process group is killed: the call ends quickly with
/// [`ContainerError::TimedOut`], and a background child of the command is gone too.
pub async fn exec_timeout_kills_process_group(c: &dyn Container, scratch: &str) {
    let dir = subdir(c, scratch, "timeout").await;
    let pid_file = format!("{dir}/background.pid");
    let script = r#"sleep 30 & echo $! > "$1"; sleep 30; wait"#;
    let timeout = Duration::from_secs(1);
    let started = Instant::now();
    let result = c
        .exec(
            &argv(&["bash", "-c", script, "bash", &pid_file]),
            ExecOptions {
                timeout: Some(timeout),
                ..ExecOptions::default()
            },
        )
        .await;
    let elapsed = started.elapsed();
    match result {
        Err(ContainerError::TimedOut {
            command,
            timeout: t,
        }) => {
            assert_eq!(command, "bash");
            assert_eq!(t, timeout);
        }
        other => panic!("expected TimedOut, got {other:?}"),
    }
    assert!(
        elapsed < Duration::from_secs(10),
        "a 1 s timeout took {elapsed:?}: something kept the call waiting"
    );

    let pid = String::from_utf8_lossy(
        &c.pull(&pid_file)
            .await
            .unwrap_or_else(|e| panic!("no pid file {pid_file}: {e}")),
    )
    .trim()
    .to_string();
    assert!(
        !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()),
        "bad pid file content {pid:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gone(c, &pid).await {
        assert!(
            Instant::now() < deadline,
            "the background child {pid} survived the timeout: the process group was not killed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads the pid in `pid_file` (inside the container) once it is written.
async fn read_pid(c: &dyn Container, pid_file: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(bytes) = c.pull(pid_file).await {
            let pid = String::from_utf8_lossy(&bytes).trim().to_string();
            if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) {
                return pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the command never wrote its pid to {pid_file}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that the process `pid` is gone within 5 s (`what` says which one it is).
async fn assert_gone(c: &dyn Container, pid: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gone(c, pid).await {
        assert!(
            Instant::now() < deadline,
            "{what} (pid {pid}) survived: not every process of the command was killed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a background child, and one that moved to a process group of its own
/// (`set -m`: bash gives each background job its own group, as `setpgid` does), writes
/// their pids to `$1` and `$2`, then sleeps.
const TWO_CHILDREN: &str =
    r#"sleep 60 & echo $! > "$1"; set -m; sleep 60 & echo $! > "$2"; set +m; sleep 60; wait"#;

/// The set-up the timeout and dropped-future checks share: a dir for the pid files and
/// the command that starts [`TWO_CHILDREN`] writing them there.
struct TwoChildren {
    /// `bash -c TWO_CHILDREN bash <plain.pid> <own-group.pid>`.
    command: Vec<String>,
    /// Where the background child's pid is written.
    plain: String,
    /// Where the pid of the child in a process group of its own is written.
    own_group: String,
}

impl TwoChildren {
    /// Makes the dir `name` under `scratch` for the pid files.
    async fn new(c: &dyn Container, scratch: &str, name: &str) -> Self {
        let dir = subdir(c, scratch, name).await;
        let plain = format!("{dir}/plain.pid");
        let own_group = format!("{dir}/own-group.pid");
        TwoChildren {
            command: argv(&["bash", "-c", TWO_CHILDREN, "bash", &plain, &own_group]),
            plain,
            own_group,
        }
    }

    /// The two children's pids, once both are written.
    async fn pids(&self, c: &dyn Container) -> (String, String) {
        (
            read_pid(c, &self.plain).await,
            read_pid(c, &self.own_group).await,
        )
    }

    /// Asserts that both children are gone (`after` says after what).
    async fn assert_both_gone(
        c: &dyn Container,
        (plain, own_group): (String, String),
        after: &str,
    ) {
        assert_gone(c, &plain, &format!("after {after}, the background child")).await;
        assert_gone(
            c,
            &own_group,
            &format!("after {after}, the child in a process group of its own"),
        )
        .await;
    }
}

/// On timeout every process of the command is killed, also a grandchild that moved to a
/// process group of its own (`setpgid`): the call ends quickly with
/// [`ContainerError::TimedOut`] and neither child survives.
pub async fn exec_timeout_kills_a_setpgid_grandchild(c: &dyn Container, scratch: &str) {
    let children = TwoChildren::new(c, scratch, "timeout-setpgid").await;
    let timeout = Duration::from_secs(2);
    let started = Instant::now();
    let result = c
        .exec(
            &children.command,
            ExecOptions {
                timeout: Some(timeout),
                ..ExecOptions::default()
            },
        )
        .await;
    let elapsed = started.elapsed();
    match result {
        Err(ContainerError::TimedOut { command, .. }) => assert_eq!(command, "bash"),
        other => panic!("expected TimedOut, got {other:?}"),
    }
    assert!(
        elapsed < Duration::from_secs(12),
        "a 2 s timeout took {elapsed:?}: something kept the call waiting"
    );
    TwoChildren::assert_both_gone(c, children.pids(c).await, "a timeout").await;
}

/// Dropping the `exec` future before the command finished kills every process of the
/// command: a background child and one in a process group of its own.
pub async fn exec_dropped_future_kills_everything(c: &dyn Container, scratch: &str) {
    let children = TwoChildren::new(c, scratch, "dropped").await;
    let run = c.exec(
        &children.command,
        ExecOptions {
            timeout: Some(Duration::from_secs(120)),
            ..ExecOptions::default()
        },
    );
    let pids = tokio::select! {
        result = run => panic!("the command should still be running, got {result:?}"),
        pids = children.pids(c) => pids,
    };
    // The exec future is dropped here, with the command still running.
    TwoChildren::assert_both_gone(c, pids, "a dropped exec").await;
}

/// The command sees exactly `PATH`, `HOME`, `LANG` and the variables asked for: nothing
/// of the caller's (or a daemon's) own environment.
pub async fn exec_environment_is_exact(c: &dyn Container) {
    let mut environment = BTreeMap::new();
    environment.insert("SYNAPSE_BACKUP_ONE".to_string(), "1".to_string());
    environment.insert(
        "AWS_SECRET_ACCESS_KEY".to_string(),
        "not-logged".to_string(),
    );
    let out = run(
        c,
        &["env", "-0"],
        ExecOptions {
            environment,
            ..quick()
        },
    )
    .await;
    let mut names: Vec<String> = out
        .stdout
        .split(|b| *b == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let text = String::from_utf8_lossy(entry);
            text.split_once('=')
                .map_or_else(|| text.to_string(), |(k, _)| k.to_string())
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "AWS_SECRET_ACCESS_KEY",
            "HOME",
            "LANG",
            "PATH",
            "SYNAPSE_BACKUP_ONE"
        ],
        "the command's environment must be exactly the base plus the variables asked for"
    );
}

/// Numeric ids: as root, `user_id` alone, `user_id` with the matching name, a uid
/// without a passwd entry with a `group_id` (and a writable `HOME`); a name and an id
/// that disagree, or a bare uid without a group, are [`ContainerError::InvalidArgument`]
/// naming the id, with nothing executed. Not root: its own uid works, another is refused.
pub async fn exec_user_ids(c: &dyn Container, scratch: &str) {
    let dir = subdir(c, scratch, "user-ids").await;
    let marker = format!("{dir}/marker");
    let my_uid: u32 = bash(c, "id -u", &[])
        .await
        .parse()
        .unwrap_or_else(|e| panic!("id -u: {e}"));
    let out = run(c, &["id", "-u"], id_options(Some(my_uid), None)).await;
    assert_eq!(out.stdout_text().trim(), my_uid.to_string(), "own uid");
    if my_uid != 0 {
        match c
            .exec(&argv(&["touch", &marker]), id_options(Some(0), None))
            .await
        {
            Err(ContainerError::PermissionDenied { .. }) => {}
            other => panic!("not root: expected PermissionDenied for uid 0, got {other:?}"),
        }
        assert!(
            !c.exists(&marker).await.unwrap_or(true),
            "a refused command ran"
        );
        return;
    }
    let nobody_uid: u32 = bash(c, "id -u nobody", &[]).await.parse().unwrap_or(65534);
    let nobody_gid: u32 = bash(c, "id -g nobody", &[]).await.parse().unwrap_or(65534);
    let out = run(c, &["id", "-un"], id_options(Some(nobody_uid), None)).await;
    assert_eq!(out.stdout_text().trim(), "nobody", "user_id alone");
    let out = run(c, &["id", "-g"], id_options(Some(nobody_uid), None)).await;
    assert_eq!(
        out.stdout_text().trim(),
        nobody_gid.to_string(),
        "user_id alone: the user's primary group"
    );
    let both = ExecOptions {
        user: Some("nobody".into()),
        ..id_options(Some(nobody_uid), Some(nobody_gid))
    };
    let out = run(c, &["id", "-u"], both).await;
    assert_eq!(
        out.stdout_text().trim(),
        nobody_uid.to_string(),
        "name and id"
    );
    exec_bare_and_mismatched_ids(c, &marker).await;
}

/// Quick options with these ids.
fn id_options(user_id: Option<u32>, group_id: Option<u32>) -> ExecOptions {
    ExecOptions {
        user_id,
        group_id,
        ..quick()
    }
}

/// The root half of [`exec_user_ids`] with ids no entry names, or that disagree with a
/// name: `marker` is a path no refused command may create.
async fn exec_bare_and_mismatched_ids(c: &dyn Container, marker: &str) {
    // A uid and gid that no passwd or group entry names.
    let bare = 54_321;
    let home_check = r#"id -u; id -g; test -n "${HOME:-}" && test -d "$HOME" && test -w "$HOME" && touch "$HOME/.probe" && rm "$HOME/.probe" && echo home-ok"#;
    let out = run(
        c,
        &["bash", "-c", home_check],
        id_options(Some(bare), Some(bare)),
    )
    .await;
    assert_eq!(
        out.stdout_text().trim(),
        format!("{bare}\n{bare}\nhome-ok"),
        "a bare uid and gid, with a writable HOME"
    );

    for (what, options, value) in [
        (
            "a user name with another uid",
            ExecOptions {
                user: Some("nobody".into()),
                ..id_options(Some(0), None)
            },
            "0",
        ),
        (
            "a group name with another gid",
            ExecOptions {
                user: Some("nobody".into()),
                group: Some(bash(c, "id -gn nobody", &[]).await),
                ..id_options(None, Some(0))
            },
            "0",
        ),
        (
            "a bare uid without a group",
            id_options(Some(bare), None),
            "54321",
        ),
    ] {
        match c.exec(&argv(&["touch", marker]), options).await {
            Err(ContainerError::InvalidArgument { value: v, .. }) => {
                assert_eq!(v, value, "{what}: InvalidArgument names the id")
            }
            other => panic!("{what}: expected InvalidArgument, got {other:?}"),
        }
        assert!(
            !c.exists(marker).await.unwrap_or(true),
            "{what}: the command ran"
        );
    }
}

/// Running as a named user: as root, `nobody` (`id -un`, its primary group, no
/// supplementary groups left over from root, a writable `HOME`), a group alone, and the
/// current user by name; unknown users and groups are [`ContainerError::UnknownUser`] with
/// nothing executed. When not root, another user is [`ContainerError::PermissionDenied`].
pub async fn exec_user_switching(c: &dyn Container, scratch: &str) {
    let dir = subdir(c, scratch, "users").await;
    let marker = format!("{dir}/marker");
    let me = bash(c, "id -un", &[]).await;
    let out = run(
        c,
        &["id", "-un"],
        ExecOptions {
            user: Some(me.clone()),
            ..quick()
        },
    )
    .await;
    assert_eq!(
        out.stdout_text().trim(),
        me,
        "running as the current user by name must work"
    );

    for (user, group, kind, name) in [
        ("no-such-user-7c1e", None, "user", "no-such-user-7c1e"),
        (
            me.as_str(),
            Some("no-such-group-7c1e"),
            "group",
            "no-such-group-7c1e",
        ),
    ] {
        match c
            .exec(&argv(&["touch", &marker]), as_user(user, group))
            .await
        {
            Err(ContainerError::UnknownUser { kind: k, name: n }) => {
                assert_eq!((k, n.as_str()), (kind, name));
            }
            other => panic!("expected UnknownUser for {kind} {name}, got {other:?}"),
        }
        assert!(
            !c.exists(&marker).await.unwrap_or(true),
            "a command with an unknown {kind} was executed"
        );
    }

    if !is_root(c).await {
        // Not root, so root is another user.
        match c
            .exec(&argv(&["touch", &marker]), as_user("root", None))
            .await
        {
            Err(ContainerError::PermissionDenied { reason, .. }) => {
                assert!(
                    reason.contains("root"),
                    "the message should name the user: {reason}"
                );
            }
            other => panic!("not root: expected PermissionDenied for user root, got {other:?}"),
        }
        assert!(
            !c.exists(&marker).await.unwrap_or(true),
            "a refused command was executed"
        );
        return;
    }
    exec_as_nobody_and_a_group(c).await;
}

/// Quick options running as `user`, in `group` when given.
fn as_user(user: &str, group: Option<&str>) -> ExecOptions {
    ExecOptions {
        user: Some(user.to_string()),
        group: group.map(str::to_string),
        ..quick()
    }
}

/// The root half of [`exec_user_switching`]: as `nobody` (its groups and `HOME`), and
/// a group alone.
async fn exec_as_nobody_and_a_group(c: &dyn Container) {
    let primary = bash(c, "id -gn nobody", &[]).await;
    let primary_gid = bash(c, "id -g nobody", &[]).await;
    let out = run(c, &["id", "-un"], as_user("nobody", None)).await;
    assert_eq!(out.stdout_text().trim(), "nobody", "id -un as nobody");
    let out = run(c, &["id", "-gn"], as_user("nobody", None)).await;
    assert_eq!(
        out.stdout_text().trim(),
        primary,
        "the group defaults to the user's primary group"
    );
    let out = run(c, &["id", "-G"], as_user("nobody", None)).await;
    assert_eq!(
        out.stdout_text().trim(),
        primary_gid,
        "as nobody, no supplementary group (e.g. root's 0) may be left"
    );
    let out = run(c, &["id", "-gn"], as_user("nobody", Some(&primary))).await;
    assert_eq!(out.stdout_text().trim(), primary, "explicit group");

    let home_check = r#"test -n "${HOME:-}" && test -d "$HOME" && test -w "$HOME" && touch "$HOME/.probe" && rm "$HOME/.probe" && echo ok"#;
    let out = run(c, &["bash", "-c", home_check], as_user("nobody", None)).await;
    assert_eq!(
        out.stdout_text().trim(),
        "ok",
        "HOME must be set and writable for the switched user"
    );

    let out = run(
        c,
        &["id", "-g"],
        ExecOptions {
            group: Some(primary.clone()),
            ..quick()
        },
    )
    .await;
    assert_eq!(
        out.stdout_text().trim(),
        primary_gid,
        "a group alone switches the group"
    );
    let out = run(
        c,
        &["id", "-u"],
        ExecOptions {
            group: Some(primary),
            ..quick()
        },
    )
    .await;
    assert_eq!(
        out.stdout_text().trim(),
        "0",
        "a group alone keeps the user"
    );
}

/// Push writes the content with the requested mode (default `0o644`), creates parents
/// only with `make_dirs` (else [`ContainerError::NotFound`]), and sets owners (as root;
/// otherwise giving a file to another user is refused).
pub async fn push_modes_and_make_dirs(c: &dyn Container, scratch: &str) {
    let dir = subdir(c, scratch, "push").await;
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let file = format!("{dir}/plain");
    c.push(&file, &all_bytes, PushOptions::default())
        .await
        .unwrap_or_else(|e| panic!("push {file}: {e}"));
    assert_eq!(
        c.pull(&file)
            .await
            .unwrap_or_else(|e| panic!("pull {file}: {e}")),
        all_bytes,
        "content round trip"
    );
    let i = info(c, &file).await;
    assert_eq!(
        (i.kind, i.size, i.permissions),
        (FileKind::File, 256, 0o644),
        "default mode 0o644: {i:?}"
    );

    let private = format!("{dir}/private");
    c.push(
        &private,
        b"",
        PushOptions {
            permissions: Some(0o600),
            ..PushOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("push {private}: {e}"));
    let i = info(c, &private).await;
    assert_eq!(
        (i.size, i.permissions),
        (0, 0o600),
        "mode 0o600 and empty content: {i:?}"
    );

    let nested = format!("{dir}/a/b/c/file");
    expect_not_found(
        "push without make_dirs",
        c.push(&nested, b"x", PushOptions::default()).await,
        &nested,
    );
    assert!(
        !c.exists(&format!("{dir}/a")).await.unwrap_or(true),
        "a failed push created directories"
    );
    c.push(
        &nested,
        b"x",
        PushOptions {
            make_dirs: true,
            ..PushOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("push {nested} with make_dirs: {e}"));
    assert_eq!(c.pull(&nested).await.unwrap_or_default(), b"x");
    assert_eq!(
        info(c, &format!("{dir}/a/b")).await.kind,
        FileKind::Directory
    );
    push_with_owners(c, &dir).await;
}

/// The owner half of [`push_modes_and_make_dirs`], in `dir`: as root a file given to
/// `nobody` or to a group; otherwise giving one to root is refused; an unknown owner
/// never.
async fn push_with_owners(c: &dyn Container, dir: &str) {
    let owned = format!("{dir}/owned/key");
    let nobody = PushOptions {
        make_dirs: true,
        permissions: Some(0o600),
        user: Some("nobody".into()),
        group: None,
    };
    if is_root(c).await {
        c.push(&owned, b"secret", nobody)
            .await
            .unwrap_or_else(|e| panic!("push {owned} as nobody: {e}"));
        let primary = bash(c, "id -gn nobody", &[]).await;
        assert_eq!(
            stat_owner(c, &owned).await,
            format!("nobody:{primary}"),
            "owner and default group"
        );
        assert_eq!(info(c, &owned).await.permissions, 0o600);
        let out = run(
            c,
            &["cat", &owned],
            ExecOptions {
                user: Some("nobody".into()),
                ..quick()
            },
        )
        .await;
        assert_eq!(out.stdout, b"secret", "nobody can read its 0600 file");
        let grouped = format!("{dir}/grouped");
        c.push(
            &grouped,
            b"g",
            PushOptions {
                group: Some(primary.clone()),
                ..PushOptions::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("push {grouped} with a group: {e}"));
        assert_eq!(
            stat_owner(c, &grouped).await,
            format!("root:{primary}"),
            "a group alone keeps the owner"
        );
    } else {
        // Not root, so root is another user.
        let to_root = PushOptions {
            user: Some("root".into()),
            ..nobody
        };
        match c.push(&owned, b"secret", to_root).await {
            Err(ContainerError::PermissionDenied { .. }) => {}
            other => {
                panic!("not root: expected PermissionDenied giving a file to root, got {other:?}")
            }
        }
        assert!(
            !c.exists(&owned).await.unwrap_or(true),
            "a refused push wrote the file"
        );
    }

    let unknown = format!("{dir}/unknown-owner");
    let options = PushOptions {
        user: Some("no-such-user-7c1e".into()),
        ..PushOptions::default()
    };
    match c.push(&unknown, b"x", options).await {
        Err(ContainerError::UnknownUser { kind: "user", name }) => {
            assert_eq!(name, "no-such-user-7c1e")
        }
        other => panic!("expected UnknownUser, got {other:?}"),
    }
    assert!(
        !c.exists(&unknown).await.unwrap_or(true),
        "a push with an unknown owner wrote the file"
    );
}

/// Pushing over an existing file replaces it whole (new content and mode) and leaves no
/// temporary file behind.
pub async fn push_overwrites_atomically(c: &dyn Container, scratch: &str) {
    let dir = subdir(c, scratch, "overwrite").await;
    let file = format!("{dir}/config");
    c.push(&file, &vec![b'1'; 100_000], PushOptions::default())
        .await
        .unwrap_or_else(|e| panic!("push {file}: {e}"));
    c.push(
        &file,
        b"two",
        PushOptions {
            permissions: Some(0o640),
            ..PushOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("second push {file}: {e}"));
    assert_eq!(c.pull(&file).await.unwrap_or_default(), b"two");
    assert_eq!(
        info(c, &file).await.permissions,
        0o640,
        "the new mode replaces the old one"
    );
    let names: Vec<String> = c
        .list_files(&dir, ListOptions::default())
        .await
        .unwrap_or_else(|e| panic!("list {dir}: {e}"))
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(names, ["config"], "push left temporary files behind");
}

/// Pulling a missing file is [`ContainerError::NotFound`] naming it.
pub async fn pull_missing_is_not_found(c: &dyn Container, scratch: &str) {
    let dir = subdir(c, scratch, "pull").await;
    let missing = format!("{dir}/missing");
    match c.pull(&missing).await {
        Err(ContainerError::NotFound { path }) => assert_eq!(path, missing),
        other => panic!("expected NotFound for {missing}, got {other:?}"),
    }
    expect_not_found(
        "pull below a missing dir",
        c.pull(&format!("{dir}/no/such")).await,
        &format!("{dir}/no/such"),
    );
}

/// Listing: entries sorted by name with path, kind (symlinks not followed), size and
/// permissions; a glob pattern filters names; `itself` lists the directory itself; a file
/// lists as itself; a missing path is [`ContainerError::NotFound`]; a bad pattern is invalid.
pub async fn list_files_pattern_and_itself(c: &dyn Container, scratch: &str) {
    let dir = subdir(c, scratch, "list").await;
    for (name, content, mode) in [
        ("b.txt", "bb", 0o600),
        ("a.txt", "a", 0o644),
        ("c.log", "ccc", 0o640),
    ] {
        c.push(
            &format!("{dir}/{name}"),
            content.as_bytes(),
            PushOptions {
                permissions: Some(mode),
                ..PushOptions::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("push {name}: {e}"));
    }
    c.make_dir(
        &format!("{dir}/sub"),
        MakeDirOptions {
            permissions: Some(0o750),
            ..MakeDirOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("make_dir sub: {e}"));
    bash(c, r#"ln -s "$1/sub" "$1/link""#, &[&dir]).await;

    let all = c
        .list_files(&dir, ListOptions::default())
        .await
        .unwrap_or_else(|e| panic!("list {dir}: {e}"));
    let summary: Vec<(&str, FileKind)> = all.iter().map(|f| (f.name.as_str(), f.kind)).collect();
    assert_eq!(
        summary,
        [
            ("a.txt", FileKind::File),
            ("b.txt", FileKind::File),
            ("c.log", FileKind::File),
            ("link", FileKind::Symlink),
            ("sub", FileKind::Directory),
        ],
        "sorted by name, symlink not followed"
    );
    let b = &all[1];
    assert_eq!(
        (b.path.as_str(), b.size, b.permissions),
        (format!("{dir}/b.txt").as_str(), 2, 0o600),
        "{b:?}"
    );
    assert_eq!(all[4].permissions, 0o750, "{:?}", all[4]);

    let txt = c
        .list_files(
            &dir,
            ListOptions {
                pattern: Some("*.txt".into()),
                itself: false,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("list {dir} *.txt: {e}"));
    assert_eq!(
        txt.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
        ["a.txt", "b.txt"],
        "pattern *.txt"
    );
    let none = c
        .list_files(
            &dir,
            ListOptions {
                pattern: Some("local_*".into()),
                itself: false,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("list {dir} local_*: {e}"));
    assert!(none.is_empty(), "nothing matches local_*: {none:?}");
    list_files_itself_and_errors(c, &dir).await;
}

/// The second half of [`list_files_pattern_and_itself`], in the `dir` it filled: the
/// dir and a file list as themselves; a missing path and a bad pattern are errors.
async fn list_files_itself_and_errors(c: &dyn Container, dir: &str) {
    let me = info(c, dir).await;
    assert_eq!(
        (me.path.as_str(), me.kind),
        (dir, FileKind::Directory),
        "itself: {me:?}"
    );
    assert_eq!(Some(me.name.as_str()), dir.rsplit('/').next());

    let file = c
        .list_files(&format!("{dir}/c.log"), ListOptions::default())
        .await
        .unwrap_or_default();
    assert_eq!(file.len(), 1, "a file lists as itself: {file:?}");
    assert_eq!((file[0].name.as_str(), file[0].size), ("c.log", 3));

    let missing = format!("{dir}/missing");
    match c.list_files(&missing, ListOptions::default()).await {
        Err(ContainerError::NotFound { path }) => assert_eq!(path, missing),
        other => panic!("expected NotFound listing {missing}, got {other:?}"),
    }
    match c
        .list_files(
            dir,
            ListOptions {
                pattern: Some("[".into()),
                itself: false,
            },
        )
        .await
    {
        Err(ContainerError::InvalidArgument { what, value, .. }) => {
            assert_eq!((what, value.as_str()), ("pattern", "["))
        }
        other => panic!("expected InvalidArgument for the pattern \"[\", got {other:?}"),
    }
}

/// Removing: a file, an empty directory, a non-empty directory only with `recursive` (and a
/// refused one is left intact), a symlink without touching its target; a missing path is
/// [`ContainerError::NotFound`].
pub async fn remove_path_recursive_and_not_found(c: &dyn Container, scratch: &str) {
    let dir = subdir(c, scratch, "remove").await;
    let make_tree = PushOptions {
        make_dirs: true,
        ..PushOptions::default()
    };
    c.push(&format!("{dir}/tree/x/y/file"), b"1", make_tree)
        .await
        .unwrap_or_else(|e| panic!("push tree: {e}"));
    c.push(&format!("{dir}/file"), b"1", PushOptions::default())
        .await
        .unwrap_or_else(|e| panic!("push file: {e}"));
    bash(c, r#"mkdir "$1/empty" && mkdir "$1/target" && touch "$1/target/kept" && ln -s "$1/target" "$1/link""#, &[&dir])
        .await;

    c.remove_path(&format!("{dir}/file"), false)
        .await
        .unwrap_or_else(|e| panic!("remove file: {e}"));
    assert!(!c.exists(&format!("{dir}/file")).await.unwrap_or(true));
    c.remove_path(&format!("{dir}/empty"), false)
        .await
        .unwrap_or_else(|e| panic!("remove empty dir: {e}"));
    assert!(!c.exists(&format!("{dir}/empty")).await.unwrap_or(true));

    let tree = format!("{dir}/tree");
    match c.remove_path(&tree, false).await {
        Err(ContainerError::NotFound { .. }) | Ok(()) => {
            panic!("removing a non-empty directory without recursive must fail (not NotFound)")
        }
        Err(_) => {}
    }
    assert!(
        c.exists(&format!("{tree}/x/y/file")).await.unwrap_or(false),
        "a refused remove deleted content"
    );
    c.remove_path(&tree, true)
        .await
        .unwrap_or_else(|e| panic!("recursive remove: {e}"));
    assert!(
        !c.exists(&tree).await.unwrap_or(true),
        "recursive remove left {tree}"
    );

    c.remove_path(&format!("{dir}/link"), true)
        .await
        .unwrap_or_else(|e| panic!("remove symlink: {e}"));
    assert!(!c.exists(&format!("{dir}/link")).await.unwrap_or(true));
    assert!(
        c.exists(&format!("{dir}/target/kept"))
            .await
            .unwrap_or(false),
        "removing a symlink followed it"
    );

    for recursive in [false, true] {
        let missing = format!("{dir}/missing");
        match c.remove_path(&missing, recursive).await {
            Err(ContainerError::NotFound { path }) => assert_eq!(path, missing),
            other => panic!(
                "expected NotFound removing {missing} (recursive: {recursive}), got {other:?}"
            ),
        }
    }
}

/// Making directories, with Pebble's semantics: without `make_parents` the parent must
/// exist ([`ContainerError::NotFound`]) and the directory must not; with it, parents are
/// created and an existing directory is fine (an existing file is not). Permissions and
/// (as root) owners are applied.
pub async fn make_dir_semantics(c: &dyn Container, scratch: &str) {
    let dir = subdir(c, scratch, "make-dir").await;
    let single = format!("{dir}/single");
    let private = MakeDirOptions {
        permissions: Some(0o700),
        ..MakeDirOptions::default()
    };
    c.make_dir(&single, private.clone())
        .await
        .unwrap_or_else(|e| panic!("make_dir {single}: {e}"));
    let i = info(c, &single).await;
    assert_eq!(
        (i.kind, i.permissions),
        (FileKind::Directory, 0o700),
        "{i:?}"
    );
    assert!(
        c.make_dir(&single, private).await.is_err(),
        "make_dir of an existing dir without make_parents must fail"
    );
    c.make_dir(
        &single,
        MakeDirOptions {
            make_parents: true,
            ..MakeDirOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("make_dir of an existing dir with make_parents must succeed: {e}"));
    assert_eq!(
        info(c, &single).await.permissions,
        0o700,
        "an existing directory is left as it is"
    );
    make_dir_parents_and_owners(c, &dir).await;
}

/// The second half of [`make_dir_semantics`], in `dir`: parents, an existing file,
/// owners and an unknown group.
async fn make_dir_parents_and_owners(c: &dyn Container, dir: &str) {
    let deep = format!("{dir}/p/q/r");
    expect_not_found(
        "make_dir without make_parents",
        c.make_dir(&deep, MakeDirOptions::default()).await,
        &deep,
    );
    let parents = MakeDirOptions {
        make_parents: true,
        permissions: Some(0o750),
        ..MakeDirOptions::default()
    };
    c.make_dir(&deep, parents)
        .await
        .unwrap_or_else(|e| panic!("make_dir {deep} with make_parents: {e}"));
    assert_eq!(info(c, &deep).await.permissions, 0o750);
    assert_eq!(
        info(c, &format!("{dir}/p/q")).await.kind,
        FileKind::Directory
    );

    let file = format!("{dir}/a-file");
    c.push(&file, b"", PushOptions::default())
        .await
        .unwrap_or_else(|e| panic!("push {file}: {e}"));
    let existing = MakeDirOptions {
        make_parents: true,
        ..MakeDirOptions::default()
    };
    assert!(
        c.make_dir(&file, existing).await.is_err(),
        "make_dir over an existing file must fail"
    );

    if is_root(c).await {
        let owned = format!("{dir}/owned");
        let options = MakeDirOptions {
            user: Some("nobody".into()),
            ..MakeDirOptions::default()
        };
        c.make_dir(&owned, options)
            .await
            .unwrap_or_else(|e| panic!("make_dir {owned} as nobody: {e}"));
        let primary = bash(c, "id -gn nobody", &[]).await;
        assert_eq!(stat_owner(c, &owned).await, format!("nobody:{primary}"));
    }
    let unknown = format!("{dir}/unknown");
    let options = MakeDirOptions {
        group: Some("no-such-group-7c1e".into()),
        ..MakeDirOptions::default()
    };
    match c.make_dir(&unknown, options).await {
        Err(ContainerError::UnknownUser {
            kind: "group",
            name,
        }) => assert_eq!(name, "no-such-group-7c1e"),
        other => panic!("expected UnknownUser for the group, got {other:?}"),
    }
    assert!(
        !c.exists(&unknown).await.unwrap_or(true),
        "make_dir with an unknown group created the directory"
    );
}

/// `exists`: files, directories and dangling symlinks exist; missing paths (and paths below
/// a file) do not.
pub async fn exists_checks(c: &dyn Container, scratch: &str) {
    let dir = subdir(c, scratch, "exists").await;
    let file = format!("{dir}/file");
    c.push(&file, b"x", PushOptions::default())
        .await
        .unwrap_or_else(|e| panic!("push {file}: {e}"));
    bash(c, r#"ln -s "$1/nowhere" "$1/dangling""#, &[&dir]).await;
    for (path, expected) in [
        (dir.clone(), true),
        (file.clone(), true),
        (format!("{dir}/dangling"), true),
        (format!("{dir}/missing"), false),
        (format!("{file}/below-a-file"), false),
    ] {
        let got = c
            .exists(&path)
            .await
            .unwrap_or_else(|e| panic!("exists({path}): {e}"));
        assert_eq!(got, expected, "exists({path})");
    }
}

/// Services: `service` (one the implementation knows, running a long-lived process)
/// starts, reports running, starts again harmlessly, restarts (running, and stopped),
/// stops, reports stopped, stops again harmlessly; an unknown service is
/// [`ContainerError::Service`] for every call.
pub async fn services_start_stop(c: &dyn Container, service: &str) {
    let services = vec![service.to_string()];
    c.stop(&services)
        .await
        .unwrap_or_else(|e| panic!("initial stop of {service}: {e}"));
    assert!(
        !c.is_running(service)
            .await
            .unwrap_or_else(|e| panic!("is_running({service}): {e}")),
        "stopped at first"
    );
    c.start(&services)
        .await
        .unwrap_or_else(|e| panic!("start {service}: {e}"));
    assert!(
        c.is_running(service).await.unwrap_or(false),
        "{service} should run after start"
    );
    c.start(&services)
        .await
        .unwrap_or_else(|e| panic!("starting a running {service} must be harmless: {e}"));
    assert!(
        c.is_running(service).await.unwrap_or(false),
        "{service} should still run"
    );
    c.restart(&services)
        .await
        .unwrap_or_else(|e| panic!("restart a running {service}: {e}"));
    assert!(
        c.is_running(service).await.unwrap_or(false),
        "{service} should run after restart"
    );
    c.stop(&services)
        .await
        .unwrap_or_else(|e| panic!("stop {service}: {e}"));
    assert!(
        !c.is_running(service).await.unwrap_or(true),
        "{service} should be stopped after stop"
    );
    c.restart(&services)
        .await
        .unwrap_or_else(|e| panic!("restart a stopped {service}: {e}"));
    assert!(
        c.is_running(service).await.unwrap_or(false),
        "restarting a stopped {service} starts it"
    );
    c.stop(&services)
        .await
        .unwrap_or_else(|e| panic!("stop {service} after restart: {e}"));
    c.stop(&services)
        .await
        .unwrap_or_else(|e| panic!("stopping a stopped {service} must be harmless: {e}"));

    let unknown = "no-such-service-7c1e".to_string();
    let names = vec![unknown.clone()];
    for (call, result) in [
        ("start", c.start(&names).await),
        ("stop", c.stop(&names).await),
        ("restart", c.restart(&names).await),
        ("is_running", c.is_running(&unknown).await.map(|_| ())),
    ] {
        match result {
            Err(ContainerError::Service { service: s, .. }) => assert_eq!(s, unknown, "{call}"),
            other => panic!(
                "{call} of an unknown service: expected ContainerError::Service, got {other:?}"
            ),
        }
    }
}

/// Bad input is refused with [`ContainerError::InvalidArgument`] naming the value (or
/// [`ContainerError::UnknownUser`]) and nothing runs: relative paths, NUL bytes in paths,
/// arguments and environment, a relative working directory, an unknown user.
pub async fn bad_input_executes_nothing(c: &dyn Container, scratch: &str) {
    let dir = subdir(c, scratch, "bad-input").await;
    let marker = format!("{dir}/marker");
    let touch = argv(&["touch", &marker]);
    let assert_nothing_ran = |what: &'static str| assert_nothing_ran(c, &marker, what);

    let with_nul = argv(&["touch", &marker, "x\0y"]);
    expect_invalid(
        "NUL in an argument",
        c.exec(&with_nul, quick()).await,
        "x\0y",
    );
    assert_nothing_ran("NUL in an argument").await;

    let nul_program = argv(&["touch\0", &marker]);
    expect_invalid(
        "NUL in the program",
        c.exec(&nul_program, quick()).await,
        "touch\0",
    );
    assert_nothing_ran("NUL in the program").await;

    let relative = ExecOptions {
        working_dir: Some("relative/dir".into()),
        ..quick()
    };
    expect_invalid(
        "relative working_dir",
        c.exec(&touch, relative).await,
        "relative/dir",
    );
    assert_nothing_ran("relative working_dir").await;

    let mut environment = BTreeMap::new();
    environment.insert("TOKEN".to_string(), "abc\0def".to_string());
    match c
        .exec(
            &touch,
            ExecOptions {
                environment,
                ..quick()
            },
        )
        .await
    {
        Err(e @ ContainerError::InvalidArgument { .. }) => {
            let shown = format!("{e} {e:?}");
            assert!(
                shown.contains("TOKEN"),
                "the error should name the variable: {shown}"
            );
            assert!(
                !shown.contains("abc"),
                "the error must not show the value: {shown}"
            );
        }
        other => {
            panic!("expected InvalidArgument for a NUL in an environment value, got {other:?}")
        }
    }
    assert_nothing_ran("NUL in an environment value").await;

    match c
        .exec(
            &touch,
            ExecOptions {
                user: Some("no-such-user-7c1e".into()),
                ..quick()
            },
        )
        .await
    {
        Err(ContainerError::UnknownUser { kind: "user", name }) => {
            assert_eq!(name, "no-such-user-7c1e")
        }
        other => panic!("expected UnknownUser, got {other:?}"),
    }
    assert_nothing_ran("unknown user").await;
    bad_paths_are_refused(c, &dir, &marker).await;
}

/// Asserts that the command that creates `marker` did not run (`what` was refused).
async fn assert_nothing_ran(c: &dyn Container, marker: &str, what: &str) {
    let ran = c
        .exists(marker)
        .await
        .unwrap_or_else(|e| panic!("exists({marker}): {e}"));
    assert!(
        !ran,
        "{what}: the command ran although its input was refused"
    );
}

/// The path half of [`bad_input_executes_nothing`], in `dir`: relative, empty and NUL
/// paths are refused by every file operation, which leaves nothing behind.
async fn bad_paths_are_refused(c: &dyn Container, dir: &str, marker: &str) {
    for path in ["relative/file", "", "./file"] {
        expect_invalid(
            "push",
            c.push(path, b"x", PushOptions::default()).await,
            path,
        );
        expect_invalid("pull", c.pull(path).await, path);
        expect_invalid(
            "list_files",
            c.list_files(path, ListOptions::default()).await,
            path,
        );
        expect_invalid("remove_path", c.remove_path(path, true).await, path);
        expect_invalid(
            "make_dir",
            c.make_dir(path, MakeDirOptions::default()).await,
            path,
        );
        expect_invalid("exists", c.exists(path).await, path);
    }
    let nul_path = format!("{marker}\0.txt");
    expect_invalid(
        "push with NUL",
        c.push(&nul_path, b"x", PushOptions::default()).await,
        &nul_path,
    );
    expect_invalid("pull with NUL", c.pull(&nul_path).await, &nul_path);
    expect_invalid("exists with NUL", c.exists(&nul_path).await, &nul_path);
    expect_invalid(
        "make_dir with NUL",
        c.make_dir(&nul_path, MakeDirOptions::default()).await,
        &nul_path,
    );
    expect_invalid(
        "remove_path with NUL",
        c.remove_path(&nul_path, false).await,
        &nul_path,
    );
    assert_nothing_ran(c, marker, "NUL in a path").await;
    let names = c
        .list_files(dir, ListOptions::default())
        .await
        .unwrap_or_else(|e| panic!("list {dir}: {e}"));
    assert!(
        names.is_empty(),
        "refused calls left files behind: {names:?}"
    );
}

/// The workload user's side of a chown race: swaps every entry created in a dir for a
/// symlink to a victim file, as soon as inotify reports it. Args: dir, victim, stop
/// file. Writes `ready` in the dir once watching; prints the number of swaps.
const SWAPPER: &str = r#"
import ctypes, os, select, struct, sys
shared, victim, stop = sys.argv[1:4]
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init()
libc.inotify_add_watch(fd, shared.encode(), 0x100 | 0x80)
mine = {"ready"}
open(os.path.join(shared, "ready"), "w").close()
swaps = 0
while not os.path.exists(stop):
    ready, _, _ = select.select([fd], [], [], 0.2)
    if not ready:
        continue
    buf = os.read(fd, 65536)
    i = 0
    while i < len(buf):
        _wd, _mask, _cookie, length = struct.unpack_from("iIII", buf, i)
        name = buf[i + 16 : i + 16 + length].rstrip(b"\0").decode(errors="replace")
        i += 16 + length
        if name in mine or name.endswith(".moved"):
            continue
        path = os.path.join(shared, name)
        try:
            os.rename(path, path + ".moved")
            mine.add(name)
            os.symlink(victim, path)
            swaps += 1
        except OSError:
            pass
print(swaps)
"#;

/// Asserts `victim` still holds `ours`, belongs to `owner` and has mode 0644.
async fn untouched(c: &dyn Container, victim: &str, owner: &str, what: &str) {
    assert_eq!(
        c.pull(victim).await.unwrap_or_default(),
        b"ours",
        "{what}: the symlink's target was written"
    );
    assert_eq!(
        stat_owner(c, victim).await,
        owner,
        "{what}: the symlink's target changed owner"
    );
    assert_eq!(
        info(c, victim).await.permissions,
        0o644,
        "{what}: the symlink's target changed mode"
    );
}

/// `push` and `make_dir` with an owner never follow a symlink: neither one already at
/// the target path, nor one that the owner-to-be (who may write to the parent dir)
/// swaps in while the call runs. A chown or chmod by path would hand a file of the
/// caller's to that user. The race part runs as root only (it needs a second user,
/// `nobody`) and needs `python3` in the container.
pub async fn push_with_owner_never_follows_a_symlink(c: &dyn Container, scratch: &str) {
    let dir = subdir(c, scratch, "push-symlink").await;
    let victim = format!("{dir}/victim");
    c.push(
        &victim,
        b"ours",
        PushOptions {
            permissions: Some(0o644),
            ..PushOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("push {victim}: {e}"));
    let owner = stat_owner(c, &victim).await;
    let root = is_root(c).await;
    let user = root.then(|| "nobody".to_string());
    // A symlink already at the target path is replaced, not followed.
    let target = format!("{dir}/target");
    bash(c, r#"ln -s -- "$1" "$2""#, &[&victim, &target]).await;
    c.push(
        &target,
        b"new",
        PushOptions {
            permissions: Some(0o600),
            user: user.clone(),
            ..PushOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("push over a symlink: {e}"));
    assert_eq!(info(c, &target).await.kind, FileKind::File);
    assert_eq!(c.pull(&target).await.unwrap_or_default(), b"new");
    untouched(c, &victim, &owner, "a symlink at the target").await;
    if root {
        owner_race_with_a_swapper(c, scratch, &dir, &victim, &owner).await;
    }
}

/// The race of [`push_with_owner_never_follows_a_symlink`] (as root): `nobody` owns the
/// parent and swaps every new entry for a symlink to `victim`.
async fn owner_race_with_a_swapper(
    c: &dyn Container,
    scratch: &str,
    dir: &str,
    victim: &str,
    owner: &str,
) {
    let user = Some("nobody".to_string());
    let shared = format!("{dir}/shared");
    bash(
        c,
        r#"chmod a+x -- "$1" "$2" && mkdir -- "$3" && chown nobody: -- "$3""#,
        &[scratch, dir, &shared],
    )
    .await;
    let stop = format!("{dir}/stop");
    let swapper_argv = argv(&["python3", "-c", SWAPPER, &shared, victim, &stop]);
    let swapper = c.exec(
        &swapper_argv,
        ExecOptions {
            user: Some("nobody".into()),
            timeout: Some(Duration::from_secs(300)),
            ..ExecOptions::default()
        },
    );
    let attacks = async {
        let ready = format!("{shared}/ready");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !c.exists(&ready).await.unwrap_or(false) {
            assert!(
                std::time::Instant::now() < deadline,
                "the swapper never started (python3 is needed in the container)"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for i in 0..200 {
            // Most of these fail once their path is swapped: only the victim matters.
            let _ = c
                .push(
                    &format!("{shared}/f{i}"),
                    b"x",
                    PushOptions {
                        permissions: Some(0o600),
                        user: user.clone(),
                        ..PushOptions::default()
                    },
                )
                .await;
            let _ = c
                .make_dir(
                    &format!("{shared}/d{i}"),
                    MakeDirOptions {
                        permissions: Some(0o700),
                        user: user.clone(),
                        ..MakeDirOptions::default()
                    },
                )
                .await;
        }
        c.push(&stop, b"", PushOptions::default())
            .await
            .unwrap_or_else(|e| panic!("push {stop}: {e}"));
    };
    let (swapped, ()) = tokio::join!(swapper, attacks);
    let swaps: u32 = swapped
        .unwrap_or_else(|e| panic!("the swapper failed: {e}"))
        .stdout_text()
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(swaps > 0, "the swapper never swapped anything");
    untouched(
        c,
        victim,
        owner,
        "a symlink swapped in during push or make_dir",
    )
    .await;
}

/// `list_files` of a symlink (with or without `itself`) lists the link itself as a
/// [`FileKind::Symlink`], never its target, also when the link dangles.
pub async fn list_files_itself_on_a_symlink(c: &dyn Container, scratch: &str) {
    let dir = subdir(c, scratch, "list-symlink").await;
    bash(
        c,
        r#"mkdir "$1/target" && ln -s "$1/target" "$1/to-dir" && ln -s "$1/nowhere" "$1/dangling""#,
        &[&dir],
    )
    .await;
    for name in ["to-dir", "dangling"] {
        let path = format!("{dir}/{name}");
        let me = info(c, &path).await;
        assert_eq!(
            (me.kind, me.name.as_str(), me.path.as_str()),
            (FileKind::Symlink, name, path.as_str()),
            "list_files({path}, itself) must list the link, not its target: {me:?}"
        );
        let plain = c
            .list_files(&path, ListOptions::default())
            .await
            .unwrap_or_else(|e| panic!("list_files({path}): {e}"));
        assert_eq!(
            plain.iter().map(|f| f.kind).collect::<Vec<_>>(),
            [FileKind::Symlink],
            "list_files({path}) lists the link itself: {plain:?}"
        );
    }
}

/// `make_dir` (and `push` with `make_dirs`) with an owner never follow a link that the
/// owner-to-be planted beside the new directory, such as Pebble's predictable
/// `<path>.mkdir-new`. Root only (it needs a second user, `nobody`).
pub async fn make_dir_ignores_a_planted_mkdir_new_link(c: &dyn Container, scratch: &str) {
    if !is_root(c).await {
        return;
    }
    let dir = subdir(c, scratch, "mkdir-new").await;
    let victim = format!("{dir}/victim");
    c.push(
        &victim,
        b"ours",
        PushOptions {
            permissions: Some(0o644),
            ..PushOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("push {victim}: {e}"));
    let owner = stat_owner(c, &victim).await;
    let shared = format!("{dir}/shared");
    bash(
        c,
        r#"chmod a+x -- "$1" "$2" && mkdir -- "$3" && chown nobody: -- "$3""#,
        &[scratch, &dir, &shared],
    )
    .await;
    // `nobody` plants the links, as the workload user would.
    for name in ["made", "deep", "pushed-dir"] {
        let out = run(
            c,
            &["ln", "-s", &victim, &format!("{shared}/{name}.mkdir-new")],
            ExecOptions {
                user: Some("nobody".into()),
                ..quick()
            },
        )
        .await;
        assert_eq!(out.exit_code, 0);
    }
    let as_nobody = |make_parents| MakeDirOptions {
        make_parents,
        permissions: Some(0o700),
        user: Some("nobody".into()),
        group: None,
    };
    c.make_dir(&format!("{shared}/made"), as_nobody(false))
        .await
        .unwrap_or_else(|e| panic!("make_dir made: {e}"));
    c.make_dir(&format!("{shared}/deep/er"), as_nobody(true))
        .await
        .unwrap_or_else(|e| panic!("make_dir deep/er: {e}"));
    c.push(
        &format!("{shared}/pushed-dir/file"),
        b"x",
        PushOptions {
            make_dirs: true,
            user: Some("nobody".into()),
            ..PushOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("push pushed-dir/file: {e}"));
    assert_eq!(
        info(c, &format!("{shared}/made")).await.kind,
        FileKind::Directory
    );
    untouched(c, &victim, &owner, "a planted .mkdir-new link").await;
}

/// A group without a user works for exec, push and make_dir: the current user keeps
/// running (or owning), with that group.
pub async fn group_without_user_works(c: &dyn Container, scratch: &str) {
    let dir = subdir(c, scratch, "group-only").await;
    let me = bash(c, "id -un", &[]).await;
    let group = if is_root(c).await {
        bash(c, "id -gn nobody", &[]).await
    } else {
        bash(c, "id -gn", &[]).await
    };
    let out = run(
        c,
        &["bash", "-c", "id -un; id -gn"],
        ExecOptions {
            group: Some(group.clone()),
            ..quick()
        },
    )
    .await;
    assert_eq!(
        out.stdout_text(),
        format!("{me}\n{group}\n"),
        "exec with a group alone"
    );
    let file = format!("{dir}/file");
    c.push(
        &file,
        b"g",
        PushOptions {
            group: Some(group.clone()),
            ..PushOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("push with a group alone: {e}"));
    assert_eq!(stat_owner(c, &file).await, format!("{me}:{group}"), "push");
    let sub = format!("{dir}/sub");
    c.make_dir(
        &sub,
        MakeDirOptions {
            group: Some(group.clone()),
            ..MakeDirOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("make_dir with a group alone: {e}"));
    assert_eq!(
        stat_owner(c, &sub).await,
        format!("{me}:{group}"),
        "make_dir"
    );
}

/// Runs every check in turn (`scratch` and `service` as for the individual checks).
pub async fn run_all(c: &dyn Container, scratch: &str, service: &str) {
    exec_output_and_exit_codes(c).await;
    exec_could_not_start(c, scratch).await;
    exec_environment(c, scratch).await;
    exec_stdin(c).await;
    exec_timeout_kills_process_group(c, scratch).await;
    exec_timeout_kills_a_setpgid_grandchild(c, scratch).await;
    exec_dropped_future_kills_everything(c, scratch).await;
    exec_streaming_all(c, scratch).await;
    exec_environment_is_exact(c).await;
    exec_user_switching(c, scratch).await;
    exec_user_ids(c, scratch).await;
    push_modes_and_make_dirs(c, scratch).await;
    push_overwrites_atomically(c, scratch).await;
    push_with_owner_never_follows_a_symlink(c, scratch).await;
    pull_missing_is_not_found(c, scratch).await;
    list_files_pattern_and_itself(c, scratch).await;
    remove_path_recursive_and_not_found(c, scratch).await;
    make_dir_semantics(c, scratch).await;
    exists_checks(c, scratch).await;
    list_files_itself_on_a_symlink(c, scratch).await;
    make_dir_ignores_a_planted_mkdir_new_link(c, scratch).await;
    group_without_user_works(c, scratch).await;
    services_start_stop(c, service).await;
    bad_input_executes_nothing(c, scratch).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::local::{LocalContainer, ProcessSupervisor};

    /// The whole suite against `LocalContainer` from inside the crate (the per-check tests
    /// live in `tests/integration/container/conformance.rs`).
    #[tokio::test]
    async fn local_container_passes_the_whole_suite() {
        let scratch = tempfile::tempdir().expect("a temporary directory");
        let supervisor = ProcessSupervisor::new().with_grace_period(Duration::from_secs(2));
        supervisor.add("sleeper", ["sleep", "1000"]);
        let container = LocalContainer::with_services(supervisor);
        let path = scratch.path().to_str().expect("a UTF-8 temporary path");
        run_all(&container, path, "sleeper").await;
    }
}

//! The `Container` conformance suite run against `LocalContainer`, one test per check.
//!
//! Run alone with `cargo test --all-features --test integration container::conformance`.
//! Needs the `testing` feature (the README's test command uses `--all-features`).
#![cfg(feature = "testing")]

use std::path::Path;
use std::time::Duration;

use synapse_backup::testing::container_conformance as conformance;
use synapse_backup::{LocalContainer, ProcessSupervisor, SystemdServices};

/// The service the supervisor knows: a long-running process.
const SERVICE: &str = "sleeper";

/// A `LocalContainer` with a supervised service, and a scratch directory removed on drop.
struct Fixture {
    container: LocalContainer,
    scratch: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let supervisor = ProcessSupervisor::new().with_grace_period(Duration::from_secs(2));
        supervisor.add(SERVICE, ["sleep", "1000"]);
        let scratch = tempfile::tempdir().expect("could not create a scratch directory");
        Self {
            container: LocalContainer::with_services(supervisor),
            scratch,
        }
    }

    fn scratch(&self) -> &str {
        self.scratch
            .path()
            .to_str()
            .expect("the scratch path is not UTF-8")
    }
}

#[tokio::test]
async fn conformance_exec_output_and_exit_codes() {
    let f = Fixture::new();
    conformance::exec_output_and_exit_codes(&f.container).await;
}

#[tokio::test]
async fn conformance_exec_could_not_start() {
    let f = Fixture::new();
    conformance::exec_could_not_start(&f.container, f.scratch()).await;
}

#[tokio::test]
async fn conformance_exec_environment() {
    let f = Fixture::new();
    conformance::exec_environment(&f.container, f.scratch()).await;
}

#[tokio::test]
async fn conformance_exec_stdin() {
    let f = Fixture::new();
    conformance::exec_stdin(&f.container).await;
}

#[tokio::test]
async fn conformance_exec_timeout_kills_process_group() {
    let f = Fixture::new();
    conformance::exec_timeout_kills_process_group(&f.container, f.scratch()).await;
}

#[tokio::test]
async fn conformance_exec_timeout_kills_a_setpgid_grandchild() {
    let f = Fixture::new();
    conformance::exec_timeout_kills_a_setpgid_grandchild(&f.container, f.scratch()).await;
}

#[tokio::test]
async fn conformance_exec_dropped_future_kills_everything() {
    let f = Fixture::new();
    conformance::exec_dropped_future_kills_everything(&f.container, f.scratch()).await;
}

#[tokio::test]
async fn conformance_exec_environment_is_exact() {
    let f = Fixture::new();
    conformance::exec_environment_is_exact(&f.container).await;
}

#[tokio::test]
async fn conformance_exec_user_ids() {
    let f = Fixture::new();
    conformance::exec_user_ids(&f.container, f.scratch()).await;
}

#[tokio::test]
async fn conformance_exec_user_switching() {
    let f = Fixture::new();
    conformance::exec_user_switching(&f.container, f.scratch()).await;
}

#[tokio::test]
async fn conformance_push_modes_and_make_dirs() {
    let f = Fixture::new();
    conformance::push_modes_and_make_dirs(&f.container, f.scratch()).await;
}

#[tokio::test]
async fn conformance_push_overwrites_atomically() {
    let f = Fixture::new();
    conformance::push_overwrites_atomically(&f.container, f.scratch()).await;
}

#[tokio::test]
async fn conformance_pull_missing_is_not_found() {
    let f = Fixture::new();
    conformance::pull_missing_is_not_found(&f.container, f.scratch()).await;
}

#[tokio::test]
async fn conformance_list_files_pattern_and_itself() {
    let f = Fixture::new();
    conformance::list_files_pattern_and_itself(&f.container, f.scratch()).await;
}

#[tokio::test]
async fn conformance_remove_path_recursive_and_not_found() {
    let f = Fixture::new();
    conformance::remove_path_recursive_and_not_found(&f.container, f.scratch()).await;
}

#[tokio::test]
async fn conformance_make_dir_semantics() {
    let f = Fixture::new();
    conformance::make_dir_semantics(&f.container, f.scratch()).await;
}

#[tokio::test]
async fn conformance_exists_checks() {
    let f = Fixture::new();
    conformance::exists_checks(&f.container, f.scratch()).await;
}

#[tokio::test]
async fn conformance_services_start_stop() {
    let f = Fixture::new();
    conformance::services_start_stop(&f.container, SERVICE).await;
}

/// A fake `systemctl` keeping unit state in files next to it; it knows only `synapse`.
fn fake_systemctl(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let program = dir.join("systemctl");
    let script = r#"#!/bin/bash
set -u
here=$(dirname "$0")
verb=$1; shift
while [ $# -gt 0 ] && [ "$1" != "--" ]; do shift; done
[ "${1:-}" = "--" ] || { echo "expected -- before the unit" >&2; exit 2; }
unit=${2:-}
if [ "$unit" != synapse ]; then
  if [ "$verb" = show ]; then printf 'LoadState=not-found\nActiveState=inactive\n'; exit 0; fi
  echo "Unit $unit.service not found." >&2; exit 5
fi
case "$verb" in
  start) touch "$here/active" ;;
  stop) rm -f "$here/active" ;;
  show) echo LoadState=loaded
        if [ -e "$here/active" ]; then echo ActiveState=active; else echo ActiveState=inactive; fi ;;
  *) echo "unknown verb $verb" >&2; exit 2 ;;
esac
"#;
    std::fs::write(&program, script).expect("could not write the fake systemctl");
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755))
        .expect("chmod the fake systemctl");
    program
}

#[tokio::test]
async fn conformance_services_start_stop_with_systemd() {
    let dir = tempfile::tempdir().expect("could not create a temporary directory");
    let container =
        LocalContainer::with_services(SystemdServices::with_program(fake_systemctl(dir.path())));
    conformance::services_start_stop(&container, "synapse").await;
}

#[tokio::test]
async fn conformance_bad_input_executes_nothing() {
    let f = Fixture::new();
    conformance::bad_input_executes_nothing(&f.container, f.scratch()).await;
}

#[tokio::test]
async fn conformance_run_all_in_one_scratch_directory() {
    let f = Fixture::new();
    conformance::run_all(&f.container, f.scratch(), SERVICE).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_push_with_owner_never_follows_a_symlink() {
    let f = Fixture::new();
    conformance::push_with_owner_never_follows_a_symlink(&f.container, f.scratch()).await;
}

#[tokio::test]
async fn conformance_list_files_itself_on_a_symlink() {
    let f = Fixture::new();
    conformance::list_files_itself_on_a_symlink(&f.container, f.scratch()).await;
}

#[tokio::test]
async fn conformance_make_dir_ignores_a_planted_mkdir_new_link() {
    let f = Fixture::new();
    conformance::make_dir_ignores_a_planted_mkdir_new_link(&f.container, f.scratch()).await;
}

#[tokio::test]
async fn conformance_group_without_user_works() {
    let f = Fixture::new();
    conformance::group_without_user_works(&f.container, f.scratch()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_exec_streaming_cat_64_mib() {
    let f = Fixture::new();
    conformance::exec_streaming_cat_64_mib(&f.container).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_exec_streaming_exit_errors() {
    let f = Fixture::new();
    conformance::exec_streaming_exit_errors(&f.container).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_exec_streaming_stdin_eof_on_drop() {
    let f = Fixture::new();
    conformance::exec_streaming_stdin_eof_on_drop(&f.container).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_exec_streaming_options() {
    let f = Fixture::new();
    conformance::exec_streaming_options(&f.container).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_exec_streaming_drop_kills_everything() {
    let f = Fixture::new();
    conformance::exec_streaming_drop_kills_everything(&f.container, f.scratch()).await;
}

/// `LocalContainer` only (Pebble's pipes are its daemon's): a streamed command's
/// standard input and output are pipes of 1 MiB, not Linux's default 64 KiB, so a
/// stream of a gigabyte crosses them in large writes (a `Transfer::Library` restore of
/// 1 GiB on moto took 3.4 s against 4.1 s with the default pipes). Where the system
/// refuses this user a larger pipe at that moment (`/proc/sys/fs/pipe-user-pages-soft`
/// reached by other tests' pipes, in a user namespace: it failed so once with two CI
/// runs side by side) the default is right; then this process cannot widen a pipe of
/// its own either, and the command is run again, up to 5 times.
#[tokio::test(flavor = "multi_thread")]
async fn local_exec_streaming_pipes_hold_a_mebibyte() {
    use synapse_backup::{Container, ExecOptions};
    use tokio::io::AsyncReadExt;
    let f = Fixture::new();
    // F_GETPIPE_SZ (1032) of the command's standard input and output.
    let script = "import fcntl; print(fcntl.fcntl(0, 1032), fcntl.fcntl(1, 1032))";
    let command: Vec<String> = ["python3", "-c", script]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let mut process = f
            .container
            .exec_streaming(&command, ExecOptions::default())
            .await
            .expect("python3 (apt-get install python3) could not start");
        let mut stdout = process.stdout.take().expect("a stdout");
        drop(process.stdin.take());
        let mut out = String::new();
        stdout.read_to_string(&mut out).await.unwrap();
        process.wait().await.unwrap();
        if out.trim() == "1048576 1048576" {
            return;
        }
        // Only a system that refuses this process a 1 MiB pipe too excuses the default.
        let (read, _write) = nix::unistd::pipe().unwrap();
        let widened = nix::fcntl::fcntl(&read, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
        seen.push(format!(
            "{} (this process's widening: {widened:?})",
            out.trim()
        ));
        assert!(
            widened.is_err(),
            "pipe sizes of stdin and stdout: {seen:?}, though this process could widen its own"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the system refused a 1 MiB pipe every time: {seen:?}");
}

//! A client killed while its pipeline runs through Pebble leaves nothing behind: the
//! CLI (`--pebble SOCKET`) is SIGKILLed mid-upload (a tree of 60 MB, the upload capped
//! at 1 MiB/s, so the rest would take a minute or more); Pebble then kills only the
//! exec's direct child, and the pipeline's watchdog must take the rest (`aws`, `gpg`, `tar`, the checksum stage)
//! down within a bounded time; after `unlock` (the killed run's lock stays until it
//! expires), the next `create` sweeps the killed run's work dir.
//!
//! Needs `pebble` on PATH: `source scripts/pebble.sh` installs it
//! (`go install github.com/canonical/pebble/cmd/pebble@v1.32.1`).
#![cfg(feature = "cli")]

use crate::support::{cli_fixture, env, pebble_daemon, synapse_tree};

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cli_fixture::{Fixture, expect, stdout};
use pebble_daemon::PebbleDaemon;
use synapse_tree::TreeSpec;

/// The work dirs in the data dir.
fn work_dirs(f: &Fixture) -> Vec<String> {
    fs::read_dir(&f.tree.data)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".synapse-backup-"))
        .collect()
}

/// The processes whose command line or environment names `needle` (the run's work
/// dir), with their command names.
fn processes_naming(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let read = |name: &str| fs::read(format!("/proc/{pid}/{name}")).unwrap_or_default();
        let hay = [read("cmdline"), read("environ")].concat();
        if String::from_utf8_lossy(&hay).contains(needle) {
            let comm = String::from_utf8_lossy(&read("comm")).trim().to_string();
            found.push((pid, comm));
        }
    }
    found
}

#[test]
fn a_killed_client_leaves_no_pipeline_process_and_the_next_create_sweeps_its_work_dir() {
    let daemon = PebbleDaemon::start();
    let f = Fixture::with_spec(&TreeSpec {
        media_files: 20,
        media_bytes: 60 << 20,
        ..TreeSpec::default()
    });
    let out = Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(&f.tree.root)
        .output()
        .expect("run chown");
    assert!(out.status.success(), "chown: {out:?}");
    fs::set_permissions(
        f.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let socket = daemon.socket();
    let aws = env::aws();

    let mut client = Command::new(env!("CARGO_BIN_EXE_synapse-backup"))
        .env_remove("RUST_LOG")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .arg("--root")
        .arg(&f.tree.root)
        .arg("--s3")
        .arg(&f.s3_file)
        .arg("--passphrase-file")
        .arg(&f.passphrase_file)
        .arg("--pebble")
        .arg(&socket)
        .arg("--aws")
        .arg(&aws)
        .args(["--limit-upload", "1", "create"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // Mid-upload: the run's work dir exists and its `aws` is running.
    let deadline = Instant::now() + Duration::from_secs(120);
    let dir = loop {
        assert!(Instant::now() < deadline, "the upload never started");
        assert!(
            client.try_wait().unwrap().is_none(),
            "the create ended early"
        );
        if let Some(dir) = work_dirs(&f).into_iter().find(|d| d.contains("backup"))
            && processes_naming(&dir).iter().any(|(_, comm)| comm == "aws")
        {
            break dir;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let before = processes_naming(&dir);
    client.kill().unwrap();
    client.wait().unwrap();

    // Left alone, the pipeline would upload the rest (tens of MB at 1 MiB/s: a minute
    // or more); the watchdog checks every second.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = processes_naming(&dir);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "20 s after the client was killed, processes of its run remain: {left:?} \
             (while it ran: {before:?})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    assert!(
        work_dirs(&f).contains(&dir),
        "the killed run's work dir is left for the sweep: {:?}",
        work_dirs(&f)
    );
    // The killed run's lock stays until it expires: the operator removes it, as the
    // lock error tells them to; then the next create sweeps the work dir.
    let through_pebble = || {
        let mut cmd = f.cmd();
        cmd.arg("--pebble").arg(&socket).arg("--aws").arg(&aws);
        cmd
    };
    expect(0, &mut through_pebble(), &["unlock", "--yes"]);
    let out = expect(0, &mut through_pebble(), &["create"]);
    assert!(!stdout(&out).trim().is_empty());
    assert!(
        !work_dirs(&f).contains(&dir),
        "the next create swept the killed run's work dir: {:?}",
        work_dirs(&f)
    );
}

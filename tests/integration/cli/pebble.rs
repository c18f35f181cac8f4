//! The command line driving a Pebble-managed workload (`--pebble SOCKET`), end to end: a
//! real Pebble daemon (as root) with a `synapse` stand-in service, a synthetic tree owned
//! by the non-root workload user `nobody`, the in-process S3 server, and the binary run
//! with an s3 file and a 0600 passphrase file: check, create, list, verify and restore
//! (Pebble stops and starts `synapse`), the default owner read from the workload; and a
//! socket that does not exist is a clear error naming it.
//!
//! Needs `pebble` on PATH: `source scripts/pebble.sh` installs it
//! (`go install github.com/canonical/pebble/cmd/pebble@v1.32.1`).
#![cfg(feature = "cli")]

use crate::support::{cli_fixture, env, pebble_daemon, synapse_tree};

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

use cli_fixture::{Fixture, expect, stderr, stdout};
use pebble_daemon::{PebbleDaemon, pebble_binary};
use synapse_tree::walk;

/// `nobody`'s uid and `nogroup`'s gid, as this host's passwd and group files say.
fn nobody() -> (u32, u32) {
    let user = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("a `nobody` user");
    let group = nix::unistd::Group::from_name("nogroup")
        .unwrap()
        .expect("a `nogroup` group");
    (user.uid.as_raw(), group.gid.as_raw())
}

/// Hands the tree to `nobody:nogroup` (the workload user) and lets them reach it.
fn give_to_workload_user(f: &Fixture) {
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
}

/// `pebble ARGS` against the daemon (its own command line, as an operator would).
fn pebble(daemon: &PebbleDaemon, args: &[&str]) {
    let out = Command::new(pebble_binary())
        .args(args)
        .env("PEBBLE", daemon.dir())
        .output()
        .expect("run pebble");
    assert!(
        out.status.success(),
        "pebble {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn synapse_is_active(daemon: &PebbleDaemon) -> bool {
    daemon
        .get("/v1/services?names=synapse")
        .contains("\"current\":\"active\"")
}

#[test]
fn every_command_runs_through_pebble_as_the_data_dirs_owner_and_restore_stops_and_starts_the_pebble_service()
 {
    let daemon = PebbleDaemon::start();
    let f = Fixture::new();
    give_to_workload_user(&f);
    let socket = daemon.socket();
    let aws = env::aws();
    let cli = || {
        let mut cmd = f.cmd();
        cmd.arg("--pebble")
            .arg(&socket)
            .arg("--aws")
            .arg(&aws)
            .env("RUST_LOG", "synapse_backup=info");
        cmd
    };

    let out = expect(0, &mut cli(), &["check"]);
    assert!(stdout(&out).contains("is usable"), "{}", stdout(&out));

    let out = expect(0, &mut cli(), &["create"]);
    f.assert_no_secrets(&out);
    let id = stdout(&out).trim().to_string();
    assert!(!id.is_empty(), "create printed no id: {}", stderr(&out));
    assert!(
        stderr(&out).contains("owner of the data dir in the workload"),
        "without --user, the owner comes from the workload: {}",
        stderr(&out)
    );
    assert!(
        daemon
            .get("/v1/changes?select=all")
            .contains("\"kind\":\"exec\""),
        "the pipelines ran through Pebble"
    );

    let out = expect(0, &mut cli(), &["list"]);
    assert!(stdout(&out).contains(&id), "{}", stdout(&out));

    let out = expect(0, &mut cli(), &["verify", "latest"]);
    assert!(stdout(&out).contains(&id), "{}", stdout(&out));

    // Synapse runs under Pebble; the tree changes; restore stops it, swaps, starts it.
    let before = f.tree.backed_up_files();
    pebble(&daemon, &["start", "synapse"]);
    assert!(synapse_is_active(&daemon), "synapse started");
    let key = f.tree.data.join("example.test.signing.key");
    fs::write(&key, "ed25519 a_zzzz changed-after-the-backup\n").unwrap();
    fs::remove_file(
        walk(&f.tree.media)
            .into_iter()
            .find(|p| p.is_file())
            .unwrap(),
    )
    .unwrap();

    let out = expect(
        0,
        &mut cli(),
        &["--service", "synapse", "restore", "latest", "--yes"],
    );
    f.assert_no_secrets(&out);
    assert!(
        daemon
            .get("/v1/changes?select=all")
            .contains("\"kind\":\"stop\""),
        "Pebble stopped synapse during the restore"
    );
    assert!(
        synapse_is_active(&daemon),
        "restore starts the Pebble service it stopped"
    );
    assert_eq!(f.tree.backed_up_files(), before, "the tree is restored");
    let (uid, gid) = nobody();
    for path in walk(&f.tree.data) {
        let meta = fs::symlink_metadata(&path).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (uid, gid),
            "{} belongs to the workload user after the restore",
            path.display()
        );
    }
    pebble(&daemon, &["stop", "synapse"]);
}

#[test]
fn a_pebble_socket_that_does_not_exist_is_an_error_naming_it() {
    let f = Fixture::new();
    let missing = f.dir.path().join("no-such-dir/pebble.socket");
    for command in [&["check"][..], &["create"][..]] {
        let mut cmd = f.cmd();
        cmd.arg("--pebble").arg(&missing);
        let out = expect(1, &mut cmd, command);
        let text = stderr(&out);
        assert!(
            text.contains(&missing.display().to_string()),
            "{command:?}: the error names the socket: {text}"
        );
        assert!(
            text.contains("no such socket"),
            "{command:?}: the error says what is wrong: {text}"
        );
    }
    // The variable gives the socket as the flag does.
    let mut cmd = f.cmd();
    cmd.env("SYNAPSE_BACKUP_PEBBLE", &missing);
    let out = expect(1, &mut cmd, &["create"]);
    assert!(
        stderr(&out).contains(&missing.display().to_string()),
        "{}",
        stderr(&out)
    );
}

/// A data dir owned by a uid with no name in the workload (common in containers): the
/// pipelines run as that uid and gid, so the restored files are theirs, never root's.
#[test]
fn a_data_dir_owner_with_no_name_in_the_workload_is_run_as_by_its_ids() {
    const UID: u32 = 47_233;
    const GID: u32 = 47_233;
    assert!(
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(UID))
            .unwrap()
            .is_none(),
        "uid {UID} must have no passwd entry for this test"
    );
    let daemon = PebbleDaemon::start();
    let f = Fixture::new();
    let out = Command::new("chown")
        .arg("-R")
        .arg(format!("{UID}:{GID}"))
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
    let cli = || {
        let mut cmd = f.cmd();
        cmd.arg("--pebble")
            .arg(&socket)
            .arg("--aws")
            .arg(&aws)
            .env("RUST_LOG", "synapse_backup=info");
        cmd
    };
    let out = expect(0, &mut cli(), &["create"]);
    f.assert_no_secrets(&out);
    assert!(
        stderr(&out).contains("a uid with no name"),
        "the owner's ids come from the workload: {}",
        stderr(&out)
    );
    let before = f.tree.backed_up_files();
    fs::remove_file(
        walk(&f.tree.media)
            .into_iter()
            .find(|p| p.is_file())
            .unwrap(),
    )
    .unwrap();
    expect(0, &mut cli(), &["restore", "latest", "--yes"]);
    assert_eq!(f.tree.backed_up_files(), before, "the tree is restored");
    for path in walk(&f.tree.data) {
        let meta = fs::symlink_metadata(&path).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (UID, GID),
            "{} belongs to the workload's uid after the restore",
            path.display()
        );
    }
}

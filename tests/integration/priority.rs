//! The pipelines run at the priority the options ask for: create's snapshot and
//! `tar | gpg | aws`, and restore's download side, each seen from inside the pipeline.

use crate::support::{env, synapse_tree};

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use env::{Env, PASSPHRASE, require_tool};
use synapse_backup::{
    BackupOptions, IoPriority, Layout, LocalContainer, Priority, RestoreOptions,
    create_backup_with, restore_backup_with,
};
use synapse_tree::TreeSpec;

/// A layout whose `tar` is a wrapper that appends
/// `tar <first arg> <nice> <ionice -p output>` to a log, then runs the real tar.
fn recording_layout(env: &Env) -> (Layout, PathBuf) {
    require_tool("ionice", "sudo apt-get install -y util-linux");
    let bin = env.dir.path().join("prio-bin");
    fs::create_dir_all(&bin).unwrap();
    let log = env.dir.path().join("priorities.log");
    let tar = bin.join("tar");
    fs::write(
        &tar,
        format!(
            "#!/bin/bash\nread -r -a stat </proc/$$/stat\necho \"tar $1 ${{stat[18]}} $(ionice -p $$)\" >>'{}'\nexec tar \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&tar, fs::Permissions::from_mode(0o755)).unwrap();
    (
        env.layout.clone().tar(tar.to_string_lossy().into_owned()),
        log,
    )
}

/// This process's nice value: `nice -n` adds to the caller's.
fn own_nice() -> i32 {
    fs::read_to_string("/proc/self/stat")
        .unwrap()
        .rsplit(") ")
        .next()
        .unwrap()
        .split(' ')
        .nth(16)
        .unwrap()
        .parse()
        .unwrap()
}

fn niced(by: i32) -> i32 {
    (own_nice() + by).min(19)
}

fn lines(log: &PathBuf) -> Vec<String> {
    let text = fs::read_to_string(log).unwrap_or_default();
    fs::remove_file(log).ok();
    text.lines().map(str::to_string).collect()
}

/// Reads and clears the log: every line of `tar <mode>` must be `expected`, and tar must
/// have run in that mode at least once.
fn assert_every(log: &PathBuf, mode: &str, expected: &str) {
    let seen = lines(log);
    let runs: Vec<&String> = seen.iter().filter(|l| l.starts_with(mode)).collect();
    assert!(!runs.is_empty(), "no `{mode}` ran: {seen:?}");
    for line in runs {
        assert_eq!(line, expected, "{seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn create_and_restore_run_their_pipelines_at_the_asked_priority() {
    let env = Env::new(&TreeSpec {
        media_files: 3,
        ..TreeSpec::default()
    })
    .await;
    let (layout, log) = recording_layout(&env);
    let c = LocalContainer::new();
    let gentle = Priority::new(7, IoPriority::BestEffort(5)).unwrap();
    let report = create_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &layout,
        &BackupOptions::default().priority(gentle),
    )
    .await
    .unwrap();
    assert_every(
        &log,
        "tar --create",
        &format!("tar --create {} best-effort: prio 5", niced(7)),
    );

    restore_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &report.id,
        &layout,
        &RestoreOptions::default().priority(Priority::new(3, IoPriority::Idle).unwrap()),
    )
    .await
    .unwrap();
    assert_every(
        &log,
        "tar --extract",
        &format!("tar --extract {} idle", niced(3)),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_is_gentle_and_normal_changes_nothing() {
    let env = Env::new(&TreeSpec {
        media_files: 2,
        ..TreeSpec::default()
    })
    .await;
    let (layout, log) = recording_layout(&env);
    let c = LocalContainer::new();
    create_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &layout,
        &BackupOptions::default(),
    )
    .await
    .unwrap();
    assert_every(
        &log,
        "tar --create",
        &format!("tar --create {} best-effort: prio 7", niced(10)),
    );

    // `normal`: our own priority, whatever the test runner's; nothing is changed.
    let own_nice = own_nice();
    create_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &layout,
        &BackupOptions::default().priority("normal".parse::<Priority>().unwrap()),
    )
    .await
    .unwrap();
    // The ionice part is the runner's own class, whatever it is.
    let seen = lines(&log);
    let runs: Vec<&String> = seen
        .iter()
        .filter(|l| l.starts_with("tar --create"))
        .collect();
    assert!(!runs.is_empty(), "tar did not run: {seen:?}");
    for line in runs {
        assert!(
            line.starts_with(&format!("tar --create {own_nice} ")),
            "{line} (own nice {own_nice})"
        );
    }
}

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
    let seen = lines(&log);
    let creates: Vec<&String> = seen
        .iter()
        .filter(|l| l.starts_with("tar --create"))
        .collect();
    assert!(!creates.is_empty(), "tar did not run: {seen:?}");
    for line in &creates {
        assert_eq!(
            line.as_str(),
            format!("tar --create {} best-effort: prio 5", niced(7)),
            "{seen:?}"
        );
    }

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
    let seen = lines(&log);
    let extracts: Vec<&String> = seen
        .iter()
        .filter(|l| l.starts_with("tar --extract"))
        .collect();
    assert!(!extracts.is_empty(), "tar did not extract: {seen:?}");
    for line in &extracts {
        assert_eq!(
            line.as_str(),
            format!("tar --extract {} idle", niced(3)),
            "{seen:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn gentle_is_nice_10_and_the_default_changes_nothing() {
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
        &BackupOptions::default().priority(Priority::gentle()),
    )
    .await
    .unwrap();
    let seen = lines(&log);
    let line = seen
        .iter()
        .find(|l| l.starts_with("tar --create"))
        .unwrap_or_else(|| panic!("tar did not run: {seen:?}"));
    assert_eq!(
        line.as_str(),
        format!("tar --create {} best-effort: prio 7", niced(10))
    );

    // Our own priority, whatever the test runner's: nothing is changed.
    let own_nice = own_nice();
    create_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &layout,
        &BackupOptions::default(),
    )
    .await
    .unwrap();
    let seen = lines(&log);
    let line = seen
        .iter()
        .find(|l| l.starts_with("tar --create"))
        .unwrap_or_else(|| panic!("tar did not run: {seen:?}"));
    assert!(
        line.starts_with(&format!("tar --create {own_nice} ")),
        "{line} (own nice {own_nice})"
    );
}

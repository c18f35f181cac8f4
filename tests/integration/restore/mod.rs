//! list, verify, restore, delete and prune against real tools and an S3 server.

mod library;
mod reserve;
#[cfg(feature = "cli")]
mod trust;
mod zstd;

use crate::support::{env, synapse_tree};

use std::fs;
use std::path::PathBuf;

use env::{Env, PASSPHRASE, mount_tmpfs, sh};
use synapse_backup::{
    BackupError, BackupId, BackupOptions, BackupStatus, Layout, LocalContainer, RestoreOptions,
    S3Client, create_backup_with, delete_backup, list_backups, restore_backup_with,
    verify_backup_with,
};
use synapse_tree::{TreeSpec, change_db, dump_db, files_under, walk};

async fn backup(env: &Env, c: &LocalContainer) -> BackupId {
    env.create(c).await.unwrap().id
}

#[tokio::test(flavor = "multi_thread")]
async fn full_round_trip_restores_byte_for_byte() {
    let env = Env::new(&TreeSpec::default()).await;
    let c = LocalContainer::new();
    let db = env.tree.data.join("homeserver.db");
    let key = env.tree.data.join("example.test.signing.key");
    std::os::unix::fs::chown(&key, Some(65534), Some(65534)).unwrap();
    fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let before_files = env.tree.backed_up_files();
    let before_db = dump_db(&db);
    let id = backup(&env, &c).await;

    let client = S3Client::new(&env.params).unwrap();
    let list = list_backups(&client).await.unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(
        (list[0].id.clone(), list[0].status),
        (id.clone(), BackupStatus::Complete)
    );
    assert!(list[0].size > 0);

    let report = verify_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &id,
        &env.layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(report.status, BackupStatus::Complete);
    assert!(report.members > 10);
    assert!(
        report.authenticated_manifest,
        "a backup of ours carries its inner manifest"
    );

    // Mutate the live tree: delete media, change the db, add files, leave a stale WAL.
    fs::remove_dir_all(env.tree.media.join("local_thumbnails")).unwrap();
    let first_media = walk(&env.tree.media.join("local_content"))[0].clone();
    fs::write(&first_media, b"overwritten").unwrap();
    fs::write(
        env.tree.media.join("local_content/new-file"),
        b"added after the backup",
    )
    .unwrap();
    change_db(&db);
    assert_ne!(dump_db(&db), before_db);
    fs::write(env.tree.data.join("homeserver.db-wal"), b"stale wal").unwrap();

    let restored = restore_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &id,
        &env.layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap();
    assert!(
        restored
            .restored
            .contains(&"data/homeserver.db".to_string()),
        "{:?}",
        restored.restored
    );
    assert_eq!(
        env.tree.backed_up_files(),
        before_files,
        "media and keys must be restored byte for byte"
    );
    assert!(!env.tree.media.join("local_content/new-file").exists());
    assert!(
        !env.tree.data.join("homeserver.db-wal").exists(),
        "a stale WAL must not sit beside the restored snapshot"
    );
    assert_eq!(dump_db(&db), before_db);
    assert!(
        env.tree.media.join("remote_content").exists(),
        "remote media is left alone"
    );
    assert!(
        env.work_dirs_left().is_empty(),
        "{:?}",
        env.work_dirs_left()
    );

    delete_backup(&client, &id).await.unwrap();
    assert!(list_backups(&client).await.unwrap().is_empty());
    let e = delete_backup(&client, &id).await.unwrap_err();
    assert!(matches!(e, BackupError::NotFound { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reference_made_backup_lists_as_legacy_and_restores() {
    let env = Env::new(&TreeSpec::default()).await;
    let c = LocalContainer::new();
    let before = env.tree.backed_up_files();
    let before_db = dump_db(&env.tree.data.join("homeserver.db"));
    // The reference pipeline's shape: tar -c | gpg --symmetric (default compression) |
    // aws s3 cp -. Its members are `data/...` (tar strips the leading `/` of `/data`).
    let id = BackupId::generate();
    let key = format!("synapse/backups/{id}");
    let pass = env.dir.path().join("ref-pass");
    fs::write(&pass, PASSPHRASE).unwrap();
    sh(
        r#"cd "$1"
           tar -c data/example.test.signing.key data/homeserver.db data/media_store/local_content data/media_store/local_thumbnails |
             gpg --batch --no-symkey-cache --pinentry-mode loopback --passphrase-file "$2" --symmetric 2>/dev/null |
             aws s3 cp --only-show-errors --endpoint-url "$ENDPOINT" - "s3://$3/$4""#,
        &env,
        &[
            &env.tree.root.to_string_lossy(),
            &pass.to_string_lossy(),
            &env.bucket,
            &key,
        ],
    );
    let client = S3Client::new(&env.params).unwrap();
    let list = list_backups(&client).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].status, BackupStatus::Legacy);

    fs::remove_dir_all(env.tree.media.join("local_content")).unwrap();
    change_db(&env.tree.data.join("homeserver.db"));
    let report = restore_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &id,
        &env.layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(report.status, BackupStatus::Legacy);
    assert!(
        report.warnings.iter().any(|w| w.contains("legacy")),
        "{:?}",
        report.warnings
    );
    assert_eq!(env.tree.backed_up_files(), before);
    assert_eq!(dump_db(&env.tree.data.join("homeserver.db")), before_db);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_passphrase_flipped_byte_truncation_and_missing_manifest_are_told_apart() {
    let env = Env::new(&TreeSpec::default()).await;
    let c = LocalContainer::new();
    let id = backup(&env, &c).await;
    let object = env.bucket_dir().join(format!("synapse/backups/{id}"));
    let original = fs::read(&object).unwrap();

    let e = env
        .assert_restore_fails(
            &c,
            &id,
            "not the passphrase",
            &env.layout,
            &RestoreOptions::default(),
        )
        .await;
    assert!(matches!(e, BackupError::WrongPassphrase { .. }), "{e}");
    let v = verify_backup_with(
        &c,
        &env.params,
        "not the passphrase",
        &id,
        &env.layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(v, BackupError::WrongPassphrase { .. }), "{v}");

    let mut flipped = original.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    fs::write(&object, &flipped).unwrap();
    let e = env
        .assert_restore_fails(&c, &id, PASSPHRASE, &env.layout, &RestoreOptions::default())
        .await;
    assert!(
        matches!(&e, BackupError::Corrupted { reason, .. } if reason.contains("SHA-256")),
        "{e}"
    );
    let v = verify_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &id,
        &env.layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(v, BackupError::Corrupted { .. }), "{v}");

    fs::write(&object, &original[..original.len() - 1000]).unwrap();
    let e = env
        .assert_restore_fails(&c, &id, PASSPHRASE, &env.layout, &RestoreOptions::default())
        .await;
    assert!(
        matches!(&e, BackupError::Corrupted { reason, .. } if reason.contains("truncated")),
        "{e}"
    );

    fs::write(&object, &original).unwrap();
    verify_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &id,
        &env.layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap();
    fs::remove_file(
        env.bucket_dir()
            .join(format!("synapse/backups/{id}.manifest.json")),
    )
    .unwrap();
    let client = S3Client::new(&env.params).unwrap();
    assert_eq!(
        list_backups(&client).await.unwrap()[0].status,
        BackupStatus::Incomplete
    );
    let v = verify_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &id,
        &env.layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(v, BackupError::MissingManifest { .. }), "{v}");
    let e = env
        .assert_restore_fails(&c, &id, PASSPHRASE, &env.layout, &RestoreOptions::default())
        .await;
    assert!(matches!(e, BackupError::MissingManifest { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_space_for_staging_leaves_live_data() {
    let env = Env::new(&TreeSpec {
        media_files: 20,
        media_bytes: 8 << 20,
        ..TreeSpec::default()
    })
    .await;
    let c = LocalContainer::new();
    let id = backup(&env, &c).await;
    // Staging on a 4 MiB tmpfs (the layout's work dir): too small for 8 MiB of media.
    let _guard = env.small_tmpfs("small", "4m");
    let layout = env.layout.clone().work_dir(Some("/small".into()));
    let e = env
        .assert_restore_fails(&c, &id, PASSPHRASE, &layout, &RestoreOptions::default())
        .await;
    assert!(matches!(e, BackupError::InsufficientSpace { .. }), "{e}");
    assert!(e.to_string().contains("free space"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn malicious_archives_are_refused_and_write_nothing_outside_staging() {
    let env = Env::new(&TreeSpec::default()).await;
    let c = LocalContainer::new();
    let client = S3Client::new(&env.params).unwrap();
    let pass = env.dir.path().join("p");
    fs::write(&pass, PASSPHRASE).unwrap();
    let victim = env.dir.path().join("victim");
    let cases = [
        // `..` climbing out of the staging dir.
        (
            "dotdot",
            format!(
                "--transform=s,^payload,data/../../../../../..{},",
                victim.display()
            ),
        ),
        // An absolute member.
        ("absolute", "--absolute-names".to_string()),
    ];
    for (i, (name, transform)) in cases.iter().enumerate() {
        let src = env.dir.path().join(format!("evil-{name}"));
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("payload"), b"evil").unwrap();
        let id = BackupId::generate();
        let key = format!("synapse/backups/{id}");
        let member = if *name == "absolute" {
            victim.to_string_lossy().into_owned()
        } else {
            "payload".into()
        };
        if *name == "absolute" {
            fs::copy(src.join("payload"), &victim).unwrap();
        }
        sh(
            r#"cd "$1" && tar -c "$2" "$3" | gpg --batch --pinentry-mode loopback --passphrase-file "$4" --symmetric 2>/dev/null |
               aws s3 cp --only-show-errors --endpoint-url "$ENDPOINT" - "s3://$5/$6""#,
            &env,
            &[
                &src.to_string_lossy(),
                transform,
                &member,
                &pass.to_string_lossy(),
                &env.bucket,
                &key,
            ],
        );
        if *name == "absolute" {
            fs::remove_file(&victim).unwrap();
        }
        let e = env
            .assert_restore_fails(&c, &id, PASSPHRASE, &env.layout, &RestoreOptions::default())
            .await;
        assert!(
            matches!(e, BackupError::UnsafeMember { .. }),
            "case {i} {name}: {e}"
        );
        assert!(!victim.exists(), "case {name} wrote outside staging");
    }
    assert_eq!(list_backups(&client).await.unwrap().len(), 2);
}

/// A container whose `synapse` service is a real process that refuses to start when
/// `data/zz.key` says `poison`, and records its pid.
fn with_service(env: &Env) -> (LocalContainer, Layout, PathBuf) {
    let pidfile = env.dir.path().join("service.pid");
    let script = r#"[ "$(cat "$1")" != poison ] || exit 1; echo $$ >"$2"; exec sleep 600"#;
    let key = env.tree.data.join("zz.key");
    let (c, layout) = with_service_running(env, script, &[key.as_path(), pidfile.as_path()]);
    (c, layout, pidfile)
}

/// A container whose `synapse` service is `bash -c script bash args…` (stopped with a
/// 2 s grace period), and the env's layout with that service.
fn with_service_running(
    env: &Env,
    script: &str,
    args: &[&std::path::Path],
) -> (LocalContainer, Layout) {
    let supervisor = synapse_backup::ProcessSupervisor::new()
        .with_grace_period(std::time::Duration::from_secs(2));
    let mut argv = vec![
        "bash".to_string(),
        "-c".into(),
        script.into(),
        "bash".into(),
    ];
    argv.extend(args.iter().map(|a| a.to_string_lossy().into_owned()));
    supervisor.add("synapse", argv);
    let layout = env.layout.clone().service(Some("synapse".into()));
    (LocalContainer::with_services(supervisor), layout)
}

/// A restore of `id` in `layout` through `c` with the default options.
async fn restore(
    env: &Env,
    c: &LocalContainer,
    id: &BackupId,
    layout: &Layout,
) -> Result<synapse_backup::RestoreReport, BackupError> {
    restore_backup_with(
        c,
        &env.params,
        PASSPHRASE,
        id,
        layout,
        &RestoreOptions::default(),
    )
    .await
}

/// [`restore`], which must fail: its error.
async fn restore_fails(
    env: &Env,
    c: &LocalContainer,
    id: &BackupId,
    layout: &Layout,
) -> BackupError {
    restore(env, c, id, layout).await.unwrap_err()
}

/// A failed swap was undone: every live file of `before` is back unchanged and none
/// added, no work dir is left, and the service runs again.
async fn assert_rolled_back(
    env: &Env,
    c: &LocalContainer,
    before: &std::collections::BTreeMap<PathBuf, Vec<u8>>,
) {
    use synapse_backup::Container;
    let after = files_under(&env.tree.data);
    let lost: Vec<_> = before
        .iter()
        .filter(|(path, bytes)| after.get(*path) != Some(bytes))
        .map(|(path, _)| path)
        .collect();
    assert!(lost.is_empty(), "live files lost or changed: {lost:?}");
    assert_eq!(after.len(), before.len(), "files added");
    assert!(
        env.work_dirs_left().is_empty(),
        "{:?}",
        env.work_dirs_left()
    );
    assert!(
        c.is_running("synapse").await.unwrap(),
        "the service runs again"
    );
}

/// The error of a restore of `id` into the env's layout with `reserve_mib` MiB kept
/// free (`space_reserve_mib`), which must fail.
async fn restore_err(
    env: &Env,
    c: &LocalContainer,
    id: &BackupId,
    reserve_mib: u32,
) -> BackupError {
    restore_backup_with(
        c,
        &env.params,
        PASSPHRASE,
        id,
        &env.layout,
        &RestoreOptions::default().space_reserve_mib(reserve_mib),
    )
    .await
    .unwrap_err()
}

/// A backup of the env's tree in `layout` through `c`.
async fn backup_in(env: &Env, c: &LocalContainer, layout: &Layout) -> BackupId {
    create_backup_with(
        c,
        &env.params,
        PASSPHRASE,
        layout,
        &BackupOptions::default(),
    )
    .await
    .unwrap()
    .id
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_service_is_stopped_for_the_swap_and_started_again() {
    use synapse_backup::Container;
    let env = Env::new(&TreeSpec::default()).await;
    fs::write(env.tree.data.join("zz.key"), "fine").unwrap();
    let (c, layout, pidfile) = with_service(&env);
    let svc = ["synapse".to_string()];
    let id = backup_in(&env, &c, &layout).await;
    c.start(&svc).await.unwrap();
    let pid_before = fs::read_to_string(&pidfile).unwrap();
    restore_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &id,
        &layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap();
    assert!(
        c.is_running("synapse").await.unwrap(),
        "the service must run after the restore"
    );
    assert_ne!(
        fs::read_to_string(&pidfile).unwrap(),
        pid_before,
        "the service must have been restarted"
    );
    // A stopped service stays stopped.
    c.stop(&svc).await.unwrap();
    restore_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &id,
        &layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap();
    assert!(!c.is_running("synapse").await.unwrap());
}

/// A restore's report says where its time went: the phases follow one another (they
/// add up to its duration) and the service's stop, here a service that ignores
/// SIGTERM and is killed after the supervisor's 2 s grace, is the swap's.
#[tokio::test(flavor = "multi_thread")]
async fn a_restore_reports_its_time_phase_by_phase() {
    use std::time::Duration;
    use synapse_backup::{Container, ExtractTarget, extract_backup_with};
    let env = Env::new(&TreeSpec::default()).await;
    let pidfile = env.dir.path().join("service.pid");
    let ignores_term = r#"trap '' TERM; echo $$ >"$1"; while :; do sleep 0.05; done"#;
    let (c, layout) = with_service_running(&env, ignores_term, &[pidfile.as_path()]);
    let id = backup_in(&env, &c, &layout).await;
    c.start(&["synapse".to_string()]).await.unwrap();
    let report = restore_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &id,
        &layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap();
    assert!(c.is_running("synapse").await.unwrap());
    let p = report.phases;
    let close = |total: Duration, duration: Duration| {
        total <= duration && duration - total < Duration::from_millis(100)
    };
    assert!(
        close(p.total(), report.duration),
        "{p} against {:?}",
        report.duration
    );
    assert!(
        p.swap >= Duration::from_secs(2),
        "the service's stop is the swap's: {p}"
    );
    // The phases add up to no more than the duration, so the stop's 2 s, in the swap,
    // are in no other phase (a bound on each other phase's time would fail on a busy
    // machine, where a fetch alone can take more than 2 s).
    for (name, d) in p.named() {
        assert!(d > Duration::ZERO, "{name} took no time: {p}");
    }

    let target = env.dir.path().join("extracted");
    let report = extract_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &id,
        &layout,
        &ExtractTarget::new(target.to_string_lossy().into_owned()),
        &RestoreOptions::default(),
    )
    .await
    .unwrap();
    let p = report.phases;
    assert!(
        close(p.total(), report.duration),
        "{p} against {:?}",
        report.duration
    );
    for (name, d) in p.named() {
        assert!(d > Duration::ZERO, "{name} took no time: {p}");
    }
    c.stop(&["synapse".to_string()]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_that_fails_on_the_restored_data_gets_the_old_data_back_and_runs() {
    use synapse_backup::{Container, Stage};
    let env = Env::new(&TreeSpec::default()).await;
    // The backup carries a key the service refuses to start with.
    fs::write(env.tree.data.join("zz.key"), "poison").unwrap();
    let (c, layout, _) = with_service(&env);
    let id = backup_in(&env, &c, &layout).await;
    fs::write(env.tree.data.join("zz.key"), "fine").unwrap();
    change_db(&env.tree.data.join("homeserver.db"));
    c.start(&["synapse".to_string()]).await.unwrap();
    let before = files_under(&env.tree.data);
    let e = restore_fails(&env, &c, &id, &layout).await;
    assert!(
        matches!(
            &e,
            BackupError::StageFailed {
                stage: Stage::Service,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("did not start") && e.to_string().contains("put back"),
        "{e}"
    );
    assert_eq!(
        files_under(&env.tree.data),
        before,
        "the previous live data must be back"
    );
    assert!(
        c.is_running("synapse").await.unwrap(),
        "the service must run again on the previous data"
    );
    assert!(env.work_dirs_left().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_swap_is_rolled_back() {
    let env = Env::new(&TreeSpec::default()).await;
    let c = LocalContainer::new();
    let id = backup(&env, &c).await;
    // The media store's parent cannot take the staged dirs: make `local_thumbnails`
    // un-replaceable by putting an immutable-ish obstacle: a non-empty dir where the
    // swap must create the parent of a unit. Simplest real fault: remove the media
    // store and put a regular file in its place, so `mkdir -p` of the parent fails
    // after the keys and database were already swapped.
    fs::remove_dir_all(&env.tree.media).unwrap();
    fs::write(&env.tree.media, b"not a dir").unwrap();
    change_db(&env.tree.data.join("homeserver.db"));
    let e = env
        .assert_restore_fails(&c, &id, PASSPHRASE, &env.layout, &RestoreOptions::default())
        .await;
    assert!(
        matches!(
            &e,
            BackupError::StageFailed {
                stage: synapse_backup::Stage::Swap,
                ..
            }
        ),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_users_copy_beside_the_database_is_restored_not_dropped_as_a_sidecar() {
    let env = Env::new(&TreeSpec::default()).await;
    let c = LocalContainer::new();
    let copy = env.tree.data.join("homeserver.db-before-upgrade");
    fs::write(&copy, b"the user's copy before an upgrade").unwrap();
    let id = backup(&env, &c).await;
    fs::write(&copy, b"changed after the backup").unwrap();
    // SQLite's own sidecars are still set aside.
    fs::write(
        env.tree.data.join("homeserver.db-journal"),
        b"stale journal",
    )
    .unwrap();
    fs::write(
        env.tree.data.join("homeserver.db-mj1A2B3C9D4"),
        b"stale super-journal",
    )
    .unwrap();
    let restored = restore_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &id,
        &env.layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        fs::read(&copy).ok().as_deref(),
        Some(&b"the user's copy before an upgrade"[..]),
        "restored: {:?}, dropped: {:?}",
        restored.restored,
        restored.dropped
    );
    assert!(
        restored
            .restored
            .contains(&"data/homeserver.db-before-upgrade".to_string()),
        "{:?}",
        restored.restored
    );
    let mut dropped = restored.dropped.clone();
    dropped.sort();
    assert_eq!(
        dropped,
        vec![
            "data/homeserver.db-journal".to_string(),
            "data/homeserver.db-mj1A2B3C9D4".to_string()
        ]
    );
    assert!(!env.tree.data.join("homeserver.db-journal").exists());
}

/// A work dir as a killed restore (a process now gone) leaves it: its owner record, an
/// SSE-C key file, the aws config and decrypted staging; with `swap_begun`, the live
/// signing key it had set aside and the swap's logs.
fn killed_restore_dir(env: &Env, name: &str, swap_begun: bool) -> PathBuf {
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let host = String::from_utf8(
        std::process::Command::new("hostname")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let dir = env
        .tree
        .data
        .join(format!(".synapse-backup-restore.{name}"));
    fs::create_dir_all(dir.join("stage/data")).unwrap();
    fs::create_dir_all(dir.join("gnupg")).unwrap();
    fs::write(
        dir.join("owner"),
        format!(
            "host {}\npid {pid}\nstart 1\nboot {}\n",
            host.trim(),
            boot.trim()
        ),
    )
    .unwrap();
    fs::write(dir.join("sse-c.key"), [7u8; 32]).unwrap();
    fs::write(dir.join("aws-config"), "[default]\n").unwrap();
    fs::write(dir.join("stage/data/homeserver.db"), "decrypted database").unwrap();
    if swap_begun {
        fs::create_dir_all(dir.join("aside/data")).unwrap();
        fs::write(
            dir.join("aside/data/example.test.signing.key"),
            "the previous live key",
        )
        .unwrap();
        // A live dir that was read-only keeps its mode where it was set aside: the
        // roll-back puts it back as it was.
        fs::create_dir_all(dir.join("aside/data/media_store/local_content/ro")).unwrap();
        fs::set_permissions(
            dir.join("aside/data/media_store/local_content/ro"),
            std::os::unix::fs::PermissionsExt::from_mode(0o555),
        )
        .unwrap();
        fs::write(
            dir.join("aside.log"),
            "data/example.test.signing.key\0data/media_store/local_content/ro\0",
        )
        .unwrap();
        fs::write(dir.join("placed.log"), "").unwrap();
    }
    // A read-only dir from the archive must not stop the sweep.
    fs::create_dir_all(dir.join("stage/data/media_store/local_content/ro")).unwrap();
    fs::set_permissions(
        dir.join("stage/data/media_store/local_content/ro"),
        std::os::unix::fs::PermissionsExt::from_mode(0o555),
    )
    .unwrap();
    dir
}

/// The next restore sweeps what killed restores left: a dir with nothing set aside goes
/// entirely; one whose swap had begun loses its SSE-C key, aws config and decrypted
/// staging but keeps the set-aside live files (the only copy of the previous data) and
/// its logs, and the report says how to roll back.
#[tokio::test(flavor = "multi_thread")]
async fn the_next_restore_sweeps_a_killed_restores_keys_and_staging_and_keeps_what_it_set_aside() {
    let env = Env::new(&TreeSpec {
        media_files: 4,
        ..TreeSpec::default()
    })
    .await;
    let c = LocalContainer::new();
    let id = backup(&env, &c).await;
    let plain = killed_restore_dir(&env, "Plain00000", false);
    let half = killed_restore_dir(&env, "Half000000", true);
    let report = restore_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &id,
        &env.layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap();
    assert!(!plain.exists(), "nothing set aside: removed");
    for gone in ["sse-c.key", "aws-config", "stage", "gnupg"] {
        assert!(!half.join(gone).exists(), "{gone} is left");
    }
    assert_eq!(
        fs::read_to_string(half.join("aside/data/example.test.signing.key")).unwrap(),
        "the previous live key"
    );
    assert!(half.join("aside.log").exists() && half.join("owner").exists());
    let mode = |p: &std::path::Path| {
        std::os::unix::fs::PermissionsExt::mode(&fs::metadata(p).unwrap().permissions()) & 0o7777
    };
    let read_only = half.join("aside/data/media_store/local_content/ro");
    assert_eq!(
        mode(&read_only),
        0o555,
        "the set-aside live dir's mode changed"
    );
    let advice = report
        .warnings
        .iter()
        .find(|w| w.contains(&format!("{}/aside", half.display())))
        .unwrap_or_else(|| panic!("no roll-back advice: {:?}", report.warnings));
    assert!(advice.contains("roll back"), "{advice}");
    // A set-aside copy that may be partial is merged over what is still live, never
    // put in its place.
    assert!(
        advice.contains("merging") && advice.contains("never replacing"),
        "{advice}"
    );
    // Only the kept dir remains, and a later run keeps it too.
    assert_eq!(
        env.work_dirs_left(),
        vec![half.file_name().unwrap().to_string_lossy().into_owned()]
    );
    env.create(&c).await.unwrap();
    assert!(half.join("aside/data/example.test.signing.key").exists());
}

/// Moves the env's data dir onto a tmpfs of `size` of its own (its files copied with
/// their modes), mounted until the guard drops.
fn data_dir_on_tmpfs(env: &Env, size: &str) -> env::Unmount {
    let saved = env.tree.root.join("data.saved");
    fs::rename(&env.tree.data, &saved).unwrap();
    fs::create_dir(&env.tree.data).unwrap();
    let unmount = mount_tmpfs(&env.tree.data, size);
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", saved.display()))
        .arg(&env.tree.data)
        .status()
        .unwrap();
    assert!(copied.success());
    unmount
}

/// Resizes the tmpfs `data_dir_on_tmpfs` mounted so that `free` bytes are free beside
/// what it holds.
fn leave_free(env: &Env, free: u64) {
    let st = nix::sys::statvfs::statvfs(&env.tree.data).unwrap();
    let used = (st.blocks() - st.blocks_free()) * st.fragment_size();
    let resized = std::process::Command::new("mount")
        .args(["-o", &format!("remount,size={}k", (used + free) >> 10)])
        .arg(&env.tree.data)
        .status()
        .unwrap();
    assert!(resized.success());
}

/// Moves the media store onto a tmpfs of `size` of its own at `<root>/media-volume`,
/// the live path a symlink to it (as a charm with a media volume has it); returns the
/// volume's dir and its guard.
fn media_on_its_own_volume(env: &Env, size: &str) -> (PathBuf, env::Unmount) {
    let elsewhere = env.tree.root.join("media-volume");
    fs::create_dir(&elsewhere).unwrap();
    let unmount = mount_tmpfs(&elsewhere, size);
    sh(
        r#"cp -a "$1/." "$2" && rm -rf "$1" && ln -s "$2" "$1""#,
        env,
        &[
            &env.tree.media.to_string_lossy(),
            &elsewhere.to_string_lossy(),
        ],
    );
    (elsewhere, unmount)
}

/// The live media store, on another volume, has gained many small files since the
/// backup (a homeserver's uploads and thumbnails): setting it aside copies what they
/// take on disk (a 4 KiB block each, at least one per directory, some 50 MB here for
/// 6,000 bytes) onto the data volume, which after staging has 16 MiB free. The
/// preflight counts blocks, not bytes, and refuses before anything is stopped or
/// moved; before, it counted the bytes (`du -b`), passed, and the swap's copy filled
/// the data volume and failed after the service was stopped.
#[tokio::test(flavor = "multi_thread")]
async fn setting_aside_small_files_from_another_volume_counts_their_blocks() {
    let env = Env::new(&TreeSpec::default()).await;
    let c = LocalContainer::new();
    let (elsewhere, _media_volume) = media_on_its_own_volume(&env, "256m");
    let id = backup(&env, &c).await;
    // Since the backup: 6,000 one-byte files in 3,000 shard dirs.
    for i in 0..6000 {
        let dir = elsewhere.join(format!("local_content/n{:02x}/{:04x}", i % 256, i / 2));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("m{i}")), "x").unwrap();
    }
    let blocks = 6000 * 4096;
    let _unmount = data_dir_on_tmpfs(&env, "512m");
    // The data volume: its live files, staging (the backup's 4 MiB of media and an
    // eighth, with room to spare), then 16 MiB.
    leave_free(&env, (8 << 20) + (16 << 20));
    let before = files_under(&env.tree.data);
    let e = restore_err(&env, &c, &id, 0).await;
    assert!(
        matches!(&e, BackupError::InsufficientSpace { path, needed, .. }
            if path.ends_with("/data") && *needed >= blocks),
        "{e:?}"
    );
    assert_eq!(files_under(&env.tree.data), before, "live data untouched");
    assert!(env.work_dirs_left().is_empty());
}

/// The data dir's volume fills up once the service is stopped (its last writes on
/// shutdown), so the swap cannot log what it sets aside: it puts the file back, fails,
/// and every live file is where it was. Before, the first live file stayed moved aside
/// when its log line failed to be written, so the undo did not know to move it back and
/// the cleanup removed it with the work dir.
#[tokio::test(flavor = "multi_thread")]
async fn a_volume_that_fills_when_the_service_stops_loses_no_live_file() {
    use synapse_backup::{Container, Stage};
    let env = Env::new(&TreeSpec {
        media_files: 8,
        ..TreeSpec::default()
    })
    .await;
    let _unmount = data_dir_on_tmpfs(&env, "64m");
    // On SIGTERM the service writes until its volume is full, then exits.
    let fill = env.tree.data.join("shutdown.log");
    let script = r#"trap 'head -c 1G /dev/zero >"$1" 2>/dev/null; exit 0' TERM; sleep 600 & wait"#;
    let (c, layout) = with_service_running(&env, script, &[fill.as_path()]);
    let id = backup_in(&env, &c, &layout).await;
    let before = files_under(&env.tree.data);
    c.start(&["synapse".to_string()]).await.unwrap();
    let e = restore_fails(&env, &c, &id, &layout).await;
    assert!(
        matches!(&e, BackupError::StageFailed { stage: Stage::Swap, stderr, .. } if stderr.contains("No space left")),
        "{e}"
    );
    assert!(
        fill.metadata().unwrap().len() > 0,
        "the volume was not filled"
    );
    fs::remove_file(&fill).unwrap();
    assert_rolled_back(&env, &c, &before).await;
}

/// The media store is on another volume, so setting it aside is a copy onto the data
/// volume, and the service's last writes on shutdown leave that volume 2 MiB free: the
/// copy is cut short. The copy cut short is removed, the swap undone, every live file
/// is where it was and the service runs again. Before, mv left the copy cut short in
/// the set-aside dir, the undo found it there, and the restore ended "rollback failed"
/// with the service left stopped.
#[tokio::test(flavor = "multi_thread")]
async fn a_set_aside_copy_cut_short_by_a_full_volume_is_undone() {
    use synapse_backup::{Container, Stage};
    let env = Env::new(&TreeSpec::default()).await;
    let (_, _media_volume) = media_on_its_own_volume(&env, "64m");
    let _unmount = data_dir_on_tmpfs(&env, "64m");
    // On SIGTERM the service writes until 2 MiB of its volume are left, then exits.
    let fill = env.tree.data.join("shutdown.log");
    let script = r#"trap 'avail=$(df -B1 --output=avail "$2" | tail -n 1); head -c $((avail - 2097152)) /dev/zero >"$1"; exit 0' TERM; sleep 600 & wait"#;
    let (c, layout) =
        with_service_running(&env, script, &[fill.as_path(), env.tree.data.as_path()]);
    let id = backup_in(&env, &c, &layout).await;
    let before = files_under(&env.tree.data);
    c.start(&["synapse".to_string()]).await.unwrap();
    let e = restore_fails(&env, &c, &id, &layout).await;
    assert!(
        matches!(&e, BackupError::StageFailed { stage: Stage::Swap, stderr, .. }
            if stderr.contains("No space left") && !stderr.contains("rollback failed")),
        "{e}"
    );
    assert!(
        fill.metadata().unwrap().len() > 0,
        "the volume was not filled"
    );
    fs::remove_file(&fill).unwrap();
    assert_rolled_back(&env, &c, &before).await;
}

/// A mount point inside the live media store (a volume of its own), which is on
/// another volume than the data: setting it aside copies it onto the data volume, then
/// removes it, and the removal stops at the mount point ("Device or resource busy").
/// The source is made whole again from the copy and the swap undone: every live file is
/// where it was. Before, mv's removal failed the same way, its whole copy stayed in the
/// set-aside dir with the live media store mostly removed, and the restore ended
/// "rollback failed" with the live files left set aside.
#[tokio::test(flavor = "multi_thread")]
async fn a_set_aside_whose_removal_stops_at_a_mount_point_is_made_whole() {
    use synapse_backup::Stage;
    let env = Env::new(&TreeSpec::default()).await;
    let c = LocalContainer::new();
    let (elsewhere, _media_volume) = media_on_its_own_volume(&env, "64m");
    let id = backup(&env, &c).await;
    let inner = elsewhere.join("local_content/zz");
    fs::create_dir_all(&inner).unwrap();
    let _inner_volume = mount_tmpfs(&inner, "4m");
    fs::write(inner.join("uploaded"), "media on a volume of its own").unwrap();
    let before = files_under(&env.tree.data);
    let e = restore_err(&env, &c, &id, 0).await;
    assert!(
        matches!(&e, BackupError::StageFailed { stage: Stage::Swap, stderr, .. }
            if stderr.contains("busy") && !stderr.contains("rollback failed")),
        "{e}"
    );
    assert_eq!(
        files_under(&env.tree.data),
        before,
        "the live files are where they were"
    );
    assert!(
        env.work_dirs_left().is_empty(),
        "{:?}",
        env.work_dirs_left()
    );
}

/// The service refuses the restored data and the roll-back then cannot finish (a file
/// is still in the set-aside dir: here the failed start put one there): the service is
/// left stopped, not started on what the roll-back left, and the work dir is kept.
#[tokio::test(flavor = "multi_thread")]
async fn a_roll_back_that_fails_after_a_failed_start_leaves_the_service_stopped() {
    use synapse_backup::{Container, Stage};
    let env = Env::new(&TreeSpec::default()).await;
    fs::write(env.tree.data.join("zz.key"), "poison").unwrap();
    let script = r#"if [ "$(cat "$1")" = poison ]; then for d in "$2"/.synapse-backup-restore.*; do mkdir -p "$d/aside/planted" && echo x >"$d/aside/planted/x"; done; exit 1; fi; exec sleep 600"#;
    let key = env.tree.data.join("zz.key");
    let (c, layout) = with_service_running(&env, script, &[key.as_path(), env.tree.data.as_path()]);
    let id = backup_in(&env, &c, &layout).await;
    fs::write(&key, "fine").unwrap();
    c.start(&["synapse".to_string()]).await.unwrap();
    let before = files_under(&env.tree.data);
    let e = restore_fails(&env, &c, &id, &layout).await;
    assert!(
        matches!(&e, BackupError::StageFailed { stage: Stage::Service, stderr, .. } if stderr.contains("rollback failed") && stderr.contains("left stopped")),
        "{e}"
    );
    assert!(!c.is_running("synapse").await.unwrap(), "started again");
    assert_eq!(
        files_under(&env.tree.data),
        before,
        "the live files are back"
    );
    let kept = env.work_dirs_left();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_only_roll_back_kept(&env.tree.data.join(&kept[0]));
}

/// A swap whose undo cannot put everything back (exit 31; here something stands where
/// the live signing key is to be set aside, put there in the work dir as the service
/// stops) leaves the service stopped, keeps the work dir and its logs, and says where
/// the set-aside files are; the live files are as they were. Before, the service was
/// started again on whatever the undo had left.
#[tokio::test(flavor = "multi_thread")]
async fn a_swap_whose_undo_fails_leaves_the_service_stopped_and_keeps_its_work_dir() {
    use synapse_backup::{Container, Stage};
    let env = Env::new(&TreeSpec {
        media_files: 4,
        ..TreeSpec::default()
    })
    .await;
    let script = r#"trap 'for d in "$1"/.synapse-backup-restore.*; do mkdir -p "$d/aside/data/example.test.signing.key" && echo planted >"$d/aside/data/example.test.signing.key/x"; done; exit 0' TERM; sleep 600 & wait"#;
    let (c, layout) = with_service_running(&env, script, &[env.tree.data.as_path()]);
    let id = backup_in(&env, &c, &layout).await;
    let before = files_under(&env.tree.data);
    c.start(&["synapse".to_string()]).await.unwrap();
    let e = restore_fails(&env, &c, &id, &layout).await;
    assert!(
        matches!(&e, BackupError::StageFailed { stage: Stage::Swap, exit_code: 31, stderr } if stderr.contains("synapse was left stopped")),
        "{e}"
    );
    assert!(!c.is_running("synapse").await.unwrap(), "started again");
    assert_eq!(files_under(&env.tree.data), before, "live data changed");
    let kept = env.work_dirs_left();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(e.to_string().contains(&kept[0]), "{e}");
    assert_only_roll_back_kept(&env.tree.data.join(&kept[0]));
}

/// A kept restore work dir holds what a roll-back needs and nothing else: no keys,
/// aws config, gpg home or decrypted staging.
fn assert_only_roll_back_kept(dir: &std::path::Path) {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in &names {
        assert!(
            ["aside", "aside.log", "owner", "placed.log", "swap.list"].contains(&name.as_str()),
            "{name} kept in {}: {names:?}",
            dir.display()
        );
    }
    assert!(names.iter().any(|n| n == "aside.log"), "{names:?}");
}

/// The data dir on a small volume of its own and the media store a symlink to another
/// volume: staging fits, but setting the live media aside is a copy onto the data
/// volume, which does not. The restore says so before anything is stopped or moved.
#[tokio::test(flavor = "multi_thread")]
async fn a_media_store_on_another_volume_counts_the_set_aside_copy() {
    let env = Env::new(&TreeSpec {
        media_files: 16,
        media_bytes: 8 << 20,
        ..TreeSpec::default()
    })
    .await;
    let c = LocalContainer::new();
    let elsewhere = env.tree.root.join("media-volume");
    fs::rename(&env.tree.media, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &env.tree.media).unwrap();
    let id = backup(&env, &c).await;
    // Now put the data dir (with the symlink) on a 14 MiB volume.
    let _unmount = data_dir_on_tmpfs(&env, "14m");
    let before = files_under(&env.tree.data);
    let e = restore_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &id,
        &env.layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, BackupError::InsufficientSpace { path, .. } if path.ends_with("/data")),
        "{e}"
    );
    assert_eq!(files_under(&env.tree.data), before, "live data untouched");
    assert!(env.work_dirs_left().is_empty());
}

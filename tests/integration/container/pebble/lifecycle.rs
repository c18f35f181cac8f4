//! The whole life cycle through `PebbleContainer` and a real Pebble daemon: create, list,
//! verify, restore (the `synapse` service stopped and started by Pebble), extract and
//! prune, the pipelines running as the non-root workload user `nobody`, against the
//! in-process S3 server; and no secret in Pebble's change records or state file.
//!
//! Needs `pebble` on PATH: `source scripts/pebble.sh` installs it
//! (`go install github.com/canonical/pebble/cmd/pebble@v1.32.1`).
#![cfg(feature = "pebble")]

use crate::support::{env, pebble_daemon, synapse_tree};

use std::fs;

use env::{Env, PASSPHRASE, sh};
use pebble_daemon::{LAYER, PebbleDaemon};
use synapse_backup::{
    BackupStatus, Container, ExtractTarget, Layout, PebbleContainer, RestoreOptions,
    RetentionPolicy, S3Client, create_backup_with, extract_backup_with, list_backups,
    prune_backups, restore_backup_with, verify_backup_with,
};
use synapse_tree::{TreeSpec, walk};

/// The tree handed to `nobody` (the workload user) and a layout running as them, with
/// Pebble's `synapse` service.
fn workload(env: &Env) -> Layout {
    sh(
        r#"chown -R nobody:nogroup "$1" && chmod 0755 "$2""#,
        env,
        &[
            &env.tree.root.to_string_lossy(),
            &env.dir.path().to_string_lossy(),
        ],
    );
    env.layout
        .clone()
        .user(Some("nobody".into()))
        .group(Some("nogroup".into()))
        .service(Some("synapse".into()))
}

fn work_dirs_left(env: &Env) -> Vec<String> {
    fs::read_dir(&env.tree.data)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".synapse-backup-"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_whole_life_cycle_runs_through_pebble_as_the_workload_user() {
    let daemon = PebbleDaemon::start();
    let c = PebbleContainer::new(daemon.socket());
    let env = Env::new(&TreeSpec::default()).await;
    let layout = workload(&env);
    let before = env.tree.backed_up_files();

    let first = create_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &layout,
        &synapse_backup::BackupOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("create through pebble: {e}"));
    let client = S3Client::new(&env.params).unwrap();
    let listed = list_backups(&client).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].status, BackupStatus::Complete);

    let verified = verify_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &first.id,
        &layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("verify through pebble: {e}"));
    assert_eq!(verified.status, BackupStatus::Complete);

    // Synapse runs (under Pebble); the tree changes; restore stops it, swaps, starts it.
    let synapse = ["synapse".to_string()];
    c.start(&synapse).await.unwrap();
    let media = walk(&env.tree.media.join("local_content"))[0].clone();
    fs::write(&media, b"changed after the backup").unwrap();
    let restored = restore_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &first.id,
        &layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("restore through pebble: {e}"));
    assert!(!restored.restored.is_empty(), "{restored:?}");
    assert_eq!(env.tree.backed_up_files(), before, "restored byte for byte");
    assert!(
        c.is_running("synapse").await.unwrap(),
        "restore starts the service it stopped"
    );
    assert!(
        daemon
            .get("/v1/changes?select=all")
            .contains("\"kind\":\"stop\""),
        "Pebble stopped the service during the restore"
    );

    let out = env.dir.path().join("out");
    fs::create_dir(&out).unwrap();
    std::os::unix::fs::chown(&out, Some(65534), Some(65534)).unwrap();
    let target = out.join("extracted");
    let extracted = extract_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &first.id,
        &layout,
        &ExtractTarget::new(target.to_string_lossy().into_owned()),
        &RestoreOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("extract through pebble: {e}"));
    let _ = extracted;
    assert!(
        !walk(&target).is_empty(),
        "extract wrote the backup's files under {}",
        target.display()
    );

    let second = create_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &layout,
        &synapse_backup::BackupOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("second create: {e}"));
    let pruned = prune_backups(
        &client,
        &RetentionPolicy {
            keep_last: Some(1),
            older_than_days: Some(0),
            ..RetentionPolicy::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        pruned
            .deleted
            .iter()
            .map(|b| b.id.clone())
            .collect::<Vec<_>>(),
        [first.id],
        "{pruned:?}"
    );
    let left = list_backups(&client).await.unwrap();
    assert_eq!(
        left.iter().map(|b| b.id.clone()).collect::<Vec<_>>(),
        [second.id]
    );
    assert!(
        work_dirs_left(&env).is_empty(),
        "{:?}",
        work_dirs_left(&env)
    );
    c.stop(&synapse).await.unwrap();
}

/// With Pebble's persistence on, neither the passphrase nor the S3 secret key appears in
/// its state file or in any change or task record after a create and a restore.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_stay_out_of_pebbles_records_and_state() {
    let daemon = PebbleDaemon::start_with(LAYER, true);
    let c = PebbleContainer::new(daemon.socket());
    let env = Env::new(&TreeSpec::default()).await;
    let layout = workload(&env);
    let report = create_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &layout,
        &synapse_backup::BackupOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("create through pebble: {e}"));
    restore_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &report.id,
        &layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("restore through pebble: {e}"));
    let secret_key = env.server.secret_key.clone();
    let changes = daemon.get("/v1/changes?select=all");
    assert!(changes.contains("\"kind\":\"exec\""), "{changes}");
    // Pebble checkpoints its state file on every state change while persisting.
    let state_path = daemon.dir().join(".pebble.state");
    let log = daemon.log();
    let state = fs::read_to_string(&state_path)
        .unwrap_or_else(|e| panic!("no state file {} ({e})", state_path.display()));
    assert!(state.contains("exec"), "the state file records the execs");
    for (what, secret) in [
        ("passphrase", PASSPHRASE),
        ("secret key", secret_key.as_str()),
    ] {
        assert!(
            !changes.contains(secret),
            "the {what} is in Pebble's changes"
        );
        assert!(
            !state.contains(secret),
            "the {what} is in Pebble's state file"
        );
        assert!(!log.contains(secret), "the {what} is in Pebble's log");
    }
}

/// `Transfer::Library` over Pebble, as the workload user: the library's download
/// streamed over the exec's stdio websocket into the pipeline, with no aws CLI in the
/// workload (its layout names none) and no S3 secret in Pebble's records.
#[tokio::test(flavor = "multi_thread")]
async fn a_library_transfer_restores_through_pebbles_websocket() {
    let daemon = PebbleDaemon::start_with(LAYER, true);
    let c = PebbleContainer::new(daemon.socket());
    // Over 8 MiB of media: several ranged GETs.
    let env = Env::new(&TreeSpec {
        media_bytes: 20 << 20,
        ..TreeSpec::default()
    })
    .await;
    let layout = workload(&env);
    let before = env.tree.backed_up_files();
    let report = create_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &layout,
        &synapse_backup::BackupOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("create through pebble: {e}"));
    let changes_after_create = daemon.get("/v1/changes?select=all").len();
    let media = walk(&env.tree.media.join("local_content"))[0].clone();
    fs::write(&media, b"changed after the backup").unwrap();
    let library = RestoreOptions::default().transfer(synapse_backup::Transfer::Library);
    let no_aws = layout.clone().aws("/nonexistent/aws");
    let restored = restore_backup_with(&c, &env.params, PASSPHRASE, &report.id, &no_aws, &library)
        .await
        .unwrap_or_else(|e| panic!("library restore through pebble: {e}"));
    assert!(!restored.restored.is_empty(), "{restored:?}");
    assert_eq!(env.tree.backed_up_files(), before, "restored byte for byte");
    assert!(
        work_dirs_left(&env).is_empty(),
        "{:?}",
        work_dirs_left(&env)
    );
    let changes = daemon.get("/v1/changes?select=all");
    assert!(
        changes.len() > changes_after_create,
        "the restore ran execs"
    );
    for (what, secret) in [
        ("passphrase", PASSPHRASE),
        ("secret key", env.server.secret_key.as_str()),
    ] {
        assert!(
            !changes.contains(secret),
            "the {what} is in Pebble's changes"
        );
    }
}

/// A create with `Transfer::Library` over Pebble, as the workload user: the pipeline's
/// ciphertext streamed out over the exec's stdio websocket and uploaded by the library
/// (no aws CLI in the workload, no S3 secret in Pebble's records), restored byte for
/// byte by the workload's aws CLI.
#[tokio::test(flavor = "multi_thread")]
async fn a_library_create_uploads_through_pebbles_websocket() {
    let daemon = PebbleDaemon::start_with(LAYER, true);
    let c = PebbleContainer::new(daemon.socket());
    // Over 2 × 8 MiB of media: a multipart upload of several parts.
    let env = Env::new(&TreeSpec {
        media_bytes: 20 << 20,
        ..TreeSpec::default()
    })
    .await;
    let layout = workload(&env);
    let before = env.tree.backed_up_files();
    let no_aws = layout.clone().aws("/nonexistent/aws");
    let library =
        synapse_backup::BackupOptions::default().transfer(synapse_backup::Transfer::Library);
    let report = create_backup_with(&c, &env.params, PASSPHRASE, &no_aws, &library)
        .await
        .unwrap_or_else(|e| panic!("library create through pebble: {e}"));
    assert!(report.manifest.ciphertext_bytes > 16 << 20);
    for file in walk(&env.tree.media.join("local_content")) {
        fs::write(file, b"damaged").unwrap();
    }
    restore_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &report.id,
        &layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("restore through pebble: {e}"));
    assert_eq!(env.tree.backed_up_files(), before, "restored byte for byte");
    assert!(
        work_dirs_left(&env).is_empty(),
        "{:?}",
        work_dirs_left(&env)
    );
    let changes = daemon.get("/v1/changes?select=all");
    for (what, secret) in [
        ("passphrase", PASSPHRASE),
        ("secret key", env.server.secret_key.as_str()),
    ] {
        assert!(
            !changes.contains(secret),
            "the {what} is in Pebble's changes"
        );
    }
}

/// `Compression::Zstd` through Pebble as the workload user: the workload's zstd (found
/// on the PATH Pebble's exec gives) compresses on create and decompresses on the
/// restore in place, the service stopped and started around the swap.
#[tokio::test(flavor = "multi_thread")]
async fn a_zstd_backup_is_made_and_restored_through_pebble() {
    env::require_tool("zstd", "install it with: sudo apt-get install -y zstd");
    let daemon = PebbleDaemon::start();
    let c = PebbleContainer::new(daemon.socket());
    let env = Env::new(&TreeSpec {
        db_rows: 2000,
        ..TreeSpec::default()
    })
    .await;
    let layout = workload(&env);
    let before = env.tree.backed_up_files();
    let options =
        synapse_backup::BackupOptions::default().compression(synapse_backup::Compression::Zstd(3));
    let report = create_backup_with(&c, &env.params, PASSPHRASE, &layout, &options)
        .await
        .unwrap_or_else(|e| panic!("zstd create through pebble: {e}"));
    assert_eq!(
        report.manifest.compression,
        synapse_backup::Compression::Zstd(3)
    );
    let media = walk(&env.tree.media.join("local_content"))[0].clone();
    fs::write(&media, b"changed after the backup").unwrap();
    restore_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &report.id,
        &layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("zstd restore through pebble: {e}"));
    assert_eq!(env.tree.backed_up_files(), before, "restored byte for byte");
    assert!(
        work_dirs_left(&env).is_empty(),
        "{:?}",
        work_dirs_left(&env)
    );
}

/// An unencrypted compression bomb planted in the bucket (`gpg --store` of a
/// bzip2-compressed tar, no passphrase needed) is refused through Pebble by its first
/// packets, by `hash.py`'s gate running as the workload user and by the library's with
/// `Transfer::Library`, and nothing of it reaches the live data or stays in a work dir.
#[tokio::test(flavor = "multi_thread")]
async fn a_planted_compression_bomb_is_refused_through_pebble() {
    let daemon = PebbleDaemon::start();
    let c = PebbleContainer::new(daemon.socket());
    let env = Env::new(&TreeSpec::default()).await;
    let layout = workload(&env);
    let id = synapse_backup::BackupId::generate();
    let object = env.dir.path().join("bomb.gpg");
    sh(
        r#"set -e; src=$(mktemp -d); mkdir -p "$src/data/media_store/local_content/bo"
           head -c 33554432 /dev/zero >"$src/data/media_store/local_content/bo/mb"
           (cd "$src" && tar -c data) | gpg --batch --store --compress-algo bzip2 -z 9 2>/dev/null >"$1"
           rm -rf "$src"
           aws s3 cp --only-show-errors --endpoint-url "$ENDPOINT" "$1" "s3://$2/synapse/backups/$3""#,
        &env,
        &[&object.to_string_lossy(), &env.bucket, id.as_str()],
    );
    assert!(fs::metadata(&object).unwrap().len() < 1 << 16);
    let before = env.tree.backed_up_files();
    let library = RestoreOptions::default().transfer(synapse_backup::Transfer::Library);
    for options in [RestoreOptions::default(), library] {
        let how = format!("{:?}", options.transfer);
        let v = verify_backup_with(&c, &env.params, PASSPHRASE, &id, &layout, &options)
            .await
            .unwrap_err();
        let e = restore_backup_with(&c, &env.params, PASSPHRASE, &id, &layout, &options)
            .await
            .unwrap_err();
        for e in [v, e] {
            assert!(
                matches!(&e, synapse_backup::BackupError::Corrupted { reason, .. }
                    if reason.contains("its first packet is a compressed data packet (tag 8)")),
                "{how}: {e}"
            );
        }
        assert_eq!(env.tree.backed_up_files(), before, "{how}");
        assert!(
            work_dirs_left(&env).is_empty(),
            "{how}: {:?}",
            work_dirs_left(&env)
        );
    }
}

/// The free-space reserve holds through Pebble: a legacy backup (`tar | gpg
/// --symmetric`, gpg's zlib) of 64 MiB of zeros, an object of some 100 KiB, staged on a
/// 48 MiB volume by the workload user, is stopped by tar's checkpoints (`reserve.sh`,
/// whose text reaches tar through Pebble's exec environment) with the reserve still
/// free, with either transfer; before, staging filled the volume ("no space left").
#[tokio::test(flavor = "multi_thread")]
async fn staging_keeps_the_space_reserve_through_pebble() {
    let daemon = PebbleDaemon::start();
    let c = PebbleContainer::new(daemon.socket());
    let env = Env::new(&TreeSpec::default()).await;
    let layout = workload(&env);
    let id = synapse_backup::BackupId::generate();
    let pass = env.dir.path().join("legacy-pass");
    fs::write(&pass, PASSPHRASE).unwrap();
    sh(
        r#"set -e; src=$(mktemp -d); mkdir -p "$src/data/media_store/local_content/ze"
           head -c 67108864 /dev/zero >"$src/data/media_store/local_content/ze/ros"
           (cd "$src" && tar -c data) | gpg --batch --no-symkey-cache --pinentry-mode loopback --passphrase-file "$1" --symmetric 2>/dev/null |
             aws s3 cp --only-show-errors --endpoint-url "$ENDPOINT" - "s3://$2/synapse/backups/$3"
           rm -rf "$src""#,
        &env,
        &[&pass.to_string_lossy(), &env.bucket, id.as_str()],
    );
    let _small = env.small_tmpfs("small", "48m");
    let small = env.tree.root.join("small");
    sh(
        r#"chown nobody:nogroup "$1""#,
        &env,
        &[&small.to_string_lossy()],
    );
    let layout = layout.work_dir(Some("/small".into()));
    let before = env.tree.backed_up_files();
    let library = RestoreOptions::default().transfer(synapse_backup::Transfer::Library);
    for options in [RestoreOptions::default(), library] {
        let how = format!("{:?}", options.transfer);
        let options = options.space_reserve_mib(8);
        let e = restore_backup_with(&c, &env.params, PASSPHRASE, &id, &layout, &options)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, synapse_backup::BackupError::SpaceReserve { reserve, .. }
                if *reserve == 8 << 20),
            "{how}: {e}"
        );
        assert_eq!(env.tree.backed_up_files(), before, "{how}");
        assert_eq!(
            fs::read_dir(&small).unwrap().count(),
            0,
            "{how}: work dir left"
        );
    }
}

//! `Compression::Zstd`: `tar | zstd | gpg` on create, `gpg | zstd -d | tar` on every
//! read (verify, restore, extract, a chain's packs, the passphrase check), with the
//! real zstd; a workload without zstd is told so, and live data stays as it was.

use crate::support::{env, synapse_tree};

use std::fs;
use std::path::Path;

use env::{Env, PASSPHRASE, require_tool};
use synapse_backup::{
    BackupError, BackupId, BackupKind, BackupOptions, BackupReport, Compression, FullReason,
    Layout, LocalContainer, Manifest, RestoreOptions, Stage, Transfer, create_backup_with,
    extract_backup_with, restore_backup_with, verify_backup_with,
};
use synapse_tree::{TreeSpec, change_db, dump_db};

/// A tree whose database (2,000 rows of ~1 KiB of text) compresses, beside random media.
fn spec() -> TreeSpec {
    TreeSpec {
        db_rows: 2000,
        ..TreeSpec::default()
    }
}

fn zstd_on_path() {
    require_tool("zstd", "install it with: sudo apt-get install -y zstd");
}

async fn create(
    env: &Env,
    layout: &Layout,
    options: &BackupOptions,
) -> Result<BackupReport, BackupError> {
    create_backup_with(
        &LocalContainer::new(),
        &env.params,
        PASSPHRASE,
        layout,
        options,
    )
    .await
}

fn zstd3() -> BackupOptions {
    BackupOptions::default().compression(Compression::Zstd(3))
}

/// The manifest stored beside the backup `id`.
fn stored_manifest(env: &Env, id: &BackupId) -> Manifest {
    let path = env.object_path(&format!("synapse/backups/{id}.manifest.json"));
    Manifest::from_json(&fs::read(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zstd_backup_is_smaller_and_verifies_restores_and_extracts_byte_for_byte() {
    zstd_on_path();
    let env = Env::new(&spec()).await;
    let c = LocalContainer::new();
    let db = env.tree.data.join("homeserver.db");
    let before_files = env.tree.backed_up_files();
    let before_db = dump_db(&db);

    let plain = create(&env, &env.layout, &BackupOptions::default())
        .await
        .unwrap();
    let zstd = create(&env, &env.layout, &zstd3()).await.unwrap();
    assert_eq!(zstd.manifest.compression, Compression::Zstd(3));
    assert_eq!(
        stored_manifest(&env, &zstd.id).compression,
        Compression::Zstd(3)
    );
    let (plain_bytes, zstd_bytes) = (
        plain.manifest.ciphertext_bytes,
        zstd.manifest.ciphertext_bytes,
    );
    let db_bytes = fs::metadata(&db).unwrap().len();
    assert!(
        zstd_bytes + db_bytes / 3 < plain_bytes,
        "zstd saves at least a third of the {db_bytes}-byte database: {zstd_bytes} against {plain_bytes}"
    );
    assert_eq!(
        zstd.manifest.plaintext_bytes, plain.manifest.plaintext_bytes,
        "plaintext_bytes counts what tar archived, before zstd"
    );

    for transfer in [Transfer::Workload, Transfer::Library] {
        let options = RestoreOptions::default().transfer(transfer);
        let report =
            verify_backup_with(&c, &env.params, PASSPHRASE, &zstd.id, &env.layout, &options)
                .await
                .unwrap();
        assert!(report.authenticated_manifest, "{transfer:?}");
        let out = env.dir.path().join(format!("extracted-{transfer:?}"));
        let target = synapse_backup::ExtractTarget::new(out.to_string_lossy().into_owned());
        extract_backup_with(
            &c,
            &env.params,
            PASSPHRASE,
            &zstd.id,
            &env.layout,
            &target,
            &options,
        )
        .await
        .unwrap();
        assert_eq!(
            fs::read(out.join("data/example.test.signing.key")).unwrap(),
            fs::read(env.tree.data.join("example.test.signing.key")).unwrap(),
            "{transfer:?}"
        );

        // Live data changed, then restored from the zstd backup.
        fs::remove_dir_all(env.tree.media.join("local_thumbnails")).unwrap();
        change_db(&db);
        restore_backup_with(&c, &env.params, PASSPHRASE, &zstd.id, &env.layout, &options)
            .await
            .unwrap();
        assert_eq!(env.tree.backed_up_files(), before_files, "{transfer:?}");
        assert_eq!(dump_db(&db), before_db, "{transfer:?}");
    }
    assert!(
        env.work_dirs_left().is_empty(),
        "{:?}",
        env.work_dirs_left()
    );
}

/// The README's recipe for a zstd backup: plain aws, gpg, zstd and tar.
#[tokio::test(flavor = "multi_thread")]
async fn a_zstd_backup_restores_with_plain_aws_gpg_zstd_and_tar() {
    zstd_on_path();
    let env = Env::new(&spec()).await;
    let report = create(&env, &env.layout, &zstd3()).await.unwrap();
    let out = env.manual_restore(&report.key, true);
    assert_eq!(
        dump_db(&out.join("data/homeserver.db")),
        dump_db(&env.tree.data.join("homeserver.db"))
    );
}

/// An incremental backup on a zstd base: the create reads the base's inner manifest
/// (the passphrase check's cut stream, through `zstd -d`), the chain restores.
#[tokio::test(flavor = "multi_thread")]
async fn an_incremental_chain_of_zstd_packs_restores() {
    zstd_on_path();
    let env = Env::new(&spec()).await;
    let c = LocalContainer::new();
    let options = zstd3().incremental(true);
    let base = create(&env, &env.layout, &options).await.unwrap();
    fs::write(
        env.tree.media.join("local_content/added-after-the-base"),
        vec![7u8; 50_000],
    )
    .unwrap();
    let next = create(&env, &env.layout, &options).await.unwrap();
    assert!(
        matches!(&next.kind, BackupKind::Incremental { base: b } if *b == base.id),
        "{:?}",
        next.kind
    );
    let before_files = env.tree.backed_up_files();
    let db = env.tree.data.join("homeserver.db");
    let before_db = dump_db(&db);
    fs::remove_file(env.tree.media.join("local_content/added-after-the-base")).unwrap();
    change_db(&db);
    restore_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &next.id,
        &env.layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(env.tree.backed_up_files(), before_files);
    assert_eq!(dump_db(&db), before_db);
}

fn is_missing_zstd(e: &BackupError) -> bool {
    matches!(
        e,
        BackupError::StageFailed { stage: Stage::Compress, exit_code: 127, stderr }
            if stderr.contains("/nonexistent/zstd") && stderr.contains("install it")
    )
}

/// A workload without zstd: create says so and stores no backup; a restore of a zstd
/// backup says so and leaves live data as it was, whoever downloads.
#[tokio::test(flavor = "multi_thread")]
async fn a_workload_without_zstd_is_told_and_nothing_changes() {
    zstd_on_path();
    let env = Env::new(&spec()).await;
    let c = LocalContainer::new();
    let without = env.layout.clone().zstd("/nonexistent/zstd".to_string());
    for transfer in [Transfer::Workload, Transfer::Library] {
        let e = create(&env, &without, &zstd3().transfer(transfer))
            .await
            .unwrap_err();
        assert!(is_missing_zstd(&e), "{transfer:?}: {e:?}");
        assert!(e.to_string().contains("compress"), "{e}");
    }
    let client = synapse_backup::S3Client::new(&env.params).unwrap();
    assert!(
        synapse_backup::list_backups(&client)
            .await
            .unwrap()
            .is_empty(),
        "a failed create stores no backup"
    );
    // A create without compression needs no zstd.
    create(&env, &without, &BackupOptions::default())
        .await
        .unwrap();

    let report = create(&env, &env.layout, &zstd3()).await.unwrap();
    let db = env.tree.data.join("homeserver.db");
    change_db(&db);
    let live_db = dump_db(&db);
    let live_files = env.tree.backed_up_files();
    for transfer in [Transfer::Workload, Transfer::Library] {
        let options = RestoreOptions::default().transfer(transfer);
        let e = restore_backup_with(&c, &env.params, PASSPHRASE, &report.id, &without, &options)
            .await
            .unwrap_err();
        assert!(is_missing_zstd(&e), "{transfer:?}: {e:?}");
        let e = verify_backup_with(&c, &env.params, PASSPHRASE, &report.id, &without, &options)
            .await
            .unwrap_err();
        assert!(is_missing_zstd(&e), "{transfer:?}: {e:?}");
        assert_eq!(dump_db(&db), live_db);
        assert_eq!(env.tree.backed_up_files(), live_files);
    }
    // An incremental create on a zstd base, in a workload without zstd: the base's
    // head cannot be read there, so the backup is full and says why.
    let base = create(&env, &env.layout, &zstd3().incremental(true))
        .await
        .unwrap();
    let next = create(&env, &without, &BackupOptions::default().incremental(true))
        .await
        .unwrap();
    assert!(
        matches!(
            &next.kind,
            BackupKind::Full { reason: FullReason::BaseUnreadable { base: b, detail } }
                if *b == base.id && detail.contains("compressed with zstd, which the workload lacks")
        ),
        "{:?}",
        next.kind
    );
    assert!(
        env.work_dirs_left().is_empty(),
        "{:?}",
        env.work_dirs_left()
    );
}

/// A manifest rewritten by someone with write access to the bucket (zstd said to be
/// none, or none said to be zstd) makes the read fail; live data stays as it was.
#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_that_lies_about_compression_fails_the_restore() {
    zstd_on_path();
    let env = Env::new(&spec()).await;
    let c = LocalContainer::new();
    let zstd = create(&env, &env.layout, &zstd3()).await.unwrap();
    let plain = create(&env, &env.layout, &BackupOptions::default())
        .await
        .unwrap();
    let db = env.tree.data.join("homeserver.db");
    change_db(&db);
    let live_db = dump_db(&db);
    for (id, lie) in [(&zstd.id, "none"), (&plain.id, "zstd-3")] {
        let path = env.object_path(&format!("synapse/backups/{id}.manifest.json"));
        rewrite_compression(&path, lie);
        let e = restore_backup_with(
            &c,
            &env.params,
            PASSPHRASE,
            id,
            &env.layout,
            &RestoreOptions::default(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                &e,
                BackupError::StageFailed {
                    stage: Stage::Extract | Stage::Compress,
                    ..
                } | BackupError::Corrupted { .. }
            ),
            "{lie}: {e:?}"
        );
        assert_eq!(dump_db(&db), live_db, "{lie}");
    }
}

fn rewrite_compression(path: &Path, to: &str) {
    let text = String::from_utf8(fs::read(path).unwrap()).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["compression"] = serde_json::Value::String(to.into());
    fs::write(path, serde_json::to_vec(&value).unwrap()).unwrap();
}

//! create_backup against real bash, tar, gpg, the aws CLI and an in-process S3 server.

mod sse;

use crate::support::{env, faulty, s3_server, synapse_tree};

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use env::{Env, PASSPHRASE, sh};
use synapse_backup::ManifestPath;
use synapse_backup::{
    BackupError, BackupOptions, LocalContainer, Manifest, S3Client, Stage, create_backup_with,
};
use synapse_tree::{TreeSpec, dump_db, files_under, walk};

/// Downloads, decrypts (plain gpg) and extracts (plain tar) the object into a new dir.
fn manual_restore(env: &Env, key: &str) -> PathBuf {
    env.manual_restore(key, false)
}

#[tokio::test(flavor = "multi_thread")]
async fn round_trip_is_readable_with_plain_aws_gpg_and_tar() {
    let env = Env::new(&TreeSpec::default()).await;
    let c = LocalContainer::new();
    let report = env.create(&c).await.unwrap();
    assert!(
        report.key.starts_with("synapse/backups/backup-"),
        "{}",
        report.key
    );
    assert!(
        env.work_dirs_left().is_empty(),
        "the work dir (passphrase) must be removed"
    );

    let out = manual_restore(&env, &report.key);
    let mut restored = files_under(&out);
    // The inner manifest is the stream's first member, and the external manifest
    // repeats its nonce.
    let inner = restored
        .remove(Path::new(".synapse-backup/manifest.json"))
        .expect("the inner manifest in the archive");
    let inner = synapse_backup::InnerManifest::from_json(&inner).unwrap();
    assert_eq!(inner.backup_id, report.id);
    assert_eq!(Some(&inner.nonce), report.manifest.nonce.as_ref());
    assert_eq!(inner.nonce.len(), 64);
    let first = sh(
        r#"aws s3 cp --only-show-errors --endpoint-url "$ENDPOINT" "s3://$1/$2" - |
           gpg --batch --no-tty --pinentry-mode loopback --passphrase-file "$3" --decrypt 2>/dev/null |
           tar -t | sed -n 1p"#,
        &env,
        &[
            &env.bucket,
            &report.key,
            &env.dir.path().join("pass").to_string_lossy(),
        ],
    );
    assert_eq!(first, b".synapse-backup/manifest.json\n");
    assert!(
        !files_of(&env, &report)
            .await
            .iter()
            .any(|f| f.path.as_bytes().starts_with(b".synapse-backup")),
        "the external file list holds the data members only"
    );
    let mut expected = env.tree.backed_up_files();
    // The database is archived as a consistent snapshot under its own member name.
    let db = restored
        .get(Path::new("data/homeserver.db"))
        .expect("homeserver.db in the archive")
        .clone();
    fs::write(env.dir.path().join("snap.db"), &db).unwrap();
    assert_eq!(
        dump_db(&env.dir.path().join("snap.db")),
        dump_db(&env.tree.data.join("homeserver.db"))
    );
    expected.insert(PathBuf::from("data/homeserver.db"), db);
    assert_eq!(
        restored.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    assert_eq!(restored, expected, "archived bytes differ from the tree");
    for p in restored.keys() {
        let s = p.to_string_lossy();
        assert!(
            !s.contains("remote_")
                && !s.contains("url_cache")
                && !s.ends_with("-wal")
                && !s.ends_with("homeserver.yaml"),
            "{s} must not be archived"
        );
    }

    // The manifest matches the object.
    let manifest_bytes =
        fs::read(env.object_path(&format!("{}.manifest.json", report.key))).unwrap();
    let manifest = Manifest::from_json(&manifest_bytes).unwrap();
    let object = fs::read(env.object_path(&report.key)).unwrap();
    assert_eq!(manifest.ciphertext_bytes, object.len() as u64);
    let sha = String::from_utf8(sh(
        "sha256sum \"$1\" | cut -d' ' -f1",
        &env,
        &[&env.object_path(&report.key).to_string_lossy()],
    ))
    .unwrap();
    assert_eq!(manifest.ciphertext_sha256, sha.trim());
    assert_eq!(manifest.backup_id, report.id);
    assert_eq!(manifest.server_name.as_deref(), Some("example.test"));
    assert_eq!(manifest.database, synapse_backup::DatabaseSnapshot::Sqlite);
    assert!(
        manifest
            .files
            .iter()
            .any(|f| f.path.as_bytes() == b"data/homeserver.db")
    );
    assert!(
        manifest
            .files
            .iter()
            .any(|f| f.path.as_bytes() == b"data/example.test.signing.key")
    );

    // The data object carries our tag.
    let client = S3Client::new(&env.params).unwrap();
    let head = client.head_object(&report.key).await.unwrap();
    assert!(
        head.metadata
            .get("created-by")
            .is_some_and(|v| v.starts_with("synapse-backup/")),
        "{:?}",
        head.metadata
    );
}

/// The key is derived with SHA-256 (gpg's iterated and salted S2K, at the options'
/// count) and the data encrypted with AES-256: what plain gpg reads from the packet.
#[tokio::test(flavor = "multi_thread")]
async fn the_key_is_derived_with_iterated_sha256_and_the_data_encrypted_with_aes256() {
    let env = Env::new(&TreeSpec::default()).await;
    let report = env.create(&LocalContainer::new()).await.unwrap();
    let pass = env.dir.path().join("pass");
    fs::write(&pass, PASSPHRASE).unwrap();
    let packets = sh(
        r#"aws s3 cp --only-show-errors --endpoint-url "$ENDPOINT" "s3://$1/$2" - |
           gpg --batch --no-tty --pinentry-mode loopback --passphrase-file "$3" --list-packets 2>/dev/null"#,
        &env,
        &[&env.bucket, &report.key, &pass.to_string_lossy()],
    );
    let packets = String::from_utf8_lossy(&packets);
    let symkey = packets
        .lines()
        .position(|l| l.starts_with(":symkey enc packet:"))
        .map(|i| {
            packets
                .lines()
                .skip(i)
                .take(2)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_else(|| panic!("no symmetric key packet: {packets}"));
    // cipher 9 is AES-256, s2k 3 iterated and salted, hash 8 SHA-256 (RFC 4880, 9.1–9.4).
    assert!(
        symkey.contains("cipher 9, aead 0,s2k 3, hash 8"),
        "{symkey}"
    );
    let count = BackupOptions::default().s2k_count;
    assert!(symkey.contains(&format!("count {count} ")), "{symkey}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_file_names_are_archived_verbatim_and_nothing_runs() {
    let env = Env::new(&TreeSpec {
        media_files: 2,
        media_bytes: 2048,
        ..TreeSpec::default()
    })
    .await;
    let dir = env.tree.media.join("local_content").join("hostile");
    fs::create_dir_all(&dir).unwrap();
    // File names cannot hold `/`: the markers are relative to wherever a command would
    // run (the work dir, the data dir, the root), and every dir is searched afterwards.
    let names: Vec<Vec<u8>> = vec![
        b"it's".to_vec(),
        b"say \"hi\"".to_vec(),
        b"$(touch PWNED)".to_vec(),
        b"`touch PWNED`".to_vec(),
        b";touch PWNED;".to_vec(),
        b"$(cd ..; touch PWNED)".to_vec(),
        b"$(cd ..; cd ..; touch PWNED)".to_vec(),
        b"with space".to_vec(),
        b"new\nline".to_vec(),
        b"-rf".to_vec(),
        b"--checkpoint-action=exec=touch x".to_vec(),
        "unicode-\u{e9}\u{6f22}\u{5b57}".as_bytes().to_vec(),
        b"not-utf8-\xff\xfe".to_vec(),
        b"back\\slash".to_vec(),
    ];
    for (i, n) in names.iter().enumerate() {
        fs::write(
            dir.join(std::ffi::OsStr::from_bytes(n)),
            format!("content {i}"),
        )
        .unwrap();
    }
    // A media dir whose own name is hostile too.
    let odd = env.tree.media.join("local_$(touch x) 'q'");
    fs::create_dir_all(&odd).unwrap();
    fs::write(odd.join("f"), "odd").unwrap();

    let pwned = || {
        let mut found: Vec<PathBuf> = walk(env.dir.path())
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|n| n == "PWNED"))
            .collect();
        found.extend(
            [
                PathBuf::from("PWNED"),
                PathBuf::from("/PWNED"),
                PathBuf::from("/tmp/PWNED"),
            ]
            .into_iter()
            .filter(|p| p.exists()),
        );
        found
    };
    let c = LocalContainer::new();
    let report = env.create(&c).await.unwrap();
    assert!(
        pwned().is_empty(),
        "a file name was executed: {:?}",
        pwned()
    );
    let out = manual_restore(&env, &report.key);
    for (i, n) in names.iter().enumerate() {
        let p = out
            .join("data/media_store/local_content/hostile")
            .join(std::ffi::OsStr::from_bytes(n));
        assert_eq!(
            fs::read(&p).unwrap_or_default(),
            format!("content {i}").into_bytes(),
            "{:?}",
            String::from_utf8_lossy(n)
        );
    }
    assert_eq!(
        fs::read(out.join("data/media_store/local_$(touch x) 'q'/f")).unwrap(),
        b"odd"
    );
    let paths: Vec<ManifestPath> = files_of(&env, &report)
        .await
        .iter()
        .map(|f| f.path.clone())
        .collect();
    assert!(paths.contains(&ManifestPath::Bytes(
        b"data/media_store/local_content/hostile/not-utf8-\xff\xfe".to_vec()
    )));
    assert!(paths.contains(&ManifestPath::Text(
        "data/media_store/local_content/hostile/new\nline".into()
    )));
    assert!(pwned().is_empty() && !env.tree.root.join("x").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_media_files() {
    let env = Env::new(&TreeSpec {
        media_files: 10_000,
        media_bytes: 10_000 * 200,
        db_rows: 10,
        seed: 7,
    })
    .await;
    let c = LocalContainer::new();
    let report = env.create(&c).await.unwrap();
    let files = files_of(&env, &report)
        .await
        .iter()
        .filter(|f| f.kind == synapse_backup::EntryKind::File)
        .count();
    assert!(files >= 10_000 + 2500, "{files} files in the manifest");
    assert_eq!(
        report.manifest.plaintext_bytes,
        files_of(&env, &report)
            .await
            .iter()
            .filter(|f| f.kind == synapse_backup::EntryKind::File)
            .map(|f| f.size)
            .sum::<u64>()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_to_back_up_is_an_error() {
    let env = Env::new(&TreeSpec {
        media_files: 1,
        media_bytes: 1,
        ..TreeSpec::default()
    })
    .await;
    fs::remove_dir_all(&env.tree.media).unwrap();
    for f in ["homeserver.db", "example.test.signing.key"] {
        fs::remove_file(env.tree.data.join(f)).unwrap();
    }
    let c = LocalContainer::new();
    let e = env.create(&c).await.unwrap_err();
    assert!(matches!(e, BackupError::NothingToBackUp { .. }), "{e}");
    assert!(env.objects_in_bucket().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_media_store_is_a_recorded_warning() {
    let env = Env::new(&TreeSpec {
        media_files: 1,
        media_bytes: 1,
        ..TreeSpec::default()
    })
    .await;
    fs::remove_dir_all(&env.tree.media).unwrap();
    let c = LocalContainer::new();
    let report = env.create(&c).await.unwrap();
    assert!(
        report
            .manifest
            .warnings
            .iter()
            .any(|w| w.contains("media store") && w.contains("does not exist")),
        "{:?}",
        report.manifest.warnings
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_homeserver_yaml_is_a_clear_error() {
    let env = Env::new(&TreeSpec {
        media_files: 1,
        media_bytes: 1,
        ..TreeSpec::default()
    })
    .await;
    fs::write(
        env.tree.data.join("homeserver.yaml"),
        "media_store_path: [oops",
    )
    .unwrap();
    let c = LocalContainer::new();
    let e = env.create(&c).await.unwrap_err();
    assert!(
        matches!(e, BackupError::Config(_)) && e.to_string().contains("/data/homeserver.yaml"),
        "{e}"
    );
    fs::remove_file(env.tree.data.join("homeserver.yaml")).unwrap();
    let e = env.create(&c).await.unwrap_err();
    assert!(e.to_string().contains("/data/homeserver.yaml"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_passphrases_are_refused_before_anything_runs() {
    let env = Env::new(&TreeSpec {
        media_files: 1,
        media_bytes: 1,
        ..TreeSpec::default()
    })
    .await;
    let c = LocalContainer::new();
    for bad in ["", "two\nlines", "nul\0byte"] {
        let e = create_backup_with(&c, &env.params, bad, &env.layout, &BackupOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(e, BackupError::InvalidPassphrase(_)), "{e}");
    }
    assert!(env.objects_in_bucket().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn tar_failing_half_way_leaves_nothing() {
    let env = Env::new(&TreeSpec {
        media_files: 20,
        media_bytes: 4 << 20,
        ..TreeSpec::default()
    })
    .await;
    let (_, layout) = env.make_tar_fail_on_its_last_file(&env.layout);
    let c = LocalContainer::new();
    let e = create_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &layout,
        &BackupOptions::default(),
    )
    .await
    .unwrap_err();
    env::assert_tar_was_denied(&e);
    assert!(
        env.objects_in_bucket().is_empty(),
        "{:?}",
        env.objects_in_bucket()
    );
    assert!(env.work_dirs_left().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn gpg_failing_leaves_nothing() {
    let env = Env::new(&TreeSpec::default()).await;
    let mut c = faulty::Faulty::new(LocalContainer::new());
    c.break_passphrase = true;
    let e = env.create(&c).await.unwrap_err();
    assert!(
        matches!(
            e,
            BackupError::StageFailed {
                stage: Stage::Gpg,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().starts_with("gpg failed"), "{e}");
    assert!(
        env.objects_in_bucket().is_empty(),
        "{:?}",
        env.objects_in_bucket()
    );
    assert!(env.work_dirs_left().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_failing_mid_stream_leaves_nothing() {
    let mut env = Env::new(&TreeSpec {
        media_files: 32,
        media_bytes: 96 << 20,
        ..TreeSpec::default()
    })
    .await;
    let c = faulty::Faulty::new(LocalContainer::new());
    let (finished, go) = c.pause_after_pipeline();
    let params = env.params.clone();
    let layout = env.layout.clone();
    // 96 MiB at 16 MiB/s: still uploading when the server stops after 1.5 s.
    let options = BackupOptions::default()
        .part_size_mib(8)
        .upload_concurrency(2)
        .max_bandwidth(Some(synapse_backup::Bandwidth::mib(16)));
    let c = std::sync::Arc::new(c);
    let c2 = c.clone();
    let task = tokio::spawn(async move {
        create_backup_with(&*c2, &params, PASSPHRASE, &layout, &options).await
    });
    // Let the upload start, then stop the server under it.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (root, port) = (env.server.root.clone(), env.server.port());
    env.server.stop().await;
    finished.await.unwrap();
    // Back on the same data and port before create_backup checks and cleans up.
    env.server = s3_server::TestS3Server::start_at(&root, Some(port)).await;
    go.send(()).unwrap();
    let e = task.await.unwrap().unwrap_err();
    assert!(
        matches!(
            e,
            BackupError::StageFailed {
                stage: Stage::Upload,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        env.objects_in_bucket().is_empty(),
        "{:?}",
        env.objects_in_bucket()
    );
    assert!(env.work_dirs_left().is_empty());
}

/// Against moto, which implements ListMultipartUploads: a pipeline killed mid-upload
/// leaves a multipart upload behind, and create_backup aborts it.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_upload_has_its_multipart_upload_aborted() {
    let moto = tokio::task::spawn_blocking(s3_server::MotoServer::start)
        .await
        .unwrap();
    moto.create_bucket("moto-bucket");
    let mut data = moto.relation_data("moto-bucket");
    data.insert("path".into(), "synapse".into());
    let params = synapse_backup::S3Parameters::from_relation_data(&data).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tree = synapse_tree::SynapseTree::create(
        &dir.path().join("root"),
        &TreeSpec {
            media_files: 20,
            media_bytes: 48 << 20,
            ..TreeSpec::default()
        },
    );
    let layout = env::layout_for(&tree.root);
    let c = std::sync::Arc::new(faulty::Faulty::new(LocalContainer::new()));
    let (finished, go) = c.pause_after_pipeline();
    // Killed (timeout) while parts are being uploaded: 48 MiB at 4 MiB/s take 12 s; 8 s
    // leave a loaded machine time to reach the first part (5 s did not, once).
    let options = BackupOptions::default()
        .part_size_mib(5)
        .upload_concurrency(1)
        .max_bandwidth(Some(synapse_backup::Bandwidth::mib(4)))
        .timeout(Some(std::time::Duration::from_secs(8)));
    let (c2, p2, l2) = (c.clone(), params.clone(), layout.clone());
    let task =
        tokio::spawn(async move { create_backup_with(&*c2, &p2, PASSPHRASE, &l2, &options).await });
    finished.await.unwrap();
    let client = S3Client::new(&params).unwrap();
    let open = client.list_multipart_uploads("synapse/").await.unwrap();
    assert!(
        !open.is_empty(),
        "the killed upload should have left a multipart upload to clean (moto log: {})",
        moto.log_text()
    );
    go.send(()).unwrap();
    let e = task.await.unwrap().unwrap_err();
    assert!(
        matches!(
            e,
            BackupError::StageFailed {
                stage: Stage::Upload,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("timed out"), "{e}");
    assert!(
        client
            .list_multipart_uploads("synapse/")
            .await
            .unwrap()
            .is_empty(),
        "multipart uploads must be aborted"
    );
    assert!(
        client.list_objects().await.unwrap().is_empty(),
        "no object may be left"
    );

    // prune also aborts stale multipart uploads under the path (grace 0 here).
    let key = client.object_key("backup-20200101000000000000");
    let out = std::process::Command::new(env::aws())
        .args([
            "s3api",
            "create-multipart-upload",
            "--bucket",
            "moto-bucket",
            "--key",
            &key,
            "--endpoint-url",
            &moto.endpoint,
        ])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        client
            .list_multipart_uploads("synapse/")
            .await
            .unwrap()
            .len(),
        1
    );
    let policy = synapse_backup::RetentionPolicy {
        grace_period: std::time::Duration::ZERO,
        ..Default::default()
    };
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let report = synapse_backup::prune_backups(&client, &policy)
        .await
        .unwrap();
    assert_eq!(report.aborted_uploads, 1);
    assert!(
        client
            .list_multipart_uploads("synapse/")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn postgresql_is_recorded_and_no_sqlite_file_is_archived() {
    let env = Env::new(&TreeSpec {
        media_files: 2,
        media_bytes: 1024,
        ..TreeSpec::default()
    })
    .await;
    fs::write(
        env.tree.data.join("homeserver.yaml"),
        "server_name: example.test\nmedia_store_path: /data/media_store\ndatabase:\n  name: psycopg2\n  args:\n    database: synapse\n",
    )
    .unwrap();
    let c = LocalContainer::new();
    let report = env.create(&c).await.unwrap();
    assert_eq!(
        report.manifest.database,
        synapse_backup::DatabaseSnapshot::Postgresql
    );
    assert!(
        report
            .manifest
            .warnings
            .iter()
            .any(|w| w.contains("PostgreSQL")),
        "{:?}",
        report.manifest.warnings
    );
    assert!(
        !files_of(&env, &report)
            .await
            .iter()
            .any(|f| f.path.as_bytes().starts_with(b"data/homeserver.db"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_snapshot_tool_the_error_says_so() {
    let env = Env::new(&TreeSpec {
        media_files: 2,
        media_bytes: 1024,
        ..TreeSpec::default()
    })
    .await;
    let layout = env
        .layout
        .clone()
        .python3("/nonexistent/python3")
        .sqlite3("/nonexistent/sqlite3");
    let c = LocalContainer::new();
    let e = create_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &layout,
        &BackupOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            e,
            BackupError::StageFailed {
                stage: Stage::Snapshot,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("neither") && e.to_string().contains("sqlite3"),
        "{e}"
    );
    assert!(env.objects_in_bucket().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_ca_chain_reaches_the_aws_cli() {
    let server = s3_server::TestS3Server::start_tls_self_signed().await;
    server.create_bucket("tls-bucket");
    let data = server.relation_data("tls-bucket");
    assert!(data.contains_key("tls-ca-chain"));
    let params = synapse_backup::S3Parameters::from_relation_data(&data).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tree = synapse_tree::SynapseTree::create(
        &dir.path().join("root"),
        &TreeSpec {
            media_files: 3,
            media_bytes: 4096,
            ..TreeSpec::default()
        },
    );
    let c = LocalContainer::new();
    let report = create_backup_with(
        &c,
        &params,
        PASSPHRASE,
        &env::layout_for(&tree.root),
        &BackupOptions::default(),
    )
    .await
    .unwrap();
    let client = S3Client::new(&params).unwrap();
    assert_eq!(
        client.head_object(&report.key).await.unwrap().size,
        report.manifest.ciphertext_bytes
    );
    // Without the CA, the aws CLI refuses the server's certificate: the upload fails.
    let mut untrusted = data.clone();
    untrusted.remove("tls-ca-chain");
    let params = synapse_backup::S3Parameters::from_relation_data(&untrusted).unwrap();
    // (The lock off: the crate's own client would refuse the server first.)
    let e = create_backup_with(
        &c,
        &params,
        PASSPHRASE,
        &env::layout_for(&tree.root),
        &BackupOptions::default().lock(synapse_backup::LockOptions::off()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            e,
            BackupError::StageFailed {
                stage: Stage::Upload,
                ..
            }
        ),
        "{e}"
    );
}

/// When the upload dies first, gpg then fails on a broken
/// pipe (exit 2, "write error") and tar dies of SIGPIPE; the error names the upload, the
/// stage that failed for a reason of its own, not gpg.
#[tokio::test(flavor = "multi_thread")]
async fn an_upload_that_dies_first_is_named_not_gpg_on_its_broken_pipe() {
    let env = Env::new(&TreeSpec {
        media_files: 8,
        media_bytes: 16 << 20,
        ..TreeSpec::default()
    })
    .await;
    // A real upload stage that fails on its own: it reads a little and exits 1.
    let aws = env.dir.path().join("aws-that-fails");
    fs::write(
        &aws,
        "#!/usr/bin/env bash\nhead -c 1 >/dev/null\necho 'upload refused by the test' >&2\nexit 1\n",
    )
    .unwrap();
    fs::set_permissions(&aws, fs::Permissions::from_mode(0o755)).unwrap();
    let layout = env.layout.clone().aws(aws.to_string_lossy().into_owned());
    let c = LocalContainer::new();
    let e = create_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &layout,
        &BackupOptions::default(),
    )
    .await
    .unwrap_err();
    match &e {
        BackupError::StageFailed {
            stage: Stage::Upload,
            exit_code: 1,
            stderr,
        } => assert!(stderr.contains("upload refused by the test"), "{stderr}"),
        other => panic!("expected the upload to be named: {other}"),
    }
    assert!(env.objects_in_bucket().is_empty());
    assert!(env.work_dirs_left().is_empty());
}

/// A process running as the workload user swaps every work dir (or
/// every file made in one) for a symlink to a root-owned file while root runs backups
/// as that user. No root-owned file may change owner: privileged code never chowns a
/// path that user can change.
#[tokio::test(flavor = "multi_thread")]
async fn the_workload_user_cannot_win_a_chown_race() {
    use std::io::BufRead;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    assert!(
        nix_is_root(),
        "this test runs as root (it switches to nobody): run the tests as root"
    );
    let env = Env::new(&TreeSpec {
        media_files: 5,
        ..TreeSpec::default()
    })
    .await;
    sh(
        "chmod -R a+rX \"$1\" && chmod 0755 \"$2\" && chown -R nobody:nogroup \"$1/data\"",
        &env,
        &[
            &env.tree.root.to_string_lossy(),
            &env.dir.path().to_string_lossy(),
        ],
    );
    let victim = env.dir.path().join("victim");
    fs::write(&victim, "root's").unwrap();
    let layout = env
        .layout
        .clone()
        .user(Some("nobody".into()))
        .group(Some("nogroup".into()));
    let c = LocalContainer::new();
    let swapper = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/scripts/swapper.py");
    for mode in ["dirs", "files"] {
        let mut child = std::process::Command::new("python3")
            .arg(&swapper)
            .arg(&env.tree.data)
            .arg(&victim)
            .arg(mode)
            .uid(65534)
            .gid(65534)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 is needed: sudo apt-get install -y python3");
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        for _ in 0..6 {
            // Most runs fail (their files are swapped away): only ownership matters.
            let _ = create_backup_with(
                &c,
                &env.params,
                PASSPHRASE,
                &layout,
                &BackupOptions::default(),
            )
            .await;
        }
        nix_terminate(child.id());
        line.clear();
        out.read_line(&mut line).unwrap();
        let _ = child.wait();
        let swaps: u32 = line.trim().parse().unwrap();
        assert!(swaps > 0, "{mode}: the swapper never swapped anything");
        let meta = fs::metadata(&victim).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (0, 0),
            "{mode}: a root-owned file was given to the workload user ({swaps} swaps)"
        );
    }
}

fn nix_is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n")
}

fn nix_terminate(pid: u32) {
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

/// Verifies and restores a backup; panics with the error.
async fn verify_and_restore(
    env: &Env,
    layout: &synapse_backup::Layout,
    id: &synapse_backup::BackupId,
) -> synapse_backup::RestoreReport {
    let c = LocalContainer::new();
    let options = synapse_backup::RestoreOptions::default();
    synapse_backup::verify_backup_with(&c, &env.params, PASSPHRASE, id, layout, &options)
        .await
        .unwrap_or_else(|e| panic!("verify refused a complete backup: {e}"));
    synapse_backup::restore_backup_with(&c, &env.params, PASSPHRASE, id, layout, &options)
        .await
        .unwrap_or_else(|e| panic!("restore refused a complete backup: {e}"))
}

/// A layout whose `tar` is a wrapper that runs `mutate` (a bash script body, with
/// `$TAR_CHECKPOINT` set) at every 10 KiB record of the archive it creates: a live
/// homeserver changing files while tar reads them, deterministically (tar waits for
/// the script).
fn live_layout(env: &Env, mutate: &str) -> synapse_backup::Layout {
    let bin = env.dir.path().join("live-bin");
    fs::create_dir_all(&bin).unwrap();
    let script = bin.join("mutate");
    fs::write(&script, format!("#!/bin/bash\nset -eu\n{mutate}\n")).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let tar = bin.join("tar");
    fs::write(
        &tar,
        format!(
            "#!/bin/bash\nif [ \"$1\" = --create ]; then exec tar --checkpoint=1 --checkpoint-action=exec='{}' \"$@\"; fi\nexec tar \"$@\"\n",
            script.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&tar, fs::Permissions::from_mode(0o755)).unwrap();
    env.layout.clone().tar(tar.to_string_lossy().into_owned())
}

/// While tar runs, a file it is reading shrinks, another grows,
/// one not yet read is deleted, one is added and a whole `local_thumbnails` is purged.
/// The backup succeeds, says what changed, and verify and restore accept it.
#[tokio::test(flavor = "multi_thread")]
async fn a_live_media_store_makes_a_complete_restorable_backup() {
    let env = Env::new(&TreeSpec {
        media_files: 4,
        ..TreeSpec::default()
    })
    .await;
    let content = env.tree.media.join("local_content");
    let thumbs = env.tree.media.join("local_thumbnails");
    let mut rng = synapse_tree::Rng::new(7);
    // Named to sort first: tar (--sort=name) reads them first.
    fs::create_dir_all(content.join("0")).unwrap();
    synapse_tree::write_random(&content.join("0/big"), 2 << 20, &mut rng);
    synapse_tree::write_random(&content.join("0/grow"), 2 << 20, &mut rng);
    fs::write(content.join("zz-gone"), "deleted mid-backup").unwrap();
    let layout = live_layout(
        &env,
        &format!(
            r#"c='{}'; t='{}'
case "$TAR_CHECKPOINT" in
  50) truncate -s 100000 "$c/0/big"; rm -f "$c/zz-gone"; echo new >"$c/ac-new"; rm -rf "$t" ;;
  300) head -c 1048576 /dev/zero >>"$c/0/grow" ;;
esac"#,
            content.display(),
            thumbs.display()
        ),
    );
    let c = LocalContainer::new();
    let report = create_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &layout,
        &BackupOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("a live tree must not fail the backup: {e}"));
    let changes = &report.live_changes;
    assert_eq!(changes.removed, 1, "{changes:?}");
    assert_eq!(
        changes.shrunk,
        ["data/media_store/local_content/0/big"],
        "{changes:?}"
    );
    assert_eq!(
        changes.changed,
        ["data/media_store/local_content/0/grow"],
        "{changes:?}"
    );
    assert_eq!(
        changes.dirs_changed,
        ["data/media_store/local_content"],
        "{changes:?}"
    );
    assert_eq!(
        changes.vanished,
        ["data/media_store/local_thumbnails"],
        "{changes:?}"
    );
    let warnings = report.manifest.warnings.join("\n");
    assert!(warnings.contains("0/big shrank"), "{warnings}");
    let names: Vec<String> = files_of(&env, &report)
        .await
        .iter()
        .map(|f| String::from_utf8_lossy(f.path.as_bytes()).into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with("zz-gone")), "{names:?}");
    assert!(
        !names.iter().any(|n| n.contains("local_thumbnails")),
        "{names:?}"
    );
    verify_and_restore(&env, &env.layout, &report.id).await;
    // The archived copies: the shrunk file zero-padded to its first size, the grown
    // one at the size tar first saw.
    assert_eq!(fs::metadata(content.join("0/big")).unwrap().len(), 2 << 20);
    assert_eq!(fs::metadata(content.join("0/grow")).unwrap().len(), 2 << 20);
    assert!(!content.join("zz-gone").exists());
}

/// A media upload (a new file) while tar runs does not fail the backup.
#[tokio::test(flavor = "multi_thread")]
async fn a_media_upload_during_the_backup_does_not_fail_it() {
    let env = Env::new(&TreeSpec::default()).await;
    let content = env.tree.media.join("local_content");
    let layout = live_layout(
        &env,
        &format!(
            r#"if [ "$TAR_CHECKPOINT" = 3 ]; then mkdir -p '{0}/zz'; echo upload >'{0}/zz/new'; echo upload >'{0}/new-top'; fi"#,
            content.display()
        ),
    );
    let c = LocalContainer::new();
    let report = create_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &layout,
        &BackupOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("an upload during the backup must not fail it: {e}"));
    assert!(
        report
            .manifest
            .warnings
            .iter()
            .any(|w| w.contains("added while the backup ran")),
        "{:?}",
        report.manifest.warnings
    );
    verify_and_restore(&env, &env.layout, &report.id).await;
}

/// A symlinked data dir (holding the database, media and key) and a
/// symlinked signing key are followed and archived under their configured names, and
/// the backup restores.
#[tokio::test(flavor = "multi_thread")]
async fn symlinked_data_dir_media_store_and_signing_key_are_backed_up() {
    use std::os::unix::fs::symlink;
    let env = Env::new(&TreeSpec::default()).await;
    let before = env.tree.backed_up_files();
    let db_dump = dump_db(&env.tree.data.join("homeserver.db"));
    // /data is a volume mounted elsewhere; the media store another volume; the key a
    // mounted secret.
    let volumes = env.dir.path().join("volumes");
    fs::create_dir_all(&volumes).unwrap();
    fs::rename(&env.tree.data, volumes.join("data")).unwrap();
    symlink(volumes.join("data"), &env.tree.data).unwrap();
    fs::rename(
        env.tree.data.join("media_store"),
        volumes.join("media_store"),
    )
    .unwrap();
    symlink(
        volumes.join("media_store"),
        env.tree.data.join("media_store"),
    )
    .unwrap();
    let key = env.tree.data.join("example.test.signing.key");
    fs::rename(&key, volumes.join("signing.key")).unwrap();
    symlink(volumes.join("signing.key"), &key).unwrap();

    let report = env
        .create(&LocalContainer::new())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<String> = files_of(&env, &report)
        .await
        .iter()
        .map(|f| String::from_utf8_lossy(f.path.as_bytes()).into_owned())
        .collect();
    for want in [
        "data/homeserver.db",
        "data/example.test.signing.key",
        "data/media_store/local_content",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    assert_eq!(
        report.manifest.database,
        synapse_backup::DatabaseSnapshot::Sqlite
    );
    // The key is archived as the file it points to.
    let files = files_of(&env, &report).await;
    let key_entry = files
        .iter()
        .find(|f| f.path.as_bytes() == b"data/example.test.signing.key")
        .unwrap();
    assert_eq!(key_entry.kind, synapse_backup::EntryKind::File);
    let media_files = names
        .iter()
        .filter(|n| n.starts_with("data/media_store/local_"))
        .count();
    assert!(media_files > 40, "{media_files} media entries");

    let out = manual_restore(&env, &report.key);
    let mut restored = files_under(&out);
    restored.remove(Path::new(".synapse-backup/manifest.json"));
    restored.remove(Path::new("data/homeserver.db"));
    assert_eq!(restored, before, "archived bytes differ from the tree");
    verify_and_restore(&env, &env.layout, &report.id).await;
    assert_eq!(dump_db(&env.tree.data.join("homeserver.db")), db_dump);
}

/// A symlinked `local_*` dir is refused with an error naming it, not
/// silently archived as a link restore would refuse.
#[tokio::test(flavor = "multi_thread")]
async fn a_symlinked_local_media_dir_is_refused_by_name() {
    use std::os::unix::fs::symlink;
    let env = Env::new(&TreeSpec::default()).await;
    let thumbs = env.tree.media.join("local_thumbnails");
    let elsewhere = env.dir.path().join("thumbs");
    fs::rename(&thumbs, &elsewhere).unwrap();
    symlink(&elsewhere, &thumbs).unwrap();
    let e = env.create(&LocalContainer::new()).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("/data/media_store/local_thumbnails is a symbolic link"),
        "{e}"
    );
    assert!(env.objects_in_bucket().is_empty());
}

/// Hard-linked media are archived as files, and the backup restores.
#[tokio::test(flavor = "multi_thread")]
async fn hard_linked_media_are_restorable() {
    let env = Env::new(&TreeSpec::default()).await;
    let content = env.tree.media.join("local_content");
    fs::create_dir_all(content.join("hl")).unwrap();
    fs::write(content.join("hl/original"), "the same bytes twice").unwrap();
    fs::hard_link(content.join("hl/original"), content.join("hl/linked")).unwrap();
    let before = env.tree.backed_up_files();
    let report = env
        .create(&LocalContainer::new())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = synapse_backup::S3Client::new(&env.params).unwrap();
    let manifest = synapse_backup::read_manifest(&client, &report.id)
        .await
        .unwrap();
    assert!(
        manifest
            .files
            .iter()
            .any(|f| f.path.as_bytes().ends_with(b"hl/linked"))
            && manifest
                .files
                .iter()
                .all(|f| f.kind == synapse_backup::EntryKind::File
                    || f.kind == synapse_backup::EntryKind::Dir),
        "hard links must be archived as files"
    );
    verify_and_restore(&env, &env.layout, &report.id).await;
    let after = env.tree.backed_up_files();
    assert_eq!(after, before);
    assert_eq!(
        fs::read(content.join("hl/linked")).unwrap(),
        b"the same bytes twice"
    );
}

/// A `homeserver.yaml` error names the file, line and problem but never
/// quotes the file (a line may hold `macaroon_secret_key`); duplicate keys are accepted
/// as Synapse accepts them, the last one winning.
#[tokio::test(flavor = "multi_thread")]
async fn homeserver_yaml_errors_hide_secrets_and_duplicate_keys_are_accepted() {
    let env = Env::new(&TreeSpec::default()).await;
    let yaml = env.tree.data.join("homeserver.yaml");
    let c = LocalContainer::new();
    let secret = "Zm9vYmFyLXNlY3JldC12YWx1ZQ";
    for (text, problem_line) in [
        (
            format!(
                "server_name: example.test\nmacaroon_secret_key: \"{secret}\nmedia_store_path: [x\n"
            ),
            None,
        ),
        (
            format!(
                "server_name: example.test\nmacaroon_secret_key: {secret}\nmedia_store_path: [{secret}\n"
            ),
            Some(3),
        ),
        (
            format!("server_name: example.test\ndatabase: {secret}\n"),
            None,
        ),
        (
            format!("server_name: example.test\nmedia_store_path: {{ {secret}: 1 }}\n"),
            None,
        ),
    ] {
        fs::write(&yaml, &text).unwrap();
        let e = env.create(&c).await.unwrap_err();
        let message = e.to_string();
        assert!(matches!(e, BackupError::Config(_)), "{message}");
        assert!(!message.contains(secret), "the secret leaked: {message}");
        assert!(
            message.contains("homeserver.yaml")
                || message.contains("database")
                || message.contains("media_store_path"),
            "{message}"
        );
        if let Some(line) = problem_line {
            assert!(message.contains(&format!("line {line}")), "{message}");
        }
    }
    // Duplicate keys: the last wins, as with Synapse's loader.
    let elsewhere = env.tree.data.join("media_elsewhere");
    fs::create_dir_all(elsewhere.join("local_content")).unwrap();
    fs::write(elsewhere.join("local_content/only-here"), "x").unwrap();
    fs::write(
        &yaml,
        "server_name: first.test\nmedia_store_path: /data/media_store\nserver_name: example.test\nmedia_store_path: /data/media_elsewhere\n",
    )
    .unwrap();
    let report = env.create(&c).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.manifest.server_name.as_deref(), Some("example.test"));
    assert_eq!(
        report.manifest.layout.media_store_path,
        "/data/media_elsewhere"
    );
    assert!(
        files_of(&env, &report)
            .await
            .iter()
            .any(|f| f.path.as_bytes() == b"data/media_elsewhere/local_content/only-here")
    );
}

/// A database another process keeps locked fails the snapshot after
/// the snapshot timeout with a clear error, instead of hanging the backup.
#[tokio::test(flavor = "multi_thread")]
async fn a_permanently_locked_database_times_out_with_a_clear_error() {
    use std::io::BufRead;
    let env = Env::new(&TreeSpec::default()).await;
    let db = env.tree.data.join("homeserver.db");
    let mut holder = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('PRAGMA locking_mode=EXCLUSIVE')\n\
             c.execute('BEGIN EXCLUSIVE')\n\
             c.execute('UPDATE events SET body = body')\n\
             print('locked', flush=True)\n\
             time.sleep(3600)\n",
        )
        .arg(&db)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is needed: sudo apt-get install -y python3");
    let mut line = String::new();
    std::io::BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    let options =
        BackupOptions::default().snapshot_timeout(Some(std::time::Duration::from_secs(3)));
    let c = LocalContainer::new();
    // Far longer than the snapshot timeout: only a hang reaches it.
    let outcome = tokio::time::timeout(
        std::time::Duration::from_secs(300),
        create_backup_with(&c, &env.params, PASSPHRASE, &env.layout, &options),
    )
    .await;
    let _ = holder.kill();
    let _ = holder.wait();
    let e = outcome
        .expect("create hung on a locked database")
        .unwrap_err();
    assert!(
        matches!(
            e,
            BackupError::StageFailed {
                stage: Stage::Snapshot,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("did not finish within 3 s"), "{e}");
    assert!(e.to_string().contains("locked"), "{e}");
    assert!(env.objects_in_bucket().is_empty());
    assert!(env.work_dirs_left().is_empty());
}

/// The file list of the manifest `create` uploaded (the report does not hold it).
async fn files_of(
    env: &Env,
    report: &synapse_backup::BackupReport,
) -> Vec<synapse_backup::ManifestEntry> {
    let client = synapse_backup::S3Client::new(&env.params).unwrap();
    synapse_backup::read_manifest(&client, &report.id)
        .await
        .unwrap()
        .files
}

/// Gives the tree to `nobody` (reachable by it) and returns a layout that runs as it.
fn as_nobody(env: &Env) -> synapse_backup::Layout {
    assert!(
        nix_is_root(),
        "this test runs as root (it switches to nobody): run the tests as root"
    );
    sh(
        "chmod -R a+rX \"$1\" && chmod 0755 \"$2\" && chown -R nobody:nogroup \"$1/data\"",
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
}

/// The workload user replaces `homeserver.yaml` with a symlink to a root-only YAML file
/// (or the media store with one to a root-only dir): a backup run by root as that user
/// reads neither, so nothing of them lands in the manifest or the bucket.
#[tokio::test(flavor = "multi_thread")]
async fn workload_paths_are_read_as_the_workload_user_never_as_root() {
    let env = Env::new(&TreeSpec {
        media_files: 5,
        ..TreeSpec::default()
    })
    .await;
    let layout = as_nobody(&env);
    let secret = env.dir.path().join("root-only.yaml");
    fs::write(
        &secret,
        "server_name: root-secret.example\nmedia_store_path: /data/media_store\n",
    )
    .unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let config = env.tree.data.join("homeserver.yaml");
    fs::remove_file(&config).unwrap();
    std::os::unix::fs::symlink(&secret, &config).unwrap();
    let c = LocalContainer::new();
    let e = create_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &layout,
        &BackupOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, BackupError::Config(_)) && e.to_string().contains("homeserver.yaml"),
        "{e}"
    );
    assert!(!e.to_string().contains("root-secret"), "{e}");
    assert!(
        env.objects_in_bucket().is_empty(),
        "{:?}",
        env.objects_in_bucket()
    );

    // The media store a symlink to a dir only root may list: its names are not read.
    fs::remove_file(&config).unwrap();
    fs::write(
        &config,
        "server_name: example.test\nmedia_store_path: /data/media_store\n",
    )
    .unwrap();
    let hidden = env.dir.path().join("root-only-media");
    fs::create_dir_all(hidden.join("local_root_secret_name")).unwrap();
    fs::set_permissions(&hidden, fs::Permissions::from_mode(0o700)).unwrap();
    fs::rename(&env.tree.media, env.dir.path().join("old-media")).unwrap();
    std::os::unix::fs::symlink(&hidden, &env.tree.media).unwrap();
    let outcome = create_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &layout,
        &BackupOptions::default(),
    )
    .await;
    match outcome {
        Err(e) => assert!(!e.to_string().contains("local_root_secret_name"), "{e}"),
        Ok(report) => {
            let manifest = fs::read_to_string(
                env.bucket_dir()
                    .join(format!("{}.manifest.json", report.key)),
            )
            .unwrap();
            assert!(!manifest.contains("local_root_secret_name"), "{manifest}");
        }
    }
}

/// The processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(needle) {
                found.push(format!("{}: {text}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

/// A backup cancelled (Ctrl-C) while the snapshot waits for a locked database leaves
/// no snapshot process running: `timeout` stays in the run's process group, which the
/// cancellation kills.
#[tokio::test(flavor = "multi_thread")]
async fn a_backup_cancelled_during_the_snapshot_leaves_no_snapshot_running() {
    use std::io::BufRead;
    let env = Env::new(&TreeSpec::default()).await;
    let db = env.tree.data.join("homeserver.db");
    let mut holder = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('PRAGMA locking_mode=EXCLUSIVE')\n\
             c.execute('BEGIN EXCLUSIVE')\n\
             c.execute('UPDATE events SET body = body')\n\
             print('locked', flush=True)\n\
             time.sleep(3600)\n",
        )
        .arg(&db)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is needed: sudo apt-get install -y python3");
    let mut line = String::new();
    std::io::BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    let options = BackupOptions::default().snapshot_timeout(None);
    let cancel = options.cancel.clone();
    let c = LocalContainer::new();
    let needle = format!("{} ", db.display());
    let run = create_backup_with(&c, &env.params, PASSPHRASE, &env.layout, &options);
    let watcher = async {
        // Cancel once the snapshot is running.
        for _ in 0..600 {
            if processes_mentioning(&needle)
                .iter()
                .any(|p| p.contains("snap.db"))
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        cancel.cancel();
    };
    let (outcome, ()) = tokio::join!(run, watcher);
    let e = outcome.unwrap_err();
    assert!(matches!(e, BackupError::Cancelled), "{e}");
    let mut left = Vec::new();
    for _ in 0..30 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        left = processes_mentioning(&needle)
            .into_iter()
            .filter(|p| p.contains("snap.db"))
            .collect();
        if left.is_empty() {
            break;
        }
    }
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(left.is_empty(), "still running: {left:?}");
    assert!(env.objects_in_bucket().is_empty());
}

/// The database snapshot never fills the volume it is written to: with less free
/// space than the database needs, create says so before writing anything.
#[tokio::test(flavor = "multi_thread")]
async fn the_snapshot_is_refused_when_it_would_fill_the_volume() {
    let env = Env::new(&TreeSpec {
        media_files: 2,
        db_rows: 4000,
        ..TreeSpec::default()
    })
    .await;
    let db_bytes = fs::metadata(env.tree.data.join("homeserver.db"))
        .unwrap()
        .len();
    assert!(db_bytes > 3 << 20, "{db_bytes}");
    let _mount = env.small_tmpfs("small", "2m");
    let layout = env.layout.clone().work_dir(Some("/small".into()));
    let c = LocalContainer::new();
    let e = create_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &layout,
        &BackupOptions::default(),
    )
    .await
    .unwrap_err();
    match &e {
        BackupError::InsufficientSpace {
            path,
            needed,
            available,
        } => {
            assert!(path.ends_with("/small"), "{e}");
            assert!(*needed >= db_bytes && *available < *needed, "{e}");
        }
        other => panic!("expected InsufficientSpace, got {other}"),
    }
    assert!(env.objects_in_bucket().is_empty());
    let small = env.tree.root.join("small");
    assert_eq!(fs::read_dir(&small).unwrap().count(), 0, "work dir left");
}

/// A snapshot that fits but would leave less than the reserve free is not taken: the
/// homeserver keeps writing beside it until the upload ends. Before, create took it
/// and left the volume with what little was over for the whole backup.
/// `space_reserve_mib(0)` takes it.
#[tokio::test(flavor = "multi_thread")]
async fn the_snapshot_keeps_the_space_reserve_free() {
    let env = Env::new(&TreeSpec {
        media_files: 2,
        db_rows: 4000,
        ..TreeSpec::default()
    })
    .await;
    let db_bytes = fs::metadata(env.tree.data.join("homeserver.db"))
        .unwrap()
        .len();
    // Room for the snapshot (the database and an eighth) with 1 to 2 MiB over.
    let size = (db_bytes + db_bytes / 8 + (3 << 19)) >> 10;
    let _mount = env.small_tmpfs("small", &format!("{size}k"));
    let layout = env.layout.clone().work_dir(Some("/small".into()));
    let c = LocalContainer::new();
    let create = |reserve: u32| {
        let (env, c, layout) = (&env, &c, &layout);
        async move {
            let options = BackupOptions::default().space_reserve_mib(reserve);
            create_backup_with(c, &env.params, PASSPHRASE, layout, &options).await
        }
    };
    let e = create(4).await.unwrap_err();
    match &e {
        BackupError::SpaceReserve {
            path,
            needed,
            available,
            reserve,
        } => {
            assert!(path.ends_with("/small"), "{e}");
            assert_eq!(*reserve, 4 << 20, "{e}");
            assert!(*needed >= db_bytes && *available >= *needed, "{e}");
            assert!(*available < *needed + *reserve, "{e}");
        }
        other => panic!("expected SpaceReserve, got {other}"),
    }
    assert!(
        e.to_string().contains("kept free for the live homeserver"),
        "{e}"
    );
    assert!(env.objects_in_bucket().is_empty());
    let small = env.tree.root.join("small");
    assert_eq!(fs::read_dir(&small).unwrap().count(), 0, "work dir left");
    create(0).await.unwrap();
}

/// The CLI is killed (SIGKILL) while its upload runs: the pipeline does not outlive it
/// (the workload script's watchdog kills the pipeline's process group), and the next
/// run's sweep removes the work dir it left.
#[test]
fn a_killed_cli_leaves_no_pipeline_running_and_the_next_run_sweeps_its_work_dir() {
    use std::time::{Duration, Instant};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(Env::new(&TreeSpec {
        media_files: 4,
        ..TreeSpec::default()
    }));
    let (s3, pass) = env.cli_files();
    // An aws CLI that records its pid and never uploads (the upload "runs" forever).
    let marker = env.dir.path().join("aws-pid");
    let stuck_aws = env.dir.path().join("stuck-aws");
    fs::write(
        &stuck_aws,
        format!(
            "#!/usr/bin/env bash\necho $$ > '{}'\nwhile :; do sleep 0.05; done\n",
            marker.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&stuck_aws, fs::Permissions::from_mode(0o755)).unwrap();
    let mut cli = std::process::Command::new(env!("CARGO_BIN_EXE_synapse-backup"))
        .arg("--root")
        .arg(&env.tree.root)
        .arg("--s3")
        .arg(&s3)
        .arg("--passphrase-file")
        .arg(&pass)
        .arg("--aws")
        .arg(&stuck_aws)
        .arg("create")
        .env_remove("SYNAPSE_BACKUP_ROOT")
        .env_remove("SYNAPSE_BACKUP_S3")
        .env_remove("SYNAPSE_BACKUP_PASSPHRASE")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let aws_pid: i32 = loop {
        if let Ok(text) = fs::read_to_string(&marker)
            && let Ok(pid) = text.trim().parse()
        {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "the create never reached the aws CLI"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    cli.kill().unwrap();
    cli.wait().unwrap();
    let alive = |pid: i32| {
        Path::new(&format!("/proc/{pid}")).exists() && {
            // A zombie waiting for its reaper is gone too.
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    !s.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
                .unwrap_or(false)
        }
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while alive(aws_pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let still = alive(aws_pid);
    if still {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &aws_pid.to_string()])
            .status();
    }
    assert!(!still, "the upload outlived the killed CLI");
    assert!(
        !env.work_dirs_left().is_empty(),
        "the killed run's dir is there"
    );
    let layout = env.layout.clone();
    let c = LocalContainer::new();
    let removed = rt.block_on(synapse_backup::remove_abandoned_work_dirs(&c, &layout));
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert!(
        env.work_dirs_left().is_empty(),
        "{:?}",
        env.work_dirs_left()
    );
}

//! `Transfer::Library`: the library downloads (ranged GETs) and streams the ciphertext
//! into the workload's `gpg --decrypt | tar` through `Container::exec_streaming`. The
//! same checks as with the workload's aws CLI, which these tests take away (the
//! layout's `aws` names no program), and nothing of the bucket's in the workload. And
//! the same for a create: the workload's `tar | gpg | checksum` writes the ciphertext
//! to its standard output and the library uploads it (a multipart upload).

use crate::support::{env, faulty, synapse_tree};

use std::fs;

use crate::support::s3_server::sse_c::SeenRequest;
use base64::Engine as _;
use env::{Env, PASSPHRASE};
use faulty::{Faulty, Seen};
use sha2::Digest as _;

use synapse_backup::{
    BackupError, BackupOptions, ExtractTarget, Layout, LocalContainer, RestoreOptions, Stage,
    Transfer, create_backup_with, extract_backup_with, restore_backup_with, verify_backup_with,
};
use synapse_tree::{TreeSpec, change_db, dump_db, walk};

const CUSTOMER_KEY: &str = "kbdHqFF4TiFej05J2TfqXDRc4QcyvesAQYmfnQvOosY=";

fn library() -> RestoreOptions {
    RestoreOptions::default().transfer(Transfer::Library)
}

/// The layout with no aws CLI in the workload: a library transfer must not need one.
fn without_aws(layout: &Layout) -> Layout {
    layout.clone().aws("/nonexistent/no-aws-cli-here")
}

/// What a restore must give back: the backed-up files and the database's rows.
struct Before {
    files: std::collections::BTreeMap<std::path::PathBuf, Vec<u8>>,
    db: String,
}

impl Before {
    /// The live tree and database are as they were backed up.
    fn assert_given_back(&self, env: &Env) {
        assert_eq!(env.tree.backed_up_files(), self.files);
        assert_eq!(dump_db(&env.tree.data.join("homeserver.db")), self.db);
    }
}

/// A tree of about 21 MB of media backed up (the workload's transfer): what a restore
/// must give back, the env, the container, the backup and the layout without an aws CLI.
async fn backed_up_21_mb() -> (
    Before,
    Env,
    LocalContainer,
    synapse_backup::BackupId,
    Layout,
) {
    let spec = TreeSpec {
        media_bytes: 20 << 20,
        ..TreeSpec::default()
    };
    let env = Env::new(&spec).await;
    let c = LocalContainer::new();
    let db = env.tree.data.join("homeserver.db");
    let before_files = env.tree.backed_up_files();
    let before_db = dump_db(&db);
    let id = env.create(&c).await.unwrap().id;
    let layout = without_aws(&env.layout);
    let before = Before {
        files: before_files,
        db: before_db,
    };
    (before, env, c, id, layout)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_library_restore_restores_byte_for_byte_without_an_aws_cli() {
    // About 21 MB. The verify reads it in one streamed GET (a 1024 MiB range, as where
    // ranges cost much); the restore and the extract with the default ranges, chosen
    // per object (the first 16 MiB timed, then the rest); the cuts between ranges and
    // the choice are `transfer::feed`'s unit tests.
    let (b, env, c, id, layout) = backed_up_21_mb().await;
    let db = env.tree.data.join("homeserver.db");

    let one_stream = library().library_range_mib(1024);
    let report = verify_backup_with(&c, &env.params, PASSPHRASE, &id, &layout, &one_stream)
        .await
        .unwrap();
    assert!(
        report.authenticated_manifest && report.members > 10,
        "{report:?}"
    );

    let first_media = walk(&env.tree.media.join("local_content"))[0].clone();
    fs::write(&first_media, b"overwritten").unwrap();
    fs::write(env.tree.media.join("local_content/new-file"), b"added").unwrap();
    change_db(&db);
    let restored = restore_backup_with(&c, &env.params, PASSPHRASE, &id, &layout, &library())
        .await
        .unwrap();
    assert!(
        restored
            .restored
            .contains(&"data/homeserver.db".to_string()),
        "{:?}",
        restored.restored
    );
    b.assert_given_back(&env);
    assert!(!env.tree.media.join("local_content/new-file").exists());
    assert!(
        env.work_dirs_left().is_empty(),
        "{:?}",
        env.work_dirs_left()
    );

    // The same layout with the workload's transfer needs the aws CLI: proof that the
    // library's did not use it.
    let e = verify_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &id,
        &layout,
        &RestoreOptions::default(),
    )
    .await;
    assert!(e.is_err(), "no aws CLI, yet the workload's transfer worked");

    let target = env.dir.path().join("extracted");
    let extracted = extract_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &id,
        &layout,
        &ExtractTarget::new(target.to_string_lossy().into_owned()),
        &library(),
    )
    .await
    .unwrap();
    assert!(
        extracted
            .extracted
            .contains(&"data/homeserver.db".to_string()),
        "{extracted:?}"
    );
    assert_eq!(
        fs::read(target.join("data/homeserver.db")).unwrap(),
        fs::read(&db).unwrap()
    );
}

/// Ranges small enough to be read ahead (1 MiB, 4 in flight: about 21 of them, each
/// downloaded whole while the one before is written) give back the same bytes, and a
/// byte flipped in a range past the first or an object cut short is refused as with one
/// stream.
#[tokio::test(flavor = "multi_thread")]
async fn a_library_restore_read_ahead_in_small_ranges_restores_and_refuses_tampering() {
    let (b, env, c, id, layout) = backed_up_21_mb().await;
    let db = env.tree.data.join("homeserver.db");
    let options = library().library_range_mib(1).library_ranges_in_flight(4);

    let first_media = walk(&env.tree.media.join("local_content"))[0].clone();
    fs::write(&first_media, b"overwritten").unwrap();
    change_db(&db);
    let restored = restore_backup_with(&c, &env.params, PASSPHRASE, &id, &layout, &options)
        .await
        .unwrap();
    assert!(restored.ciphertext_bytes > 10 << 20, "{restored:?}");
    b.assert_given_back(&env);

    let object = env.bucket_dir().join(format!("synapse/backups/{id}"));
    let original = fs::read(&object).unwrap();
    let mut flipped = original.clone();
    // In the seventh range, long after the first was written.
    flipped[(6 << 20) + 12_345] ^= 0x01;
    fs::write(&object, &flipped).unwrap();
    let e = env
        .assert_restore_fails(&c, &id, PASSPHRASE, &layout, &options)
        .await;
    // gpg's integrity check or our SHA-256, whichever sees it first: refused.
    assert!(matches!(&e, BackupError::Corrupted { .. }), "{e}");
    fs::write(&object, &original[..original.len() - (3 << 20)]).unwrap();
    let e = env
        .assert_restore_fails(&c, &id, PASSPHRASE, &layout, &options)
        .await;
    assert!(matches!(&e, BackupError::Corrupted { .. }), "{e}");
    b.assert_given_back(&env);
    assert!(
        env.work_dirs_left().is_empty(),
        "{:?}",
        env.work_dirs_left()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_library_restore_refuses_a_tampered_object_and_a_wrong_passphrase() {
    let env = Env::new(&TreeSpec::default()).await;
    let c = LocalContainer::new();
    let id = env.create(&c).await.unwrap().id;
    let layout = without_aws(&env.layout);
    let object = env.bucket_dir().join(format!("synapse/backups/{id}"));
    let original = fs::read(&object).unwrap();

    let options = library();
    let restore =
        |passphrase: &'static str| env.assert_restore_fails(&c, &id, passphrase, &layout, &options);
    let e = restore("not the passphrase").await;
    assert!(matches!(e, BackupError::WrongPassphrase { .. }), "{e}");

    let mut flipped = original.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    fs::write(&object, &flipped).unwrap();
    // Our SHA-256 check, or the SDK's of the checksum the server stored (when one GET
    // reads the whole object): corrupted either way.
    let e = restore(PASSPHRASE).await;
    assert!(
        matches!(&e, BackupError::Corrupted { reason, .. }
            if reason.contains("SHA-256") || reason.contains("checksum")),
        "{e}"
    );

    // Replaced by a shorter object: its size no longer matches the manifest.
    fs::write(&object, &original[..original.len() - 1000]).unwrap();
    let e = restore(PASSPHRASE).await;
    assert!(matches!(&e, BackupError::Corrupted { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_c_with_a_library_restore_puts_no_key_or_credential_in_the_workload() {
    let spec = TreeSpec {
        media_bytes: 7 << 20,
        ..TreeSpec::default()
    };
    let mut env = Env::new(&spec).await;
    env.params = env.params_with(&[(
        "attributes",
        &format!("X-Amz-Server-Side-Encryption-Customer-Key={CUSTOMER_KEY}"),
    )]);
    let before = env.tree.backed_up_files();
    // The backup with today's transfer (the aws CLI in the workload).
    let id = env.create(&LocalContainer::new()).await.unwrap().id;
    fs::write(env.tree.media.join("local_content/new-file"), b"added").unwrap();

    let c = Faulty::new(LocalContainer::new());
    env.server.sse().clear_seen();
    let layout = without_aws(&env.layout);
    verify_backup_with(&c, &env.params, PASSPHRASE, &id, &layout, &library())
        .await
        .unwrap();
    restore_backup_with(&c, &env.params, PASSPHRASE, &id, &layout, &library())
        .await
        .unwrap();
    assert_eq!(env.tree.backed_up_files(), before);

    // The library's GETs carried the key...
    let gets: Vec<_> = env
        .server
        .sse()
        .seen()
        .into_iter()
        .filter(|r| r.operation == "GetObject")
        .collect();
    assert!(gets.len() >= 2, "{gets:?}");
    assert!(
        gets.iter().all(|r| r.headers.contains(&(
            "x-amz-server-side-encryption-customer-key".into(),
            CUSTOMER_KEY.into()
        ))),
        "{gets:?}"
    );
    // ... and nothing of the bucket's went into the workload.
    nothing_of_the_buckets(&env, &c.seen);
    let names = c.seen.env_names();
    assert!(names.iter().any(|n| n == "SB_INPUT"), "{names:?}");

    // The backup is an SSE-C object: without the key the library's GET is refused,
    // as an S3 error, with nothing left behind.
    let without_key = env.params_with(&[]);
    let e = verify_backup_with(&c, &without_key, PASSPHRASE, &id, &layout, &library())
        .await
        .unwrap_err();
    assert!(matches!(e, BackupError::S3(_)), "{e}");
    assert!(
        env.work_dirs_left().is_empty(),
        "{:?}",
        env.work_dirs_left()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_incremental_backup_is_restored_by_the_library() {
    let env = Env::new(&TreeSpec::default()).await;
    let c = LocalContainer::new();
    let options = BackupOptions::default().incremental(true);
    create_backup_with(&c, &env.params, PASSPHRASE, &env.layout, &options)
        .await
        .unwrap();
    fs::write(
        env.tree.media.join("local_content/after-the-full"),
        b"new media",
    )
    .unwrap();
    let report = create_backup_with(&c, &env.params, PASSPHRASE, &env.layout, &options)
        .await
        .unwrap();
    let before = env.tree.backed_up_files();
    for file in walk(&env.tree.media.join("local_content")) {
        fs::write(file, b"damaged").unwrap();
    }
    let layout = without_aws(&env.layout);
    let restored =
        restore_backup_with(&c, &env.params, PASSPHRASE, &report.id, &layout, &library())
            .await
            .unwrap();
    assert!(restored.packs >= 2, "a chain of two packs: {restored:?}");
    assert_eq!(env.tree.backed_up_files(), before);
}

fn library_create() -> BackupOptions {
    BackupOptions::default().transfer(Transfer::Library)
}

/// The multipart uploads' leftovers in the s3s-fs server's root (its upload records and
/// parts, `.upload-*` and `.upload_id-*`).
fn uploads_left(env: &Env) -> Vec<String> {
    fs::read_dir(&env.server.root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".upload"))
        .collect()
}

/// Nothing of the bucket's went into the workload (`seen`): no secret key, no SSE-C
/// key, no aws config, no `AWS_*` variable or object address.
fn nothing_of_the_buckets(env: &Env, seen: &Seen) {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(CUSTOMER_KEY)
        .unwrap();
    assert!(
        !seen.holds(CUSTOMER_KEY.as_bytes()),
        "the SSE-C key (base64) went in"
    );
    assert!(!seen.holds(&raw), "the SSE-C key (raw) went in");
    assert!(
        !seen.holds(env.server.secret_key.as_bytes()),
        "the secret key went in"
    );
    assert!(!seen.holds(b"aws_access_key_id") && !seen.holds(b"[default]"));
    let names = seen.env_names();
    assert!(
        !names.iter().any(|n| n.starts_with("AWS_") || n == "SB_URL"),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_library_create_restores_byte_for_byte_with_either_transfer() {
    // Over 2 × 8 MiB: a multipart upload of three parts, two in flight together.
    let spec = TreeSpec {
        media_bytes: 20 << 20,
        ..TreeSpec::default()
    };
    let env = Env::new(&spec).await;
    let c = Faulty::new(LocalContainer::new());
    let before = env.tree.backed_up_files();
    let layout = without_aws(&env.layout);
    let report = create_backup_with(&c, &env.params, PASSPHRASE, &layout, &library_create())
        .await
        .unwrap();
    assert!(
        report.manifest.ciphertext_bytes > 16 << 20,
        "{}",
        report.manifest.ciphertext_bytes
    );
    let object = env
        .bucket_dir()
        .join(format!("synapse/backups/{}", report.id));
    assert_eq!(
        fs::metadata(&object).unwrap().len(),
        report.manifest.ciphertext_bytes
    );
    assert!(c.seen.env_names().iter().any(|n| n == "SB_OUTPUT"));
    nothing_of_the_buckets(&env, &c.seen);
    assert!(uploads_left(&env).is_empty(), "{:?}", uploads_left(&env));

    // Restored by the workload's aws CLI, which checks the SHA-256 the workload
    // computed against what the library uploaded.
    let damage = || {
        for file in walk(&env.tree.media.join("local_content")) {
            fs::write(file, b"damaged").unwrap();
        }
    };
    damage();
    let local = LocalContainer::new();
    let options = RestoreOptions::default();
    restore_backup_with(
        &local,
        &env.params,
        PASSPHRASE,
        &report.id,
        &env.layout,
        &options,
    )
    .await
    .unwrap();
    assert_eq!(env.tree.backed_up_files(), before);

    // And the other way: made by the workload's aws CLI, restored by the library.
    let second = env.create(&local).await.unwrap();
    damage();
    restore_backup_with(&c, &env.params, PASSPHRASE, &second.id, &layout, &library())
        .await
        .unwrap();
    assert_eq!(env.tree.backed_up_files(), before);
    assert!(
        env.work_dirs_left().is_empty(),
        "{:?}",
        env.work_dirs_left()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_library_create_sums_the_stream_itself_and_runs_no_checksum_stage() {
    // The workload's python3 refuses to run the checksum stage (hash.py): a library
    // create sums and counts the ciphertext as it uploads it, and the workload runs
    // `tar | gpg` alone (python3 still snapshots the database).
    let env = Env::new(&TreeSpec::default()).await;
    let python = env.executable(
        "python3-no-hash",
        "#!/bin/bash\ncase \"$*\" in *hexdigest*) echo 'hash.py ran' >&2; exit 99;; esac\nexec python3 \"$@\"\n",
    );
    let layout = without_aws(&env.layout).python3(python);
    let c = LocalContainer::new();
    let report = create_backup_with(&c, &env.params, PASSPHRASE, &layout, &library_create())
        .await
        .unwrap();
    let object = fs::read(
        env.bucket_dir()
            .join(format!("synapse/backups/{}", report.id)),
    )
    .unwrap();
    // What the manifest records is the object's own sum and length.
    assert_eq!(report.manifest.ciphertext_bytes, object.len() as u64);
    let sum: String = sha2::Sha256::digest(&object)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(report.manifest.ciphertext_sha256, sum);
    verify_backup_with(&c, &env.params, PASSPHRASE, &report.id, &layout, &library())
        .await
        .unwrap();
    // The workload's checksum stage still runs when its aws CLI uploads.
    let workload = layout.clone().aws(env.layout.aws.clone());
    let e = create_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &workload,
        &BackupOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("hash.py ran"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_library_create_names_the_stage_and_leaves_no_object_or_upload() {
    // tar fails at the end of 20 MiB (the unreadable file sorts last): parts were
    // uploaded by then.
    let env = Env::new(&TreeSpec {
        media_files: 20,
        media_bytes: 20 << 20,
        ..TreeSpec::default()
    })
    .await;
    let (secret, layout) = env.make_tar_fail_on_its_last_file(&without_aws(&env.layout));
    let e = create_backup_with(
        &LocalContainer::new(),
        &env.params,
        PASSPHRASE,
        &layout,
        &library_create(),
    )
    .await
    .unwrap_err();
    env::assert_tar_was_denied(&e);
    assert!(
        env.objects_in_bucket().is_empty(),
        "{:?}",
        env.objects_in_bucket()
    );
    assert!(uploads_left(&env).is_empty(), "{:?}", uploads_left(&env));
    assert!(env.work_dirs_left().is_empty());

    // gpg failing after 12 MiB of ciphertext (a wrapper that cuts it and exits 3):
    // the library had a multipart upload under way, which is aborted.
    fs::remove_file(&secret).unwrap();
    let wrapper = env.executable(
        "gpg-cut",
        &format!(
            "#!/bin/bash\n{:?} \"$@\" | head -c 12582912\nexit 3\n",
            env.layout.gpg
        ),
    );
    let c = Faulty::new(LocalContainer::new());
    let e = create_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &layout.clone().gpg(wrapper),
        &library_create(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            e,
            BackupError::StageFailed {
                stage: Stage::Gpg,
                exit_code: 3,
                ..
            }
        ),
        "{e}"
    );
    assert!(env.objects_in_bucket().is_empty());
    assert!(uploads_left(&env).is_empty(), "{:?}", uploads_left(&env));
    assert!(env.work_dirs_left().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_c_with_a_library_create_puts_the_key_on_every_part_and_none_in_the_workload() {
    let spec = TreeSpec {
        media_bytes: 12 << 20,
        ..TreeSpec::default()
    };
    let mut env = Env::new(&spec).await;
    env.params = env.params_with(&[
        (
            "attributes",
            &format!("X-Amz-Server-Side-Encryption-Customer-Key={CUSTOMER_KEY}"),
        ),
        ("storage-class", "STANDARD"),
    ]);
    let before = env.tree.backed_up_files();
    let c = Faulty::new(LocalContainer::new());
    env.server.sse().clear_seen();
    let layout = without_aws(&env.layout);
    let report = create_backup_with(&c, &env.params, PASSPHRASE, &layout, &library_create())
        .await
        .unwrap();
    let seen_requests = env.server.sse().seen();
    let writes: Vec<_> = seen_requests
        .iter()
        .filter(|r| {
            [
                "CreateMultipartUpload",
                "UploadPart",
                "CompleteMultipartUpload",
            ]
            .contains(&r.operation)
                && r.object.ends_with(report.id.as_str())
        })
        .collect();
    assert!(
        writes
            .iter()
            .filter(|r| r.operation == "UploadPart")
            .count()
            >= 2,
        "{writes:?}"
    );
    for r in &writes {
        assert!(
            r.headers.contains(&(
                "x-amz-server-side-encryption-customer-key".into(),
                CUSTOMER_KEY.into()
            )),
            "{} without the key: {r:?}",
            r.operation
        );
    }
    nothing_of_the_buckets(&env, &c.seen);

    // The workload's aws CLI reads it back with the key, byte for byte.
    for file in walk(&env.tree.media.join("local_content")) {
        fs::write(file, b"damaged").unwrap();
    }
    let options = RestoreOptions::default();
    restore_backup_with(
        &LocalContainer::new(),
        &env.params,
        PASSPHRASE,
        &report.id,
        &env.layout,
        &options,
    )
    .await
    .unwrap();
    assert_eq!(env.tree.backed_up_files(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_library_create_uploads_the_part_size_and_concurrency_asked() {
    // About 21 MB of ciphertext: 5 parts of the default 5 MiB, 4 of the 6 MiB asked.
    let spec = TreeSpec {
        media_bytes: 20 << 20,
        ..TreeSpec::default()
    };
    let env = Env::new(&spec).await;
    let c = LocalContainer::new();
    let layout = without_aws(&env.layout);
    let client = synapse_backup::S3Client::new(&env.params).unwrap();
    for (part_mib, in_flight) in [(None, None), (Some(6), Some(1))] {
        let mut options = library_create();
        if let (Some(part), Some(n)) = (part_mib, in_flight) {
            options = options.library_part_mib(part).library_parts_in_flight(n);
        }
        let report = create_backup_with(&c, &env.params, PASSPHRASE, &layout, &options)
            .await
            .unwrap();
        let size = report.manifest.ciphertext_bytes;
        let part = u64::from(part_mib.unwrap_or(synapse_backup::LIBRARY_PART_MIB)) << 20;
        assert!(size > 3 * part, "{size}");
        let head = client
            .head_object(&client.object_key(report.id.as_str()))
            .await
            .unwrap();
        assert_eq!(head.size, size);
        let parts = format!("-{}", size.div_ceil(part));
        assert!(
            head.etag.trim_matches('"').ends_with(&parts),
            "{} for {parts}",
            head.etag
        );
        // Read back by the library's download (one GET of the whole object).
        let verified =
            verify_backup_with(&c, &env.params, PASSPHRASE, &report.id, &layout, &library())
                .await
                .unwrap();
        assert!(verified.authenticated_manifest, "{verified:?}");
    }
    assert!(uploads_left(&env).is_empty(), "{:?}", uploads_left(&env));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_library_create_sends_each_parts_crc32_in_a_header_never_a_trailer() {
    // Three parts of 5 MiB and a last one: the upload is created with CRC32 as its
    // checksum algorithm, each part carries its CRC32 as a header value (the payload
    // signed as before, no aws-chunked body, which older servers refuse), and the
    // completion lists every part with its CRC32, as the aws CLI's uploads do.
    let spec = TreeSpec {
        media_bytes: 16 << 20,
        ..TreeSpec::default()
    };
    let env = Env::new(&spec).await;
    let c = LocalContainer::new();
    let layout = without_aws(&env.layout);
    env.server.sse().clear_seen();
    let report = create_backup_with(&c, &env.params, PASSPHRASE, &layout, &library_create())
        .await
        .unwrap();
    let seen = env.server.sse().seen();
    let backup = format!("synapse/backups/{}", report.id);
    let of = |operation: &str| -> Vec<_> {
        seen.iter()
            .filter(|r| r.operation == operation && r.object.ends_with(&backup))
            .collect()
    };
    let value = |r: &&SeenRequest, name: &str| {
        r.integrity
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let created = of("CreateMultipartUpload");
    assert_eq!(created.len(), 1, "{seen:?}");
    assert_eq!(
        value(&created[0], "x-amz-checksum-algorithm").as_deref(),
        Some("CRC32"),
        "{:?}",
        created[0]
    );
    let parts = of("UploadPart");
    let expected = report.manifest.ciphertext_bytes.div_ceil(5 << 20);
    assert_eq!(parts.len() as u64, expected, "{seen:?}");
    for part in &parts {
        let crc = value(part, "x-amz-checksum-crc32").unwrap_or_default();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&crc)
            .unwrap_or_default();
        assert_eq!(raw.len(), 4, "a CRC32 is 4 bytes: {part:?}");
        assert_eq!(value(part, "content-encoding"), None, "{part:?}");
        let sha = value(part, "x-amz-content-sha256").unwrap_or_default();
        assert!(!sha.starts_with("STREAMING-"), "{part:?}");
    }
    let completed = of("CompleteMultipartUpload");
    assert_eq!(completed.len(), 1, "{seen:?}");
    let count = expected.to_string();
    assert_eq!(value(&completed[0], "parts").as_deref(), Some(&count[..]));
    assert_eq!(
        value(&completed[0], "parts with crc32").as_deref(),
        Some(&count[..]),
        "{:?}",
        completed[0]
    );
    // And the object reads back whole.
    verify_backup_with(&c, &env.params, PASSPHRASE, &report.id, &layout, &library())
        .await
        .unwrap();
}

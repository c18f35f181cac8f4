//! Restore trust: only what the passphrase holder made is restored or
//! verified, verify accepts exactly what restore accepts, and a restore leaves a working
//! server. Real tar, gpg, the aws CLI and an S3 server; attackers write to the bucket
//! without the passphrase.

use super::restore;
use crate::support::{env, synapse_tree};

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use env::{Env, PASSPHRASE, sh};
use synapse_backup::{
    BackupError, BackupId, BackupStatus, LocalContainer, RestoreOptions, S3Client, list_backups,
    restore_backup_with, verify_backup_with,
};
use synapse_backup::{
    INNER_MANIFEST_MEMBER, InnerManifest, MANIFEST_FORMAT, Manifest, ManifestEntry, ManifestLayout,
    ManifestPath,
};
use synapse_tree::{TreeSpec, change_db, dump_db, walk};

/// Every entry under the data dir except work dirs: path -> (kind, mode, uid, bytes).
fn snapshot(data: &Path) -> BTreeMap<PathBuf, (u32, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![data.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.to_string_lossy().contains("/.synapse-backup-") {
                continue;
            }
            let meta = fs::symlink_metadata(&p).unwrap();
            let bytes = if meta.is_file() {
                fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            if meta.is_dir() {
                stack.push(p.clone());
            }
            out.insert(
                p.strip_prefix(data).unwrap().to_path_buf(),
                (meta.mode(), meta.uid(), bytes),
            );
        }
    }
    out
}

async fn verify(env: &Env, c: &LocalContainer, id: &BackupId) -> Result<(), BackupError> {
    verify_backup_with(
        c,
        &env.params,
        PASSPHRASE,
        id,
        &env.layout,
        &RestoreOptions::default(),
    )
    .await
    .map(drop)
}

/// A restore that must be refused: live data untouched, no work dir left.
async fn refused(env: &Env, c: &LocalContainer, id: &BackupId) -> BackupError {
    let before = snapshot(&env.tree.data);
    let e = restore(env, c, id, &env.layout).await.unwrap_err();
    assert_eq!(
        snapshot(&env.tree.data),
        before,
        "live data changed by a refused restore ({e})"
    );
    assert!(
        env.work_dirs_left().is_empty(),
        "{:?}",
        env.work_dirs_left()
    );
    e
}

fn key_of(id: &BackupId) -> String {
    format!("synapse/backups/{id}")
}

/// A source tree for hand-made archives, with an attacker's signing key and media.
fn evil_source(env: &Env, name: &str) -> PathBuf {
    let src = env.dir.path().join(name);
    fs::create_dir_all(src.join("data/media_store/local_content/ev")).unwrap();
    fs::write(
        src.join("data/example.test.signing.key"),
        "ed25519 a_evil attacker\n",
    )
    .unwrap();
    fs::write(
        src.join("data/media_store/local_content/ev/il"),
        "evil media",
    )
    .unwrap();
    src
}

/// `tar -c` of `members` under `src` piped through `filter` (a shell pipeline stage
/// reading the tar on stdin, with the passphrase file in `$PASS`), written to `out`.
fn make_object(env: &Env, src: &Path, members: &[&str], filter: &str, out: &Path) {
    let pass = env.dir.path().join("pass");
    fs::write(&pass, PASSPHRASE).unwrap();
    let script = format!(
        r#"src=$1; out=$2; PASS=$3; shift 3
           (cd "$src" && tar -c -- "$@") | {filter} >"$out""#
    );
    let mut args = vec![
        src.to_string_lossy().into_owned(),
        out.to_string_lossy().into_owned(),
        pass.to_string_lossy().into_owned(),
    ];
    args.extend(members.iter().map(|m| m.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    sh(&script, env, &refs);
}

const ENCRYPT: &str = r#"gpg --batch --no-symkey-cache --pinentry-mode loopback --passphrase-file "$PASS" --symmetric 2>/dev/null"#;
const STORE: &str = "gpg --batch --store 2>/dev/null";

/// Uploads a file as an object (no metadata: it lists as legacy without a manifest).
fn upload(env: &Env, file: &Path, key: &str) {
    sh(
        r#"aws s3 cp --only-show-errors --endpoint-url "$ENDPOINT" "$1" "s3://$2/$3""#,
        env,
        &[&file.to_string_lossy(), &env.bucket, key],
    );
}

fn sha256(file: &Path) -> String {
    let out = Command::new("sha256sum").arg(file).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn manifest_path(env: &Env, id: &BackupId) -> PathBuf {
    env.bucket_dir()
        .join(format!("synapse/backups/{id}.manifest.json"))
}

fn object_path(env: &Env, id: &BackupId) -> PathBuf {
    env.bucket_dir().join(format!("synapse/backups/{id}"))
}

/// A complete backup made by hand in this crate's format: the inner manifest first,
/// then `data/example.test.signing.key`, encrypted with the passphrase, with its
/// external manifest repeating the nonce.
fn craft_complete(env: &Env, id: &BackupId) -> Manifest {
    let src = env.dir.path().join(format!("craft-{id}"));
    fs::create_dir_all(src.join(".synapse-backup")).unwrap();
    fs::create_dir_all(src.join("data")).unwrap();
    fs::copy(
        env.tree.data.join("example.test.signing.key"),
        src.join("data/example.test.signing.key"),
    )
    .unwrap();
    let layout = ManifestLayout {
        config_dir: "/data".into(),
        data_dir: "/data".into(),
        media_store_path: "/data/media_store".into(),
        members: vec!["data/example.test.signing.key".into()],
    };
    let nonce = InnerManifest::new_nonce().unwrap();
    let inner = InnerManifest {
        format: MANIFEST_FORMAT,
        backup_id: id.clone(),
        created: chrono::Utc::now(),
        created_by: "synapse-backup/test".into(),
        layout: layout.clone(),
        database: synapse_backup::DatabaseSnapshot::None,
        nonce: nonce.clone(),
        chain: None,
    };
    fs::write(src.join(INNER_MANIFEST_MEMBER), inner.to_json()).unwrap();
    let object = env.dir.path().join(format!("craft-{id}.gpg"));
    make_object(
        env,
        &src,
        &[INNER_MANIFEST_MEMBER, "data/example.test.signing.key"],
        ENCRYPT,
        &object,
    );
    let key_size = fs::metadata(src.join("data/example.test.signing.key"))
        .unwrap()
        .len();
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        backup_id: id.clone(),
        created: chrono::Utc::now(),
        created_by: "synapse-backup/test".into(),
        server_name: None,
        layout,
        database: synapse_backup::DatabaseSnapshot::None,
        warnings: vec![],
        files: vec![ManifestEntry {
            path: ManifestPath::Text("data/example.test.signing.key".into()),
            kind: synapse_backup::EntryKind::File,
            size: key_size,
        }],
        plaintext_bytes: key_size,
        ciphertext_bytes: fs::metadata(&object).unwrap().len(),
        ciphertext_sha256: sha256(&object),
        cipher: synapse_backup::Cipher::Aes256,
        compression: synapse_backup::Compression::Zlib(6),
        nonce: Some(nonce),
        chain: None,
    };
    upload(env, &object, &key_of(id));
    let mfile = env.dir.path().join(format!("craft-{id}.json"));
    fs::write(&mfile, manifest.to_json()).unwrap();
    upload(env, &mfile, &format!("{}.manifest.json", key_of(id)));
    manifest
}

fn is_refusal(e: &BackupError, why: &str) -> bool {
    matches!(e, BackupError::Corrupted { reason, .. } if reason.contains(why))
}

/// An unencrypted OpenPGP object (`gpg --store`: a literal data packet, no
/// passphrase needed) and a literal packet concatenated before a real encrypted backup
/// are neither verified nor restored.
#[tokio::test(flavor = "multi_thread")]
async fn unencrypted_legacy_objects_are_refused() {
    let env = Env::new(&TreeSpec::default()).await;
    let c = LocalContainer::new();
    let src = evil_source(&env, "evil");
    let members = [
        "data/example.test.signing.key",
        "data/media_store/local_content",
    ];
    let stored = env.dir.path().join("stored.gpg");
    make_object(&env, &src, &members, STORE, &stored);
    let id = BackupId::generate();
    upload(&env, &stored, &key_of(&id));

    // A genuine encrypted backup of the owner's, with the literal packet in front.
    let genuine = env.dir.path().join("genuine.gpg");
    make_object(
        &env,
        &env.tree.root,
        &["data/example.test.signing.key"],
        ENCRYPT,
        &genuine,
    );
    let mut both = fs::read(&stored).unwrap();
    both.extend(fs::read(&genuine).unwrap());
    let both_file = env.dir.path().join("both.gpg");
    fs::write(&both_file, both).unwrap();
    let id2 = BackupId::generate();
    upload(&env, &both_file, &key_of(&id2));

    let client = S3Client::new(&env.params).unwrap();
    assert!(
        list_backups(&client)
            .await
            .unwrap()
            .iter()
            .all(|b| b.status == BackupStatus::Legacy)
    );
    for id in [&id, &id2] {
        let v = verify(&env, &c, id).await.unwrap_err();
        assert!(is_refusal(&v, "not encrypted"), "verify {id}: {v}");
        let e = refused(&env, &c, id).await;
        assert!(is_refusal(&e, "not encrypted"), "restore {id}: {e}");
    }
    assert_ne!(
        fs::read_to_string(env.tree.data.join("example.test.signing.key")).unwrap(),
        "ed25519 a_evil attacker\n"
    );
}

/// A compression bomb planted in the bucket by someone without the passphrase
/// (`gpg --store` of a bzip2-compressed tar: a few KB that expand to 128 MiB), and a
/// large plain object still downloading when it is judged, never reach gpg: verify and
/// restore refuse them naming their first packet — through the workload's aws CLI
/// (`hash.py`'s gate), a workload without python3 (`common.sh`'s gate) and
/// `Transfer::Library` (the library's) — and staging, on a 64 MiB volume of its own
/// here, never fills. Before, gpg decompressed it into staging until the volume
/// was full (the live data's volume, in a deployment), and only then was it judged.
#[tokio::test(flavor = "multi_thread")]
async fn a_compression_bomb_never_reaches_gpg() {
    let env = Env::new(&TreeSpec::default()).await;
    let c = LocalContainer::new();
    let src = evil_source(&env, "bomb");
    let big = src.join("data/media_store/local_content/bo/mb");
    fs::create_dir_all(big.parent().unwrap()).unwrap();
    fs::write(&big, vec![0u8; 128 << 20]).unwrap();
    let object = env.dir.path().join("bomb.gpg");
    let bzip2 = "gpg --batch --store --compress-algo bzip2 -z 9 2>/dev/null";
    make_object(&env, &src, &["data"], bzip2, &object);
    assert!(fs::metadata(&object).unwrap().len() < 1 << 20);
    let bomb = BackupId::generate();
    upload(&env, &object, &key_of(&bomb));
    // And a large plain one (32 MiB of random data, stored uncompressed): still being
    // downloaded when the gate refuses it.
    let random = evil_source(&env, "random");
    let noise: Vec<u8> = (0..32u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(random.join("data/media_store/local_content/ev/il"), noise).unwrap();
    let object = env.dir.path().join("large.gpg");
    make_object(
        &env,
        &random,
        &["data"],
        "gpg --batch --store -z 0 2>/dev/null",
        &object,
    );
    assert!(fs::metadata(&object).unwrap().len() > 32 << 20);
    let large = BackupId::generate();
    upload(&env, &object, &key_of(&large));
    let planted = [
        (
            &bomb,
            "its first packet is a compressed data packet (tag 8)",
        ),
        (&large, "its first packet is a literal data packet (tag 11)"),
    ];

    let _small = env.small_tmpfs("small", "64m");
    let staged_on_small = env.layout.clone().work_dir(Some("/small".into()));
    let python = env::require_tool("python3", "sudo apt-get install -y python3");
    let mut no_python = staged_on_small.clone();
    no_python.python3 = env.executable(
        "python3-without-isolated-mode",
        &format!(
            "#!/bin/sh\n[ \"$1\" = -I ] && exit 1\nexec '{}' \"$@\"\n",
            python.display()
        ),
    );
    let library = RestoreOptions::default().transfer(synapse_backup::Transfer::Library);
    let runs = [
        (
            "the workload's download",
            &staged_on_small,
            RestoreOptions::default(),
        ),
        ("without python3", &no_python, RestoreOptions::default()),
        ("Transfer::Library", &staged_on_small, library),
    ];
    let before = snapshot(&env.tree.data);
    for ((how, layout, options), (id, packet)) in runs
        .iter()
        .flat_map(|run| planted.iter().map(move |object| (run, object)))
    {
        let e = restore_backup_with(&c, &env.params, PASSPHRASE, id, layout, options)
            .await
            .unwrap_err();
        let v = verify_backup_with(&c, &env.params, PASSPHRASE, id, layout, options)
            .await
            .unwrap_err();
        let why = format!("not encrypted with the passphrase: {packet}");
        for (what, e) in [("restore", e), ("verify", v)] {
            assert!(is_refusal(&e, &why), "{what}, {how}, {id}: {e}");
        }
        assert_eq!(snapshot(&env.tree.data), before, "{how}");
        assert!(
            env.work_dirs_left().is_empty(),
            "{how}: {:?}",
            env.work_dirs_left()
        );
        let left: Vec<_> = fs::read_dir(env.tree.root.join("small")).unwrap().collect();
        assert!(left.is_empty(), "{how}: {left:?}");
    }
}

/// A complete backup whose data and manifest are both replaced by someone
/// without the passphrase (the manifest's size and SHA-256 fixed up to match).
#[tokio::test(flavor = "multi_thread")]
async fn a_complete_backup_with_data_and_manifest_replaced_is_refused() {
    let env = Env::new(&TreeSpec::default()).await;
    let c = LocalContainer::new();
    let id = env.create(&c).await.unwrap().id;
    let src = evil_source(&env, "evil");
    let evil = env.dir.path().join("evil.gpg");
    make_object(&env, &src, &["data/example.test.signing.key"], STORE, &evil);
    upload(&env, &evil, &key_of(&id));
    let mut m = Manifest::from_json(&fs::read(manifest_path(&env, &id)).unwrap()).unwrap();
    m.ciphertext_bytes = fs::metadata(&evil).unwrap().len();
    m.ciphertext_sha256 = sha256(&evil);
    m.nonce = None;
    m.files = vec![ManifestEntry {
        path: ManifestPath::Text("data/example.test.signing.key".into()),
        kind: synapse_backup::EntryKind::File,
        size: 24,
    }];
    let mfile = env.dir.path().join("evil.json");
    fs::write(&mfile, m.to_json()).unwrap();
    upload(&env, &mfile, &format!("{}.manifest.json", key_of(&id)));
    let v = verify(&env, &c, &id).await.unwrap_err();
    assert!(is_refusal(&v, "not encrypted"), "{v}");
    let e = refused(&env, &c, &id).await;
    assert!(is_refusal(&e, "not encrypted"), "{e}");
}

/// A good backup copied under another id (with or without its manifest edited
/// to the new id) is refused, and a stream carrying our inner manifest is never
/// restored as legacy; the original still restores.
#[tokio::test(flavor = "multi_thread")]
async fn a_good_backup_replayed_under_another_id_is_refused() {
    let env = Env::new(&TreeSpec::default()).await;
    let c = LocalContainer::new();
    let id = BackupId::generate();
    craft_complete(&env, &id);
    verify(&env, &c, &id).await.unwrap();

    let copy_as = |new: &BackupId, edit: bool, with_manifest: bool| {
        fs::copy(object_path(&env, &id), object_path(&env, new)).unwrap();
        if with_manifest {
            let mut m = Manifest::from_json(&fs::read(manifest_path(&env, &id)).unwrap()).unwrap();
            if edit {
                m.backup_id = new.clone();
            }
            fs::write(manifest_path(&env, new), m.to_json()).unwrap();
        }
    };
    let edited = BackupId::generate();
    copy_as(&edited, true, true);
    let unedited = BackupId::generate();
    copy_as(&unedited, false, true);
    let stripped = BackupId::generate();
    copy_as(&stripped, false, false);
    let client = S3Client::new(&env.params).unwrap();
    let list = list_backups(&client).await.unwrap();
    assert_eq!(
        list.iter().find(|b| b.id == stripped).unwrap().status,
        BackupStatus::Legacy,
        "{list:?}"
    );
    for (new, why) in [
        (&edited, "another id"),
        (&unedited, "another id"),
        (&stripped, "another id"),
    ] {
        let v = verify(&env, &c, new).await.unwrap_err();
        assert!(is_refusal(&v, why), "verify {new}: {v}");
        let e = refused(&env, &c, new).await;
        assert!(is_refusal(&e, why), "restore {new}: {e}");
    }
    // The same stream under its own id but stripped of its manifest: never legacy.
    fs::remove_file(manifest_path(&env, &id)).unwrap();
    let e = refused(&env, &c, &id).await;
    assert!(is_refusal(&e, "not restored as legacy"), "{e}");
}

/// A backup made by `create` and copied under another id (data and manifest, the
/// manifest edited to the new id) is refused; the original verifies.
#[tokio::test(flavor = "multi_thread")]
async fn a_created_backup_copied_under_another_id_is_refused() {
    let env = Env::new(&TreeSpec::default()).await;
    let c = LocalContainer::new();
    let id = env.create(&c).await.unwrap().id;
    let other = BackupId::generate();
    let object = env.dir.path().join("copy.gpg");
    fs::copy(object_path(&env, &id), &object).unwrap();
    upload(&env, &object, &key_of(&other));
    let mut m = Manifest::from_json(&fs::read(manifest_path(&env, &id)).unwrap()).unwrap();
    m.backup_id = other.clone();
    let mfile = env.dir.path().join("copy.json");
    fs::write(&mfile, m.to_json()).unwrap();
    upload(&env, &mfile, &format!("{}.manifest.json", key_of(&other)));
    let v = verify(&env, &c, &other).await.unwrap_err();
    assert!(is_refusal(&v, "another id"), "{v}");
    let e = refused(&env, &c, &other).await;
    assert!(is_refusal(&e, "another id"), "{e}");
    verify(&env, &c, &id).await.unwrap();
}

/// Pins: data encrypted to a public key, and data without integrity protection
/// (`--rfc2440 --cipher-algo CAST5`), are refused.
#[tokio::test(flavor = "multi_thread")]
async fn public_key_and_unprotected_data_are_refused() {
    let env = Env::new(&TreeSpec::default()).await;
    let c = LocalContainer::new();
    let members = ["data/example.test.signing.key"];
    let nomdc = env.dir.path().join("nomdc.gpg");
    make_object(
        &env,
        &env.tree.root,
        &members,
        r#"gpg --batch --no-symkey-cache --pinentry-mode loopback --passphrase-file "$PASS" --rfc2440 --cipher-algo CAST5 --symmetric 2>/dev/null"#,
        &nomdc,
    );
    let pk = env.dir.path().join("pk.gpg");
    make_object(
        &env,
        &env.tree.root,
        &members,
        r#"{ gpg --batch --passphrase '' --pinentry-mode loopback --quick-gen-key attacker@example.test future-default default never 2>/dev/null;
             gpg --batch --trust-model always --recipient attacker@example.test --encrypt 2>/dev/null; }"#,
        &pk,
    );
    // Both are refused before gpg sees them, by their first packets.
    let pk_packet = "a public-key encrypted session key (tag 1)";
    for (file, why) in [(&nomdc, "integrity"), (&pk, pk_packet)] {
        let id = BackupId::generate();
        upload(&env, file, &key_of(&id));
        let v = verify(&env, &c, &id).await.unwrap_err();
        assert!(
            matches!(&v, BackupError::Corrupted { reason, .. } if reason.contains(why) || reason.contains("nomdc")),
            "verify {why}: {v}"
        );
        let e = refused(&env, &c, &id).await;
        assert!(
            matches!(e, BackupError::Corrupted { .. }),
            "restore {why}: {e}"
        );
    }
}

/// A symlink (or FIFO) whose name holds tar's "Creating directory:" note text
/// is checked like every member, in tar's listing and in the staged tree.
#[tokio::test(flavor = "multi_thread")]
async fn a_symlink_named_like_a_tar_note_is_refused() {
    let env = Env::new(&TreeSpec::default()).await;
    let c = LocalContainer::new();
    let src = evil_source(&env, "evil");
    let dir = src.join("data/media_store/local_content");
    std::os::unix::fs::symlink("/etc", dir.join("x Creating directory: y")).unwrap();
    let fifo = Command::new("mkfifo")
        .arg(dir.join("p Creating directory: q"))
        .status()
        .unwrap();
    assert!(fifo.success());
    let object = env.dir.path().join("note.gpg");
    make_object(
        &env,
        &src,
        &["data/media_store/local_content"],
        ENCRYPT,
        &object,
    );
    let id = BackupId::generate();
    upload(&env, &object, &key_of(&id));
    let v = verify(&env, &c, &id).await.unwrap_err();
    assert!(matches!(v, BackupError::UnsafeMember { .. }), "{v}");
    let e = refused(&env, &c, &id).await;
    assert!(
        matches!(&e, BackupError::UnsafeMember { member, .. } if member.contains("Creating directory")),
        "{e}"
    );
    assert!(
        !env.tree
            .media
            .join("local_content/x Creating directory: y")
            .exists()
            && fs::symlink_metadata(env.tree.media.join("local_content/x Creating directory: y"))
                .is_err()
    );
}

/// Set-id, sticky and world-writable bits are stripped (and reported), the
/// rest of the archived mode kept.
#[tokio::test(flavor = "multi_thread")]
async fn setuid_sticky_and_world_writable_modes_are_stripped() {
    let env = Env::new(&TreeSpec::default()).await;
    let c = LocalContainer::new();
    let media = walk(&env.tree.media.join("local_content"))[0].clone();
    fs::set_permissions(&media, fs::Permissions::from_mode(0o6755)).unwrap();
    let thumbs = env.tree.media.join("local_thumbnails");
    fs::set_permissions(&thumbs, fs::Permissions::from_mode(0o1777)).unwrap();
    let key = env.tree.data.join("example.test.signing.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).unwrap();
    let id = env.create(&c).await.unwrap().id;
    let report = restore(&env, &c, &id, &env.layout).await.unwrap();
    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&media), 0o755, "set-id bits must be stripped");
    assert_eq!(mode(&thumbs), 0o775, "sticky and o+w must be stripped");
    assert_eq!(mode(&key), 0o640, "the archived mode is kept otherwise");
    let rel = |p: &Path| {
        p.strip_prefix(&env.tree.root)
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    assert!(
        report
            .stripped_modes
            .contains(&format!("{}: 6755 -> 0755", rel(&media))),
        "{:?}",
        report.stripped_modes
    );
    assert!(
        report
            .stripped_modes
            .contains(&format!("{}: 1777 -> 0775", rel(&thumbs))),
        "{:?}",
        report.stripped_modes
    );
}

/// Makes the test's temp dir reachable and the tree owned by `nobody`.
fn give_tree_to_nobody(env: &Env) {
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let status = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&env.tree.root)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Restored as root for a workload owned by another user (`nobody`), every
/// restored entry is that user's and the database keeps its mode.
#[tokio::test(flavor = "multi_thread")]
async fn a_restore_as_root_keeps_the_workload_owner_and_the_database_mode() {
    let env = Env::new(&TreeSpec::default()).await;
    let c = LocalContainer::new();
    let db = env.tree.data.join("homeserver.db");
    fs::set_permissions(&db, fs::Permissions::from_mode(0o644)).unwrap();
    give_tree_to_nobody(&env);
    let layout = env.layout.clone().user(Some("nobody".into()));
    let id = synapse_backup::create_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &layout,
        &synapse_backup::BackupOptions::default(),
    )
    .await
    .unwrap()
    .id;
    change_db(&db);
    let report = restore(&env, &c, &id, &layout).await.unwrap();
    assert!(report.restored.contains(&"data/homeserver.db".to_string()));
    let meta = fs::metadata(&db).unwrap();
    assert_eq!(
        (meta.uid(), meta.mode() & 0o7777),
        (65534, 0o644),
        "the database must stay nobody's, mode 0644"
    );
    for p in walk(&env.tree.data) {
        if !p.to_string_lossy().contains("/.synapse-backup-") {
            assert_eq!(fs::metadata(&p).unwrap().uid(), 65534, "{}", p.display());
        }
    }
}

/// Makes a hot rollback journal for `db`: a copy of it changed in a transaction that
/// never commits (the process dies), the journal then put beside `db`.
fn hot_journal_beside(db: &Path) {
    let copy = db.with_extension("crash");
    fs::copy(db, &copy).unwrap();
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import os, sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('PRAGMA journal_mode=DELETE')\n\
             c.execute('PRAGMA cache_size=1')\n\
             c.execute('BEGIN')\n\
             c.execute(\"UPDATE events SET body = 'crashed' || body\")\n\
             c.execute('DELETE FROM events WHERE id % 2 = 0')\n\
             os._exit(0)\n",
        )
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let journal = PathBuf::from(format!("{}-journal", copy.display()));
    assert!(fs::metadata(&journal).unwrap().len() > 0);
    fs::rename(&journal, format!("{}-journal", db.display())).unwrap();
    fs::remove_file(&copy).unwrap();
}

/// A stale `homeserver.db-journal` left by a crash is set aside with every other
/// sidecar, the staged database is checked, and one-time keys are removed (reported).
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_journal_is_set_aside_and_the_database_checked() {
    let env = Env::new(&TreeSpec::default()).await;
    let c = LocalContainer::new();
    let db = env.tree.data.join("homeserver.db");
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\n\
             c.execute('CREATE TABLE e2e_one_time_keys_json (user_id TEXT, key_id TEXT, key_json TEXT)')\n\
             c.executemany('INSERT INTO e2e_one_time_keys_json VALUES (?, ?, ?)', [('@u:x', 'k%d' % i, '{}') for i in range(3)])\n\
             c.commit()\n",
        )
        .arg(&db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = dump_db(&db);
    let id = env.create(&c).await.unwrap().id;
    change_db(&db);
    hot_journal_beside(&db);
    let report = restore(&env, &c, &id, &env.layout).await.unwrap();
    assert!(
        !Path::new(&format!("{}-journal", db.display())).exists(),
        "the stale journal must be set aside"
    );
    assert!(
        report
            .dropped
            .contains(&"data/homeserver.db-journal".to_string()),
        "{:?}",
        report.dropped
    );
    assert_eq!(dump_db(&db), before, "the restored rows, intact");
    assert_eq!(report.one_time_keys_removed, Some(3));
    let left = Command::new("python3")
        .arg("-c")
        .arg("import sqlite3, sys\nprint(sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM e2e_one_time_keys_json').fetchone()[0])")
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&left.stdout).trim(), "0");

    // Kept on request.
    let kept = restore_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &id,
        &env.layout,
        &RestoreOptions::default().keep_one_time_keys(true),
    )
    .await
    .unwrap();
    assert_eq!(kept.one_time_keys_removed, None);
}

/// A staged database that fails `PRAGMA integrity_check` is refused before the
/// service is touched.
#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_database_in_the_archive_is_refused() {
    let env = Env::new(&TreeSpec::default()).await;
    let c = LocalContainer::new();
    let src = env.dir.path().join("corrupt");
    fs::create_dir_all(src.join("data")).unwrap();
    let mut bytes = fs::read(env.tree.data.join("homeserver.db")).unwrap();
    let len = bytes.len();
    for b in &mut bytes[len / 2..len / 2 + 4096] {
        *b = 0x5a;
    }
    fs::write(src.join("data/homeserver.db"), bytes).unwrap();
    let object = env.dir.path().join("corrupt.gpg");
    make_object(&env, &src, &["data/homeserver.db"], ENCRYPT, &object);
    let id = BackupId::generate();
    upload(&env, &object, &key_of(&id));
    let e = refused(&env, &c, &id).await;
    assert!(
        matches!(&e, BackupError::Corrupted { reason, .. } if reason.contains("SQLite")),
        "{e}"
    );
}

/// Verify applies restore's member rules: a symlinked signing key fails both;
/// hard-linked media passes both (a file with several links once staged).
#[tokio::test(flavor = "multi_thread")]
async fn verify_accepts_exactly_what_restore_accepts() {
    let env = Env::new(&TreeSpec::default()).await;
    let c = LocalContainer::new();
    let src = env.dir.path().join("linked");
    fs::create_dir_all(src.join("data")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", src.join("data/example.test.signing.key")).unwrap();
    let object = env.dir.path().join("symlink.gpg");
    make_object(
        &env,
        &src,
        &["data/example.test.signing.key"],
        ENCRYPT,
        &object,
    );
    let id = BackupId::generate();
    upload(&env, &object, &key_of(&id));
    let v = verify(&env, &c, &id).await.unwrap_err();
    assert!(
        matches!(&v, BackupError::UnsafeMember { reason, .. } if reason.contains("symbolic")),
        "{v}"
    );
    let e = refused(&env, &c, &id).await;
    assert!(matches!(e, BackupError::UnsafeMember { .. }), "{e}");

    let hard = env.dir.path().join("hard");
    let lc = hard.join("data/media_store/local_content/aa");
    fs::create_dir_all(&lc).unwrap();
    fs::write(lc.join("one"), "shared media").unwrap();
    fs::hard_link(lc.join("one"), lc.join("two")).unwrap();
    let object = env.dir.path().join("hard.gpg");
    make_object(
        &env,
        &hard,
        &["data/media_store/local_content"],
        ENCRYPT,
        &object,
    );
    let id = BackupId::generate();
    upload(&env, &object, &key_of(&id));
    verify(&env, &c, &id).await.unwrap();
    restore(&env, &c, &id, &env.layout).await.unwrap();
    for name in ["one", "two"] {
        assert_eq!(
            fs::read_to_string(env.tree.media.join("local_content/aa").join(name)).unwrap(),
            "shared media"
        );
    }
}

/// A manifest's size is never multiplied into an overflow (a panic in a debug
/// build, a disabled check in release), and a legacy backup whose plaintext outgrows
/// the staging file system is stopped at the free-space reserve, or without one
/// reported as filling it, live data untouched either way.
#[tokio::test(flavor = "multi_thread")]
async fn space_checks_never_overflow_and_name_a_full_staging_dir() {
    let env = Env::new(&TreeSpec::default()).await;
    let c = LocalContainer::new();
    let id = env.create(&c).await.unwrap().id;
    let mut m = Manifest::from_json(&fs::read(manifest_path(&env, &id)).unwrap()).unwrap();
    m.plaintext_bytes = u64::MAX;
    fs::write(manifest_path(&env, &id), m.to_json()).unwrap();
    let e = refused(&env, &c, &id).await;
    assert!(matches!(e, BackupError::InsufficientSpace { .. }), "{e}");

    // 12 MiB of zeros compress to almost nothing: the encrypted size says nothing.
    let src = env.dir.path().join("zeros");
    let lc = src.join("data/media_store/local_content");
    fs::create_dir_all(&lc).unwrap();
    fs::write(lc.join("zeros"), vec![0u8; 12 << 20]).unwrap();
    let object = env.dir.path().join("zeros.gpg");
    make_object(
        &env,
        &src,
        &["data/media_store/local_content"],
        ENCRYPT,
        &object,
    );
    assert!(fs::metadata(&object).unwrap().len() < 1 << 20);
    let legacy = BackupId::generate();
    upload(&env, &object, &key_of(&legacy));
    let _mount = env.small_tmpfs("small", "4m");
    let layout = env.layout.clone().work_dir(Some("/small".into()));
    let before = snapshot(&env.tree.data);
    let small = env.tree.root.join("small");
    // By default tar is stopped while the reserve (5 % of 4 MiB) is still free.
    let e = restore(&env, &c, &legacy, &layout).await.unwrap_err();
    assert_eq!(snapshot(&env.tree.data), before);
    assert!(
        matches!(&e, BackupError::SpaceReserve { path, reserve, .. }
            if *reserve == (4 << 20) / 20 && path == &small.display().to_string()),
        "{e}"
    );
    assert_eq!(fs::read_dir(&small).unwrap().count(), 0, "work dir left");
    // Without a reserve, the file system fills up, and the restore says so.
    let options = RestoreOptions::default().space_reserve_mib(0);
    let e = restore_backup_with(&c, &env.params, PASSPHRASE, &legacy, &layout, &options)
        .await
        .unwrap_err();
    assert_eq!(snapshot(&env.tree.data), before);
    assert!(matches!(&e, BackupError::NoSpaceLeft { .. }), "{e}");
    assert!(
        e.to_string().starts_with(&format!(
            "no space left in {} (needed about ",
            small.display()
        )),
        "{e}"
    );
    assert_eq!(fs::read_dir(&small).unwrap().count(), 0, "work dir left");
}

/// The CLI's `--s3` and `--passphrase-file` files, readable by anyone (the test's own).
fn cli_files(env: &Env) -> (PathBuf, PathBuf) {
    let (s3, pass) = env.cli_files();
    for f in [&s3, &pass] {
        fs::set_permissions(f, fs::Permissions::from_mode(0o644)).unwrap();
    }
    (s3, pass)
}

/// Runs the CLI on the env's tree, as `nobody` (through `setpriv`) or as this (root)
/// process, with no `--user`.
fn cli(env: &Env, as_nobody: bool, args: &[&str]) -> std::process::Output {
    let (s3, pass) = cli_files(env);
    let bin = env!("CARGO_BIN_EXE_synapse-backup");
    let mut cmd = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            bin,
        ]);
        c
    } else {
        Command::new(bin)
    };
    cmd.arg("--root")
        .arg(&env.tree.root)
        .arg("--s3")
        .arg(&s3)
        .arg("--passphrase-file")
        .arg(&pass)
        .args(args)
        .env_remove("SYNAPSE_BACKUP_ROOT")
        .env_remove("SYNAPSE_BACKUP_S3")
        .env_remove("SYNAPSE_BACKUP_PASSPHRASE")
        .env_remove("RUST_LOG")
        .output()
        .expect("setpriv (util-linux) is needed")
}

/// Runs the CLI as [`cli`] does and asserts that it succeeded.
fn cli_ok(env: &Env, as_nobody: bool, args: &[&str]) {
    let out = cli(env, as_nobody, args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `create` by the CLI (as [`cli_ok`]), then the id of the backup it made (the
/// bucket's first).
fn cli_create(rt: &tokio::runtime::Runtime, env: &Env, as_nobody: bool) -> BackupId {
    cli_ok(env, as_nobody, &["create"]);
    let client = S3Client::new(&env.params).unwrap();
    rt.block_on(list_backups(&client)).unwrap()[0].id.clone()
}

/// A restore run by a non-root user (the CLI as `nobody`) of an archive holding
/// a read-only directory removes its work dir.
#[test]
fn a_read_only_directory_from_the_archive_does_not_outlive_the_restore() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(Env::new(&TreeSpec::default()));
    let src = env.dir.path().join("ro");
    let ro = src.join("data/media_store/local_content/ro");
    fs::create_dir_all(&ro).unwrap();
    fs::write(ro.join("f"), "media").unwrap();
    // A member outside the restorable paths, after the read-only dir: the restore is
    // refused once everything is staged.
    fs::write(src.join("data/homeserver.yaml"), "evil: true\n").unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
    let object = env.dir.path().join("ro.gpg");
    make_object(
        &env,
        &src,
        &["data/media_store/local_content", "data/homeserver.yaml"],
        ENCRYPT,
        &object,
    );
    let id = BackupId::generate();
    upload(&env, &object, &key_of(&id));
    give_tree_to_nobody(&env);
    let before = snapshot(&env.tree.data);
    let out = cli(&env, true, &["restore", id.as_str(), "--yes"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("homeserver.yaml"), "{stderr}");
    assert_eq!(snapshot(&env.tree.data), before);
    assert!(
        env.work_dirs_left().is_empty(),
        "{:?}",
        env.work_dirs_left()
    );
    drop(rt);
}

/// A restore by a non-root user (the CLI as `nobody`) that succeeds with read-only
/// directories on both sides, in the archive (staged) and in the live tree it sets
/// aside: the work dir is removed all the same (`rm` alone cannot, so the dirs are
/// made writable first), and the read-only dir is restored as it was.
#[test]
fn a_restore_removes_its_work_dir_when_read_only_dirs_were_staged_and_set_aside() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(Env::new(&TreeSpec::default()));
    let ro = env.tree.media.join("local_content/ro");
    fs::create_dir_all(&ro).unwrap();
    fs::write(ro.join("f"), "media").unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
    give_tree_to_nobody(&env);
    let id = cli_create(&rt, &env, true);
    cli_ok(&env, true, &["restore", id.as_str(), "--yes"]);
    assert_eq!(fs::read_to_string(ro.join("f")).unwrap(), "media");
    assert_eq!(fs::metadata(&ro).unwrap().mode() & 0o7777, 0o555);
    assert!(
        env.work_dirs_left().is_empty(),
        "{:?}",
        env.work_dirs_left()
    );
    drop(rt);
}

/// A restore as root for another user's workload, as the README's CLI examples run
/// it: `create` and `restore` by the CLI as root with no `--user`, for a tree owned by
/// `nobody`: the restored database is still nobody's, mode 0644 (it was root's, 0600).
#[test]
fn the_cli_as_root_restores_as_the_owner_of_the_data_dir() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(Env::new(&TreeSpec::default()));
    let db = env.tree.data.join("homeserver.db");
    fs::set_permissions(&db, fs::Permissions::from_mode(0o644)).unwrap();
    give_tree_to_nobody(&env);
    let id = cli_create(&rt, &env, false);
    change_db(&db);
    cli_ok(&env, false, &["restore", id.as_str(), "--yes"]);
    let meta = fs::metadata(&db).unwrap();
    assert_eq!(
        (meta.uid(), meta.mode() & 0o7777),
        (65534, 0o644),
        "the database must stay nobody's, mode 0644"
    );
    for p in walk(&env.tree.data) {
        if !p.to_string_lossy().contains("/.synapse-backup-") {
            assert_eq!(fs::metadata(&p).unwrap().uid(), 65534, "{}", p.display());
        }
    }
    drop(rt);
}

/// Overwrites 4 KiB in the middle of a SQLite file with junk.
fn damage(db: &Path) {
    let mut bytes = fs::read(db).unwrap();
    let len = bytes.len();
    for b in &mut bytes[len / 2..len / 2 + 4096] {
        *b = 0x5a;
    }
    fs::write(db, bytes).unwrap();
}

/// A live database that fails `PRAGMA integrity_check` is not backed up (restore would
/// refuse it), and verify runs restore's database check: a backup holding a damaged
/// database does not verify.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_database_is_refused_by_create_and_fails_verify() {
    let env = Env::new(&TreeSpec::default()).await;
    let c = LocalContainer::new();
    let good = env.create(&c).await.unwrap().id;
    verify(&env, &c, &good).await.unwrap();

    damage(&env.tree.data.join("homeserver.db"));
    let e = env.create(&c).await.unwrap_err();
    assert!(
        matches!(&e, BackupError::StageFailed { stage: synapse_backup::Stage::Snapshot, stderr, .. }
            if stderr.contains("integrity_check")),
        "{e}"
    );
    let client = S3Client::new(&env.params).unwrap();
    assert_eq!(
        list_backups(&client).await.unwrap().len(),
        1,
        "nothing kept"
    );
    assert!(
        env.work_dirs_left().is_empty(),
        "{:?}",
        env.work_dirs_left()
    );

    let src = env.dir.path().join("damaged");
    fs::create_dir_all(src.join("data")).unwrap();
    fs::copy(
        env.tree.data.join("homeserver.db"),
        src.join("data/homeserver.db"),
    )
    .unwrap();
    let object = env.dir.path().join("damaged.gpg");
    make_object(&env, &src, &["data/homeserver.db"], ENCRYPT, &object);
    let id = BackupId::generate();
    upload(&env, &object, &key_of(&id));
    let v = verify(&env, &c, &id).await.unwrap_err();
    assert!(
        matches!(&v, BackupError::Corrupted { reason, .. } if reason.contains("SQLite")),
        "{v}"
    );
    assert!(
        env.work_dirs_left().is_empty(),
        "{:?}",
        env.work_dirs_left()
    );
    // Without a live tree (no homeserver.yaml), verify stages it in the temp dir.
    fs::remove_file(env.tree.data.join("homeserver.yaml")).unwrap();
    let v = verify(&env, &c, &id).await.unwrap_err();
    assert!(
        matches!(&v, BackupError::Corrupted { reason, .. } if reason.contains("SQLite")),
        "{v}"
    );
}

/// A read-only media store (0555) and a workload user that is not root: the swap could
/// not move the live media aside, so verify fails as restore would, and restore says so
/// before anything is stopped or moved.
#[tokio::test(flavor = "multi_thread")]
async fn verify_fails_where_the_swap_could_not_move_the_live_files() {
    let env = Env::new(&TreeSpec {
        media_files: 4,
        ..TreeSpec::default()
    })
    .await;
    let c = LocalContainer::new();
    give_tree_to_nobody(&env);
    let layout = env.layout.clone().user(Some("nobody".into()));
    let id = synapse_backup::create_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &layout,
        &synapse_backup::BackupOptions::default(),
    )
    .await
    .unwrap()
    .id;
    fs::set_permissions(&env.tree.media, fs::Permissions::from_mode(0o555)).unwrap();
    let v = verify_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &id,
        &layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&v, BackupError::StageFailed { stage: synapse_backup::Stage::Swap, stderr, .. }
            if stderr.contains("not writable") && stderr.contains("media_store")),
        "{v}"
    );
    let before = snapshot(&env.tree.data);
    let e = restore(&env, &c, &id, &layout).await.unwrap_err();
    assert!(
        matches!(&e, BackupError::StageFailed { stage: synapse_backup::Stage::Swap, stderr, .. }
            if stderr.contains("the swap would fail")),
        "{e}"
    );
    assert_eq!(snapshot(&env.tree.data), before);
    fs::set_permissions(&env.tree.media, fs::Permissions::from_mode(0o755)).unwrap();
    verify_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &id,
        &layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap();
}

/// The data dir owned by a uid with no passwd name (common in containers): the CLI run
/// as root runs every step as that uid (not as root), so the restored database and
/// media stay that uid's.
#[test]
fn the_cli_as_root_runs_as_a_data_dir_owner_with_no_name() {
    const UID: u32 = 47231;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(Env::new(&TreeSpec {
        media_files: 4,
        ..TreeSpec::default()
    }));
    let named = Command::new("getent")
        .args(["passwd", &UID.to_string()])
        .output()
        .unwrap();
    assert!(
        !named.status.success(),
        "uid {UID} must have no passwd entry here"
    );
    let db = env.tree.data.join("homeserver.db");
    fs::set_permissions(&db, fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let status = Command::new("chown")
        .args(["-R", &format!("{UID}:{UID}")])
        .arg(&env.tree.root)
        .status()
        .unwrap();
    assert!(status.success());
    let id = cli_create(&rt, &env, false);
    change_db(&db);
    cli_ok(&env, false, &["restore", id.as_str(), "--yes"]);
    let meta = fs::metadata(&db).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (UID, UID, 0o640),
        "the database must stay uid {UID}'s, mode 0640"
    );
    for p in walk(&env.tree.data) {
        if !p.to_string_lossy().contains("/.synapse-backup-") {
            assert_eq!(fs::metadata(&p).unwrap().uid(), UID, "{}", p.display());
        }
    }
    drop(rt);
}

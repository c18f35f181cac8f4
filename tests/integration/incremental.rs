//! Incremental backups: a chain of packs made by real tar, gpg and the aws CLI against
//! an in-process S3 server, every state of the chain restored byte for byte by the
//! README's plain-tools recipe (run as written) and through the library (verify,
//! restore, extract), a base whose index was swapped never referenced, and a
//! substituted or spliced pack refused with nothing live touched.

use crate::support::{env, synapse_tree};

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use env::{Env, PASSPHRASE, require_tool, sh};
use synapse_backup::{
    BackupError, PruneAction, PruneReason, RetentionPolicy, delete_backup, prune_backups,
};
use synapse_backup::{
    BackupId, BackupKind, BackupOptions, BackupReport, ChainPolicy, Compression, ExtractTarget,
    FullReason, LocalContainer, Manifest, RestoreOptions, S3Client, create_backup_with,
    extract_backup_with, read_manifest, restore_backup_with, verify_backup_with,
};
use synapse_tree::{Rng, TreeSpec, walk, write_random};

fn spec() -> TreeSpec {
    TreeSpec {
        media_files: 12,
        media_bytes: 600 << 10,
        db_rows: 20,
        seed: 7,
    }
}

async fn incremental(env: &Env, c: &LocalContainer) -> BackupReport {
    incremental_with(env, c, ChainPolicy::default()).await
}

async fn incremental_with(env: &Env, c: &LocalContainer, policy: ChainPolicy) -> BackupReport {
    create_backup_with(
        c,
        &env.params,
        PASSPHRASE,
        &env.layout,
        &BackupOptions::default().incremental(true).chain(policy),
    )
    .await
    .unwrap()
}

async fn manifest(env: &Env, id: &BackupId) -> Manifest {
    let store = S3Client::new(&env.params).unwrap();
    read_manifest(&store, id).await.unwrap()
}

/// The media files under the tree, sorted.
fn media_files(env: &Env) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walk(&env.tree.media)
        .into_iter()
        .filter(|p| {
            p.strip_prefix(&env.tree.media)
                .unwrap()
                .to_string_lossy()
                .starts_with("local_")
        })
        .collect();
    files.sort();
    files
}

/// The README's incremental recipe, exactly as written (the first `sh` block of its
/// "Incremental backups" section).
fn readme_recipe() -> String {
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("### Incremental backups")
        .nth(1)
        .expect("the README has an Incremental backups section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the section has a sh block");
    block.to_string()
}

/// Restores backup `id` into a new dir with the README's recipe; the restored files.
fn restore_by_recipe(env: &Env, id: &BackupId, n: usize) -> BTreeMap<PathBuf, Vec<u8>> {
    let work = env.dir.path().join(format!("recipe-{n}"));
    let dest = env.dir.path().join(format!("restored-{n}"));
    fs::create_dir_all(&work).unwrap();
    fs::create_dir_all(&dest).unwrap();
    fs::write(work.join("passphrase.txt"), PASSPHRASE).unwrap();
    let script = format!(
        "cd \"$1\"; ID=$2; DEST=$3; BUCKET=$4; PATH_PREFIX=$5\n{}",
        readme_recipe()
    );
    sh(
        &script,
        env,
        &[
            work.to_str().unwrap(),
            id.as_str(),
            dest.to_str().unwrap(),
            &env.bucket,
            "synapse/backups",
        ],
    );
    walk(&dest)
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).unwrap();
            (p.strip_prefix(&dest).unwrap().to_path_buf(), bytes)
        })
        .collect()
}

/// What a restore of the tree as it is now must give: the keys and every local media
/// file, byte for byte (the database is checked apart: it is a snapshot).
fn expected(env: &Env) -> BTreeMap<PathBuf, Vec<u8>> {
    env.tree.backed_up_files()
}

fn without_db(mut files: BTreeMap<PathBuf, Vec<u8>>) -> BTreeMap<PathBuf, Vec<u8>> {
    files.retain(|p, _| {
        let s = p.to_string_lossy();
        s.starts_with("data/media_store/local_") || s.ends_with(".key")
    });
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chain_restores_every_state_byte_for_byte_with_the_readme_recipe() {
    require_tool("jq", "apt-get install jq");
    let env = Env::new(&spec()).await;
    let c = LocalContainer::new();
    let mut rng = Rng::new(99);
    let mut states = Vec::new();
    // Room for the changes below; the default's 30 % is checked at the end.
    let lax = ChainPolicy::default().max_superseded_percent(90);

    // 1: the first incremental create is full, with an index.
    let first = incremental(&env, &c).await;
    assert_eq!(
        first.kind,
        BackupKind::Full {
            reason: FullReason::FirstBackup
        }
    );
    states.push((first.id.clone(), expected(&env)));

    // 2: three new media files.
    let media = media_files(&env);
    let dir = media[0].parent().unwrap().to_path_buf();
    for n in 0..3 {
        write_random(&dir.join(format!("new{n}")), 20_000 + n, &mut rng);
    }
    let second = incremental_with(&env, &c, lax.clone()).await;
    assert_eq!(
        second.kind,
        BackupKind::Incremental {
            base: first.id.clone()
        }
    );
    let m2 = manifest(&env, &second.id).await;
    let chain = m2.chain.clone().unwrap();
    assert_eq!((chain.own_files, chain.own_bytes), (3, 60_003));
    assert_eq!(chain.packs, vec![first.id.clone()]);
    assert!(
        m2.ciphertext_bytes * 4 < first.manifest.ciphertext_bytes,
        "the pack holds the new media only: {} vs {}",
        m2.ciphertext_bytes,
        first.manifest.ciphertext_bytes
    );
    // Its database is a pack of its own, beside its pack: the next backup's restore,
    // which reads this pack for its media, never downloads it.
    let database = chain
        .database
        .clone()
        .expect("an increment's database pack");
    let db_object = env.object_path(&format!("synapse/backups/{}.database", second.id));
    assert_eq!(
        fs::metadata(&db_object).unwrap().len(),
        database.ciphertext_bytes
    );
    assert_eq!(
        chain.total_ciphertext_bytes,
        first.manifest.ciphertext_bytes + m2.ciphertext_bytes + database.ciphertext_bytes
    );
    assert!(
        first.manifest.chain.as_ref().unwrap().database.is_none(),
        "a full backup's one pack holds its database"
    );
    states.push((second.id.clone(), expected(&env)));

    // 3: two files deleted, one rewritten with other bytes and size, one new file in a
    // new directory with a name that needs quoting.
    fs::remove_file(&media[1]).unwrap();
    fs::remove_file(&media[2]).unwrap();
    write_random(&media[3], 777, &mut rng);
    let odd = env
        .tree
        .media
        .join("local_content/zz/yy/with space\nand newline");
    fs::create_dir_all(odd.parent().unwrap()).unwrap();
    write_random(&odd, 4321, &mut rng);
    let third = incremental_with(&env, &c, lax.clone()).await;
    assert_eq!(
        third.kind,
        BackupKind::Incremental {
            base: second.id.clone()
        }
    );
    let chain = manifest(&env, &third.id).await.chain.unwrap();
    assert_eq!(
        (chain.own_files, chain.own_bytes),
        (2, 777 + 4321),
        "only the changed and the new file"
    );
    assert_eq!(chain.packs, vec![first.id.clone(), second.id.clone()]);
    states.push((third.id.clone(), expected(&env)));

    // 4: nothing changed but a file's modification time.
    let touched = fs::File::options().write(true).open(&media[4]).unwrap();
    touched
        .set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1))
        .unwrap();
    drop(touched);
    let fourth = incremental_with(&env, &c, lax.clone()).await;
    let chain = manifest(&env, &fourth.id).await.chain.unwrap();
    assert_eq!(chain.own_files, 1, "a new modification time is a change");
    assert_eq!(chain.packs.len(), 3);
    states.push((fourth.id.clone(), expected(&env)));

    // 5: half the media purged: with the default policy, what the chain holds is now
    // mostly dead, so the backup is full, said so.
    for f in media_files(&env).iter().step_by(2) {
        fs::remove_file(f).unwrap();
    }
    let fifth = incremental(&env, &c).await;
    assert!(
        matches!(
            fifth.kind,
            BackupKind::Full {
                reason: FullReason::Superseded { max_percent: 30, percent }
            } if percent > 30
        ),
        "{:?}",
        fifth.kind
    );
    states.push((fifth.id.clone(), expected(&env)));

    // Every state, restored from its chain by the README's recipe, byte for byte:
    // nothing from a newer or an older state.
    for (n, (id, files)) in states.iter().enumerate() {
        let restored = restore_by_recipe(&env, id, n);
        let db = restored
            .iter()
            .find(|(p, _)| p.ends_with("homeserver.db"))
            .unwrap_or_else(|| panic!("state {n} ({id}): the recipe restored no database"));
        assert!(db.1.starts_with(b"SQLite format 3\0"), "state {n} ({id})");
        let restored = without_db(restored);
        assert_eq!(
            restored.keys().collect::<Vec<_>>(),
            files.keys().collect::<Vec<_>>(),
            "state {n} ({id})"
        );
        assert!(restored == *files, "state {n} ({id}): bytes differ");
    }

    // Through the library: every state verifies, and restores over the live tree,
    // pack by pack, byte for byte (nothing from a newer or an older state).
    let options = RestoreOptions::default();
    for (n, (id, files)) in states.iter().enumerate() {
        let report = verify_backup_with(&c, &env.params, PASSPHRASE, id, &env.layout, &options)
            .await
            .unwrap();
        assert!(report.authenticated_manifest, "state {n}");
        // The fourth state needs all four packs; a full backup is one.
        let packs = [1, 2, 3, 4, 1][n];
        assert_eq!(report.packs, packs, "state {n}");
        let restored = restore_backup_with(&c, &env.params, PASSPHRASE, id, &env.layout, &options)
            .await
            .unwrap();
        assert_eq!(restored.packs, packs, "state {n}");
        let live = expected(&env);
        assert_eq!(
            live.keys().collect::<Vec<_>>(),
            files.keys().collect::<Vec<_>>(),
            "state {n} ({id}) restored by the library"
        );
        assert!(live == *files, "state {n} ({id}): bytes differ");
    }

    // An extract of the fourth state takes a file from the first pack, and only it.
    let (id, files) = &states[3];
    let rel = media[0].strip_prefix(&env.tree.root).unwrap().to_path_buf();
    let dest = env.dir.path().join("extracted");
    extract_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        id,
        &env.layout,
        &ExtractTarget::new(dest.to_string_lossy().into_owned())
            .include(rel.to_string_lossy().into_owned()),
        &options,
    )
    .await
    .unwrap();
    let extracted: Vec<PathBuf> = walk(&dest)
        .into_iter()
        .map(|p| p.strip_prefix(&dest).unwrap().to_path_buf())
        .collect();
    assert_eq!(extracted, vec![rel.clone()]);
    assert!(fs::read(dest.join(&rel)).unwrap() == files[&rel]);

    // An increment's database comes from its database pack.
    let (id, _) = &states[1];
    let dest = env.dir.path().join("extracted-db");
    let report = extract_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        id,
        &env.layout,
        &ExtractTarget::new(dest.to_string_lossy().into_owned()).include("data/homeserver.db"),
        &options,
    )
    .await
    .unwrap();
    assert_eq!(report.extracted, ["data/homeserver.db"]);
    assert!(
        fs::read(dest.join("data/homeserver.db"))
            .unwrap()
            .starts_with(b"SQLite format 3\0")
    );
}

/// The live tree's files a restore replaces, and the database's bytes.
fn live_state(env: &Env) -> (BTreeMap<PathBuf, Vec<u8>>, Vec<u8>) {
    (
        env.tree.backed_up_files(),
        fs::read(env.tree.data.join("homeserver.db")).unwrap(),
    )
}

/// Someone with write access to the bucket but not the passphrase substitutes an
/// older pack of a chain (another backup's object under its key, its manifest fitted
/// to it, or both copied), deletes or damages one, splices the chain (a manifest
/// naming other packs, or none) or swaps the index: verify and restore refuse, naming
/// what is wrong, and nothing live is touched. Put back, the chain restores.
/// A chain whose packs differ in compression (a plain base, a zstd increment, a plain
/// one on top): each pack is read as its own manifest says, by the library and by the
/// README's recipe.
#[tokio::test(flavor = "multi_thread")]
async fn a_chain_of_plain_and_zstd_packs_restores_each_pack_as_made() {
    require_tool("jq", "apt-get install jq");
    require_tool("zstd", "apt-get install zstd");
    let env = Env::new(&spec()).await;
    let c = LocalContainer::new();
    let mut rng = Rng::new(5);
    let dir = media_files(&env)[0].parent().unwrap().to_path_buf();
    let mut last = None;
    for (n, compression) in [Compression::None, Compression::Zstd(3), Compression::None]
        .into_iter()
        .enumerate()
    {
        write_random(&dir.join(format!("mixed{n}")), 30_000, &mut rng);
        let options = BackupOptions::default()
            .incremental(true)
            .compression(compression);
        let report = create_backup_with(&c, &env.params, PASSPHRASE, &env.layout, &options)
            .await
            .unwrap();
        assert_eq!(report.manifest.compression, compression);
        if n > 0 {
            assert!(
                matches!(report.kind, BackupKind::Incremental { .. }),
                "{n}: {:?}",
                report.kind
            );
        }
        last = Some(report.id);
    }
    let id = last.unwrap();
    let files = expected(&env);
    let restored = without_db(restore_by_recipe(&env, &id, 0));
    assert!(restored == files, "the recipe's restore differs");
    let out = env.dir.path().join("mixed-extracted");
    extract_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &id,
        &env.layout,
        &ExtractTarget::new(out.to_string_lossy().into_owned()),
        &RestoreOptions::default(),
    )
    .await
    .unwrap();
    let extracted: BTreeMap<PathBuf, Vec<u8>> = walk(&out)
        .into_iter()
        .map(|p| {
            (
                p.strip_prefix(&out).unwrap().to_path_buf(),
                fs::read(&p).unwrap(),
            )
        })
        .collect();
    assert!(
        without_db(extracted) == files,
        "the library's extract differs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_substituted_or_spliced_pack_is_refused_and_nothing_live_is_touched() {
    let env = Env::new(&spec()).await;
    let c = LocalContainer::new();
    let lax = ChainPolicy::default().max_superseded_percent(90);
    let first = incremental(&env, &c).await;
    let mut rng = Rng::new(11);
    let dir = media_files(&env)[0].parent().unwrap().to_path_buf();
    write_random(&dir.join("second"), 5000, &mut rng);
    let second = incremental_with(&env, &c, lax.clone()).await;
    write_random(&dir.join("third"), 6000, &mut rng);
    let third = incremental_with(&env, &c, lax).await;
    assert_eq!(
        manifest(&env, &third.id).await.chain.unwrap().packs,
        vec![first.id.clone(), second.id.clone()]
    );
    // Another backup made with the passphrase: what the attacker copies.
    write_random(&dir.join("other"), 7000, &mut rng);
    let other = env.create(&c).await.unwrap();
    let live = live_state(&env);

    let object = |id: &BackupId| env.object_path(&format!("synapse/backups/{id}"));
    let manifest_file =
        |id: &BackupId| env.object_path(&format!("synapse/backups/{id}.manifest.json"));
    let index_file = |id: &BackupId, base: &BackupId| {
        env.object_path(&format!("synapse/backups/{id}.on-{base}.index.ndjson"))
    };
    let database_file = |id: &BackupId| env.object_path(&format!("synapse/backups/{id}.database"));
    // What s3s-fs stores of an object beside its bytes (the checksum the aws CLI
    // checks on download): an object copied in the bucket carries its own.
    let server_info = |id: &BackupId| {
        use base64::Engine;
        let encode = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        env.server.root.join(format!(
            ".bucket-{}.object-{}.internal.json",
            encode(&env.bucket),
            encode(&format!("synapse/backups/{id}.database"))
        ))
    };
    assert!(server_info(&third.id).exists());
    let saved: Vec<(PathBuf, Vec<u8>)> = [
        object(&first.id),
        object(&second.id),
        manifest_file(&first.id),
        manifest_file(&third.id),
        index_file(&third.id, &second.id),
        database_file(&third.id),
        server_info(&third.id),
    ]
    .into_iter()
    .map(|p| {
        let bytes = fs::read(&p).unwrap();
        (p, bytes)
    })
    .collect();
    let put_back = || {
        for (p, bytes) in &saved {
            fs::write(p, bytes).unwrap();
        }
    };
    let edit_manifest = |id: &BackupId, edit: &dyn Fn(&mut serde_json::Value)| {
        let path = manifest_file(id);
        let mut json: serde_json::Value =
            serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        edit(&mut json);
        fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    };
    let other_size = fs::metadata(object(&other.id)).unwrap().len();
    let second_database = manifest(&env, &second.id).await.chain.unwrap().database;
    let third_database = || database_file(&third.id);
    let flip = |path: PathBuf| {
        let mut bytes = fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        fs::write(&path, bytes).unwrap();
    };

    type Attack<'a> = (&'a str, Box<dyn Fn() + 'a>, String);
    let attacks: Vec<Attack<'_>> = vec![
        (
            "another object under the first pack's key, its manifest's size fitted",
            Box::new(|| {
                fs::copy(object(&other.id), object(&first.id)).unwrap();
                edit_manifest(&first.id, &|m| {
                    m["ciphertext_bytes"] = other_size.into();
                });
            }),
            format!("the pack {} of its chain", first.id),
        ),
        (
            "another backup's object and manifest under the first pack's key",
            Box::new(|| {
                fs::copy(object(&other.id), object(&first.id)).unwrap();
                fs::copy(manifest_file(&other.id), manifest_file(&first.id)).unwrap();
            }),
            format!("the pack {} of its chain", first.id),
        ),
        (
            "a manifest that splices the first pack out",
            Box::new(|| {
                let second = second.id.to_string();
                edit_manifest(&third.id, &move |m| {
                    m["chain"]["packs"] = serde_json::json!([second.clone()]);
                });
            }),
            "a spliced chain".to_string(),
        ),
        (
            "the first pack deleted",
            Box::new(|| {
                fs::remove_file(object(&first.id)).unwrap();
                fs::remove_file(manifest_file(&first.id)).unwrap();
            }),
            format!("the pack {} of its chain", first.id),
        ),
        (
            "a byte of the first pack flipped",
            Box::new(|| {
                let mut bytes = fs::read(object(&first.id)).unwrap();
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0x01;
                fs::write(object(&first.id), bytes).unwrap();
            }),
            format!("the pack {} of its chain", first.id),
        ),
        (
            // The packs are read side by side: the error is still the first in chain
            // order, whichever read ends first.
            "a byte of both older packs flipped",
            Box::new(|| {
                for id in [&second.id, &first.id] {
                    let mut bytes = fs::read(object(id)).unwrap();
                    let middle = bytes.len() / 2;
                    bytes[middle] ^= 0x01;
                    fs::write(object(id), bytes).unwrap();
                }
            }),
            format!("the pack {} of its chain", first.id),
        ),
        (
            // Made with the passphrase, its manifest's record fitted: its inner manifest
            // is another backup's.
            "the second backup's database pack as the third's, its record fitted",
            Box::new(|| {
                fs::copy(database_file(&second.id), third_database()).unwrap();
                fs::copy(server_info(&second.id), server_info(&third.id)).unwrap();
                let record = serde_json::to_value(second_database.clone().unwrap()).unwrap();
                edit_manifest(&third.id, &move |m| {
                    m["chain"]["database"] = record.clone();
                });
            }),
            format!("its database pack synapse/backups/{}.database", third.id),
        ),
        (
            "the database pack deleted",
            Box::new(|| fs::remove_file(third_database()).unwrap()),
            format!(
                "its database pack synapse/backups/{}.database is missing",
                third.id
            ),
        ),
        (
            "a byte of the database pack flipped",
            Box::new(|| flip(third_database())),
            // Downloaded by the library (a small pack): the SDK checks the body against
            // the checksum the server stored, before gpg or our SHA-256 could.
            format!(
                "its database pack synapse/backups/{}.database: the object does not match the checksum its server stored",
                third.id
            ),
        ),
        (
            "a manifest stripped of its database pack's record",
            Box::new(|| {
                edit_manifest(&third.id, &|m| {
                    m["chain"].as_object_mut().unwrap().remove("database");
                });
            }),
            "its manifest records no database pack".to_string(),
        ),
        (
            "a manifest stripped of its chain",
            Box::new(|| {
                edit_manifest(&third.id, &|m| {
                    m.as_object_mut().unwrap().remove("chain");
                });
            }),
            "its manifest records no chain".to_string(),
        ),
        (
            "the second backup's index as the third's",
            Box::new(|| {
                fs::copy(
                    env.object_path(&format!(
                        "synapse/backups/{}.on-{}.index.ndjson",
                        second.id, first.id
                    )),
                    index_file(&third.id, &second.id),
                )
                .unwrap();
            }),
            "its file index".to_string(),
        ),
    ];
    let options = RestoreOptions::default();
    for (what, attack, named) in &attacks {
        attack();
        let e = verify_backup_with(
            &c,
            &env.params,
            PASSPHRASE,
            &third.id,
            &env.layout,
            &options,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&e, BackupError::Corrupted { id, .. } if id == third.id.as_str()),
            "{what}: {e}"
        );
        assert!(e.to_string().contains(named.as_str()), "{what}: {e}");
        let e = restore_backup_with(
            &c,
            &env.params,
            PASSPHRASE,
            &third.id,
            &env.layout,
            &options,
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains(named.as_str()), "{what}: {e}");
        assert!(live_state(&env) == live, "{what}: live data was touched");
        let left = env.work_dirs_left();
        assert!(left.is_empty(), "{what}: work dirs left: {left:?}");
        put_back();
    }
    // Put back, the chain restores the third state.
    restore_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &third.id,
        &env.layout,
        &options,
    )
    .await
    .unwrap();
    let restored = env.tree.backed_up_files();
    assert!(!restored.keys().any(|p| p.ends_with("other")));
    assert!(restored.keys().any(|p| p.ends_with("third")));
}

/// Someone with write access to the bucket but not the passphrase swaps the base's
/// index (here: for the index of another backup, a well-formed one): the next
/// incremental create refuses to reference anything in it and makes a full backup,
/// saying why.
#[tokio::test(flavor = "multi_thread")]
async fn a_swapped_base_index_is_never_referenced() {
    let env = Env::new(&spec()).await;
    let c = LocalContainer::new();
    let first = incremental(&env, &c).await;
    let mut rng = Rng::new(5);
    let dir = media_files(&env)[0].parent().unwrap().to_path_buf();
    write_random(&dir.join("extra"), 1000, &mut rng);
    let second = incremental(&env, &c).await;
    assert!(matches!(second.kind, BackupKind::Incremental { .. }));
    // Put the first backup's index where the second's is.
    let bucket = env.bucket_dir().join("synapse/backups");
    fs::copy(
        bucket.join(format!("{}.index.ndjson", first.id)),
        bucket.join(format!("{}.on-{}.index.ndjson", second.id, first.id)),
    )
    .unwrap();

    let third = incremental(&env, &c).await;
    match &third.kind {
        BackupKind::Full {
            reason: FullReason::BaseUnreadable { base, detail },
        } => {
            assert_eq!(base, &second.id);
            assert!(
                detail.contains("the index was altered or swapped"),
                "{detail}"
            );
        }
        other => panic!("expected a full backup, got {other:?}"),
    }
    // It archives every media file itself.
    let chain = manifest(&env, &third.id).await.chain.unwrap();
    assert!(chain.packs.is_empty());
    assert_eq!(chain.own_files, media_files(&env).len() as u64);
}

/// A full backup made without --incremental has no index: the next incremental create
/// is full (with an index), said so; a new passphrase is full too.
#[tokio::test(flavor = "multi_thread")]
async fn a_base_without_an_index_or_a_new_passphrase_means_full() {
    let env = Env::new(&spec()).await;
    let c = LocalContainer::new();
    let plain = env.create(&c).await.unwrap();
    assert!(plain.manifest.chain.is_none());
    let next = incremental(&env, &c).await;
    match &next.kind {
        BackupKind::Full {
            reason: FullReason::BaseUnreadable { base, detail },
        } => {
            assert_eq!(base, &plain.id);
            assert!(detail.contains("no file index"), "{detail}");
        }
        other => panic!("expected a full backup, got {other:?}"),
    }
    let renewed = create_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &env.layout,
        &BackupOptions::default()
            .incremental(true)
            .new_passphrase(true),
    )
    .await
    .unwrap();
    assert_eq!(
        renewed.kind,
        BackupKind::Full {
            reason: FullReason::NewPassphrase
        }
    );
    // A chain of at most 2 packs: the third backup is full again.
    let policy = synapse_backup::ChainPolicy::default().full_every(2);
    let options = BackupOptions::default().incremental(true).chain(policy);
    let mut kinds = Vec::new();
    for _ in 0..3 {
        let r = create_backup_with(&c, &env.params, PASSPHRASE, &env.layout, &options)
            .await
            .unwrap();
        kinds.push(r.kind);
    }
    assert!(
        matches!(kinds[0], BackupKind::Incremental { .. }),
        "{kinds:?}"
    );
    assert_eq!(
        kinds[1],
        BackupKind::Full {
            reason: FullReason::ChainLength {
                packs: 3,
                full_every: 2
            }
        }
    );
    assert!(
        matches!(kinds[2], BackupKind::Incremental { .. }),
        "{kinds:?}"
    );
}

/// Prune keeps every pack a kept backup needs, says which backup keeps it alive and
/// how many bytes the deletions free; `delete` of a needed pack refuses, naming the
/// backups that need it, until they are gone.
#[tokio::test(flavor = "multi_thread")]
async fn prune_and_delete_never_break_a_chain() {
    let env = Env::new(&spec()).await;
    let c = LocalContainer::new();
    let store = S3Client::new(&env.params).unwrap();
    let lone = env.create(&c).await.unwrap();
    let mut rng = Rng::new(11);
    let dir = media_files(&env)[0].parent().unwrap().to_path_buf();
    let lax = ChainPolicy::default().max_superseded_percent(90);
    let mut chain = Vec::new();
    for n in 0..3 {
        write_random(&dir.join(format!("more{n}")), 3000, &mut rng);
        chain.push(incremental_with(&env, &c, lax.clone()).await);
    }
    let ids: Vec<BackupId> = chain.iter().map(|r| r.id.clone()).collect();
    assert!(matches!(chain[0].kind, BackupKind::Full { .. }));
    assert!(matches!(chain[2].kind, BackupKind::Incremental { .. }));

    // keep_last 1 keeps the newest, and its chain because it needs it.
    let policy = RetentionPolicy::default().keep_last(Some(1));
    let report = prune_backups(&store, &policy).await.unwrap();
    let deleted: Vec<BackupId> = report.deleted.iter().map(|b| b.id.clone()).collect();
    assert_eq!(deleted, std::slice::from_ref(&lone.id));
    assert_eq!(report.plan.freed_bytes, lone.manifest.ciphertext_bytes);
    let newest = report.plan.get(&ids[2]).unwrap();
    assert_eq!(newest.packs, [ids[0].clone(), ids[1].clone()]);
    for pack in &ids[..2] {
        let planned = report.plan.get(pack).unwrap();
        assert_eq!(planned.action, PruneAction::Keep, "{pack}");
        assert!(
            planned
                .reasons
                .contains(&PruneReason::NeededBy { id: ids[2].clone() }),
            "{pack}: {:?}",
            planned.reasons
        );
    }
    let json = serde_json::to_value(&report.plan).unwrap();
    assert_eq!(json["freed_bytes"], lone.manifest.ciphertext_bytes);

    // delete of the base refuses, naming its dependents newest first.
    let e = delete_backup(&store, &ids[0]).await.unwrap_err();
    assert!(
        matches!(&e, BackupError::NeededByOthers { dependents, .. }
            if *dependents == [ids[2].to_string(), ids[1].to_string()]),
        "{e}"
    );
    assert!(e.to_string().contains("delete those first"), "{e}");
    // Newest first, each goes with its index and its database pack.
    let bucket = env.bucket_dir().join("synapse/backups");
    let stray = BackupId::generate();
    for id in &ids[1..] {
        assert!(bucket.join(format!("{id}.database")).exists(), "{id}");
    }
    fs::copy(
        bucket.join(format!("{}.database", ids[2])),
        bucket.join(format!("{stray}.database")),
    )
    .unwrap();
    for id in ids.iter().rev() {
        delete_backup(&store, id).await.unwrap();
        let left: Vec<String> = fs::read_dir(&bucket)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(id.as_str()))
            .collect();
        assert!(left.is_empty(), "{id}: {left:?}");
    }
    // A database pack without its backup (a failed create's) is a leftover: listed
    // as incomplete, and pruned.
    let listed = synapse_backup::list_backups(&store).await.unwrap();
    assert!(
        listed
            .iter()
            .any(|b| b.id == stray && b.status == synapse_backup::BackupStatus::Incomplete),
        "{listed:?}"
    );
    prune_backups(&store, &policy).await.unwrap();
    assert!(!bucket.join(format!("{stray}.database")).exists());
}

/// The database pack's pipeline fails (its upload refused) while the own pack's runs:
/// the create fails, neither object is left, and the previous chain is untouched (it
/// restores, and the next incremental create builds on it).
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_database_pack_leaves_no_object_and_the_chain_usable() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new(&spec()).await;
    let c = LocalContainer::new();
    let first = incremental(&env, &c).await;
    let mut rng = Rng::new(21);
    let dir = media_files(&env)[0].parent().unwrap().to_path_buf();
    write_random(&dir.join("second"), 5000, &mut rng);
    let second = incremental(&env, &c).await;
    assert!(matches!(second.kind, BackupKind::Incremental { .. }));
    let bucket = env.bucket_dir().join("synapse/backups");
    let names = || {
        let mut names: Vec<String> = fs::read_dir(&bucket)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("backup-"))
            .collect();
        names.sort();
        names
    };
    let before = names();

    // The real aws CLI, except that the database pack's upload fails.
    write_random(&dir.join("third"), 5000, &mut rng);
    let aws = env.dir.path().join("aws-no-database");
    fs::write(
        &aws,
        format!(
            "#!/usr/bin/env bash\nif [ \"$1\" = s3 ] && [ \"$2\" = cp ] && [[ \"${{!#}}\" == *.database ]]; then\n  cat >/dev/null\n  echo 'upload refused' >&2\n  exit 1\nfi\nexec '{}' \"$@\"\n",
            env::aws().display()
        ),
    )
    .unwrap();
    fs::set_permissions(&aws, fs::Permissions::from_mode(0o755)).unwrap();
    let layout = env.layout.clone().aws(aws.to_string_lossy().into_owned());
    let e = create_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &layout,
        &BackupOptions::default().incremental(true),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("upload refused"), "{e}");
    assert_eq!(names(), before, "the failed create left objects");
    assert!(env.work_dirs_left().is_empty());

    // The chain is as it was.
    let options = RestoreOptions::default();
    restore_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &second.id,
        &env.layout,
        &options,
    )
    .await
    .unwrap();
    assert!(
        env.tree
            .backed_up_files()
            .keys()
            .any(|p| p.ends_with("second"))
    );
    write_random(&dir.join("third"), 5000, &mut rng);
    let third = incremental(&env, &c).await;
    assert_eq!(
        third.kind,
        BackupKind::Incremental {
            base: second.id.clone()
        }
    );
    let chain = manifest(&env, &third.id).await.chain.unwrap();
    assert_eq!(chain.packs, [first.id.clone(), second.id.clone()]);
}

/// The CLI is killed (SIGKILL) while an incremental create uploads: the chain before
/// it stays whole (the next incremental create builds on its newest backup, and that
/// backup restores byte for byte with the README's recipe).
#[test]
fn a_killed_incremental_create_leaves_the_previous_chain_usable() {
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};
    require_tool("jq", "apt-get install jq");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(Env::new(&spec()));
    let c = LocalContainer::new();
    let first = rt.block_on(incremental(&env, &c));
    let mut rng = Rng::new(3);
    let dir = media_files(&env)[0].parent().unwrap().to_path_buf();
    write_random(&dir.join("before-kill"), 5000, &mut rng);
    let second = rt.block_on(incremental(&env, &c));
    assert!(matches!(second.kind, BackupKind::Incremental { .. }));
    let state = expected(&env);

    write_random(&dir.join("during-kill"), 5000, &mut rng);
    let s3 = env.dir.path().join("s3.yaml");
    let data = env.server.relation_data(&env.bucket);
    fs::write(
        &s3,
        format!(
            "access-key: {}\nsecret-key: {}\nbucket: {}\nendpoint: {}\nregion: us-east-1\ns3-uri-style: path\npath: synapse/backups\n",
            data["access-key"], data["secret-key"], env.bucket, data["endpoint"]
        ),
    )
    .unwrap();
    let pass = env.dir.path().join("pass");
    fs::write(&pass, format!("{PASSPHRASE}\n")).unwrap();
    fs::set_permissions(&pass, fs::Permissions::from_mode(0o600)).unwrap();
    // The real aws CLI, except that the upload records its pid and never ends.
    let marker = env.dir.path().join("aws-pid");
    let aws = env.dir.path().join("aws-stuck-upload");
    fs::write(
        &aws,
        format!(
            "#!/usr/bin/env bash\nif [ \"$1\" = s3 ] && [ \"$2\" = cp ]; then\n  echo $$ > '{}'\n  while :; do sleep 0.05; done\nfi\nexec '{}' \"$@\"\n",
            marker.display(),
            env::aws().display()
        ),
    )
    .unwrap();
    fs::set_permissions(&aws, fs::Permissions::from_mode(0o755)).unwrap();
    let mut cli = std::process::Command::new(env!("CARGO_BIN_EXE_synapse-backup"))
        .arg("--root")
        .arg(&env.tree.root)
        .arg("--s3")
        .arg(&s3)
        .arg("--passphrase-file")
        .arg(&pass)
        .arg("--aws")
        .arg(&aws)
        .args(["create", "--incremental"])
        .env_remove("SYNAPSE_BACKUP_ROOT")
        .env_remove("SYNAPSE_BACKUP_S3")
        .env_remove("SYNAPSE_BACKUP_PASSPHRASE")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while fs::read_to_string(&marker).map_or(true, |t| t.trim().is_empty()) {
        assert!(
            Instant::now() < deadline,
            "the create never reached the upload"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    cli.kill().unwrap();
    cli.wait().unwrap();
    // Let the watchdog stop the orphaned pipeline, then sweep the killed run's dir.
    std::thread::sleep(Duration::from_secs(2));
    rt.block_on(synapse_backup::remove_abandoned_work_dirs(&c, &env.layout));
    // The operator removes the dead run's lock (as `unlock` does).
    rt.block_on(async {
        let store = S3Client::new(&env.params).unwrap();
        let info = synapse_backup::BackupLock::inspect(&store)
            .await
            .unwrap()
            .expect("the killed run's lock");
        assert!(
            synapse_backup::BackupLock::force_release(&store, &info)
                .await
                .unwrap()
        );
    });

    // The chain before the kill restores as it was.
    let restored = without_db(restore_by_recipe(&env, &second.id, 0));
    assert!(
        restored == state,
        "the previous chain's newest backup differs"
    );
    // The next incremental create builds on it, archiving only what is new since.
    let third = rt.block_on(incremental(&env, &c));
    assert_eq!(
        third.kind,
        BackupKind::Incremental {
            base: second.id.clone()
        }
    );
    let chain = rt.block_on(manifest(&env, &third.id)).chain.unwrap();
    assert_eq!(chain.own_files, 1);
    assert_eq!(chain.packs, [first.id.clone(), second.id.clone()]);
}

/// Cancelling an incremental create while it checks its base (gpg decrypting the base's
/// head) stops it, and the check leaves no work dir behind (it held the run's SSE-C
/// key file and gpg's home). Before, the check made its dir in the workload's temp dir
/// and a cancel dropped it there, for the next run's sweep to find.
#[tokio::test(flavor = "multi_thread")]
async fn a_create_cancelled_while_it_checks_its_base_leaves_no_work_dir() {
    use std::time::Duration;

    let env = Env::new(&spec()).await;
    let c = LocalContainer::new();
    let base = incremental(&env, &c).await;
    // A gpg that lets the first decrypt (the passphrase check) through and, on the
    // second (the base's check), records its work dir, then hangs.
    let count = env.dir.path().join("decrypts");
    let seen = env.dir.path().join("check-seen");
    let layout = env.gpg_on_decrypt(
        &env.layout,
        "hanging-gpg",
        &format!(
            "if [ -e '{count}' ]; then echo \"$SB_WORK\" >'{seen}.tmp'; mv '{seen}.tmp' '{seen}'; exec sleep 600; fi\n: >'{count}'",
            count = count.display(),
            seen = seen.display()
        ),
    );

    let options = BackupOptions::default().incremental(true);
    let cancel = options.cancel.clone();
    let watcher = env::cancel_when_exists(&seen, cancel);
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        create_backup_with(&c, &env.params, PASSPHRASE, &layout, &options),
    )
    .await
    .expect("the create stopped when cancelled");
    watcher.await.unwrap();
    assert!(matches!(result, Err(BackupError::Cancelled)), "{result:?}");
    let work = fs::read_to_string(&seen).unwrap();
    let work = Path::new(work.trim());
    assert!(
        !work.exists(),
        "the base check's work dir {} was removed",
        work.display()
    );
    assert!(
        env.work_dirs_left().is_empty(),
        "{:?}",
        env.work_dirs_left()
    );
    let store = S3Client::new(&env.params).unwrap();
    let listed = synapse_backup::list_backups(&store).await.unwrap();
    assert_eq!(listed.len(), 1, "nothing but the base: {listed:?}");
    assert_eq!(listed[0].id, base.id);
}

/// `remove_abandoned_work_dirs` takes the dirs of this process's dropped runs, never
/// those of its running ones: a verify that runs while this process sweeps keeps its
/// work dir and passes. Before, every dir with this process's owner record went, the
/// running verify's too (gpg then found no work dir for its status file), and the
/// integration tests, one process, failed now and then when one test swept while
/// another read a backup.
#[tokio::test(flavor = "multi_thread")]
async fn a_sweep_of_this_processs_dirs_leaves_its_running_verify_alone() {
    use std::time::{Duration, Instant};

    let env = Env::new(&spec()).await;
    let c = LocalContainer::new();
    let backup = incremental(&env, &c).await;
    // A gpg that, at the run's first decrypt, records its work dir and waits for `go`.
    let seen = env.dir.path().join("seen");
    let go = env.dir.path().join("go");
    let layout = env.gpg_on_decrypt(
        &env.layout,
        "waiting-gpg",
        &format!(
            "if [ ! -e '{seen}' ]; then\n  echo \"$SB_WORK\" >'{seen}.tmp'; mv '{seen}.tmp' '{seen}'\n  for _ in $(seq 1200); do [ -e '{go}' ] && break; sleep 0.05; done\nfi",
            seen = seen.display(),
            go = go.display()
        ),
    );
    let options = RestoreOptions::default();
    let verify = verify_backup_with(&c, &env.params, PASSPHRASE, &backup.id, &layout, &options);
    // Beside it, in the same process: the sweep, once the verify is in its gpg.
    let sweep = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        let work = loop {
            if let Ok(text) = fs::read_to_string(&seen) {
                break PathBuf::from(text.trim());
            }
            assert!(Instant::now() < deadline, "the verify never reached gpg");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let removed = synapse_backup::remove_abandoned_work_dirs(&c, &env.layout).await;
        let kept = work.exists();
        fs::write(&go, "").unwrap();
        (work, removed, kept)
    };
    let (report, (work, removed, kept)) = tokio::join!(verify, sweep);
    assert!(
        !removed.iter().any(|d| Path::new(d) == work),
        "the running verify's work dir {} was swept: {removed:?}",
        work.display()
    );
    assert!(
        kept,
        "the running verify's work dir {} is there",
        work.display()
    );
    assert!(report.is_ok(), "{report:?}");
}

/// A chain's verify and restore are futures a charm can `tokio::spawn` once their inputs
/// are owned. rustc could not prove them `Send` before: iterators whose closures
/// borrowed the chain's pack parts were held across awaits ("implementation of
/// `FnOnce` is not general enough").
#[tokio::test(flavor = "multi_thread")]
async fn a_chains_verify_and_restore_can_be_spawned() {
    let env = Env::new(&spec()).await;
    let c = LocalContainer::new();
    incremental(&env, &c).await;
    let newest = incremental(&env, &c).await;
    assert!(matches!(newest.kind, BackupKind::Incremental { .. }));
    let owned = || (env.params.clone(), env.layout.clone(), newest.id.clone());
    let (params, layout, id) = owned();
    let verify = tokio::spawn(async move {
        let options = RestoreOptions::default();
        verify_backup_with(
            &LocalContainer::new(),
            &params,
            PASSPHRASE,
            &id,
            &layout,
            &options,
        )
        .await
    });
    let report = verify.await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    let (params, layout, id) = owned();
    let restore = tokio::spawn(async move {
        let options = RestoreOptions::default();
        restore_backup_with(
            &LocalContainer::new(),
            &params,
            PASSPHRASE,
            &id,
            &layout,
            &options,
        )
        .await
    });
    let report = restore.await.unwrap();
    assert!(report.is_ok(), "{report:?}");
}

/// Every directory under the media store, with its permission bits.
fn media_dir_modes(env: &Env) -> BTreeMap<PathBuf, u32> {
    use std::os::unix::fs::PermissionsExt;
    let mut dirs = BTreeMap::new();
    let mut todo = vec![env.tree.media.clone()];
    while let Some(dir) = todo.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let meta = fs::symlink_metadata(entry.path()).unwrap();
            if meta.is_dir() {
                let rel = entry
                    .path()
                    .strip_prefix(&env.tree.media)
                    .unwrap()
                    .to_path_buf();
                dirs.insert(rel, meta.permissions().mode() & 0o7777);
                todo.push(entry.path());
            }
        }
    }
    dirs
}

/// An incremental pack archives files, not directories, so a restore of a chain makes
/// the media directories itself: they come back 0755 (as Synapse makes them), not
/// 0700 (the pipeline's umask, which left every media dir closed to anyone but the
/// workload user, unlike the tree that was backed up).
#[tokio::test(flavor = "multi_thread")]
async fn a_chain_restore_makes_media_dirs_as_synapse_does() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new(&spec()).await;
    let c = LocalContainer::new();
    // The tree as Synapse (umask 022) makes it.
    for dir in media_dir_modes(&env).keys() {
        fs::set_permissions(env.tree.media.join(dir), fs::Permissions::from_mode(0o755)).unwrap();
    }
    incremental(&env, &c).await;
    let media = media_files(&env);
    let mut rng = Rng::new(3);
    write_random(&media[0].parent().unwrap().join("added"), 5000, &mut rng);
    let fresh = env.tree.media.join("local_content/qq/rr");
    fs::create_dir_all(&fresh).unwrap();
    write_random(&fresh.join("new"), 3000, &mut rng);
    for dir in media_dir_modes(&env).keys() {
        fs::set_permissions(env.tree.media.join(dir), fs::Permissions::from_mode(0o755)).unwrap();
    }
    let second = incremental(&env, &c).await;
    assert!(matches!(second.kind, BackupKind::Incremental { .. }));
    let before = media_dir_modes(&env);
    assert!(before.values().all(|m| *m == 0o755), "{before:?}");

    restore_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &second.id,
        &env.layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(media_dir_modes(&env), before);
}

/// After a restore in place, the next incremental create references the packs the
/// restored files came from. A restore writes whole-second modification times (tar's
/// archive format), and the index had recorded nanoseconds: every restored file
/// looked changed, and the next create was full ("100 % superseded").
#[tokio::test(flavor = "multi_thread")]
async fn an_incremental_after_a_restore_in_place_references_the_restored_files() {
    let env = Env::new(&spec()).await;
    let c = LocalContainer::new();
    let first = incremental(&env, &c).await;
    restore_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &first.id,
        &env.layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap();
    let next = incremental(&env, &c).await;
    assert_eq!(
        next.kind,
        BackupKind::Incremental {
            base: first.id.clone()
        }
    );
    let chain = manifest(&env, &next.id).await.chain.unwrap();
    assert_eq!(chain.own_files, 0, "{chain:?}");
}

/// Restores `id` in place with `script` (one of tests/support/scripts) as the layout's
/// tar, copied into a fresh dir where it writes its logs: gives that dir.
async fn restore_with_probing_tar(
    env: &Env,
    c: &LocalContainer,
    id: &BackupId,
    script: &str,
) -> tempfile::TempDir {
    let probe = tempfile::tempdir().unwrap();
    let tar = probe.path().join(script);
    fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/support/scripts")
            .join(script),
        &tar,
    )
    .unwrap();
    restore_backup_with(
        c,
        &env.params,
        PASSPHRASE,
        id,
        &env.layout.clone().tar(tar.to_string_lossy().into_owned()),
        &RestoreOptions::default(),
    )
    .await
    .unwrap();
    probe
}

/// A chain's packs are extracted side by side into the stage they share: the older
/// ones (their files moved in by Python), the own pack and the database pack (each by
/// its own tar). GNU tar gives a file up ("Cannot open: No such file or directory") when
/// another process makes its directory between tar's failed open and its own mkdir, so
/// every directory the packs write into is made before any of them starts. Here an
/// older pack and the own pack each hold a file in the same 300 fresh directories: a
/// probing tar finds all 300 in the stage at the start of every extraction (each pack's,
/// the older packs' included), and every file comes back byte for byte, each directory
/// 0755. Before, the packs wrote one after another: the older packs' extractions found
/// none.
#[tokio::test(flavor = "multi_thread")]
async fn packs_read_side_by_side_find_their_directories_made() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new(&spec()).await;
    let c = LocalContainer::new();
    incremental(&env, &c).await;
    let mut rng = Rng::new(11);
    let shard = |n: usize| {
        env.tree
            .media
            .join(format!("local_content/f{n:03}/g{n:03}"))
    };
    for n in 0..300 {
        fs::create_dir_all(shard(n)).unwrap();
        write_random(&shard(n).join("older"), 700, &mut rng);
    }
    let older = incremental(&env, &c).await;
    for n in 0..300 {
        write_random(&shard(n).join("newer"), 700, &mut rng);
    }
    let newest = incremental(&env, &c).await;
    assert_eq!(
        newest.kind,
        BackupKind::Incremental {
            base: older.id.clone()
        }
    );
    let want = without_db(live_state(&env).0);
    for n in 0..300 {
        fs::remove_dir_all(shard(n)).unwrap();
    }
    let probe = restore_with_probing_tar(&env, &c, &newest.id, "tar_stage_probe.sh").await;
    assert_eq!(without_db(live_state(&env).0), want);
    for n in 0..300 {
        let mode = fs::metadata(shard(n)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755, "{}", shard(n).display());
    }
    let log = fs::read_to_string(probe.path().join("probe.log")).unwrap();
    // The base, the older increment, the own pack and the database pack.
    assert_eq!(log.lines().count(), 4, "{log}");
    assert!(log.lines().all(|l| l == "extract 300"), "{log}");
}

/// A chain's older pack is read whole, but tar skips the files its backup's index does
/// not assign to it (`--exclude-from`): the base's database, which the newest backup's
/// database pack holds, and media gone since are never written into its stage, where
/// before they were written only to be removed (the database doubling what staging
/// needed). A name tar's exclude list would read as another (white space at its end) is
/// written and removed as before, and its twin without the space, wanted, comes back. A
/// probing tar lists the pack's stage as tar left it; the restore is byte for byte.
#[tokio::test(flavor = "multi_thread")]
async fn an_older_pack_never_writes_the_files_a_later_pack_replaced() {
    let env = Env::new(&spec()).await;
    let c = LocalContainer::new();
    let mut rng = Rng::new(13);
    let dir = env.tree.media.join("local_content/sk/ip");
    fs::create_dir_all(&dir).unwrap();
    for name in ["twin", "twin ", "gone"] {
        write_random(&dir.join(name), 3000, &mut rng);
    }
    let base = incremental(&env, &c).await;
    synapse_tree::change_db(&env.tree.data.join("homeserver.db"));
    fs::remove_file(dir.join("twin ")).unwrap();
    fs::remove_file(dir.join("gone")).unwrap();
    write_random(&dir.join("newer"), 3000, &mut rng);
    let newest = incremental(&env, &c).await;
    assert_eq!(
        newest.kind,
        BackupKind::Incremental {
            base: base.id.clone()
        }
    );
    let want = without_db(live_state(&env).0);
    let want_db = synapse_tree::dump_db(&env.tree.data.join("homeserver.db"));
    fs::remove_file(dir.join("twin")).unwrap();
    synapse_tree::change_db(&env.tree.data.join("homeserver.db"));
    let probe = restore_with_probing_tar(&env, &c, &newest.id, "tar_extract_probe.sh").await;
    assert_eq!(without_db(live_state(&env).0), want);
    assert_eq!(
        synapse_tree::dump_db(&env.tree.data.join("homeserver.db")),
        want_db
    );
    // The base pack's extraction, as tar left its stage.
    let mut packs = Vec::new();
    for entry in fs::read_dir(probe.path()).unwrap() {
        let log = fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
        if log
            .lines()
            .next()
            .is_some_and(|l| l.ends_with("/pack.stage"))
        {
            packs.push(log);
        }
    }
    assert_eq!(packs.len(), 1, "{packs:?}");
    let staged: Vec<&str> = packs[0].lines().skip(1).collect();
    let media = |name: &str| format!("data/media_store/local_content/sk/ip/{name}");
    assert!(staged.contains(&media("twin").as_str()), "{staged:?}");
    assert!(staged.contains(&media("twin ").as_str()), "{staged:?}");
    assert!(!staged.contains(&media("gone").as_str()), "{staged:?}");
    assert!(!staged.contains(&"data/homeserver.db"), "{staged:?}");
    assert!(staged.len() > 10, "{staged:?}");
}

/// With the workload transfer, a chain's small packs (all of them here: under
/// `small_pack_mib`) are downloaded by the library: a restore of a chain of three with
/// no aws CLI in the workload at all succeeds, byte for byte. With `small_pack_mib(0)`
/// every pack is the workload's aws CLI's to download, and the same restore fails at
/// the download, nothing live touched.
#[tokio::test(flavor = "multi_thread")]
async fn a_chains_small_packs_need_no_aws_cli_in_the_workload() {
    let env = Env::new(&spec()).await;
    let c = LocalContainer::new();
    incremental(&env, &c).await;
    let mut rng = Rng::new(5);
    let media = media_files(&env);
    write_random(&media[0].parent().unwrap().join("one"), 4000, &mut rng);
    incremental(&env, &c).await;
    write_random(&media[1].parent().unwrap().join("two"), 4000, &mut rng);
    let newest = incremental(&env, &c).await;
    let want = live_state(&env);
    let no_aws = env.layout.clone().aws("/nonexistent/aws");
    let e = restore_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &newest.id,
        &no_aws,
        &RestoreOptions::default().small_pack_mib(0),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            &e,
            BackupError::StageFailed {
                stage: synapse_backup::Stage::Download,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(live_state(&env), want);
    fs::remove_file(media[0].parent().unwrap().join("one")).unwrap();
    restore_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &newest.id,
        &no_aws,
        &RestoreOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(without_db(live_state(&env).0), without_db(want.0));
}

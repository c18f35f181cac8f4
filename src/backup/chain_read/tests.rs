use super::*;
use crate::backup::incremental::{BackupKind, IndexEntry, IndexWriter};
use crate::backup::manifest::{ManifestEntry, ManifestLayout, ManifestPath};
use crate::backup::restore_plan::ArchiveMember;

fn id(n: u32) -> BackupId {
    format!("backup-2026120301{n:02}00000000").parse().unwrap()
}

fn link(n: u32) -> ChainLink {
    ChainLink {
        id: id(n),
        nonce: format!("nonce{n}"),
        object_sha256: format!("sha{n}"),
        bytes: 10,
    }
}

fn entry(path: &[u8], size: u64, pack: u32) -> IndexEntry {
    IndexEntry {
        path: ManifestPath::from_bytes(path),
        size,
        mtime_ns: 1,
        pack: id(pack),
    }
}

/// An index of `entries` and the chain of backup 3 on packs 1 and 2 that records it.
fn index(entries: &[IndexEntry]) -> (Vec<u8>, PackChain) {
    let mut w = IndexWriter::new(Vec::new());
    for e in entries {
        w.push(e).unwrap();
    }
    let (summary, bytes) = w.finish().unwrap();
    let chain = PackChain {
        index_sha256: summary.sha256,
        links: vec![link(1), link(2)],
        own_bytes: 0,
        database: Vec::new(),
    };
    (bytes, chain)
}

fn entries() -> Vec<IndexEntry> {
    vec![
        entry(b"m/local_content/a", 1, 1),
        entry(b"m/local_content/b", 2, 3),
        entry(b"m/local_content/c\nd e", 3, 1),
        entry(b"m/local_content/f\xff", 4, 2),
    ]
}

fn files(m: &Manifest) -> impl Iterator<Item = (&[u8], EntryKind)> {
    m.files.iter().map(|f| (f.path.as_bytes(), f.kind))
}

fn refs(members: &[ArchiveMember]) -> impl Iterator<Item = MemberRef<'_>> + Clone {
    members.iter().map(ArchiveMember::as_ref)
}

fn member(kind: char, name: &[u8]) -> ArchiveMember {
    ArchiveMember {
        kind,
        name: name.to_vec(),
        size: 0,
        mode: 0o600,
        uid: 0,
        gid: 0,
    }
}

fn manifest(files: &[&[u8]]) -> Manifest {
    Manifest {
        format: crate::backup::manifest::MANIFEST_FORMAT,
        backup_id: id(1),
        created: chrono::Utc::now(),
        created_by: "synapse-backup/test".into(),
        server_name: None,
        layout: ManifestLayout {
            config_dir: "/data".into(),
            data_dir: "/data".into(),
            media_store_path: "/data/media_store".into(),
            members: vec![],
        },
        database: crate::backup::manifest::DatabaseSnapshot::Sqlite,
        warnings: vec![],
        files: files
            .iter()
            .map(|p| ManifestEntry {
                path: ManifestPath::from_bytes(p),
                kind: EntryKind::File,
                size: 0,
            })
            .collect(),
        plaintext_bytes: 0,
        ciphertext_bytes: 0,
        ciphertext_sha256: "sha1".into(),
        cipher: crate::backup::manifest::Cipher::Aes256,
        compression: crate::backup::plan::Compression::None,
        nonce: Some("nonce1".into()),
        chain: None,
    }
}

#[test]
fn the_index_splits_into_one_member_list_per_pack_in_chain_order() {
    let (bytes, chain) = index(&entries());
    let parts = split_index(&bytes[..], &id(3), &chain).unwrap();
    let ids: Vec<_> = parts.iter().map(|p| p.id.clone()).collect();
    assert_eq!(ids, vec![id(1), id(2), id(3)]);
    let names = |part: &PackPart| part.names().collect::<Vec<_>>();
    assert_eq!(
        names(&parts[0]),
        [&b"m/local_content/a"[..], b"m/local_content/c\nd e"]
    );
    assert_eq!(parts[0].link, Some(link(1)));
    assert_eq!((parts[0].usage.files, parts[0].usage.bytes), (2, 4));
    assert_eq!(names(&parts[1]), [b"m/local_content/f\xff"]);
    assert_eq!(names(&parts[2]), [b"m/local_content/b"]);
    assert_eq!(parts[2].link, None);
    assert_eq!(
        parts[0].members.position(b"m/local_content/c\nd e"),
        Some(1)
    );
    assert_eq!(parts[0].members.position(b"m/local_content/b"), None);
    // An older pack is read with its inner manifest first.
    let list: Vec<Vec<u8>> = parts[1].tar_list(1 << 20).collect();
    assert_eq!(
        list,
        [[
            INNER_MANIFEST_MEMBER.as_bytes(),
            b"\0m/local_content/f\xff\0"
        ]
        .concat()]
    );
    // In pieces of whole names: here one name each.
    let pieces: Vec<Vec<u8>> = parts[0].tar_list(1).collect();
    assert_eq!(
        pieces,
        [
            [INNER_MANIFEST_MEMBER.as_bytes(), b"\0"].concat(),
            b"m/local_content/a\0".to_vec(),
            b"m/local_content/c\nd e\0".to_vec(),
        ]
    );
    // A pack with nothing in the index gets an empty list.
    let (bytes, chain) = index(&[entry(b"x", 1, 3)]);
    let parts = split_index(&bytes[..], &id(3), &chain).unwrap();
    assert!(parts[0].members.is_empty() && parts[0].names().next().is_none());
}

#[test]
fn a_swapped_or_redirected_index_is_refused() {
    let (bytes, chain) = index(&entries());
    // Another index (one file redirected to another pack of the chain): its SHA-256.
    let mut redirected = entries();
    redirected[1].pack = id(2);
    let (other, _) = index(&redirected);
    let e = split_index(&other[..], &id(3), &chain).unwrap_err();
    assert!(matches!(e, IndexError::Mismatch { .. }), "{e}");
    // An entry naming a pack outside the chain.
    let mut outside = entries();
    outside[0].pack = id(9);
    let (outside, mut chain9) = index(&outside);
    chain9.links = chain.links.clone();
    let e = split_index(&outside[..], &id(3), &chain9).unwrap_err();
    assert!(matches!(e, IndexError::UnknownPack { .. }), "{e}");
    // A cut index.
    let e = split_index(&bytes[..bytes.len() - 1], &id(3), &chain).unwrap_err();
    assert!(matches!(e, IndexError::Malformed { .. }), "{e}");
    // The whole index, as recorded, passes.
    assert!(split_index(&bytes[..], &id(3), &chain).is_ok());
}

fn record(chain: &PackChain) -> ManifestChain {
    ManifestChain {
        kind: BackupKind::Incremental { base: id(2) },
        packs: vec![id(1), id(2)],
        index: index_suffix(Some(&id(2))),
        index_sha256: chain.index_sha256.clone(),
        indexed_files: 0,
        indexed_bytes: 0,
        own_files: 0,
        own_bytes: 0,
        total_ciphertext_bytes: 0,
        database: None,
    }
}

#[test]
fn the_manifest_chain_record_must_be_the_one_the_data_records() {
    let (_, chain) = index(&entries());
    let good = record(&chain);
    assert_eq!(
        check_record(&id(3), &chain, Some(&good)).unwrap(),
        format!(".on-{}.index.ndjson", id(2))
    );
    let mut spliced = good.clone();
    spliced.packs = vec![id(2)];
    let e = check_record(&id(3), &chain, Some(&spliced)).unwrap_err();
    assert!(e.contains("a spliced chain"), "{e}");
    let mut reordered = good.clone();
    reordered.packs = vec![id(2), id(1)];
    assert!(check_record(&id(3), &chain, Some(&reordered)).is_err());
    let mut other_index = good.clone();
    other_index.index_sha256 = "00".into();
    let e = check_record(&id(3), &chain, Some(&other_index)).unwrap_err();
    assert!(e.contains("another file index"), "{e}");
    let mut elsewhere = good.clone();
    elsewhere.index = ".on-x/../../y.index.ndjson".into();
    let e = check_record(&id(3), &chain, Some(&elsewhere)).unwrap_err();
    assert!(e.contains("names the index"), "{e}");
    let e = check_record(&id(3), &chain, None).unwrap_err();
    assert!(e.contains("has no chain"), "{e}");
    let full = PackChain::default();
    assert!(check_record(&id(3), &full, Some(&good)).is_err());
}

#[test]
fn an_older_pack_must_be_the_object_the_chain_was_made_on() {
    let l = link(1);
    let m = manifest(&[]);
    assert!(check_older_manifest(&l, Some(&m)).is_ok());
    assert!(check_older_manifest(&l, None).is_err());
    let mut other_nonce = m.clone();
    other_nonce.nonce = Some("nonce9".into());
    let e = check_older_manifest(&l, Some(&other_nonce)).unwrap_err();
    assert!(e.contains("substituted"), "{e}");
    let mut other_sha = m.clone();
    other_sha.ciphertext_sha256 = "sha9".into();
    let e = check_older_manifest(&l, Some(&other_sha)).unwrap_err();
    assert!(e.contains("re-uploaded"), "{e}");

    let inner = |backup: u32, nonce: &str| InnerManifest {
        format: crate::backup::manifest::MANIFEST_FORMAT,
        backup_id: id(backup),
        created: chrono::Utc::now(),
        created_by: "synapse-backup/test".into(),
        layout: m.layout.clone(),
        database: crate::backup::manifest::DatabaseSnapshot::Sqlite,
        nonce: nonce.into(),
        chain: None,
    };
    assert!(check_older_pack(&l, "sha1", Some(&inner(1, "nonce1"))).is_ok());
    let e = check_older_pack(&l, "sha9", Some(&inner(1, "nonce1"))).unwrap_err();
    assert!(e.contains("SHA-256"), "{e}");
    assert!(check_older_pack(&l, "sha1", Some(&inner(2, "nonce1"))).is_err());
    assert!(check_older_pack(&l, "sha1", Some(&inner(1, "nonce2"))).is_err());
    assert!(check_older_pack(&l, "sha1", None).is_err());
}

#[test]
fn an_older_pack_gives_exactly_what_the_index_assigns_to_it() {
    let (bytes, chain) = index(&entries());
    let parts = split_index(&bytes[..], &id(3), &chain).unwrap();
    let first = &parts[0];
    let m = manifest(&[b"m/local_content/a", b"m/local_content/c\nd e"]);
    let inner = member('-', INNER_MANIFEST_MEMBER.as_bytes());
    let good = vec![
        inner.clone(),
        member('-', b"m/local_content/a"),
        member('-', b"m/local_content/c\nd e"),
    ];
    let _ = check_partial_listing(first, refs(&good), files(&m)).unwrap();
    // A member of another state (not assigned to it) is read but not kept.
    let other = [good.clone(), vec![member('-', b"m/local_content/b")]].concat();
    let wanted = check_partial_listing(first, refs(&other), files(&m)).unwrap();
    assert!(wanted.contains(b"m/local_content/a") && wanted.contains(b"m/local_content/c\nd e"));
    assert!(!wanted.contains(b"m/local_content/b"));
    // A missing member, one twice, a directory, no inner manifest first.
    let cases: Vec<(Vec<ArchiveMember>, &str)> = vec![
        (good[..2].to_vec(), "lacks"),
        (
            [good.clone(), vec![member('-', b"m/local_content/a")]].concat(),
            "twice",
        ),
        (
            vec![
                inner.clone(),
                member('d', b"m/local_content/a"),
                good[2].clone(),
            ],
            "another kind of member",
        ),
        (good[1..].to_vec(), "inner manifest"),
    ];
    for (members, why) in cases {
        let e = check_partial_listing(first, refs(&members), files(&m)).unwrap_err();
        assert!(e.contains(why), "{why}: {e}");
    }
    // Its own manifest must list what it gave.
    let e = check_partial_listing(
        first,
        refs(&good),
        files(&manifest(&[b"m/local_content/a"])),
    )
    .unwrap_err();
    assert!(e.contains("does not list"), "{e}");
}

#[test]
fn the_own_pack_holds_its_files_and_none_of_the_older_packs() {
    let (bytes, chain) = index(&entries());
    let parts = split_index(&bytes[..], &id(3), &chain).unwrap();
    let own = vec![
        member('-', INNER_MANIFEST_MEMBER.as_bytes()),
        member('-', b"data/signing.key"),
        member('d', b"m/local_content"),
        member('-', b"m/local_content/b"),
    ];
    check_own_listing(&parts, refs(&own)).unwrap();
    let e = check_own_listing(&parts, refs(&own[..3])).unwrap_err();
    assert!(e.contains("lacks \"m/local_content/b\""), "{e}");
    let stale = [own.clone(), vec![member('-', b"m/local_content/a")]].concat();
    let e = check_own_listing(&parts, refs(&stale)).unwrap_err();
    assert!(e.contains(&format!("the older pack {}", id(1))), "{e}");
}

/// The index as `chain_fetch` reads it: ranged GETs of `range` bytes from a bucket,
/// split line by line.
async fn split_streamed(
    body: &[u8],
    chain: &PackChain,
    range: u64,
) -> Result<Vec<PackPart>, String> {
    use crate::backup::index_read::{IndexRead, Limits, each_line};
    use crate::s3::{MemoryStore, ObjectStore};
    let store = MemoryStore::new("");
    store
        .put_object(
            "x.index.ndjson",
            body.to_vec(),
            "x",
            &std::collections::HashMap::new(),
        )
        .await
        .unwrap();
    let limits = Limits {
        range,
        max_line: 200,
        max_bytes: 1 << 20,
    };
    let mut split = IndexSplit::new(&id(3), chain);
    match each_line(&store, "x.index.ndjson", limits, |line| split.line(line)).await {
        Ok(()) => split.finish().map_err(|e| e.to_string()),
        Err(IndexRead::Each(e) | IndexRead::Object(e)) => Err(e.to_string()),
        Err(IndexRead::S3(e)) => Err(e.to_string()),
    }
}

#[tokio::test]
async fn a_streamed_index_splits_as_a_whole_one_whatever_the_range() {
    let (bytes, chain) = index(&entries());
    let whole = split_index(&bytes[..], &id(3), &chain).unwrap();
    for range in [1, 7, 50, 64, 4096] {
        let streamed = split_streamed(&bytes, &chain, range).await.unwrap();
        assert_eq!(streamed, whole, "range {range}");
    }
    assert_eq!(whole[0].usage.files, 2);
}

#[tokio::test]
async fn a_streamed_index_altered_or_cut_is_refused() {
    let (bytes, chain) = index(&entries());
    // One byte changed in a size: well-formed, but not the index the chain records.
    let mut altered = bytes.clone();
    let at = altered.windows(8).position(|w| w == b"\"size\":2").unwrap() + 7;
    altered[at] = b'5';
    let e = split_streamed(&altered, &chain, 16).await.unwrap_err();
    assert!(e.contains("altered or swapped"), "{e}");
    // Cut inside its last line (a truncated object), and cut at a line's end.
    let e = split_streamed(&bytes[..bytes.len() - 5], &chain, 16)
        .await
        .unwrap_err();
    assert!(e.contains("no newline (a cut index)"), "{e}");
    let first = bytes.iter().position(|b| *b == b'\n').unwrap() + 1;
    let e = split_streamed(&bytes[..first], &chain, 16)
        .await
        .unwrap_err();
    assert!(e.contains("altered or swapped"), "{e}");
    // A line longer than any index line is refused before it is held whole.
    let mut long = bytes.clone();
    long.extend(std::iter::repeat_n(b'x', 300));
    let e = split_streamed(&long, &chain, 16).await.unwrap_err();
    assert!(
        e.contains("file index x.index.ndjson line 5: longer than 200 bytes"),
        "{e}"
    );
}

/// The inner manifest of backup 3 whose database pack holds `database`.
fn inner_with_database(database: &[&str]) -> InnerManifest {
    let m = manifest(&[]);
    let (_, mut chain) = index(&entries());
    chain.database = database.iter().map(ToString::to_string).collect();
    InnerManifest {
        format: m.format,
        backup_id: id(3),
        created: m.created,
        created_by: m.created_by,
        layout: m.layout,
        database: m.database,
        nonce: "nonce3".into(),
        chain: Some(chain),
    }
}

#[test]
fn a_database_pack_is_recorded_exactly_when_the_data_records_one() {
    let database = DatabasePack {
        ciphertext_bytes: 10,
        ciphertext_sha256: "sha".into(),
    };
    let (_, chain) = index(&entries());
    let mut listed = record(&chain);
    assert_eq!(check_database_record(&chain, &listed), Ok(None));
    listed.database = Some(database.clone());
    let e = check_database_record(&chain, &listed).unwrap_err();
    assert!(e.contains("its data records none"), "{e}");
    let with = inner_with_database(&["data/homeserver.db"]).chain.unwrap();
    assert_eq!(check_database_record(&with, &listed), Ok(Some(&database)));
    listed.database = None;
    let e = check_database_record(&with, &listed).unwrap_err();
    assert!(
        e.contains("records no database pack") && e.contains("data/homeserver.db"),
        "{e}"
    );
}

#[test]
fn the_manifest_lists_the_database_packs_members_as_files() {
    let database = ["data/homeserver.db".to_string()];
    let listed = |kind| {
        [
            (&b"data/homeserver.db"[..], kind),
            (&b"data/a.key"[..], EntryKind::File),
        ]
    };
    assert!(check_database_listed(&database, listed(EntryKind::File).into_iter()).is_ok());
    let e = check_database_listed(&database, listed(EntryKind::Dir).into_iter()).unwrap_err();
    assert!(e.contains("\"data/homeserver.db\""), "{e}");
    let e = check_database_listed(&database, std::iter::empty()).unwrap_err();
    assert!(e.contains("does not list"), "{e}");
}

#[test]
fn a_database_pack_is_its_backups_and_holds_exactly_its_database() {
    let own = inner_with_database(&["data/homeserver.db"]);
    let inner = member('-', INNER_MANIFEST_MEMBER.as_bytes());
    let db = member('-', b"data/homeserver.db");
    assert!(check_database_pack(&own, Some(&own), refs(&[inner.clone(), db.clone()])).is_ok());
    // Another backup's, or another run's (another nonce): refused.
    let mut other = own.clone();
    other.nonce = "another run".into();
    for inner_manifest in [Some(&other), None] {
        let e = check_database_pack(&own, inner_manifest, refs(&[inner.clone(), db.clone()]))
            .unwrap_err();
        assert!(e.contains("not its backup's"), "{e}");
    }
    // Its inner manifest first, then exactly its database, each once, as a file.
    let cases: [(Vec<ArchiveMember>, &str); 5] = [
        (vec![db.clone(), inner.clone()], "not its first member"),
        (vec![inner.clone()], "lacks \"data/homeserver.db\""),
        (vec![inner.clone(), db.clone(), db.clone()], "twice"),
        (
            vec![
                inner.clone(),
                db.clone(),
                member('-', b"data/media_store/local_content/x"),
            ],
            "does not list",
        ),
        (
            vec![inner.clone(), member('l', b"data/homeserver.db")],
            "does not list",
        ),
    ];
    for (members, said) in cases {
        let e = check_database_pack(&own, Some(&own), refs(&members)).unwrap_err();
        assert!(e.contains(said), "{said}: {e}");
    }
}

#[test]
fn the_stage_dirs_are_the_parents_of_every_file_the_packs_write() {
    let (bytes, chain) = index(&[
        entry(b"m/local_content/ab/cd/x", 1, 1),
        entry(b"m/local_content/ab/cd/y", 1, 3),
        entry(b"m/local_content/ab/cd/z", 1, 1),
        entry(b"m/local_content/ab/ef/w", 1, 2),
        entry(b"m/local_thumbnails/ab/cd/t\xff", 1, 1),
        entry(b"top", 1, 3),
    ]);
    let parts = split_index(&bytes[..], &id(3), &chain).unwrap();
    let database = [
        "data/homeserver.db".to_string(),
        "data/homeserver.db-wal".to_string(),
    ];
    let dirs = stage_dirs(&parts, &database);
    let mut listed: Vec<&[u8]> = dirs.split(|b| *b == 0).collect();
    assert_eq!(listed.pop(), Some(&b""[..]), "NUL-terminated");
    // Each pack's list in index order, a parent repeated right after itself once; a
    // parent repeated across packs is harmless (made if missing).
    let want: Vec<&[u8]> = vec![
        b".synapse-backup",
        b"m/local_content/ab/cd",
        b"m/local_thumbnails/ab/cd",
        b"m/local_content/ab/ef",
        b"m/local_content/ab/cd",
        b"data",
    ];
    assert_eq!(listed, want);
    // Every file's parent is there.
    for part in &parts {
        for name in part.names() {
            let cut = name.iter().rposition(|b| *b == b'/');
            if let Some(cut) = cut {
                assert!(listed.contains(&&name[..cut]));
            }
        }
    }
}

/// Names held front-coded in blocks are given back as pushed and found where they
/// are, across block boundaries; a name out of order is refused and not held.
#[test]
fn sorted_names_are_found_where_they_are_held() {
    let all: Vec<Vec<u8>> = (0..100_u32)
        .map(|i| format!("m/local_content/{:02}/{}", i / 7, i * 13 % 1000).into_bytes())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut names = SortedNames::default();
    assert_eq!(names.position(b"m"), None);
    for name in &all {
        assert!(names.push(name));
    }
    names.shrink_to_fit();
    assert_eq!(names.len(), all.len());
    assert_eq!(names.iter().collect::<Vec<_>>(), all);
    for (i, name) in all.iter().enumerate() {
        assert_eq!(
            names.position(name),
            Some(i),
            "{}",
            String::from_utf8_lossy(name)
        );
        // Just before, just after and a prefix of a held name are not held.
        let mut after = name.clone();
        after.push(0);
        assert_eq!(names.position(&after), None);
        let prefix = &name[..name.len() - 1];
        if !all.iter().any(|n| n == prefix) {
            assert_eq!(names.position(prefix), None);
        }
    }
    assert_eq!(names.position(b""), None);
    assert_eq!(names.position(b"z"), None);
    // Out of order, or twice: refused, and nothing changes.
    assert!(!names.push(&all[3]));
    assert!(!names.push(all.last().unwrap()));
    assert_eq!(names.len(), all.len());
    // Front-coded: fewer bytes than the names.
    let whole: usize = all.iter().map(Vec::len).sum();
    assert!(names.bytes() < whole, "{} vs {whole}", names.bytes());
}

/// Names past one buffer are held in several, and found and given back as pushed.
#[test]
fn sorted_names_span_buffers() {
    let all: Vec<Vec<u8>> = (0..40_000_u32)
        .map(|i| format!("m/local_content/{i:08}/{}", "x".repeat(i as usize % 40)).into_bytes())
        .collect();
    let mut names = SortedNames::default();
    for name in &all {
        assert!(names.push(name));
    }
    names.shrink_to_fit();
    assert!(names.bufs.len() > 2, "{} buffers", names.bufs.len());
    assert!(names.iter().eq(all.iter().cloned()));
    for (i, name) in all.iter().enumerate().step_by(7) {
        assert_eq!(names.position(name), Some(i));
    }
    assert_eq!(names.position(b"m/local_content/00039999/y"), None);
}

/// An older pack's read skips (tar's `--exclude-from`) exactly the files of its
/// manifest that the index does not assign to it: the database a later pack holds and
/// media gone since, never one it assigns, a directory or the inner manifest; a name
/// tar's list would read as another (a newline in it, white space at its end, which
/// tar trims) is not listed, and is written and removed as before. In pieces of whole
/// lines.
#[test]
fn an_older_pack_skips_the_files_the_index_does_not_assign_to_it() {
    let (bytes, chain) = index(&[
        entry(b"data/homeserver.db", 5, 3),
        entry(b"m/local_content/kept", 1, 1),
        entry(b"m/local_content/kept ", 2, 1),
    ]);
    let parts = split_index(&bytes[..], &id(3), &chain).unwrap();
    let entries = [
        (INNER_MANIFEST_MEMBER.as_bytes(), EntryKind::File, 9),
        (b"data/homeserver.db", EntryKind::File, 100),
        (b"m/local_content", EntryKind::Dir, 0),
        (b"m/local_content/gone", EntryKind::File, 7),
        (b"m/local_content/kept", EntryKind::File, 1),
        (b"m/local_content/kept ", EntryKind::File, 2),
        (b"m/local_content/new\nline", EntryKind::File, 3),
        (b"m/local_content/tab\t", EntryKind::File, 3),
        (b"m/local_content/vt\x0b", EntryKind::File, 3),
        (b"m/local_content/cr\r", EntryKind::File, 3),
        (b"m/local_content/ space and * [x] \\n", EntryKind::File, 4),
    ];
    let unwanted: Vec<_> = parts[0].unwanted_files(entries.into_iter()).collect();
    assert_eq!(
        unwanted,
        [
            (&b"data/homeserver.db"[..], 100),
            (b"m/local_content/gone", 7),
            (b"m/local_content/ space and * [x] \\n", 4),
        ]
    );
    let names = || {
        parts[0]
            .unwanted_files(entries.into_iter())
            .map(|(p, _)| p.to_vec())
    };
    assert_eq!(
        in_pieces(names(), b'\n', 1 << 20).collect::<Vec<_>>(),
        [
            b"data/homeserver.db\nm/local_content/gone\nm/local_content/ space and * [x] \\n\n"
                .to_vec()
        ]
    );
    assert_eq!(in_pieces(names(), b'\n', 1).count(), 3);
}

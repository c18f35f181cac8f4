use super::*;

fn id(n: u32) -> BackupId {
    format!("backup-2026120301{n:02}00000000").parse().unwrap()
}

fn text(p: &str) -> ManifestPath {
    ManifestPath::Text(p.into())
}

fn entry(path: &str, size: u64, mtime_ns: i64, pack: u32) -> IndexEntry {
    IndexEntry {
        path: text(path),
        size,
        mtime_ns,
        pack: id(pack),
    }
}

fn write_index(entries: &[IndexEntry]) -> (IndexSummary, Vec<u8>) {
    let mut w = IndexWriter::new(Vec::new());
    for e in entries {
        w.push(e).unwrap();
    }
    w.finish().unwrap()
}

/// A tree listing as `find -printf '%s %T@ %P\0'` and `sort -z` leave it.
fn listing(files: &[(&[u8], u64, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, size, mtime) in files {
        out.extend_from_slice(format!("{size} {mtime} ").as_bytes());
        out.extend_from_slice(path);
        out.push(0);
    }
    out
}

#[test]
fn an_index_round_trips_and_its_sha256_is_of_its_bytes() {
    let entries = [
        entry(
            "data/m/local_content/aa/bb/c",
            3,
            1_700_000_000_123_456_789,
            1,
        ),
        entry("data/m/local_content/aa/bb/d", 5, -1_500_000_000, 2),
        IndexEntry {
            path: ManifestPath::Bytes(b"data/m/local_content/\xff".to_vec()),
            size: 7,
            mtime_ns: 0,
            pack: id(2),
        },
    ];
    let (summary, bytes) = write_index(&entries);
    assert_eq!(summary.sha256, hex(&Sha256::digest(&bytes)));
    assert_eq!(
        summary.total,
        Usage {
            files: 3,
            bytes: 15
        }
    );
    assert_eq!(summary.packs[&id(1)], Usage { files: 1, bytes: 3 });
    assert_eq!(
        summary.packs[&id(2)],
        Usage {
            files: 2,
            bytes: 12
        }
    );
    assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), 3);

    let read: Vec<IndexEntry> = IndexReader::new(&bytes[..])
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(read, entries);
    let again = IndexReader::new(&bytes[..])
        .with_packs(vec![id(1), id(2)])
        .verify(&id(2), &summary.sha256)
        .unwrap();
    assert_eq!(again, summary);
}

#[test]
fn an_altered_or_swapped_index_is_refused_naming_it() {
    let (summary, bytes) = write_index(&[entry("a", 1, 1, 1), entry("b", 2, 2, 2)]);
    // One byte changed: still a well-formed index, but not the authenticated one.
    let altered = String::from_utf8(bytes.clone())
        .unwrap()
        .replacen("\"size\":2", "\"size\":3", 1);
    let e = IndexReader::new(altered.as_bytes())
        .verify(&id(2), &summary.sha256)
        .unwrap_err();
    assert!(matches!(e, IndexError::Mismatch { .. }), "{e}");
    let shown = e.to_string();
    assert!(
        shown.contains(id(2).as_str()) && shown.contains(&summary.sha256),
        "{shown}"
    );
    // A file redirected to a pack outside the chain.
    let e = IndexReader::new(&bytes[..])
        .with_packs(vec![id(2)])
        .summarise()
        .unwrap_err();
    assert!(
        matches!(&e, IndexError::UnknownPack { line: 1, pack, .. } if pack == id(1).as_str()),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("file index line 1: \"a\" names pack")
    );
}

#[test]
fn malformed_unsorted_and_cut_indexes_name_the_line() {
    let good =
        "{\"path\":\"a\",\"size\":1,\"mtime_ns\":1,\"pack\":\"backup-20261203010100000000\"}\n";
    for (input, line, needle) in [
        (format!("{good}{good}"), 2, "does not sort after"),
        (
            format!("{good}{}", good.replace("\"a\"", "\"0\"")),
            2,
            "does not sort after",
        ),
        (
            format!("{good}{}", good.trim_end().replace("\"a\"", "\"b\"")),
            2,
            "no newline",
        ),
        (good.replace("\"size\":1", "\"size\":-1"), 1, "size"),
        (good.replace("backup-2026", "backup-x"), 1, "backup-x"),
        (good.replace("\"pack\"", "\"extra\":1,\"pack\""), 1, "extra"),
        ("not json\n".to_string(), 1, "expected"),
    ] {
        let e = IndexReader::new(input.as_bytes()).summarise().unwrap_err();
        let shown = e.to_string();
        assert!(
            shown.starts_with(&format!("file index line {line}: ")) && shown.contains(needle),
            "{input:?}: {shown}"
        );
    }
    // A writer refuses out-of-order entries too, and leaves nothing half-written.
    let mut w = IndexWriter::new(Vec::new());
    w.push(&entry("b", 1, 1, 1)).unwrap();
    assert!(matches!(
        w.push(&entry("a", 1, 1, 1)),
        Err(IndexError::Unsorted { line: 2, .. })
    ));
    let (summary, bytes) = w.finish().unwrap();
    assert_eq!(
        (
            summary.total.files,
            bytes.iter().filter(|b| **b == b'\n').count()
        ),
        (1, 1)
    );
    // The iterator stops after the first error.
    let mut r = IndexReader::new("x\n{}\n".as_bytes());
    assert!(r.next().unwrap().is_err());
    assert!(r.next().is_none());
}

#[test]
fn mtimes_parse_as_find_prints_them() {
    for (text, ns) in [
        ("1700000000.1234567890", Some(1_700_000_000_123_456_789)),
        ("1700000000.5", Some(1_700_000_000_500_000_000)),
        ("1700000000", Some(1_700_000_000_000_000_000)),
        ("0.0000000000", Some(0)),
        ("-1.5000000000", Some(-1_500_000_000)),
        ("", None),
        (".5", None),
        ("1.x", None),
        ("+1.0", None),
        ("1e9", None),
        ("99999999999999999999.0", None),
    ] {
        assert_eq!(parse_mtime(text), ns, "{text}");
    }
}

#[test]
fn a_tree_listing_reads_any_name_and_refuses_bad_records() {
    let bytes = listing(&[
        (b"data/m/local_content/a b", 3, "1.5"),
        (b"data/m/local_content/new\nline", 0, "2.0"),
        (b"data/m/local_content/\xff", 9, "3.0"),
    ]);
    let files: Vec<TreeFile> = TreeListing::new(&bytes[..])
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(files.len(), 3);
    assert_eq!(files[0].path, text("data/m/local_content/a b"));
    assert_eq!((files[0].size, files[0].mtime_ns), (3, 1_500_000_000));
    assert_eq!(files[1].path, text("data/m/local_content/new\nline"));
    assert_eq!(
        files[2].path,
        ManifestPath::Bytes(b"data/m/local_content/\xff".to_vec())
    );

    for (record, needle) in [
        (&b"3 1.0 /etc/passwd\0"[..], "absolute"),
        (b"3 1.0 data/../etc\0", ".."),
        (b"3 1.0 data//x\0", "empty"),
        (b"3 1.0 \0", "empty"),
        (b"x 1.0 data/a\0", "size"),
        (b"-3 1.0 data/a\0", "size"),
        (b"3 yesterday data/a\0", "modification time"),
        (b"3 1.0\0", "SIZE MTIME PATH"),
        (b"3 1.0 data/a", "cut"),
    ] {
        let mut input = listing(&[(b"a", 1, "1.0")]);
        input.extend_from_slice(record);
        let e = TreeListing::new(&input[..])
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("tree listing line 2: ") && e.contains(needle),
            "{record:?}: {e}"
        );
    }
    let unsorted = listing(&[(b"b", 1, "1.0"), (b"a", 1, "1.0")]);
    let e = TreeListing::new(&unsorted[..])
        .collect::<Result<Vec<_>, _>>()
        .unwrap_err();
    assert!(
        matches!(
            e,
            IndexError::Unsorted {
                line: 2,
                what: "tree listing",
                ..
            }
        ),
        "{e}"
    );
}

/// Plans `tree` on top of `base` as backup `new`: the plan, the new index's bytes and
/// the members archived.
fn plan(base: &[u8], tree: &[u8], new: &BackupId) -> (IncrementalPlan, Vec<u8>, Vec<u8>) {
    let mut index = IndexWriter::new(Vec::new());
    let mut members = Vec::new();
    let mut planned = plan_incremental(
        IndexReader::new(base),
        TreeListing::new(tree),
        new,
        &mut index,
        &mut members,
    )
    .unwrap();
    let (summary, bytes) = index.finish().unwrap();
    planned.index = summary;
    (planned, bytes, members)
}

fn nul_list(list: &[u8]) -> Vec<String> {
    list.split(|b| *b == 0)
        .filter(|m| !m.is_empty())
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect()
}

#[test]
fn a_plan_archives_only_new_and_changed_files_and_references_the_rest() {
    let (_, base) = write_index(&[
        entry("a", 10, 1, 1),
        entry("b", 20, 2, 1),
        entry("c", 30, 3, 2),
        entry("e", 50, 5, 2),
        entry("z", 70, 7, 1),
    ]);
    // a same, b changed size, c deleted, d new, e changed mtime, z deleted, y new.
    let tree = listing(&[
        (b"a", 10, "0.000000001"),
        (b"b", 21, "0.000000002"),
        (b"d", 40, "0.000000004"),
        (b"e", 50, "0.000000006"),
        (b"y", 60, "0.000000007"),
    ]);
    let (p, index, members) = plan(&base, &tree, &id(3));
    assert_eq!(nul_list(&members), ["b", "d", "e", "y"]);
    assert_eq!(
        p.new,
        Usage {
            files: 4,
            bytes: 171
        }
    );
    assert_eq!(
        p.referenced,
        Usage {
            files: 1,
            bytes: 10
        }
    );
    assert_eq!(
        p.superseded,
        Usage {
            files: 4,
            bytes: 170
        }
    );
    let entries: Vec<IndexEntry> = IndexReader::new(&index[..])
        .collect::<Result<_, _>>()
        .unwrap();
    let packs: Vec<(String, BackupId)> = entries
        .iter()
        .map(|e| (lossy(&e.path), e.pack.clone()))
        .collect();
    assert_eq!(
        packs,
        [
            ("a".into(), id(1)),
            ("b".into(), id(3)),
            ("d".into(), id(3)),
            ("e".into(), id(3)),
            ("y".into(), id(3)),
        ]
    );
    assert_eq!(
        p.index.packs[&id(3)],
        Usage {
            files: 4,
            bytes: 171
        }
    );
    assert!(!p.index.packs.contains_key(&id(2)));

    // Against no base, everything is new.
    let (p, _, members) = plan(b"", &tree, &id(3));
    assert_eq!(
        (p.new.files, p.referenced.files, nul_list(&members).len()),
        (5, 0, 5)
    );
    // An empty tree supersedes the whole base.
    let (p, index, members) = plan(&base, b"", &id(3));
    assert_eq!(
        (p.superseded.bytes, index.len(), members.len()),
        (180, 0, 0)
    );
}

#[test]
fn a_plan_stops_at_the_first_bad_line_of_either_list() {
    let (_, base) = write_index(&[entry("a", 1, 1, 1)]);
    let mut index = IndexWriter::new(Vec::new());
    let e = plan_incremental(
        IndexReader::new(&base[..]),
        TreeListing::new(&b"1 1.0 b\x001 1.0 a\0"[..]),
        &id(2),
        &mut index,
        &mut Vec::new(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            IndexError::Unsorted {
                what: "tree listing",
                ..
            }
        ),
        "{e}"
    );
    let e = plan_incremental(
        IndexReader::new(&b"{}\n"[..]),
        TreeListing::new(&b"1 1.0 b\0"[..]),
        &id(2),
        &mut IndexWriter::new(Vec::new()),
        &mut Vec::new(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            IndexError::Malformed {
                what: "file index",
                line: 1,
                ..
            }
        ),
        "{e}"
    );
}

/// A chain of increments over changing trees: at every step, the members each pack
/// archived, taken pack by pack as the index names them, are exactly that step's tree.
#[test]
fn every_state_of_a_chain_is_its_index_spread_over_its_packs() {
    let states: [&[(&[u8], u64, &str)]; 4] = [
        &[(b"a", 1, "1.0"), (b"b", 2, "1.0"), (b"c", 3, "1.0")],
        &[
            (b"a", 1, "1.0"),
            (b"b", 2, "1.0"),
            (b"c", 3, "1.0"),
            (b"d", 4, "2.0"),
        ],
        &[(b"a", 1, "1.0"), (b"c", 9, "3.0"), (b"d", 4, "2.0")],
        &[(b"a", 1, "1.0"), (b"c", 9, "3.0"), (b"e\xff", 5, "4.0")],
    ];
    let mut base = Vec::new();
    let mut archived: BTreeMap<BackupId, Vec<String>> = BTreeMap::new();
    for (n, state) in states.iter().enumerate() {
        let new = id(u32::try_from(n).unwrap() + 1);
        let (p, index, members) = plan(&base, &listing(state), &new);
        archived.insert(new.clone(), nul_list(&members));
        // Restore: per pack, the members the index names, all of which the pack holds.
        let mut restored: Vec<String> = Vec::new();
        for pack in p.index.packs.keys() {
            let mut list = Vec::new();
            members_of(IndexReader::new(&index[..]), pack, &mut list).unwrap();
            let list = nul_list(&list);
            assert!(
                list.iter().all(|m| archived[pack].contains(m)),
                "{pack}: {list:?}"
            );
            restored.extend(list);
        }
        restored.sort();
        let expected: Vec<String> = state
            .iter()
            .map(|(p, _, _)| String::from_utf8_lossy(p).into_owned())
            .collect();
        assert_eq!(restored, expected, "state {n}");
        base = index;
    }
    // Step 2 archived only d; step 3 only the changed c; step 4 only e.
    assert_eq!(archived[&id(2)], ["d"]);
    assert_eq!(archived[&id(3)], ["c"]);
    assert_eq!(archived[&id(4)], ["e\u{fffd}"]);
}

#[test]
fn the_base_decides_first_and_every_full_backup_says_why() {
    let policy = ChainPolicy::default();
    assert_eq!((policy.full_every, policy.max_superseded_percent), (14, 30));
    let usable = |packs| BaseState::Usable { id: id(1), packs };
    assert_eq!(choose_base(true, false, &usable(1), &policy), Ok(id(1)));
    assert_eq!(choose_base(true, false, &usable(13), &policy), Ok(id(1)));
    assert_eq!(
        choose_base(true, false, &usable(14), &policy),
        Err(FullReason::ChainLength {
            packs: 15,
            full_every: 14
        })
    );
    assert_eq!(
        choose_base(
            true,
            false,
            &usable(1),
            &ChainPolicy::default().full_every(1)
        ),
        Err(FullReason::ChainLength {
            packs: 2,
            full_every: 1
        })
    );
    assert_eq!(
        choose_base(false, false, &usable(1), &policy),
        Err(FullReason::NotRequested)
    );
    assert_eq!(
        choose_base(true, true, &usable(1), &policy),
        Err(FullReason::NewPassphrase)
    );
    assert_eq!(
        choose_base(true, false, &BaseState::None, &policy),
        Err(FullReason::FirstBackup)
    );
    assert_eq!(
        choose_base(true, false, &BaseState::Legacy(id(2)), &policy),
        Err(FullReason::LegacyBase { base: id(2) })
    );
    let unreadable = BaseState::Unreadable {
        id: id(2),
        reason: "its index is missing".into(),
    };
    let reason = choose_base(true, false, &unreadable, &policy).unwrap_err();
    assert_eq!(
        reason.to_string(),
        format!(
            "the newest backup {} cannot be a base: its index is missing",
            id(2)
        )
    );
    for reason in [
        FullReason::NotRequested,
        FullReason::FirstBackup,
        FullReason::NewPassphrase,
        FullReason::LegacyBase { base: id(1) },
        FullReason::ChainLength {
            packs: 15,
            full_every: 14,
        },
        FullReason::Superseded {
            percent: 31,
            max_percent: 30,
        },
    ] {
        let shown = reason.to_string();
        assert!(
            !shown.is_empty() && !shown.chars().next().unwrap().is_uppercase(),
            "{shown}"
        );
    }
}

#[test]
fn too_much_superseded_in_the_chain_forces_a_full_backup() {
    let link = |n, bytes| ChainLink {
        id: id(n),
        nonce: "00".into(),
        object_sha256: "ab".into(),
        bytes,
    };
    let chain = [link(1, 600), link(2, 400)];
    let mut p = IncrementalPlan::default();
    p.index.packs.insert(
        id(1),
        Usage {
            files: 1,
            bytes: 300,
        },
    );
    p.index.packs.insert(
        id(2),
        Usage {
            files: 1,
            bytes: 400,
        },
    );
    p.index.packs.insert(
        id(3),
        Usage {
            files: 9,
            bytes: 9_000,
        },
    );
    // 300 of 1000 held bytes are dead: exactly 30 %, not more.
    assert_eq!(p.superseded_percent(&chain), 30);
    let policy = ChainPolicy::default();
    assert_eq!(full_after_plan(&p, &chain, &policy), None);
    p.index.packs.insert(
        id(1),
        Usage {
            files: 1,
            bytes: 299,
        },
    );
    // 30.1 %: rounded down, not more than 30.
    assert_eq!(full_after_plan(&p, &chain, &policy), None);
    assert_eq!(p.superseded_percent(&chain), 30);
    p.index.packs.remove(&id(1));
    assert_eq!(p.superseded_percent(&chain), 60);
    assert_eq!(
        full_after_plan(&p, &chain, &policy),
        Some(FullReason::Superseded {
            percent: 60,
            max_percent: 30
        })
    );
    assert_eq!(
        full_after_plan(
            &p,
            &chain,
            &ChainPolicy::default().max_superseded_percent(60)
        ),
        None
    );
    // A chain of packs holding nothing supersedes nothing.
    assert_eq!(p.superseded_percent(&[link(1, 0)]), 0);
}

#[test]
fn a_chain_extends_with_its_base_and_the_kind_serialises_with_its_reason() {
    let full = PackChain {
        index_sha256: "11".into(),
        links: vec![],
        own_bytes: 100,
        database: Vec::new(),
    };
    assert_eq!((full.base(), full.packs()), (None, 1));
    let links = full.extend(&id(1), "n1", "s1");
    let next = PackChain {
        index_sha256: "22".into(),
        links,
        own_bytes: 5,
        database: Vec::new(),
    };
    assert_eq!(next.packs(), 2);
    assert_eq!(
        next.base(),
        Some(&ChainLink {
            id: id(1),
            nonce: "n1".into(),
            object_sha256: "s1".into(),
            bytes: 100
        })
    );
    let json = serde_json::to_string(&next).unwrap();
    assert_eq!(serde_json::from_str::<PackChain>(&json).unwrap(), next);
    assert!(
        serde_json::from_str::<PackChain>(&json.replace("\"own_bytes\"", "\"x\":1,\"own_bytes\""))
            .is_err()
    );

    let kind = BackupKind::Full {
        reason: FullReason::ChainLength {
            packs: 15,
            full_every: 14,
        },
    };
    assert_eq!(
        serde_json::to_value(&kind).unwrap(),
        serde_json::json!({"kind": "full", "reason": "chain_length", "packs": 15, "full_every": 14})
    );
    assert_eq!(
        serde_json::from_value::<BackupKind>(serde_json::to_value(&kind).unwrap()).unwrap(),
        kind
    );
    let kind = BackupKind::Incremental { base: id(1) };
    assert_eq!(
        serde_json::to_value(&kind).unwrap(),
        serde_json::json!({"kind": "incremental", "base": id(1).as_str()})
    );
    assert_eq!(
        serde_json::from_value::<BackupKind>(serde_json::to_value(&kind).unwrap()).unwrap(),
        kind
    );
}

#[test]
fn index_keys_name_the_base_and_chains_follow_them() {
    assert_eq!(index_suffix(None), ".index.ndjson");
    let on = index_suffix(Some(&id(1)));
    assert_eq!(on, format!(".on-{}.index.ndjson", id(1)));
    assert_eq!(
        parse_index_name(&format!("{}{on}", id(2))),
        Some((id(2), Some(id(1))))
    );
    assert_eq!(
        parse_index_name(&format!("{}.index.ndjson", id(1))),
        Some((id(1), None))
    );
    for name in [
        format!("{}", id(1)),
        format!("{}.manifest.json", id(1)),
        format!("{}.on-x.index.ndjson", id(1)),
        "x.index.ndjson".to_string(),
    ] {
        assert_eq!(parse_index_name(&name), None, "{name}");
    }
    let bases: BTreeMap<BackupId, Option<BackupId>> = [
        (id(1), None),
        (id(2), Some(id(1))),
        (id(3), Some(id(2))),
        (id(5), Some(id(4))),
        (id(6), Some(id(7))),
    ]
    .into_iter()
    .collect();
    assert_eq!(chain_of(&bases, &id(3)), [id(1), id(2)]);
    assert_eq!(chain_of(&bases, &id(1)), Vec::<BackupId>::new());
    // A base that is gone ends the chain; one newer than its backup is refused.
    assert_eq!(chain_of(&bases, &id(5)), [id(4)]);
    assert_eq!(chain_of(&bases, &id(6)), Vec::<BackupId>::new());
}

#[test]
fn a_tree_restored_by_tar_keeps_its_references() {
    // The index as create recorded the live files (nanoseconds); the tree as a
    // restore left it (tar keeps whole seconds).
    let (_, base) = write_index(&[
        entry("a", 10, 1_700_000_000_123_456_789, 1),
        entry("b", 20, 1_700_000_001_000_000_000, 1),
        entry("c", 30, 1_700_000_002_500_000_000, 1),
    ]);
    let tree = listing(&[
        (b"a", 10, "1700000000.000000000"),
        (b"b", 20, "1700000001.000000000"),
        // Another second, or a fraction of its own: changed.
        (b"c", 30, "1700000003.000000000"),
    ]);
    let (p, _, members) = plan(&base, &tree, &id(2));
    assert_eq!(nul_list(&members), ["c"]);
    assert_eq!(p.referenced.files, 2);
    let tree = listing(&[
        (b"a", 10, "1700000000.100000000"),
        (b"b", 20, "1700000001.000000000"),
        (b"c", 30, "1700000002.500000000"),
    ]);
    let (_, _, members) = plan(&base, &tree, &id(2));
    assert_eq!(nul_list(&members), ["a"]);
}

//! Incremental chains through the binary: `create --incremental` several times with
//! added, deleted and changed media, `list` and `ls` showing each backup's kind, base
//! and sizes (from one listing), `verify` and `restore` of the newest, `delete` of the
//! base refused naming its dependents, and `delete --with-dependents` removing them
//! newest first.

use crate::support::{cli_fixture, synapse_tree};

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use cli_fixture::{Fixture, expect, json, stderr, stdout};
use serde_json::Value;
use synapse_tree::{Rng, TreeSpec, change_db, dump_db, walk, write_random};

fn spec() -> TreeSpec {
    TreeSpec {
        media_files: 12,
        media_bytes: 600 << 10,
        db_rows: 20,
        seed: 11,
    }
}

/// `create --incremental`'s id (stdout is the id alone).
fn incremental(f: &Fixture) -> String {
    stdout(&f.ok(&["create", "--incremental"]))
        .trim()
        .to_string()
}

/// The local media files, sorted.
fn local_media(f: &Fixture) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walk(&f.tree.media.join("local_content"));
    files.sort();
    files
}

/// `list --json` by id.
fn listed(f: &Fixture) -> BTreeMap<String, Value> {
    let list = json(&f.ok(&["--json", "list"]));
    list.as_array()
        .expect("an array")
        .iter()
        .map(|b| (b["id"].as_str().unwrap().to_string(), b.clone()))
        .collect()
}

#[test]
fn a_chain_through_the_cli_lists_kinds_and_sizes_restores_and_deletes_with_dependents() {
    let f = Fixture::with_spec(&spec());
    let mut rng = Rng::new(5);

    // A backup made without --incremental (full, no index), then a chain on its own:
    // the first --incremental backup is full, the next ones build on it.
    let plain = f.create();
    let full = incremental(&f);
    let media = local_media(&f);
    let dir = media[0].parent().unwrap().to_path_buf();
    for n in 0..3 {
        write_random(&dir.join(format!("added{n}")), 10_000 + n, &mut rng);
    }
    let second = incremental(&f);
    fs::remove_file(&media[1]).unwrap();
    write_random(&media[2], 3_333, &mut rng);
    let third = incremental(&f);
    write_random(&dir.join("added-last"), 7_777, &mut rng);
    change_db(&f.tree.data.join("homeserver.db"));
    let newest = incremental(&f);
    let chain = [full.clone(), second.clone(), third.clone(), newest.clone()];

    // list: a KIND column, from the index objects' names.
    let table = stdout(&f.ok(&["list"]));
    let header = table.lines().next().unwrap();
    assert!(header.trim_end().ends_with("KIND"), "{table}");
    let row = |id: &str| {
        table
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} not listed:\n{table}"))
            .to_string()
    };
    assert!(row(&plain).ends_with("  full"), "{table}");
    assert!(row(&full).ends_with("  full"), "{table}");
    assert!(
        row(&second).ends_with(&format!("  incremental on {full}")),
        "{table}"
    );
    assert!(
        row(&third).ends_with(&format!("  incremental on {second}")),
        "{table}"
    );
    assert!(
        row(&newest).ends_with(&format!("  incremental on {third}")),
        "{table}"
    );
    // list --json: "kind", and "base" for an incremental backup.
    let list = listed(&f);
    assert_eq!(list.len(), 5, "{list:?}");
    assert_eq!(list[&plain]["kind"], "full");
    assert!(list[&plain].get("base").is_none(), "{:?}", list[&plain]);
    assert_eq!(list[&full]["kind"], "full");
    for (id, base) in [(&second, &full), (&third, &second), (&newest, &third)] {
        assert_eq!(list[id]["kind"], "incremental", "{:?}", list[id]);
        assert_eq!(list[id]["base"], base.as_str(), "{:?}", list[id]);
    }
    let size = |id: &str| list[id]["size"].as_u64().unwrap();
    assert!(
        size(&second) * 3 < size(&full),
        "an increment holds what changed: {} vs {}",
        size(&second),
        size(&full)
    );

    // ls: kind, chain, own and total size, then the entries.
    let total: u64 = chain.iter().map(|id| size(id)).sum();
    let text = stdout(&f.ok(&["ls", &newest]));
    let first_line = text.lines().next().unwrap();
    assert!(
        first_line.starts_with(&format!(
            "{newest}: incremental on {third} (4 packs: {full}, {second}, {third}, {newest})"
        )) && first_line.contains(" own, ")
            && first_line.ends_with(" in total"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("file ") && l.ends_with(" data/homeserver.db")),
        "{text}"
    );
    let ls = json(&f.ok(&["--json", "ls", &newest]));
    assert_eq!(ls["id"], newest.as_str());
    assert_eq!(ls["kind"], "incremental");
    assert_eq!(ls["base"], third.as_str());
    assert_eq!(ls["size"].as_u64(), Some(size(&newest)));
    assert_eq!(ls["total_size"].as_u64(), Some(total), "{ls}");
    assert_eq!(
        ls["packs"],
        serde_json::json!([full.as_str(), second.as_str(), third.as_str()])
    );
    assert!(ls.get("broken_at").is_none(), "{ls}");
    assert!(
        ls["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"] == "data/homeserver.db"),
        "{ls}"
    );
    let ls_full = json(&f.ok(&["--json", "ls", &full]));
    assert_eq!(ls_full["kind"], "full");
    assert_eq!(ls_full["total_size"].as_u64(), Some(size(&full)));
    assert_eq!(ls_full["packs"], serde_json::json!([]));
    let text = stdout(&f.ok(&["ls", &plain]));
    assert!(
        text.lines()
            .next()
            .unwrap()
            .starts_with(&format!("{plain}: full, ")),
        "{text}"
    );

    // verify and restore the newest: every pack of its chain is read.
    let out = f.ok(&["verify", &newest]);
    assert!(
        stdout(&out).starts_with(&format!("ok: {newest}")),
        "{}",
        stdout(&out)
    );
    let db = f.tree.data.join("homeserver.db");
    let before = (f.tree.backed_up_files(), dump_db(&db));
    fs::remove_dir_all(f.tree.media.join("local_content")).unwrap();
    fs::create_dir_all(f.tree.media.join("local_content")).unwrap();
    write_random(&f.tree.media.join("local_content/stray"), 100, &mut rng);
    change_db(&db);
    assert_ne!((f.tree.backed_up_files(), dump_db(&db)), before);
    let out = f.ok(&["restore", &newest, "--yes"]);
    assert!(
        stdout(&out).starts_with(&format!("restored {newest}")),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        (f.tree.backed_up_files(), dump_db(&db)),
        before,
        "keys, media and database restored as the newest backup saw them"
    );

    // delete of the chain's base: refused, naming the dependents and the flag.
    let out = expect(1, &mut f.cmd(), &["delete", &full]);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{newest}, {third}, {second}")) && err.contains("--with-dependents"),
        "{err}"
    );
    assert_eq!(listed(&f).len(), 5, "a refused delete deletes nothing");

    // --with-dependents: newest first, each printed, the base last.
    let out = f.ok(&["delete", &full, "--with-dependents"]);
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(
        lines[..3],
        [
            format!("deleted {newest} (it needed {full})"),
            format!("deleted {third} (it needed {full})"),
            format!("deleted {second} (it needed {full})"),
        ],
        "{lines:?}"
    );
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(
        lines[3].starts_with(&format!("deleted {full} from ")),
        "{lines:?}"
    );
    assert_eq!(listed(&f).keys().collect::<Vec<_>>(), [&plain]);
    let left: Vec<String> = walk(&f.server.root.join(cli_fixture::BUCKET))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("backup-"))
        .collect();
    assert!(
        left.iter().all(|name| name.starts_with(plain.as_str())) && left.len() == 2,
        "only the plain backup's data and manifest are left (no index): {left:?}"
    );

    // --json: the base and its dependents, newest first.
    let base = incremental(&f);
    let on_base = incremental(&f);
    let out = json(&f.ok(&["--json", "delete", &base, "--with-dependents"]));
    assert_eq!(
        out,
        serde_json::json!({"deleted": base.as_str(), "dependents": [on_base.as_str()]})
    );
    assert_eq!(listed(&f).keys().collect::<Vec<_>>(), [&plain]);
}

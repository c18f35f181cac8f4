//! The commands a restic user reaches for, against a real in-process S3
//! server: `ls`, `verify --all`, `--limit-upload` / `--limit-download`,
//! `restore --keep-one-time-keys` and restore's report of what it changed,
//! `verify` without a Synapse tree, `restore --target` (with `--include`), and the s3
//! file's YAML errors.

use crate::support::{cli_fixture, env, synapse_tree};

use std::fs;
use std::path::{Path, PathBuf};

use cli_fixture::{Fixture, expect, json, stderr, stdout};
use synapse_tree::TreeSpec;

#[test]
fn malformed_yaml_in_the_s3_file_is_placed_but_never_quoted() {
    let f = Fixture::new();
    for (name, text) in [
        (
            "quote.yaml",
            "bucket: b\nendpoint: http://127.0.0.1:1\nsecret-key: \"TOPSECRETVALUE\naccess-key: x\n",
        ),
        (
            "colon.yaml",
            "bucket: b\nendpoint: http://127.0.0.1:1\nsecret-key: TOPSECRETVALUE: x\n",
        ),
    ] {
        let s3 = f.dir.path().join(name);
        fs::write(&s3, text).unwrap();
        let mut cmd = f.bare();
        cmd.arg("--s3").arg(&s3);
        let out = expect(2, &mut cmd, &["list"]);
        let err = stderr(&out);
        assert!(
            err.contains("malformed YAML") && err.contains("line "),
            "{err}"
        );
        assert!(err.contains(name), "names the file: {err}");
        assert!(!err.contains("TOPSECRETVALUE"), "quotes the secret: {err}");
    }
}

#[test]
fn ls_prints_a_backups_contents_from_its_manifest() {
    let f = Fixture::new();
    let first = f.create();
    let text = stdout(&f.ok(&["ls", &first]));
    let files = f.tree.backed_up_files();
    assert!(!files.is_empty());
    for (path, bytes) in &files {
        let path = path.to_str().unwrap();
        let line = text
            .lines()
            .find(|l| l.ends_with(&format!(" {path}")))
            .unwrap_or_else(|| panic!("{path} not listed:\n{text}"));
        assert!(line.starts_with("file "), "{line}");
        if bytes.len() < 1000 {
            assert!(line.contains(&format!(" {} B ", bytes.len())), "{line}");
        }
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("dir ") && l.ends_with(" data/media_store/local_content")),
        "{text}"
    );
    assert!(text.contains(" data/homeserver.db\n"), "{text}");
    assert!(
        !text.contains(".synapse-backup"),
        "the inner manifest is not content:\n{text}"
    );
    assert!(!text.contains("remote_content"), "{text}");

    // The first line: the backup, its kind and size.
    assert!(
        text.lines()
            .next()
            .unwrap()
            .starts_with(&format!("{first}: full, ")),
        "{text}"
    );

    // `latest`, and --json: the backup with its kind and sizes, and its entries, an
    // array of {path, kind, size}.
    let second = f.create();
    let listed = json(&f.ok(&["--json", "ls", "latest"]));
    assert_eq!(listed["id"], second.as_str(), "{listed}");
    assert_eq!(listed["kind"], "full", "{listed}");
    assert_eq!(listed["size"], listed["total_size"], "{listed}");
    let entries = listed["entries"].as_array().expect("an array");
    assert_eq!(entries.len(), text.lines().count() - 1, "{listed}");
    let key = entries
        .iter()
        .find(|e| e["path"] == "data/example.test.signing.key")
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(key["kind"], "file", "{key}");
    let key_bytes = &files[Path::new("data/example.test.signing.key")];
    assert_eq!(key["size"], key_bytes.len() as u64, "{key}");

    // A manifest copied from another backup is refused (it names that backup).
    let manifest = |id: &str| f.object(&format!("{id}.manifest.json"));
    fs::copy(manifest(&first), manifest(&second)).unwrap();
    let out = expect(1, &mut f.cmd(), &["ls", &second]);
    assert!(stderr(&out).contains(&first), "{}", stderr(&out));
    // No backup, and a backup without a manifest: errors that say so.
    let out = expect(1, &mut f.cmd(), &["ls", "backup-20200101000000000000"]);
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    fs::remove_file(manifest(&first)).unwrap();
    let out = expect(1, &mut f.cmd(), &["ls", &first]);
    assert!(stderr(&out).contains("no manifest"), "{}", stderr(&out));

    // The help says what the listing is and what checks it.
    let help = stdout(&f.ok(&["ls", "--help"]));
    assert!(
        help.contains("manifest") && help.contains("verify"),
        "{help}"
    );
}

/// Flips one byte in the middle of a stored object, keeping its `LastModified` (the
/// file's time in the s3s-fs root): backups are listed by the server's time.
fn flip_a_byte(path: &Path) {
    let stored = fs::metadata(path).unwrap().modified().unwrap();
    let mut bytes = fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    fs::write(path, bytes).unwrap();
    let file = fs::File::options().write(true).open(path).unwrap();
    file.set_modified(stored).unwrap();
}

#[test]
fn verify_all_checks_every_backup_newest_first_one_line_each() {
    let f = Fixture::with_spec(&TreeSpec {
        media_files: 4,
        media_bytes: 64 << 10,
        db_rows: 20,
        seed: 7,
    });
    let first = f.create();
    let second = f.create();
    let third = f.create();
    let out = f.ok(&["verify", "--all"]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "one line each:\n{text}");
    for (line, id) in lines.iter().zip([&third, &second, &first]) {
        assert!(
            line.starts_with(&format!("{id} ok")),
            "newest first:\n{text}"
        );
    }

    // A corrupted backup fails, the others are still checked, and the exit code is 1.
    flip_a_byte(&f.object(&second));
    // A leftover of a failed create (a manifest without data) is not a backup: skipped.
    let leftover = "backup-20200101000000000000";
    let path = f.object(&format!("{leftover}.manifest.json"));
    fs::write(&path, b"{}").unwrap();
    // Stored when its id says (backups are listed by the server's time).
    let file = fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_577_836_800))
        .unwrap();
    let out = expect(1, &mut f.cmd(), &["verify", "--all"]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with(&format!("{third} ok")), "{text}");
    assert!(lines[1].starts_with(&format!("{second} FAILED")), "{text}");
    assert!(lines[1].contains("SHA-256"), "the reason: {text}");
    assert!(lines[2].starts_with(&format!("{first} ok")), "{text}");
    assert!(
        lines[3].starts_with(&format!("{leftover} skipped")),
        "{text}"
    );
    assert!(lines[3].contains("incomplete"), "{text}");
    // Verified several at once or one at a time: the same results, in the same order.
    for jobs in ["1", "4"] {
        let out = expect(1, &mut f.cmd(), &["verify", "--all", "--jobs", jobs]);
        let with_jobs = stdout(&out);
        let firsts = |t: &str| -> Vec<String> {
            t.lines()
                .map(|l| l.split(':').next().unwrap_or("").to_string())
                .collect()
        };
        assert_eq!(
            firsts(&with_jobs),
            firsts(&text),
            "--jobs {jobs}:\n{with_jobs}"
        );
    }

    // --json: an array, one object each, and still exit 1.
    let out = expect(1, &mut f.cmd(), &["--json", "verify", "--all"]);
    let results = json(&out);
    let results = results.as_array().expect("an array");
    assert_eq!(results.len(), 4, "{results:?}");
    assert_eq!(results[0]["id"], third.as_str());
    assert_eq!(results[0]["result"], "ok");
    assert_eq!(results[0]["status"], "complete");
    assert!(results[0]["members"].as_u64().unwrap() > 0);
    assert_eq!(results[1]["id"], second.as_str());
    assert_eq!(results[1]["result"], "failed");
    assert!(
        results[1]["reason"].as_str().unwrap().contains("SHA-256"),
        "{results:?}"
    );
    assert_eq!(results[3]["result"], "skipped");

    // An id and --all do not go together; neither is a usage error.
    expect(2, &mut f.cmd(), &["verify", "--all", &first]);
    expect(2, &mut f.cmd(), &["verify"]);
    expect(2, &mut f.cmd(), &["verify", "--all", "--jobs", "0"]);
}

/// An aws CLI that appends the per-run config file it is given to `record`, then runs
/// the real one.
fn recording_aws(dir: &Path, record: &Path) -> PathBuf {
    let cat = format!("cat \"$AWS_CONFIG_FILE\" >>'{}'", record.display());
    aws_wrapper(dir, "recording-aws", &cat)
}

/// A wrapped aws CLI in `dir` that records the download settings of each run's config
/// file (`max_concurrent_requests=N multipart_chunksize=NMB`, a line per run) in the
/// file it returns beside it.
fn settings_recorder(dir: &Path) -> (PathBuf, PathBuf) {
    let record = dir.join("download-settings");
    let aws = aws_wrapper(
        dir,
        "settings-aws",
        &format!(
            "grep -E '^  (multipart_chunksize|max_concurrent_requests) ' \"$AWS_CONFIG_FILE\" | tr -d ' ' | paste -sd ' ' >>'{}'",
            record.display()
        ),
    );
    (aws, record)
}

/// An executable `name` in `dir` that runs the bash lines `before` and then the real
/// aws CLI with its arguments (to record how the pipelines ran it).
fn aws_wrapper(dir: &Path, name: &str, before: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    let script = format!(
        "#!/usr/bin/env bash\n{before}\nexec '{}' \"$@\"\n",
        env::aws().display()
    );
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn limit_upload_and_download_cap_the_aws_cli_and_the_runs_still_work() {
    let f = Fixture::with_spec(&TreeSpec {
        media_files: 4,
        media_bytes: 256 << 10,
        db_rows: 20,
        seed: 3,
    });
    let record = f.dir.path().join("aws-configs");
    let aws = recording_aws(f.dir.path(), &record);
    // Runs `args` with the recording aws CLI; gives stdout and every config it saw.
    let run = |args: &[&str]| -> (String, String) {
        let _ = fs::remove_file(&record);
        let mut cmd = f.cmd();
        cmd.arg("--aws").arg(&aws);
        let out = expect(0, &mut cmd, args);
        let configs = fs::read_to_string(&record).expect("the aws CLI ran");
        (stdout(&out), configs)
    };
    let (out, configs) = run(&["create"]);
    let id = out.trim().to_string();
    assert!(
        !configs.contains("max_bandwidth"),
        "no cap unless asked:\n{configs}"
    );

    let (_, configs) = run(&["create", "--limit-upload", "50"]);
    assert!(configs.contains("max_bandwidth = 50MB/s\n"), "{configs}");
    let (_, configs) = run(&["verify", &id, "--limit-download", "500K"]);
    assert!(configs.contains("max_bandwidth = 500KB/s\n"), "{configs}");
    let (out, configs) = run(&["verify", &id, "--limit-download", "40"]);
    assert!(out.starts_with(&format!("ok: {id}")), "{out}");
    assert!(configs.contains("max_bandwidth = 40MB/s\n"), "{configs}");
    let (out, configs) = run(&["--limit-download", "30", "restore", &id, "--yes"]);
    assert!(out.starts_with(&format!("restored {id}")), "{out}");
    assert!(configs.contains("max_bandwidth = 30MB/s\n"), "{configs}");
    let (_, configs) = run(&["verify", "--all", "--limit-download", "20"]);
    assert_eq!(
        configs.matches("max_bandwidth = 20MB/s\n").count(),
        2,
        "every download of verify --all is capped:\n{configs}"
    );

    // A cap of 0 is a usage error, not "unlimited".
    let out = expect(2, &mut f.cmd(), &["create", "--limit-upload", "0"]);
    assert!(stderr(&out).contains("--limit-upload"), "{}", stderr(&out));
    let help = stdout(&f.ok(&["--help"]));
    assert!(
        help.contains("--limit-upload") && help.contains("--limit-download"),
        "{help}"
    );
    assert!(help.contains("MiB/s"), "{help}");
}

/// Runs python3 on the database at `db`; gives its stdout.
fn sqlite(db: &Path, script: &str) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\n{script}"
        ))
        .arg(db)
        .output()
        .expect("python3 (apt-get install -y python3)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn restore_reports_removed_one_time_keys_and_stripped_modes_and_keeps_keys_on_request() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    let db = f.tree.data.join("homeserver.db");
    sqlite(
        &db,
        "c.execute('CREATE TABLE e2e_one_time_keys_json (user_id TEXT, key_id TEXT, key_json TEXT)')\n\
         c.executemany('INSERT INTO e2e_one_time_keys_json VALUES (?, ?, ?)', [('@u:x', 'k%d' % i, '{}') for i in range(3)])\n\
         c.commit()",
    );
    let count = "print(c.execute('SELECT count(*) FROM e2e_one_time_keys_json').fetchone()[0])";
    // A world-writable media file: a restore strips the bit and says so.
    let (file, _) = f
        .tree
        .backed_up_files()
        .into_iter()
        .find(|(p, _)| p.starts_with("data/media_store/local_content"))
        .unwrap();
    let full = f.tree.root.join(&file);
    fs::set_permissions(&full, fs::Permissions::from_mode(0o666)).unwrap();
    let id = f.create();
    let file = file.to_str().unwrap();

    let out = f.ok(&["restore", &id, "--yes"]);
    let text = stdout(&out);
    assert!(text.contains("removed 3 one-time keys"), "{text}");
    assert!(text.contains(&format!("{file}: 0666 -> 0664")), "{text}");
    assert_eq!(sqlite(&db, count), "0");
    assert_eq!(
        fs::metadata(&full).unwrap().permissions().mode() & 0o7777,
        0o664
    );

    // Where the time went, phase by phase, in both forms.
    let line = text
        .lines()
        .find(|l| l.starts_with("  time: "))
        .unwrap_or_default();
    for phase in ["prepare", "fetch", "checks", "swap", "cleanup"] {
        assert!(
            line.contains(&format!("{phase} ")),
            "{phase} missing: {text}"
        );
    }

    let restored = json(&f.ok(&["--json", "restore", &id, "--yes"]));
    let phases = restored["phases"].as_object().expect("phases in the JSON");
    let total: f64 = phases.values().filter_map(serde_json::Value::as_f64).sum();
    assert_eq!(phases.len(), 5, "{restored}");
    assert!(
        total > 0.0 && total <= restored["duration_seconds"].as_f64().unwrap(),
        "{restored}"
    );
    assert_eq!(restored["one_time_keys_removed"], 3, "{restored}");
    assert_eq!(
        restored["stripped_modes"],
        serde_json::json!([format!("{file}: 0666 -> 0664")]),
        "{restored}"
    );

    let out = f.ok(&["restore", &id, "--yes", "--keep-one-time-keys"]);
    let text = stdout(&out);
    assert!(!text.contains("removed 3 one-time keys"), "{text}");
    assert!(text.contains("one-time keys kept"), "{text}");
    assert_eq!(sqlite(&db, count), "3", "kept on request");
    let help = stdout(&f.ok(&["restore", "--help"]));
    assert!(help.contains("--keep-one-time-keys"), "{help}");
}

/// An aws CLI that appends the per-run config file's path to `record`, then runs the
/// real one.
fn work_dir_recording_aws(dir: &Path, record: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let real = env::aws();
    let path = dir.join("where-aws");
    fs::write(
        &path,
        format!(
            "#!/usr/bin/env bash\nprintf '%s\\n' \"$AWS_CONFIG_FILE\" >>'{}'\nexec '{}' \"$@\"\n",
            record.display(),
            real.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Every entry under `dir`, relative, sorted.
fn entries_under(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walkdir(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).unwrap().to_path_buf())
        .collect();
    out.sort();
    out
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

#[test]
fn verify_works_where_no_synapse_tree_exists_and_in_a_temp_dir_on_request() {
    let f = Fixture::new();
    let id = f.create();
    let record = f.dir.path().join("work-dirs");
    let aws = work_dir_recording_aws(f.dir.path(), &record);

    // An admin machine: --root names an empty dir (no /data).
    let empty = f.dir.path().join("admin-machine");
    fs::create_dir(&empty).unwrap();
    let mut cmd = f.at(&empty);
    cmd.arg("--aws").arg(&aws);
    let out = expect(0, &mut cmd, &["verify", &id]);
    assert!(
        stdout(&out).starts_with(&format!("ok: {id}")),
        "{}",
        stdout(&out)
    );
    let mut cmd = f.at(&empty);
    cmd.arg("--aws").arg(&aws);
    expect(0, &mut cmd, &["verify", "--all"]);
    assert!(
        entries_under(&empty).is_empty(),
        "nothing made under --root"
    );
    let used = fs::read_to_string(&record).unwrap();
    for config in used.lines() {
        let work = Path::new(config).parent().unwrap();
        assert!(
            work.starts_with("/tmp") && !work.starts_with(f.dir.path()),
            "a private temp dir: {config}"
        );
        let name = work.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(".synapse-backup-verify."), "{name}");
        assert!(!work.exists(), "removed afterwards: {}", work.display());
    }
    assert_eq!(used.lines().count(), 2, "{used}");

    // With the tree, the work dir is beside the data; --temp-work-dir asks for a temp dir.
    let _ = fs::remove_file(&record);
    let mut cmd = f.cmd();
    cmd.arg("--aws").arg(&aws);
    expect(0, &mut cmd, &["verify", &id]);
    let mut cmd = f.cmd();
    cmd.arg("--aws").arg(&aws);
    expect(0, &mut cmd, &["verify", &id, "--temp-work-dir"]);
    let used = fs::read_to_string(&record).unwrap();
    let dirs: Vec<&Path> = used
        .lines()
        .map(|l| Path::new(l).parent().unwrap())
        .collect();
    assert_eq!(dirs.len(), 2, "{used}");
    assert!(dirs[0].starts_with(&f.tree.data), "{used}");
    assert!(
        dirs[1].starts_with("/tmp") && !dirs[1].starts_with(&f.tree.root),
        "{used}"
    );
}

/// A `systemctl` that records every call and says the unit is running.
fn fake_systemctl(dir: &Path, record: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("fake-bin");
    fs::create_dir_all(&bin).unwrap();
    fs::write(
        bin.join("systemctl"),
        format!(
            "#!/usr/bin/env bash\nprintf '%s\\n' \"$*\" >>'{}'\n\
             if [ \"$1\" = show ]; then printf 'LoadState=loaded\\nActiveState=active\\n'; fi\n",
            record.display()
        ),
    )
    .unwrap();
    fs::set_permissions(bin.join("systemctl"), fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn restore_target_extracts_without_touching_live_data_or_services() {
    let f = Fixture::new();
    let original = f.tree.backed_up_files();
    let original_db = synapse_tree::dump_db(&f.tree.data.join("homeserver.db"));
    let id = f.create();
    // The live data moves on after the backup.
    let key = f.tree.data.join("example.test.signing.key");
    fs::write(&key, "the live key, changed\n").unwrap();
    synapse_tree::change_db(&f.tree.data.join("homeserver.db"));
    let live_before = f.tree.backed_up_files();
    let live_db = synapse_tree::dump_db(&f.tree.data.join("homeserver.db"));
    let live_entries = entries_under(&f.tree.root);

    let calls = f.dir.path().join("systemctl-calls");
    let bin = fake_systemctl(f.dir.path(), &calls);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let with_service = || {
        let mut cmd = f.cmd();
        cmd.env("PATH", &path).args(["--service", "matrix-synapse"]);
        cmd
    };

    let target = f.dir.path().join("extracted");
    let out = expect(
        0,
        &mut with_service(),
        &["restore", &id, "--target", target.to_str().unwrap()],
    );
    assert!(
        stdout(&out).contains(target.to_str().unwrap()),
        "{}",
        stdout(&out)
    );
    assert!(
        !calls.exists(),
        "the service was touched: {:?}",
        fs::read_to_string(&calls)
    );
    assert_eq!(
        f.tree.backed_up_files(),
        live_before,
        "live files untouched"
    );
    assert_eq!(
        synapse_tree::dump_db(&f.tree.data.join("homeserver.db")),
        live_db
    );
    assert_eq!(
        entries_under(&f.tree.root),
        live_entries,
        "nothing made or left in the tree"
    );
    for (rel, bytes) in &original {
        let got = fs::read(target.join(rel)).unwrap_or_else(|e| panic!("{}: {e}", rel.display()));
        assert!(got == *bytes, "{} differs", rel.display());
    }
    assert_eq!(
        synapse_tree::dump_db(&target.join("data/homeserver.db")),
        original_db
    );
    assert!(
        entries_under(&target).iter().all(|p| p.starts_with("data")),
        "only the backup's files, no work dir: {:?}",
        entries_under(&target)
    );

    // --include: only those paths (relative to the root, or as the workload sees them).
    let some = f.dir.path().join("some");
    expect(
        0,
        &mut f.cmd(),
        &[
            "restore",
            &id,
            "--target",
            some.to_str().unwrap(),
            "--include",
            "data/example.test.signing.key",
            "--include",
            "/data/media_store/local_thumbnails",
        ],
    );
    let got = entries_under(&some);
    assert!(
        got.contains(&PathBuf::from("data/example.test.signing.key")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|p| p.starts_with("data/media_store/local_thumbnails/")),
        "{got:?}"
    );
    assert!(
        !got.iter()
            .any(|p| p.starts_with("data/media_store/local_content")),
        "{got:?}"
    );
    assert!(
        !got.contains(&PathBuf::from("data/homeserver.db")),
        "{got:?}"
    );
    assert_eq!(
        fs::read(some.join("data/example.test.signing.key")).unwrap(),
        original[Path::new("data/example.test.signing.key")]
    );

    // An include that names nothing in the backup, and a target that is not empty,
    // are refused; --include needs --target.
    let none = f.dir.path().join("none");
    let ran = f.dir.path().join("aws-ran");
    let mut cmd = f.cmd();
    cmd.arg("--aws").arg(recording_aws(f.dir.path(), &ran));
    let out = expect(
        1,
        &mut cmd,
        &[
            "restore",
            &id,
            "--target",
            none.to_str().unwrap(),
            "--include",
            "data/nope",
        ],
    );
    assert!(stderr(&out).contains("data/nope"), "{}", stderr(&out));
    assert!(
        !ran.exists(),
        "refused from the manifest, before any download"
    );
    assert!(!none.exists(), "and before the target was made");
    let out = expect(
        2,
        &mut f.cmd(),
        &["restore", &id, "--target", target.to_str().unwrap()],
    );
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    expect(
        2,
        &mut f.cmd(),
        &[
            "restore",
            &id,
            "--yes",
            "--include",
            "data/example.test.signing.key",
        ],
    );

    // Where no Synapse tree exists (an admin machine), and with --json.
    let empty = f.dir.path().join("admin-machine");
    fs::create_dir(&empty).unwrap();
    let elsewhere = f.dir.path().join("elsewhere");
    let done = json(&expect(
        0,
        &mut f.at(&empty),
        &[
            "--json",
            "restore",
            "latest",
            "--target",
            elsewhere.to_str().unwrap(),
        ],
    ));
    assert_eq!(done["id"], id.as_str(), "{done}");
    assert_eq!(done["target"], elsewhere.to_str().unwrap(), "{done}");
    assert!(entries_under(&empty).is_empty());
    assert_eq!(
        fs::read(elsewhere.join("data/example.test.signing.key")).unwrap(),
        original[Path::new("data/example.test.signing.key")]
    );

    // The control: a real restore with the same fake service does stop and start it.
    expect(0, &mut with_service(), &["restore", &id, "--yes"]);
    let seen = fs::read_to_string(&calls).expect("a restore calls systemctl");
    assert!(seen.contains("stop") && seen.contains("start"), "{seen}");
}

/// The long flags of one `--help` text: the first tokens of each option line.
fn help_flags(help: &str) -> std::collections::BTreeSet<String> {
    let mut flags = std::collections::BTreeSet::new();
    for line in help.lines() {
        let line = line.trim_start();
        if !line.starts_with('-') {
            continue;
        }
        for token in line.split_whitespace() {
            if !(token.starts_with('-') || token.starts_with('<')) {
                break;
            }
            // `-v, --verbose...` (a counted flag), `--s3 <FILE>`.
            let token = token.trim_end_matches(',').trim_end_matches("...");
            if let Some(flag) = token.strip_prefix("--") {
                flags.insert(format!("--{flag}"));
            }
        }
    }
    flags
}

#[test]
fn the_readme_documents_every_flag_the_help_shows() {
    let f = Fixture::new();
    let mut known = help_flags(&stdout(&expect(0, &mut f.bare(), &["--help"])));
    for command in [
        "check", "create", "list", "ls", "verify", "restore", "delete", "prune", "unlock",
    ] {
        known.extend(help_flags(&stdout(&expect(
            0,
            &mut f.bare(),
            &[command, "--help"],
        ))));
    }
    assert!(known.contains("--older-than-days"), "{known:?}");
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split_once("\n### Flags\n")
        .expect("the README has a `### Flags` section")
        .1;
    let section = section.split("\n#").next().unwrap();
    // Each bullet (with its continuation lines) names its flags before the first ": ".
    let mut bullets: Vec<String> = Vec::new();
    for line in section.lines() {
        if line.starts_with("- ") {
            bullets.push(line.to_string());
        } else if line.starts_with("  ")
            && let Some(last) = bullets.last_mut()
        {
            last.push(' ');
            last.push_str(line.trim());
        }
    }
    let mut documented = std::collections::BTreeSet::new();
    for bullet in bullets.iter().filter(|b| b.starts_with("- `")) {
        let head = bullet.split(": ").next().unwrap();
        for part in head.split('`').skip(1).step_by(2) {
            for token in part.split([' ', ',']) {
                if token.starts_with("--") {
                    documented.insert(token.to_string());
                }
            }
        }
    }
    let missing: Vec<_> = known.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&known).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "README's Flags section and --help disagree: not in the README {missing:?}; not a flag {unknown:?}"
    );
}

/// `--priority` reaches the pipelines of create and verify (seen from the aws CLI they
/// run), and a bad value is a usage error naming the flag.
#[test]
fn priority_sets_the_pipelines_nice_and_io_class() {
    env::require_tool("ionice", "sudo apt-get install -y util-linux");
    let f = Fixture::with_spec(&TreeSpec {
        media_files: 2,
        media_bytes: 4 << 10,
        db_rows: 5,
        seed: 4,
    });
    let record = f.dir.path().join("priorities");
    let aws = aws_wrapper(
        f.dir.path(),
        "priority-aws",
        &format!(
            "read -r -a stat </proc/$$/stat\necho \"${{stat[18]}} $(ionice -p $$)\" >>'{}'",
            record.display()
        ),
    );
    let run = |args: &[&str]| -> (String, Vec<String>) {
        let _ = fs::remove_file(&record);
        let mut cmd = f.cmd();
        cmd.arg("--aws").arg(&aws);
        let out = expect(0, &mut cmd, args);
        let seen = fs::read_to_string(&record).expect("the aws CLI ran");
        (stdout(&out), seen.lines().map(str::to_string).collect())
    };
    let (out, seen) = run(&["--priority", "19,idle", "create"]);
    let id = out.trim().to_string();
    assert!(!seen.is_empty());
    for line in &seen {
        assert!(
            line.starts_with("19 idle"),
            "create's aws at 19,idle: {line}"
        );
    }
    // `nice -n` adds to the caller's own value (this test's, when run under nice).
    let own: i32 = fs::read_to_string("/proc/self/stat")
        .unwrap()
        .rsplit(") ")
        .next()
        .unwrap()
        .split(' ')
        .nth(16)
        .unwrap()
        .parse()
        .unwrap();
    let gentle = format!("{} best-effort: prio 7", (own + 10).min(19));
    let (_, seen) = run(&["verify", &id, "--priority", "gentle"]);
    assert!(!seen.is_empty());
    for line in &seen {
        assert!(line.starts_with(&gentle), "verify's aws at gentle: {line}");
    }

    let out = expect(2, &mut f.cmd(), &["create", "--priority", "fast"]);
    let err = stderr(&out);
    assert!(err.contains("--priority") && err.contains("fast"), "{err}");
}

/// `--aws-ranges` (or its variable) sets the workload aws CLI's download ranges
/// (seen in the config it runs with), a backup larger than one range verifies and
/// restores with several in flight, the default is one streamed GET per GiB, and a
/// range under the aws CLI's 5 MiB is a usage error naming the flag.
#[test]
fn aws_ranges_set_the_aws_clis_download() {
    let f = Fixture::with_spec(&TreeSpec {
        media_files: 6,
        media_bytes: 24 << 20,
        db_rows: 5,
        seed: 6,
    });
    let id = f.create();
    let (aws, record) = settings_recorder(f.dir.path());
    let run = |args: &[&str], var: Option<&str>| -> Vec<String> {
        let _ = fs::remove_file(&record);
        let mut cmd = f.cmd();
        cmd.arg("--aws").arg(&aws);
        if let Some(var) = var {
            cmd.env("SYNAPSE_BACKUP_AWS_RANGES", var);
        }
        expect(0, &mut cmd, args);
        let seen = fs::read_to_string(&record).expect("the aws CLI ran");
        seen.lines().map(str::to_string).collect()
    };
    for line in run(&["verify", &id, "--aws-ranges", "4x5"], None) {
        assert_eq!(line, "max_concurrent_requests=4 multipart_chunksize=5MB");
    }
    for line in run(&["restore", &id, "--yes"], Some("3x8")) {
        assert_eq!(line, "max_concurrent_requests=3 multipart_chunksize=8MB");
    }
    // By default the ranges follow a probe of the object: s3s-fs answers a range in
    // about a HEAD's time, so 2 ranges of 8 MiB are in flight. A stalled machine could
    // make one probe late (one streamed GET then); three in a row would not.
    let ranged = "max_concurrent_requests=2 multipart_chunksize=8MB";
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen = run(&["verify", &id], None);
        if seen.iter().all(|line| line == ranged) {
            break;
        }
    }
    assert!(
        !seen.is_empty() && seen.iter().all(|line| line == ranged),
        "{seen:?}"
    );
    let out = expect(2, &mut f.cmd(), &["verify", &id, "--aws-ranges", "4x4"]);
    let err = stderr(&out);
    assert!(
        err.contains("--aws-ranges") && err.contains("at least 5 MiB"),
        "{err}"
    );
}

/// On moto, which reads the whole object to serve any range, the default download of
/// a backup is one streamed GET: the probe's range comes back late.
#[test]
fn the_default_download_is_one_get_where_a_range_costs_the_whole_object() {
    let moto = crate::support::s3_server::MotoServer::start();
    moto.create_bucket(cli_fixture::BUCKET);
    let f = Fixture::with_spec(&TreeSpec {
        media_files: 12,
        media_bytes: 96 << 20,
        db_rows: 5,
        seed: 7,
    });
    let s3 = f.s3_with("moto.yaml", |text| {
        text.replace(&f.server.endpoint, &moto.endpoint)
            .replace(&f.server.access_key, &moto.access_key)
            .replace(&f.server.secret_key, &moto.secret_key)
    });
    let out = expect(0, &mut f.with_s3(&s3), &["create"]);
    let id = stdout(&out).trim().to_string();
    let (aws, record) = settings_recorder(f.dir.path());
    let mut cmd = f.with_s3(&s3);
    cmd.arg("--aws").arg(&aws).arg("-vv");
    let out = expect(0, &mut cmd, &["verify", &id]);
    let seen = fs::read_to_string(&record).expect("the aws CLI ran");
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(
        lines,
        ["max_concurrent_requests=1 multipart_chunksize=1024MB"],
        "{}",
        stderr(&out)
    );
}

/// `--transfer library` verifies, restores and creates with no aws CLI in the workload
/// (the library downloads and uploads), and a bad value is a usage error naming the
/// flag.
#[test]
fn transfer_library_needs_no_aws_cli_in_the_workload() {
    let f = Fixture::with_spec(&TreeSpec {
        media_files: 2,
        media_bytes: 4 << 10,
        db_rows: 5,
        seed: 5,
    });
    let id = f.create();
    let no_aws = ["--aws", "/nonexistent/aws"];
    let mut cmd = f.cmd();
    cmd.args(no_aws);
    expect(0, &mut cmd, &["verify", &id, "--transfer", "library"]);
    let mut cmd = f.cmd();
    cmd.args(no_aws).env("SYNAPSE_BACKUP_TRANSFER", "library");
    expect(0, &mut cmd, &["restore", &id, "--yes"]);
    let mut cmd = f.cmd();
    cmd.args(no_aws);
    let out = cmd.args(["verify", &id]).output().unwrap();
    assert!(
        !out.status.success(),
        "the workload's transfer needs its aws CLI"
    );

    // A create with the library's upload needs no aws CLI either; the workload's
    // transfer verifies what it made.
    let mut cmd = f.cmd();
    cmd.args(no_aws);
    let out = expect(0, &mut cmd, &["create", "--transfer", "library"]);
    let second = stdout(&out).trim().to_string();
    assert_ne!(second, id);
    expect(0, &mut f.cmd(), &["verify", &second]);

    let out = expect(2, &mut f.cmd(), &["verify", &id, "--transfer", "aws"]);
    let err = stderr(&out);
    assert!(err.contains("--transfer") && err.contains("aws"), "{err}");

    // The library's ranges, from the flag or the environment, reach its download; a
    // bad value is refused naming the flag.
    let mut cmd = f.cmd();
    cmd.args(no_aws).args(["-vv", "--library-ranges", "3x16"]);
    let out = expect(0, &mut cmd, &["verify", &id, "--transfer", "library"]);
    let err = stderr(&out);
    assert!(
        err.contains("in_flight=3") && err.contains(&format!("range={}", 16 << 20)),
        "{err}"
    );
    let mut cmd = f.cmd();
    cmd.args(no_aws)
        .args(["-vv", "--transfer", "library"])
        .env("SYNAPSE_BACKUP_LIBRARY_RANGES", "5x2");
    let out = expect(0, &mut cmd, &["restore", &id, "--yes"]);
    let err = stderr(&out);
    assert!(
        err.contains("in_flight=5") && err.contains(&format!("range={}", 2 << 20)),
        "{err}"
    );
    // Without the flag, the ranges are chosen per object.
    let mut cmd = f.cmd();
    cmd.args(no_aws).args(["-vv", "--transfer", "library"]);
    let out = expect(0, &mut cmd, &["verify", &id]);
    let err = stderr(&out);
    let default = format!("in_flight={}", synapse_backup::LIBRARY_RANGES_IN_FLIGHT);
    assert!(
        err.contains(&default) && err.contains("ranges chosen by the first's timing"),
        "{err}"
    );
    let out = expect(
        2,
        &mut f.cmd(),
        &["verify", &id, "--library-ranges", "0x16"],
    );
    let err = stderr(&out);
    assert!(
        err.contains("--library-ranges") && err.contains("1 to 64"),
        "{err}"
    );
}

/// `create --compression zstd-3`: a backup whose manifest says so, which `verify` and
/// `restore --target` read through zstd; a name outside the three kinds is a usage
/// error naming it, and `--zstd` pointing nowhere fails the read, naming the path.
#[test]
fn create_compression_zstd_is_read_back_and_a_bad_name_is_refused() {
    env::require_tool("zstd", "install it with: sudo apt-get install -y zstd");
    let f = Fixture::new();
    let id = stdout(&f.ok(&["create", "--compression", "zstd-3"]))
        .trim()
        .to_string();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(f.object(&format!("{id}.manifest.json"))).unwrap())
            .unwrap();
    assert_eq!(manifest["compression"], "zstd-3");
    assert_eq!(json(&f.ok(&["--json", "ls", &id]))["compression"], "zstd-3");
    assert!(
        stdout(&f.ok(&["ls", &id])).contains("compression: zstd-3 (reading it needs zstd)"),
        "ls names the compression"
    );
    f.ok(&["verify", &id]);
    let target = f.dir.path().join("zstd-target");
    f.ok(&["restore", &id, "--target", target.to_str().unwrap()]);
    assert_eq!(
        fs::read(target.join("data/example.test.signing.key")).unwrap(),
        fs::read(f.tree.data.join("example.test.signing.key")).unwrap()
    );
    for bad in ["zstd-20", "zstd-0", "zstd", "lz4-1", "ZSTD-3"] {
        let out = expect(2, &mut f.cmd(), &["create", "--compression", bad]);
        let err = stderr(&out);
        assert!(
            err.contains(&format!("{bad:?}")) && err.contains("zstd-1 to zstd-19"),
            "{bad}: {err}"
        );
    }
    let out = expect(
        1,
        &mut f.cmd(),
        &["--zstd", "/nonexistent/zstd", "verify", &id],
    );
    let err = stderr(&out);
    assert!(
        err.contains("/nonexistent/zstd") && err.contains("compress"),
        "{err}"
    );
}

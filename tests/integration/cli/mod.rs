//! The `synapse-backup` binary, run for real (assert_cmd) against an in-process S3
//! server and a synthetic Synapse tree: every command, the `--json` shape, exit codes,
//! bad configuration, and no secret in any output.

mod chains;
mod commands;
mod operator;
mod pebble;

use crate::support::{env, faulty, s3_server, synapse_tree};

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::cargo::cargo_bin_cmd;
use s3_server::{ServerOptions, TestS3Server};
use serde_json::Value;
use synapse_tree::{SynapseTree, TreeSpec, change_db, dump_db, walk};

const BUCKET: &str = "synapse-backups";
const PREFIX: &str = "synapse/backups";
/// Written as `echo` writes it: one trailing newline, which the CLI drops.
const PASSPHRASE: &str = "correct horse battery staple";

/// The variables the CLI reads, removed so the caller's environment cannot leak in.
const CLI_VARS: [&str; 7] = [
    "AWS_SESSION_TOKEN",
    "SYNAPSE_BACKUP_ROOT",
    "SYNAPSE_BACKUP_S3",
    "SYNAPSE_BACKUP_PASSPHRASE",
    "SYNAPSE_BACKUP_ACCESS_KEY",
    "SYNAPSE_BACKUP_SECRET_KEY",
    "RUST_LOG",
];

/// A tree, a server with a bucket, an S3 parameters file, a passphrase file, and a
/// transcript of everything the binary printed.
struct Fixture {
    dir: tempfile::TempDir,
    tree: SynapseTree,
    server: TestS3Server,
    s3_file: PathBuf,
    passphrase_file: PathBuf,
    transcript: RefCell<String>,
}

impl Fixture {
    fn new() -> Fixture {
        env::aws();
        let dir = tempfile::tempdir().unwrap();
        let tree = SynapseTree::create(&dir.path().join("root"), &TreeSpec::default());
        let server = TestS3Server::start_blocking(ServerOptions::default());
        server.create_bucket(BUCKET);
        let s3_file = dir.path().join("s3.yaml");
        fs::write(
            &s3_file,
            format!(
                "# s3-integrator relation data\naccess-key: {}\nsecret-key: {}\nbucket: {BUCKET}\n\
                 endpoint: {}\nregion: us-east-1\ns3-uri-style: path\npath: /{PREFIX}/\n",
                server.access_key, server.secret_key, server.endpoint
            ),
        )
        .unwrap();
        let passphrase_file = dir.path().join("passphrase");
        fs::write(&passphrase_file, format!("{PASSPHRASE}\n")).unwrap();
        // Private, as the CLI asks of a passphrase file (else it warns).
        fs::set_permissions(
            &passphrase_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        Fixture {
            dir,
            tree,
            server,
            s3_file,
            passphrase_file,
            transcript: RefCell::default(),
        }
    }

    /// The binary with a clean environment and no flags.
    fn bare(&self) -> assert_cmd::Command {
        let mut cmd = cargo_bin_cmd!("synapse-backup");
        for var in CLI_VARS {
            cmd.env_remove(var);
        }
        // A file without keys falls back to the AWS chain: never ask 169.254.169.254.
        cmd.env("AWS_EC2_METADATA_DISABLED", "true");
        cmd
    }

    /// The binary with `--root`, `--s3` and `--passphrase-file` set.
    fn cmd(&self) -> assert_cmd::Command {
        let mut cmd = self.bare();
        cmd.arg("--root")
            .arg(&self.tree.root)
            .arg("--s3")
            .arg(&self.s3_file)
            .arg("--passphrase-file")
            .arg(&self.passphrase_file);
        cmd
    }

    /// [`cmd`](Self::cmd) as a `std::process::Command`, to spawn and signal.
    fn std_cmd(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_synapse-backup"));
        for var in CLI_VARS {
            cmd.env_remove(var);
        }
        // A file without keys falls back to the AWS chain: never ask 169.254.169.254.
        cmd.env("AWS_EC2_METADATA_DISABLED", "true");
        cmd.arg("--root")
            .arg(&self.tree.root)
            .arg("--s3")
            .arg(&self.s3_file)
            .arg("--passphrase-file")
            .arg(&self.passphrase_file);
        cmd
    }

    /// Runs and records the output.
    fn run(&self, cmd: &mut assert_cmd::Command) -> Output {
        let out = cmd.output().expect("run synapse-backup");
        let mut t = self.transcript.borrow_mut();
        t.push_str(&String::from_utf8_lossy(&out.stdout));
        t.push_str(&String::from_utf8_lossy(&out.stderr));
        out
    }

    /// Runs `cmd` with `args` and asserts the exit code.
    fn expect(&self, code: i32, cmd: &mut assert_cmd::Command, args: &[&str]) -> Output {
        let out = self.run(cmd.args(args));
        assert_eq!(
            out.status.code(),
            Some(code),
            "synapse-backup {args:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `synapse-backup <args>` with the standard flags, expecting `code`.
    fn ok(&self, args: &[&str]) -> Output {
        self.expect(0, &mut self.cmd(), args)
    }

    fn list_json(&self) -> Vec<Value> {
        let out = self.ok(&["list", "--json"]);
        let value: Value = serde_json::from_slice(&out.stdout).expect("list --json is JSON");
        value.as_array().expect("an array").clone()
    }

    fn bucket_dir(&self) -> PathBuf {
        self.server.root.join(BUCKET)
    }

    /// Every object file in the bucket.
    fn objects(&self) -> Vec<PathBuf> {
        walk(&self.bucket_dir())
    }

    /// No secret anywhere in what the binary printed.
    fn assert_no_secrets(&self, extra: &[&str]) {
        let t = self.transcript.borrow();
        for secret in [
            self.server.access_key.as_str(),
            self.server.secret_key.as_str(),
            PASSPHRASE,
        ]
        .iter()
        .chain(extra)
        {
            assert!(!t.contains(secret), "a secret was printed:\n{t}");
        }
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walk(dir)
        .into_iter()
        .map(|p| (p.clone(), fs::read(&p).unwrap()))
        .collect()
}

fn is_backup_id(text: &str) -> bool {
    text.parse::<synapse_backup::BackupId>().is_ok()
}

#[test]
fn every_command_through_a_full_life_cycle() {
    let f = Fixture::new();
    let db = f.tree.data.join("homeserver.db");
    let before_files = f.tree.backed_up_files();
    let before_db = dump_db(&db);

    let out = f.ok(&["check"]);
    assert!(stdout(&out).starts_with("ok: "), "{}", stdout(&out));
    assert!(stdout(&out).contains(BUCKET));

    // create: the id alone on stdout, the summary on stderr.
    let out = f.ok(&["create"]);
    let text = stdout(&out);
    let id = text.strip_suffix('\n').expect("one line").to_string();
    assert!(
        is_backup_id(&id) && !id.contains('\n'),
        "stdout must be the id alone: {text:?}"
    );
    assert!(
        stderr(&out).contains(&format!("created {id}")),
        "{}",
        stderr(&out)
    );

    // list: a table with a header and the backup.
    let out = f.ok(&["list"]);
    let table = stdout(&out);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    for column in ["ID", "STATUS", "LAST MODIFIED", "SIZE"] {
        assert!(header.contains(column), "{table}");
    }
    let row = lines.next().unwrap();
    assert!(row.starts_with(&id) && row.contains("complete"), "{table}");
    assert!(
        row.contains("MB") || row.contains("kB"),
        "human size: {table}"
    );

    // list --json: the stable shape.
    let list = f.list_json();
    assert_eq!(list.len(), 1, "{list:?}");
    let entry = list[0].as_object().unwrap();
    let keys: BTreeSet<&str> = entry.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["id", "status", "last_modified", "size", "key", "kind"])
    );
    assert_eq!(entry["kind"], "full", "a backup made without --incremental");
    assert_eq!(entry["id"], id.as_str());
    assert_eq!(entry["status"], "complete");
    assert_eq!(entry["key"], format!("{PREFIX}/{id}").as_str());
    let object = f.bucket_dir().join(PREFIX).join(&id);
    assert_eq!(
        entry["size"].as_u64(),
        Some(fs::metadata(&object).unwrap().len())
    );
    let modified = entry["last_modified"].as_str().unwrap();
    chrono::DateTime::parse_from_rfc3339(modified)
        .unwrap_or_else(|e| panic!("last_modified {modified:?} is not RFC 3339: {e}"));

    let out = f.ok(&["verify", &id]);
    assert!(
        stdout(&out).starts_with(&format!("ok: {id}")),
        "{}",
        stdout(&out)
    );

    // Damage the live tree.
    fs::remove_dir_all(f.tree.media.join("local_thumbnails")).unwrap();
    let first = walk(&f.tree.media.join("local_content"))[0].clone();
    fs::write(&first, b"overwritten").unwrap();
    change_db(&db);
    assert_ne!(f.tree.backed_up_files(), before_files);
    let damaged = snapshot(&f.tree.root);

    // restore without --yes and without a terminal: refused, nothing touched.
    let out = f.expect(2, &mut f.cmd(), &["restore", &id]);
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert_eq!(
        snapshot(&f.tree.root),
        damaged,
        "a refused restore changed files"
    );

    let out = f.ok(&["restore", &id, "--yes"]);
    assert!(
        stdout(&out).starts_with(&format!("restored {id}")),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        f.tree.backed_up_files(),
        before_files,
        "keys and media must be restored byte for byte"
    );
    assert_eq!(dump_db(&db), before_db, "database rows must be restored");

    // prune: a second backup, then keep only the newest.
    let second = stdout(&f.ok(&["create"])).trim().to_string();
    assert!(is_backup_id(&second) && second != id);
    let out = f.ok(&["prune", "--keep-last", "1", "--dry-run"]);
    assert!(
        stdout(&out).contains(&format!("would delete {id}")),
        "{}",
        stdout(&out)
    );
    assert_eq!(f.list_json().len(), 2, "a dry run deletes nothing");
    let out = f.ok(&["prune", "--keep-last", "1"]);
    assert!(
        stdout(&out).contains(&format!("deleted {id}")),
        "{}",
        stdout(&out)
    );
    let list = f.list_json();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], second.as_str());
    // Nothing is old enough for an age-based prune.
    let out = f.ok(&["prune", "--older-than-days", "30"]);
    assert!(
        stdout(&out).contains("deleted 0 backup(s)"),
        "{}",
        stdout(&out)
    );

    // delete, then delete again: not found.
    let out = f.ok(&["delete", &second]);
    assert!(stdout(&out).contains(&format!("deleted {second}")));
    let out = f.expect(1, &mut f.cmd(), &["delete", &second]);
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    assert!(f.list_json().is_empty());
    let out = f.ok(&["list"]);
    assert!(stdout(&out).starts_with("no backups"), "{}", stdout(&out));
    assert!(f.objects().is_empty(), "{:?}", f.objects());

    f.assert_no_secrets(&[]);
}

#[test]
fn secrets_can_come_from_the_environment_and_s3_parameters_from_json() {
    let f = Fixture::new();
    // The file's keys are wrong; the environment's override them.
    let json = f.dir.path().join("s3.json");
    fs::write(
        &json,
        serde_json::json!({
            "access-key": "file-access-key",
            "secret-key": "file-secret-key-not-the-real-one",
            "bucket": BUCKET,
            "endpoint": f.server.endpoint,
            "s3-uri-style": "path",
            "path": PREFIX,
            "delete-older-than-days": 30,
        })
        .to_string(),
    )
    .unwrap();
    let with_env = || {
        let mut cmd = f.bare();
        cmd.arg("--root")
            .arg(&f.tree.root)
            .arg("--s3")
            .arg(&json)
            .env("SYNAPSE_BACKUP_ACCESS_KEY", &f.server.access_key)
            .env("SYNAPSE_BACKUP_SECRET_KEY", &f.server.secret_key)
            .env("SYNAPSE_BACKUP_PASSPHRASE", PASSPHRASE);
        cmd
    };
    f.expect(0, &mut with_env(), &["check"]);
    let out = f.expect(0, &mut with_env(), &["create"]);
    let id = stdout(&out).trim().to_string();
    assert!(is_backup_id(&id), "{id:?}");
    f.expect(0, &mut with_env(), &["verify", &id]);
    // The passphrase from a file works on the same backup (the file's newline is dropped).
    let mut cmd = with_env();
    cmd.env_remove("SYNAPSE_BACKUP_PASSPHRASE")
        .arg("--passphrase-file")
        .arg(&f.passphrase_file);
    f.expect(0, &mut cmd, &["verify", &id]);
    // delete-older-than-days from the file is the default retention: nothing is old.
    let out = f.expect(0, &mut with_env(), &["prune", "--dry-run"]);
    assert!(
        stdout(&out).contains("would delete 0 backup(s)"),
        "{}",
        stdout(&out)
    );
    assert!(
        !stderr(&out).contains("no retention set"),
        "{}",
        stderr(&out)
    );

    // Without the environment, the file's wrong keys are used: the bucket is unusable.
    let mut cmd = f.bare();
    cmd.arg("--s3").arg(&json);
    let out = f.expect(1, &mut cmd, &["check"]);
    assert!(stderr(&out).contains(BUCKET), "{}", stderr(&out));
    // And a wrong passphrase is not a usage error but a failed verify.
    let mut cmd = with_env();
    cmd.env("SYNAPSE_BACKUP_PASSPHRASE", "not the passphrase");
    let out = f.expect(1, &mut cmd, &["verify", &id]);
    assert!(
        stderr(&out).contains("wrong passphrase"),
        "{}",
        stderr(&out)
    );

    f.assert_no_secrets(&["file-secret-key-not-the-real-one", "not the passphrase"]);
}

#[test]
fn a_v1_s3_file_with_sse_c_and_a_session_token_from_the_environment() {
    use base64::Engine as _;
    let f = Fixture::new();
    let key = "kbdHqFF4TiFej05J2TfqXDRc4QcyvesAQYmfnQvOosY=";
    let ca = base64::engine::general_purpose::STANDARD
        .encode(s3_server::TestCertificates::generate().ca_pem);
    // The s3 interface v1's keys, with the access and secret keys given directly.
    let v1 = f.dir.path().join("s3-v1.yaml");
    fs::write(
        &v1,
        format!(
            "bucket: {BUCKET}\nsecret-extra: secret://5f1e7a52/d4kq8m7mp25c76d6bdn0\n\
             lib-version: \"1.10\"\naccess-key: {}\nsecret-key: {}\nendpoint: {}\n\
             region: us-east-1\ns3-uri-style: path\npath: {PREFIX}\ns3-api-version: \"4\"\n\
             tls-ca-chain: '[\"{ca}\"]'\n\
             attributes: Cache-Control=no-store;X-Amz-Server-Side-Encryption-Customer-Key={key}\n",
            f.server.access_key, f.server.secret_key, f.server.endpoint
        ),
    )
    .unwrap();
    let v1_cmd = || {
        let mut cmd = f.bare();
        cmd.arg("--root")
            .arg(&f.tree.root)
            .arg("--s3")
            .arg(&v1)
            .arg("--passphrase-file")
            .arg(&f.passphrase_file)
            .env("AWS_SESSION_TOKEN", "cli-session-token");
        cmd
    };
    let out = f.expect(0, &mut v1_cmd(), &["create"]);
    let id = stdout(&out).trim().to_string();
    f.expect(0, &mut v1_cmd(), &["verify", &id]);
    let seen = f.server.sse().seen();
    assert!(seen.iter().any(|r| r.operation == "GetObject"), "{seen:?}");
    for request in seen.iter().filter(|r| r.operation != "DeleteObject") {
        assert!(
            request.headers.contains(&(
                "x-amz-server-side-encryption-customer-key".into(),
                key.into()
            )) && request
                .headers
                .contains(&("x-amz-security-token".into(), "cli-session-token".into())),
            "{request:?}"
        );
    }
    // The plain file has no customer key: the backup cannot be read with it.
    f.expect(1, &mut f.cmd(), &["verify", &id]);
    // A v1 file without the keys names what is missing.
    let keyless = f.dir.path().join("s3-keyless.yaml");
    let text: String = fs::read_to_string(&v1)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("access-key") && !l.starts_with("secret-key"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&keyless, text).unwrap();
    let mut cmd = f.bare();
    cmd.arg("--s3").arg(&keyless);
    let out = f.expect(2, &mut cmd, &["check"]);
    assert!(stderr(&out).contains("secret-extra"), "{}", stderr(&out));
    f.assert_no_secrets(&[key, "cli-session-token"]);
}

#[test]
fn check_fails_with_exit_1_for_a_missing_bucket() {
    let f = Fixture::new();
    let s3 = f.dir.path().join("other-bucket.yaml");
    let text = fs::read_to_string(&f.s3_file)
        .unwrap()
        .replace(&format!("bucket: {BUCKET}"), "bucket: no-such-bucket");
    fs::write(&s3, text).unwrap();
    let mut cmd = f.bare();
    cmd.arg("--s3").arg(&s3);
    let out = f.expect(1, &mut cmd, &["check"]);
    assert!(stderr(&out).contains("no-such-bucket"), "{}", stderr(&out));
    f.assert_no_secrets(&[]);
}

#[test]
fn bad_configuration_exits_2_names_the_problem_and_changes_nothing() {
    let f = Fixture::new();
    let dir = f.dir.path();
    let good = fs::read_to_string(&f.s3_file).unwrap();
    let without = |key: &str| {
        good.lines()
            .filter(|l| !l.starts_with(&format!("{key}:")))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        fs::write(&p, text).unwrap();
        p
    };
    let no_bucket = write("no-bucket.yaml", &without("bucket"));
    let no_region = write(
        "no-region.yaml",
        &without("region").replace(&format!("endpoint: {}\n", f.server.endpoint), ""),
    );
    // The secret sits on the malformed line: the error must not quote it.
    let malformed = write(
        "malformed.yaml",
        &format!(
            "bucket: {BUCKET}\nsecret-key: {}: [unclosed\n",
            f.server.secret_key
        ),
    );
    let malformed_json = write("malformed.json", "{\"bucket\": \"synapse-backups\",}");
    let bad_endpoint = write(
        "bad-endpoint.yaml",
        &good.replace(&f.server.endpoint, "not a url"),
    );
    let two_lines = write("two-lines", "first line\nsecond line\n");
    let empty = write("empty", "\n");
    let missing = dir.join("no-such-file");
    let s3 = f.s3_file.to_str().unwrap();
    let pass = f.passphrase_file.to_str().unwrap();
    let root = f.tree.root.to_str().unwrap();
    let p = |path: &Path| path.to_str().unwrap().to_string();

    let cases: Vec<(&str, Vec<String>, Vec<String>)> = vec![
        (
            "missing bucket",
            svec(&[
                "--root",
                root,
                "--s3",
                &p(&no_bucket),
                "--passphrase-file",
                pass,
                "create",
            ]),
            svec(&["no-bucket.yaml", "bucket"]),
        ),
        (
            "no region and no endpoint",
            svec(&[
                "--root",
                root,
                "--s3",
                &p(&no_region),
                "--passphrase-file",
                pass,
                "create",
            ]),
            svec(&["no-region.yaml", "region", "endpoint"]),
        ),
        (
            "bad endpoint",
            svec(&["--s3", &p(&bad_endpoint), "list"]),
            svec(&["endpoint"]),
        ),
        (
            "malformed yaml",
            svec(&[
                "--root",
                root,
                "--s3",
                &p(&malformed),
                "--passphrase-file",
                pass,
                "create",
            ]),
            svec(&["malformed.yaml", "line 2"]),
        ),
        (
            "malformed json",
            svec(&["--s3", &p(&malformed_json), "list"]),
            svec(&["malformed.json", "line 1"]),
        ),
        (
            "missing s3 file",
            svec(&["--s3", &p(&missing), "list"]),
            svec(&["no-such-file"]),
        ),
        (
            "unreadable passphrase file",
            svec(&[
                "--root",
                root,
                "--s3",
                s3,
                "--passphrase-file",
                &p(&missing),
                "create",
            ]),
            svec(&["passphrase file", "no-such-file"]),
        ),
        (
            "passphrase with two lines",
            svec(&[
                "--root",
                root,
                "--s3",
                s3,
                "--passphrase-file",
                &p(&two_lines),
                "create",
            ]),
            svec(&["two-lines", "line break"]),
        ),
        (
            "empty passphrase",
            svec(&[
                "--root",
                root,
                "--s3",
                s3,
                "--passphrase-file",
                &p(&empty),
                "create",
            ]),
            svec(&["empty"]),
        ),
        (
            "no passphrase at all",
            svec(&["--root", root, "--s3", s3, "create"]),
            svec(&["--passphrase-file", "SYNAPSE_BACKUP_PASSPHRASE"]),
        ),
        (
            "bad backup id",
            svec(&[
                "--s3",
                s3,
                "--passphrase-file",
                pass,
                "verify",
                "backup-nope",
            ]),
            svec(&["backup-nope", "backup-YYYYMMDDhhmmssffffff"]),
        ),
        (
            "bad backup id for delete",
            svec(&["--s3", s3, "delete", "../etc"]),
            svec(&["../etc"]),
        ),
        ("no --s3", svec(&["list"]), svec(&["--s3"])),
        (
            "root that does not exist",
            svec(&[
                "--root",
                &p(&missing),
                "--s3",
                s3,
                "--passphrase-file",
                pass,
                "create",
            ]),
            svec(&["--root", "no-such-file"]),
        ),
        (
            "relative config dir",
            svec(&[
                "--root",
                root,
                "--s3",
                s3,
                "--passphrase-file",
                pass,
                "--config-dir",
                "data",
                "create",
            ]),
            svec(&["--config-dir"]),
        ),
        (
            "aws that does not exist",
            svec(&[
                "--root",
                root,
                "--s3",
                s3,
                "--passphrase-file",
                pass,
                "--aws",
                "/no/such/aws",
                "create",
            ]),
            svec(&["--aws", "/no/such/aws", "install"]),
        ),
        (
            "restore without --yes and no terminal",
            svec(&[
                "--root",
                root,
                "--s3",
                s3,
                "--passphrase-file",
                pass,
                "restore",
                "backup-20261126071900123456",
            ]),
            svec(&["--yes"]),
        ),
        (
            "prune with zero days",
            svec(&["--s3", s3, "prune", "--older-than-days", "0"]),
            svec(&["--older-than-days"]),
        ),
        (
            "unknown command",
            svec(&["--s3", s3, "backup"]),
            svec(&["backup"]),
        ),
    ];

    let before = snapshot(&f.tree.root);
    for (name, args, wanted) in cases {
        let mut cmd = f.bare();
        let out = f.run(cmd.args(&args));
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{name}: synapse-backup {args:?}\nstdout: {}\nstderr: {err}",
            stdout(&out)
        );
        for w in &wanted {
            assert!(
                err.contains(w.as_str()),
                "{name}: {w:?} not in stderr: {err}"
            );
        }
        assert!(stdout(&out).is_empty(), "{name}: stdout {:?}", stdout(&out));
        assert!(f.objects().is_empty(), "{name}: {:?}", f.objects());
        assert_eq!(snapshot(&f.tree.root), before, "{name} changed the tree");
    }
    f.assert_no_secrets(&[]);
}

/// A bad layout flag is named as the flag (`--data-dir`), not as the library's field
/// (`data_dir`), and nothing is sent or changed.
#[test]
fn layout_errors_name_the_flag() {
    let f = Fixture::new();
    let s3 = f.s3_file.to_str().unwrap();
    let pass = f.passphrase_file.to_str().unwrap();
    let root = f.tree.root.to_str().unwrap();
    let cases = [
        (
            "--data-dir",
            "/data/../etc",
            "data_dir",
            "must not contain '..'",
        ),
        ("--work-dir", "work", "work_dir", "must be an absolute path"),
        (
            "--homeserver-config",
            "homeserver.yaml",
            "homeserver_config",
            "must be an absolute path",
        ),
    ];
    let before = snapshot(&f.tree.root);
    for (flag, value, field, problem) in cases {
        for command in ["create", "verify"] {
            let mut cmd = f.bare();
            let mut args = vec!["--root", root, "--s3", s3, "--passphrase-file", pass];
            args.extend([flag, value, command]);
            if command == "verify" {
                args.push("latest");
            }
            let out = f.run(cmd.args(&args));
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert!(
                err.contains(&format!("{flag}: {value:?} {problem}")),
                "{args:?}: {flag} and {problem:?} not in stderr: {err}"
            );
            assert!(!err.contains(field), "{args:?}: {field} in stderr: {err}");
            assert!(f.objects().is_empty(), "{args:?}: {:?}", f.objects());
        }
    }
    assert_eq!(snapshot(&f.tree.root), before);
}

/// `--homeserver-config` and `--work-dir` (the `Layout` fields of the same names) are
/// honoured: a `homeserver.yaml` outside the config dir is read, and the work dir is
/// made where `--work-dir` says (a missing one is named).
#[test]
fn homeserver_config_and_work_dir_flags_are_honoured() {
    let f = Fixture::new();
    let root = &f.tree.root;
    let elsewhere = root.join("etc/synapse");
    fs::create_dir_all(&elsewhere).unwrap();
    fs::rename(
        root.join("data/homeserver.yaml"),
        elsewhere.join("homeserver.yaml"),
    )
    .unwrap();
    fs::create_dir_all(root.join("scratch")).unwrap();

    let out = f.run(f.cmd().arg("create"));
    assert_ne!(
        out.status.code(),
        Some(0),
        "create found no homeserver.yaml"
    );
    assert!(stderr(&out).contains("homeserver.yaml"), "{}", stderr(&out));

    let out = f.run(f.cmd().args([
        "--homeserver-config",
        "/etc/synapse/homeserver.yaml",
        "--work-dir",
        "/no-such-work-dir",
        "create",
    ]));
    assert_ne!(out.status.code(), Some(0), "create made its work dir");
    let err = stderr(&out);
    assert!(
        err.contains("no-such-work-dir/.synapse-backup-backup-"),
        "the work dir is not made under --work-dir: {err}"
    );

    let out = f.ok(&[
        "--homeserver-config",
        "/etc/synapse/homeserver.yaml",
        "--work-dir",
        "/scratch",
        "create",
    ]);
    assert!(is_backup_id(stdout(&out).trim()), "{}", stdout(&out));
    assert_eq!(fs::read_dir(root.join("scratch")).unwrap().count(), 0);
    f.assert_no_secrets(&[]);
}

fn svec(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// An executable script standing in for the aws CLI: it writes its pid to `marker`,
/// then runs `then`.
fn fake_aws(dir: &Path, name: &str, marker: &Path, then: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    fs::write(
        &path,
        format!(
            "#!/usr/bin/env bash\necho $$ > '{}'\n{then}\n",
            marker.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Waits for `marker` and returns the pid written in it.
fn wait_for_pid(marker: &Path) -> i32 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(text) = fs::read_to_string(marker)
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pipeline never reached the aws CLI"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(") ").next().map(|rest| !rest.starts_with('Z')))
        .unwrap_or(false)
}

fn interrupt(child: &std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
}

fn work_dirs(data: &Path) -> Vec<String> {
    fs::read_dir(data)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".synapse-backup-"))
        .collect()
}

#[test]
fn ctrl_c_stops_a_create_and_leaves_nothing_behind() {
    let f = Fixture::new();
    let marker = f.dir.path().join("aws-pid");
    let hanging = fake_aws(f.dir.path(), "hanging-aws", &marker, "exec sleep 300");
    let before = snapshot(&f.tree.root);
    let mut cmd = f.std_cmd();
    let child = cmd
        .arg("--aws")
        .arg(&hanging)
        .arg("create")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let aws_pid = wait_for_pid(&marker);
    assert!(
        !work_dirs(&f.tree.data).is_empty(),
        "the work dir exists mid-run"
    );
    interrupt(&child);
    let out = child.wait_with_output().unwrap();
    f.transcript
        .borrow_mut()
        .push_str(&format!("{}{}", stdout(&out), stderr(&out)));
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("interrupted") && stderr(&out).contains("removed the work dir"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty(), "no id for a stopped backup");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while alive(aws_pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the pipeline (pid {aws_pid}) survived the interrupt"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        work_dirs(&f.tree.data),
        Vec::<String>::new(),
        "the work dir (with the passphrase file) must be removed"
    );
    assert_eq!(snapshot(&f.tree.root), before);
    assert!(f.list_json().is_empty());
    f.assert_no_secrets(&[]);
}

#[test]
fn ctrl_c_prints_one_message() {
    let f = Fixture::new();
    let marker = f.dir.path().join("aws-pid");
    let hanging = fake_aws(f.dir.path(), "hanging-aws", &marker, "exec sleep 300");
    let mut cmd = f.std_cmd();
    let child = cmd
        .arg("--aws")
        .arg(&hanging)
        .arg("create")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_pid(&marker);
    interrupt(&child);
    let out = child.wait_with_output().unwrap();
    f.transcript
        .borrow_mut()
        .push_str(&format!("{}{}", stdout(&out), stderr(&out)));
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let err = stderr(&out);
    // The first backup of a bucket says so before the signal; nothing else is printed.
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("an empty bucket"))
        .collect();
    assert_eq!(lines.len(), 1, "one message for a Ctrl-C:\n{err}");
    assert!(
        lines[0].starts_with("error: interrupted") && lines[0].contains("removed the work dir"),
        "{err}"
    );
    assert!(work_dirs(&f.tree.data).is_empty());
}

#[test]
fn ctrl_c_does_not_stop_a_restore_half_way() {
    let f = Fixture::new();
    let before_files = f.tree.backed_up_files();
    let id = stdout(&f.ok(&["create"])).trim().to_string();
    fs::remove_dir_all(f.tree.media.join("local_content")).unwrap();

    let marker = f.dir.path().join("aws-pid");
    let real_aws = env::aws();
    let slow = fake_aws(
        f.dir.path(),
        "slow-aws",
        &marker,
        &format!("sleep 2\nexec '{}' \"$@\"", real_aws.display()),
    );
    let mut cmd = f.std_cmd();
    let child = cmd
        .arg("--aws")
        .arg(&slow)
        .args(["restore", &id, "--yes"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_pid(&marker);
    interrupt(&child);
    let out = child.wait_with_output().unwrap();
    f.transcript
        .borrow_mut()
        .push_str(&format!("{}{}", stdout(&out), stderr(&out)));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("interrupt ignored"),
        "{}",
        stderr(&out)
    );
    assert_eq!(f.tree.backed_up_files(), before_files);
    assert!(work_dirs(&f.tree.data).is_empty());
    f.assert_no_secrets(&[]);
}

/// An executable `tar` that runs the real one, but when creating an archive writes its
/// pid to `marker` at the 10 KiB record `record` and then hangs there (tar waits for
/// its checkpoint script): a backup stopped half-way through its upload.
fn hanging_tar(dir: &Path, marker: &Path, record: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let hang = dir.join("hang-at-checkpoint");
    fs::write(
        &hang,
        format!(
            "#!/usr/bin/env bash\nif [ \"$TAR_CHECKPOINT\" = {record} ]; then echo $$ > '{}'; exec sleep 300; fi\n",
            marker.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&hang, fs::Permissions::from_mode(0o755)).unwrap();
    let tar = dir.join("hanging-tar");
    fs::write(
        &tar,
        format!(
            "#!/usr/bin/env bash\nif [ \"$1\" = --create ]; then exec tar --checkpoint=1 --checkpoint-action=exec='{}' \"$@\"; fi\nexec tar \"$@\"\n",
            hang.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&tar, fs::Permissions::from_mode(0o755)).unwrap();
    tar
}

fn send(child: &std::process::Child, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
}

/// SIGHUP (a closed terminal) mid-upload stops the backup and cleans
/// up like Ctrl-C: the pipeline dies, the work dir goes, no object or multipart upload
/// is left.
#[test]
fn sighup_stops_a_create_mid_upload_and_leaves_nothing() {
    let f = Fixture::new();
    let mut rng = synapse_tree::Rng::new(3);
    fs::create_dir_all(f.tree.media.join("local_content/big")).unwrap();
    synapse_tree::write_random(
        &f.tree.media.join("local_content/big/file"),
        16 << 20,
        &mut rng,
    );
    let marker = f.dir.path().join("tar-pid");
    // 12 MiB into the archive: the aws CLI has begun a multipart upload.
    let tar = hanging_tar(f.dir.path(), &marker, 1200);
    let mut cmd = f.std_cmd();
    let child = cmd
        .arg("--tar")
        .arg(&tar)
        .arg("create")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let hung = wait_for_pid(&marker);
    assert_eq!(
        work_dirs(&f.tree.data).len(),
        1,
        "the work dir exists mid-run"
    );
    send(&child, nix::sys::signal::Signal::SIGHUP);
    let out = child.wait_with_output().unwrap();
    f.transcript
        .borrow_mut()
        .push_str(&format!("{}{}", stdout(&out), stderr(&out)));
    assert_eq!(out.status.code(), Some(129), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "no id for a stopped backup");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while alive(hung) {
        assert!(
            std::time::Instant::now() < deadline,
            "the pipeline (pid {hung}) survived SIGHUP"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(work_dirs(&f.tree.data), Vec::<String>::new());
    assert!(f.objects().is_empty(), "{:?}", f.objects());
    assert!(f.list_json().is_empty());
    let params = synapse_backup::S3Parameters::from_relation_data(
        &[
            ("access-key", f.server.access_key.as_str()),
            ("secret-key", f.server.secret_key.as_str()),
            ("bucket", BUCKET),
            ("endpoint", f.server.endpoint.as_str()),
            ("s3-uri-style", "path"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    )
    .unwrap();
    let client = synapse_backup::S3Client::new(&params).unwrap();
    let uploads = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(client.list_multipart_uploads(PREFIX));
    if let Ok(uploads) = uploads {
        assert!(uploads.is_empty(), "{uploads:?}");
    }
    f.assert_no_secrets(&[]);
}

/// Ctrl-C on a `create` removes only its own work dir, never one
/// another run made meanwhile (here a restore's, holding set-aside live files).
#[test]
fn ctrl_c_does_not_remove_another_runs_work_dir() {
    let f = Fixture::new();
    let marker = f.dir.path().join("aws-pid");
    let hanging = fake_aws(f.dir.path(), "hanging-aws", &marker, "exec sleep 300");
    let mut cmd = f.std_cmd();
    let child = cmd
        .arg("--aws")
        .arg(&hanging)
        .arg("create")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_pid(&marker);
    // A concurrent restore's work dir, made after this create started.
    let other = f.tree.data.join(".synapse-backup-restore.AbCdEfGhIj");
    fs::create_dir_all(other.join("aside/data")).unwrap();
    fs::write(other.join("aside/data/homeserver.db"), "the live database").unwrap();
    send(&child, nix::sys::signal::Signal::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert_eq!(
        fs::read(other.join("aside/data/homeserver.db")).unwrap(),
        b"the live database",
        "another run's work dir was touched"
    );
    assert_eq!(
        work_dirs(&f.tree.data),
        [".synapse-backup-restore.AbCdEfGhIj"],
        "only this run's own work dir is removed"
    );
}

/// The pipelines' user and the snapshot's mode: run as root without --user, the CLI runs the
/// pipelines as the owner of the data dir, so the snapshot belongs to that user and
/// keeps the live database's mode, through a create and a restore.
#[test]
fn as_root_the_pipelines_run_as_the_data_dir_owner_and_keep_the_db_mode() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let f = Fixture::new();
    assert!(nix::unistd::geteuid().is_root(), "run the tests as root");
    let db = f.tree.data.join("homeserver.db");
    fs::set_permissions(&db, fs::Permissions::from_mode(0o640)).unwrap();
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg("chmod -R a+rX \"$1\" && chmod 0755 \"$2\" && chown -R nobody:nogroup \"$1/data\" && chmod 0640 \"$1/data/homeserver.db\"")
        .arg("bash")
        .arg(&f.tree.root)
        .arg(f.dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let id = stdout(&f.ok(&["create"])).trim().to_string();
    // The archive's database: owned by nobody (65534), mode 0640.
    let listing = std::process::Command::new("bash")
        .arg("-c")
        .arg(
            r#"set -euo pipefail
aws s3 cp --only-show-errors --endpoint-url "$1" "s3://$2/$3/$4" - |
  gpg --batch --no-tty --pinentry-mode loopback --passphrase-file "$5" --decrypt 2>/dev/null |
  tar -tv --numeric-owner"#,
        )
        .arg("bash")
        .arg(&f.server.endpoint)
        .arg(BUCKET)
        .arg(PREFIX)
        .arg(&id)
        .arg(&f.passphrase_file)
        .env("AWS_ACCESS_KEY_ID", &f.server.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &f.server.secret_key)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("GNUPGHOME", f.dir.path())
        .output()
        .unwrap();
    assert!(listing.status.success(), "{}", stderr(&listing));
    let line = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .find(|l| l.ends_with(" data/homeserver.db"))
        .map(str::to_string)
        .expect("the database in the archive");
    assert!(line.starts_with("-rw-r----- 65534/65534 "), "{line}");
    f.ok(&["restore", &id, "--yes"]);
    let meta = fs::metadata(&db).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (65534, 65534, 0o640)
    );
    assert!(work_dirs(&f.tree.data).is_empty());
}

/// A misspelt key in the s3 file (a file a person writes) is an error naming the
/// nearest known key, before any request: it must not fall back to a default (for
/// `endpiont`, AWS's public endpoint). Relation data from Juju keeps ignoring unknown
/// keys.
#[test]
fn a_misspelt_key_in_the_s3_file_exits_2_naming_the_nearest_key() {
    let f = Fixture::new();
    let good = fs::read_to_string(&f.s3_file).unwrap();
    // Before: a warning, then us-east-1 instead, and exit 0.
    for (typo, right, replaced) in [
        ("regoin", "region", good.replace("region:", "regoin:")),
        (
            "endpiont",
            "endpoint",
            good.replace("endpoint:", "endpiont:"),
        ),
        (
            "S3_URI_STYLE",
            "s3-uri-style",
            good.replace("s3-uri-style:", "S3_URI_STYLE:"),
        ),
    ] {
        assert_ne!(replaced, good, "{typo}");
        let file = f.dir.path().join(format!("{typo}.yaml"));
        fs::write(&file, replaced).unwrap();
        let out = f.run(f.bare().args(["--s3", file.to_str().unwrap(), "check"]));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{typo}: {err}");
        assert!(
            err.contains(&format!(
                "unknown key \"{typo}\" (did you mean \"{right}\"?)"
            )) && err.contains(&format!("{typo}.yaml")),
            "{err}"
        );
    }
    // Far from every key: named, without a guess.
    let file = f.dir.path().join("far.yaml");
    fs::write(&file, format!("{good}colour: blue\n")).unwrap();
    let out = f.run(f.bare().args(["--s3", file.to_str().unwrap(), "check"]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("unknown key \"colour\";"), "{err}");
    // Relation data: unknown keys are still ignored.
    let mut data = f.server.relation_data(BUCKET);
    data.insert("endpiont".into(), "http://elsewhere".into());
    assert!(synapse_backup::S3Parameters::from_relation_data(&data).is_ok());
}

/// A passphrase file others can write is refused (whoever can change it chooses the
/// next backups' passphrase); one its group or others can read is used with a warning
/// naming the file and `chmod 600`.
#[test]
fn a_passphrase_file_others_can_read_warns_and_one_they_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    let pass = f.passphrase_file.to_str().unwrap();
    let s3 = f.s3_file.to_str().unwrap();
    let check = |mode: u32| {
        fs::set_permissions(&f.passphrase_file, fs::Permissions::from_mode(mode)).unwrap();
        f.run(
            f.bare()
                .args(["--s3", s3, "--passphrase-file", pass, "check"]),
        )
    };
    // Before: used silently.
    let out = check(0o644);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("warning") || err.contains("WARN"),
        "a warning: {err}"
    );
    assert!(
        err.contains(pass) && err.contains("readable by others") && err.contains("chmod 600"),
        "{err}"
    );
    let out = check(0o666);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(pass) && err.contains("writable by others") && err.contains("chmod 600"),
        "{err}"
    );
    let out = check(0o600);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("passphrase file"), "no warning: {err}");
}

/// A lock wait or time to live past its bound is a usage error naming the value
/// (before: `--lock-wait 18446744073709551615` panicked adding it to the clock).
#[test]
fn an_endless_lock_wait_or_ttl_is_a_usage_error_naming_the_value() {
    let f = Fixture::new();
    for (flag, bound) in [("--lock-wait", "604800"), ("--lock-ttl", "86400")] {
        let out = f.run(f.cmd().args([
            flag,
            "18446744073709551615",
            "delete",
            "backup-20260101000000000000",
        ]));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{flag}: {err}");
        assert!(
            err.contains("18446744073709551615") && err.contains(flag) && err.contains(bound),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// An endpoint that accepts connections and never answers: `check` fails within the
/// request deadline (`--s3-timeout`) naming it, instead of hanging for ever.
#[test]
fn check_against_an_endpoint_that_never_answers_fails_within_the_s3_timeout() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let endpoint = runtime.block_on(faulty::endpoint::HostileEndpoint::start(
        faulty::endpoint::Behaviour::NeverAnswers,
    ));
    let f = Fixture::new();
    let file = f.dir.path().join("silent.yaml");
    let data = endpoint.relation_data(BUCKET);
    fs::write(
        &file,
        format!(
            "access-key: {}\nsecret-key: {}\nbucket: {BUCKET}\nendpoint: {}\nregion: us-east-1\ns3-uri-style: path\n",
            data["access-key"], data["secret-key"], data["endpoint"]
        ),
    )
    .unwrap();
    let out = f.run(
        f.bare()
            .args(["--s3", file.to_str().unwrap(), "--s3-timeout", "1", "list"])
            .timeout(std::time::Duration::from_secs(60)),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no answer within 1 s"), "{err}");
    let out = f.run(
        f.bare()
            .args(["--s3", file.to_str().unwrap(), "--s3-timeout", "1", "check"])
            .timeout(std::time::Duration::from_secs(60)),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    drop(endpoint);
}

//! The command line as an operator meets it, against a real in-process S3
//! server: errors that name the cause and the fix (missing bucket, dead port, TLS to a
//! plain-HTTP port, wrong keys, missing data dir), `latest` as an id, the global
//! `--json` (errors included), `SYNAPSE_BACKUP_PASSPHRASE_FILE`, `prune --dry-run`
//! reasons, `--keep-at-least`, the exit codes in `--help`, and restore's report.

use crate::support::cli_fixture;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use cli_fixture::{BUCKET, CLI_VARS, Fixture, PREFIX, expect, json, stderr, stdout};

/// The error line alone: nothing else on stderr repeats or precedes it (no WARN line).
fn only_error(out: &Output) -> String {
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one error line and no warning:\n{err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(!err.contains("WARN"), "{err}");
    lines[0].to_string()
}

/// A port nothing listens on (bound, then released).
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// An aws CLI stand-in that records being run, then fails.
fn recording_aws(dir: &Path, marker: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("recording-aws");
    fs::write(
        &path,
        format!(
            "#!/usr/bin/env bash\ntouch '{}'\nexit 1\n",
            marker.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn a_missing_bucket_is_named_by_check_list_and_create_before_any_pipeline() {
    let f = Fixture::new();
    let s3 = f.s3_with("missing.yaml", |t| {
        t.replace(&format!("bucket: {BUCKET}"), "bucket: no-such-bucket")
    });
    let marker = f.dir.path().join("aws-ran");
    let aws = recording_aws(f.dir.path(), &marker);
    for command in ["check", "list", "create", "prune"] {
        let mut cmd = f.with_s3(&s3);
        cmd.arg("--aws").arg(&aws);
        let out = expect(1, &mut cmd, &[command]);
        let line = only_error(&out);
        assert!(
            line.contains("bucket no-such-bucket does not exist"),
            "{command}: {line}"
        );
        assert!(line.contains(&f.server.endpoint), "{command}: {line}");
        assert!(
            line.contains("missing.yaml"),
            "names the file to fix: {line}"
        );
        f.assert_no_secrets(&out);
    }
    assert!(
        !marker.exists(),
        "create ran the pipeline (the aws CLI) before checking the bucket"
    );
}

#[test]
fn a_dead_port_says_cannot_connect_to_the_endpoint() {
    let f = Fixture::new();
    let endpoint = format!("http://127.0.0.1:{}", dead_port());
    let s3 = f.s3_with("dead.yaml", |t| t.replace(&f.server.endpoint, &endpoint));
    for command in ["check", "list", "create"] {
        let out = expect(1, &mut f.with_s3(&s3), &[command]);
        let line = only_error(&out);
        assert!(
            line.contains(&format!("cannot connect to {endpoint}")),
            "{command}: {line}"
        );
        assert!(line.contains("endpoint"), "{line}");
    }
}

#[test]
fn tls_to_a_plain_http_port_says_so() {
    let f = Fixture::new();
    let endpoint = f.server.endpoint.replace("http://", "https://");
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    let s3 = f.s3_with("tls.yaml", |t| t.replace(&f.server.endpoint, &endpoint));
    let out = expect(1, &mut f.with_s3(&s3), &["check"]);
    let line = only_error(&out);
    assert!(line.contains("TLS"), "{line}");
    assert!(
        line.contains(&f.server.endpoint),
        "suggests http://: {line}"
    );
}

#[test]
fn wrong_keys_name_the_credentials_and_where_they_come_from() {
    let f = Fixture::new();
    let s3 = f.s3_with("bad-keys.yaml", |t| {
        t.replace(
            &format!("secret-key: {}", f.server.secret_key),
            "secret-key: not-the-secret-key-at-all",
        )
    });
    for command in ["check", "list"] {
        let out = expect(1, &mut f.with_s3(&s3), &[command]);
        let line = only_error(&out);
        assert!(line.contains("credentials"), "{command}: {line}");
        assert!(line.contains("SYNAPSE_BACKUP_SECRET_KEY"), "{line}");
        assert!(!line.contains("not-the-secret-key-at-all"), "{line}");
        f.assert_no_secrets(&out);
    }
}

#[test]
fn a_missing_data_dir_mentions_root_and_data_dir() {
    let f = Fixture::new();
    let empty = f.dir.path().join("empty-root");
    fs::create_dir(&empty).unwrap();
    // (verify needs no tree: it makes its work dir in the temp dir, see cli_commands.rs)
    for args in [
        vec!["create"],
        vec!["restore", "backup-20261126071900123456", "--yes"],
    ] {
        let mut cmd = f.bare();
        cmd.arg("--root")
            .arg(&empty)
            .arg("--s3")
            .arg(&f.s3_file)
            .arg("--passphrase-file")
            .arg(&f.passphrase_file);
        let out = expect(2, &mut cmd, &args);
        let line = only_error(&out);
        assert!(
            line.contains("--root") && line.contains("--data-dir"),
            "{args:?}: {line}"
        );
        assert!(line.contains(empty.to_str().unwrap()), "{line}");
    }
}

#[test]
fn missing_keys_mention_the_environment_variables() {
    let f = Fixture::new();
    let s3 = f.s3_with("no-keys.yaml", |t| {
        t.lines()
            .filter(|l| !l.starts_with("access-key") && !l.starts_with("secret-key"))
            .map(|l| format!("{l}\n"))
            .collect()
    });
    let out = expect(2, &mut f.with_s3(&s3), &["list"]);
    let err = stderr(&out);
    assert!(
        err.contains("SYNAPSE_BACKUP_ACCESS_KEY") && err.contains("SYNAPSE_BACKUP_SECRET_KEY"),
        "{err}"
    );
}

#[test]
fn the_passphrase_file_can_come_from_the_environment() {
    let f = Fixture::new();
    let mut cmd = f.bare();
    cmd.arg("--root")
        .arg(&f.tree.root)
        .arg("--s3")
        .arg(&f.s3_file)
        .env("SYNAPSE_BACKUP_PASSPHRASE_FILE", &f.passphrase_file);
    let out = expect(0, &mut cmd, &["create"]);
    let id = stdout(&out).trim().to_string();
    let mut cmd = f.bare();
    cmd.arg("--root")
        .arg(&f.tree.root)
        .arg("--s3")
        .arg(&f.s3_file)
        .env("SYNAPSE_BACKUP_PASSPHRASE_FILE", &f.passphrase_file);
    expect(0, &mut cmd, &["verify", &id]);
    let help = stdout(&expect(0, &mut f.bare(), &["--help"]));
    assert!(help.contains("SYNAPSE_BACKUP_PASSPHRASE_FILE"), "{help}");
}

#[test]
fn latest_is_accepted_wherever_an_id_is() {
    let f = Fixture::new();
    let out = expect(1, &mut f.cmd(), &["verify", "latest"]);
    assert!(
        stderr(&out).contains("no complete backup"),
        "{}",
        stderr(&out)
    );
    let first = stdout(&f.ok(&["create"])).trim().to_string();
    let second = stdout(&f.ok(&["create"])).trim().to_string();
    assert_ne!(first, second);
    let out = f.ok(&["verify", "latest"]);
    assert!(
        stdout(&out).starts_with(&format!("ok: {second}")),
        "{}",
        stdout(&out)
    );
    let out = f.ok(&["restore", "latest", "--yes"]);
    assert!(
        stdout(&out).starts_with(&format!("restored {second}")),
        "{}",
        stdout(&out)
    );
    let out = f.ok(&["delete", "latest"]);
    assert!(stdout(&out).contains(&format!("deleted {second}")));
    let out = f.ok(&["verify", "latest"]);
    assert!(stdout(&out).starts_with(&format!("ok: {first}")));
    // Not a misspelt id: still a clear usage error.
    let out = expect(2, &mut f.cmd(), &["verify", "lastest"]);
    assert!(stderr(&out).contains("latest"), "{}", stderr(&out));
}

#[test]
fn json_is_a_global_flag_every_command_honours_errors_included() {
    let f = Fixture::new();
    let check = json(&f.ok(&["--json", "check"]));
    assert_eq!(check["ok"], true, "{check}");
    assert_eq!(check["bucket"], BUCKET, "{check}");

    let created = json(&f.ok(&["create", "--json"]));
    let id = created["id"].as_str().expect("id").to_string();
    assert!(created["files"].as_u64().unwrap() > 0, "{created}");
    assert!(
        created["ciphertext_bytes"].as_u64().unwrap() > 0,
        "{created}"
    );

    let list = json(&f.ok(&["--json", "list"]));
    assert_eq!(list[0]["id"], id.as_str(), "{list}");
    // The old per-command spelling still works.
    let list = json(&f.ok(&["list", "--json"]));
    assert_eq!(list[0]["id"], id.as_str(), "{list}");

    let verified = json(&f.ok(&["--json", "verify", "latest"]));
    assert_eq!(verified["id"], id.as_str(), "{verified}");
    assert_eq!(verified["status"], "complete", "{verified}");

    let restored = json(&f.ok(&["--json", "restore", &id, "--yes"]));
    assert_eq!(restored["id"], id.as_str(), "{restored}");
    assert!(
        restored["restored"].as_array().unwrap().len() > 1,
        "{restored}"
    );

    let pruned = json(&f.ok(&["--json", "prune", "--dry-run", "--keep-at-least", "1"]));
    assert_eq!(pruned["dry_run"], true, "{pruned}");
    assert!(pruned["deleted"].as_array().unwrap().is_empty(), "{pruned}");

    let unlocked = json(&f.ok(&["--json", "unlock", "--yes"]));
    assert_eq!(unlocked["removed"], false, "{unlocked}");

    let deleted = json(&f.ok(&["--json", "delete", &id]));
    assert_eq!(deleted["deleted"], id.as_str(), "{deleted}");

    // Errors: a JSON object on stdout with the kind, the message and the exit code.
    let out = expect(1, &mut f.cmd(), &["--json", "verify", &id]);
    let error = json(&out);
    assert_eq!(error["error"]["exit_code"], 1, "{error}");
    assert_eq!(error["error"]["kind"], "not-found", "{error}");
    assert!(
        error["error"]["message"].as_str().unwrap().contains(&id),
        "{error}"
    );
    let s3 = f.s3_with("missing.yaml", |t| {
        t.replace(&format!("bucket: {BUCKET}"), "bucket: no-such-bucket")
    });
    let error = json(&expect(1, &mut f.with_s3(&s3), &["--json", "list"]));
    assert_eq!(error["error"]["kind"], "bucket-not-found", "{error}");
    let error = json(&expect(2, &mut f.cmd(), &["--json", "verify", "not-an-id"]));
    assert_eq!(error["error"]["kind"], "usage", "{error}");
    assert_eq!(error["error"]["exit_code"], 2, "{error}");
}

#[test]
fn prune_dry_run_lists_each_backup_and_why_and_keep_at_least_is_named_so() {
    let f = Fixture::new();
    let first = stdout(&f.ok(&["create"])).trim().to_string();
    let second = stdout(&f.ok(&["create"])).trim().to_string();
    let third = stdout(&f.ok(&["create"])).trim().to_string();
    // A leftover: a manifest whose data is missing (incomplete).
    let leftover = "backup-20200101000000000000";
    let object = f
        .server
        .object_path(BUCKET, &format!("{PREFIX}/{leftover}.manifest.json"));
    fs::write(&object, b"{}").unwrap();

    let out = f.ok(&["prune", "--dry-run", "--keep-at-least", "1"]);
    let text = stdout(&out);
    for id in [&first, &second] {
        let line = text
            .lines()
            .find(|l| l.contains(id.as_str()))
            .unwrap_or_else(|| panic!("{id} not listed:\n{text}"));
        assert!(line.starts_with("would delete"), "{text}");
        assert!(line.contains("--keep-at-least 1"), "why: {line}");
    }
    let line = text.lines().find(|l| l.contains(leftover)).expect(&text);
    assert!(
        line.starts_with("would delete") && line.contains("incomplete"),
        "{line}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("would delete") && l.contains(&third)),
        "{text}"
    );
    let out = f.ok(&["prune", "--dry-run", "--older-than-days", "1"]);
    let line = stdout(&out)
        .lines()
        .find(|l| l.contains(leftover))
        .map(str::to_string)
        .expect("the leftover is listed");
    assert!(line.contains("incomplete"), "{line}");
    // The old name still works.
    f.ok(&["prune", "--dry-run", "--keep-last", "1"]);
    let help = stdout(&f.ok(&["prune", "--help"]));
    assert!(help.contains("--keep-at-least"), "{help}");
    assert!(
        !help.contains("--keep-last"),
        "the old name is hidden: {help}"
    );
}

#[test]
fn help_lists_every_exit_code() {
    let f = Fixture::new();
    let help = stdout(&expect(0, &mut f.bare(), &["--help"]));
    let codes = help
        .split("Exit codes:")
        .nth(1)
        .unwrap_or_else(|| panic!("no exit codes:\n{help}"));
    for code in ["0 ", "1 ", "2 ", "3 ", "4 ", "129", "130", "143"] {
        assert!(codes.contains(code), "exit code {code} missing:\n{codes}");
    }
}

#[test]
fn a_declined_restore_prompt_has_its_own_exit_code() {
    let f = Fixture::new();
    let id = stdout(&f.ok(&["create"])).trim().to_string();
    // `script` gives the binary a terminal to ask on; the answer is "n".
    let binary = env!("CARGO_BIN_EXE_synapse-backup");
    let inner = format!(
        "'{binary}' --root '{}' --s3 '{}' --passphrase-file '{}' restore {id}; echo \"exit=$?\"",
        f.tree.root.display(),
        f.s3_file.display(),
        f.passphrase_file.display()
    );
    let mut cmd = std::process::Command::new("script");
    for var in CLI_VARS {
        cmd.env_remove(var);
    }
    cmd.env("AWS_EC2_METADATA_DISABLED", "true");
    let out = cmd
        .args(["-q", "-e", "-c", &inner, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"n\n")?;
            child.wait_with_output()
        })
        .expect("run script (util-linux: sudo apt-get install -y bsdutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Type yes to continue"), "{text}");
    assert!(
        text.contains("exit=4"),
        "a declined prompt exits 4:\n{text}"
    );
    assert!(text.contains("nothing was changed"), "{text}");
}

#[test]
fn restore_does_not_report_removing_files_that_did_not_exist() {
    let f = Fixture::new();
    let id = stdout(&f.ok(&["create"])).trim().to_string();
    for suffix in ["-wal", "-shm"] {
        let _ = fs::remove_file(f.tree.data.join(format!("homeserver.db{suffix}")));
    }
    let out = f.ok(&["restore", &id, "--yes"]);
    assert!(!stdout(&out).contains("removed"), "{}", stdout(&out));
    // One that does exist is reported.
    fs::write(f.tree.data.join("homeserver.db-shm"), b"stale").unwrap();
    let out = f.ok(&["restore", &id, "--yes"]);
    assert!(
        stdout(&out)
            .contains("removed data/homeserver.db-shm (a sidecar of the replaced database)"),
        "{}",
        stdout(&out)
    );
    assert!(
        !stdout(&out).contains("homeserver.db-wal"),
        "{}",
        stdout(&out)
    );
}

/// Runs `cmd` on a terminal (through `script`), typing `input`; returns its exit code
/// and everything it printed.
fn on_a_terminal(cmd: &assert_cmd::Command, input: &str) -> (Option<i32>, String) {
    let std = cmd.get_program();
    let mut line = shell_quote(&std.to_string_lossy());
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&shell_quote(&arg.to_string_lossy()));
    }
    let mut script = std::process::Command::new("script");
    script.args(["-qec", &line, "/dev/null"]);
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => script.env(key, value),
            None => script.env_remove(key),
        };
    }
    let mut child = script
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run script (util-linux)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        // The prompt comes after the bucket check: give it time before answering.
        std::thread::sleep(std::time::Duration::from_secs(3));
        stdin.write_all(input.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[test]
fn an_in_place_restore_without_service_says_no_service_was_stopped() {
    let f = Fixture::new();
    let id = f.create();
    // The prompt, on a terminal: answered no, nothing changes (exit 4).
    let mut cmd = f.cmd();
    cmd.args(["restore", &id]);
    let (code, text) = on_a_terminal(&cmd, "no\n");
    assert_eq!(code, Some(4), "{text}");
    assert!(
        text.contains("No service is stopped (no --service)"),
        "the prompt says no service is stopped: {text}"
    );
    // The report.
    let out = f.ok(&["restore", &id, "--yes"]);
    assert!(
        stdout(&out).contains("no service was stopped (no --service)"),
        "{}",
        stdout(&out)
    );
    let restored = json(&f.ok(&["--json", "restore", &id, "--yes"]));
    assert_eq!(restored["service"], serde_json::Value::Null, "{restored}");
    assert_eq!(restored["id"], id.as_str(), "{restored}");
    let out = f.ok(&["--json", "restore", &id, "--yes"]);
    assert!(
        stderr(&out).contains("no service was stopped"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn quiet_prints_no_progress_and_no_notes_but_still_the_errors() {
    let f = Fixture::new();
    // Without -q, create prints progress lines and its summary.
    let mut cmd = f.cmd();
    cmd.env("SYNAPSE_BACKUP_PROGRESS_EVERY", "0");
    let out = expect(0, &mut cmd, &["create"]);
    assert!(stderr(&out).contains("created "), "{}", stderr(&out));
    assert!(stderr(&out).contains("backing up"), "{}", stderr(&out));
    // With it, nothing (the first backup's warning is behind us).
    let mut cmd = f.cmd();
    cmd.env("SYNAPSE_BACKUP_PROGRESS_EVERY", "0");
    let out = expect(0, &mut cmd, &["-q", "create"]);
    let id = stdout(&out).trim().to_string();
    assert!(id.starts_with("backup-"), "the result is unchanged: {id}");
    assert_eq!(stderr(&out), "", "nothing on stderr with -q");
    for args in [
        vec!["--quiet", "verify", "--all"],
        vec!["prune", "--quiet", "--dry-run"],
        vec!["-q", "list"],
    ] {
        let out = expect(0, &mut f.cmd(), &args);
        assert_eq!(stderr(&out), "", "{args:?}");
        assert!(
            !stdout(&out).is_empty(),
            "{args:?}: the result is still printed"
        );
    }
    let out = expect(
        1,
        &mut f.cmd(),
        &["-q", "verify", "backup-20200101000000000000"],
    );
    assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
    // -q and -v contradict each other.
    expect(2, &mut f.cmd(), &["-q", "-v", "list"]);
}

#[test]
fn a_subcommand_help_shows_its_own_flags_first_and_the_global_ones_under_a_heading() {
    let f = Fixture::new();
    for (command, own) in [
        (
            "prune",
            ["--keep-at-least", "--older-than-days", "--dry-run"].as_slice(),
        ),
        (
            "restore",
            ["--yes", "--keep-one-time-keys", "--target", "--include"].as_slice(),
        ),
        (
            "create",
            ["--snapshot-timeout", "--new-passphrase"].as_slice(),
        ),
    ] {
        let help = stdout(&expect(0, &mut f.bare(), &[command, "--help"]));
        let heading = help
            .find("\nGlobal options:")
            .unwrap_or_else(|| panic!("{command} --help has no Global options heading:\n{help}"));
        let options = help.find("\nOptions:").expect("an Options heading");
        assert!(options < heading, "{help}");
        // Where the option line of `flag` starts (`--dry-run`, or `-y, --yes`).
        let option = |flag: &str| {
            let mut at = 0;
            for line in help.split_inclusive('\n') {
                // The names, then the help after two spaces or on the next line.
                let names = line.trim().split("  ").next().unwrap_or("");
                if names.split([',', ' ']).any(|name| name == flag) {
                    return at;
                }
                at += line.len();
            }
            panic!("{command} --help has no option line for {flag}:\n{help}")
        };
        for flag in own {
            assert!(
                option(flag) < heading,
                "{command}: {flag} is not among its own flags:\n{help}"
            );
        }
        for global in [
            "--s3",
            "--json",
            "--quiet",
            "--limit-upload",
            "--root",
            "--service",
        ] {
            assert!(
                option(global) > heading,
                "{command}: {global} is before the heading:\n{help}"
            );
        }
    }
}

#[test]
fn bandwidth_limits_take_units_and_a_bad_one_names_the_flag_and_the_value() {
    let f = Fixture::new();
    let help = stdout(&expect(0, &mut f.bare(), &["create", "--help"]));
    assert!(help.contains("a bare number is MiB/s"), "{help}");
    let out = expect(0, &mut f.cmd(), &["--limit-upload", "10M", "create"]);
    let id = stdout(&out).trim().to_string();
    // Below 1 MiB/s too: the aws CLI takes whole KiB/s.
    expect(
        0,
        &mut f.cmd(),
        &["--limit-download", "500K", "verify", &id],
    );
    expect(0, &mut f.cmd(), &["--limit-download", "1g", "verify", &id]);
    expect(
        0,
        &mut f.cmd(),
        &["--limit-download", "20MiB/s", "verify", &id],
    );
    for (flag, value, why) in [
        ("--limit-upload", "fast", "not a rate"),
        ("--limit-upload", "10X", "unknown unit"),
        ("--limit-download", "1000B", "whole number of KiB/s"),
        ("--limit-download", "0", "more than 0"),
    ] {
        let out = expect(2, &mut f.cmd(), &[flag, value, "verify", &id]);
        let err = stderr(&out);
        assert!(
            err.contains(flag) && err.contains(value) && err.contains(why),
            "{err}"
        );
    }
}

#[test]
fn a_json_usage_error_keeps_clap_s_similar_argument_tip() {
    let f = Fixture::new();
    let out = expect(2, &mut f.cmd(), &["--json", "prune", "--dry-rn"]);
    let error = json(&out);
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("a similar argument exists") && message.contains("--dry-run"),
        "{error}"
    );
    assert!(stderr(&out).contains("--dry-run"), "{}", stderr(&out));
}

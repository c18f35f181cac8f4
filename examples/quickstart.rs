//! The quickstart: the whole backup life cycle on this machine, with nothing to set up
//! but the tools (bash, tar, gpg, python3 and the aws CLI on `PATH`).
//!
//! It builds a sample Synapse tree in a temp dir (signing key, `homeserver.yaml`, a
//! SQLite database in WAL mode with rows, a few MB of local media, remote media that
//! must be skipped), starts an embedded S3 server (s3s-fs) on 127.0.0.1 with a
//! generated key pair, then checks the bucket, creates a backup, lists, verifies,
//! damages the live tree, restores and compares byte for byte, printing each step
//! with sizes, durations and throughput, and a final `PASS` or `FAIL` line. It exits
//! non-zero when a step fails and leaves nothing behind (server stopped, temp dirs
//! removed).
//!
//! ```text
//! ./scripts/quickstart                          # installs the aws CLI if missing, then:
//! cargo run --release --example quickstart
//! ```

#![allow(
    clippy::too_many_lines,
    reason = "the 80-line rule is for the library; a scenario here reads top to bottom"
)]

#[path = "../tests/support/s3_server.rs"]
mod s3_server;
#[path = "../tests/support/synapse_tree.rs"]
mod synapse_tree;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use s3_server::{ServerOptions, TestS3Server, random_hex};
use synapse_backup::{
    BackupOptions, BackupStatus, Layout, LocalContainer, RestoreOptions, S3Client, S3Parameters,
    create_backup_with, list_backups, restore_backup_with, verify_backup_with,
};
use synapse_tree::{SynapseTree, TreeSpec, change_db, dump_db, walk};

/// The bucket and path the sample backups go to.
const BUCKET: &str = "synapse-backups";
const PATH: &str = "synapse/backups";

fn main() -> ExitCode {
    println!("synapse-backup quickstart: back up, verify and restore a sample Synapse tree");
    let started = Instant::now();
    let outcome = std::panic::catch_unwind(run);
    let total = seconds(started.elapsed());
    match outcome {
        Ok(Ok(summary)) => {
            println!("PASS: {summary} (all steps in {total})");
            ExitCode::SUCCESS
        }
        Ok(Err(message)) => {
            println!("FAIL: {message}");
            ExitCode::FAILURE
        }
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unexpected panic".into());
            println!("FAIL: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Prints one step: its name and what it did.
fn step(number: usize, name: &str, detail: &str) {
    println!("[{number}/9] {name:<14} {detail}");
}

/// Sets everything up, runs the steps, tears everything down (also on failure).
fn run() -> Result<String, String> {
    let tools = check_tools()?;
    step(
        1,
        "tools",
        &tools
            .iter()
            .map(|(name, path)| format!("{name}={}", path.display()))
            .collect::<Vec<_>>()
            .join(" "),
    );

    let t = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("synapse-backup-quickstart-")
        .tempdir()
        .map_err(|e| format!("cannot make a temp dir: {e}"))?;
    let root = dir.path().join("root");
    let spec = TreeSpec {
        media_files: 48,
        media_bytes: 8 << 20,
        db_rows: 500,
        seed: 2026,
    };
    let tree = SynapseTree::create(&root, &spec);
    let files = tree.backed_up_files();
    let media_bytes: u64 = files.values().map(|b| b.len() as u64).sum();
    step(
        2,
        "sample tree",
        &format!(
            "{}: signing key, homeserver.db ({} rows, WAL mode), {} media files ({}), remote media and url cache to skip ({})",
            root.display(),
            spec.db_rows,
            files.len() - 1,
            size(media_bytes),
            seconds(t.elapsed()),
        ),
    );

    let t = Instant::now();
    let mut server = TestS3Server::start_blocking(ServerOptions::default());
    server.create_bucket(BUCKET);
    step(
        3,
        "s3 server",
        &format!(
            "s3s-fs at {} with a generated key pair, bucket {BUCKET}, data in {} ({})",
            server.endpoint,
            server.root.display(),
            seconds(t.elapsed()),
        ),
    );
    let mut data = server.relation_data(BUCKET);
    data.insert("path".into(), PATH.into());
    let params = S3Parameters::from_relation_data(&data).map_err(|e| e.to_string())?;
    let layout = Layout::default()
        .root(root.to_string_lossy().into_owned())
        .user(None)
        .group(None)
        .service(None)
        .bash(tool(&tools, "bash"))
        .tar(tool(&tools, "tar"))
        .gpg(tool(&tools, "gpg"))
        .aws(tool(&tools, "aws"))
        .python3(tool(&tools, "python3"));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let result = runtime.block_on(life_cycle(&tree, &params, &layout));
    drop(runtime);
    server.stop_blocking();
    drop(server);
    drop(dir);
    result
}

/// Check, create, list, verify, damage, restore, compare.
async fn life_cycle(
    tree: &SynapseTree,
    params: &S3Parameters,
    layout: &Layout,
) -> Result<String, String> {
    let container = LocalContainer::new();
    let passphrase = random_hex(32);
    let db = tree.data.join("homeserver.db");
    let before_files = tree.backed_up_files();
    let before_db = dump_db(&db);

    let client = S3Client::new(params).map_err(|e| format!("check bucket: {e}"))?;
    let t = Instant::now();
    if !client.can_use_bucket().await {
        return Err(format!("check bucket: cannot use bucket {BUCKET}"));
    }
    step(
        4,
        "check bucket",
        &format!("{BUCKET} is usable ({})", millis(t.elapsed())),
    );

    let report = create_backup_with(
        &container,
        params,
        &passphrase,
        layout,
        &BackupOptions::default(),
    )
    .await
    .map_err(|e| format!("create: {e}"))?;
    let m = &report.manifest;
    let archived_files = report.files;
    step(
        5,
        "create",
        &format!(
            "{}: {archived_files} files, {} archived, {} encrypted and uploaded to s3://{BUCKET}/{}, in {} ({})",
            report.id,
            size(m.plaintext_bytes),
            size(m.ciphertext_bytes),
            report.key,
            seconds(report.duration),
            rate(m.plaintext_bytes, report.duration),
        ),
    );
    let id = report.id.clone();

    let t = Instant::now();
    let backups = list_backups(&client)
        .await
        .map_err(|e| format!("list: {e}"))?;
    let listed = backups
        .iter()
        .find(|b| b.id == id)
        .ok_or_else(|| format!("list: {id} is not listed"))?;
    if listed.status != BackupStatus::Complete {
        return Err(format!("list: {id} is {}, not complete", listed.status));
    }
    step(
        6,
        "list",
        &format!(
            "{} backup(s): {id} {} {} ({})",
            backups.len(),
            listed.status,
            size(listed.size),
            millis(t.elapsed()),
        ),
    );

    let verified = verify_backup_with(
        &container,
        params,
        &passphrase,
        &id,
        layout,
        &RestoreOptions::default(),
    )
    .await
    .map_err(|e| format!("verify: {e}"))?;
    step(
        7,
        "verify",
        &format!(
            "downloaded and decrypted {}, {} members, sha256 {} matches the manifest, in {} ({})",
            size(verified.ciphertext_bytes),
            verified.members,
            short(&verified.ciphertext_sha256),
            seconds(verified.duration),
            rate(verified.ciphertext_bytes, verified.duration),
        ),
    );

    let damage = damage(tree, &db).map_err(|e| format!("damage the live tree: {e}"))?;
    if tree.backed_up_files() == before_files || dump_db(&db) == before_db {
        return Err("damage the live tree: the tree did not change".into());
    }
    println!("      damaged: {damage}");

    let restored = restore_backup_with(
        &container,
        params,
        &passphrase,
        &id,
        layout,
        &RestoreOptions::default(),
    )
    .await
    .map_err(|e| format!("restore: {e}"))?;
    step(
        8,
        "restore",
        &format!(
            "replaced {} ({}), in {} ({})",
            restored.restored.join(", "),
            size(restored.ciphertext_bytes),
            seconds(restored.duration),
            rate(restored.ciphertext_bytes, restored.duration),
        ),
    );

    let after_files = tree.backed_up_files();
    let differing = differences(&before_files, &after_files);
    if !differing.is_empty() {
        return Err(format!(
            "compare: {} file(s) differ after the restore, e.g. {}",
            differing.len(),
            differing[0].display()
        ));
    }
    let after_db = dump_db(&db);
    if after_db != before_db {
        return Err("compare: the database rows differ after the restore".into());
    }
    if tree
        .media
        .join("local_content/added-after-the-backup")
        .exists()
    {
        return Err("compare: a file added after the backup survived the restore".into());
    }
    let rows = before_db.lines().count().saturating_sub(1);
    let bytes: u64 = after_files.values().map(|b| b.len() as u64).sum();
    step(
        9,
        "compare",
        &format!(
            "{} files ({}) identical byte for byte, {rows} database rows identical (integrity ok)",
            after_files.len(),
            size(bytes),
        ),
    );
    Ok(format!(
        "backed up, verified and restored {}",
        size(m.plaintext_bytes)
    ))
}

/// Deletes thumbnails and the signing key, overwrites a media file, adds one, changes
/// the database. Returns what it did.
fn damage(tree: &SynapseTree, db: &Path) -> std::io::Result<String> {
    let thumbnails = tree.media.join("local_thumbnails");
    let removed = walk(&thumbnails).len();
    fs::remove_dir_all(&thumbnails)?;
    let first = walk(&tree.media.join("local_content"))
        .into_iter()
        .next()
        .ok_or_else(|| std::io::Error::other("no local media"))?;
    fs::write(&first, b"overwritten")?;
    fs::write(
        tree.media.join("local_content/added-after-the-backup"),
        b"new",
    )?;
    fs::remove_file(tree.data.join("example.test.signing.key"))?;
    change_db(db);
    Ok(format!(
        "deleted {removed} thumbnails and the signing key, overwrote 1 media file, added 1, changed the database"
    ))
}

/// The paths whose bytes differ, are missing or are new.
fn differences(
    before: &BTreeMap<PathBuf, Vec<u8>>,
    after: &BTreeMap<PathBuf, Vec<u8>>,
) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = before
        .iter()
        .filter(|(p, b)| after.get(*p) != Some(*b))
        .map(|(p, _)| p.clone())
        .collect();
    out.extend(after.keys().filter(|p| !before.contains_key(*p)).cloned());
    out
}

/// Finds the tools; fails with the install command for the first one missing.
fn check_tools() -> Result<Vec<(&'static str, PathBuf)>, String> {
    const APT: &str = "sudo apt-get install -y bash tar gnupg python3";
    let wanted = [
        ("bash", APT),
        ("tar", APT),
        ("gpg", APT),
        ("python3", APT),
        (
            "aws",
            "run ./scripts/quickstart, which installs the aws CLI into a virtualenv under target/ (or `pip install awscli` into one of your own and put it on PATH)",
        ),
    ];
    let mut found = Vec::new();
    for (name, hint) in wanted {
        match which(name) {
            Some(path) => found.push((name, path)),
            None => return Err(format!("tools: {name} is not on PATH; {hint}")),
        }
    }
    let sqlite = Command::new("python3")
        .args(["-c", "import sqlite3"])
        .output()
        .map_err(|e| format!("tools: cannot run python3: {e}"))?;
    if !sqlite.status.success() {
        return Err(format!(
            "tools: python3 has no sqlite3 module; {APT} (Debian's python3 includes it)"
        ));
    }
    let aws = Command::new(&found[4].1)
        .arg("--version")
        .output()
        .map_err(|e| format!("tools: cannot run aws: {e}"))?;
    if !aws.status.success() {
        return Err(format!(
            "tools: `aws --version` failed: {}",
            String::from_utf8_lossy(&aws.stderr).trim()
        ));
    }
    Ok(found)
}

fn tool(tools: &[(&str, PathBuf)], name: &str) -> String {
    tools
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| name.to_string())
}

/// The first executable `name` on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

fn size(bytes: u64) -> String {
    synapse_backup::human_bytes(bytes)
}

fn seconds(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn millis(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

fn rate(bytes: u64, d: Duration) -> String {
    format!("{:.1} MB/s", bytes as f64 / 1e6 / d.as_secs_f64().max(1e-3))
}

fn short(sha: &str) -> String {
    sha.chars().take(16).collect::<String>() + "…"
}

//! Progress reports through the library callback while create, verify and restore run
//! against real tools and an S3 server: counted, never timed. The transfers are capped
//! with the aws CLI's `max_bandwidth`, which bounds how fast they can go (so a loaded
//! machine only makes more reports, never fewer).

use crate::support::{env, synapse_tree};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use env::{Env, PASSPHRASE};
use synapse_backup::{
    BackupOptions, Bandwidth, LocalContainer, Progress, ProgressCallback, ProgressStage,
    RestoreOptions, create_backup_with, restore_backup_with, verify_backup_with,
};
use synapse_tree::TreeSpec;

/// A callback that records every report, polling every 50 ms (a local workload: execs
/// are cheap, so the minimum read interval is lowered too).
fn recorder() -> (ProgressCallback, Arc<Mutex<Vec<Progress>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let callback = ProgressCallback::new(move |p| sink.lock().unwrap().push(p.clone()))
        .with_interval(Duration::from_millis(50))
        .with_min_read_interval(Duration::from_millis(50));
    (callback, seen)
}

/// Checks one run's reports from end to end: at least two, all of `stage`, a first
/// report at 0 bytes, counts that never go back, and one final report, which carries
/// `total_bytes`. Gives the counts and a summary for further messages.
fn check_ends(reports: &[Progress], stage: ProgressStage, total_bytes: u64) -> (Vec<u64>, String) {
    let counts: Vec<u64> = reports.iter().map(|p| p.bytes_done).collect();
    let summary = format!("{} reports, counts {counts:?}", reports.len());
    assert!(reports.len() >= 2, "{summary}");
    assert!(reports.iter().all(|p| p.stage == stage), "{summary}");
    assert_eq!(reports[0].bytes_done, 0, "{summary}");
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "counts go back: {summary}"
    );
    let last = reports.last().unwrap();
    assert!(last.finished, "{summary}");
    assert_eq!(last.bytes_done, total_bytes, "{summary}");
    assert_eq!(
        reports.iter().filter(|p| p.finished).count(),
        1,
        "one final report: {summary}"
    );
    (counts, summary)
}

/// Checks one run's reports: [`check_ends`], every report's total `expected_total`, at
/// least `several` distinct counts strictly between the start and the end, a rate
/// while running, no percentage of 100 before the final report.
fn check_reports(
    reports: &[Progress],
    stage: ProgressStage,
    expected_total: Option<u64>,
    total_bytes: u64,
    several: usize,
) {
    eprintln!(
        "DEBUG {:?}",
        reports.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
    let (counts, summary) = check_ends(reports, stage, total_bytes);
    assert!(
        reports.iter().all(|p| p.bytes_total == expected_total),
        "{summary}: totals {:?}",
        reports.iter().map(|p| p.bytes_total).collect::<Vec<_>>()
    );
    let last = reports.last().unwrap();
    assert_eq!(last.percent(), Some(100));
    for p in &reports[..reports.len() - 1] {
        assert!(p.percent().is_none_or(|pc| pc < 100), "{p:?}");
    }
    let mut between: Vec<u64> = counts
        .iter()
        .copied()
        .filter(|c| *c > 0 && *c < total_bytes)
        .collect();
    between.dedup();
    assert!(
        between.len() >= several,
        "expected at least {several} distinct counts during the transfer: {summary}"
    );
    assert!(
        reports
            .iter()
            .any(|p| !p.finished && p.bytes_per_second.is_some_and(|r| r > 0.0)),
        "a rate while running: {summary}"
    );
    assert!(
        last.to_string()
            .starts_with(&format!("{}: done, ", stage.verb())),
        "{last}"
    );
}

/// 80 MiB of media: more than the aws CLI buffers ahead of its upload (10 parts of
/// 5 MiB), so the last ~30 MiB pass the checksum stage at the capped rate, one part at
/// a time (one upload at a time: the next part is read when the last one is sent).
const MEDIA: u64 = 80 << 20;
/// The cap on the upload, in MiB/s: a part every 0.6 s at most.
const UPLOAD_CAP: u32 = 8;
/// The cap on the downloads, in MiB/s: the object takes 5 s at least.
const DOWNLOAD_CAP: u32 = 16;

#[tokio::test(flavor = "multi_thread")]
async fn progress_is_reported_several_times_during_capped_create_verify_and_restore() {
    let env = Env::new(&TreeSpec {
        media_files: 16,
        media_bytes: MEDIA,
        ..TreeSpec::default()
    })
    .await;
    let c = LocalContainer::new();

    let (callback, seen) = recorder();
    let options = BackupOptions::default()
        .progress(Some(callback))
        .max_bandwidth(Some(Bandwidth::mib(UPLOAD_CAP)))
        .upload_concurrency(1);
    let report = create_backup_with(&c, &env.params, PASSPHRASE, &env.layout, &options)
        .await
        .unwrap();
    let created = seen.lock().unwrap().clone();
    let expected = created[0].bytes_total;
    assert!(
        expected.is_some_and(|t| t >= MEDIA && t < report.manifest.ciphertext_bytes + (1 << 20)),
        "create's total is the size of the files: {expected:?}"
    );
    check_reports(
        &created,
        ProgressStage::Backup,
        expected,
        report.manifest.ciphertext_bytes,
        3,
    );
    let size = report.manifest.ciphertext_bytes;

    // verify and restore: the object as it is downloaded, out of its known size.
    let (callback, seen) = recorder();
    let options = RestoreOptions::default()
        .max_bandwidth(Some(Bandwidth::mib(DOWNLOAD_CAP)))
        .progress(Some(callback));
    let verified = verify_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &report.id,
        &env.layout,
        &options,
    )
    .await
    .unwrap();
    assert_eq!(verified.ciphertext_bytes, size);
    check_reports(
        &seen.lock().unwrap(),
        ProgressStage::Verify,
        Some(size),
        size,
        3,
    );

    let (callback, seen) = recorder();
    let options = RestoreOptions::default()
        .max_bandwidth(Some(Bandwidth::mib(DOWNLOAD_CAP)))
        .progress(Some(callback));
    restore_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &report.id,
        &env.layout,
        &options,
    )
    .await
    .unwrap();
    check_reports(
        &seen.lock().unwrap(),
        ProgressStage::Restore,
        Some(size),
        size,
        3,
    );
}

/// Without python3 the checksum stage is `tee` to `sha256sum`/`openssl` and `wc -c`,
/// which count nothing along the way (as the docs say): reports stay at 0 bytes until
/// the final one, which carries the whole length. The workload's python3 here fails
/// the checksum stage's probe (`python3 -I`) and still takes the database snapshot,
/// so no sqlite3 CLI is needed.
#[tokio::test(flavor = "multi_thread")]
async fn without_python3_progress_arrives_at_the_end() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new(&TreeSpec::default()).await;
    let python = env::require_tool("python3", "sudo apt-get install -y python3");
    let wrapper = env.dir.path().join("python3-without-isolated-mode");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n[ \"$1\" = -I ] && exit 1\nexec '{}' \"$@\"\n",
            python.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut layout = env.layout.clone();
    layout.python3 = wrapper.to_string_lossy().into_owned();
    let (callback, seen) = recorder();
    let options = BackupOptions::default().progress(Some(callback));
    let report = create_backup_with(
        &LocalContainer::new(),
        &env.params,
        PASSPHRASE,
        &layout,
        &options,
    )
    .await
    .unwrap();
    let reports = seen.lock().unwrap().clone();
    let (last, running) = reports.split_last().unwrap();
    assert!(!running.is_empty(), "{reports:?}");
    assert!(
        running.iter().all(|p| p.bytes_done == 0 && !p.finished),
        "{reports:?}"
    );
    assert!(last.finished);
    assert_eq!(last.bytes_done, report.manifest.ciphertext_bytes);
}

/// The CLI without a terminal (and with `--json`): progress as log lines on stderr
/// (every report with `SYNAPSE_BACKUP_PROGRESS_EVERY=0`), stdout the JSON alone.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_logs_progress_lines_on_stderr_without_a_terminal() {
    let env = Env::new(&TreeSpec::default()).await;
    // The passphrase file private, as the CLI asks (a readable one is warned about).
    let (s3_file, passphrase_file) = env.cli_files();
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_synapse-backup"));
        cmd.env_remove("RUST_LOG")
            .env("SYNAPSE_BACKUP_PROGRESS_EVERY", "0")
            .arg("--root")
            .arg(&env.tree.root)
            .arg("--s3")
            .arg(&s3_file)
            .arg("--passphrase-file")
            .arg(&passphrase_file)
            .arg("--json")
            .args(args);
        let out = cmd.output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(
            out.status.success(),
            "{args:?}\nstdout: {stdout}\nstderr: {stderr}"
        );
        let json: serde_json::Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON alone ({e}): {stdout}"));
        (json, stderr)
    };
    let (created, stderr) = tokio::task::block_in_place(|| run(&["create"]));
    assert!(
        stderr.lines().any(|l| l.contains("backing up: 0% of ")),
        "{stderr}"
    );
    let id = created["id"].as_str().unwrap().to_string();
    let (_, stderr) = tokio::task::block_in_place(|| run(&["verify", &id]));
    assert!(
        stderr.lines().any(|l| l.contains("verifying: 0% of ")),
        "{stderr}"
    );
}

/// Text as a terminal shows it, one line per `\r` or `\n`, without escape sequences.
fn screen_lines(raw: &str) -> Vec<String> {
    let mut out = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for f in chars.by_ref() {
                    if ('@'..='~').contains(&f) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out.split(['\r', '\n'])
        .map(|l| l.trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The CLI on an 80-column terminal (`script`): the bar, with its percentage, and every
/// line it draws fit 80 columns.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_draws_a_bar_that_fits_80_columns_on_a_terminal() {
    let env = Env::new(&TreeSpec::default()).await;
    // The passphrase file private, as the CLI asks (a readable one is warned about).
    let (s3_file, passphrase_file) = env.cli_files();
    // Every value reaches the inner shell in the environment, never in its text.
    let inner = "stty cols 80 rows 24; \"$SB_BIN\" --root \"$SB_ROOT\" --s3 \"$SB_S3\" \
                 --passphrase-file \"$SB_PASS\" create; echo \"exit=$?\"";
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new("script")
            .args(["-q", "-e", "-c", inner, "/dev/null"])
            .env_remove("RUST_LOG")
            .env("SB_BIN", env!("CARGO_BIN_EXE_synapse-backup"))
            .env("SB_ROOT", &env.tree.root)
            .env("SB_S3", &s3_file)
            .env("SB_PASS", &passphrase_file)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run script (util-linux: sudo apt-get install -y bsdutils)")
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("exit=0"), "{text}");
    let lines = screen_lines(&text);
    let bars: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("backing up [") && l.contains('%'))
        .collect();
    assert!(
        !bars.is_empty(),
        "no progress bar drawn:\n{}",
        lines.join("\n")
    );
    for line in &lines {
        // The summary and the id are plain lines; everything drawn fits 80 columns.
        if line.starts_with("created ") || line.starts_with("backup-") || line.starts_with("exit=")
        {
            continue;
        }
        assert!(
            line.chars().count() <= 80,
            "{} columns: {line:?}",
            line.chars().count()
        );
    }
}

/// When the library moves the stream (`Transfer::Library`), the count is the library's
/// own: the reports end at the object's size, and no exec is told of a progress file
/// (no checksum stage runs in the workload to write one).
#[tokio::test(flavor = "multi_thread")]
async fn a_library_transfer_reports_its_own_count_and_asks_the_workload_for_none() {
    use crate::support::faulty::Faulty;
    use synapse_backup::Transfer;
    let env = Env::new(&TreeSpec {
        media_bytes: 12 << 20,
        ..TreeSpec::default()
    })
    .await;
    let c = Faulty::new(LocalContainer::new());

    let (callback, seen) = recorder();
    let options = BackupOptions::default()
        .transfer(Transfer::Library)
        .progress(Some(callback));
    let report = create_backup_with(&c, &env.params, PASSPHRASE, &env.layout, &options)
        .await
        .unwrap();
    let size = report.manifest.ciphertext_bytes;
    check_ends(&seen.lock().unwrap(), ProgressStage::Backup, size);

    let (callback, seen) = recorder();
    let options = RestoreOptions::default()
        .transfer(Transfer::Library)
        .progress(Some(callback));
    restore_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &report.id,
        &env.layout,
        &options,
    )
    .await
    .unwrap();
    check_ends(&seen.lock().unwrap(), ProgressStage::Restore, size);
    let names = c.seen.env_names();
    assert!(names.iter().any(|n| n == "SB_OUTPUT"), "{names:?}");
    assert!(!names.iter().any(|n| n == "SB_PROGRESS"), "{names:?}");
}

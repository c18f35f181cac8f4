//! The `catalog` section: `list` and `verify --all` at scale.
//!
//! - A prefix holding 1,000 legacy backups (what the Python charm writes: a data object
//!   named `backup-<time>` with no manifest and none of our metadata, so `list_backups`
//!   needs a HEAD each to tell it from a failed run of ours; tiny bodies). It times
//!   `list_backups` (its HEADs `LIST_HEAD_CONCURRENCY` at a time) beside the bare
//!   ListObjects it starts with, and the same HEADs one at a time, straight to the server
//!   and through the `latency` section's delay proxy (where each HEAD is a round trip).
//! - 20 real small backups (a tree of a few MB) under another prefix: the CLI's
//!   `verify --all` with `--jobs 1` (one backup at a time), its default `--jobs 2` and
//!   `--jobs 4`, alternating, each checked to say `ok` for the 20.

use super::latency;
use super::synapse_tree::{SynapseTree, TreeSpec};
use super::{Bench, BoxError, Config, PASSPHRASE, err, median, progress};

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use futures_util::{StreamExt, TryStreamExt, stream};
use synapse_backup::{
    BackupId, BackupStatus, S3Client, create_backup_with, delete_backup, list_backups,
};

const LEGACY: usize = 1_000;
const LEGACY_PATH: &str = "synapse/catalog-legacy";
const VERIFIED: usize = 20;
const VERIFY_PATH: &str = "synapse/catalog-verify";
const JOBS: [u32; 3] = [1, 2, 4];

/// Runs the section on the bench's server (see the module's doc).
pub fn section(bench: &Bench, config: &Config, out: &mut String) -> Result<(), BoxError> {
    let proxy = latency::proxy(bench)?;
    let direct = S3Client::new(&latency::params(
        bench,
        &bench.server.endpoint,
        LEGACY_PATH,
    )?)?;
    let delayed = S3Client::new(&latency::params(bench, &proxy.endpoint(), LEGACY_PATH)?)?;
    let started = Instant::now();
    let keys = put_legacy(bench, &direct)?;
    progress(&format!(
        "catalog: {LEGACY} legacy backups put in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    writeln!(
        out,
        "### catalog on {}: list of {LEGACY} legacy backups (seconds, median of {}; each needs a HEAD)\n",
        bench.server.kind, config.rounds
    )?;
    writeln!(
        out,
        "| | loopback | +{} ms RTT (delay proxy) |\n|---|---|---|",
        proxy.rtt.as_millis()
    )?;
    let mut rows: [(&str, Vec<f64>, Vec<f64>); 2] = [
        ("bare ListObjects", Vec::new(), Vec::new()),
        ("list_backups (HEADs 16 at a time)", Vec::new(), Vec::new()),
    ];
    for _ in 0..config.rounds {
        for (client, slot) in [(&direct, 1usize), (&delayed, 2)] {
            let t = Instant::now();
            let objects = bench.rt.block_on(client.list_objects())?;
            let bare = t.elapsed().as_secs_f64();
            if objects.len() != LEGACY {
                return Err(err(format!("listed {} objects", objects.len())));
            }
            let t = Instant::now();
            let listed = bench.rt.block_on(list_backups(client))?;
            let full = t.elapsed().as_secs_f64();
            let legacy = listed
                .iter()
                .filter(|b| b.status == BackupStatus::Legacy)
                .count();
            if legacy != LEGACY {
                return Err(err(format!("list_backups found {legacy} legacy backups")));
            }
            for (row, time) in rows.iter_mut().zip([bare, full]) {
                if slot == 1 {
                    row.1.push(time);
                } else {
                    row.2.push(time);
                }
            }
        }
    }
    for (name, d, l) in &rows {
        writeln!(out, "| {name} | {:.3} | {:.3} |", median(d), median(l))?;
    }
    // The HEADs one at a time, once (through the proxy: about LEGACY round trips).
    let mut sequential = Vec::new();
    for client in [&direct, &delayed] {
        let t = Instant::now();
        bench.rt.block_on(async {
            for key in &keys {
                client.head_object(key).await?;
            }
            Ok::<_, synapse_backup::S3Error>(())
        })?;
        sequential.push(t.elapsed().as_secs_f64());
    }
    writeln!(
        out,
        "| the same {LEGACY} HEADs one at a time (once) | {:.3} | {:.3} |\n",
        sequential[0], sequential[1]
    )?;
    bench.rt.block_on(
        stream::iter(&keys)
            .map(|key| direct.delete_object(key))
            .buffer_unordered(16)
            .try_collect::<Vec<()>>(),
    )?;
    drop(proxy);
    verify_all(bench, config, out)
}

/// Puts `LEGACY` tiny objects named like the Python charm's backups, 16 at a time;
/// returns their keys.
fn put_legacy(bench: &Bench, client: &S3Client) -> Result<Vec<String>, BoxError> {
    let keys: Vec<String> = (0..LEGACY)
        .map(|_| client.object_key(BackupId::generate().as_str()))
        .collect();
    let none = HashMap::new();
    bench.rt.block_on(
        stream::iter(&keys)
            .map(|key| {
                client.put_object(key, b"legacy".to_vec(), "application/octet-stream", &none)
            })
            .buffer_unordered(16)
            .try_collect::<Vec<()>>(),
    )?;
    Ok(keys)
}

/// 20 small backups, then `verify --all` at each `--jobs` of `JOBS`.
fn verify_all(bench: &Bench, config: &Config, out: &mut String) -> Result<(), BoxError> {
    let cli = option_env!("CARGO_BIN_EXE_synapse-backup")
        .ok_or_else(|| err("the catalog section runs the CLI: build with the cli feature"))?;
    let dir = bench.base.join(format!("catalog-{}", bench.server.kind));
    let tree = SynapseTree::create(
        &dir.join("root"),
        &TreeSpec {
            media_files: 20,
            media_bytes: 2 << 20,
            db_rows: 100,
            seed: config.seed,
        },
    );
    let layout = bench
        .layout
        .clone()
        .root(tree.root.to_string_lossy().into_owned());
    let params = latency::params(bench, &bench.server.endpoint, VERIFY_PATH)?;
    let client = S3Client::new(&params)?;
    let started = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..VERIFIED {
        let report = bench.rt.block_on(create_backup_with(
            &bench.container,
            &params,
            PASSPHRASE,
            &layout,
            &config.options,
        ))?;
        ids.push(report.id);
    }
    progress(&format!(
        "catalog: {VERIFIED} small backups made in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let s3_file = dir.join("s3.yaml");
    let passphrase_file = dir.join("passphrase");
    for (path, text) in [
        (
            &s3_file,
            format!(
                "access-key: {}\nsecret-key: {}\nbucket: {}\nendpoint: {}\nregion: {}\ns3-uri-style: path\npath: /{VERIFY_PATH}/\n",
                bench.server.access,
                bench.server.secret,
                super::BUCKET,
                bench.server.endpoint,
                super::s3_server::REGION
            ),
        ),
        (&passphrase_file, format!("{PASSPHRASE}\n")),
    ] {
        fs::write(path, "")?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
        fs::write(path, text)?;
    }
    let mut times: Vec<Vec<f64>> = JOBS.iter().map(|_| Vec::new()).collect();
    for round in 1..=config.rounds {
        for (jobs, t) in JOBS.iter().zip(times.iter_mut()) {
            let took = verify_run(cli, &tree.root, &s3_file, &passphrase_file, *jobs)?;
            progress(&format!(
                "round {round}: verify --all --jobs {jobs} {took:.2} s"
            ));
            t.push(took);
        }
    }
    writeln!(
        out,
        "### catalog on {}: verify --all over {VERIFIED} small backups (the CLI; seconds, median of {})\n",
        bench.server.kind, config.rounds
    )?;
    writeln!(
        out,
        "| --jobs | wall | per backup | vs --jobs 1 |\n|---|---|---|---|"
    )?;
    let one = median(&times[0]);
    for (jobs, t) in JOBS.iter().zip(&times) {
        let m = median(t);
        writeln!(
            out,
            "| {jobs}{} | {m:.2} | {:.2} | {:.2}x |",
            if *jobs == 2 { " (default)" } else { "" },
            m / VERIFIED as f64,
            one / m
        )?;
    }
    writeln!(out)?;
    for id in &ids {
        bench.rt.block_on(delete_backup(&client, id))?;
    }
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}

/// One `verify --all --jobs N`; every backup must be `ok`.
fn verify_run(
    cli: &str,
    root: &Path,
    s3_file: &Path,
    passphrase_file: &Path,
    jobs: u32,
) -> Result<f64, BoxError> {
    let started = Instant::now();
    let out = Command::new(cli)
        .arg("--root")
        .arg(root)
        .arg("--s3")
        .arg(s3_file)
        .arg("--passphrase-file")
        .arg(passphrase_file)
        .args(["verify", "--all", "--jobs", &jobs.to_string()])
        .env_remove("SYNAPSE_BACKUP_S3")
        .env_remove("SYNAPSE_BACKUP_ROOT")
        .env_remove("SYNAPSE_BACKUP_PASSPHRASE")
        .env_remove("SYNAPSE_BACKUP_PASSPHRASE_FILE")
        .env_remove("RUST_LOG")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()?;
    let took = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ok = stdout.lines().filter(|l| l.contains(" ok (")).count();
    if !out.status.success() || ok != VERIFIED {
        return Err(err(format!(
            "verify --all --jobs {jobs}: {} with {ok} ok\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(took)
}

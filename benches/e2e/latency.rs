//! The `latency` section: loopback hides what a round trip costs, so our create and our
//! restore at each download setting (`RestoreOptions::download_chunk_mib` ×
//! `download_concurrency`: the aws CLI's range size and ranges in flight; a range no
//! smaller than the object is one streamed GET) run once straight to the server and once
//! through a userspace delay proxy (tests/support/delay_proxy.rs: every chunk delivered
//! half the round-trip time after it was read, in each direction, and a new
//! connection's first bytes one round trip later, as TCP's handshake would have them)
//! in front of the same server, alternating, medians of the rounds. `tc netem` would do
//! this in the kernel; it is not available everywhere (it is not on the machine these
//! numbers were first taken on).
//!
//! `Transfer::Library` runs its create and its restore the same way (its upload's parts
//! in flight and its ranged GETs, chosen per object: `READ_AHEAD_RANGE_MIB` ×
//! `LIBRARY_RANGES_IN_FLIGHT` read ahead, or `LIBRARY_RANGE_MIB` streamed, are the
//! library's own settings), and once more with the bench's read-ahead ranges
//! (`SYNAPSE_BACKUP_BENCH_READ_AHEAD`, default `3x16`, the library's old default).
//!
//! Knobs: `SYNAPSE_BACKUP_BENCH_RTT_MS` (default 20), `SYNAPSE_BACKUP_BENCH_DOWNLOADS`
//! (`concurrency x MiB` settings, default `1x1024,2x8,1x8,4x8,4x16,2x64`).

use super::delay_proxy::DelayProxy;
use super::{BUCKET, Bench, BoxError, Config, MB, PASSPHRASE, env_var, err, median, progress};

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use synapse_backup::{
    AWS_RANGED_CHUNK_MIB, AWS_RANGED_CONCURRENCY, AWS_STREAMED_CHUNK_MIB, BackupOptions,
    LIBRARY_RANGE_MIB, LIBRARY_RANGES_IN_FLIGHT, READ_AHEAD_RANGE_MIB, RestoreOptions,
    S3Parameters, Transfer, create_backup_with, restore_backup_with,
};

/// The added round-trip time (`SYNAPSE_BACKUP_BENCH_RTT_MS`, default 20 ms).
pub fn rtt() -> Duration {
    Duration::from_millis(
        env_var("SYNAPSE_BACKUP_BENCH_RTT_MS")
            .map(|v| {
                v.parse()
                    .expect("SYNAPSE_BACKUP_BENCH_RTT_MS: milliseconds")
            })
            .unwrap_or(20u64),
    )
}

/// A delay proxy in front of the bench's server.
pub fn proxy(bench: &Bench) -> Result<DelayProxy, BoxError> {
    let upstream: SocketAddr = bench
        .server
        .endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .map_err(|e| {
            err(format!(
                "the server's endpoint {}: {e}",
                bench.server.endpoint
            ))
        })?;
    Ok(DelayProxy::start(upstream, rtt())?)
}

/// The bench's S3 parameters with another endpoint and path (the bucket's prefix).
pub fn params(bench: &Bench, endpoint: &str, path: &str) -> Result<S3Parameters, BoxError> {
    let mut data = bench.server.relation_data();
    data.insert("endpoint".into(), endpoint.into());
    data.insert("path".into(), path.into());
    Ok(S3Parameters::from_relation_data(&data)?)
}

/// `concurrency x MiB` download settings.
fn settings() -> Vec<(u32, u32)> {
    env_var("SYNAPSE_BACKUP_BENCH_DOWNLOADS")
        .unwrap_or_else(|| "1x1024,2x8,1x8,4x8,4x16,2x64".into())
        .split(',')
        .filter_map(|s| {
            let (c, m) = s.trim().split_once('x')?;
            Some((c.trim().parse().ok()?, m.trim().parse().ok()?))
        })
        .collect()
}

fn setting_name(concurrency: u32, mib: u32) -> String {
    let default = match (concurrency, mib) {
        (1, AWS_STREAMED_CHUNK_MIB) => " (default where a range costs a whole read)",
        (AWS_RANGED_CONCURRENCY, AWS_RANGED_CHUNK_MIB) => " (default where the server seeks)",
        _ => "",
    };
    format!("{concurrency} x {mib} MiB{default}")
}

/// Medians (s) of one operation straight to the server and through the proxy.
#[derive(Default)]
struct Pair {
    direct: Vec<f64>,
    delayed: Vec<f64>,
}

impl Pair {
    fn row(&self, what: &str, setting: &str, bytes: u64) -> String {
        let (d, l) = (median(&self.direct), median(&self.delayed));
        format!(
            "| {what} | {setting} | {d:.2} s ({:.0} MB/s) | {l:.2} s ({:.0} MB/s) | {:+.2} s ({:.2}x) |",
            bytes as f64 / MB / d,
            bytes as f64 / MB / l,
            l - d,
            l / d
        )
    }
}

/// Times `run` once straight to the server and once through the proxy (the
/// parameters of each), into `pair`.
fn time_both<'p>(
    (direct, delayed): (&'p S3Parameters, &'p S3Parameters),
    pair: &mut Pair,
    mut run: impl FnMut(&'p S3Parameters) -> Result<(), BoxError>,
) -> Result<(), BoxError> {
    for (params, times) in [(direct, &mut pair.direct), (delayed, &mut pair.delayed)] {
        let started = Instant::now();
        run(params)?;
        times.push(started.elapsed().as_secs_f64());
    }
    Ok(())
}

/// Our restore in place of `id` through `params` with `options`.
fn restore_in_place(
    bench: &Bench,
    params: &S3Parameters,
    id: &synapse_backup::BackupId,
    options: &RestoreOptions,
) -> Result<(), BoxError> {
    bench.rt.block_on(restore_backup_with(
        &bench.container,
        params,
        PASSPHRASE,
        id,
        &bench.layout,
        options,
    ))?;
    Ok(())
}

/// The download alone of `key` with one setting (the aws CLI's config file as our
/// download writes it), through `endpoint`, to a pipe this process drains; seconds.
fn download_alone(
    bench: &Bench,
    params: &S3Parameters,
    endpoint: &str,
    key: &str,
    (concurrency, mib): (u32, u32),
) -> Result<f64, BoxError> {
    let transfer = BackupOptions::default()
        .part_size_mib(mib.max(5))
        .upload_concurrency(concurrency.max(1));
    let config = bench.base.join("latency-aws-config");
    fs::write(
        &config,
        synapse_backup::testing::internals::aws_config_file(params, &transfer)
            .map_err(|e| e.to_string())?,
    )?;
    let mut cmd = bench.our_aws(&config);
    cmd.args(["s3", "cp", "--only-show-errors", "--no-progress"])
        .args(["--endpoint-url", endpoint])
        .arg(format!("s3://{BUCKET}/{key}"))
        .arg("-");
    let started = Instant::now();
    Bench::drain(cmd)?;
    Ok(started.elapsed().as_secs_f64())
}

/// Runs the section on the bench's server (see the module's doc).
pub fn section(bench: &Bench, config: &Config, out: &mut String) -> Result<(), BoxError> {
    let proxy = proxy(bench)?;
    let path = super::PREFIX;
    let direct = params(bench, &bench.server.endpoint, path)?;
    let delayed = params(bench, &proxy.endpoint(), path)?;
    let settings = settings();
    let mut backup = Pair::default();
    let mut library_backup = Pair::default();
    let mut library_restore = Pair::default();
    let mut read_ahead_restore = Pair::default();
    let mut probed_restore = Pair::default();
    let mut probed = [Vec::new(), Vec::new()];
    let read_ahead = super::read_ahead_options(config);
    let library_restore_options = RestoreOptions::default().transfer(Transfer::Library);
    let library = config.options.clone().transfer(Transfer::Library);
    let mut restores: Vec<Pair> = settings.iter().map(|_| Pair::default()).collect();
    let mut downloads: Vec<Pair> = settings.iter().map(|_| Pair::default()).collect();
    let mut object = 0u64;
    for round in 1..=config.rounds {
        // One backup each way; the restores read the second (the same tree in the same
        // bucket: the proxy forwards to the same server), the first is deleted.
        let mut made = None;
        time_both((&direct, &delayed), &mut backup, |params| {
            let report = bench.rt.block_on(create_backup_with(
                &bench.container,
                params,
                PASSPHRASE,
                &bench.layout,
                &config.options,
            ))?;
            object = report.manifest.ciphertext_bytes;
            if let Some(old) = made.replace(report.id) {
                bench.delete_ours(&old);
            }
            Ok(())
        })?;
        // The same with the library's upload: made, timed and deleted.
        time_both((&direct, &delayed), &mut library_backup, |params| {
            let report = bench.rt.block_on(create_backup_with(
                &bench.container,
                params,
                PASSPHRASE,
                &bench.layout,
                &library,
            ))?;
            bench.delete_ours(&report.id);
            Ok(())
        })?;
        let id = made.ok_or_else(|| err("no backup"))?;
        progress(&format!(
            "round {round}: latency backup {:.2} s, +{} ms RTT {:.2} s; Transfer::Library {:.2} s, +RTT {:.2} s",
            backup.direct[round - 1],
            proxy.rtt.as_millis(),
            backup.delayed[round - 1],
            library_backup.direct[round - 1],
            library_backup.delayed[round - 1]
        ));
        let key = bench.client.object_key(id.as_str());
        for (setting, pair) in settings.iter().zip(downloads.iter_mut()) {
            for (params, endpoint, times) in [
                (&direct, bench.server.endpoint.clone(), &mut pair.direct),
                (&delayed, proxy.endpoint(), &mut pair.delayed),
            ] {
                times.push(download_alone(bench, params, &endpoint, &key, *setting)?);
            }
        }
        for ((c, m), pair) in settings.iter().zip(restores.iter_mut()) {
            let options = RestoreOptions::default()
                .download_concurrency(*c)
                .download_chunk_mib(*m);
            time_both((&direct, &delayed), pair, |params| {
                restore_in_place(bench, params, &id, &options)
            })?;
            progress(&format!(
                "round {round}: latency restore {} {:.2} s, delayed {:.2} s",
                setting_name(*c, *m),
                pair.direct[round - 1],
                pair.delayed[round - 1]
            ));
        }
        time_both((&direct, &delayed), &mut probed_restore, |params| {
            restore_in_place(bench, params, &id, &RestoreOptions::default())
        })?;
        progress(&format!(
            "round {round}: latency restore, the default (probed) {:.2} s, delayed {:.2} s",
            probed_restore.direct[round - 1],
            probed_restore.delayed[round - 1]
        ));
        let library_runs = [
            (
                "Transfer::Library",
                &library_restore_options,
                &mut library_restore,
            ),
            (
                "Transfer::Library read ahead",
                &read_ahead,
                &mut read_ahead_restore,
            ),
        ];
        for (what, options, pair) in library_runs {
            time_both((&direct, &delayed), pair, |params| {
                restore_in_place(bench, params, &id, options)
            })?;
            progress(&format!(
                "round {round}: latency restore {what} {:.2} s, delayed {:.2} s",
                pair.direct[round - 1],
                pair.delayed[round - 1]
            ));
        }
        // What the default's probe chose, on each path: asked here, after the timed
        // restores, since a probe the server answers late (moto) leaves it reading the
        // object in the background; the pause lets it finish before the next round.
        for (params, choices) in [&direct, &delayed].into_iter().zip(probed.iter_mut()) {
            let store = synapse_backup::S3Client::new(params)?;
            let chosen = bench.rt.block_on(
                synapse_backup::testing::internals::workload_download_settings(
                    &RestoreOptions::default(),
                    &store,
                    &key,
                    object,
                ),
            );
            choices.push(format!(
                "{} x {} MiB",
                chosen.upload_concurrency, chosen.part_size_mib
            ));
        }
        progress(&format!(
            "round {round}: the probe chose {} (loopback) / {} (delayed)",
            probed[0][round - 1],
            probed[1][round - 1]
        ));
        std::thread::sleep(std::time::Duration::from_secs(2));
        bench.delete_ours(&id);
    }
    for choices in &mut probed {
        choices.dedup();
    }
    writeln!(
        out,
        "### latency: straight to {} and through a delay proxy adding {} ms of round trip (median of {}; object {:.1} MB)\n",
        bench.server.kind,
        proxy.rtt.as_millis(),
        config.rounds,
        object as f64 / MB
    )?;
    writeln!(
        out,
        "| operation | settings | loopback | +{} ms RTT | latency's cost |\n|---|---|---|---|---|",
        proxy.rtt.as_millis()
    )?;
    let upload = format!(
        "{} parts of {} MiB in flight",
        config.options.upload_concurrency, config.options.part_size_mib
    );
    writeln!(out, "{}", backup.row("backup", &upload, object))?;
    for ((c, m), pair) in settings.iter().zip(&downloads) {
        writeln!(
            out,
            "{}",
            pair.row("download alone (to a pipe)", &setting_name(*c, *m), object)
        )?;
    }
    for ((c, m), pair) in settings.iter().zip(&restores) {
        writeln!(
            out,
            "{}",
            pair.row("restore in place", &setting_name(*c, *m), object)
        )?;
    }
    writeln!(
        out,
        "{}",
        probed_restore.row(
            "restore in place, the default (probed)",
            &format!(
                "chosen: {} (loopback) / {} (delayed)",
                probed[0].join(", "),
                probed[1].join(", ")
            ),
            object
        )
    )?;
    writeln!(
        out,
        "{}",
        library_backup.row(
            "backup, Transfer::Library",
            &format!(
                "{} parts of {} MiB in flight",
                library.library_parts_in_flight, library.library_part_mib
            ),
            object
        )
    )?;
    writeln!(
        out,
        "{}",
        library_restore.row(
            "restore in place, Transfer::Library",
            &format!(
                "ranges chosen per object: {LIBRARY_RANGES_IN_FLIGHT} x {READ_AHEAD_RANGE_MIB} MiB read ahead or {LIBRARY_RANGE_MIB} MiB streamed"
            ),
            object
        )
    )?;
    writeln!(
        out,
        "{}",
        read_ahead_restore.row(
            "restore in place, Transfer::Library read ahead",
            &format!(
                "{} x {} MiB ranged GETs",
                config.read_ahead.0, config.read_ahead.1
            ),
            object
        )
    )?;
    writeln!(
        out,
        "\nThrough the proxy: {} connections, {:.1} MB forwarded.\n",
        proxy.connections(),
        proxy.bytes() as f64 / MB
    )?;
    Ok(())
}

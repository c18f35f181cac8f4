//! The `transfer` section: a prototype of moving the S3 transfer out of the workload and
//! into the library. The workload would run only `tar | gpg` (here: the same commands
//! as our pipeline, as child processes, the way a streaming `Container::exec` would
//! give their stdout to the library) and the library would upload the ciphertext with
//! the SDK, several parts in flight, and for a restore stream one GET into
//! `gpg --decrypt | tar -x`. Measured in the same rounds as our create and restore
//! (the aws CLI in the workload) on the same server and tree, so the ratio says whether
//! the trait change (streaming exec) would pay for itself. Nothing here is checked the
//! way our restore checks a backup: it is the transfer's cost alone.
//!
//! Beside them, our restore with `Transfer::Library` (every check, in place): the
//! library's ranged GETs streamed into the workload's pipeline through
//! `Container::exec_streaming`, the shipped form of the prototype's download.

use super::{
    BUCKET, Bench, BoxError, Config, MB, PASSPHRASE, err, make_private_dir, median, progress,
    s3_server,
};

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use synapse_backup::{RestoreOptions, Transfer, restore_backup_with};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

/// The prototype's part size and parts in flight (restic uploads ~16 MiB packs several
/// at a time).
const PART: usize = 16 << 20;
const IN_FLIGHT: usize = 4;

fn sdk(bench: &Bench) -> Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(s3_server::REGION))
        .endpoint_url(&bench.server.endpoint)
        .credentials_provider(Credentials::new(
            &bench.server.access,
            &bench.server.secret,
            None,
            None,
            "bench",
        ))
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .force_path_style(true)
        .build();
    Client::from_conf(config)
}

/// `tar | gpg` of `list` read by this process and uploaded in `PART`-byte parts,
/// `IN_FLIGHT` at a time; returns the ciphertext's length.
async fn upload(bench: &Bench, client: &Client, list: &Path, key: &str) -> Result<u64, BoxError> {
    let gnupg = bench.base.join("proto-gnupg");
    let mut child = bench
        .tar_gpg_command(list, &gnupg)?
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdout = child.stdout.take().ok_or_else(|| err("no stdout"))?;
    // The pipe is read by a thread, a part at a time, as an exec stream would be.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
    let reader = std::thread::spawn(move || -> std::io::Result<()> {
        loop {
            let mut part = vec![0u8; PART];
            let mut filled = 0;
            while filled < PART {
                let n = stdout.read(&mut part[filled..])?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            part.truncate(filled);
            if filled == 0 || tx.blocking_send(part).is_err() || filled < PART {
                return Ok(());
            }
        }
    });
    let started = client
        .create_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await?;
    let upload_id = started
        .upload_id()
        .ok_or_else(|| err("no upload id"))?
        .to_string();
    let mut in_flight = FuturesUnordered::new();
    let mut done = Vec::new();
    let mut total = 0u64;
    let mut number = 0i32;
    while let Some(part) = rx.recv().await {
        total += part.len() as u64;
        number += 1;
        while in_flight.len() >= IN_FLIGHT {
            if let Some(part) = in_flight.next().await {
                done.push(part?);
            }
        }
        let send = client
            .upload_part()
            .bucket(BUCKET)
            .key(key)
            .upload_id(&upload_id)
            .part_number(number)
            .body(ByteStream::from(part))
            .send();
        let n = number;
        in_flight.push(async move {
            send.await.map(|out| {
                CompletedPart::builder()
                    .part_number(n)
                    .set_e_tag(out.e_tag)
                    .build()
            })
        });
    }
    while let Some(part) = in_flight.next().await {
        done.push(part?);
    }
    reader.join().map_err(|_| err("the reader panicked"))??;
    let output = child.wait_with_output()?;
    super::check_status("tar | gpg", &output)?;
    let _ = fs::remove_dir_all(&gnupg);
    done.sort_by_key(|p| p.part_number());
    client
        .complete_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .upload_id(&upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(done))
                .build(),
        )
        .send()
        .await?;
    Ok(total)
}

/// One streamed GET of `key` into `gpg --decrypt | tar -x -C dest`.
async fn download(bench: &Bench, client: &Client, key: &str, dest: &Path) -> Result<(), BoxError> {
    let gnupg = bench.base.join("proto-gnupg");
    let _ = fs::remove_dir_all(&gnupg);
    make_private_dir(&gnupg)?;
    let pass = bench.base.join("limit-passphrase");
    fs::write(&pass, PASSPHRASE)?;
    let mut child = Command::new("bash")
        .arg("-c")
        .arg("set -euo pipefail\ngpg --batch --no-tty --no-symkey-cache --pinentry-mode loopback --passphrase-file \"$1\" --decrypt 2>/dev/null | tar -x -C \"$2\"")
        .arg("bash")
        .arg(&pass)
        .arg(dest)
        .env("GNUPGHOME", &gnupg)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or_else(|| err("no stdin"))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        while let Some(chunk) = rx.blocking_recv() {
            stdin.write_all(&chunk)?;
        }
        Ok(())
    });
    let mut body = client
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await?
        .body;
    while let Some(chunk) = body.try_next().await? {
        if tx.send(chunk).await.is_err() {
            break;
        }
    }
    drop(tx);
    writer.join().map_err(|_| err("the writer panicked"))??;
    let output = child.wait_with_output()?;
    super::check_status("gpg --decrypt | tar -x", &output)?;
    let _ = fs::remove_dir_all(&gnupg);
    Ok(())
}

/// The section: per round, our create, the prototype's upload, our restore (in
/// place) and the prototype's download, alternating which goes first.
pub(super) fn section(bench: &Bench, config: &Config, out: &mut String) -> Result<(), BoxError> {
    writeln!(
        out,
        "### prototype: the S3 transfer in the library (SDK, {} MiB parts, {IN_FLIGHT} in flight; one streamed GET)\n",
        PART >> 20
    )?;
    let client = sdk(bench);
    // [our create, prototype upload, our restore, prototype download, our restore
    // with the library's transfer]
    let mut walls: [Vec<f64>; 5] = Default::default();
    let mut sizes = (0u64, 0u64);
    for round in 1..=config.rounds {
        let key = format!("prototype/round-{round}");
        let first_ours = round % 2 == 1;
        let mut report = None;
        for ours in [first_ours, !first_ours] {
            let started = Instant::now();
            if ours {
                report = Some(bench.ours_backup(&config.options)?);
                walls[0].push(started.elapsed().as_secs_f64());
            } else {
                // The tree as it is now (a create or restore closes the database's
                // -wal and -shm). No snapshot: the prototype tars the live files.
                let list = bench.members_file()?;
                sizes.1 = bench.rt.block_on(upload(bench, &client, &list, &key))?;
                walls[1].push(started.elapsed().as_secs_f64());
            }
        }
        let report = report.ok_or_else(|| err("no create"))?;
        sizes.0 = report.manifest.ciphertext_bytes;
        let dest = bench.base.join("prototype-restore");
        // The three restores in turn, each round starting with the next one.
        for turn in 0..3 {
            let which = (turn + round) % 3;
            let _ = fs::remove_dir_all(&dest);
            fs::create_dir_all(&dest)?;
            let started = Instant::now();
            match which {
                0 => {
                    bench.ours_restore(&report.id)?;
                    walls[2].push(started.elapsed().as_secs_f64());
                }
                1 => {
                    bench.rt.block_on(download(bench, &client, &key, &dest))?;
                    walls[3].push(started.elapsed().as_secs_f64());
                }
                _ => {
                    library_restore(bench, &report.id)?;
                    walls[4].push(started.elapsed().as_secs_f64());
                }
            }
        }
        let _ = fs::remove_dir_all(&dest);
        if round == config.rounds {
            range_sweep(bench, &report.id, out)?;
        }
        bench.delete_ours(&report.id);
        bench.delete_key(&key);
        progress(&format!(
            "round {round}: create {:.2} s, prototype upload {:.2} s, restore {:.2} s, prototype download {:.2} s, restore with Transfer::Library {:.2} s",
            walls[0][walls[0].len() - 1],
            walls[1][walls[1].len() - 1],
            walls[2][walls[2].len() - 1],
            walls[3][walls[3].len() - 1],
            walls[4][walls[4].len() - 1],
        ));
    }
    let m: Vec<f64> = walls.iter().map(|w| median(w)).collect();
    writeln!(
        out,
        "| median s, {} rounds | ours (aws CLI in the workload) | prototype (SDK in the library) | ours ÷ prototype |\n|---|---|---|---|",
        config.rounds
    )?;
    writeln!(
        out,
        "| backup | {:.2} | {:.2} | {:.2} |",
        m[0],
        m[1],
        m[0] / m[1]
    )?;
    writeln!(
        out,
        "| restore (ours: in place, every check; prototype: download, decrypt, extract) | {:.2} | {:.2} | {:.2} |",
        m[2],
        m[3],
        m[2] / m[3]
    )?;
    writeln!(
        out,
        "\n| median s, {} rounds | ours, Transfer::Workload | ours, Transfer::Library | workload ÷ library |\n|---|---|---|---|\n| restore (in place, every check) | {:.2} | {:.2} | {:.2} |",
        config.rounds,
        m[2],
        m[4],
        m[2] / m[4]
    )?;
    writeln!(
        out,
        "\nobjects: ours {:.1} MB, prototype {:.1} MB\n",
        sizes.0 as f64 / MB,
        sizes.1 as f64 / MB
    )?;
    Ok(())
}

/// Our restore in place with [`Transfer::Library`]: every check, the download by the
/// library streamed into the workload's pipeline.
fn library_restore(bench: &Bench, id: &synapse_backup::BackupId) -> Result<(), BoxError> {
    bench.rt.block_on(restore_backup_with(
        &bench.container,
        &bench.params,
        PASSPHRASE,
        id,
        &bench.layout,
        &RestoreOptions::default().transfer(Transfer::Library),
    ))?;
    Ok(())
}

/// The range sizes (MiB) and ranges in flight the sweep times.
const SWEEP: [(u64, usize); 7] = [(4, 4), (8, 1), (8, 4), (8, 8), (16, 4), (32, 2), (64, 2)];

/// Times reading our backup's object the way `Transfer::Library` does (ranged GETs
/// through `ObjectStore::get_object_range`, several in flight, in order, into a sink)
/// for each of [`SWEEP`], twice each, and writes the medians: which range size and
/// concurrency the library should use on this server.
fn range_sweep(
    bench: &Bench,
    id: &synapse_backup::BackupId,
    out: &mut String,
) -> Result<(), BoxError> {
    use synapse_backup::ObjectStore;
    let store: &dyn ObjectStore = &bench.client;
    let key = store.object_key(id.as_str());
    let size = bench.object_size(&key);
    writeln!(
        out,
        "range sweep (GET alone, {:.1} MB, into a sink): | range MiB | in flight | median s | MB/s |\n|---|---|---|---|",
        size as f64 / MB
    )?;
    for (mib, in_flight) in SWEEP {
        let range = mib << 20;
        let mut times = Vec::new();
        for _ in 0..2 {
            let started = Instant::now();
            let key = key.as_str();
            bench.rt.block_on(async {
                let ranges =
                    (0..size.div_ceil(range)).map(|i| (i * range, range.min(size - i * range)));
                let mut gets = futures_util::stream::iter(ranges)
                    .map(|(offset, length)| store.get_object_range(key, offset, length))
                    .buffered(in_flight);
                let mut total = 0_u64;
                while let Some(bytes) = gets.next().await {
                    total += bytes?.len() as u64;
                }
                if total == size {
                    Ok(())
                } else {
                    Err(err(format!("read {total} of {size} bytes")))
                }
            })?;
            times.push(started.elapsed().as_secs_f64());
        }
        let m = median(&times);
        writeln!(
            out,
            "| {mib} | {in_flight} | {m:.2} | {:.0} |",
            size as f64 / MB / m
        )?;
        progress(&format!("range sweep: {mib} MiB x {in_flight}: {m:.2} s"));
    }
    writeln!(out)?;
    Ok(())
}

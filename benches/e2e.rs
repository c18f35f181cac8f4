//! End-to-end benchmark of `create_backup` and `restore_backup` against the reference
//! pipeline (the Python charm's `tar | gpg --symmetric | aws s3 cp`) and against restic,
//! on a deterministic synthetic Synapse tree and two S3 servers on 127.0.0.1, one after
//! the other, each in a separate process so that its CPU and memory are not counted as
//! ours: s3s-fs (this binary started again with `SYNAPSE_BACKUP_BENCH_SERVE=1`) and moto
//! (`moto_server`, which `scripts/tools.sh` installs). The server sections (`backup`,
//! `limits`, `restore`, `restic`, `incremental`, `sweep`, `latency`, `catalog`) run on
//! each server; `scale`, `pebble` and `synapse` on the first only. A closing table
//! compares the servers.
//!
//! Method. The tree: ~81% incompressible local media with log-normal sizes and
//! Synapse's sharded paths, ~4% thumbnails, ~10% SQLite (WAL mode, event JSON, a live
//! `-wal`), ~5% remote media and url cache that must not be backed up. The reference
//! runs as the Python charm does, in a private `HOME`/`GNUPGHOME`/`AWS_CONFIG_FILE`:
//! `aws configure set` (addressing style, `max_concurrent_requests 1`), the passphrase
//! file, `du -bsc`, then `set -euxo pipefail; tar -c … | gpg … --symmetric | aws s3 cp
//! --expected-size=N - s3://…`; its restore deletes the media dir, then `aws s3 cp … - |
//! gpg --decrypt | tar -x -C /` (back into the tree: the members carry its absolute
//! path). Ours is `create_backup_with` / `restore_backup_with` through `LocalContainer`;
//! the `backup` section runs ours a second time each round with `Transfer::Library`
//! (the workload's `tar | gpg | checksum` writes to its standard output, this process
//! uploads it) and prints its ratio to the workload's aws CLI upload.
//! Variants alternate A B A B; wall time is the whole operation; CPU is the
//! `cutime`/`cstime` delta of this process (the pipeline's processes once reaped);
//! "pipeline peak RSS" is the largest sum of the RSS of this process's descendants
//! (the S3 server's excepted), sampled from `/proc`; "our RSS" is this process's peak
//! (VmHWM reset before each run, and sampled). The stage limits pipe their output to
//! this process, which discards it (GNU tar skips reading files when it writes to
//! `/dev/null` itself).
//!
//! Run it with `./scripts/bench` (or `cargo bench --bench e2e` with the aws CLI on
//! PATH). Knobs (environment):
//! - `SYNAPSE_BACKUP_BENCH_BYTES`: tree size, e.g. `256M`, `1G` (default `1G`);
//! - `SYNAPSE_BACKUP_BENCH_ROUNDS`: rounds of A B alternation (default 3);
//! - `SYNAPSE_BACKUP_BENCH_SCALE`: media file counts of the scale check (default
//!   `10000,100000`; `0` skips it); `SYNAPSE_BACKUP_BENCH_SCALE_STEPS` what it runs
//!   after the full create (default `verify,restore,extract,incremental`); each
//!   command there is the CLI in a fresh process, its own peak RSS reported
//!   (`benches/e2e/scale.rs`);
//! - `SYNAPSE_BACKUP_BENCH_ONLY`: sections to run among
//!   `backup,limits,restore,restic,incremental,scale,pebble,synapse,transfer,catalog`
//!   (default all), plus `sweep` and `latency` (a restore per download setting, round and
//!   path: run it with a small tree, e.g. `SYNAPSE_BACKUP_BENCH_BYTES=256M`);
//! - `SYNAPSE_BACKUP_BENCH_RTT_MS`: the round trip the `latency` and `catalog` sections
//!   add through their delay proxy (default 20);
//! - `SYNAPSE_BACKUP_BENCH_DOWNLOADS`: the `latency` section's download settings,
//!   `concurrency x MiB` (default `1x1024,2x8,1x8,4x8,4x16,2x64`);
//! - `SYNAPSE_BACKUP_BENCH_SERVERS`: `s3s-fs`, `moto` or both, in order (default
//!   `s3s-fs,moto`);
//! - `SYNAPSE_BACKUP_BENCH_PROBES`: messages sent per idle measurement of the `synapse`
//!   section (default 300).
//!
//! The `restore` section also restores with a target dir (`extract_backup_with`, as
//! `restore --target`), each round right after an in-place restore so that the two are
//! compared at the same point of the run, and breaks the restore down into its stage limits, on the same
//! object: the download alone (our download settings, to a pipe), `gpg --decrypt` alone
//! (of a local copy) and `tar -x` alone (of the decrypted archive).
//!
//! The `restic` section (restic from Debian's package, which `scripts/restic.sh`
//! installs; the section fails with the install command when it is missing) keeps a
//! restic repository in the same bucket (`s3:<endpoint>/<bucket>/restic-N`, the
//! password in `RESTIC_PASSWORD`, never in argv) and runs, beside ours: a full backup of
//! the backup set (remote media excluded from both), a second after +10 MiB of new
//! media (ours `--incremental`), a restore to a target dir (ours `--target`, then the
//! same with `Transfer::Library`), and ours' full backup again with `Transfer::Library`
//! (made first, then deleted); it prints restic's time ÷ ours and the bucket's bytes
//! after the two backups.
//!
//! The `incremental` section makes a full backup with an index, then 6 increments of
//! +1 % new local media each (one file in 400 deleted at the 3rd and 5th), each beside
//! a keys-and-database-only backup (the media moved aside for it): it prints each
//! pack's object size against the new bytes, and its time against the
//! keys-and-database backup's plus the new bytes at the upload-alone rate (from the
//! `limits` section, else measured); then it restores the newest of the chain of 7
//! against a full backup of the same tree, alternating, both checked against the tree,
//! each with the workload's download and with `Transfer::Library`. The tree is put back
//! afterwards.
//!
//! The `pebble` section (as root, with the daemon `scripts/pebble.sh` installs) runs
//! create and restore through `PebbleContainer` and through `LocalContainer`, alternating,
//! at least 5 rounds each, on the same tree and server: the data never crosses Pebble's
//! socket, so the two should take the same time.
//!
//! The `latency` section (benches/e2e/latency.rs) runs our create and our restore at
//! each download setting straight to the server and through a userspace proxy that adds
//! a round-trip time (tc netem's job, done in this process); the `catalog` section
//! (benches/e2e/catalog.rs) times `list` of 1,000 legacy backups beside the bare
//! listing, and `verify --all` of 20 small backups at `--jobs` 1, 2 and 4 (the CLI).
//!
//! The `synapse` section (as root, with the Synapse `scripts/synapse.sh` installs) runs a
//! real homeserver as its own user, with a media store of the tree's size, and measures
//! the client API's latency (sending a message over one keep-alive connection, median
//! and p99) while idle and while a backup of it runs, at each [`Priority`] worth
//! comparing (`BackupOptions::priority`: the caller's own, the default, the lowest) and
//! with the upload capped (`BackupOptions::max_bandwidth`).
//! - `SYNAPSE_BACKUP_BENCH_SWEEP`: `concurrency x part MiB` settings for the sweep
//!   section, e.g. `1x8,4x8,4x16,8x8` (setting it turns the sweep on);
//!   `SYNAPSE_BACKUP_BENCH_SWEEP_TRANSFER=library` sweeps `Transfer::Library`'s upload
//!   (`BackupOptions::library_parts_in_flight` x `library_part_mib`) instead of the aws
//!   CLI's;
//! - `SYNAPSE_BACKUP_BENCH_LIBRARY`: `in flight x part MiB` of `Transfer::Library`'s
//!   upload in the `backup` section (default the library's);
//! - `SYNAPSE_BACKUP_BENCH_LIBRARY_RANGES`: `in flight x range MiB` settings the
//!   `restore` section times the library's download alone with (default
//!   `2x1024,2x64,3x16,12x4`; ranges of up to `READ_AHEAD_MAX_MIB` read ahead, as the
//!   library's restore reads them);
//! - `SYNAPSE_BACKUP_BENCH_READ_AHEAD`: `in flight x range MiB` of the `Transfer::Library`
//!   restore the `restore` and `restic` sections run beside the default one
//!   (`RestoreOptions::library_ranges_in_flight` and `library_range_mib`; default `3x16`,
//!   the library's default before 5 December 2026, against which `12x4` was chosen);
//! - `SYNAPSE_BACKUP_BENCH_CONCURRENCY`, `SYNAPSE_BACKUP_BENCH_PART_MIB`,
//!   `SYNAPSE_BACKUP_BENCH_COMPRESSION` (`none`, `zlib-1` … `zlib-9`, `zstd-1` …
//!   `zstd-19`): override our options (default: `BackupOptions::default()`);
//! - `SYNAPSE_BACKUP_BENCH_DIR`: where the temp dir goes (default `/dev/shm` when it
//!   has room for ~10× the tree, else the system temp dir);
//! - `SYNAPSE_BACKUP_BENCH_TRACE=1`: print the commands alive as they change, with the
//!   pipeline's RSS, to see where the time goes;
//! - `SYNAPSE_BACKUP_BENCH_SEED`, `SYNAPSE_BACKUP_BENCH_SAMPLE_MS` (default 25);
//! - `SYNAPSE_BACKUP_BENCH_LOG`: a tracing filter (e.g. `synapse_backup=debug`) to see
//!   the library's steps with timestamps on stderr.
//!
//! The last line on stdout is `backup speedup: <ratio>x`.

#![allow(
    clippy::too_many_lines,
    reason = "the 80-line rule is for the library; a scenario here reads top to bottom"
)]

#[path = "e2e/catalog.rs"]
mod catalog;
#[path = "../tests/support/delay_proxy.rs"]
mod delay_proxy;
#[path = "e2e/latency.rs"]
mod latency;
#[path = "../tests/support/pebble_daemon.rs"]
mod pebble_daemon;
#[path = "../tests/support/s3_server.rs"]
mod s3_server;
#[path = "e2e/scale.rs"]
mod scale;
#[path = "../tests/support/synapse_server.rs"]
mod synapse_server;
#[path = "../tests/support/synapse_tree.rs"]
mod synapse_tree;
#[path = "e2e/transfer.rs"]
mod transfer;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use synapse_backup::{
    BackupId, BackupKind, BackupOptions, Compression, ExtractTarget, IoPriority, Layout,
    LocalContainer, Priority, RestoreOptions, S3Client, S3Parameters, Transfer, create_backup_with,
    delete_backup, extract_backup_with, restore_backup_with,
};

use synapse_tree::{Rng, SynapseTree, TreeSpec, write_random};

const SERVE_ENV: &str = "SYNAPSE_BACKUP_BENCH_SERVE";
const PASSPHRASE: &str = "bench: correct horse battery staple";
const BUCKET: &str = "synapse-backups";
const PREFIX: &str = "synapse/backups";
const MB: f64 = 1_000_000.0;

fn main() {
    if std::env::var_os(SERVE_ENV).is_some() {
        serve();
        return;
    }
    if let Some(filter) = env_var("SYNAPSE_BACKUP_BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let config = Config::from_env();
    if let Err(e) = run(&config) {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------
// Configuration

struct Config {
    bytes: u64,
    rounds: usize,
    scale: Vec<usize>,
    sections: Vec<String>,
    servers: Vec<String>,
    sweep: Vec<(u32, u32)>,
    /// The sweep times `Transfer::Library`'s upload settings instead of the aws CLI's.
    sweep_library: bool,
    /// `(in flight, range MiB)` of the library download alone in the restore section.
    library_ranges: Vec<(u32, u32)>,
    /// `in flight x range MiB` of the read-ahead `Transfer::Library` restore.
    read_ahead: (u32, u32),
    options: BackupOptions,
    dir: Option<PathBuf>,
    seed: u64,
    sample: Duration,
}

/// `AxB` as two numbers.
fn pair(text: &str) -> Option<(u32, u32)> {
    let (a, b) = text.trim().split_once('x')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `1073741824`, `256M`, `1G`, `512K` (binary units).
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&t[..i], t[i..].trim().to_ascii_uppercase()),
        None => (t, String::new()),
    };
    let n: u64 = digits.parse().ok()?;
    let shift = match unit.trim_end_matches("IB").trim_end_matches('B') {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

impl Config {
    fn from_env() -> Config {
        let bytes = env_var("SYNAPSE_BACKUP_BENCH_BYTES")
            .map(|v| parse_size(&v).expect("SYNAPSE_BACKUP_BENCH_BYTES: a size like 256M or 1G"))
            .unwrap_or(1 << 30)
            .max(8 << 20);
        let rounds = env_var("SYNAPSE_BACKUP_BENCH_ROUNDS")
            .map(|v| v.parse().expect("SYNAPSE_BACKUP_BENCH_ROUNDS: a number"))
            .unwrap_or(3usize)
            .max(1);
        let scale = env_var("SYNAPSE_BACKUP_BENCH_SCALE")
            .unwrap_or_else(|| "10000,100000".into())
            .split(',')
            .filter_map(|s| s.trim().parse::<usize>().ok())
            .filter(|n| *n > 0)
            .collect();
        let sweep: Vec<(u32, u32)> = env_var("SYNAPSE_BACKUP_BENCH_SWEEP")
            .unwrap_or_default()
            .split(',')
            .filter_map(|s| {
                let (c, p) = s.trim().split_once('x')?;
                Some((c.trim().parse().ok()?, p.trim().parse().ok()?))
            })
            .collect();
        let mut sections: Vec<String> = env_var("SYNAPSE_BACKUP_BENCH_ONLY")
            .unwrap_or_else(|| {
                "backup,limits,restore,restic,incremental,scale,pebble,synapse,transfer,catalog"
                    .into()
            })
            .split(',')
            .map(|s| s.trim().to_string())
            .collect();
        let servers: Vec<String> = env_var("SYNAPSE_BACKUP_BENCH_SERVERS")
            .unwrap_or_else(|| "s3s-fs,moto".into())
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        for s in &servers {
            assert!(
                s == "s3s-fs" || s == "moto",
                "SYNAPSE_BACKUP_BENCH_SERVERS: s3s-fs and/or moto, not {s:?}"
            );
        }
        if !sweep.is_empty() && !sections.iter().any(|s| s == "sweep") {
            sections.push("sweep".into());
        }
        let mut options = BackupOptions::default();
        if let Some(c) = env_var("SYNAPSE_BACKUP_BENCH_CONCURRENCY") {
            options.upload_concurrency = c.parse().expect("SYNAPSE_BACKUP_BENCH_CONCURRENCY");
        }
        if let Some(c) = env_var("SYNAPSE_BACKUP_BENCH_COMPRESSION") {
            options.compression = c.trim().parse::<Compression>().expect(
                "SYNAPSE_BACKUP_BENCH_COMPRESSION: none, zlib-1 … zlib-9 or zstd-1 … zstd-19",
            );
        }
        if let Some(p) = env_var("SYNAPSE_BACKUP_BENCH_PART_MIB") {
            options.part_size_mib = p.parse().expect("SYNAPSE_BACKUP_BENCH_PART_MIB");
        }
        if let Some(l) = env_var("SYNAPSE_BACKUP_BENCH_LIBRARY") {
            let (c, p) = pair(&l).expect("SYNAPSE_BACKUP_BENCH_LIBRARY: in flight x part MiB");
            options.library_parts_in_flight = c;
            options.library_part_mib = p;
        }
        let library_ranges = env_var("SYNAPSE_BACKUP_BENCH_LIBRARY_RANGES")
            .unwrap_or_else(|| "2x1024,2x64,3x16,12x4".into())
            .split(',')
            .filter_map(pair)
            .collect();
        Config {
            bytes,
            rounds,
            scale,
            sections,
            servers,
            sweep,
            sweep_library: env_var("SYNAPSE_BACKUP_BENCH_SWEEP_TRANSFER").as_deref()
                == Some("library"),
            library_ranges,
            read_ahead: pair(
                &env_var("SYNAPSE_BACKUP_BENCH_READ_AHEAD").unwrap_or_else(|| "3x16".into()),
            )
            .expect("SYNAPSE_BACKUP_BENCH_READ_AHEAD: in flight x range MiB"),
            options,
            dir: env_var("SYNAPSE_BACKUP_BENCH_DIR").map(PathBuf::from),
            seed: env_var("SYNAPSE_BACKUP_BENCH_SEED")
                .and_then(|s| s.parse().ok())
                .unwrap_or(7),
            sample: Duration::from_millis(
                env_var("SYNAPSE_BACKUP_BENCH_SAMPLE_MS")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(25u64)
                    .max(5),
            ),
        }
    }

    fn section(&self, name: &str) -> bool {
        self.sections.iter().any(|s| s == name)
    }
}

type BoxError = Box<dyn std::error::Error>;

fn err(message: impl Into<String>) -> BoxError {
    message.into().into()
}

// ---------------------------------------------------------------------------------
// The S3 server process

/// Server mode: an s3s-fs server on 127.0.0.1 with the credentials and root from the
/// environment; prints its endpoint, then serves until stdin closes (the parent died
/// or is done).
fn serve() {
    let root = PathBuf::from(std::env::var("SYNAPSE_BACKUP_BENCH_S3_ROOT").expect("root"));
    let access = std::env::var("SYNAPSE_BACKUP_BENCH_S3_ACCESS").expect("access key");
    let secret = std::env::var("SYNAPSE_BACKUP_BENCH_S3_SECRET").expect("secret key");
    let server = s3_server::TestS3Server::start_blocking(s3_server::ServerOptions {
        root: Some(root),
        credentials: Some((access, secret)),
        ..s3_server::ServerOptions::default()
    });
    server.create_bucket(BUCKET);
    println!("endpoint {}", server.endpoint);
    std::io::stdout().flush().expect("stdout");
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(server);
    std::thread::sleep(Duration::from_millis(200));
}

struct ServerProcess {
    child: Child,
    /// `s3s-fs` or `moto`.
    kind: &'static str,
    endpoint: String,
    access: String,
    secret: String,
}

impl ServerProcess {
    fn start(root: &Path) -> Result<ServerProcess, BoxError> {
        let access = s3_server::random_hex(20).to_uppercase();
        let secret = s3_server::random_hex(40);
        let mut child = Command::new(std::env::current_exe()?)
            .env(SERVE_ENV, "1")
            .env("SYNAPSE_BACKUP_BENCH_S3_ROOT", root)
            .env("SYNAPSE_BACKUP_BENCH_S3_ACCESS", &access)
            .env("SYNAPSE_BACKUP_BENCH_S3_SECRET", &secret)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().ok_or_else(|| err("no stdout"))?)
            .read_line(&mut line)?;
        let endpoint = line
            .trim()
            .strip_prefix("endpoint ")
            .ok_or_else(|| err(format!("the S3 server process said {line:?}")))?
            .to_string();
        Ok(ServerProcess {
            child,
            kind: "s3s-fs",
            endpoint,
            access,
            secret,
        })
    }

    /// moto (`scripts/tools.sh` installs it) on a free port of 127.0.0.1, its log in
    /// `log`; the bucket is made through the aws CLI once moto answers.
    fn start_moto(aws: &str, log: &Path) -> Result<ServerProcess, BoxError> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let moto = which("moto_server")?;
        let log_file = fs::File::create(log)?;
        let child = Command::new(moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()?;
        let mut server = ServerProcess {
            child,
            kind: "moto",
            endpoint: format!("http://127.0.0.1:{port}"),
            access: s3_server::random_hex(20).to_uppercase(),
            secret: s3_server::random_hex(40),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = Command::new(aws)
                .args(["s3api", "create-bucket", "--bucket", BUCKET])
                .args(["--endpoint-url", &server.endpoint])
                .env("AWS_ACCESS_KEY_ID", &server.access)
                .env("AWS_SECRET_ACCESS_KEY", &server.secret)
                .env("AWS_DEFAULT_REGION", s3_server::REGION)
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .output()?;
            if out.status.success() {
                return Ok(server);
            }
            if Instant::now() > deadline || server.child.try_wait()?.is_some() {
                return Err(err(format!(
                    "moto did not start on {} (log: {})",
                    server.endpoint,
                    log.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn relation_data(&self) -> HashMap<String, String> {
        [
            ("access-key", self.access.as_str()),
            ("secret-key", self.secret.as_str()),
            ("bucket", BUCKET),
            ("endpoint", self.endpoint.as_str()),
            ("region", s3_server::REGION),
            ("s3-uri-style", "path"),
            ("path", PREFIX),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.kind == "moto" {
            let _ = self.child.kill();
            let _ = self.child.wait();
            return;
        }
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------
// /proc sampling: CPU and memory of the pipeline's process tree and of this process

fn page_size() -> u64 {
    Command::new("getconf")
        .arg("PAGESIZE")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(4096)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The fields of `/proc/<pid>/stat` used here.
struct Stat {
    comm: String,
    ppid: u32,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
    rss_pages: u64,
}

fn read_stat(pid: &str) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    let rest: Vec<&str> = text[close + 2..].split(' ').collect();
    // rest[0] is field 3 (state).
    let field = |n: usize| rest.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        comm,
        ppid: u32::try_from(field(4)?).ok()?,
        utime: field(14)?,
        stime: field(15)?,
        cutime: field(16)?,
        cstime: field(17)?,
        rss_pages: field(24)?,
    })
}

fn self_status_kib(key: &str) -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[derive(Default)]
struct SampleState {
    active: bool,
    peak_tree: u64,
    peak_self: u64,
    /// pid → (comm, CPU ticks last seen) of every descendant seen in this phase.
    cpu: HashMap<u32, (String, u64)>,
    /// Print the commands alive whenever they change (`SYNAPSE_BACKUP_BENCH_TRACE`).
    trace: bool,
    since: Option<Instant>,
    last_comms: String,
}

struct Sampler {
    state: Arc<Mutex<SampleState>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    page: u64,
    tick: f64,
    exclude: u32,
}

/// What one measured run cost.
#[derive(Clone, Default)]
struct Cost {
    wall: f64,
    user: f64,
    sys: f64,
    self_cpu: f64,
    server_cpu: f64,
    peak_tree: u64,
    peak_self: u64,
    by_command: BTreeMap<String, f64>,
}

impl Sampler {
    fn start(exclude: u32, interval: Duration) -> Sampler {
        let state = Arc::new(Mutex::new(SampleState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let page = page_size();
        let (s, st) = (state.clone(), stop.clone());
        let me = std::process::id();
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                if s.lock().unwrap().active {
                    sample_once(me, exclude, page, &s);
                }
                std::thread::sleep(interval);
            }
        });
        Sampler {
            state,
            stop,
            thread: Some(thread),
            page,
            tick: clock_ticks(),
            exclude,
        }
    }

    /// Runs `f`, measuring wall time, the CPU of the children it waited for, the peak
    /// RSS of this process's descendants (the S3 server's excepted) and of this process.
    fn measure<T>(&self, f: impl FnOnce() -> T) -> (T, Cost) {
        // Reset this process's VmHWM (peak RSS) so that it covers this run only.
        let _ = fs::write("/proc/self/clear_refs", "5");
        let me = std::process::id().to_string();
        let server = self.exclude.to_string();
        let before = read_stat(&me).expect("own stat");
        let server_before = read_stat(&server).map_or(0, |s| s.utime + s.stime);
        {
            let mut s = self.state.lock().unwrap();
            *s = SampleState {
                active: true,
                trace: env_var("SYNAPSE_BACKUP_BENCH_TRACE").is_some(),
                since: Some(Instant::now()),
                ..SampleState::default()
            };
        }
        let started = Instant::now();
        let out = f();
        let wall = started.elapsed().as_secs_f64();
        sample_once(std::process::id(), self.exclude, self.page, &self.state);
        let after = read_stat(&me).expect("own stat");
        let server_after = read_stat(&server).map_or(0, |s| s.utime + s.stime);
        let mut s = self.state.lock().unwrap();
        s.active = false;
        let ticks = |t: u64| t as f64 / self.tick;
        let mut by_command = BTreeMap::new();
        for (comm, t) in s.cpu.values() {
            *by_command.entry(comm.clone()).or_insert(0.0) += ticks(*t);
        }
        let hwm = self_status_kib("VmHWM:") * 1024;
        let cost = Cost {
            wall,
            user: ticks(after.cutime - before.cutime),
            sys: ticks(after.cstime - before.cstime),
            self_cpu: ticks(after.utime + after.stime - before.utime - before.stime),
            server_cpu: ticks(server_after.saturating_sub(server_before)),
            peak_tree: s.peak_tree,
            peak_self: s.peak_self.max(hwm),
            by_command,
        };
        (out, cost)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn sample_once(me: u32, exclude: u32, page: u64, state: &Mutex<SampleState>) {
    let mut stats: HashMap<u32, Stat> = HashMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Ok(pid) = name.parse::<u32>() else {
            continue;
        };
        if let Some(stat) = read_stat(name) {
            stats.insert(pid, stat);
        }
    }
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (pid, s) in &stats {
        children.entry(s.ppid).or_default().push(*pid);
    }
    let mut tree_rss = 0;
    let mut seen = Vec::new();
    let mut stack = children.get(&me).cloned().unwrap_or_default();
    while let Some(pid) = stack.pop() {
        if pid == exclude {
            continue;
        }
        if let Some(s) = stats.get(&pid) {
            tree_rss += s.rss_pages * page;
            seen.push((pid, s.comm.clone(), s.utime + s.stime));
        }
        if let Some(c) = children.get(&pid) {
            stack.extend(c);
        }
    }
    let own = stats.get(&me).map_or(0, |s| s.rss_pages * page);
    let mut st = state.lock().unwrap();
    if st.trace {
        let mut comms: Vec<&str> = seen.iter().map(|(_, c, _)| c.as_str()).collect();
        comms.sort_unstable();
        comms.dedup();
        let now = comms.join(" ");
        if now != st.last_comms {
            eprintln!(
                "[trace] {:7.2} s  {:6.1} MB  {now}",
                st.since.map_or(0.0, |t| t.elapsed().as_secs_f64()),
                tree_rss as f64 / MB
            );
            st.last_comms = now;
        }
    }
    st.peak_tree = st.peak_tree.max(tree_rss);
    st.peak_self = st.peak_self.max(own);
    for (pid, comm, t) in seen {
        st.cpu.insert(pid, (comm, t));
    }
}

// ---------------------------------------------------------------------------------
// The synthetic tree

/// What was generated.
#[derive(Default, Clone)]
struct TreeFacts {
    media_files: usize,
    media_bytes: u64,
    thumbnails: usize,
    thumbnail_bytes: u64,
    db_bytes: u64,
    remote_files: usize,
    remote_bytes: u64,
}

fn uniform(rng: &mut Rng) -> f64 {
    ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

fn normal(rng: &mut Rng) -> f64 {
    let (u, v) = (uniform(rng), uniform(rng));
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// A Synapse media id: 24 ASCII letters.
fn media_id(rng: &mut Rng) -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    (0..24)
        .map(|_| LETTERS[(rng.next_u64() % LETTERS.len() as u64) as usize] as char)
        .collect()
}

fn sharded(base: &Path, id: &str) -> PathBuf {
    base.join(&id[..2]).join(&id[2..4]).join(&id[4..])
}

/// Media sizes like a real homeserver's: log-normal around ~160 KiB (mean ~500 KiB),
/// from 1 KiB to 48 MiB.
fn media_size(rng: &mut Rng) -> u64 {
    let s = (160.0 * 1024.0) * (1.45 * normal(rng)).exp();
    s.clamp(1024.0, 48.0 * 1024.0 * 1024.0) as u64
}

/// Writes local media (with thumbnails for the images) totalling about `budget` bytes.
fn write_local_media(media: &Path, budget: u64, rng: &mut Rng, facts: &mut TreeFacts) {
    let content = media.join("local_content");
    let thumbs = media.join("local_thumbnails");
    while facts.media_bytes + facts.thumbnail_bytes < budget {
        let left = budget - facts.media_bytes - facts.thumbnail_bytes;
        let mut size = media_size(rng).min(left);
        if left - size < 1024 {
            size = left;
        }
        let id = media_id(rng);
        let path = sharded(&content, &id);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        write_random(&path, size, rng);
        facts.media_files += 1;
        facts.media_bytes += size;
        // Seven in ten uploads are images: Synapse keeps a crop and a scaled thumbnail.
        if rng.next_u64() % 10 < 7 && facts.media_bytes + facts.thumbnail_bytes < budget {
            let dir = sharded(&thumbs, &id);
            fs::create_dir_all(&dir).unwrap();
            for (name, t) in [
                ("32-32-image-jpeg-crop", 600 + rng.next_u64() % 2500),
                (
                    "320-240-image-jpeg-scale",
                    (size / 8).clamp(4 << 10, 60 << 10),
                ),
            ] {
                write_random(&dir.join(name), t, rng);
                facts.thumbnails += 1;
                facts.thumbnail_bytes += t;
            }
        }
    }
}

/// Remote media and url cache: present in the tree, never backed up.
fn write_remote_media(media: &Path, budget: u64, seed: u64) -> (usize, u64) {
    let mut rng = Rng::new(seed ^ 0x5EED_0F4E_307E);
    let (mut files, mut bytes) = (0, 0);
    while bytes < budget {
        let size = media_size(&mut rng).min(budget - bytes).max(1);
        let id = media_id(&mut rng);
        let path = sharded(&media.join("remote_content/matrix.org"), &id);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        write_random(&path, size, &mut rng);
        files += 1;
        bytes += size;
        if rng.next_u64().is_multiple_of(2) {
            let dir = sharded(&media.join("remote_thumbnail/matrix.org"), &id);
            fs::create_dir_all(&dir).unwrap();
            let t = (size / 8).clamp(2 << 10, 60 << 10);
            write_random(&dir.join("320-240-image-jpeg-scale"), t, &mut rng);
            files += 1;
            bytes += t;
        }
    }
    let cache = media.join("url_cache/2026-11-26");
    fs::create_dir_all(&cache).unwrap();
    fs::write(cache.join("aBcDeFgHiJkLmNoPqRsTuVwX"), b"cached page").unwrap();
    (files, bytes + 11)
}

/// Fills `homeserver.db` (WAL mode) with Synapse-like event JSON up to `target` bytes
/// and leaves a live `-wal` tail, as on a running server.
const MAKE_DB: &str = r#"
import base64, json, os, random, sqlite3, sys
path, target, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(seed)
syll = ['ka', 'lo', 'mi', 'ne', 'ru', 'to', 'sa', 'vi', 'de', 'po', 'an', 'el', 'is', 'or', 'um', 'th', 'ch', 'qu', 'be', 'ly']
words = sorted({''.join(rnd.choices(syll, k=rnd.randint(1, 4))) for _ in range(3000)})
def b64(n):
    return base64.urlsafe_b64encode(rnd.randbytes(n)).rstrip(b'=').decode()
users = ['@%s:example.test' % ''.join(rnd.choices(words, k=2)) for _ in range(400)]
rooms = ['!%s:example.test' % b64(12) for _ in range(60)]
c = sqlite3.connect(path)
c.execute('PRAGMA journal_mode=WAL')
c.execute('PRAGMA synchronous=OFF')
c.executescript('''
CREATE TABLE IF NOT EXISTS event_json (event_id TEXT NOT NULL, room_id TEXT NOT NULL,
  internal_metadata TEXT NOT NULL, json TEXT NOT NULL, format_version INTEGER, UNIQUE (event_id));
CREATE TABLE IF NOT EXISTS events_meta (stream_ordering INTEGER PRIMARY KEY, topological_ordering BIGINT,
  event_id TEXT, type TEXT, room_id TEXT, sender TEXT, origin_server_ts BIGINT, received_ts BIGINT);
CREATE INDEX IF NOT EXISTS events_room ON events_meta (room_id, topological_ordering);
''')
n = 0
ts = 1700000000000
def batch(count):
    global n, ts
    rows, meta = [], []
    for _ in range(count):
        n += 1
        ts += rnd.randint(100, 60000)
        eid = '$' + b64(32)
        room, sender = rnd.choice(rooms), rnd.choice(users)
        body = ' '.join(rnd.choices(words, k=rnd.randint(4, 90)))
        ev = {'auth_events': ['$' + b64(32) for _ in range(3)], 'prev_events': ['$' + b64(32)],
              'type': 'm.room.message', 'room_id': room, 'sender': sender,
              'content': {'msgtype': 'm.text', 'body': body}, 'depth': n,
              'origin': 'example.test', 'origin_server_ts': ts, 'hashes': {'sha256': b64(32)},
              'signatures': {'example.test': {'ed25519:a_abcd': b64(64)}}, 'unsigned': {'age_ts': ts}}
        rows.append((eid, room, '{"stream_ordering":%d}' % n, json.dumps(ev, separators=(',', ':')), 3))
        meta.append((n, n, eid, 'm.room.message', room, sender, ts, ts + rnd.randint(1, 900)))
    c.executemany('INSERT INTO event_json VALUES (?,?,?,?,?)', rows)
    c.executemany('INSERT INTO events_meta VALUES (?,?,?,?,?,?,?,?)', meta)
    c.commit()
while True:
    batch(2000)
    pages = c.execute('PRAGMA page_count').fetchone()[0] * c.execute('PRAGMA page_size').fetchone()[0]
    if pages >= target:
        break
c.execute('PRAGMA wal_checkpoint(TRUNCATE)')
batch(300)
sys.stdout.flush()
os._exit(0)
"#;

fn make_db(path: &Path, target: u64, seed: u64) -> Result<(), BoxError> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(MAKE_DB)
        .arg(path)
        .arg(target.to_string())
        .arg(seed.to_string())
        .output()
        .map_err(|e| {
            err(format!(
                "python3 is needed to build the SQLite database: {e}"
            ))
        })?;
    if !out.status.success() {
        return Err(err(format!(
            "building the SQLite database failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// The default tree: ~81% local media, ~4% thumbnails, ~10% SQLite, ~5% remote media.
fn make_tree(root: &Path, total: u64, seed: u64) -> Result<(SynapseTree, TreeFacts), BoxError> {
    let tree = SynapseTree::create(
        root,
        &TreeSpec {
            media_files: 0,
            media_bytes: 0,
            db_rows: 0,
            seed,
        },
    );
    make_db(&tree.data.join("homeserver.db"), total / 10, seed)?;
    let mut facts = TreeFacts::default();
    let mut rng = Rng::new(seed);
    write_local_media(&tree.media, total * 85 / 100, &mut rng, &mut facts);
    let (files, bytes) = write_remote_media(&tree.media, total / 20, seed);
    facts.remote_files = files;
    facts.remote_bytes = bytes;
    facts.db_bytes = ["homeserver.db", "homeserver.db-wal", "homeserver.db-shm"]
        .iter()
        .filter_map(|n| fs::metadata(tree.data.join(n)).ok())
        .map(|m| m.len())
        .sum();
    Ok((tree, facts))
}

/// Restores remote media removed by the reference restore (which deletes the whole
/// media dir), so that every restore starts from the same tree.
fn reset_remote_media(tree: &SynapseTree, facts: &TreeFacts, seed: u64) {
    for d in ["remote_content", "remote_thumbnail", "url_cache"] {
        let _ = fs::remove_dir_all(tree.media.join(d));
    }
    write_remote_media(&tree.media, facts.remote_bytes.saturating_sub(11), seed);
}

/// The reference's backup set, as absolute paths: `*.key` and `homeserver.db*` in the
/// data dir, `local_*` in the media store.
fn reference_paths(tree: &SynapseTree) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut names = |dir: &Path, keep: &dyn Fn(&str) -> bool| {
        let mut found: Vec<PathBuf> = fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| keep(&e.file_name().to_string_lossy()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        out.extend(found);
    };
    names(&tree.data, &|n: &str| {
        n.ends_with(".key") || n.starts_with("homeserver.db")
    });
    names(&tree.media, &|n: &str| n.starts_with("local_"));
    out
}

/// Names, sizes and a sample of the content of every local media file and key.
fn fingerprint(tree: &SynapseTree) -> BTreeMap<PathBuf, (u64, u64)> {
    use std::hash::{Hash, Hasher};
    let mut out = BTreeMap::new();
    for path in synapse_tree::walk(&tree.data) {
        let rel = path.strip_prefix(&tree.root).unwrap().to_path_buf();
        let s = rel.to_string_lossy();
        if !(s.starts_with("data/media_store/local_") || s.ends_with(".key")) {
            continue;
        }
        let mut f = fs::File::open(&path).unwrap();
        let len = f.metadata().unwrap().len();
        let mut head = vec![0u8; 4096.min(len as usize)];
        f.read_exact(&mut head).unwrap();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        head.hash(&mut h);
        out.insert(rel, (len, h.finish()));
    }
    out
}

// ---------------------------------------------------------------------------------
// The variants

struct Bench {
    options: BackupOptions,
    base: PathBuf,
    tree: SynapseTree,
    facts: TreeFacts,
    params: S3Parameters,
    layout: Layout,
    aws: String,
    server: ServerProcess,
    sampler: Sampler,
    rt: tokio::runtime::Runtime,
    container: LocalContainer,
    client: S3Client,
    ref_home: PathBuf,
    /// Bytes the backup set holds on disk (`du -bsc` of the reference's paths).
    source_bytes: u64,
    /// The phases our restores and extractions reported, labelled (`in place,
    /// workload`, `--target, library`…), in order: the `restore` section's breakdown.
    phases: std::cell::RefCell<Vec<(String, synapse_backup::RestorePhases)>>,
}

fn which(tool: &str) -> Result<String, BoxError> {
    let out = Command::new("bash")
        .args(["-c", "command -v \"$1\"", "bash", tool])
        .output()?;
    if !out.status.success() {
        return Err(err(format!(
            "{tool} is not on PATH: run ./scripts/bench, which installs the aws CLI (scripts/tools.sh)"
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn check_status(what: &str, out: &std::process::Output) -> Result<(), BoxError> {
    if out.status.success() {
        Ok(())
    } else {
        Err(err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .chars()
                .rev()
                .take(2000)
                .collect::<String>()
                .chars()
                .rev()
                .collect::<String>()
        )))
    }
}

fn make_private_dir(path: &Path) -> Result<(), BoxError> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    Ok(())
}

fn quote(path: &Path) -> String {
    // The reference wraps each path in single quotes without escaping (a defect this
    // crate fixes); the bench's own temp paths never hold a quote.
    let text = path.display().to_string();
    assert!(!text.contains('\''), "a quote in the bench path {text}");
    format!("'{text}'")
}

impl Bench {
    /// The environment the reference charm gives its commands, with a private HOME.
    fn reference_command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let home = &self.ref_home;
        cmd.env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("LANG", "C.UTF-8")
            .env("HOME", home)
            .env("GNUPGHOME", home.join(".gnupg"))
            .env("AWS_CONFIG_FILE", home.join(".aws/config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", home.join(".aws/credentials"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ACCESS_KEY_ID", &self.server.access)
            .env("AWS_SECRET_ACCESS_KEY", &self.server.secret)
            .env("AWS_ENDPOINT_URL", &self.server.endpoint)
            .env("AWS_DEFAULT_REGION", s3_server::REGION)
            .current_dir(home)
            .stdin(Stdio::null());
        cmd
    }

    /// The charm's prepare step: `aws configure set` twice, the passphrase file.
    fn reference_prepare(&self) -> Result<PathBuf, BoxError> {
        for (k, v) in [
            ("default.s3.addressing_style", "path"),
            ("default.s3.max_concurrent_requests", "1"),
        ] {
            let out = self
                .reference_command(&self.aws)
                .args(["configure", "set", k, v])
                .output()?;
            check_status("aws configure set", &out)?;
        }
        let pass = self.ref_home.join(".gpg_backup_passphrase");
        fs::write(&pass, PASSPHRASE)?;
        Ok(pass)
    }

    /// The reference backup; returns (object key, pipeline-only seconds).
    fn reference_backup(&self, id: &BackupId) -> Result<(String, f64), BoxError> {
        let pass = self.reference_prepare()?;
        let paths = reference_paths(&self.tree);
        let du = self
            .reference_command("du")
            .arg("-bsc")
            .args(&paths)
            .output()?;
        check_status("du", &du)?;
        let total: u64 = String::from_utf8_lossy(&du.stdout)
            .lines()
            .last()
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| err("du printed no total"))?;
        let key = format!("{PREFIX}/{id}");
        let script = format!(
            "set -euxo pipefail; tar -c {} | gpg --batch --no-symkey-cache --passphrase-file {} --symmetric | {} s3 cp --expected-size={total} - s3://{BUCKET}/{key}",
            paths.iter().map(|p| quote(p)).collect::<Vec<_>>().join(" "),
            quote(&pass),
            self.aws,
        );
        let started = Instant::now();
        let out = self
            .reference_command("bash")
            .arg("-c")
            .arg(&script)
            .output()?;
        let pipeline = started.elapsed().as_secs_f64();
        check_status("the reference backup pipeline", &out)?;
        Ok((key, pipeline))
    }

    fn reference_restore(&self, key: &str) -> Result<f64, BoxError> {
        let pass = self.reference_prepare()?;
        let out = self
            .reference_command("rm")
            .arg("-rf")
            .arg(&self.tree.media)
            .output()?;
        check_status("rm -rf media", &out)?;
        let script = format!(
            "set -euxo pipefail; {} s3 cp s3://{BUCKET}/{key} - | gpg --batch --no-symkey-cache --decrypt --passphrase-file {} | tar -x -C /",
            self.aws,
            quote(&pass)
        );
        let started = Instant::now();
        let out = self
            .reference_command("bash")
            .arg("-c")
            .arg(&script)
            .output()?;
        let pipeline = started.elapsed().as_secs_f64();
        check_status("the reference restore pipeline", &out)?;
        Ok(pipeline)
    }

    fn ours_backup(
        &self,
        options: &BackupOptions,
    ) -> Result<synapse_backup::BackupReport, BoxError> {
        Ok(self.rt.block_on(create_backup_with(
            &self.container,
            &self.params,
            PASSPHRASE,
            &self.layout,
            options,
        ))?)
    }

    fn ours_restore(&self, id: &BackupId) -> Result<(), BoxError> {
        self.ours_restore_with(id, &RestoreOptions::default())
    }

    fn ours_restore_with(&self, id: &BackupId, options: &RestoreOptions) -> Result<(), BoxError> {
        let report = self.rt.block_on(restore_backup_with(
            &self.container,
            &self.params,
            PASSPHRASE,
            id,
            &self.layout,
            options,
        ))?;
        self.phases.borrow_mut().push((
            format!("in place, {}", transfer_label(options)),
            report.phases,
        ));
        Ok(())
    }

    /// The object's size (a HEAD request: the same on both servers); 0 when missing.
    fn object_size(&self, key: &str) -> u64 {
        self.rt
            .block_on(self.client.head_object(key))
            .map_or(0, |h| h.size)
    }

    /// The bytes of every object whose key starts with `prefix`.
    fn bytes_under(&self, prefix: &str) -> u64 {
        self.rt
            .block_on(self.client.list_objects_with_prefix(prefix))
            .map_or(0, |objects| objects.iter().map(|o| o.size).sum())
    }

    fn delete_key(&self, key: &str) {
        if let Err(e) = self.rt.block_on(self.client.delete_object(key)) {
            eprintln!("could not delete {key}: {e}");
        }
    }

    fn delete_ours(&self, id: &BackupId) {
        if let Err(e) = self.rt.block_on(delete_backup(&self.client, id)) {
            eprintln!("could not delete {id}: {e}");
        }
    }

    /// The relative member list of the reference's paths (for the stage limits).
    fn members_file(&self) -> Result<PathBuf, BoxError> {
        let list = self.base.join("members.list");
        let mut bytes = Vec::new();
        for p in reference_paths(&self.tree) {
            let rel = p.strip_prefix(&self.tree.root)?;
            bytes.extend_from_slice(rel.to_string_lossy().as_bytes());
            bytes.push(0);
        }
        fs::write(&list, bytes)?;
        Ok(list)
    }

    /// Runs `cmd` with stdout read and discarded by this process; returns the bytes.
    fn drain(mut cmd: Command) -> Result<u64, BoxError> {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let mut out = child.stdout.take().ok_or_else(|| err("no stdout"))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = out.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        let output = child.wait_with_output()?;
        check_status("stage", &output)?;
        Ok(total)
    }

    fn tar_alone(&self, list: &Path) -> Result<u64, BoxError> {
        let mut cmd = Command::new("tar");
        cmd.args(["--create", "--null", "--verbatim-files-from", "--directory"])
            .arg(&self.tree.root)
            .arg("--files-from")
            .arg(list)
            .stdin(Stdio::null());
        Self::drain(cmd)
    }

    fn tar_gpg(&self, list: &Path) -> Result<u64, BoxError> {
        let gnupg = self.base.join("limit-gnupg");
        let n = Self::drain(self.tar_gpg_command(list, &gnupg)?)?;
        let _ = fs::remove_dir_all(&gnupg);
        Ok(n)
    }

    /// `tar -c <list> | gpg --symmetric` as our pipeline runs them, to stdout, with a
    /// fresh `gnupg` home (the caller removes it).
    fn tar_gpg_command(&self, list: &Path, gnupg: &Path) -> Result<Command, BoxError> {
        let _ = fs::remove_dir_all(gnupg);
        make_private_dir(gnupg)?;
        let pass = self.base.join("limit-passphrase");
        fs::write(&pass, PASSPHRASE)?;
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(
                "set -euo pipefail\n\"$SB_TAR\" --create --null --verbatim-files-from --directory \"$1\" --files-from \"$2\" |\n  gpg --batch --no-tty --no-symkey-cache --pinentry-mode loopback --passphrase-file \"$3\" --symmetric --cipher-algo AES256 --s2k-mode 3 --s2k-digest-algo SHA256 --s2k-count \"$4\" --compress-algo none --output -",
            )
            .arg("bash")
            .arg(&self.tree.root)
            .arg(list)
            .arg(&pass)
            .arg(self.options.s2k_count.to_string())
            .env("SB_TAR", "tar")
            .env("GNUPGHOME", gnupg)
            .stdin(Stdio::null());
        Ok(cmd)
    }

    /// Uploads `file` through a pipe with our aws CLI settings (config file, args).
    fn upload_alone(&self, file: &Path, config: &Path, key: &str) -> Result<(), BoxError> {
        let size = fs::metadata(file)?.len();
        let mut child = self
            .our_aws(config)
            .args([
                "s3",
                "cp",
                "--only-show-errors",
                "--no-progress",
                "--expected-size",
            ])
            .arg(size.to_string())
            .args(["--endpoint-url", &self.server.endpoint, "-"])
            .arg(format!("s3://{BUCKET}/{key}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stdin = child.stdin.take().ok_or_else(|| err("no stdin"))?;
        let mut source = fs::File::open(file)?;
        let feeder = std::thread::spawn(move || std::io::copy(&mut source, &mut stdin));
        let out = child.wait_with_output()?;
        let _ = feeder.join();
        check_status("the upload alone", &out)
    }

    /// Uploads `file` as `Transfer::Library`'s create does (the library's multipart
    /// upload with our part size and parts in flight), read from a pipe (`cat`'s
    /// standard output, as the create reads the workload's): the library's upload limit.
    fn library_upload_alone(&self, file: &Path, key: &str) -> Result<(), BoxError> {
        let options = &self.options;
        self.rt.block_on(async {
            let mut cat = tokio::process::Command::new("cat")
                .arg(file)
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            let mut pipe = cat.stdout.take().ok_or_else(|| err("no stdout"))?;
            self.client
                .put_object_stream(
                    key,
                    &mut pipe,
                    "application/octet-stream",
                    &std::collections::HashMap::new(),
                    (options.library_part_mib as usize) << 20,
                    options.library_parts_in_flight as usize,
                )
                .await?;
            let status = cat.wait().await?;
            if status.success() {
                Ok(())
            } else {
                Err(err(format!("cat exited {status}")))
            }
        })
    }
}

// ---------------------------------------------------------------------------------
// Reporting

fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The runs of one variant.
#[derive(Default, Clone)]
struct Runs {
    name: String,
    costs: Vec<Cost>,
    objects: Vec<u64>,
}

impl Runs {
    fn new(name: &str) -> Runs {
        Runs {
            name: name.into(),
            ..Runs::default()
        }
    }
    fn med(&self, f: impl Fn(&Cost) -> f64) -> f64 {
        median(&self.costs.iter().map(f).collect::<Vec<_>>())
    }
    fn wall(&self) -> f64 {
        self.med(|c| c.wall)
    }
    fn peak_tree(&self) -> f64 {
        self.costs.iter().map(|c| c.peak_tree).max().unwrap_or(0) as f64 / MB
    }
    fn peak_self(&self) -> f64 {
        self.costs.iter().map(|c| c.peak_self).max().unwrap_or(0) as f64 / MB
    }
    fn object(&self) -> f64 {
        median(&self.objects.iter().map(|o| *o as f64).collect::<Vec<_>>()) / MB
    }
    fn by_command(&self) -> String {
        let mut total: BTreeMap<String, f64> = BTreeMap::new();
        for c in &self.costs {
            for (k, v) in &c.by_command {
                *total.entry(k.clone()).or_insert(0.0) += v / self.costs.len() as f64;
            }
        }
        let mut v: Vec<(String, f64)> = total.into_iter().filter(|(_, s)| *s >= 0.05).collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v.iter()
            .map(|(k, s)| format!("{k} {s:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

const HEADER: &str = "| variant | median wall s | runs s | MB/s | object MB | CPU user s | CPU sys s | pipeline peak RSS MB | our RSS MB | our CPU s | S3 server CPU s |\n|---|---|---|---|---|---|---|---|---|---|---|";

fn row(runs: &Runs, source: u64) -> String {
    let wall = runs.wall();
    let all = runs
        .costs
        .iter()
        .map(|c| format!("{:.2}", c.wall))
        .collect::<Vec<_>>()
        .join(" ");
    let object = if runs.objects.is_empty() {
        "-".to_string()
    } else {
        format!("{:.1}", runs.object())
    };
    format!(
        "| {} | {wall:.2} | {all} | {:.1} | {object} | {:.2} | {:.2} | {:.1} | {:.1} | {:.2} | {:.2} |",
        runs.name,
        source as f64 / MB / wall,
        runs.med(|c| c.user),
        runs.med(|c| c.sys),
        runs.peak_tree(),
        runs.peak_self(),
        runs.med(|c| c.self_cpu),
        runs.med(|c| c.server_cpu),
    )
}

fn ratio_row(ours: &Runs, reference: &Runs) -> String {
    let r = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    format!(
        "| ours/reference | {:.2} | | {:.2}x | {} | {:.2} | {:.2} | {:.2} | | | {:.2} |",
        r(ours.wall(), reference.wall()),
        r(reference.wall(), ours.wall()),
        if ours.objects.is_empty() {
            "-".into()
        } else {
            format!("{:.3}", r(ours.object(), reference.object()))
        },
        r(ours.med(|c| c.user), reference.med(|c| c.user)),
        r(ours.med(|c| c.sys), reference.med(|c| c.sys)),
        r(ours.peak_tree(), reference.peak_tree()),
        r(ours.med(|c| c.server_cpu), reference.med(|c| c.server_cpu)),
    )
}

fn progress(text: &str) {
    eprintln!("[bench] {text}");
}

// ---------------------------------------------------------------------------------
// The run

/// `/dev/shm` when it is a tmpfs with room for the run (the tree, two kept backups,
/// multipart parts, a restore's staging copy and the upload stream: ~10× the tree), so
/// that a busy shared disk does not blur the comparison; else the system temp dir.
fn default_dir(bytes: u64) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let avail = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(shm)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .last()
                .and_then(|l| l.trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    if avail > bytes.saturating_mul(10) {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn run(config: &Config) -> Result<(), BoxError> {
    let aws = which("aws")?;
    for tool in ["bash", "tar", "gpg", "python3", "du", "sha256sum"] {
        which(tool)?;
    }
    let base_dir = config
        .dir
        .clone()
        .unwrap_or_else(|| default_dir(config.bytes));
    fs::create_dir_all(&base_dir)?;
    let temp = tempfile::Builder::new()
        .prefix("synapse-backup-bench-")
        .tempdir_in(&base_dir)?;
    let base = temp.path().canonicalize()?;
    progress(&format!("working in {}", base.display()));

    let started = Instant::now();
    let (tree, facts) = make_tree(&base.join("root"), config.bytes, config.seed)?;
    progress(&format!(
        "tree generated in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let original = fingerprint(&tree);
    let mut summaries: Vec<ServerSummary> = Vec::new();
    for (i, kind) in config.servers.iter().enumerate() {
        let server = if kind == "moto" {
            ServerProcess::start_moto(&aws, &base.join("moto.log"))?
        } else {
            ServerProcess::start(&base.join("s3"))?
        };
        let tree = SynapseTree {
            root: tree.root.clone(),
            data: tree.data.clone(),
            media: tree.media.clone(),
        };
        let bench = Bench::new(config, &base, tree, facts.clone(), server, &aws)?;
        // The sections that need one server only run on the first.
        let result = run_sections(&bench, config, &original, i == 0);
        // The reference's gpg-agent (started by its gpg in the private GNUPGHOME)
        // outlives the pipeline: stop it.
        let _ = Command::new("gpgconf")
            .args(["--kill", "all"])
            .env("GNUPGHOME", bench.ref_home.join(".gnupg"))
            .output();
        drop(bench);
        summaries.push(result?);
    }
    print_servers(&summaries);
    drop(temp);
    Ok(())
}

impl Bench {
    fn new(
        config: &Config,
        base: &Path,
        tree: SynapseTree,
        facts: TreeFacts,
        server: ServerProcess,
        aws: &str,
    ) -> Result<Bench, BoxError> {
        let params = S3Parameters::from_relation_data(&server.relation_data())?;
        let layout = Layout::default()
            .root(tree.root.to_string_lossy().into_owned())
            .user(None)
            .group(None)
            .service(None)
            .bash("bash")
            .aws(aws.to_string());
        let sampler = Sampler::start(server.pid(), config.sample);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let client = S3Client::new(&params)?;
        let ref_home = base.join(format!("reference-home-{}", server.kind));
        make_private_dir(&ref_home)?;
        make_private_dir(&ref_home.join(".gnupg"))?;
        let du = Command::new("du")
            .arg("-bsc")
            .args(reference_paths(&tree))
            .output()?;
        let source_bytes = String::from_utf8_lossy(&du.stdout)
            .lines()
            .last()
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        Ok(Bench {
            options: config.options.clone(),
            base: base.to_path_buf(),
            tree,
            facts,
            params,
            layout,
            aws: aws.to_string(),
            server,
            sampler,
            rt,
            container: LocalContainer::new(),
            client,
            ref_home,
            source_bytes,
            phases: std::cell::RefCell::default(),
        })
    }
}

/// What one server's run measured, for the closing comparison of the servers.
#[derive(Default)]
struct ServerSummary {
    kind: String,
    backup_speedup: Option<f64>,
    restore_speedup: Option<f64>,
    /// Ours as a percentage of the upload-alone limit (backup) and of the
    /// download-alone limit (restore in place).
    backup_of_upload: Option<f64>,
    restore_of_download: Option<f64>,
    restic_backup: Option<f64>,
    restic_restore: Option<f64>,
    /// The newest of a chain of 7 restored ÷ a full restore (`incremental`).
    chain_restore: Option<f64>,
}

fn print_servers(summaries: &[ServerSummary]) {
    let cell = |v: Option<f64>, unit: &str| v.map_or("-".into(), |v| format!("{v:.2}{unit}"));
    let mut out = String::new();
    if summaries.len() > 1 {
        out.push_str("### servers (same tree, same run)\n\n| server | backup ours vs reference | backup % of upload alone | restore ours vs reference | restore % of download alone | restic ÷ ours, full backup | restic ÷ ours, restore to a target | chain of 7 restore ÷ full |\n|---|---|---|---|---|---|---|---|\n");
        for s in summaries {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                s.kind,
                cell(s.backup_speedup, "x"),
                cell(s.backup_of_upload, "%"),
                cell(s.restore_speedup, "x"),
                cell(s.restore_of_download, "%"),
                cell(s.restic_backup, "x"),
                cell(s.restic_restore, "x"),
                cell(s.chain_restore, "x"),
            );
        }
        out.push('\n');
    }
    print!("{out}");
    if let Some(s) = summaries.first().and_then(|s| s.backup_speedup) {
        println!("backup speedup: {s:.2}x");
    }
}

fn run_sections(
    bench: &Bench,
    config: &Config,
    original: &BTreeMap<PathBuf, (u64, u64)>,
    first: bool,
) -> Result<ServerSummary, BoxError> {
    let f = &bench.facts;
    let mut out = String::new();
    let mut summary = ServerSummary {
        kind: bench.server.kind.to_string(),
        ..ServerSummary::default()
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    writeln!(
        out,
        "## synapse-backup end-to-end benchmark on {}\n",
        bench.server.kind
    )?;
    writeln!(
        out,
        "tree: {:.1} MB generated (seed {}): {} media files {:.1} MB, {} thumbnails {:.1} MB, SQLite {:.1} MB (WAL mode, live -wal), remote media/url cache {} files {:.1} MB (not backed up)",
        config.bytes as f64 / MB,
        config.seed,
        f.media_files,
        f.media_bytes as f64 / MB,
        f.thumbnails,
        f.thumbnail_bytes as f64 / MB,
        f.db_bytes as f64 / MB,
        f.remote_files,
        f.remote_bytes as f64 / MB,
    )?;
    writeln!(
        out,
        "source (du -bsc of the backup set): {:.1} MB; {} cpus; load average {}; {} rounds A B alternating; S3: {} in a separate process (pid {}) on {}; files in {}",
        bench.source_bytes as f64 / MB,
        cpus,
        load_average(),
        config.rounds,
        bench.server.kind,
        bench.server.pid(),
        bench.server.endpoint,
        bench.base.display(),
    )?;
    writeln!(
        out,
        "ours: BackupOptions {{ compression: {:?}, upload_concurrency: {}, part_size_mib: {}, s2k_count: {} }}; reference: gpg default compression (zlib 6), aws max_concurrent_requests 1, default 8 MiB parts\n",
        config.options.compression,
        config.options.upload_concurrency,
        config.options.part_size_mib,
        config.options.s2k_count,
    )?;
    print!("{out}");
    out.clear();
    let source = bench.source_bytes;

    let mut speedup = None;
    let mut ref_backup = Runs::new("reference");
    let mut ours_backup = Runs::new("ours");
    let mut ours_library_backup = Runs::new("ours, Transfer::Library");
    let mut ref_pipeline = Vec::new();
    let mut last_ours: Option<BackupId> = None;
    let mut last_ours_key: Option<String> = None;
    let mut last_ref: Option<String> = None;
    let mut notes: Vec<String> = Vec::new();
    let mut our_rss = 0.0f64;

    if config.section("backup") || config.section("restore") || config.section("limits") {
        let rounds = if config.section("backup") {
            config.rounds
        } else {
            1
        };
        for round in 1..=rounds {
            let id = BackupId::generate();
            let (r, cost) = bench.sampler.measure(|| bench.reference_backup(&id));
            let (key, pipeline) = r?;
            progress(&format!(
                "round {round}: reference backup {:.2} s (pipeline {pipeline:.2} s)",
                cost.wall
            ));
            ref_backup.objects.push(bench.object_size(&key));
            ref_backup.costs.push(cost);
            ref_pipeline.push(pipeline);
            if let Some(old) = last_ref.replace(key) {
                bench.delete_key(&old);
            }
            let (r, cost) = bench.sampler.measure(|| bench.ours_backup(&config.options));
            let report = r?;
            progress(&format!(
                "round {round}: ours backup {:.2} s ({:.2} s in the library)",
                cost.wall,
                report.duration.as_secs_f64()
            ));
            ours_backup.objects.push(report.manifest.ciphertext_bytes);
            ours_backup.costs.push(cost);
            last_ours_key = Some(report.key.clone());
            if let Some(old) = last_ours.replace(report.id) {
                bench.delete_ours(&old);
            }
            if config.section("backup") {
                // The library uploads what the workload's tar | gpg | checksum writes to
                // its standard output (no aws CLI in the workload).
                let library = config.options.clone().transfer(Transfer::Library);
                let (r, cost) = bench.sampler.measure(|| bench.ours_backup(&library));
                let report = r?;
                progress(&format!(
                    "round {round}: ours backup with Transfer::Library {:.2} s",
                    cost.wall
                ));
                ours_library_backup
                    .objects
                    .push(report.manifest.ciphertext_bytes);
                ours_library_backup.costs.push(cost);
                bench.delete_ours(&report.id);
            }
        }
        if config.section("backup") {
            writeln!(
                out,
                "### backup (median of {rounds}; MB/s of source data)\n"
            )?;
            writeln!(out, "{HEADER}")?;
            writeln!(out, "{}", row(&ref_backup, source))?;
            writeln!(out, "{}", row(&ours_backup, source))?;
            writeln!(out, "{}", row(&ours_library_backup, source))?;
            writeln!(out, "{}", ratio_row(&ours_backup, &ref_backup))?;
            writeln!(
                out,
                "\nTransfer::Library ({} MiB parts, {} in flight): {:.2}x the workload's aws CLI upload (wall {:.2} s vs {:.2} s), {:.2}x the reference; our peak RSS {:.1} MB (workload transfer: {:.1} MB)",
                config.options.library_part_mib,
                config.options.library_parts_in_flight,
                ours_backup.wall() / ours_library_backup.wall(),
                ours_library_backup.wall(),
                ours_backup.wall(),
                ref_backup.wall() / ours_library_backup.wall(),
                ours_library_backup.peak_self(),
                ours_backup.peak_self(),
            )?;
            writeln!(
                out,
                "\nreference pipeline alone (without aws configure set and du): median {:.2} s\nCPU by command (s, mean per run): reference: {}\nours: {}\n",
                median(&ref_pipeline),
                ref_backup.by_command(),
                ours_backup.by_command()
            )?;
            writeln!(
                out,
                "ours, Transfer::Library: {}\n",
                ours_library_backup.by_command()
            )?;
            print!("{out}");
            out.clear();
            speedup = Some(ref_backup.wall() / ours_backup.wall());
        }
    }

    let mut upload_limit = None;
    let mut upload_rate = None;
    if config.section("limits") {
        let list = bench.members_file()?;
        let mut tar = Runs::new("tar alone");
        let mut tar_gpg = Runs::new("tar | gpg (ours)");
        let mut upload = Runs::new("upload alone (ours)");
        let mut library_upload = Runs::new("upload alone (the library's, Transfer::Library)");
        let object = ours_backup.objects.last().copied().unwrap_or(source);
        let stream = bench.base.join("upload-stream.bin");
        write_random(&stream, object, &mut Rng::new(config.seed ^ 0xF00D));
        let aws_config = bench.base.join("upload-aws-config");
        fs::write(
            &aws_config,
            synapse_backup::testing::internals::aws_config_file(&bench.params, &config.options)
                .map_err(|e| e.to_string())?,
        )?;
        for round in 1..=config.rounds {
            let (r, cost) = bench.sampler.measure(|| bench.tar_alone(&list));
            tar.objects.push(r?);
            tar.costs.push(cost);
            let (r, cost) = bench.sampler.measure(|| bench.tar_gpg(&list));
            tar_gpg.objects.push(r?);
            tar_gpg.costs.push(cost);
            let key = format!("limit/upload-{round}");
            let (r, cost) = bench
                .sampler
                .measure(|| bench.upload_alone(&stream, &aws_config, &key));
            r?;
            upload.objects.push(bench.object_size(&key));
            upload.costs.push(cost);
            bench.delete_key(&key);
            let (r, cost) = bench
                .sampler
                .measure(|| bench.library_upload_alone(&stream, &key));
            r?;
            library_upload.objects.push(bench.object_size(&key));
            library_upload.costs.push(cost);
            bench.delete_key(&key);
            progress(&format!(
                "round {round}: tar {:.2} s, tar|gpg {:.2} s, upload {:.2} s, the library's upload {:.2} s",
                tar.costs[round - 1].wall,
                tar_gpg.costs[round - 1].wall,
                upload.costs[round - 1].wall,
                library_upload.costs[round - 1].wall
            ));
        }
        let _ = fs::remove_file(&stream);
        writeln!(
            out,
            "### stage limits (median of {}; MB/s of source data; upload of an equal-sized random stream through a pipe)\n",
            config.rounds
        )?;
        writeln!(out, "{HEADER}")?;
        for r in [&tar, &tar_gpg, &upload, &library_upload] {
            writeln!(out, "{}", row(r, source))?;
        }
        let limit = tar.wall().max(tar_gpg.wall()).max(upload.wall());
        upload_limit = Some(upload.wall());
        upload_rate = Some(upload.object() * MB / upload.wall());
        if !ours_backup.costs.is_empty() {
            writeln!(
                out,
                "\nours backup = {:.0}% of the slowest single stage ({:.2} s), {:.0}% of the upload-alone limit",
                100.0 * limit / ours_backup.wall(),
                limit,
                100.0 * upload.wall() / ours_backup.wall()
            )?;
        }
        if !ours_library_backup.costs.is_empty() {
            writeln!(
                out,
                "ours with Transfer::Library = {:.0}% of the library's upload alone ({:.2} s), {:.0}% of the slowest of tar | gpg and that upload",
                100.0 * library_upload.wall() / ours_library_backup.wall(),
                library_upload.wall(),
                100.0 * tar_gpg.wall().max(library_upload.wall()) / ours_library_backup.wall()
            )?;
        }
        writeln!(
            out,
            "CPU by command: upload alone: {}\n",
            upload.by_command()
        )?;
        print!("{out}");
        out.clear();
    }

    if config.section("restore") {
        let (Some(key), Some(id)) = (last_ref.clone(), last_ours.clone()) else {
            return Err(err("no backups to restore"));
        };
        let mut ref_restore = Runs::new("reference");
        let mut ours_restore = Runs::new("ours");
        let mut ours_library_restore = Runs::new("ours, Transfer::Library");
        let library = RestoreOptions::default().transfer(Transfer::Library);
        let read_ahead = read_ahead_options(config);
        let mut ours_read_ahead_restore = Runs::new(&format!(
            "ours, Transfer::Library, {} x {} MiB read ahead",
            config.read_ahead.0, config.read_ahead.1
        ));
        let mut ref_restore_pipeline = Vec::new();
        bench.phases.borrow_mut().clear();
        for round in 1..=config.rounds {
            reset_remote_media(&bench.tree, &bench.facts, config.seed);
            let (r, cost) = bench.sampler.measure(|| bench.reference_restore(&key));
            ref_restore_pipeline.push(r?);
            progress(&format!(
                "round {round}: reference restore {:.2} s",
                cost.wall
            ));
            ref_restore.costs.push(cost);
            if fingerprint(&bench.tree) != *original {
                return Err(err("the reference restore did not give back the tree"));
            }
            reset_remote_media(&bench.tree, &bench.facts, config.seed);
            let (r, cost) = bench.sampler.measure(|| bench.ours_restore(&id));
            r?;
            progress(&format!("round {round}: ours restore {:.2} s", cost.wall));
            ours_restore.costs.push(cost);
            if fingerprint(&bench.tree) != *original {
                return Err(err("our restore did not give back the tree"));
            }
            let library_runs = [
                ("Transfer::Library", &library, &mut ours_library_restore),
                (
                    "Transfer::Library read ahead",
                    &read_ahead,
                    &mut ours_read_ahead_restore,
                ),
            ];
            for (what, options, runs) in library_runs {
                reset_remote_media(&bench.tree, &bench.facts, config.seed);
                let (r, cost) = bench
                    .sampler
                    .measure(|| bench.ours_restore_with(&id, options));
                r?;
                progress(&format!(
                    "round {round}: ours restore with {what} {:.2} s",
                    cost.wall
                ));
                runs.costs.push(cost);
                if fingerprint(&bench.tree) != *original {
                    return Err(err(format!(
                        "our restore with {what} did not give back the tree"
                    )));
                }
            }
        }
        writeln!(
            out,
            "### restore (median of {}; MB/s of source data; ours includes staging, checks and the swap)\n",
            config.rounds
        )?;
        writeln!(out, "{HEADER}")?;
        writeln!(out, "{}", row(&ref_restore, source))?;
        writeln!(out, "{}", row(&ours_restore, source))?;
        writeln!(out, "{}", row(&ours_library_restore, source))?;
        writeln!(out, "{}", row(&ours_read_ahead_restore, source))?;
        writeln!(out, "{}", ratio_row(&ours_restore, &ref_restore))?;
        writeln!(
            out,
            "\nTransfer::Library (ranges chosen per object: {} MiB read ahead, {} in flight, or {} MiB streamed): {:.2}x the reference, {:.2}x the workload's aws CLI download (wall {:.2} s vs {:.2} s); our peak RSS {:.1} MB (workload transfer: {:.1} MB)",
            synapse_backup::READ_AHEAD_RANGE_MIB,
            synapse_backup::LIBRARY_RANGES_IN_FLIGHT,
            synapse_backup::LIBRARY_RANGE_MIB,
            ref_restore.wall() / ours_library_restore.wall(),
            ours_restore.wall() / ours_library_restore.wall(),
            ours_library_restore.wall(),
            ours_restore.wall(),
            ours_library_restore.peak_self(),
            ours_restore.peak_self(),
        )?;
        writeln!(
            out,
            "Transfer::Library read ahead ({} x {} MiB ranges): {:.2}x the reference, {:.2}x the workload's aws CLI download, {:.2}x the library's default ranges (wall {:.2} s); our peak RSS {:.1} MB",
            config.read_ahead.0,
            config.read_ahead.1,
            ref_restore.wall() / ours_read_ahead_restore.wall(),
            ours_restore.wall() / ours_read_ahead_restore.wall(),
            ours_library_restore.wall() / ours_read_ahead_restore.wall(),
            ours_read_ahead_restore.wall(),
            ours_read_ahead_restore.peak_self(),
        )?;
        writeln!(
            out,
            "\nreference restore pipeline alone: median {:.2} s\nCPU by command: reference: {}\nours: {}\n",
            median(&ref_restore_pipeline),
            ref_restore.by_command(),
            ours_restore.by_command()
        )?;
        print!("{out}");
        out.clear();
        let r = ref_restore.wall() / ours_restore.wall();
        notes.push(target_line("restore speedup", r, 2.0, true, "x"));
        summary.restore_speedup = Some(r);
        our_rss = our_rss.max(ours_restore.peak_self());
        let key = last_ours_key
            .clone()
            .ok_or_else(|| err("no key of our backup"))?;
        let download = restore_breakdown(
            bench,
            config,
            (&id, &key),
            &ours_restore,
            original,
            &mut out,
            &mut notes,
        )?;
        summary.restore_of_download = Some(100.0 * download / ours_restore.wall());
        library_download_alone(bench, config, &key, &mut out)?;
        print!("{out}");
        out.clear();
    }
    if let Some(old) = last_ref.take() {
        bench.delete_key(&old);
    }
    if let Some(old) = last_ours.take() {
        bench.delete_ours(&old);
    }

    if config.section("sweep") {
        writeln!(
            out,
            "### sweep of our upload settings ({}: concurrency x part size; median of {}, settings interleaved)\n",
            if config.sweep_library {
                "Transfer::Library"
            } else {
                "the workload's aws CLI"
            },
            config.rounds
        )?;
        writeln!(out, "{HEADER}")?;
        let mut all: Vec<Runs> = config
            .sweep
            .iter()
            .map(|(c, p)| Runs::new(&format!("{c} x {p} MiB")))
            .collect();
        for round in 1..=config.rounds {
            for ((c, p), runs) in config.sweep.iter().zip(all.iter_mut()) {
                let options = if config.sweep_library {
                    config
                        .options
                        .clone()
                        .transfer(Transfer::Library)
                        .library_parts_in_flight(*c)
                        .library_part_mib(*p)
                } else {
                    config
                        .options
                        .clone()
                        .upload_concurrency(*c)
                        .part_size_mib(*p)
                };
                let (r, cost) = bench.sampler.measure(|| bench.ours_backup(&options));
                let report = r?;
                progress(&format!(
                    "round {round}: sweep {c} x {p} MiB {:.2} s",
                    cost.wall
                ));
                runs.objects.push(report.manifest.ciphertext_bytes);
                runs.costs.push(cost);
                bench.delete_ours(&report.id);
            }
        }
        for runs in &all {
            writeln!(out, "{}", row(runs, source))?;
        }
        writeln!(out)?;
        print!("{out}");
        out.clear();
    }

    if config.section("restic") {
        let (b, r) = restic_section(bench, config, &mut out, &mut notes)?;
        summary.restic_backup = Some(b);
        summary.restic_restore = Some(r);
        print!("{out}");
        out.clear();
    }

    if config.section("latency") {
        latency::section(bench, config, &mut out)?;
        print!("{out}");
        out.clear();
    }

    if config.section("catalog") {
        catalog::section(bench, config, &mut out)?;
        print!("{out}");
        out.clear();
    }

    if config.section("incremental") {
        summary.chain_restore = Some(incremental_section(
            bench,
            config,
            upload_rate,
            &mut out,
            &mut notes,
        )?);
        print!("{out}");
        out.clear();
    }

    if first && config.section("scale") && !config.scale.is_empty() {
        scale::scale_section(bench, config, &mut out)?;
        print!("{out}");
        out.clear();
    }

    if first && config.section("pebble") {
        pebble_section(bench, config, &mut out)?;
        print!("{out}");
        out.clear();
    }

    if first && config.section("synapse") {
        synapse_section(bench, config, &mut out)?;
        print!("{out}");
        out.clear();
    }

    if first && config.section("transfer") {
        transfer::section(bench, config, &mut out)?;
        print!("{out}");
        out.clear();
    }

    summary.backup_speedup = speedup;
    if let (Some(up), false) = (upload_limit, ours_backup.costs.is_empty()) {
        summary.backup_of_upload = Some(100.0 * up / ours_backup.wall());
    }
    if speedup.is_none() && !notes.is_empty() {
        writeln!(out, "### targets ({})\n", bench.server.kind)?;
        for n in &notes {
            writeln!(out, "- {n}")?;
        }
        writeln!(out)?;
        print!("{out}");
    }
    if let Some(s) = speedup {
        writeln!(out, "### targets ({})\n", bench.server.kind)?;
        writeln!(
            out,
            "- {}",
            target_line("backup speedup", s, 2.5, true, "x")
        )?;
        if let Some(up) = upload_limit {
            writeln!(
                out,
                "- {}",
                target_line(
                    "backup vs upload-alone limit",
                    100.0 * up / ours_backup.wall(),
                    90.0,
                    true,
                    "%"
                )
            )?;
        }
        for n in &notes {
            writeln!(out, "- {n}")?;
        }
        writeln!(
            out,
            "- {}",
            target_line(
                "pipeline peak RSS ours/reference",
                ours_backup.peak_tree() / ref_backup.peak_tree(),
                1.5,
                false,
                "x"
            )
        )?;
        writeln!(
            out,
            "- {}",
            target_line(
                "our process peak RSS, backup and restore (MB)",
                our_rss.max(ours_backup.peak_self()),
                40.0,
                false,
                ""
            )
        )?;
        let size = ours_backup.object() / ref_backup.object();
        writeln!(
            out,
            "- object size ours/reference: {size:.3} (target within 15%): {}",
            if (size - 1.0).abs() <= 0.15 {
                "holds"
            } else {
                "MISSED"
            }
        )?;
        writeln!(out)?;
        print!("{out}");
    }
    Ok(summary)
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn target_line(what: &str, value: f64, target: f64, at_least: bool, unit: &str) -> String {
    let ok = if at_least {
        value >= target
    } else {
        value <= target
    };
    format!(
        "{what}: {value:.2}{unit} (target {} {target:.2}{unit}): {}",
        if at_least { "≥" } else { "≤" },
        if ok { "holds" } else { "MISSED" }
    )
}

// ---------------------------------------------------------------------------------
// A live Synapse: client-API latency while a backup runs

/// The `p`-th percentile (nearest rank) of `values`.
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Sets the CPU nice value and I/O class of every thread of this process (children,
/// such as the pipeline, inherit them from the thread that starts them).
/// Create and restore through Pebble against `LocalContainer`, alternating.
fn pebble_section(bench: &Bench, config: &Config, out: &mut String) -> Result<(), BoxError> {
    writeln!(
        out,
        "### through Pebble: PebbleContainer against LocalContainer\n"
    )?;
    if !nix::unistd::geteuid().is_root() {
        writeln!(
            out,
            "not measured: the section starts the Pebble daemon, which needs root\n"
        )?;
        return Ok(());
    }
    let daemon = pebble_daemon::PebbleDaemon::start();
    let pebble = synapse_backup::PebbleContainer::new(daemon.socket());
    let rounds = config.rounds.max(5);
    // [create local, create pebble, restore local, restore pebble]
    let mut walls: [Vec<f64>; 4] = Default::default();
    for round in 1..=rounds {
        // Alternate which goes first, so neither always meets a warmer cache.
        let order: [bool; 2] = if round % 2 == 1 {
            [false, true]
        } else {
            [true, false]
        };
        for through_pebble in order {
            let started = Instant::now();
            let report = if through_pebble {
                bench.rt.block_on(create_backup_with(
                    &pebble,
                    &bench.params,
                    PASSPHRASE,
                    &bench.layout,
                    &config.options,
                ))?
            } else {
                bench.ours_backup(&config.options)?
            };
            let create = started.elapsed().as_secs_f64();
            let started = Instant::now();
            if through_pebble {
                bench.rt.block_on(restore_backup_with(
                    &pebble,
                    &bench.params,
                    PASSPHRASE,
                    &report.id,
                    &bench.layout,
                    &RestoreOptions::default(),
                ))?;
            } else {
                bench.ours_restore(&report.id)?;
            }
            let restore = started.elapsed().as_secs_f64();
            let i = usize::from(through_pebble);
            walls[i].push(create);
            walls[2 + i].push(restore);
            progress(&format!(
                "round {round}: {} create {create:.2} s, restore {restore:.2} s",
                if through_pebble { "pebble" } else { "local" }
            ));
            bench.delete_ours(&report.id);
        }
    }
    let spread = |v: &[f64]| {
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(0.0, f64::max);
        format!("{:.2} ({min:.2}–{max:.2})", median(v))
    };
    let version = Command::new(pebble_daemon::pebble_binary())
        .args(["version", "--client"])
        .output()?;
    writeln!(
        out,
        "median wall s (min–max) of {rounds} alternating rounds; {}\n",
        String::from_utf8_lossy(&version.stdout).trim()
    )?;
    writeln!(
        out,
        "| | LocalContainer | PebbleContainer | Pebble ÷ local (target ≤ 1.10) |\n|---|---|---|---|"
    )?;
    for (name, local, through) in [("create", 0, 1), ("restore", 2, 3)] {
        writeln!(
            out,
            "| {name} | {} | {} | {:.3} |",
            spread(&walls[local]),
            spread(&walls[through]),
            median(&walls[through]) / median(&walls[local])
        )?;
    }
    writeln!(out)?;
    Ok(())
}

/// One measured condition: the latencies of its sends, and the backup's wall time.
struct Latencies {
    name: String,
    sends: Vec<f64>,
    backups: Vec<f64>,
}

impl Latencies {
    fn row(&self) -> String {
        let backup = if self.backups.is_empty() {
            "-".to_string()
        } else {
            format!("{:.1}", median(&self.backups))
        };
        format!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {backup} |",
            self.name,
            self.sends.len(),
            median(&self.sends),
            percentile(&self.sends, 99.0),
            percentile(&self.sends, 100.0),
        )
    }
}

fn synapse_section(bench: &Bench, config: &Config, out: &mut String) -> Result<(), BoxError> {
    writeln!(
        out,
        "### a live Synapse: client-API latency while a backup runs\n"
    )?;
    if !nix::unistd::geteuid().is_root() {
        writeln!(
            out,
            "not measured: the section runs Synapse as its own system user, which needs root\n"
        )?;
        return Ok(());
    }
    let install = synapse_server::install(synapse_server::Release::Current);
    // The bench's own temp dir is private; the homeserver's must be reachable by its user.
    let parent = bench.base.parent().unwrap_or(Path::new("/tmp"));
    let hs = synapse_server::Homeserver::generate_in(&install, Path::new(&bench.aws), parent);
    let mut facts = TreeFacts::default();
    let budget = (config.bytes as f64 * 0.85) as u64;
    write_local_media(
        &hs.media,
        budget,
        &mut Rng::new(config.seed ^ 0x5E_17A9),
        &mut facts,
    );
    let chown = Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", synapse_server::USER, synapse_server::USER))
        .arg(&hs.media)
        .output()?;
    check_status("chown", &chown)?;
    let probes: usize = env_var("SYNAPSE_BACKUP_BENCH_PROBES")
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
        .max(10);
    let (user, room) = bench.rt.block_on(async {
        hs.start().await;
        let client = hs.client();
        let user = client.register("bench").await;
        let room = client.create_room(&user, "latency").await;
        (user, room)
    });
    // Warm up (caches, the room's first events).
    synapse_server::SendProbe::start(&hs, &user, &room, "warm", 30).finish(false);
    progress(&format!(
        "synapse {}: {} media files, {:.1} MB in its store",
        install.version,
        facts.media_files + facts.thumbnails,
        (facts.media_bytes + facts.thumbnail_bytes) as f64 / MB
    ));
    let capped = 40u32;
    let mut idle = Latencies {
        name: "idle".into(),
        sends: Vec::new(),
        backups: Vec::new(),
    };
    let lowest = Priority::new(19, IoPriority::Idle)?;
    let variants = [
        (
            "backup at the caller's priority (`normal`)".to_string(),
            config.options.clone().priority(Priority::inherit()),
        ),
        (
            format!("backup, gentle priority ({})", Priority::gentle()),
            config.options.clone().priority(Priority::gentle()),
        ),
        (
            format!("backup, lowest priority ({lowest})"),
            config.options.clone().priority(lowest),
        ),
        (
            format!("backup, gentle priority, upload capped at {capped} MiB/s"),
            config
                .options
                .clone()
                .priority(Priority::gentle())
                .max_bandwidth(Some(synapse_backup::Bandwidth::mib(capped))),
        ),
    ];
    let mut during: Vec<Latencies> = variants
        .iter()
        .map(|(n, _)| Latencies {
            name: n.clone(),
            sends: Vec::new(),
            backups: Vec::new(),
        })
        .collect();
    let mut tag = 0;
    for round in 1..=config.rounds {
        tag += 1;
        idle.sends.extend(
            synapse_server::SendProbe::start(&hs, &user, &room, &format!("idle{tag}"), probes)
                .finish(false),
        );
        for (i, variant) in during.iter_mut().enumerate() {
            tag += 1;
            let options = &variants[i].1;
            let probe = synapse_server::SendProbe::start(
                &hs,
                &user,
                &room,
                &format!("busy{tag}"),
                usize::MAX >> 1,
            );
            let started = Instant::now();
            let result = bench.rt.block_on(create_backup_with(
                &hs.container,
                &bench.params,
                PASSPHRASE,
                &hs.layout,
                options,
            ));
            let wall = started.elapsed().as_secs_f64();
            let sends = probe.finish(true);
            let report = result?;
            progress(&format!(
                "round {round}: {} in {wall:.1} s, {} sends, median {:.1} ms, p99 {:.1} ms",
                variant.name,
                sends.len(),
                median(&sends),
                percentile(&sends, 99.0)
            ));
            variant.sends.extend(sends);
            variant.backups.push(wall);
            bench.delete_ours(&report.id);
        }
    }
    let errors = hs.log_errors();
    bench.rt.block_on(hs.stop());
    writeln!(
        out,
        "Synapse {} (SQLite, as its own user, loopback), {} media files / {:.1} MB in its store; one client sends messages one after another over a keep-alive connection; {} rounds, sends pooled\n",
        install.version,
        facts.media_files + facts.thumbnails,
        (facts.media_bytes + facts.thumbnail_bytes) as f64 / MB,
        config.rounds
    )?;
    writeln!(
        out,
        "| condition | sends | median ms | p99 ms | max ms | backup wall s |\n|---|---|---|---|---|---|"
    )?;
    writeln!(out, "{}", idle.row())?;
    for variant in &during {
        writeln!(out, "{}", variant.row())?;
    }
    writeln!(out)?;
    if !errors.is_empty() {
        writeln!(
            out,
            "Synapse logged {} error(s), the first: {}\n",
            errors.len(),
            errors[0]
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Restore: in place and with a target dir, and where the time goes

impl Bench {
    /// The aws CLI with our per-run config file and the server's credentials.
    fn our_aws(&self, config: &Path) -> Command {
        let mut cmd = Command::new(&self.aws);
        cmd.env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("HOME", &self.base)
            .env("AWS_CONFIG_FILE", config)
            .env("AWS_SHARED_CREDENTIALS_FILE", self.base.join("none"))
            .env("AWS_ACCESS_KEY_ID", &self.server.access)
            .env("AWS_SECRET_ACCESS_KEY", &self.server.secret)
            .env("AWS_DEFAULT_REGION", s3_server::REGION)
            .env("AWS_ENDPOINT_URL", &self.server.endpoint)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_RETRY_MODE", "standard")
            .stdin(Stdio::null());
        cmd
    }

    /// The aws CLI config file of our download of `key` (`RestoreOptions::default()`'s
    /// range size and concurrency: those a probe of the object chooses).
    fn download_config(&self, key: &str) -> Result<PathBuf, BoxError> {
        let path = self.base.join("download-aws-config");
        let size = self.rt.block_on(self.client.head_object(key))?.size;
        let transfer = self.rt.block_on(
            synapse_backup::testing::internals::workload_download_settings(
                &RestoreOptions::default(),
                &self.client,
                key,
                size,
            ),
        );
        fs::write(
            &path,
            synapse_backup::testing::internals::aws_config_file(&self.params, &transfer)
                .map_err(|e| e.to_string())?,
        )?;
        Ok(path)
    }

    /// `gpg --decrypt` in a private GNUPGHOME, reading `input`.
    fn gpg_decrypt(&self, input: &Path) -> Result<Command, BoxError> {
        let gnupg = self.base.join("decrypt-gnupg");
        let _ = fs::remove_dir_all(&gnupg);
        make_private_dir(&gnupg)?;
        let pass = self.base.join("decrypt-passphrase");
        fs::write(&pass, PASSPHRASE)?;
        let mut cmd = Command::new("gpg");
        cmd.args([
            "--batch",
            "--no-tty",
            "--no-symkey-cache",
            "--pinentry-mode",
            "loopback",
            "--passphrase-file",
        ])
        .arg(&pass)
        .args(["--decrypt", "--output", "-"])
        .arg(input)
        .env("GNUPGHOME", &gnupg)
        .stdin(Stdio::null());
        Ok(cmd)
    }

    fn ours_extract(&self, id: &BackupId, dir: &Path) -> Result<(), BoxError> {
        self.ours_extract_with(id, dir, &RestoreOptions::default())
    }

    fn ours_extract_with(
        &self,
        id: &BackupId,
        dir: &Path,
        options: &RestoreOptions,
    ) -> Result<(), BoxError> {
        let report = self.rt.block_on(extract_backup_with(
            &self.container,
            &self.params,
            PASSPHRASE,
            id,
            &self.layout,
            &ExtractTarget::new(dir.to_string_lossy().into_owned()),
            options,
        ))?;
        self.phases.borrow_mut().push((
            format!("--target, {}", transfer_label(options)),
            report.phases,
        ));
        Ok(())
    }
}

/// Writes where our restores' time went, phase by phase (as their reports say): for
/// each label in `phases` (in order of first appearance), the median of each phase
/// over its runs, their sum and the fetch's share of it.
/// How a restore's data moved, for the phase table: `workload`, `library`, or the
/// library with ranges other than its defaults (`library, 3 x 16 MiB`).
fn transfer_label(options: &RestoreOptions) -> String {
    let defaults = RestoreOptions::default();
    if options.transfer == Transfer::Library
        && (options.library_range_mib, options.library_ranges_in_flight)
            != (
                defaults.library_range_mib,
                defaults.library_ranges_in_flight,
            )
    {
        match options.library_range_mib {
            Some(mib) => format!("library, {} x {mib} MiB", options.library_ranges_in_flight),
            None => format!("library, {} in flight", options.library_ranges_in_flight),
        }
    } else {
        options.transfer.to_string()
    }
}

/// The `Transfer::Library` restore with the bench's read-ahead ranges.
fn read_ahead_options(config: &Config) -> RestoreOptions {
    RestoreOptions::default()
        .transfer(Transfer::Library)
        .library_ranges_in_flight(config.read_ahead.0)
        .library_range_mib(config.read_ahead.1)
}

fn phases_table(
    phases: &[(String, synapse_backup::RestorePhases)],
    out: &mut String,
) -> Result<(), BoxError> {
    let mut labels: Vec<&str> = Vec::new();
    for (label, _) in phases {
        if !labels.contains(&label.as_str()) {
            labels.push(label);
        }
    }
    writeln!(
        out,
        "where our restores' time went (the phases their reports give, medians):\n\n| restore | runs | prepare s | fetch s (download, decrypt, extract) | checks s | swap s | cleanup s | sum s | fetch share |\n|---|---|---|---|---|---|---|---|---|"
    )?;
    for label in labels {
        let runs: Vec<_> = phases
            .iter()
            .filter(|(l, _)| l == label)
            .map(|(_, p)| p)
            .collect();
        let of = |f: fn(&synapse_backup::RestorePhases) -> std::time::Duration| {
            median(&runs.iter().map(|p| f(p).as_secs_f64()).collect::<Vec<_>>())
        };
        let sum = of(|p| p.total());
        let fetch = of(|p| p.fetch);
        writeln!(
            out,
            "| {label} | {} | {:.2} | {fetch:.2} | {:.2} | {:.2} | {:.2} | {sum:.2} | {:.0}% |",
            runs.len(),
            of(|p| p.prepare),
            of(|p| p.checks),
            of(|p| p.swap),
            of(|p| p.cleanup),
            100.0 * fetch / sum.max(1e-9),
        )?;
    }
    writeln!(out)?;
    Ok(())
}

/// Our restore with `--target` (a fresh dir each round) right after one in place, so
/// that the two are compared at the same point of the run (the in-place rounds of the
/// restore section ran earlier, before gigabytes of copies were written, and the run
/// drifts), then the restore's stage limits on the same object (`ours`: our backup's
/// id and object key): the download alone (our settings, to a pipe this process
/// drains), gpg's decryption alone (of a local copy of the object), tar's extraction
/// alone (of the decrypted archive, into a fresh dir). Returns the download-alone
/// median (s).
fn restore_breakdown(
    bench: &Bench,
    config: &Config,
    (id, key): (&BackupId, &str),
    in_place: &Runs,
    original: &BTreeMap<PathBuf, (u64, u64)>,
    out: &mut String,
    notes: &mut Vec<String>,
) -> Result<f64, BoxError> {
    let mut beside = Runs::new("ours in place (beside --target)");
    let mut target = Runs::new("ours, --target (a new dir)");
    let mut download = Runs::new("download alone (our settings)");
    let mut decrypt = Runs::new("gpg --decrypt alone (local file)");
    let mut extract = Runs::new("tar -x alone (local file, new dir)");
    let aws_config = bench.download_config(key)?;
    let cipher = bench.base.join("restore-cipher.gpg");
    let plain = bench.base.join("restore-plain.tar");
    let out_file = |path: &Path| -> Result<Stdio, BoxError> { Ok(fs::File::create(path)?.into()) };
    let status = bench
        .our_aws(&aws_config)
        .args(["s3", "cp", "--only-show-errors", "--no-progress"])
        .arg(format!("s3://{BUCKET}/{key}"))
        .arg(&cipher)
        .output()?;
    check_status("downloading our object", &status)?;
    let status = bench
        .gpg_decrypt(&cipher)?
        .stdout(out_file(&plain)?)
        .stderr(Stdio::piped())
        .output()?;
    check_status("decrypting our object", &status)?;
    for round in 1..=config.rounds {
        reset_remote_media(&bench.tree, &bench.facts, config.seed);
        let (r, cost) = bench.sampler.measure(|| bench.ours_restore(id));
        r?;
        beside.costs.push(cost);
        if fingerprint(&bench.tree) != *original {
            return Err(err("our restore did not give back the tree"));
        }
        let dir = bench.base.join(format!("restore-target-{round}"));
        let (r, cost) = bench.sampler.measure(|| bench.ours_extract(id, &dir));
        r?;
        target.costs.push(cost);
        fs::remove_dir_all(&dir)?;
        let (r, cost) = bench.sampler.measure(|| {
            let mut cmd = bench.our_aws(&aws_config);
            cmd.args(["s3", "cp", "--only-show-errors", "--no-progress"])
                .arg(format!("s3://{BUCKET}/{key}"))
                .arg("-");
            Bench::drain(cmd)
        });
        download.objects.push(r?);
        download.costs.push(cost);
        let cmd = bench.gpg_decrypt(&cipher)?;
        let (r, cost) = bench.sampler.measure(|| Bench::drain(cmd));
        r?;
        decrypt.costs.push(cost);
        let dir = bench.base.join(format!("restore-extract-{round}"));
        fs::create_dir_all(&dir)?;
        let (r, cost) = bench.sampler.measure(|| {
            Command::new("tar")
                .args(["-x", "-f"])
                .arg(&plain)
                .arg("-C")
                .arg(&dir)
                .output()
        });
        check_status("tar -x", &r?)?;
        extract.costs.push(cost);
        fs::remove_dir_all(&dir)?;
        progress(&format!(
            "round {round}: ours in place {:.2} s, --target {:.2} s, download {:.2} s, decrypt {:.2} s, extract {:.2} s",
            beside.costs[round - 1].wall,
            target.costs[round - 1].wall,
            download.costs[round - 1].wall,
            decrypt.costs[round - 1].wall,
            extract.costs[round - 1].wall,
        ));
    }
    let _ = fs::remove_file(&cipher);
    let _ = fs::remove_file(&plain);
    let _ = fs::remove_dir_all(bench.base.join("decrypt-gnupg"));
    let source = bench.source_bytes;
    writeln!(
        out,
        "### restore: in place, with a target dir, and its stage limits (median of {}; MB/s of source data; {})\n",
        config.rounds, bench.server.kind
    )?;
    writeln!(out, "{HEADER}")?;
    for r in [in_place, &beside, &target, &download, &decrypt, &extract] {
        writeln!(out, "{}", row(r, source))?;
    }
    writeln!(
        out,
        "\n--target ÷ in place, run one after the other: {:.2} (wall {:.2} s vs {:.2} s)",
        target.wall() / beside.wall(),
        target.wall(),
        beside.wall(),
    )?;
    let slowest = download.wall().max(decrypt.wall());
    writeln!(
        out,
        "\nours in place = {:.0}% of the slowest of download alone and decrypt alone ({:.2} s), {:.0}% of the download-alone limit; with --target = {:.0}% of that stage; ours in place − the slowest stage: {:.2} s (the checks, staging and swap, and the stages' time the pipeline does not overlap; the three stages alone sum to {:.2} s)\nCPU by command: download alone: {}; ours in place: {}\n",
        100.0 * slowest / in_place.wall(),
        slowest,
        100.0 * download.wall() / in_place.wall(),
        100.0 * slowest / target.wall(),
        in_place.wall() - slowest,
        download.wall() + decrypt.wall() + extract.wall(),
        download.by_command(),
        in_place.by_command(),
    )?;
    phases_table(&bench.phases.borrow(), out)?;
    notes.push(target_line(
        "restore (in place) vs its slowest stage's limit",
        100.0 * slowest / in_place.wall(),
        85.0,
        true,
        "%",
    ));
    Ok(download.wall())
}

// ---------------------------------------------------------------------------------
// New media between backups

/// Writes new local media (no thumbnails) of about `budget` bytes with sizes like the
/// fixture's; returns the files and their bytes.
/// Times the library's download alone of our backup's object `key` (ranged GETs
/// through `ObjectStore::get_object_range_stream`, requested ahead and read in order,
/// as `Transfer::Library`'s restore does, into a sink) once for each of the config's
/// `library_ranges`, and writes the times: which range size and in-flight count the
/// library should use on this server.
fn library_download_alone(
    bench: &Bench,
    config: &Config,
    key: &str,
    out: &mut String,
) -> Result<(), BoxError> {
    use futures_util::StreamExt;
    let size = bench.object_size(key);
    writeln!(
        out,
        "\nthe library's download alone ({:.1} MB, ranged GETs in order into a sink, ranges of up to 64 MiB read ahead, once each):\n\n| in flight x range MiB | s | MB/s | our CPU s | S3 server CPU s |\n|---|---|---|---|---|",
        size as f64 / MB
    )?;
    for &(in_flight, mib) in &config.library_ranges {
        let range = u64::from(mib.max(1)) << 20;
        let (r, cost) = bench.sampler.measure(|| {
            bench.rt.block_on(async {
                let ranges =
                    (0..size.div_ceil(range)).map(|i| (i * range, range.min(size - i * range)));
                // As the library's restore: a range of up to READ_AHEAD_MAX_MIB is read
                // whole by its own task as soon as it is requested; a larger one is
                // streamed in its turn.
                let read_ahead = u64::from(mib) <= synapse_backup::READ_AHEAD_MAX_MIB;
                let mut gets = futures_util::stream::iter(ranges)
                    .map(|(offset, length)| {
                        let (store, key) = (bench.client.clone(), key.to_string());
                        tokio::spawn(async move {
                            let mut body =
                                store.get_object_range_stream(&key, offset, length).await?;
                            if !read_ahead {
                                return Ok::<_, synapse_backup::S3Error>((Vec::new(), Some(body)));
                            }
                            let mut read = Vec::new();
                            while let Some(chunk) = body.next().await {
                                read.push(chunk?);
                            }
                            Ok((read, None))
                        })
                    })
                    .buffered(in_flight.max(1) as usize);
                let mut total = 0_u64;
                while let Some(got) = gets.next().await {
                    let (read, body) = got??;
                    total += read.iter().map(|c| c.len() as u64).sum::<u64>();
                    if let Some(mut body) = body {
                        while let Some(chunk) = body.next().await {
                            total += chunk?.len() as u64;
                        }
                    }
                }
                if total == size {
                    Ok(())
                } else {
                    Err(err(format!("read {total} of {size} bytes")))
                }
            })
        });
        r?;
        progress(&format!(
            "library download alone {in_flight} x {mib} MiB: {:.2} s",
            cost.wall
        ));
        writeln!(
            out,
            "| {in_flight} x {mib} | {:.2} | {:.0} | {:.2} | {:.2} |",
            cost.wall,
            size as f64 / MB / cost.wall,
            cost.self_cpu,
            cost.server_cpu
        )?;
    }
    writeln!(out)?;
    Ok(())
}

fn add_media(tree: &SynapseTree, budget: u64, seed: u64) -> (Vec<PathBuf>, u64) {
    let mut rng = Rng::new(seed);
    let content = tree.media.join("local_content");
    let (mut files, mut bytes) = (Vec::new(), 0u64);
    while bytes < budget {
        let size = media_size(&mut rng).min(budget - bytes).max(1024);
        let path = sharded(&content, &media_id(&mut rng));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        write_random(&path, size, &mut rng);
        files.push(path);
        bytes += size;
    }
    (files, bytes)
}

// ---------------------------------------------------------------------------------
// restic beside ours

/// restic (Debian's package; `scripts/restic.sh`) against the same server, with the
/// repository in the same bucket: a full backup of the backup set (remote media
/// excluded, as ours), a second after +10 MiB of media, a restore to a target dir;
/// ours does the same (a full backup that can base increments, `--incremental`, an
/// extraction with `--target`). Returns restic ÷ ours for the full backup and the
/// restore.
fn restic_section(
    bench: &Bench,
    config: &Config,
    out: &mut String,
    notes: &mut Vec<String>,
) -> Result<(f64, f64), BoxError> {
    let restic = which("restic").map_err(|_| {
        err("restic is not on PATH: install it with: sudo apt-get install -y restic (./scripts/bench does so when run as root)")
    })?;
    let version = Command::new(&restic).arg("version").output()?;
    let home = bench.base.join("restic-home");
    make_private_dir(&home)?;
    let paths = reference_paths(&bench.tree);
    let cmd = |repo: &str| {
        let mut c = Command::new(&restic);
        c.env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("HOME", &home)
            .env("RESTIC_REPOSITORY", repo)
            .env("RESTIC_PASSWORD", PASSPHRASE)
            .env("RESTIC_CACHE_DIR", home.join("cache"))
            .env("AWS_ACCESS_KEY_ID", &bench.server.access)
            .env("AWS_SECRET_ACCESS_KEY", &bench.server.secret)
            .env("AWS_DEFAULT_REGION", s3_server::REGION)
            .args(["--quiet", "-o", &format!("s3.region={}", s3_server::REGION)])
            .stdin(Stdio::null());
        c
    };
    let names = [
        "full backup",
        "second backup after +10 MiB of media",
        "restore to a target dir",
        "restore to a target dir, ours with `Transfer::Library`",
        "restore to a target dir, ours with `Transfer::Library` read ahead",
        "full backup, ours with `Transfer::Library`",
    ];
    // restic runs the first three (a full backup, a second, a restore); each of ours is
    // compared with the one of restic's this names.
    const RESTIC_OF: [usize; 6] = [0, 1, 2, 2, 2, 0];
    let phases_before = bench.phases.borrow().len();
    let mut restic_runs: Vec<Runs> = names[..3].iter().map(|n| Runs::new(n)).collect();
    let mut ours_runs: Vec<Runs> = names.iter().map(|n| Runs::new(n)).collect();
    let (mut restic_bucket, mut ours_bucket) = (Vec::new(), Vec::new());
    let incremental = config.options.clone().incremental(true);
    for round in 1..=config.rounds {
        let prefix = format!("restic-{round}");
        let repo = format!("s3:{}/{BUCKET}/{prefix}", bench.server.endpoint);
        check_status("restic init", &cmd(&repo).arg("init").output()?)?;
        let backup = || -> Result<(), BoxError> {
            check_status(
                "restic backup",
                &cmd(&repo).arg("backup").args(&paths).output()?,
            )
        };
        let (r, cost) = bench.sampler.measure(backup);
        r?;
        restic_runs[0].costs.push(cost);
        // The library's full backup first (deleted once timed, so that the workload's
        // full backup below is the increment's base, as before); restic's row is its one
        // full backup of this round.
        let library_full = incremental.clone().transfer(Transfer::Library);
        let (r, cost) = bench.sampler.measure(|| bench.ours_backup(&library_full));
        let first = r?;
        ours_runs[5].costs.push(cost);
        if !matches!(first.kind, BackupKind::Full { .. }) {
            return Err(err(format!(
                "our full backup with Transfer::Library beside restic was not full: {:?}",
                first.kind
            )));
        }
        bench.delete_ours(&first.id);
        let (r, cost) = bench.sampler.measure(|| bench.ours_backup(&incremental));
        let full = r?;
        ours_runs[0].costs.push(cost);
        let (added, _) = add_media(
            &bench.tree,
            10 << 20,
            config.seed ^ 0x10_0000 ^ round as u64,
        );
        let (r, cost) = bench.sampler.measure(backup);
        r?;
        restic_runs[1].costs.push(cost);
        let (r, cost) = bench.sampler.measure(|| bench.ours_backup(&incremental));
        let second = r?;
        ours_runs[1].costs.push(cost);
        if !matches!(second.kind, BackupKind::Incremental { .. }) {
            notes.push(format!(
                "our second backup beside restic was not incremental: {:?}",
                second.kind
            ));
        }
        for p in &added {
            let _ = fs::remove_file(p);
        }
        let dir = bench.base.join("restic-target");
        let (r, cost) = bench.sampler.measure(|| {
            check_status(
                "restic restore",
                &cmd(&repo)
                    .args(["restore", "latest", "--target"])
                    .arg(&dir)
                    .output()?,
            )
        });
        r?;
        restic_runs[2].costs.push(cost);
        let restored = synapse_tree::walk(&dir).len();
        fs::remove_dir_all(&dir)?;
        let dir = bench.base.join("ours-target");
        let (r, cost) = bench
            .sampler
            .measure(|| bench.ours_extract(&second.id, &dir));
        r?;
        ours_runs[2].costs.push(cost);
        let ours_restored = synapse_tree::walk(&dir).len();
        fs::remove_dir_all(&dir)?;
        // The same extraction with the library's download: restic's row is its one
        // restore of this round, not run again.
        let library = RestoreOptions::default().transfer(Transfer::Library);
        let (r, cost) = bench
            .sampler
            .measure(|| bench.ours_extract_with(&second.id, &dir, &library));
        r?;
        ours_runs[3].costs.push(cost);
        let library_restored = synapse_tree::walk(&dir).len();
        fs::remove_dir_all(&dir)?;
        if library_restored != ours_restored {
            return Err(err(format!(
                "Transfer::Library extracted {library_restored} files, the workload's download {ours_restored}"
            )));
        }
        let read_ahead = read_ahead_options(config);
        let (r, cost) = bench
            .sampler
            .measure(|| bench.ours_extract_with(&second.id, &dir, &read_ahead));
        r?;
        ours_runs[4].costs.push(cost);
        let read_ahead_restored = synapse_tree::walk(&dir).len();
        fs::remove_dir_all(&dir)?;
        if read_ahead_restored != ours_restored {
            return Err(err(format!(
                "Transfer::Library read ahead extracted {read_ahead_restored} files, the workload's download {ours_restored}"
            )));
        }
        progress(&format!(
            "round {round}: restic {:.2} / {:.2} / {:.2} s ({restored} files), ours {:.2} / {:.2} / {:.2} s ({ours_restored} files), with Transfer::Library {:.2} s, read ahead {:.2} s, its full backup {:.2} s",
            restic_runs[0].costs[round - 1].wall,
            restic_runs[1].costs[round - 1].wall,
            restic_runs[2].costs[round - 1].wall,
            ours_runs[0].costs[round - 1].wall,
            ours_runs[1].costs[round - 1].wall,
            ours_runs[2].costs[round - 1].wall,
            ours_runs[3].costs[round - 1].wall,
            ours_runs[4].costs[round - 1].wall,
            ours_runs[5].costs[round - 1].wall,
        ));
        restic_bucket.push(bench.bytes_under(&format!("{prefix}/")) as f64);
        ours_bucket.push(bench.bytes_under(&format!("{PREFIX}/")) as f64);
        bench.delete_ours(&second.id);
        bench.delete_ours(&full.id);
        if let Ok(objects) = bench
            .rt
            .block_on(bench.client.list_objects_with_prefix(&format!("{prefix}/")))
        {
            for o in objects {
                bench.delete_key(&o.key);
            }
        }
    }
    let _ = fs::remove_dir_all(&home);
    writeln!(
        out,
        "### restic beside ours ({}, {}; median of {}, remote media excluded from both; ours: full backup, `--incremental`, extraction with `--target`)\n",
        String::from_utf8_lossy(&version.stdout).trim(),
        bench.server.kind,
        config.rounds
    )?;
    writeln!(
        out,
        "| | restic s | ours s | restic ÷ ours | restic CPU s | ours CPU s | S3 server CPU s, restic / ours |\n|---|---|---|---|---|---|---|"
    )?;
    let cpu = |r: &Runs| r.med(|c| c.user + c.sys + c.self_cpu);
    for (o, r) in ours_runs.iter().zip(RESTIC_OF.map(|i| &restic_runs[i])) {
        writeln!(
            out,
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} / {:.2} |",
            o.name,
            r.wall(),
            o.wall(),
            r.wall() / o.wall(),
            cpu(r),
            cpu(o),
            r.med(|c| c.server_cpu),
            o.med(|c| c.server_cpu),
        )?;
    }
    writeln!(
        out,
        "| bucket after the two backups, MB | {:.1} | {:.1} | {:.2} | | |\n",
        median(&restic_bucket) / MB,
        median(&ours_bucket) / MB,
        median(&restic_bucket) / median(&ours_bucket),
    )?;
    writeln!(out, "CPU by command (medians per run):\n")?;
    for runs in [&restic_runs[2], &ours_runs[2], &ours_runs[3], &ours_runs[4]] {
        writeln!(out, "- {}: {}", runs.name, runs.by_command())?;
    }
    writeln!(out)?;
    // The phases of this section's extractions (of a chain: the full backup's pack, the
    // increment's and its database pack), apart from other sections' restores.
    let chain_phases: Vec<_> = bench.phases.borrow()[phases_before..]
        .iter()
        .map(|(label, p)| (format!("{label}, a chain"), *p))
        .collect();
    phases_table(&chain_phases, out)?;
    let backup = restic_runs[0].wall() / ours_runs[0].wall();
    let restore = restic_runs[2].wall() / ours_runs[2].wall();
    notes.push(target_line(
        "restic ÷ ours, full backup",
        backup,
        1.0,
        true,
        "x",
    ));
    notes.push(target_line(
        "restic ÷ ours, restore to a target dir",
        restore,
        1.0,
        true,
        "x",
    ));
    notes.push(target_line(
        "restic ÷ ours, full backup with Transfer::Library",
        restic_runs[RESTIC_OF[5]].wall() / ours_runs[5].wall(),
        1.0,
        true,
        "x",
    ));
    notes.push(target_line(
        "restic ÷ ours, restore to a target dir with Transfer::Library",
        restic_runs[RESTIC_OF[3]].wall() / ours_runs[3].wall(),
        1.0,
        true,
        "x",
    ));
    notes.push(target_line(
        &format!(
            "restic ÷ ours, restore to a target dir with Transfer::Library read ahead ({} x {} MiB)",
            config.read_ahead.0, config.read_ahead.1
        ),
        restic_runs[RESTIC_OF[4]].wall() / ours_runs[4].wall(),
        1.0,
        true,
        "x",
    ));
    Ok((backup, restore))
}

// ---------------------------------------------------------------------------------
// Incremental backups

/// The paths the incremental section changed, put back when it ends.
#[derive(Default)]
struct TreeChanges {
    added: Vec<PathBuf>,
    /// (live path, where it waits) of the media the chain "deleted".
    moved: Vec<(PathBuf, PathBuf)>,
}

impl TreeChanges {
    fn undo(&mut self) {
        for p in self.added.drain(..) {
            let _ = fs::remove_file(p);
        }
        for (live, aside) in self.moved.drain(..).rev() {
            let _ = fs::rename(aside, live);
        }
    }
}

/// A keys-and-database-only backup (the local media moved aside for it): what an
/// incremental backup costs besides its new media. Deleted at once, so that it never
/// becomes an incremental's base.
fn keys_and_db_backup(bench: &Bench, config: &Config) -> Result<(Cost, u64), BoxError> {
    let aside = bench.base.join("media-aside");
    fs::create_dir_all(&aside)?;
    let dirs = ["local_content", "local_thumbnails"];
    for d in dirs {
        fs::rename(bench.tree.media.join(d), aside.join(d))?;
    }
    let (r, cost) = bench.sampler.measure(|| bench.ours_backup(&config.options));
    for d in dirs {
        fs::rename(aside.join(d), bench.tree.media.join(d))?;
    }
    let report = r?;
    bench.delete_ours(&report.id);
    Ok((cost, report.manifest.ciphertext_bytes))
}

/// Moves one in `per` local media files aside (at least one file: the chain's
/// deletions).
fn delete_media(bench: &Bench, per: usize, changes: &mut TreeChanges) -> Result<usize, BoxError> {
    let mut files = synapse_tree::walk(&bench.tree.media.join("local_content"));
    files.sort();
    let nth = per.min(files.len() / 2).max(2);
    let aside = bench.base.join("deleted-media");
    fs::create_dir_all(&aside)?;
    let mut n = 0;
    for (i, path) in files.into_iter().enumerate() {
        if i % nth != nth / 2 || changes.added.contains(&path) {
            continue;
        }
        let to = aside.join(format!("{}", changes.moved.len()));
        fs::rename(&path, &to)?;
        changes.moved.push((path, to));
        n += 1;
    }
    Ok(n)
}

/// A full backup (with an index), then 6 increments of +1 % new media each (some
/// files deleted at the 3rd and 5th), each beside a keys-and-database-only backup;
/// then the newest of the chain of 7 restored against a full backup of the same tree.
fn incremental_section(
    bench: &Bench,
    config: &Config,
    upload_rate: Option<f64>,
    out: &mut String,
    notes: &mut Vec<String>,
) -> Result<f64, BoxError> {
    let mut changes = TreeChanges::default();
    let mut chain: Vec<BackupId> = Vec::new();
    let result = incremental_chain(
        bench,
        config,
        upload_rate,
        out,
        notes,
        &mut changes,
        &mut chain,
    );
    for id in chain.iter().rev() {
        bench.delete_ours(id);
    }
    changes.undo();
    result
}

fn incremental_chain(
    bench: &Bench,
    config: &Config,
    upload_rate: Option<f64>,
    out: &mut String,
    notes: &mut Vec<String>,
    changes: &mut TreeChanges,
    chain: &mut Vec<BackupId>,
) -> Result<f64, BoxError> {
    let rate = match upload_rate {
        Some(r) => r,
        None => {
            // The upload-alone rate, as the limits section measures it.
            let size = bench.source_bytes.min(256 << 20);
            let stream = bench.base.join("incremental-upload.bin");
            write_random(&stream, size, &mut Rng::new(config.seed ^ 0xF00D));
            let aws_config = bench.base.join("upload-aws-config");
            fs::write(
                &aws_config,
                synapse_backup::testing::internals::aws_config_file(&bench.params, &config.options)
                    .map_err(|e| e.to_string())?,
            )?;
            let (r, cost) = bench
                .sampler
                .measure(|| bench.upload_alone(&stream, &aws_config, "limit/incremental"));
            r?;
            bench.delete_key("limit/incremental");
            let _ = fs::remove_file(&stream);
            size as f64 / cost.wall
        }
    };
    let incremental = config.options.clone().incremental(true);
    let (r, full_cost) = bench.sampler.measure(|| bench.ours_backup(&incremental));
    let full = r?;
    chain.push(full.id.clone());
    progress(&format!("incremental: full backup {:.2} s", full_cost.wall));
    let step = ((bench.facts.media_bytes + bench.facts.thumbnail_bytes) / 100).max(1 << 20);
    let mut rows = String::new();
    let (mut incr_walls, mut db_walls, mut ratios, mut predicted) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut db_object = 0;
    for n in 1..=6u64 {
        let deleted = if n == 3 || n == 5 {
            delete_media(bench, 400, changes)?
        } else {
            0
        };
        let (files, bytes) = add_media(&bench.tree, step, config.seed ^ 0x1_0000 ^ n);
        changes.added.extend(files.iter().cloned());
        let (db_cost, db_bytes) = keys_and_db_backup(bench, config)?;
        db_object = db_bytes;
        let (r, cost) = bench.sampler.measure(|| bench.ours_backup(&incremental));
        let report = r?;
        chain.push(report.id.clone());
        // Its pack and, for an increment, its database pack (0 when there is none).
        let pack = bench.object_size(&report.key)
            + bench.object_size(&format!(
                "{}{}",
                report.key,
                synapse_backup::DATABASE_SUFFIX
            ));
        let kind = match &report.kind {
            BackupKind::Incremental { .. } => "incremental".to_string(),
            other => format!("FULL ({other:?})"),
        };
        let expected = db_cost.wall + bytes as f64 / rate;
        progress(&format!(
            "incremental {n}: {:.2} s ({kind}), keys and database only {:.2} s",
            cost.wall, db_cost.wall
        ));
        writeln!(
            rows,
            "| {n} | {kind} | {} new, {deleted} deleted | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} |",
            files.len(),
            bytes as f64 / MB,
            pack as f64 / MB,
            (pack as f64 - db_bytes as f64) / bytes as f64,
            cost.wall,
            db_cost.wall,
            expected,
            cost.wall / expected,
            cost.peak_self as f64 / MB,
        )?;
        ratios.push(pack as f64 / (bytes + db_bytes) as f64);
        incr_walls.push(cost.wall);
        db_walls.push(db_cost.wall);
        predicted.push(expected);
    }
    writeln!(
        out,
        "### incremental ({}): a full backup ({:.2} s, {:.1} MB), then 6 × +1 % new local media ({:.1} MB each; one local media file in 400, at least one, deleted at the 3rd and 5th), each `--incremental` beside a keys-and-database-only backup\n",
        bench.server.kind,
        full_cost.wall,
        full.manifest.ciphertext_bytes as f64 / MB,
        step as f64 / MB
    )?;
    writeln!(
        out,
        "| # | kind | media | new MB | pack MB | (pack − keys+db object) ÷ new | wall s | keys+db only s | keys+db + new at upload-alone rate s | wall ÷ that | our RSS MB |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )?;
    write!(out, "{rows}")?;
    let time_ratio = median(&incr_walls) / median(&predicted);
    writeln!(
        out,
        "\nupload-alone rate {:.1} MB/s; keys-and-database-only object {:.1} MB; median incremental {:.2} s, keys and database only {:.2} s\n",
        rate / MB,
        db_object as f64 / MB,
        median(&incr_walls),
        median(&db_walls)
    )?;
    notes.push(target_line(
        "incremental pack ÷ (new media + keys-and-database object)",
        median(&ratios),
        1.1,
        false,
        "x",
    ));
    notes.push(target_line(
        "incremental time ÷ (keys-and-database backup + new bytes at the upload-alone rate)",
        time_ratio,
        1.2,
        false,
        "x",
    ));
    restore_chain(bench, config, out, notes, chain)
}

/// The newest of the chain restored in place, alternating with a full backup of the
/// same tree; both must give the tree back.
fn restore_chain(
    bench: &Bench,
    config: &Config,
    out: &mut String,
    notes: &mut Vec<String>,
    chain: &mut Vec<BackupId>,
) -> Result<f64, BoxError> {
    let newest = chain.last().cloned().ok_or_else(|| err("no chain"))?;
    let state = fingerprint(&bench.tree);
    let report = bench.ours_backup(&config.options)?;
    chain.push(report.id.clone());
    let mut chained = Runs::new(&format!("newest of the chain of {}", chain.len() - 1));
    let mut full = Runs::new("full backup of the same tree");
    let mut chained_library = Runs::new(&format!(
        "newest of the chain of {}, Transfer::Library",
        chain.len() - 1
    ));
    let mut full_library = Runs::new("full backup of the same tree, Transfer::Library");
    let mut chained_aws = Runs::new(&format!(
        "newest of the chain of {}, small_pack_mib 0 (every pack by the aws CLI)",
        chain.len() - 1
    ));
    let workload = RestoreOptions::default();
    let all_aws = RestoreOptions::default().small_pack_mib(0);
    let library = RestoreOptions::default().transfer(Transfer::Library);
    for round in 1..=config.rounds {
        for (runs, id, options) in [
            (&mut chained, &newest, &workload),
            (&mut chained_aws, &newest, &all_aws),
            (&mut full, &report.id, &workload),
            (&mut chained_library, &newest, &library),
            (&mut full_library, &report.id, &library),
        ] {
            let (r, cost) = bench
                .sampler
                .measure(|| bench.ours_restore_with(id, options));
            r?;
            if fingerprint(&bench.tree) != state {
                return Err(err(format!(
                    "the restore of {id} ({}) did not give back the tree",
                    runs.name
                )));
            }
            progress(&format!(
                "round {round}: restore of the {} {:.2} s",
                runs.name, cost.wall
            ));
            runs.costs.push(cost);
        }
    }
    writeln!(
        out,
        "restore in place, median of {} (both give the tree back):\n",
        config.rounds
    )?;
    writeln!(out, "{HEADER}")?;
    for runs in [
        &chained,
        &chained_aws,
        &full,
        &chained_library,
        &full_library,
    ] {
        writeln!(out, "{}", row(runs, bench.source_bytes))?;
    }
    writeln!(out)?;
    let ratio = chained.wall() / full.wall();
    notes.push(target_line(
        "restore of the newest of a chain of 7 ÷ a full restore",
        ratio,
        1.2,
        false,
        "x",
    ));
    notes.push(target_line(
        "the same with Transfer::Library (both)",
        chained_library.wall() / full_library.wall(),
        1.2,
        false,
        "x",
    ));
    Ok(ratio)
}

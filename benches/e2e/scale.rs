//! The `scale` section: many small media files (10,000 and 100,000 by default,
//! `SYNAPSE_BACKUP_BENCH_SCALE`), ours only, one run each. Every command is the
//! `synapse-backup` CLI that cargo builds beside the bench, run as a fresh process with
//! default options, so that its peak RSS is its own: VmHWM read from
//! `/proc/<pid>/status` every 5 ms until it exits (the last reading before its exit; the
//! pipeline's processes are its children and are not counted in it). Per count: a full
//! backup without a file index (`create`, deleted at once), a full backup (asked for as
//! incremental, so it writes the file index), verify, restore in place and restore
//! `--target` of it, then an incremental backup on top of it (+1 % new media) and the
//! same three reads of it. The bound is 32 MB per command at 100,000 files;
//! time per file should stay flat as the count grows.
//!
//! `SYNAPSE_BACKUP_BENCH_SCALE_STEPS` (default `plain,verify,restore,extract,incremental`)
//! chooses what runs beside the full create, e.g. `restore` alone for a run at 1,000,000
//! files (without `incremental`, the full backup is made without a file index).
//!
//! `SYNAPSE_BACKUP_BENCH_SCALE_WRAP` runs every command under a profiler, e.g.
//! `heaptrack -o /tmp/ht/{}` (words split on whitespace, `{}` replaced by the command's
//! number and name); the RSS measured is then the wrapper's, not the command's.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::synapse_tree::{SynapseTree, TreeSpec};
use super::{
    BUCKET, Bench, BoxError, Config, Cost, MB, PASSPHRASE, PREFIX, Rng, env_var, err,
    make_private_dir, media_id, progress, s3_server, sharded, write_random,
};

/// How often the command's VmHWM is read.
const POLL: Duration = Duration::from_millis(5);

/// The variables the CLI reads, removed so that the caller's environment does not
/// reach it.
const CLI_VARS: [&str; 8] = [
    "AWS_SESSION_TOKEN",
    "SYNAPSE_BACKUP_ROOT",
    "SYNAPSE_BACKUP_S3",
    "SYNAPSE_BACKUP_PASSPHRASE",
    "SYNAPSE_BACKUP_PASSPHRASE_FILE",
    "SYNAPSE_BACKUP_ACCESS_KEY",
    "SYNAPSE_BACKUP_SECRET_KEY",
    "RUST_LOG",
];

/// One command's run: what it printed, what it cost, its own peak RSS (bytes).
struct Ran {
    stdout: String,
    cost: Cost,
    peak: u64,
}

/// The CLI and the files it is given.
struct Cli {
    binary: PathBuf,
    s3: PathBuf,
    passphrase: PathBuf,
    aws: String,
    logs: PathBuf,
}

impl Cli {
    fn new(bench: &Bench, dir: &Path) -> Result<Cli, BoxError> {
        make_private_dir(dir)?;
        let data = bench.server.relation_data();
        let s3 = dir.join("s3.yaml");
        let text = format!(
            "access-key: {}\nsecret-key: {}\nbucket: {BUCKET}\nendpoint: {}\nregion: {}\n\
             s3-uri-style: path\npath: {PREFIX}\n",
            data["access-key"],
            data["secret-key"],
            data["endpoint"],
            s3_server::REGION
        );
        fs::write(&s3, text)?;
        let passphrase = dir.join("passphrase");
        fs::write(&passphrase, format!("{PASSPHRASE}\n"))?;
        fs::set_permissions(
            &passphrase,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
        Ok(Cli {
            binary: PathBuf::from(env!("CARGO_BIN_EXE_synapse-backup")),
            s3,
            passphrase,
            aws: bench.aws.clone(),
            logs: dir.to_path_buf(),
        })
    }

    /// Runs `synapse-backup --json … args` on `root`, measured; fails with its stderr
    /// when it exits non-zero.
    fn run(&self, bench: &Bench, root: &Path, args: &[&str]) -> Result<Ran, BoxError> {
        let mut cmd = match env_var("SYNAPSE_BACKUP_BENCH_SCALE_WRAP") {
            Some(wrap) => {
                static RUNS: std::sync::atomic::AtomicUsize =
                    std::sync::atomic::AtomicUsize::new(0);
                let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let name = format!("{n}-{}", args.join("-").replace(['/', ' '], "_"));
                let mut words = wrap.split_whitespace().map(|w| w.replace("{}", &name));
                let mut cmd = Command::new(words.next().ok_or("empty wrapper")?);
                cmd.args(words).arg(&self.binary);
                cmd
            }
            None => Command::new(&self.binary),
        };
        for var in CLI_VARS {
            cmd.env_remove(var);
        }
        let (out, errs) = (self.logs.join("stdout"), self.logs.join("stderr"));
        cmd.env("AWS_EC2_METADATA_DISABLED", "true")
            .arg("--root")
            .arg(root)
            .arg("--s3")
            .arg(&self.s3)
            .arg("--passphrase-file")
            .arg(&self.passphrase)
            .args(["--aws", &self.aws, "--bash", "bash", "--json"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out)?)
            .stderr(fs::File::create(&errs)?);
        let (result, cost) = bench.sampler.measure(|| -> Result<_, BoxError> {
            let mut child = cmd.spawn()?;
            let status_file = format!("/proc/{}/status", child.id());
            let mut peak = 0;
            loop {
                // VmHWM only grows; a zombie has none, so the last reading stands.
                if let Some(kib) = fs::read_to_string(&status_file)
                    .ok()
                    .as_deref()
                    .and_then(vm_hwm_kib)
                {
                    peak = peak.max(kib * 1024);
                }
                if let Some(status) = child.try_wait()? {
                    return Ok((status, peak));
                }
                std::thread::sleep(POLL);
            }
        });
        let (status, peak) = result?;
        let stdout = fs::read_to_string(&out)?;
        if !status.success() {
            return Err(err(format!(
                "synapse-backup {} failed ({status}): {}",
                args.join(" "),
                fs::read_to_string(&errs)?
            )));
        }
        Ok(Ran { stdout, cost, peak })
    }
}

/// The `VmHWM:` of a `/proc/<pid>/status` text, in KiB.
fn vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Writes `n` small local media files under `content`; gives their bytes.
fn scale_media(content: &Path, n: usize, rng: &mut Rng) -> Result<u64, BoxError> {
    let mut bytes = 0;
    for _ in 0..n {
        let id = media_id(rng);
        let path = sharded(content, &id);
        fs::create_dir_all(path.parent().unwrap())?;
        let size = 512 + rng.next_u64() % 3584;
        write_random(&path, size, rng);
        bytes += size;
    }
    Ok(bytes)
}

/// What runs after the full create.
struct Steps {
    plain: bool,
    verify: bool,
    restore: bool,
    extract: bool,
    incremental: bool,
}

impl Steps {
    fn from_env() -> Steps {
        let list = env_var("SYNAPSE_BACKUP_BENCH_SCALE_STEPS")
            .unwrap_or_else(|| "plain,verify,restore,extract,incremental".into());
        let has = |name: &str| list.split(',').any(|s| s.trim() == name);
        Steps {
            plain: has("plain"),
            verify: has("verify"),
            restore: has("restore"),
            extract: has("extract"),
            incremental: has("incremental"),
        }
    }
}

/// One row of the table: a command of one backup at one count.
struct Row {
    files: usize,
    backup: &'static str,
    command: &'static str,
    ran: Ran,
}

impl Row {
    fn line(&self) -> String {
        format!(
            "| {} | {} | {} | {:.2} | {:.3} | {:.2} | {:.2} | **{:.1}** | {:.1} |",
            self.files,
            self.backup,
            self.command,
            self.ran.cost.wall,
            self.ran.cost.wall * 1000.0 / self.files as f64,
            self.ran.cost.user,
            self.ran.cost.sys,
            self.ran.peak as f64 / MB,
            self.ran.cost.peak_tree as f64 / MB,
        )
    }
}

/// The reads of backup `id`: verify, restore in place, restore `--target`.
fn reads(
    bench: &Bench,
    cli: &Cli,
    steps: &Steps,
    root: &Path,
    id: &str,
    (files, backup): (usize, &'static str),
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    let mut push = |command, ran: Ran| {
        progress(&format!(
            "scale {files} {backup}: {command} {:.2} s, {:.1} MB (its peak RSS)",
            ran.cost.wall,
            ran.peak as f64 / MB
        ));
        rows.push(Row {
            files,
            backup,
            command,
            ran,
        });
    };
    if steps.verify {
        push("verify", cli.run(bench, root, &["verify", id])?);
    }
    if steps.restore {
        push("restore", cli.run(bench, root, &["restore", id, "--yes"])?);
    }
    if steps.extract {
        let target = root.with_extension("extract");
        let dir = target.to_string_lossy().into_owned();
        push(
            "restore --target",
            cli.run(bench, root, &["restore", id, "--target", &dir])?,
        );
        fs::remove_dir_all(&target)?;
    }
    Ok(())
}

/// The `--json` report a command printed (a wrapper may print its own lines around it).
fn report_json(stdout: &str) -> Result<serde_json::Value, serde_json::Error> {
    let start = stdout.find("{\n").or_else(|| stdout.find('{')).unwrap_or(0);
    let end = stdout.rfind('}').map_or(stdout.len(), |e| e + 1);
    serde_json::from_str(stdout.get(start..end).unwrap_or(""))
}

/// A restore's phases from its `--json` report (`prepare 0.31 s, fetch …`), if it
/// has them.
fn report_phases(stdout: &str) -> Option<String> {
    let report = report_json(stdout).ok()?;
    let phases = report["phases"].as_object()?;
    let text: Vec<String> = ["prepare", "fetch", "checks", "swap", "cleanup"]
        .iter()
        .filter_map(|name| Some(format!("{name} {:.2} s", phases.get(*name)?.as_f64()?)))
        .collect();
    Some(text.join(", "))
}

/// The created backup's id and object bytes, from `create --json`.
fn created(ran: &Ran) -> Result<(String, u64, String), BoxError> {
    let report = report_json(&ran.stdout)?;
    let id = report["id"]
        .as_str()
        .ok_or_else(|| err(format!("create --json printed no id: {}", ran.stdout)))?;
    Ok((
        id.to_string(),
        report["ciphertext_bytes"].as_u64().unwrap_or(0),
        report["kind"]["kind"].as_str().unwrap_or("").to_string(),
    ))
}

pub(super) fn scale_section(
    bench: &Bench,
    config: &Config,
    out: &mut String,
) -> Result<(), BoxError> {
    let steps = Steps::from_env();
    let cli = Cli::new(bench, &bench.base.join("scale-cli"))?;
    writeln!(
        out,
        "### scale: many small media files (the CLI, default options, each command a fresh process)\n"
    )?;
    let mut rows: Vec<Row> = Vec::new();
    let mut sizes = String::new();
    for &n in &config.scale {
        let root = bench.base.join(format!("scale-{n}"));
        let tree = SynapseTree::create(
            &root,
            &TreeSpec {
                media_files: 0,
                media_bytes: 0,
                db_rows: 0,
                seed: config.seed,
            },
        );
        let mut rng = Rng::new(config.seed ^ n as u64);
        let content = tree.media.join("local_content");
        let bytes = scale_media(&content, n, &mut rng)?;
        if steps.plain {
            let ran = cli.run(bench, &root, &["create"])?;
            let (id, _, _) = created(&ran)?;
            progress(&format!(
                "scale {n}: create (no index) {:.2} s, {:.1} MB (its peak RSS)",
                ran.cost.wall,
                ran.peak as f64 / MB
            ));
            bench.delete_ours(&id.parse()?);
            rows.push(Row {
                files: n,
                backup: "full, no index",
                command: "create",
                ran,
            });
        }
        let (args, label): (&[&str], _) = if steps.incremental {
            (&["create", "--incremental"], "full, with index")
        } else {
            (&["create"], "full, no index")
        };
        let ran = cli.run(bench, &root, args)?;
        let (full, object, _) = created(&ran)?;
        progress(&format!(
            "scale {n}: create {:.2} s, {:.1} MB (its peak RSS)",
            ran.cost.wall,
            ran.peak as f64 / MB
        ));
        writeln!(
            sizes,
            "| {n} | {:.1} | {:.1} |",
            bytes as f64 / MB,
            object as f64 / MB
        )?;
        rows.push(Row {
            files: n,
            backup: label,
            command: "create",
            ran,
        });
        // The incremental backup on top of it: 1 % new media. Made before anything is
        // restored in place (a restored file is a new one to the next backup).
        let inc = if steps.incremental {
            scale_media(&content, (n / 100).max(1), &mut rng)?;
            let ran = cli.run(bench, &root, &["create", "--incremental"])?;
            let (id, _, kind) = created(&ran)?;
            if kind != "incremental" {
                return Err(err(format!(
                    "scale {n}: the second backup is not incremental: {}",
                    ran.stdout
                )));
            }
            progress(&format!(
                "scale {n}: incremental create {:.2} s, {:.1} MB (its peak RSS)",
                ran.cost.wall,
                ran.peak as f64 / MB
            ));
            rows.push(Row {
                files: n,
                backup: "incremental (+1 %)",
                command: "create",
                ran,
            });
            Some(id)
        } else {
            None
        };
        reads(bench, &cli, &steps, &root, &full, (n, label), &mut rows)?;
        if let Some(id) = &inc {
            let backup = (n, "incremental (+1 %)");
            reads(bench, &cli, &steps, &root, id, backup, &mut rows)?;
            bench.delete_ours(&id.parse()?);
        }
        bench.delete_ours(&full.parse()?);
        fs::remove_dir_all(&root)?;
    }
    writeln!(
        out,
        "| media files | source MB | object MB (full) |\n|---|---|---|\n{sizes}"
    )?;
    writeln!(
        out,
        "| media files | backup | command | wall s | s per 1,000 files | CPU user s | CPU sys s | its peak RSS MB | pipeline peak RSS MB |\n|---|---|---|---|---|---|---|---|---|"
    )?;
    for row in &rows {
        writeln!(out, "{}", row.line())?;
    }
    // Time per file as the count grows, per command (the first count against each
    // larger one).
    let first = config.scale.first().copied().unwrap_or(0);
    for row in rows.iter().filter(|r| r.files != first) {
        if let Some(base) = rows
            .iter()
            .find(|b| b.files == first && b.backup == row.backup && b.command == row.command)
        {
            writeln!(
                out,
                "\n{} {} at {} vs {} files: {:.1}x the files took {:.2}x the time ({:.3} vs {:.3} s per 1,000 files)",
                row.backup,
                row.command,
                row.files,
                first,
                row.files as f64 / first as f64,
                row.ran.cost.wall / base.ran.cost.wall,
                row.ran.cost.wall * 1000.0 / row.files as f64,
                base.ran.cost.wall * 1000.0 / first as f64,
            )?;
        }
    }
    // Where each restore's time went, from its report (`--json`'s `phases`).
    for row in &rows {
        if let Some(phases) = report_phases(&row.ran.stdout) {
            writeln!(
                out,
                "\n{} {} at {} files, by phase: {phases}",
                row.backup, row.command, row.files
            )?;
        }
    }
    writeln!(
        out,
        "\nIts peak RSS is the command's own process (VmHWM of the fresh `synapse-backup` process, read every 5 ms until it exits); the pipeline's is the largest sum of the RSS of every process of the run (the command, bash, tar, gpg, the aws CLI). Target: ≤ 32 MB per command at 100,000 files."
    )?;
    Ok(())
}

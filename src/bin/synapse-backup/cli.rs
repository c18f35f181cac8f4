//! The command line as clap parses it: the global flags, the subcommands and their
//! flags, and the help text after them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use synapse_backup::{BackupId, Bandwidth, Compression, ConfigError, Layout};

pub(crate) const AFTER_HELP: &str = "\
The --s3 file holds the s3-integrator relation keys (YAML, or JSON when it ends in .json):
  bucket (required), endpoint and/or region (one is required), access-key, secret-key,
  path, s3-uri-style (path|host), tls-ca-chain, storage-class, delete-older-than-days.
  Any other key is an error. The passphrase file must not be writable by others.

Environment:
  SYNAPSE_BACKUP_ACCESS_KEY        access-key (overrides the --s3 file)
  SYNAPSE_BACKUP_SECRET_KEY        secret-key (overrides the --s3 file)
  AWS_SESSION_TOKEN                session-token (temporary credentials)
  SYNAPSE_BACKUP_S3                the --s3 file
  SYNAPSE_BACKUP_ROOT              --root
  SYNAPSE_BACKUP_PEBBLE            --pebble (the Pebble daemon's socket)
  SYNAPSE_BACKUP_PASSPHRASE_FILE   the --passphrase-file
  SYNAPSE_BACKUP_PASSPHRASE        the passphrase itself, when no passphrase file is given
  SYNAPSE_BACKUP_S3_TIMEOUT        --s3-timeout
  SYNAPSE_BACKUP_PROGRESS_EVERY    seconds between progress lines on stderr when it is not a
                                   terminal or with --json (default 30; 0: every report)
  RUST_LOG                         log filter (overrides -v), e.g. synapse_backup=debug

Wherever a backup id is taken, `latest` names the newest complete backup.
With --json, every command prints JSON on stdout, and a failure prints
{\"error\": {\"kind\", \"message\", \"exit_code\"}}.

create, restore, delete and prune hold a lock object (<path>/.synapse-backup.lock) so
that units sharing the bucket never run them at once; list, ls, verify and
restore --target (which change nothing in the bucket) do not take it.

Exit codes:
  0    ok
  1    the operation failed (the message says why: e.g. missing bucket, unreachable
       endpoint, refused credentials, backup not found)
  2    bad usage or configuration (nothing changed)
  3    another operation holds the backup lock (the message names it; nothing changed)
  4    declined at the confirmation prompt (nothing changed)
  129  stopped by SIGHUP, 130 by SIGINT (Ctrl-C), 143 by SIGTERM, after cleaning up";

/// Back up and restore a Matrix Synapse homeserver (signing keys, SQLite database,
/// local media) to S3-compatible storage as gpg-encrypted tar archives.
#[derive(Parser)]
#[command(name = "synapse-backup", version, after_help = AFTER_HELP)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The flags every subcommand takes, shown after a subcommand's own flags in its
/// `--help`, under their own headings.
#[derive(Args)]
#[command(next_help_heading = "Global options")]
pub(crate) struct GlobalArgs {
    /// Run everything in a Pebble-managed workload through the Pebble daemon's socket
    /// (e.g. /charm/containers/synapse/pebble.socket): the paths, --user and the tools
    /// are the workload's, --service names a Pebble service, and the default owner is the
    /// data dir's owner in the workload.
    #[arg(
        long,
        value_name = "SOCKET",
        global = true,
        env = "SYNAPSE_BACKUP_PEBBLE"
    )]
    pub(crate) pebble: Option<PathBuf>,
    /// S3 parameters: a YAML or JSON file with the s3-integrator relation keys [required].
    #[arg(long, value_name = "FILE", global = true, env = "SYNAPSE_BACKUP_S3")]
    pub(crate) s3: Option<PathBuf>,
    /// File holding the encryption passphrase (one trailing newline is ignored).
    #[arg(
        long,
        value_name = "FILE",
        global = true,
        env = "SYNAPSE_BACKUP_PASSPHRASE_FILE"
    )]
    pub(crate) passphrase_file: Option<PathBuf>,
    /// Do not take the backup lock: only for a single unit on an S3 server without
    /// conditional writes (If-None-Match / If-Match).
    #[arg(long, global = true)]
    pub(crate) no_lock: bool,
    /// Wait up to this many seconds for a backup lock held by another operation
    /// (default: fail at once with exit code 3).
    #[arg(long, value_name = "SECONDS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(..=604_800), global = true)]
    pub(crate) lock_wait: u64,
    /// Give up an S3 request without an answer after this many seconds (each attempt;
    /// all attempts together get three times it), so an endpoint that never answers
    /// cannot hang a command.
    #[arg(long, value_name = "SECONDS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86_400), global = true, env = "SYNAPSE_BACKUP_S3_TIMEOUT")]
    pub(crate) s3_timeout: u64,
    /// How long the lock lives after its last refresh (it is refreshed every third of
    /// that while held); a killed process's lock expires after it.
    #[arg(long, value_name = "SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400), global = true)]
    pub(crate) lock_ttl: u64,
    /// Cap create's upload at RATE (the aws CLI's max_bandwidth), so a backup does not
    /// saturate the network: a bare number is MiB/s; or with a unit K, M or G, any
    /// case, 1K = 1024 bytes/s (500K, 10M, 1G, 10MiB/s); whole KiB/s (default: no cap).
    #[arg(long, value_name = "RATE", value_parser = parse_rate, global = true)]
    pub(crate) limit_upload: Option<Bandwidth>,
    /// Cap the download of verify and restore at RATE, as --limit-upload (a bare
    /// number is MiB/s; default: no cap).
    #[arg(long, value_name = "RATE", value_parser = parse_rate, global = true)]
    pub(crate) limit_download: Option<Bandwidth>,
    /// The CPU and I/O priority of the pipelines create, verify, restore and extract run
    /// in the workload: `gentle` (10,best-effort:7), `normal` (this command's own) or
    /// `NICE[,IO]` with IO `inherit`, `idle` or `best-effort:0..7` (e.g. `19,idle`).
    #[arg(
        long,
        value_name = "PRIORITY",
        global = true,
        env = "SYNAPSE_BACKUP_PRIORITY",
        default_value = "gentle"
    )]
    pub(crate) priority: synapse_backup::Priority,
    /// Who uploads for create and downloads for verify, restore and extract:
    /// `workload` (its aws CLI, the default) or `library` (this command, reading the
    /// ciphertext from the workload's tar | gpg, or streaming it into its gpg | tar:
    /// no S3 credential or SSE-C key enters the workload, which needs no aws CLI;
    /// --limit-upload and --limit-download do not apply).
    #[arg(
        long,
        value_name = "WHO",
        global = true,
        env = "SYNAPSE_BACKUP_TRANSFER",
        default_value = "workload"
    )]
    pub(crate) transfer: synapse_backup::Transfer,
    /// With `--transfer library`, the ranged GETs of verify, restore and extract as
    /// IN_FLIGHTxMIB: how many at once (1 to 64) and their size in MiB. Without it the
    /// size is chosen per object by timing its first 16 MiB range: 12x4 read ahead where
    /// the server serves a range for no more than its bytes (AWS S3, MinIO, Ceph), one
    /// streamed GET per GiB where it reads the whole object for every range (moto).
    /// Ranges of up to 64 MiB are read ahead, each downloaded whole, side by side, so
    /// this command holds up to (IN_FLIGHT + 1) x MIB MiB.
    #[arg(
        long,
        value_name = "IN_FLIGHTxMIB",
        value_parser = parse_ranges,
        global = true,
        env = "SYNAPSE_BACKUP_LIBRARY_RANGES"
    )]
    pub(crate) library_ranges: Option<(u32, u32)>,
    /// With `--transfer workload` (the default), the ranged GETs of the workload's aws
    /// CLI for verify, restore and extract as IN_FLIGHTxMIB: how many at once (1 to 64)
    /// and their size in MiB (at least 5). By default chosen per backup by a probe (a
    /// HEAD and a small ranged GET from this process): 2x8 where the server answers a
    /// range in about a HEAD's time (AWS S3, MinIO, Ceph: 1 GB restored about 1.5 times
    /// faster than one GET, for some 15 MB more in the workload's aws CLI), else 1x1024,
    /// one streamed GET per GiB (moto, which reads the whole object for every range).
    #[arg(
        long,
        value_name = "IN_FLIGHTxMIB",
        value_parser = parse_aws_ranges,
        global = true,
        env = "SYNAPSE_BACKUP_AWS_RANGES"
    )]
    pub(crate) aws_ranges: Option<(u32, u32)>,
    /// The free space, in MiB, that create's database snapshot, restore, extract and
    /// verify's database check leave where they write (the work dir, beside the live
    /// data by default), for the homeserver that keeps writing there: checked first and
    /// kept while staging runs. By default the smaller of 256 MiB and 5 % of that file
    /// system; 0 for none.
    #[arg(
        long,
        value_name = "MIB",
        global = true,
        env = "SYNAPSE_BACKUP_SPACE_RESERVE_MIB"
    )]
    pub(crate) space_reserve_mib: Option<u32>,
    /// More logs on stderr: -v progress, -vv debug, -vvv trace.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    /// No progress and no informational lines on stderr; warnings and errors are still
    /// printed, and the result on stdout is unchanged.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: bool,
    /// Print the result as JSON on stdout, and a failure as {"error": {"kind",
    /// "message", "exit_code"}}.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    // Where the workload lives and which tools run: --root, --data-dir, --bash, …;
    // last, as its heading holds for the flags after it.
    #[command(flatten, next_help_heading = "Workload options (global)")]
    pub(crate) layout: Layout,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Check that the bucket exists and the credentials can use it.
    Check,
    /// Back up the signing keys, a consistent snapshot of the SQLite database and the
    /// local media; print the new backup id alone on stdout.
    Create {
        /// Give up the database snapshot after this many seconds (a database another
        /// process keeps locked); 0 for no limit.
        #[arg(long, value_name = "SECONDS", default_value_t = 600)]
        snapshot_timeout: u64,
        /// The passphrase is new on purpose. Without it, create refuses a passphrase
        /// that does not open the newest backup (a mistyped one would make backups
        /// nobody can restore); the backup made with it becomes the newest, so later
        /// creates check against the new passphrase.
        #[arg(long)]
        new_passphrase: bool,
        /// Archive only the media no pack of the newest backup's chain holds (same
        /// path, size and modification time) and reference the rest through the
        /// backup's file index. Full anyway, said so on stderr, on a first backup, a
        /// base without an index, a legacy base, --new-passphrase, every 14th backup of
        /// a chain or when 30 % of what the chain holds is gone from the tree.
        /// `verify`, `restore` and `restore --target` read the whole chain, every pack
        /// checked against the one the backup's authenticated chain names; the
        /// README's recipe restores one with plain tools too.
        #[arg(long)]
        incremental: bool,
        /// Compress the archive before it is encrypted: none (the default: the charm's
        /// plain `aws s3 cp | gpg --decrypt | tar -x` restores it), zstd-1 to zstd-19
        /// (`tar | zstd | gpg`: the database shrinks 2 to 3 times for little CPU, media
        /// passes through; the workload needs zstd, see --zstd, to make and to
        /// restore it) or zlib-1 to zlib-9 (gpg's own, several times slower).
        #[arg(long, value_name = "NAME", default_value = "none", value_parser = parse_compression)]
        compression: Compression,
    },
    /// List the backups under the bucket and path, newest first, with each one's kind
    /// (full, incremental on BASE, legacy or unknown; with --json, an array of {id,
    /// status, last_modified, size, key, kind, base}).
    List,
    /// Print a backup's kind, chain and own and total size (from the listing), then
    /// its contents (kind, size, path) as its manifest lists them (with --json, an
    /// object {id, kind, base, size, total_size, packs, compression, entries: [{path,
    /// kind, size}]}).
    ///
    /// The manifest is an index beside the encrypted data: `ls` checks that it names
    /// this backup and that the data object has the size it states, but only
    /// `verify ID` (a download and decryption) checks that the archive holds exactly
    /// what it lists.
    Ls {
        /// The backup id, or `latest` (the newest complete backup).
        #[arg(value_parser = parse_id)]
        id: IdArg,
    },
    /// Download and decrypt a backup without touching live data, and check it
    /// against its manifest.
    Verify {
        /// The backup id, e.g. backup-20261126071900123456, or `latest`.
        #[arg(value_parser = parse_id, required_unless_present = "all")]
        id: Option<IdArg>,
        /// Verify every backup, newest first: one line each (id, ok / FAILED and why,
        /// or skipped for the incomplete leftovers of failed creates); exit code 1 when
        /// any failed. With --json, an array of {id, status, result, reason, …}.
        #[arg(long, conflicts_with = "id")]
        all: bool,
        /// With --all, how many backups are verified at once (each runs its own
        /// download pipeline in the workload); results are still printed newest first.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64), requires = "all")]
        jobs: u16,
        /// Make the work dir in the temp dir ($TMPDIR or /tmp) instead of beside the
        /// data (the default where there is no Synapse tree under --root). Verify keeps
        /// only small files there: the archive is read, not written.
        #[arg(long)]
        temp_work_dir: bool,
    },
    /// Restore a backup over the live data, safely: it is downloaded, decrypted and
    /// checked before anything live is touched.
    Restore {
        /// The backup id, or `latest` (the newest complete backup).
        #[arg(value_parser = parse_id)]
        id: IdArg,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(short, long)]
        yes: bool,
        /// Keep the restored database's one-time keys (e2e_one_time_keys_json). By
        /// default they are removed, as Synapse advises: keys handed out after the
        /// backup was made must never be handed out again.
        #[arg(long)]
        keep_one_time_keys: bool,
        /// Extract the backup into DIR instead (made when missing; it must be empty),
        /// with the same download, decryption and checks: no live file, service or lock
        /// is touched, and no Synapse tree is needed under --root.
        #[arg(long, value_name = "DIR")]
        target: Option<PathBuf>,
        /// With --target, extract only PATH: a file or a directory (and everything
        /// under it) as `ls` names them, e.g. data/homeserver.db or
        /// /data/media_store/local_content. Repeatable.
        #[arg(long, value_name = "PATH", requires = "target")]
        include: Vec<String>,
    },
    /// Delete a backup (its manifest, then its data and index). A backup that an
    /// incremental backup's chain needs is refused, naming those backups, unless
    /// --with-dependents is given.
    Delete {
        /// The backup id, or `latest` (the newest complete backup).
        #[arg(value_parser = parse_id)]
        id: IdArg,
        /// Also delete every backup whose chain needs it, newest first (so a chain is
        /// never left broken, even if stopped half-way), printing each deleted id.
        #[arg(long)]
        with_dependents: bool,
    },
    /// Delete old backups and the leftovers of failed creates; the newest restorable
    /// backup (and the newest complete one) is always kept.
    Prune {
        /// Keep at least the N newest restorable backups, however old. Without
        /// --older-than-days (or delete-older-than-days), the older ones are deleted.
        #[arg(
            long,
            alias = "keep-last",
            value_name = "N",
            value_parser = clap::value_parser!(u64).range(1..)
        )]
        keep_at_least: Option<u64>,
        /// Delete backups older than this (default: delete-older-than-days from the
        /// --s3 file).
        #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..))]
        older_than_days: Option<u32>,
        /// Only print each backup that would be deleted, and why.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove the backup lock left by an operation that is known to be gone (e.g. a
    /// killed process), after confirmation. A lock otherwise expires by itself.
    Unlock {
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(short, long)]
        yes: bool,
    },
}

/// A backup id as given: an id, or `latest`.
#[derive(Clone, Debug)]
pub(crate) enum IdArg {
    /// The newest complete backup.
    Latest,
    /// This backup.
    Id(BackupId),
}

/// `--compression`: a [`Compression`]'s name (`none`, `zstd-3`, `zlib-6`).
pub(crate) fn parse_compression(text: &str) -> Result<Compression, String> {
    text.parse().map_err(|e: ConfigError| match e {
        ConfigError::Parse { message, .. } => message,
        other => other.to_string(),
    })
}

pub(crate) fn parse_id(text: &str) -> Result<IdArg, String> {
    if text == "latest" {
        return Ok(IdArg::Latest);
    }
    text.parse().map(IdArg::Id).map_err(|e: ConfigError| {
        let problem = match e {
            ConfigError::Invalid { problems } => problems
                .into_iter()
                .map(|p| p.message)
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        };
        format!("{problem} (or `latest` for the newest complete backup)")
    })
}

/// `--library-ranges`: `IN_FLIGHTxMIB` (`12x4`), in flight 1 to 64, MiB at least 1.
pub(crate) fn parse_ranges(text: &str) -> Result<(u32, u32), String> {
    parse_ranges_of(text, 1, "12x4")
}

/// `--aws-ranges`: `IN_FLIGHTxMIB` (`4x8`), in flight 1 to 64, MiB at least 5
/// (the aws CLI's least `multipart_chunksize`).
pub(crate) fn parse_aws_ranges(text: &str) -> Result<(u32, u32), String> {
    parse_ranges_of(text, 5, "4x8")
}

/// `IN_FLIGHTxMIB`, in flight 1 to [`LIBRARY_RANGES_IN_FLIGHT_MAX`](synapse_backup::LIBRARY_RANGES_IN_FLIGHT_MAX),
/// MiB at least `least`; `example` is named in the error.
fn parse_ranges_of(text: &str, least: u32, example: &str) -> Result<(u32, u32), String> {
    let bad = |why: &str| format!("{text:?} is not IN_FLIGHTxMIB (e.g. {example}): {why}");
    let (n, mib) = text
        .trim()
        .split_once(['x', 'X'])
        .ok_or_else(|| bad("no `x` between the two numbers"))?;
    let n: u32 = n
        .trim()
        .parse()
        .map_err(|_| bad("the ranges in flight are not a whole number"))?;
    let mib: u32 = mib
        .trim()
        .parse()
        .map_err(|_| bad("the range size is not a whole number of MiB"))?;
    let most = synapse_backup::LIBRARY_RANGES_IN_FLIGHT_MAX;
    if !usize::try_from(n).is_ok_and(|n| (1..=most).contains(&n)) {
        return Err(bad(&format!("the ranges in flight must be 1 to {most}")));
    }
    if mib < least {
        return Err(bad(&format!("the range size must be at least {least} MiB")));
    }
    Ok((n, mib))
}

/// `--limit-upload` / `--limit-download`: the library's [`Bandwidth`] text, the error
/// without the field name (clap names the flag).
pub(crate) fn parse_rate(text: &str) -> Result<Bandwidth, String> {
    text.parse::<Bandwidth>().map_err(|e| match e {
        ConfigError::Invalid { problems, .. } => problems
            .into_iter()
            .map(|p| p.message)
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::{parse_aws_ranges, parse_ranges, parse_rate};
    use synapse_backup::Bandwidth;

    #[test]
    fn library_ranges_are_in_flight_x_mib_and_bad_ones_say_why() {
        assert_eq!(parse_ranges("3x16"), Ok((3, 16)));
        assert_eq!(parse_ranges(" 2 X 1024 "), Ok((2, 1024)));
        for (bad, why) in [
            ("316", "no `x`"),
            ("3x", "range size"),
            ("x16", "in flight"),
            ("-1x16", "in flight"),
            ("0x16", "1 to 64"),
            ("65x16", "1 to 64"),
            ("3x0", "at least 1 MiB"),
            ("3x1.5", "range size"),
        ] {
            let err = parse_ranges(bad).unwrap_err();
            assert!(
                err.contains(why) && err.contains(&format!("{bad:?}")),
                "{bad}: {err}"
            );
        }
    }

    /// The workload's ranges are the aws CLI's: at least its 5 MiB chunk.
    #[test]
    fn aws_ranges_are_in_flight_x_mib_of_at_least_5() {
        assert_eq!(parse_aws_ranges("4x8"), Ok((4, 8)));
        assert_eq!(parse_aws_ranges("1X1024"), Ok((1, 1024)));
        for (bad, why) in [
            ("4x4", "at least 5 MiB"),
            ("4x0", "at least 5 MiB"),
            ("0x8", "1 to 64"),
            ("4-8", "no `x`"),
        ] {
            let err = parse_aws_ranges(bad).unwrap_err();
            assert!(
                err.contains(why) && err.contains(&format!("{bad:?}")) && err.contains("4x8"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn rates_take_units_in_any_case_and_a_bare_number_is_mib() {
        assert_eq!(parse_rate("10"), Ok(Bandwidth::mib(10)));
        assert_eq!(parse_rate("10MiB/s"), Ok(Bandwidth::mib(10)));
        assert_eq!(parse_rate("500K"), Ok(Bandwidth::kib(500)));
        for bad in [
            "", "fast", "10X", "-1", "0", "0M", "1.5M", "M", "/s", "10/s", "100B",
        ] {
            let err = parse_rate(bad).unwrap_err();
            assert!(!err.contains("bandwidth:"), "clap names the flag: {err}");
        }
        assert!(parse_rate("10X").unwrap_err().contains("unknown unit"));
    }
}

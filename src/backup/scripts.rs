//! The shell scripts the pipelines run in the workload, and their protocol with the
//! Rust side in one typed place: the work dir's file names ([`WorkFile`]), the exit
//! codes ([`Exit`], one table: [`CODES`]); the outputs are read through
//! [`Outputs`](crate::backup::work::Outputs).
//!
//! The scripts are files under `src/backup/scripts/` (linted by `shellcheck` in the test
//! command), included here as constants: `bash -c <script> bash <args…>` with every
//! variable value in the environment or the positional parameters, never in the text.
//! `backup.sh` and `fetch.sh` are appended to `common.sh` (the checksum stage and the
//! failing-stage rule they share), the scripts that check free space (`prepare.sh`,
//! `fetch.sh`, `swap.sh`) to `space.sh` (the free-space reserve's rule and how space is
//! counted), and the long-running scripts (`prepare.sh`, `backup.sh`, `fetch.sh`) to
//! `watchdog.sh`, which kills their process group as soon as the shell that runs them
//! is gone or has lost its parent (the caller was killed).
//! Each file's header states its inputs and exit codes; [`Exit`] is the one Rust
//! reading of those codes.

use crate::backup::plan::WorkDir;
use crate::error::{ContainerError, Stage};

/// `watchdog.sh` + `space.sh` + `prepare.sh`: the SQLite snapshot, the total size and
/// the file listing.
pub(crate) const PREPARE: &str = concat!(
    include_str!("scripts/watchdog.sh"),
    include_str!("scripts/space.sh"),
    include_str!("scripts/prepare.sh")
);
/// `watchdog.sh` + `common.sh` + `backup.sh`: `tar | gpg | checksum | aws s3 cp`.
pub(crate) const BACKUP: &str = concat!(
    include_str!("scripts/watchdog.sh"),
    include_str!("scripts/common.sh"),
    include_str!("scripts/backup.sh")
);
/// `watchdog.sh` + `common.sh` + `space.sh` + `fetch.sh`: `aws s3 cp | checksum | gpg
/// --decrypt | tar`.
pub(crate) const FETCH: &str = concat!(
    include_str!("scripts/watchdog.sh"),
    include_str!("scripts/common.sh"),
    include_str!("scripts/space.sh"),
    include_str!("scripts/fetch.sh")
);
/// `space.sh` + `swap.sh`: moves staged paths in and live ones aside, or undoes that.
pub(crate) const SWAP: &str = concat!(
    include_str!("scripts/space.sh"),
    include_str!("scripts/swap.sh")
);
/// `workdir.sh`: makes, writes, reads and removes the work dir as the workload user.
pub(crate) const WORKDIR: &str = include_str!("scripts/workdir.sh");
/// `passcheck.sh`: a backup's head (the library reads it), decrypted with the passphrase.
pub(crate) const PASSCHECK: &str = include_str!("scripts/passcheck.sh");
/// `reserve.sh`: the free-space reserve's check, run by tar's checkpoints while it
/// extracts (`/bin/sh -c`), passed to `fetch.sh` in `SB_RESERVE_SH`.
pub(crate) const RESERVE: &str = include_str!("scripts/reserve.sh");
/// `hash.py`: the checksum stage's one pass (SHA-256 and length), passed to the
/// pipelines in `SB_HASH_PY`.
pub(crate) const HASH_PY: &str = include_str!("scripts/hash.py");

/// Every script as it runs, with its file name, for the shellcheck test.
#[cfg(test)]
pub(crate) const ALL: [(&str, &str); 6] = [
    ("prepare.sh", PREPARE),
    ("passcheck.sh", PASSCHECK),
    ("workdir.sh", WORKDIR),
    ("backup.sh", BACKUP),
    ("fetch.sh", FETCH),
    ("swap.sh", SWAP),
];

/// Every script file alone, with its name, for the protocol tests.
#[cfg(test)]
const FILES: [(&str, &str); 10] = [
    ("reserve.sh", RESERVE),
    ("space.sh", include_str!("scripts/space.sh")),
    ("watchdog.sh", include_str!("scripts/watchdog.sh")),
    ("common.sh", include_str!("scripts/common.sh")),
    ("prepare.sh", include_str!("scripts/prepare.sh")),
    ("backup.sh", include_str!("scripts/backup.sh")),
    ("fetch.sh", include_str!("scripts/fetch.sh")),
    ("passcheck.sh", include_str!("scripts/passcheck.sh")),
    ("swap.sh", include_str!("scripts/swap.sh")),
    ("workdir.sh", include_str!("scripts/workdir.sh")),
];

/// A pipeline whose stages [`Exit::Stage`] counts: positions in the script's pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pipeline {
    /// `backup.sh`: tar, gpg, checksum, upload.
    Backup,
    /// `fetch.sh`: download, checksum, gpg, tar.
    Fetch,
}

impl Pipeline {
    /// The stage at a position of the pipe, as the work dir's [`WorkFile::Failed`]
    /// names it (`name`, its first field): zstd runs inside tar's position.
    pub(crate) fn stage_named(self, position: u8, name: &str) -> Stage {
        if name == "zstd" {
            Stage::Compress
        } else {
            self.stage(position)
        }
    }

    /// The stage at a position of the pipe.
    pub(crate) fn stage(self, position: u8) -> Stage {
        match (self, position) {
            (Pipeline::Backup, 0) => Stage::Tar,
            (Pipeline::Backup, 1) | (Pipeline::Fetch, 2) => Stage::Gpg,
            (Pipeline::Backup, 2) | (Pipeline::Fetch, 1) => Stage::Check,
            (Pipeline::Backup, _) => Stage::Upload,
            (Pipeline::Fetch, 0) => Stage::Download,
            (Pipeline::Fetch, _) => Stage::Extract,
        }
    }
}

/// What a script's exit code says, for every script: each code belongs to one script
/// file (the stage codes to `common.sh`, which `backup.sh` and `fetch.sh` share), none
/// is below 10 (where bash and the tools it runs put their own failures) or above 99
/// (126, 127 and 128 + signal are the shell's). [`CODES`] is the one table; a test
/// checks every script's `exit NN` against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// 0.
    Success,
    /// 10 + position (`common.sh`): the pipeline stage at that position failed for a
    /// reason of its own (its status in the work dir's [`WorkFile::Failed`], its stderr
    /// on the exec's).
    Stage(u8),
    /// 14 (`common.sh`): the checksum readers (tee fallback) failed.
    ChecksumReaders,
    /// 20 (`prepare.sh`): neither python3's sqlite3 nor the sqlite3 CLI exists.
    NoSnapshotTool,
    /// 21 (`prepare.sh`): the SQLite snapshot failed.
    SnapshotFailed,
    /// 22 (`prepare.sh`): the snapshot fails SQLite's `PRAGMA integrity_check`.
    SnapshotCorrupt,
    /// 23 (`prepare.sh`): not enough free space for the database snapshot (the free
    /// bytes in [`WorkFile::Avail`], the need in [`WorkFile::Need`]).
    SnapshotNoSpace,
    /// 24 (`prepare.sh`): a member that is a symlink does not lead to a regular file.
    LinkNotAFile,
    /// 25 (`prepare.sh`): the snapshot fits but would leave less free space than the
    /// reserve (`<available> <reserve>` in [`WorkFile::Reserve`], the need in
    /// [`WorkFile::Need`]).
    SnapshotBelowReserve,
    /// 30 (`swap.sh`): a move failed and everything done was undone.
    SwapUndone,
    /// 31 (`swap.sh`): the undo failed too; the set-aside live files are in the work dir.
    SwapUndoFailed,
    /// 32 (`swap.sh check-db`): the staged database fails SQLite's integrity check (or
    /// could not be opened, cleaned or checkpointed).
    DatabaseCheckFailed,
    /// 33 (`swap.sh check-db`): neither python3's sqlite3 nor the sqlite3 CLI exists.
    NoDatabaseTool,
    /// 34 (`swap.sh preflight`): a path the swap must change is not writable.
    SwapNotWritable,
    /// 35 (`swap.sh preflight`): not enough space for what the swap copies
    /// (`<need> <available> <path>` in [`WorkFile::Preflight`]).
    SwapNoSpace,
    /// 36 (`swap.sh place`): an extraction's destination exists.
    PlaceExists,
    /// 37 (`swap.sh preflight`): the staging still to come fits but would leave less
    /// free space than the reserve (`<available> <reserve>` in [`WorkFile::Reserve`],
    /// the need in [`WorkFile::Need`]).
    SwapBelowReserve,
    /// 40 (`fetch.sh`): not enough free space for staging (the free bytes in
    /// [`WorkFile::Avail`]).
    NoSpace,
    /// 41 (`fetch.sh`): the staging file system filled up while extracting.
    FilledWhileStaging,
    /// 42 (`fetch.sh`): staging would leave, or was about to leave, less free space than
    /// the reserve (`<available> <reserve>` in [`WorkFile::Reserve`], the free bytes
    /// before staging in [`WorkFile::Avail`]).
    BelowReserve,
    /// 50 (`workdir.sh`): an unknown mode or a bad work file name.
    WorkdirUsage,
    /// 51 (`workdir.sh make-in`): the dir is not empty.
    DirNotEmpty,
    /// 52 (`workdir.sh list, kind, read, size`): no such path.
    NoSuchPath,
    /// 53 (`workdir.sh list`): the path is not a directory.
    NotADirectory,
    /// 54 (`workdir.sh target`): an extraction's target is refused.
    TargetRefused,
    /// Any other code: the script failed outside its protocol (bash itself, a tool's
    /// own failure under `set -e`, a signal).
    Other(i32),
}

/// The first of the stage codes (`exit $((10 + failed))` in `common.sh`).
const STAGE_BASE: i32 = 10;
/// How many stages a pipeline has.
const STAGES: u8 = 4;

/// Every fixed exit code of the scripts: the exit, its code, the script file that
/// exits with it. The stage codes ([`Exit::Stage`], `STAGE_BASE..STAGE_BASE + STAGES`)
/// are `common.sh`'s.
pub(crate) const CODES: [(Exit, i32, &str); 23] = [
    (Exit::ChecksumReaders, 14, "common.sh"),
    (Exit::NoSnapshotTool, 20, "prepare.sh"),
    (Exit::SnapshotFailed, 21, "prepare.sh"),
    (Exit::SnapshotCorrupt, 22, "prepare.sh"),
    (Exit::SnapshotNoSpace, 23, "prepare.sh"),
    (Exit::LinkNotAFile, 24, "prepare.sh"),
    (Exit::SnapshotBelowReserve, 25, "prepare.sh"),
    (Exit::SwapUndone, 30, "swap.sh"),
    (Exit::SwapUndoFailed, 31, "swap.sh"),
    (Exit::DatabaseCheckFailed, 32, "swap.sh"),
    (Exit::NoDatabaseTool, 33, "swap.sh"),
    (Exit::SwapNotWritable, 34, "swap.sh"),
    (Exit::SwapNoSpace, 35, "swap.sh"),
    (Exit::PlaceExists, 36, "swap.sh"),
    (Exit::SwapBelowReserve, 37, "swap.sh"),
    (Exit::NoSpace, 40, "fetch.sh"),
    (Exit::FilledWhileStaging, 41, "fetch.sh"),
    (Exit::BelowReserve, 42, "fetch.sh"),
    (Exit::WorkdirUsage, 50, "workdir.sh"),
    (Exit::DirNotEmpty, 51, "workdir.sh"),
    (Exit::NoSuchPath, 52, "workdir.sh"),
    (Exit::NotADirectory, 53, "workdir.sh"),
    (Exit::TargetRefused, 54, "workdir.sh"),
];

impl Exit {
    /// Reads an exit code.
    pub(crate) fn from_code(code: i32) -> Exit {
        if code == 0 {
            return Exit::Success;
        }
        if (STAGE_BASE..STAGE_BASE + i32::from(STAGES)).contains(&code) {
            return Exit::Stage(u8::try_from(code - STAGE_BASE).unwrap_or(0));
        }
        CODES
            .iter()
            .find(|(_, c, _)| *c == code)
            .map_or(Exit::Other(code), |(exit, ..)| *exit)
    }

    /// What a container error says of the script: its exit, when it exited non-zero.
    pub(crate) fn of(error: &ContainerError) -> Option<Exit> {
        match error {
            ContainerError::ExitedNonZero { exit_code, .. } => Some(Exit::from_code(*exit_code)),
            _ => None,
        }
    }

    /// The exit code.
    pub(crate) fn code(self) -> i32 {
        match self {
            Exit::Success => 0,
            Exit::Stage(p) => STAGE_BASE + i32::from(p),
            Exit::Other(c) => c,
            fixed => CODES
                .iter()
                .find(|(exit, ..)| *exit == fixed)
                .map_or(-1, |(_, code, _)| *code),
        }
    }
}

/// The files of a run's work dir, by the name the scripts and the Rust side both use:
/// what Rust writes for a script, what a script writes for Rust, and what a script
/// keeps for itself (listed so that the work dir's every name is here; a test checks
/// the scripts name no other).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "the files only the scripts name are listed for the protocol's tests"
    )
)]
pub(crate) enum WorkFile {
    /// The run's [`OwnerRecord`](crate::backup::work::OwnerRecord) (`workdir.sh make`).
    Owner,
    /// The empty GnuPG home (`workdir.sh make`; `GNUPGHOME`).
    Gnupg,
    /// The per-run aws CLI config (Rust; `AWS_CONFIG_FILE`).
    AwsConfig,
    /// The aws CLI credentials file, which never exists (`AWS_SHARED_CREDENTIALS_FILE`:
    /// none of the workload user's).
    AwsCredentials,
    /// The CA bundle of `tls-ca-chain` (Rust; `AWS_CA_BUNDLE`).
    CaBundle,
    /// The SSE-C customer key, raw (Rust; `--sse-c-key fileb://…`).
    SseCKey,
    /// The running byte count of the checksum stage (`SB_PROGRESS`).
    Progress,
    /// The inner manifest (Rust, for `prepare.sh`, which moves it into [`Self::Inner`]).
    InnerManifest,
    /// The NUL-separated members to archive (Rust, for `prepare.sh` and `backup.sh`).
    Files,
    /// The members that are symlinks to files (Rust, for `prepare.sh`).
    Links,
    /// An incremental backup's media members to list (Rust, for `prepare.sh`).
    Media,
    /// The listing of those media files (`prepare.sh`, for Rust's plan).
    Tree,
    /// The media files an incremental pack archives (Rust, for `backup.sh`).
    NewMedia,
    /// The dir tar archives the inner manifest from (`prepare.sh`).
    Inner,
    /// The dir of the snapshot and the copied link targets (`prepare.sh`).
    Snap,
    /// The snapshot being taken (`prepare.sh`).
    SnapDb,
    /// The members archived from [`Self::Snap`] (`prepare.sh`, for `backup.sh`).
    SnapFiles,
    /// The total size of what is archived (`prepare.sh`).
    Size,
    /// The bytes a snapshot or staging needs (`prepare.sh`, `swap.sh preflight`).
    Need,
    /// The free bytes where the snapshot or staging goes (`prepare.sh`, `fetch.sh`).
    Avail,
    /// `<available> <reserve>` when the snapshot or staging would take, or staging was
    /// about to take, the free-space reserve (`prepare.sh`, `fetch.sh`, `reserve.sh`,
    /// `swap.sh preflight`).
    Reserve,
    /// tar's `-vv` listing of the archive written (`backup.sh`).
    Index,
    /// tar's exit status (`backup.sh`).
    TarStatus,
    /// tar's stderr (`backup.sh`, `fetch.sh`, `passcheck.sh`).
    TarErr,
    /// zstd's stderr (`backup.sh`, `fetch.sh`, `passcheck.sh`).
    ZstdErr,
    /// zstd's exit status when it failed for a reason of its own (`backup.sh`,
    /// `fetch.sh`; read by `common.sh`'s `zstd_stage`).
    ZstdStatus,
    /// The stream's first bytes, held while `common.sh`'s `openpgp_gate` judges them
    /// (`fetch.sh` where the workload has no python3).
    GateHead,
    /// gpg's stderr.
    GpgErr,
    /// The checksum stage's stderr.
    TeeErr,
    /// The aws CLI's stderr.
    AwsErr,
    /// The aws CLI's stdout (`backup.sh`).
    AwsOut,
    /// `<stage> <status>` of the stage that failed (`common.sh`).
    Failed,
    /// The encrypted stream's SHA-256 (`common.sh`).
    Sha256,
    /// The encrypted stream's length in bytes (`common.sh`).
    Length,
    /// The checksum's FIFO (tee fallback, `common.sh`).
    ShaFifo,
    /// The length's FIFO (tee fallback, `common.sh`).
    LenFifo,
    /// tar's `-vv` listing of the archive read (`fetch.sh`).
    Members,
    /// gpg's status lines (`fetch.sh`, `passcheck.sh`).
    GpgStatus,
    /// The first 64 KiB of the inner manifest (`fetch.sh`, `passcheck.sh`).
    Head,
    /// The staging dir (`fetch.sh`; `swap.sh` moves from it).
    Stage,
    /// The FIFO to the database's tar in a verify (`fetch.sh`).
    DbFifo,
    /// The database tar's stderr in a verify (`fetch.sh`).
    DbTarErr,
    /// The walk of the staged tree (`fetch.sh extract`).
    Staged,
    /// The backup's head, as the library read it (`passcheck.sh`).
    Part,
    /// The units to swap in (Rust, for `swap.sh`).
    SwapList,
    /// The `member`, `bytes` pairs the preflight checks (Rust, for `swap.sh
    /// preflight`).
    SwapSizes,
    /// `<need> <available> <path>` where space is short (`swap.sh preflight`).
    Preflight,
    /// The members an extraction places (Rust, for `swap.sh place`).
    PlaceList,
    /// The members read from an older pack of a chain, NUL-separated (Rust, for
    /// `fetch.sh`).
    PackMembers,
    /// The files an older pack holds that tar skips, newline-separated (Rust, for
    /// `fetch.sh`).
    PackExclude,
    /// An older pack extracted whole, its files then moved into the stage (`fetch.sh`).
    PackStage,
    /// The directories a chain's packs write into, NUL-separated (Rust, for `fetch.sh`
    /// `SB_MODE=dirs`).
    StageDirs,
    /// The live files set aside (`swap.sh`).
    Aside,
    /// The members set aside, NUL-separated (`swap.sh`).
    AsideLog,
    /// The members placed, NUL-separated (`swap.sh`).
    PlacedLog,
}

impl WorkFile {
    /// Every work file.
    #[cfg(test)]
    pub(crate) const ALL: [WorkFile; 55] = [
        WorkFile::Owner,
        WorkFile::Gnupg,
        WorkFile::AwsConfig,
        WorkFile::AwsCredentials,
        WorkFile::CaBundle,
        WorkFile::SseCKey,
        WorkFile::Progress,
        WorkFile::InnerManifest,
        WorkFile::Files,
        WorkFile::Links,
        WorkFile::Media,
        WorkFile::Tree,
        WorkFile::NewMedia,
        WorkFile::Inner,
        WorkFile::Snap,
        WorkFile::SnapDb,
        WorkFile::SnapFiles,
        WorkFile::Size,
        WorkFile::Need,
        WorkFile::Avail,
        WorkFile::Reserve,
        WorkFile::Index,
        WorkFile::TarStatus,
        WorkFile::TarErr,
        WorkFile::ZstdErr,
        WorkFile::ZstdStatus,
        WorkFile::GateHead,
        WorkFile::GpgErr,
        WorkFile::TeeErr,
        WorkFile::AwsErr,
        WorkFile::AwsOut,
        WorkFile::Failed,
        WorkFile::Sha256,
        WorkFile::Length,
        WorkFile::ShaFifo,
        WorkFile::LenFifo,
        WorkFile::Members,
        WorkFile::GpgStatus,
        WorkFile::Head,
        WorkFile::Stage,
        WorkFile::DbFifo,
        WorkFile::DbTarErr,
        WorkFile::Staged,
        WorkFile::Part,
        WorkFile::SwapList,
        WorkFile::SwapSizes,
        WorkFile::Preflight,
        WorkFile::PlaceList,
        WorkFile::PackMembers,
        WorkFile::PackExclude,
        WorkFile::PackStage,
        WorkFile::StageDirs,
        WorkFile::Aside,
        WorkFile::AsideLog,
        WorkFile::PlacedLog,
    ];

    /// The file's name in the work dir.
    pub(crate) fn name(self) -> &'static str {
        match self {
            WorkFile::Owner => "owner",
            WorkFile::Gnupg => "gnupg",
            WorkFile::AwsConfig => "aws-config",
            WorkFile::AwsCredentials => "aws-credentials",
            WorkFile::CaBundle => "ca-bundle.pem",
            WorkFile::SseCKey => "sse-c.key",
            WorkFile::Progress => "progress",
            WorkFile::InnerManifest => "inner-manifest.json",
            WorkFile::Files => "files",
            WorkFile::Links => "links",
            WorkFile::Media => "media",
            WorkFile::Tree => "tree",
            WorkFile::NewMedia => "newmedia",
            WorkFile::Inner => "inner",
            WorkFile::Snap => "snap",
            WorkFile::SnapDb => "snap.db",
            WorkFile::SnapFiles => "snapfiles",
            WorkFile::Size => "size",
            WorkFile::Need => "need",
            WorkFile::Avail => "avail",
            WorkFile::Reserve => "reserve",
            WorkFile::Index => "index",
            WorkFile::TarStatus => "tar.status",
            WorkFile::TarErr => "tar.err",
            WorkFile::ZstdErr => "zstd.err",
            WorkFile::ZstdStatus => "zstd.status",
            WorkFile::GateHead => "gate.head",
            WorkFile::GpgErr => "gpg.err",
            WorkFile::TeeErr => "tee.err",
            WorkFile::AwsErr => "aws.err",
            WorkFile::AwsOut => "aws.out",
            WorkFile::Failed => "failed",
            WorkFile::Sha256 => "sha256",
            WorkFile::Length => "length",
            WorkFile::ShaFifo => "sha.fifo",
            WorkFile::LenFifo => "len.fifo",
            WorkFile::Members => "members",
            WorkFile::GpgStatus => "gpg.status",
            WorkFile::Head => "head",
            WorkFile::Stage => "stage",
            WorkFile::DbFifo => "db.fifo",
            WorkFile::DbTarErr => "dbtar.err",
            WorkFile::Staged => "staged",
            WorkFile::Part => "part",
            WorkFile::SwapList => "swap.list",
            WorkFile::SwapSizes => "swap.sizes",
            WorkFile::Preflight => "preflight",
            WorkFile::PlaceList => "place.list",
            WorkFile::PackMembers => "pack.members",
            WorkFile::PackExclude => "pack.exclude",
            WorkFile::PackStage => "pack.stage",
            WorkFile::StageDirs => "stage.dirs",
            WorkFile::Aside => "aside",
            WorkFile::AsideLog => "aside.log",
            WorkFile::PlacedLog => "placed.log",
        }
    }

    /// The files only Rust names (through the environment or argv), never a script.
    #[cfg(test)]
    const NAMED_BY_RUST_ONLY: [WorkFile; 5] = [
        WorkFile::AwsConfig,
        WorkFile::AwsCredentials,
        WorkFile::CaBundle,
        WorkFile::SseCKey,
        WorkFile::Progress,
    ];
}

impl std::fmt::Display for WorkFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl WorkDir {
    /// The path of a work file.
    pub(crate) fn path(&self, file: WorkFile) -> String {
        self.file(file.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_read_back_both_ways() {
        let mut codes: Vec<i32> = CODES.iter().map(|(_, code, _)| *code).collect();
        codes.extend([0, 10, 11, 12, 13, 1, 2, 3, 4, 141, -1]);
        for code in codes {
            assert_eq!(Exit::from_code(code).code(), code, "{code}");
        }
        for (exit, code, script) in CODES {
            assert_eq!(Exit::from_code(code), exit, "{code} of {script}");
        }
        // The codes bash and the tools under `set -e` fail with are never the protocol's.
        for code in [1, 2, 3, 4, 5, 6, 126, 127, 137, 141] {
            assert_eq!(Exit::from_code(code), Exit::Other(code));
        }
        assert_eq!(Exit::from_code(13), Exit::Stage(3));
        assert_eq!(Pipeline::Backup.stage(0), Stage::Tar);
        assert_eq!(Pipeline::Backup.stage(1), Stage::Gpg);
        assert_eq!(Pipeline::Backup.stage(2), Stage::Check);
        assert_eq!(Pipeline::Backup.stage(3), Stage::Upload);
        assert_eq!(Pipeline::Fetch.stage(0), Stage::Download);
        assert_eq!(Pipeline::Fetch.stage(1), Stage::Check);
        assert_eq!(Pipeline::Fetch.stage(2), Stage::Gpg);
        assert_eq!(Pipeline::Fetch.stage(3), Stage::Extract);
    }

    /// The literal codes of every `exit NN` in a script (comment lines left out).
    fn exits_in(script: &str) -> Vec<i32> {
        let mut codes = Vec::new();
        for line in script.lines().filter(|l| !l.trim_start().starts_with('#')) {
            for (at, _) in line.match_indices("exit ") {
                let digits: String = line[at + 5..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                if let Ok(code) = digits.parse() {
                    codes.push(code);
                }
            }
        }
        codes
    }

    /// The scripts and the Rust table agree: every `exit NN` (but 0) of a script is in
    /// [`CODES`] under that script, every entry of [`CODES`] is used by its script, and
    /// no code is used by two scripts.
    #[test]
    fn the_scripts_exit_codes_are_the_table() {
        let mut used: Vec<(i32, &str)> = Vec::new();
        for (name, script) in FILES {
            for code in exits_in(script).into_iter().filter(|c| *c != 0) {
                if !used.contains(&(code, name)) {
                    used.push((code, name));
                }
            }
        }
        for (code, name) in &used {
            let listed = CODES.iter().find(|(_, c, _)| c == code);
            assert!(
                listed.is_some_and(|(_, _, script)| script == name),
                "{name} exits {code}, which CODES gives to {:?}",
                listed.map(|(_, _, s)| s)
            );
        }
        for (exit, code, script) in CODES {
            assert!(
                used.contains(&(code, script)),
                "{exit:?} ({code}) is never an exit of {script}"
            );
            assert!(
                (STAGE_BASE + i32::from(STAGES)..100).contains(&code),
                "{code} is outside the protocol's range"
            );
        }
        for (i, (_, code, _)) in CODES.iter().enumerate() {
            assert!(
                !CODES[i + 1..].iter().any(|(_, c, _)| c == code),
                "{code} is listed twice"
            );
        }
        // The stage codes are common.sh's, computed.
        let common = FILES.iter().find(|(n, _)| *n == "common.sh").unwrap().1;
        assert!(common.contains(&format!("exit $(({STAGE_BASE} + failed))")));
        assert_eq!(
            exits_in("a || exit 32; exit 0\n# exit 3\nexit $x"),
            vec![32, 0]
        );
    }

    /// The work-dir names in a script: what follows `$w/`, `$SB_WORK/`, `$d/` or `$2/`.
    fn work_names_in(script: &str) -> Vec<String> {
        let mut names = Vec::new();
        for prefix in ["$w/", "$SB_WORK/", "$d/", "$2/"] {
            for (at, _) in script.match_indices(prefix) {
                let name: String = script[at + prefix.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
                    .collect();
                if !name.is_empty() && !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names
    }

    /// Every name a script gives a work-dir file is a [`WorkFile`], and every
    /// [`WorkFile`] but those only Rust names is named by a script.
    #[test]
    fn the_scripts_work_files_are_the_enum() {
        let names: Vec<&str> = WorkFile::ALL.iter().map(|f| f.name()).collect();
        let mut in_scripts = Vec::new();
        for (script, text) in FILES {
            for name in work_names_in(text) {
                assert!(
                    names.contains(&name.as_str()),
                    "{script} names the work file {name}, which WorkFile lacks"
                );
                in_scripts.push(name);
            }
        }
        for file in WorkFile::ALL {
            assert_eq!(
                in_scripts.iter().any(|n| n == file.name()),
                !WorkFile::NAMED_BY_RUST_ONLY.contains(&file),
                "{file}"
            );
        }
        for (i, name) in names.iter().enumerate() {
            assert!(!names[i + 1..].contains(name), "{name} twice");
            assert!(!name.contains('/'), "{name}");
        }
        let work = WorkDir::at("/r/.synapse-backup-x");
        assert_eq!(
            work.path(WorkFile::TarStatus),
            "/r/.synapse-backup-x/tar.status"
        );
    }

    #[test]
    fn scripts_are_strict_and_never_trace() {
        for (name, script) in ALL {
            assert!(script.contains("\nset -euo pipefail\n"), "{name}");
            assert!(!script.contains("set -x"), "{name}");
        }
    }

    /// The scripts exactly as they run pass shellcheck (the files alone are checked by
    /// the test command too); `reserve.sh`, which tar runs with `/bin/sh`, as POSIX sh.
    #[test]
    fn scripts_pass_shellcheck() {
        let dir = tempfile::tempdir().unwrap();
        let scripts = ALL.iter().map(|(name, script)| (*name, *script, "bash"));
        for (name, script, shell) in scripts.chain([("reserve.sh", RESERVE, "sh")]) {
            let path = dir.path().join(name);
            std::fs::write(&path, script).unwrap();
            let out = std::process::Command::new("shellcheck")
                .args([&format!("--shell={shell}"), "--severity=style"])
                .arg(&path)
                .output()
                .unwrap_or_else(|e| {
                    panic!("cannot run shellcheck ({e}); install it with: sudo apt-get install -y shellcheck")
                });
            assert!(
                out.status.success(),
                "shellcheck {name}:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}

//! The shell scripts the pipelines run in the workload, and their exit protocol.
//!
//! The scripts are files under `src/backup/scripts/` (linted by `shellcheck` in the test
//! command), included here as constants: `bash -c <script> bash <args…>` with every
//! variable value in the environment or the positional parameters, never in the text.
//! `backup.sh` and `fetch.sh` are appended to `common.sh` (the checksum stage and the
//! failing-stage rule they share), and the long-running scripts (`prepare.sh`,
//! `backup.sh`, `fetch.sh`) to `watchdog.sh`, which kills their process group as soon
//! as the shell that runs them is gone or has lost its parent (the caller was killed). Each file's header states its inputs and exit codes;
//! [`Exit`] is the one Rust reading of those codes.

use crate::error::Stage;

/// `watchdog.sh` + `prepare.sh`: the SQLite snapshot, the total size and the file
/// listing.
pub(crate) const PREPARE: &str = concat!(
    include_str!("scripts/watchdog.sh"),
    include_str!("scripts/prepare.sh")
);
/// `watchdog.sh` + `common.sh` + `backup.sh`: `tar | gpg | checksum | aws s3 cp`.
pub(crate) const BACKUP: &str = concat!(
    include_str!("scripts/watchdog.sh"),
    include_str!("scripts/common.sh"),
    include_str!("scripts/backup.sh")
);
/// `watchdog.sh` + `common.sh` + `fetch.sh`: `aws s3 cp | checksum | gpg --decrypt |
/// tar`.
pub(crate) const FETCH: &str = concat!(
    include_str!("scripts/watchdog.sh"),
    include_str!("scripts/common.sh"),
    include_str!("scripts/fetch.sh")
);
/// `swap.sh`: moves staged paths in and live ones aside, or undoes that.
pub(crate) const SWAP: &str = include_str!("scripts/swap.sh");
/// `workdir.sh`: makes, writes, reads and removes the work dir as the workload user.
pub(crate) const WORKDIR: &str = include_str!("scripts/workdir.sh");
/// `passcheck.sh`: a ranged read of a backup's head, decrypted with the passphrase.
pub(crate) const PASSCHECK: &str = include_str!("scripts/passcheck.sh");
/// `hash.py`: the checksum stage's one pass (SHA-256 and length), passed to the
/// pipelines in `SB_HASH_PY`.
pub(crate) const HASH_PY: &str = include_str!("scripts/hash.py");

/// Every script with its file name, for the shellcheck test.
#[cfg(test)]
pub(crate) const ALL: [(&str, &str); 6] = [
    ("prepare.sh", PREPARE),
    ("passcheck.sh", PASSCHECK),
    ("workdir.sh", WORKDIR),
    ("backup.sh", BACKUP),
    ("fetch.sh", FETCH),
    ("swap.sh", SWAP),
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

/// What a script's exit code says, for every script (the codes never overlap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// 0.
    Success,
    /// 10 + position: the pipeline stage at that position failed for a reason of its
    /// own (its status and stderr are in the work dir's `failed` and the exec's stderr).
    Stage(u8),
    /// 14: the checksum readers (tee fallback) failed.
    ChecksumReaders,
    /// 20 (`prepare.sh`): neither python3's sqlite3 nor the sqlite3 CLI exists.
    NoSnapshotTool,
    /// 21 (`prepare.sh`): the SQLite snapshot failed.
    SnapshotFailed,
    /// 22 (`prepare.sh`): the snapshot fails SQLite's `PRAGMA integrity_check`.
    SnapshotCorrupt,
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
    /// 35 (`swap.sh preflight`): not enough space for what the swap copies.
    SwapNoSpace,
    /// 40 (`fetch.sh`, `prepare.sh`): not enough free space for staging or the
    /// database snapshot.
    NoSpace,
    /// 41 (`fetch.sh`): the staging file system filled up while extracting.
    FilledWhileStaging,
    /// Any other code: the script failed outside its protocol (bash itself, a signal).
    Other(i32),
}

impl Exit {
    const STAGE_BASE: i32 = 10;
    const STAGES: u8 = 4;

    /// Reads an exit code.
    pub(crate) fn from_code(code: i32) -> Exit {
        match code {
            0 => Exit::Success,
            c if (Self::STAGE_BASE..Self::STAGE_BASE + i32::from(Self::STAGES)).contains(&c) => {
                Exit::Stage(u8::try_from(c - Self::STAGE_BASE).unwrap_or(0))
            }
            14 => Exit::ChecksumReaders,
            20 => Exit::NoSnapshotTool,
            21 => Exit::SnapshotFailed,
            22 => Exit::SnapshotCorrupt,
            30 => Exit::SwapUndone,
            31 => Exit::SwapUndoFailed,
            32 => Exit::DatabaseCheckFailed,
            33 => Exit::NoDatabaseTool,
            34 => Exit::SwapNotWritable,
            35 => Exit::SwapNoSpace,
            40 => Exit::NoSpace,
            41 => Exit::FilledWhileStaging,
            c => Exit::Other(c),
        }
    }

    /// The exit code.
    #[cfg(test)]
    pub(crate) fn code(self) -> i32 {
        match self {
            Exit::Success => 0,
            Exit::Stage(p) => Self::STAGE_BASE + i32::from(p),
            Exit::ChecksumReaders => 14,
            Exit::NoSnapshotTool => 20,
            Exit::SnapshotFailed => 21,
            Exit::SnapshotCorrupt => 22,
            Exit::SwapUndone => 30,
            Exit::SwapUndoFailed => 31,
            Exit::DatabaseCheckFailed => 32,
            Exit::NoDatabaseTool => 33,
            Exit::SwapNotWritable => 34,
            Exit::SwapNoSpace => 35,
            Exit::NoSpace => 40,
            Exit::FilledWhileStaging => 41,
            Exit::Other(c) => c,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_read_back_both_ways() {
        for code in [
            0, 10, 11, 12, 13, 14, 20, 21, 22, 30, 31, 32, 33, 34, 35, 40, 41, 1, 2, 141, -1,
        ] {
            assert_eq!(Exit::from_code(code).code(), code, "{code}");
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

    #[test]
    fn scripts_are_strict_and_never_trace() {
        for (name, script) in ALL {
            assert!(script.contains("\nset -euo pipefail\n"), "{name}");
            assert!(!script.contains("set -x"), "{name}");
        }
    }

    /// The scripts exactly as they run pass shellcheck (the files alone are checked by
    /// the test command too).
    #[test]
    fn scripts_pass_shellcheck() {
        let dir = tempfile::tempdir().unwrap();
        for (name, script) in ALL {
            let path = dir.path().join(name);
            std::fs::write(&path, script).unwrap();
            let out = std::process::Command::new("shellcheck")
                .args(["--shell=bash", "--severity=style"])
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

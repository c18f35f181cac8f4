//! The free space a restore, verify or extraction leaves on the file system it stages
//! on, for the live homeserver that keeps writing there while the backup is fetched
//! ([`RestoreOptions::space_reserve_mib`](crate::RestoreOptions::space_reserve_mib)).
//!
//! Staging goes beside the data (the layout's work base), on the homeserver's own
//! volume, and the space it needs is known before only as well as the manifest says
//! it (a legacy backup, compressed by gpg, says nothing; a manifest is trusted only once
//! staged). `fetch.sh` checks the need plus the reserve before staging, and tar's
//! checkpoints run `reserve.sh` while it extracts, which stops it once less than the
//! reserve is free: the restore then fails with
//! [`BackupError::SpaceReserve`](crate::BackupError::SpaceReserve) and removes what it
//! staged, and the homeserver never sees a full volume on its account.

use std::collections::BTreeMap;

use crate::backup::scripts;

/// The most the default reserve keeps free: 256 MiB (a few minutes of a busy
/// homeserver's uploads and database growth).
pub const DEFAULT_SPACE_RESERVE_MIB: u32 = 256;

/// The share of the staging file system the default reserve keeps free where that is
/// less than [`DEFAULT_SPACE_RESERVE_MIB`]: 5 %.
pub const DEFAULT_SPACE_RESERVE_PERCENT: u32 = 5;

/// How much free space a fetch keeps: the smaller of `bytes` and `percent` of the
/// staging file system's size. Pure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reserve {
    bytes: u64,
    percent: u32,
}

impl Reserve {
    /// The reserve [`RestoreOptions::space_reserve_mib`](crate::RestoreOptions::space_reserve_mib)
    /// asks for: `None`, the default (the smaller of [`DEFAULT_SPACE_RESERVE_MIB`] and
    /// [`DEFAULT_SPACE_RESERVE_PERCENT`] of the file system); `Some(mib)`, that many MiB
    /// (no more than the file system holds; 0: none).
    pub(crate) fn of(mib: Option<u32>) -> Reserve {
        match mib {
            None => Reserve {
                bytes: u64::from(DEFAULT_SPACE_RESERVE_MIB) << 20,
                percent: DEFAULT_SPACE_RESERVE_PERCENT,
            },
            Some(mib) => Reserve {
                bytes: u64::from(mib) << 20,
                percent: 100,
            },
        }
    }

    /// The bytes kept free on a file system of `size` bytes (`space.sh`'s rule).
    #[cfg(test)]
    fn on(self, size: u64) -> u64 {
        (size.saturating_mul(u64::from(self.percent)) / 100).min(self.bytes)
    }

    /// Sets what the scripts read to keep the reserve (`SB_RESERVE_BYTES` and
    /// `SB_RESERVE_PERCENT`) in a script's environment, with the text of `reserve.sh`
    /// (`SB_RESERVE_SH`) for `fetch.sh`'s tar when `checkpoints`; nothing with no
    /// reserve.
    pub(crate) fn apply(self, env: &mut BTreeMap<String, String>, checkpoints: bool) {
        if self.bytes == 0 {
            return;
        }
        env.insert("SB_RESERVE_BYTES".into(), self.bytes.to_string());
        env.insert("SB_RESERVE_PERCENT".into(), self.percent.to_string());
        if checkpoints {
            env.insert("SB_RESERVE_SH".into(), scripts::RESERVE.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn the_default_keeps_the_smaller_of_5_percent_and_256_mib() {
        let default = Reserve::of(None);
        assert_eq!(default.on(100 * GIB), 256 * MIB);
        assert_eq!(default.on(64 * MIB), 64 * MIB / 20);
        assert_eq!(default.on(0), 0);
        assert_eq!(default.on(u64::MAX), 256 * MIB, "no overflow");
    }

    #[test]
    fn a_size_asked_for_is_kept_up_to_the_whole_file_system() {
        assert_eq!(Reserve::of(Some(8)).on(100 * GIB), 8 * MIB);
        assert_eq!(Reserve::of(Some(1024)).on(64 * MIB), 64 * MIB);
        assert_eq!(Reserve::of(Some(0)).on(100 * GIB), 0);
    }

    #[test]
    fn the_script_goes_only_where_tar_checks_and_nothing_without_a_reserve() {
        let mut none = BTreeMap::new();
        Reserve::of(Some(0)).apply(&mut none, true);
        assert!(none.is_empty(), "{none:?}");

        let mut snapshot = BTreeMap::new();
        Reserve::of(None).apply(&mut snapshot, false);
        assert_eq!(snapshot["SB_RESERVE_BYTES"], (256 * MIB).to_string());
        assert_eq!(snapshot["SB_RESERVE_PERCENT"], "5");
        assert!(!snapshot.contains_key("SB_RESERVE_SH"));

        let mut staging = BTreeMap::new();
        Reserve::of(Some(8)).apply(&mut staging, true);
        assert_eq!(staging["SB_RESERVE_BYTES"], (8 * MIB).to_string());
        assert_eq!(staging["SB_RESERVE_PERCENT"], "100");
        assert_eq!(staging["SB_RESERVE_SH"], scripts::RESERVE);
    }
}

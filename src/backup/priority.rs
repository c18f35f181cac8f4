//! How gently a pipeline shares the workload's CPU and disk with the homeserver.
//!
//! Pure values: the scripts apply them (`watchdog.sh` re-executes the script under
//! `nice` and, where util-linux's `ionice` is installed, `ionice`), from two variables
//! of the script's environment.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::error::ConfigError;

/// The I/O scheduling class of a pipeline (`ionice`): honoured by the BFQ and CFQ
/// schedulers, ignored by `none` and `mq-deadline` (where only the CPU priority acts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "class", content = "level")]
#[non_exhaustive]
pub enum IoPriority {
    /// The process's own (the caller's, or derived from its CPU priority).
    Inherit,
    /// Best effort at a level from 0 (highest) to 7 (lowest).
    BestEffort(u8),
    /// Only when no other process asks for the disk. A backup can stall behind a
    /// homeserver that never stops reading: prefer `BestEffort(7)` unless the disk idles.
    Idle,
}

/// The CPU and I/O priority of the pipelines (the SQLite snapshot, `tar | gpg | aws`
/// and the download side of verify, restore and extract), so that a backup taken while
/// Synapse serves leaves it responsive.
///
/// The default is [`Priority::gentle`] (`nice 10`, best-effort I/O at level 7): a
/// priority only matters when the CPU or the disk is contended, and then the homeserver
/// should win. On an idle machine the backup runs as fast as at the caller's own
/// priority; the README's benchmark section has the measurements.
/// [`Priority::inherit`] (text `normal`) keeps the caller's own.
///
/// ```
/// use synapse_backup::{IoPriority, Priority};
///
/// let gentle = Priority::new(19, IoPriority::Idle)?;
/// assert_eq!(gentle.nice(), 19);
/// assert_eq!("10,best-effort:7".parse::<Priority>()?, Priority::gentle());
/// assert_eq!(Priority::default(), Priority::gentle());
/// assert!(Priority::new(20, IoPriority::Inherit).is_err());
/// # Ok::<(), synapse_backup::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Priority {
    nice: u8,
    io: IoPriority,
}

impl Default for Priority {
    /// [`Priority::gentle`].
    fn default() -> Self {
        Self::gentle()
    }
}

/// The field [`Priority`]'s errors name.
const FIELD: &str = "priority";

fn invalid(problem: String) -> ConfigError {
    ConfigError::field(FIELD, problem)
}

impl Priority {
    /// The priority the caller runs at: no `nice`, no `ionice`.
    pub const fn inherit() -> Self {
        Self {
            nice: 0,
            io: IoPriority::Inherit,
        }
    }

    /// `nice 10` and best-effort I/O at level 7: yields the CPU and the disk to the
    /// homeserver whenever it wants them.
    pub const fn gentle() -> Self {
        Self {
            nice: 10,
            io: IoPriority::BestEffort(7),
        }
    }

    /// A priority of `nice` (0, the caller's, to 19, the lowest) and an I/O class.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] (field `priority`) when `nice` is over 19 or a
    /// best-effort level over 7.
    pub fn new(nice: u8, io: IoPriority) -> Result<Self, ConfigError> {
        if nice > 19 {
            return Err(invalid(format!("nice {nice} is out of range (0 to 19)")));
        }
        if let IoPriority::BestEffort(level) = io
            && level > 7
        {
            return Err(invalid(format!(
                "best-effort level {level} is out of range (0 to 7)"
            )));
        }
        Ok(Self { nice, io })
    }

    /// The CPU niceness added (0 to 19).
    pub const fn nice(&self) -> u8 {
        self.nice
    }

    /// The I/O class.
    pub const fn io(&self) -> IoPriority {
        self.io
    }

    /// Sets the variables `watchdog.sh` reads: `SB_NICE` and `SB_IONICE` (`-c C [-n N]`
    /// as two or four words), each absent when it changes nothing.
    pub(crate) fn apply(&self, env: &mut BTreeMap<String, String>) {
        if self.nice > 0 {
            env.insert("SB_NICE".into(), self.nice.to_string());
        }
        match self.io {
            IoPriority::Inherit => {}
            IoPriority::BestEffort(level) => {
                env.insert("SB_IONICE".into(), format!("-c 2 -n {level}"));
            }
            IoPriority::Idle => {
                env.insert("SB_IONICE".into(), "-c 3".into());
            }
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},", self.nice)?;
        match self.io {
            IoPriority::Inherit => f.write_str("inherit"),
            IoPriority::BestEffort(level) => write!(f, "best-effort:{level}"),
            IoPriority::Idle => f.write_str("idle"),
        }
    }
}

impl FromStr for Priority {
    type Err = ConfigError;

    /// `NICE[,IO]`, IO one of `inherit`, `idle`, `best-effort:LEVEL`; `normal` is
    /// `0,inherit` and `gentle` is [`Priority::gentle`]. A bare `NICE` keeps the caller's I/O class.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("normal") {
            return Ok(Self::inherit());
        }
        if s.eq_ignore_ascii_case("gentle") {
            return Ok(Self::gentle());
        }
        let (nice, io) = s.split_once(',').unwrap_or((s, ""));
        let nice: u8 = nice.trim().parse().map_err(|_| {
            invalid(format!(
                "{s:?} is not NICE[,IO] (e.g. `10,best-effort:7`, `19,idle`, `normal`)"
            ))
        })?;
        let io = match io.trim() {
            "" => IoPriority::Inherit,
            "inherit" => IoPriority::Inherit,
            "idle" => IoPriority::Idle,
            other => match other.strip_prefix("best-effort:").map(str::parse::<u8>) {
                Some(Ok(level)) => IoPriority::BestEffort(level),
                _ => {
                    return Err(invalid(format!(
                        "unknown I/O class {other:?} (inherit, idle or best-effort:0 to 7)"
                    )));
                }
            },
        };
        Self::new(nice, io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_form() {
        for (text, nice, io) in [
            ("10,best-effort:7", 10, IoPriority::BestEffort(7)),
            ("19,idle", 19, IoPriority::Idle),
            ("5,inherit", 5, IoPriority::Inherit),
            ("0,best-effort:0", 0, IoPriority::BestEffort(0)),
        ] {
            let p: Priority = text.parse().unwrap();
            assert_eq!((p.nice(), p.io()), (nice, io), "{text}");
            assert_eq!(p.to_string(), text);
        }
        assert_eq!("normal".parse::<Priority>().unwrap(), Priority::inherit());
        assert_eq!("Gentle".parse::<Priority>().unwrap(), Priority::gentle());
        assert_eq!("12".parse::<Priority>().unwrap().io(), IoPriority::Inherit);
    }

    #[test]
    fn refuses_out_of_range_and_unknown_values_naming_the_field() {
        for bad in [
            "20",
            "-1",
            "x",
            "10,best-effort:8",
            "10,realtime",
            "10,best-effort:",
        ] {
            let err = bad.parse::<Priority>().unwrap_err();
            assert_eq!(err.fields(), vec!["priority"], "{bad}");
        }
        let err = "10,best-effort:9".parse::<Priority>().unwrap_err();
        assert!(err.to_string().contains("level 9"), "{err}");
    }

    #[test]
    fn sets_only_the_variables_that_change_something() {
        let mut env = BTreeMap::new();
        Priority::inherit().apply(&mut env);
        assert!(env.is_empty());
        assert_eq!(Priority::default(), Priority::gentle());
        Priority::gentle().apply(&mut env);
        assert_eq!(env["SB_NICE"], "10");
        assert_eq!(env["SB_IONICE"], "-c 2 -n 7");
        let mut env = BTreeMap::new();
        Priority::new(0, IoPriority::Idle).unwrap().apply(&mut env);
        assert_eq!(env.get("SB_NICE"), None);
        assert_eq!(env["SB_IONICE"], "-c 3");
    }
}

//! Where a restore's (or an extraction's) wall time went: [`RestorePhases`], timed by
//! [`PhaseClock`] as the run passes from one phase to the next.

use std::fmt;
use std::time::{Duration, Instant};

/// A restore's or an extraction's wall time, phase by phase (the phases follow one
/// another and add up to about the report's `duration`).
///
/// ```
/// use std::time::Duration;
/// use synapse_backup::RestorePhases;
///
/// let phases = RestorePhases::default();
/// assert_eq!(phases.total(), Duration::ZERO);
/// assert_eq!(
///     phases.to_string(),
///     "prepare 0.00 s, fetch 0.00 s, checks 0.00 s, swap 0.00 s, cleanup 0.00 s"
/// );
/// ```
///
/// Serialized (the CLI's `--json`) as the seconds of each phase:
/// `{"prepare": 0.31, "fetch": 4.9, …}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestorePhases {
    /// Before the download: the homeserver config and the manifest read, an
    /// incremental backup's chain planned, killed runs' leftovers swept, the work dir
    /// (and for an extraction the target dir) made.
    pub prepare: Duration,
    /// The download, the decryption and the extraction into staging (one pipeline per
    /// pack, its stages running at once), with gpg's status check, the inner manifest
    /// and tar's listing checked against the member rules.
    pub fetch: Duration,
    /// The staged tree walked and compared with tar's listing, the staged database's
    /// `PRAGMA integrity_check` and the one-time keys' removal, the space check.
    pub checks: Duration,
    /// A restore: the service stopped, the live paths set aside and the staged ones
    /// moved in, the service started again. An extraction: the members moved from
    /// staging into the target.
    pub swap: Duration,
    /// The work dir removed (with a restore's set-aside live data).
    pub cleanup: Duration,
}

impl RestorePhases {
    /// The phases' sum.
    pub fn total(&self) -> Duration {
        self.prepare + self.fetch + self.checks + self.swap + self.cleanup
    }

    /// The phases in order, by name: `prepare`, `fetch`, `checks`, `swap`, `cleanup`.
    pub fn named(&self) -> [(&'static str, Duration); 5] {
        [
            ("prepare", self.prepare),
            ("fetch", self.fetch),
            ("checks", self.checks),
            ("swap", self.swap),
            ("cleanup", self.cleanup),
        ]
    }
}

impl fmt::Display for RestorePhases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, d)) in self.named().iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{name} {:.2} s", d.as_secs_f64())?;
        }
        Ok(())
    }
}

impl serde::Serialize for RestorePhases {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let named = self.named();
        let mut map = serializer.serialize_map(Some(named.len()))?;
        for (name, d) in named {
            map.serialize_entry(name, &d.as_secs_f64())?;
        }
        map.end()
    }
}

/// A phase of [`RestorePhases`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Prepare,
    Fetch,
    Checks,
    Swap,
    Cleanup,
}

/// Times the phases of one run: [`mark`](Self::mark) ends a phase, which gets the
/// time since the previous mark (or the start).
#[derive(Debug)]
pub(crate) struct PhaseClock {
    last: Instant,
    phases: RestorePhases,
}

impl PhaseClock {
    /// A clock whose first phase starts now.
    pub(crate) fn start() -> Self {
        PhaseClock::starting_at(Instant::now())
    }

    fn starting_at(at: Instant) -> Self {
        PhaseClock {
            last: at,
            phases: RestorePhases::default(),
        }
    }

    /// Ends `phase` now.
    pub(crate) fn mark(&mut self, phase: Phase) {
        self.mark_at(phase, Instant::now());
    }

    /// Ends `phase` at `at` (never before the previous mark): the time since that mark
    /// is added to it.
    fn mark_at(&mut self, phase: Phase, at: Instant) {
        let spent = at.saturating_duration_since(self.last);
        self.last = self.last.max(at);
        let slot = match phase {
            Phase::Prepare => &mut self.phases.prepare,
            Phase::Fetch => &mut self.phases.fetch,
            Phase::Checks => &mut self.phases.checks,
            Phase::Swap => &mut self.phases.swap,
            Phase::Cleanup => &mut self.phases.cleanup,
        };
        *slot += spent;
    }

    /// The phases timed so far.
    pub(crate) fn phases(&self) -> RestorePhases {
        self.phases
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mark_gives_its_phase_the_time_since_the_one_before() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut clock = PhaseClock::starting_at(t0);
        clock.mark_at(Phase::Prepare, at(300));
        clock.mark_at(Phase::Fetch, at(5_300));
        clock.mark_at(Phase::Checks, at(5_500));
        clock.mark_at(Phase::Swap, at(5_600));
        clock.mark_at(Phase::Cleanup, at(5_650));
        let p = clock.phases();
        let ms = Duration::from_millis;
        assert_eq!(
            (p.prepare, p.fetch, p.checks, p.swap, p.cleanup),
            (ms(300), ms(5_000), ms(200), ms(100), ms(50))
        );
        assert_eq!(p.total(), ms(5_650));
        assert_eq!(
            p.to_string(),
            "prepare 0.30 s, fetch 5.00 s, checks 0.20 s, swap 0.10 s, cleanup 0.05 s"
        );
    }

    #[test]
    fn a_phase_marked_twice_adds_up_and_a_mark_in_the_past_adds_nothing() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut clock = PhaseClock::starting_at(t0);
        clock.mark_at(Phase::Fetch, at(100));
        clock.mark_at(Phase::Checks, at(150));
        clock.mark_at(Phase::Fetch, at(400));
        clock.mark_at(Phase::Swap, at(10));
        let p = clock.phases();
        assert_eq!(p.fetch, Duration::from_millis(350));
        assert_eq!(p.checks, Duration::from_millis(50));
        assert_eq!(p.swap, Duration::ZERO);
        assert_eq!(p.total(), Duration::from_millis(400));
    }

    #[test]
    fn serializes_as_seconds_by_phase() {
        let phases = RestorePhases {
            fetch: Duration::from_millis(4_900),
            swap: Duration::from_millis(125),
            ..RestorePhases::default()
        };
        let json = serde_json::to_value(phases).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "prepare": 0.0, "fetch": 4.9, "checks": 0.0, "swap": 0.125, "cleanup": 0.0
            })
        );
    }
}

//! The prune plan: which backups a retention policy deletes and keeps, and why. Pure:
//! built from a listing, the server's clock and what is known about the lock, with no
//! I/O, so that it can be inspected (and tested) before anything is deleted.
//!
//! Backups are ordered and aged by the server's time (the objects' `LastModified`),
//! never by the time in their id: a host with a bad clock names its backups with a
//! wrong time, but the server stamps them with its own.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::Serialize;

use crate::backup::catalog::{BackupInfo, BackupStatus, RetentionPolicy};
use crate::backup::plan::BackupId;
use crate::s3::MultipartUpload;

/// How far the time in a backup's id may run ahead of the server's `LastModified` (a
/// reference backup's id is in the host's local time, up to 14 hours ahead of UTC) or
/// behind it (a long upload) before the two are reported as disagreeing.
pub const ID_TIME_AHEAD_TOLERANCE: ChronoDuration = ChronoDuration::days(1);
/// See [`ID_TIME_AHEAD_TOLERANCE`]: how far the id's time may lag behind.
pub const ID_TIME_BEHIND_TOLERANCE: ChronoDuration = ChronoDuration::days(7);

/// Whether a backup's id names a time far from when the server stored it (the host
/// that made it had a wrong clock); see [`ID_TIME_AHEAD_TOLERANCE`].
pub fn id_time_disagrees(backup: &BackupInfo) -> bool {
    // `LastModified` comes from the server: checked arithmetic, whatever it says.
    let gap = backup
        .id
        .created()
        .signed_duration_since(backup.last_modified);
    gap > ID_TIME_AHEAD_TOLERANCE || -gap > ID_TIME_BEHIND_TOLERANCE
}

/// Orders a listing newest first by the server's time (`LastModified`), then by id.
pub fn order_by_server_time(backups: &mut [BackupInfo]) {
    backups.sort_by(|a, b| {
        b.last_modified
            .cmp(&a.last_modified)
            .then_with(|| b.id.cmp(&a.id))
    });
}

/// Where the plan's "now" came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ClockSource {
    /// The server's clock (the `LastModified` of an object written for it).
    Server,
    /// This host's clock: the server's could not be read (e.g. read-only credentials).
    Local,
}

/// Which incomplete leftovers (failed creates' data and multipart uploads) may go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
#[non_exhaustive]
pub enum LeftoverRule {
    /// Those older than the grace period (no lock: the grace period guards a running
    /// create).
    OlderThan {
        /// The grace period in seconds.
        grace_seconds: u64,
    },
    /// All of them: the lock is (or, in a dry run, could be) held, so no create runs.
    All,
    /// None: a live operation holds the lock.
    NoneWhileHeld {
        /// Who holds it.
        holder: String,
    },
}

/// Keep or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PruneAction {
    /// The backup stays.
    Keep,
    /// The backup goes.
    Delete,
}

/// Why a backup is kept or deleted. A kept backup may have several reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum PruneReason {
    /// Kept whatever the policy: the newest complete backup.
    NewestComplete,
    /// Kept whatever the policy: the newest restorable backup (complete, or legacy
    /// when no complete one is newer).
    NewestRestorable,
    /// Kept whatever the policy: the newest backup that opens with the passphrase
    /// the prune was given.
    OpensWithPassphrase,
    /// Kept: another backup needs it (an incremental backup's packs).
    NeededBy {
        /// The backup that needs it.
        id: BackupId,
    },
    /// Kept: among the `n` newest restorable backups.
    KeepLast {
        /// The policy's `keep_last`.
        n: usize,
    },
    /// Kept: not older than the policy's age limit.
    WithinAge {
        /// The policy's `older_than_days`.
        days: u32,
    },
    /// Kept: the policy asks to delete no restorable backup.
    NoRetention,
    /// Kept: incomplete, but younger than the grace period (a create may be running).
    IncompleteWithinGrace {
        /// The grace period in seconds.
        grace_seconds: u64,
    },
    /// Kept: incomplete, and a live operation holds the lock (a create may be running).
    LockHeld {
        /// Who holds it.
        holder: String,
    },
    /// Deleted: older than the policy's age limit.
    OlderThan {
        /// The policy's `older_than_days`.
        days: u32,
    },
    /// Deleted: not among the `n` newest restorable backups.
    BeyondKeepLast {
        /// The policy's `keep_last`.
        n: usize,
    },
    /// Deleted: incomplete (no manifest or no data: a failed or interrupted create).
    IncompleteLeftover,
}

impl fmt::Display for PruneReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PruneReason::NewestComplete => f.write_str("the newest complete backup"),
            PruneReason::NewestRestorable => f.write_str("the newest restorable backup"),
            PruneReason::OpensWithPassphrase => {
                f.write_str("the newest backup that opens with the given passphrase")
            }
            PruneReason::NeededBy { id } => write!(f, "needed by {id}"),
            PruneReason::KeepLast { n } => write!(f, "among the {n} newest restorable backups"),
            PruneReason::WithinAge { days } => write!(f, "not older than {days} days"),
            PruneReason::NoRetention => f.write_str("no retention asks to delete it"),
            PruneReason::IncompleteWithinGrace { grace_seconds } => write!(
                f,
                "incomplete but younger than the grace period ({grace_seconds} s): a create may be running"
            ),
            PruneReason::LockHeld { holder } => write!(
                f,
                "incomplete, left alone while the lock is held by {holder}"
            ),
            PruneReason::OlderThan { days } => write!(f, "older than {days} days"),
            PruneReason::BeyondKeepLast { n } => {
                write!(f, "not among the {n} newest restorable backups")
            }
            PruneReason::IncompleteLeftover => f.write_str(
                "incomplete (no manifest or no data: a failed or interrupted create), not restorable",
            ),
        }
    }
}

impl PruneReason {
    /// Whether this reason keeps a backup whatever the policy says.
    pub fn protects(&self) -> bool {
        matches!(
            self,
            PruneReason::NewestComplete
                | PruneReason::NewestRestorable
                | PruneReason::OpensWithPassphrase
                | PruneReason::NeededBy { .. }
        )
    }
}

/// One backup in a [`PrunePlan`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PlannedBackup {
    /// The backup as listed.
    #[serde(flatten)]
    pub backup: BackupInfo,
    /// Keep or delete.
    pub action: PruneAction,
    /// Why (at least one).
    pub reasons: Vec<PruneReason>,
    /// Its age by the server's clock, in seconds (`now - LastModified`).
    pub age_seconds: i64,
    /// The time in its id is far from when the server stored it (see
    /// [`ID_TIME_AHEAD_TOLERANCE`]); it is ordered and aged by the server's time.
    pub id_time_disagrees: bool,
    /// The older packs it needs (an incremental backup's chain, base last): kept
    /// alive as long as it is kept. Empty for a full backup.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub packs: Vec<BackupId>,
}

/// A multipart upload of a backup key that the plan aborts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StaleUpload {
    /// The object key.
    pub key: String,
    /// The upload id.
    pub upload_id: String,
    /// When it was started, if the server says.
    pub initiated: Option<DateTime<Utc>>,
}

/// What a prune will do, and why: every backup with keep or delete and its reasons,
/// newest first by the server's time. Built by [`Backups::prune_plan`](crate::Backups::prune_plan)
/// (or the pure [`plan_prune`]) and carried out by
/// [`Backups::prune`](crate::Backups::prune), which re-checks it under the lock and
/// deletes only what both the plan and the bucket as it then is allow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PrunePlan {
    /// The policy it follows.
    pub policy: RetentionPolicy,
    /// "Now" for the ages.
    pub now: DateTime<Utc>,
    /// Whose clock `now` is.
    pub clock: ClockSource,
    /// Which incomplete leftovers may go.
    pub leftovers: LeftoverRule,
    /// Every backup, newest first by the server's time.
    pub backups: Vec<PlannedBackup>,
    /// Multipart uploads of backup keys to abort.
    pub uploads: Vec<StaleUpload>,
    /// Things the operator should know (ids whose time disagrees with the server's,
    /// a clock that is not the server's).
    pub warnings: Vec<String>,
    /// The encrypted bytes the deletions free, as planned (see [`PrunePlan::freed`]).
    pub freed_bytes: u64,
}

impl PrunePlan {
    /// The encrypted bytes the deletions free (the data objects' sizes).
    pub fn freed(&self) -> u64 {
        self.to_delete().map(|b| b.backup.size).sum()
    }

    /// The backups to delete.
    pub fn to_delete(&self) -> impl Iterator<Item = &PlannedBackup> {
        self.backups
            .iter()
            .filter(|b| b.action == PruneAction::Delete)
    }

    /// The backups kept.
    pub fn to_keep(&self) -> impl Iterator<Item = &PlannedBackup> {
        self.backups
            .iter()
            .filter(|b| b.action == PruneAction::Keep)
    }

    /// The backups kept whatever the policy (see [`PruneReason::protects`]).
    pub fn protected(&self) -> Vec<BackupId> {
        self.backups
            .iter()
            .filter(|b| b.reasons.iter().any(PruneReason::protects))
            .map(|b| b.backup.id.clone())
            .collect()
    }

    /// The planned entry of `id`.
    pub fn get(&self, id: &BackupId) -> Option<&PlannedBackup> {
        self.backups.iter().find(|b| &b.backup.id == id)
    }
}

/// What [`plan_prune`] needs beside the listing and the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlanContext {
    /// "Now", for the ages.
    pub now: DateTime<Utc>,
    /// Whose clock `now` is.
    pub clock: ClockSource,
    /// Which incomplete leftovers may go.
    pub leftovers: LeftoverRule,
    /// The backups' key prefix (only uploads of backup keys under it are aborted).
    pub prefix: String,
    /// The newest backup that opens with the passphrase given to the prune, if any:
    /// kept whatever the policy.
    pub opens_with_passphrase: Option<BackupId>,
    /// Backups another backup needs, with the one that needs them: kept whatever the
    /// policy.
    pub needed: Vec<(BackupId, BackupId)>,
    /// Each incremental backup's older packs (its chain, base last): a backup the plan
    /// keeps keeps every one of them (as [`PruneReason::NeededBy`]).
    pub chains: BTreeMap<BackupId, Vec<BackupId>>,
}

impl PlanContext {
    /// A context at `now` by the server's clock, with leftovers as `leftovers` says.
    pub fn new(now: DateTime<Utc>, leftovers: LeftoverRule, prefix: impl Into<String>) -> Self {
        PlanContext {
            now,
            clock: ClockSource::Server,
            leftovers,
            prefix: prefix.into(),
            opens_with_passphrase: None,
            needed: Vec::new(),
            chains: BTreeMap::new(),
        }
    }
}

fn leftover_may_go(rule: &LeftoverRule, age: ChronoDuration) -> bool {
    match rule {
        LeftoverRule::OlderThan { grace_seconds } => {
            age.num_seconds() > i64::try_from(*grace_seconds).unwrap_or(i64::MAX)
        }
        LeftoverRule::All => true,
        LeftoverRule::NoneWhileHeld { .. } => false,
    }
}

/// What happens to an incomplete backup `age` old under the leftover rule; its
/// reason goes to `reasons`.
fn incomplete_action(
    leftovers: &LeftoverRule,
    age: ChronoDuration,
    reasons: &mut Vec<PruneReason>,
) -> PruneAction {
    if leftover_may_go(leftovers, age) {
        reasons.push(PruneReason::IncompleteLeftover);
        return PruneAction::Delete;
    }
    reasons.push(match leftovers {
        LeftoverRule::NoneWhileHeld { holder } => PruneReason::LockHeld {
            holder: holder.clone(),
        },
        LeftoverRule::OlderThan { grace_seconds } => PruneReason::IncompleteWithinGrace {
            grace_seconds: *grace_seconds,
        },
        LeftoverRule::All => PruneReason::IncompleteLeftover,
    });
    PruneAction::Keep
}

/// What decides the fate of a restorable (complete or legacy) backup.
struct Rules<'a> {
    policy: &'a RetentionPolicy,
    context: &'a PlanContext,
    newest_restorable: Option<BackupId>,
    newest_complete: Option<BackupId>,
}

impl Rules<'_> {
    /// What happens to the restorable backup `id`, the `seen`-th newest, `age` old;
    /// every reason goes to `reasons`.
    fn restorable_action(
        &self,
        id: &BackupId,
        seen: usize,
        age: ChronoDuration,
        reasons: &mut Vec<PruneReason>,
    ) -> PruneAction {
        let (policy, context) = (self.policy, self.context);
        if self.newest_restorable.as_ref() == Some(id) {
            reasons.push(PruneReason::NewestRestorable);
        }
        if self.newest_complete.as_ref() == Some(id) {
            reasons.push(PruneReason::NewestComplete);
        }
        if context.opens_with_passphrase.as_ref() == Some(id) {
            reasons.push(PruneReason::OpensWithPassphrase);
        }
        for (needed, by) in &context.needed {
            if needed == id {
                reasons.push(PruneReason::NeededBy { id: by.clone() });
            }
        }
        let within_keep = policy.keep_last.filter(|&n| seen <= n);
        if let Some(n) = within_keep {
            reasons.push(PruneReason::KeepLast { n });
        }
        let too_old = policy
            .older_than_days
            .filter(|&d| age > ChronoDuration::days(i64::from(d)));
        let delete_reason = match (policy.older_than_days, policy.keep_last) {
            (Some(_), _) => too_old.map(|days| PruneReason::OlderThan { days }),
            (None, Some(n)) if within_keep.is_none() => Some(PruneReason::BeyondKeepLast { n }),
            _ => None,
        };
        let protected = reasons.iter().any(PruneReason::protects);
        match delete_reason {
            Some(why) if !protected && within_keep.is_none() => {
                reasons.push(why);
                if let (Some(_), Some(n)) = (policy.older_than_days, policy.keep_last) {
                    reasons.push(PruneReason::BeyondKeepLast { n });
                }
                PruneAction::Delete
            }
            _ => {
                if let Some(days) = policy.older_than_days
                    && too_old.is_none()
                {
                    reasons.push(PruneReason::WithinAge { days });
                }
                if reasons.is_empty() {
                    reasons.push(PruneReason::NoRetention);
                }
                PruneAction::Keep
            }
        }
    }
}

/// The multipart uploads of backups (keys of this prefix named by a backup id, or a
/// backup's database pack) that the leftover rule lets go.
fn stale_uploads(uploads: &[MultipartUpload], context: &PlanContext) -> Vec<StaleUpload> {
    uploads
        .iter()
        .filter(|u| {
            u.key
                .strip_prefix(context.prefix.as_str())
                .is_some_and(|name| {
                    name.parse::<BackupId>().is_ok()
                        || crate::backup::incremental::parse_database_name(name).is_some()
                })
        })
        .filter(|u| match &context.leftovers {
            LeftoverRule::All => true,
            other => u
                .initiated
                .is_some_and(|t| leftover_may_go(other, context.now - t)),
        })
        .map(|u| StaleUpload {
            key: u.key.clone(),
            upload_id: u.upload_id.clone(),
            initiated: u.initiated,
        })
        .collect()
}

/// Plans a prune: every backup of the listing (in any order) with keep or delete and
/// why, newest first by the server's time; ages are `context.now - LastModified`.
///
/// Never deleted, whatever the policy: the newest complete backup, the newest restorable
/// one, the backup that opens with the prune's passphrase and the backups another one
/// needs. A passphrase only ever protects more. Incomplete backups go as
/// `context.leftovers` says; complete and legacy ones as the policy says (`keep_last`
/// counts restorable backups newest first; with `older_than_days` a backup goes once
/// older and beyond `keep_last`; with `keep_last` alone, once beyond it). Pure.
pub fn plan_prune(
    listing: &[BackupInfo],
    uploads: &[MultipartUpload],
    policy: &RetentionPolicy,
    context: &PlanContext,
) -> PrunePlan {
    let first = plan_once(listing, uploads, policy, context);
    if context.chains.is_empty() {
        return first;
    }
    // Every pack a kept backup's chain names is kept, needed by it. A pack kept this
    // way is older in the same chain, so its own chain is already covered: one more
    // pass suffices.
    let mut chained = context.clone();
    for kept in first.to_keep() {
        for pack in context.chains.get(&kept.backup.id).into_iter().flatten() {
            chained.needed.push((pack.clone(), kept.backup.id.clone()));
        }
    }
    plan_once(listing, uploads, policy, &chained)
}

fn plan_once(
    listing: &[BackupInfo],
    uploads: &[MultipartUpload],
    policy: &RetentionPolicy,
    context: &PlanContext,
) -> PrunePlan {
    let mut backups = listing.to_vec();
    order_by_server_time(&mut backups);
    let rules = Rules {
        policy,
        context,
        newest_restorable: backups
            .iter()
            .find(|b| matches!(b.status, BackupStatus::Complete | BackupStatus::Legacy))
            .map(|b| b.id.clone()),
        newest_complete: backups
            .iter()
            .find(|b| b.status == BackupStatus::Complete)
            .map(|b| b.id.clone()),
    };
    let mut warnings = Vec::new();
    if context.clock == ClockSource::Local {
        warnings.push(
            "the server's clock could not be read: ages are by this host's clock".to_string(),
        );
    }
    let mut restorable_seen = 0usize;
    let mut planned = Vec::with_capacity(backups.len());
    for b in backups {
        let age = context.now - b.last_modified;
        let disagrees = id_time_disagrees(&b);
        if disagrees {
            warnings.push(format!(
                "{}: its id says {} but the server stored it at {} (a wrong clock on the host that made it); it is ordered and aged by the server's time",
                b.id,
                b.id.created().to_rfc3339(),
                b.last_modified.to_rfc3339()
            ));
        }
        let mut reasons = Vec::new();
        let action = if b.status == BackupStatus::Incomplete {
            incomplete_action(&context.leftovers, age, &mut reasons)
        } else {
            restorable_seen += 1;
            rules.restorable_action(&b.id, restorable_seen, age, &mut reasons)
        };
        let packs = context.chains.get(&b.id).cloned().unwrap_or_default();
        planned.push(PlannedBackup {
            packs,
            backup: b,
            action,
            reasons,
            age_seconds: age.num_seconds(),
            id_time_disagrees: disagrees,
        });
    }
    let uploads = stale_uploads(uploads, context);
    PrunePlan {
        policy: policy.clone(),
        now: context.now,
        clock: context.clock,
        leftovers: context.leftovers.clone(),
        freed_bytes: planned
            .iter()
            .filter(|b| b.action == PruneAction::Delete)
            .map(|b| b.backup.size)
            .sum(),
        backups: planned,
        uploads,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::catalog::ListedKind;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).unwrap()
    }

    /// A backup stored by the server `days_ago` days before `now()`, its id naming the
    /// time `id_skew_days` off the server's.
    fn stored(days_ago: i64, id_skew_days: i64, status: BackupStatus) -> BackupInfo {
        let t = now() - ChronoDuration::days(days_ago);
        BackupInfo {
            id: BackupId::from_time(t + ChronoDuration::days(id_skew_days)),
            key: String::new(),
            last_modified: t,
            size: 1,
            status,
            kind: ListedKind::from_listing(None, status),
        }
    }

    fn context() -> PlanContext {
        PlanContext::new(
            now(),
            LeftoverRule::OlderThan {
                grace_seconds: 86_400,
            },
            "p/",
        )
    }

    fn deleted(plan: &PrunePlan) -> Vec<BackupId> {
        plan.to_delete().map(|b| b.backup.id.clone()).collect()
    }

    #[test]
    fn a_backup_whose_id_is_a_year_ahead_is_not_the_newest() {
        use BackupStatus::*;
        // The real newest backup (stored today) and one made last week by a host whose
        // clock was a year ahead.
        let real = stored(0, 0, Complete);
        let skewed = stored(7, 365, Complete);
        let policy = RetentionPolicy {
            keep_last: Some(1),
            ..RetentionPolicy::default()
        };
        let plan = plan_prune(&[skewed.clone(), real.clone()], &[], &policy, &context());
        assert_eq!(plan.backups[0].backup.id, real.id, "newest by server time");
        assert_eq!(deleted(&plan), std::slice::from_ref(&skewed.id));
        assert_eq!(
            plan.get(&real.id).unwrap().reasons,
            [
                PruneReason::NewestRestorable,
                PruneReason::NewestComplete,
                PruneReason::KeepLast { n: 1 }
            ]
        );
        assert!(plan.get(&skewed.id).unwrap().id_time_disagrees);
        assert!(!plan.get(&real.id).unwrap().id_time_disagrees);
        assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
        assert!(plan.warnings[0].contains(skewed.id.as_str()));
    }

    #[test]
    fn ages_are_by_the_server_time_not_the_id() {
        use BackupStatus::*;
        // Ids a year behind (a host whose clock was late), stored 1, 2 and 40 days ago.
        let backups = [
            stored(1, -365, Complete),
            stored(2, -365, Complete),
            stored(40, -365, Legacy),
        ];
        let policy = RetentionPolicy {
            older_than_days: Some(30),
            ..RetentionPolicy::default()
        };
        let plan = plan_prune(&backups, &[], &policy, &context());
        assert_eq!(deleted(&plan), [backups[2].id.clone()]);
        assert_eq!(
            plan.get(&backups[1].id).unwrap().reasons,
            [PruneReason::WithinAge { days: 30 }]
        );
        assert_eq!(plan.get(&backups[1].id).unwrap().age_seconds, 2 * 86_400);
        assert_eq!(
            plan.get(&backups[2].id).unwrap().reasons,
            [PruneReason::OlderThan { days: 30 }]
        );
    }

    #[test]
    fn keep_last_with_an_age_limit_deletes_only_what_is_both_old_and_beyond() {
        use BackupStatus::*;
        let backups: Vec<_> = (0..6).map(|d| stored(d * 10 + 5, 0, Complete)).collect();
        let policy = RetentionPolicy {
            older_than_days: Some(20),
            keep_last: Some(4),
            ..RetentionPolicy::default()
        };
        let plan = plan_prune(&backups, &[], &policy, &context());
        assert_eq!(
            deleted(&plan),
            [backups[4].id.clone(), backups[5].id.clone()]
        );
        assert_eq!(
            plan.get(&backups[3].id).unwrap().reasons,
            [PruneReason::KeepLast { n: 4 }]
        );
        assert_eq!(
            plan.get(&backups[5].id).unwrap().reasons,
            [
                PruneReason::OlderThan { days: 20 },
                PruneReason::BeyondKeepLast { n: 4 }
            ]
        );
    }

    #[test]
    fn a_kept_backup_keeps_its_chain_and_the_plan_says_what_is_freed() {
        use BackupStatus::*;
        // Newest first: an increment on a full pack, an old lone full backup.
        let backups: Vec<_> = [1, 2, 3, 40]
            .into_iter()
            .map(|d| stored(d, 0, Complete))
            .collect();
        let policy = RetentionPolicy {
            keep_last: Some(1),
            ..RetentionPolicy::default()
        };
        let mut ctx = context();
        // backups[0] needs [2] and [1] (full first); [1] needs [2].
        ctx.chains.insert(
            backups[0].id.clone(),
            vec![backups[2].id.clone(), backups[1].id.clone()],
        );
        ctx.chains
            .insert(backups[1].id.clone(), vec![backups[2].id.clone()]);
        let plan = plan_prune(&backups, &[], &policy, &ctx);
        assert_eq!(deleted(&plan), [backups[3].id.clone()]);
        assert_eq!((plan.freed_bytes, plan.freed()), (1, 1));
        for pack in [&backups[1], &backups[2]] {
            assert!(
                plan.get(&pack.id)
                    .unwrap()
                    .reasons
                    .contains(&PruneReason::NeededBy {
                        id: backups[0].id.clone()
                    }),
                "{}",
                pack.id
            );
        }
        assert_eq!(plan.get(&backups[0].id).unwrap().packs.len(), 2);
        // Without the chains, the same policy deletes the packs.
        let plain = plan_prune(&backups, &[], &policy, &context());
        assert_eq!(deleted(&plain).len(), 3);
        assert_eq!(plain.freed_bytes, 3);
    }

    #[test]
    fn a_passphrase_and_a_dependency_only_protect_more() {
        use BackupStatus::*;
        let backups: Vec<_> = (0..4).map(|d| stored(d * 10 + 40, 0, Complete)).collect();
        let policy = RetentionPolicy {
            older_than_days: Some(30),
            ..RetentionPolicy::default()
        };
        let without = plan_prune(&backups, &[], &policy, &context());
        assert_eq!(deleted(&without).len(), 3);
        let mut ctx = context();
        ctx.opens_with_passphrase = Some(backups[2].id.clone());
        ctx.needed = vec![(backups[3].id.clone(), backups[0].id.clone())];
        let with = plan_prune(&backups, &[], &policy, &ctx);
        assert_eq!(deleted(&with), [backups[1].id.clone()]);
        assert_eq!(
            with.get(&backups[2].id).unwrap().reasons,
            [PruneReason::OpensWithPassphrase]
        );
        assert_eq!(
            with.get(&backups[3].id).unwrap().reasons,
            [PruneReason::NeededBy {
                id: backups[0].id.clone()
            }]
        );
        assert_eq!(
            with.protected(),
            [
                backups[0].id.clone(),
                backups[2].id.clone(),
                backups[3].id.clone()
            ]
        );
        // Every backup the plan without a passphrase keeps, the plan with one keeps.
        for kept in without.to_keep() {
            assert_eq!(with.get(&kept.backup.id).unwrap().action, PruneAction::Keep);
        }
    }

    #[test]
    fn leftovers_and_uploads_go_by_server_age_all_or_none() {
        use BackupStatus::*;
        let fresh = stored(0, 0, Incomplete);
        let old = stored(3, -300, Incomplete);
        let backups = [fresh.clone(), old.clone(), stored(4, 0, Complete)];
        let upload = |name: &str, days: i64| MultipartUpload {
            key: format!("p/{name}"),
            upload_id: name.to_string(),
            initiated: Some(now() - ChronoDuration::days(days)),
        };
        let uploads = [
            upload(fresh.id.as_str(), 0),
            upload(old.id.as_str(), 3),
            upload("notes.txt", 9),
        ];
        let policy = RetentionPolicy::default();
        let by_age = plan_prune(&backups, &uploads, &policy, &context());
        assert_eq!(deleted(&by_age), std::slice::from_ref(&old.id));
        assert_eq!(by_age.uploads.len(), 1);
        assert_eq!(by_age.uploads[0].upload_id, old.id.as_str());
        let mut ctx = context();
        ctx.leftovers = LeftoverRule::All;
        let all = plan_prune(&backups, &uploads, &policy, &ctx);
        assert_eq!(deleted(&all), [fresh.id.clone(), old.id.clone()]);
        assert_eq!(all.uploads.len(), 2, "never an upload of another key");
        ctx.leftovers = LeftoverRule::NoneWhileHeld {
            holder: "create on b".into(),
        };
        let none = plan_prune(&backups, &uploads, &policy, &ctx);
        assert!(deleted(&none).is_empty());
        assert!(none.uploads.is_empty());
        assert!(matches!(
            none.get(&fresh.id).unwrap().reasons[0],
            PruneReason::LockHeld { .. }
        ));
    }

    #[test]
    fn the_plan_serializes_with_its_reasons() {
        let plan = plan_prune(
            &[stored(40, 0, BackupStatus::Complete)],
            &[],
            &RetentionPolicy::default(),
            &context(),
        );
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["backups"][0]["action"], "keep");
        assert_eq!(json["backups"][0]["status"], "complete");
        assert_eq!(
            json["backups"][0]["reasons"][0]["reason"],
            "newest_restorable"
        );
        assert_eq!(json["leftovers"]["rule"], "older_than");
        assert_eq!(json["clock"], "server");
    }

    /// Any listing (server times anywhere in chrono's range, any statuses, any policy)
    /// plans without a panic, and the plan keeps its promises: every backup once, the
    /// newest complete and newest restorable kept, a passphrase only protects more.
    #[test]
    fn any_listing_plans_and_keeps_the_promises() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        let status = prop_oneof![
            Just(BackupStatus::Complete),
            Just(BackupStatus::Incomplete),
            Just(BackupStatus::Legacy),
        ];
        let time = prop_oneof![
            (-8_334_601_228_800i64..8_210_266_876_799i64),
            (1_700_000_000i64..1_800_000_000i64),
        ];
        let backup = (time.clone(), 0u32..1_000_000u32, status);
        let strategy = (
            proptest::collection::vec(backup, 0..12),
            proptest::option::of(0u32..5000),
            proptest::option::of(0usize..6),
            time,
            any::<prop::sample::Index>(),
        );
        let mut runner = TestRunner::new(Config {
            cases: 256,
            ..Config::default()
        });
        runner
            .run(&strategy, |(listing, days, keep, now, pick)| {
                let now = DateTime::from_timestamp(now, 0).unwrap();
                let backups: Vec<BackupInfo> = listing
                    .iter()
                    .enumerate()
                    .map(|(i, (secs, micros, status))| BackupInfo {
                        id: format!(
                            "backup-2026{:02}{:02}000000{:06}",
                            1 + i % 12,
                            1 + i,
                            micros
                        )
                        .parse()
                        .unwrap(),
                        key: String::new(),
                        last_modified: DateTime::from_timestamp(*secs, 0).unwrap(),
                        size: 1,
                        status: *status,
                        kind: ListedKind::from_listing(None, *status),
                    })
                    .collect();
                let policy = RetentionPolicy {
                    older_than_days: days,
                    keep_last: keep,
                    ..RetentionPolicy::default()
                };
                let ctx = PlanContext::new(now, LeftoverRule::All, "");
                let plan = plan_prune(&backups, &[], &policy, &ctx);
                prop_assert_eq!(plan.backups.len(), backups.len());
                let mut ordered = backups.clone();
                order_by_server_time(&mut ordered);
                for kind in [BackupStatus::Complete, BackupStatus::Legacy] {
                    let newest = ordered
                        .iter()
                        .find(|b| b.status == BackupStatus::Complete || b.status == kind);
                    if let Some(newest) = newest {
                        prop_assert_eq!(plan.get(&newest.id).unwrap().action, PruneAction::Keep);
                    }
                }
                if !backups.is_empty() {
                    let mut with = ctx.clone();
                    with.opens_with_passphrase =
                        Some(backups[pick.index(backups.len())].id.clone());
                    let protected = plan_prune(&backups, &[], &policy, &with);
                    for kept in plan.to_keep() {
                        prop_assert_eq!(
                            protected.get(&kept.backup.id).unwrap().action,
                            PruneAction::Keep
                        );
                    }
                }
                Ok(())
            })
            .unwrap();
    }
}

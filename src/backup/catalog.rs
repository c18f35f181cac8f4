//! Listing, checking, deleting and pruning backups in the bucket.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::Serialize;

use crate::backup::lock::{BackupLock, LockConfirmer, LockMode, LockOptions, LockOwner};
use crate::backup::manifest::Manifest;
use crate::backup::plan::{self, BackupId, MANIFEST_SUFFIX};
use crate::error::{BackupError, S3Error};
use crate::s3::ObjectStore;

/// The largest manifest read (256 MiB). A manifest is compact JSON of about 40 bytes
/// plus the path per archived entry: 1,000,000 files with paths of 200 bytes are
/// about 240 MB (tested below), far more than a Synapse's media paths need. Anything
/// larger was not written by this crate and is refused without being read whole.
pub const MAX_MANIFEST_BYTES: u64 = 256 << 20;

/// Whether a backup can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupStatus {
    /// Data and manifest: a finished backup of this crate.
    Complete,
    /// Our data without a manifest (a failed or running backup), or a manifest whose
    /// data is missing. Not restorable.
    Incomplete,
    /// Data without our tag and without a manifest, e.g. made by the Python charm.
    /// Restorable; integrity is only what gpg itself checks.
    Legacy,
}

impl fmt::Display for BackupStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackupStatus::Complete => "complete",
            BackupStatus::Incomplete => "incomplete",
            BackupStatus::Legacy => "legacy",
        })
    }
}

/// One backup in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupInfo {
    /// The backup id.
    pub id: BackupId,
    /// The data object's key (without the manifest suffix).
    pub key: String,
    /// When the data object (or, without data, the manifest) was last modified.
    pub last_modified: DateTime<Utc>,
    /// The data object's size in bytes (0 without data).
    pub size: u64,
    /// Complete, incomplete or legacy.
    pub status: BackupStatus,
}

#[derive(Default)]
struct Seen {
    data: Option<crate::ObjectInfo>,
    manifest: Option<crate::ObjectInfo>,
}

/// Lists every backup under the configured path, newest first. Manifests, the lock
/// and its probe object, and unrelated keys are not listed as backups. Does not take
/// the lock.
///
/// # Errors
/// [`BackupError::S3`] when listing fails.
pub async fn list_backups(
    store: &(impl ObjectStore + ?Sized),
) -> Result<Vec<BackupInfo>, BackupError> {
    let prefix = store.object_key("");
    let mut seen: BTreeMap<BackupId, Seen> = BTreeMap::new();
    for object in store.list_objects().await? {
        let Some(name) = object.key.strip_prefix(prefix.as_str()) else {
            continue;
        };
        if name.contains('/') {
            continue;
        }
        if let Some(id) = name
            .strip_suffix(MANIFEST_SUFFIX)
            .and_then(|n| n.parse::<BackupId>().ok())
        {
            seen.entry(id).or_default().manifest = Some(object);
        } else if let Ok(id) = name.parse::<BackupId>() {
            seen.entry(id).or_default().data = Some(object);
        }
    }
    let mut out = Vec::with_capacity(seen.len());
    for (id, s) in seen {
        let key = store.object_key(id.as_str());
        let info = match (s.data, s.manifest) {
            (Some(d), Some(_)) => BackupInfo {
                id,
                key,
                last_modified: d.last_modified,
                size: d.size,
                status: BackupStatus::Complete,
            },
            (None, Some(m)) => BackupInfo {
                id,
                key,
                last_modified: m.last_modified,
                size: 0,
                status: BackupStatus::Incomplete,
            },
            (Some(d), None) => {
                let status = if is_ours(store, &d.key).await? {
                    BackupStatus::Incomplete
                } else {
                    BackupStatus::Legacy
                };
                BackupInfo {
                    id,
                    key,
                    last_modified: d.last_modified,
                    size: d.size,
                    status,
                }
            }
            (None, None) => continue,
        };
        out.push(info);
    }
    out.sort_by(|a, b| b.id.cmp(&a.id).then(b.last_modified.cmp(&a.last_modified)));
    Ok(out)
}

/// Whether the data object carries our metadata tag.
async fn is_ours(store: &(impl ObjectStore + ?Sized), key: &str) -> Result<bool, S3Error> {
    match store.head_object(key).await {
        Ok(head) => Ok(head.metadata.contains_key(plan::METADATA_KEY)),
        Err(S3Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The status of one backup, or `None` when nothing of it exists.
///
/// # Errors
/// [`BackupError::S3`] when a request fails.
pub async fn backup_status(
    store: &(impl ObjectStore + ?Sized),
    id: &BackupId,
) -> Result<Option<BackupStatus>, BackupError> {
    let key = store.object_key(id.as_str());
    let data = match store.head_object(&key).await {
        Ok(h) => Some(h),
        Err(S3Error::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let manifest = match store.head_object(&format!("{key}{MANIFEST_SUFFIX}")).await {
        Ok(_) => true,
        Err(S3Error::NotFound { .. }) => false,
        Err(e) => return Err(e.into()),
    };
    Ok(match (data, manifest) {
        (Some(_), true) => Some(BackupStatus::Complete),
        (None, true) => Some(BackupStatus::Incomplete),
        (Some(h), false) if h.metadata.contains_key(plan::METADATA_KEY) => {
            Some(BackupStatus::Incomplete)
        }
        (Some(_), false) => Some(BackupStatus::Legacy),
        (None, false) => None,
    })
}

/// Whether a restorable backup (complete or legacy) with this id exists.
///
/// # Errors
/// [`BackupError::S3`] when a request fails.
pub async fn exists_backup(
    store: &(impl ObjectStore + ?Sized),
    id: &BackupId,
) -> Result<bool, BackupError> {
    Ok(matches!(
        backup_status(store, id).await?,
        Some(BackupStatus::Complete | BackupStatus::Legacy)
    ))
}

/// Reads a backup's manifest (`<key>.manifest.json`): its file list, sizes and
/// checksum (e.g. to list its contents, as the CLI's `ls` does).
///
/// The manifest is an **index**: anyone with write access to the bucket could have
/// written it, and only downloading and decrypting the backup
/// ([`crate::verify_backup_with`]) checks it against the encrypted stream. This reads
/// it with the checks that need no download: it parses, it names `id`, and the data
/// object exists with the size it states. Does not take the lock.
///
/// # Errors
/// [`BackupError::NotFound`] when nothing of the backup exists;
/// [`BackupError::MissingManifest`] when it has none (incomplete, or a legacy backup
/// whose contents are known only by downloading it); [`BackupError::Corrupted`] when
/// the manifest is unreadable, names another backup, or its data object is missing or
/// of another size; [`BackupError::S3`] when a request fails.
pub async fn read_manifest(
    store: &(impl ObjectStore + ?Sized),
    id: &BackupId,
) -> Result<Manifest, BackupError> {
    let corrupted = |reason: String| BackupError::Corrupted {
        id: id.to_string(),
        reason,
    };
    match backup_status(store, id).await? {
        None => return Err(BackupError::NotFound { id: id.to_string() }),
        Some(BackupStatus::Complete) => {}
        Some(BackupStatus::Incomplete | BackupStatus::Legacy) => {
            return Err(BackupError::MissingManifest { id: id.to_string() });
        }
    }
    let key = store.object_key(id.as_str());
    let bytes = match store
        .get_object(&format!("{key}{MANIFEST_SUFFIX}"), MAX_MANIFEST_BYTES)
        .await
    {
        Ok(bytes) => bytes,
        Err(S3Error::NotFound { .. }) => {
            return Err(BackupError::MissingManifest { id: id.to_string() });
        }
        Err(e) => return Err(e.into()),
    };
    let manifest =
        Manifest::from_json(&bytes).map_err(|e| corrupted(format!("unreadable manifest: {e}")))?;
    if manifest.backup_id != *id {
        return Err(corrupted(format!(
            "its manifest names {:?}, not {:?}",
            manifest.backup_id.as_str(),
            id.as_str()
        )));
    }
    let size = match store.head_object(&key).await {
        Ok(head) => head.size,
        Err(S3Error::NotFound { .. }) => {
            return Err(corrupted(
                "its manifest exists but its data object is missing".into(),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    if size != manifest.ciphertext_bytes {
        return Err(corrupted(format!(
            "the object is {size} bytes but its manifest says {} (truncated or replaced)",
            manifest.ciphertext_bytes
        )));
    }
    Ok(manifest)
}

/// Deletes a backup: its manifest first (so it never lists as complete without its
/// data), then its data. Takes the backup lock with the default [`LockOptions`] (fails
/// at once when another operation holds it).
///
/// # Errors
/// [`BackupError::NotFound`] when neither exists; [`BackupError::LockHeld`] /
/// [`BackupError::LockUnsupported`] from the lock; [`BackupError::S3`] otherwise.
pub async fn delete_backup(
    store: &(impl ObjectStore + ?Sized),
    id: &BackupId,
) -> Result<(), BackupError> {
    delete_backup_with(store, id, &LockOptions::default()).await
}

/// [`delete_backup`] with the lock taken as `lock` says.
///
/// # Errors
/// As [`delete_backup`].
pub async fn delete_backup_with(
    store: &(impl ObjectStore + ?Sized),
    id: &BackupId,
    lock: &LockOptions,
) -> Result<(), BackupError> {
    let guard = BackupLock::acquire(store, &LockOwner::current("delete"), lock).await?;
    let result = delete_unlocked(store, id, &guard.confirmer()).await;
    let released = guard.release().await;
    result.and(released)
}

async fn delete_unlocked(
    store: &(impl ObjectStore + ?Sized),
    id: &BackupId,
    lock: &LockConfirmer,
) -> Result<(), BackupError> {
    let key = store.object_key(id.as_str());
    let mut found = false;
    for k in [format!("{key}{MANIFEST_SUFFIX}"), key.clone()] {
        match store.head_object(&k).await {
            Ok(_) => {
                lock.confirm(&format!("deleting {k}")).await?;
                store.delete_object(&k).await?;
                found = true;
            }
            Err(S3Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if found {
        tracing::info!(backup_id = %id, "backup deleted");
        Ok(())
    } else {
        Err(BackupError::NotFound { id: id.to_string() })
    }
}

/// What [`prune_backups`] deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Delete complete and legacy backups older than this many days.
    pub older_than_days: Option<u32>,
    /// Always keep at least this many of the newest complete or legacy backups.
    pub keep_last: Option<usize>,
    /// Only report what would be deleted.
    pub dry_run: bool,
    /// Without the lock ([`LockMode::Off`]): incomplete backups and multipart uploads
    /// older than this are removed. With the lock held no create can be running, so
    /// every leftover is removed whatever its age.
    pub grace_period: std::time::Duration,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            older_than_days: None,
            keep_last: None,
            dry_run: false,
            grace_period: std::time::Duration::from_secs(24 * 3600),
        }
    }
}

impl RetentionPolicy {
    /// The policy the relation asks for (`delete-older-than-days`).
    pub fn from_parameters(params: &crate::S3Parameters) -> Self {
        RetentionPolicy {
            older_than_days: params.delete_older_than_days(),
            ..RetentionPolicy::default()
        }
    }
}

/// What [`prune_backups`] did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Backups deleted (or to delete), with their status.
    pub deleted: Vec<BackupInfo>,
    /// Backups kept.
    pub kept: Vec<BackupId>,
    /// Backups kept whatever the policy: the newest restorable one (complete, or
    /// legacy when no complete one is newer) and the newest complete one.
    pub protected: Vec<BackupId>,
    /// Incomplete backups and multipart uploads were left alone because this
    /// operation holds the lock of a running create (dry run only).
    pub create_running: Option<String>,
    /// Multipart uploads aborted (or to abort).
    pub aborted_uploads: usize,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// The backups retention never deletes, from a listing (newest first): the newest
/// restorable backup (complete, or legacy when no complete one is newer) and the newest
/// complete one (the same backup unless a legacy one is newer). Pure.
pub fn protected_backups(backups: &[BackupInfo]) -> Vec<BackupId> {
    let mut protected = Vec::new();
    let restorable = backups
        .iter()
        .find(|b| matches!(b.status, BackupStatus::Complete | BackupStatus::Legacy));
    let complete = backups.iter().find(|b| b.status == BackupStatus::Complete);
    for b in [restorable, complete].into_iter().flatten() {
        if !protected.contains(&b.id) {
            protected.push(b.id.clone());
        }
    }
    protected
}

/// Which incomplete leftovers (backups and multipart uploads) may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leftovers {
    /// Those older than this (no lock: the grace period guards a running create).
    OlderThan(ChronoDuration),
    /// All of them (the lock is held, so no create is running).
    All,
    /// None (a create holds the lock).
    None,
}

impl Leftovers {
    fn may_go(self, age: ChronoDuration) -> bool {
        match self {
            Leftovers::OlderThan(grace) => age > grace,
            Leftovers::All => true,
            Leftovers::None => false,
        }
    }
}

fn grace(policy: &RetentionPolicy) -> ChronoDuration {
    ChronoDuration::from_std(policy.grace_period).unwrap_or(ChronoDuration::days(1))
}

/// Which backups a policy deletes, from a listing (newest first), as a prune without
/// the lock sees it (incomplete backups older than the grace period go): `(delete,
/// keep)`. The backups of [`protected_backups`] are always kept. Pure.
pub fn select_for_pruning(
    backups: &[BackupInfo],
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> (Vec<BackupInfo>, Vec<BackupId>) {
    select(backups, policy, now, Leftovers::OlderThan(grace(policy)))
}

fn select(
    backups: &[BackupInfo],
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
    leftovers: Leftovers,
) -> (Vec<BackupInfo>, Vec<BackupId>) {
    let protected = protected_backups(backups);
    let mut delete = Vec::new();
    let mut keep = Vec::new();
    let mut restorable_seen = 0usize;
    for b in backups {
        let age = now - b.id.created();
        let go = match b.status {
            BackupStatus::Incomplete => leftovers.may_go(now - b.id.created().min(b.last_modified)),
            BackupStatus::Complete | BackupStatus::Legacy => {
                restorable_seen += 1;
                let kept = protected.contains(&b.id)
                    || policy.keep_last.is_some_and(|n| restorable_seen <= n);
                let old = policy
                    .older_than_days
                    .is_some_and(|d| age > ChronoDuration::days(i64::from(d)));
                let beyond_keep = policy.older_than_days.is_none()
                    && policy.keep_last.is_some_and(|n| restorable_seen > n);
                !kept && (old || beyond_keep)
            }
        };
        if go {
            delete.push(b.clone())
        } else {
            keep.push(b.id.clone())
        }
    }
    (delete, keep)
}

/// Deletes backups the policy no longer wants, incomplete leftovers and multipart
/// uploads of backups, holding the backup lock (default [`LockOptions`]). The newest
/// restorable backup and the newest complete one are never deleted (see
/// [`protected_backups`]).
///
/// Holding the lock, no create can be running, so every incomplete backup and every
/// multipart upload of a backup key is a leftover (of a failed create, or of one whose
/// lock expired) and goes whatever its age. A dry run does not take the lock: it
/// reports leftovers as going unless a live operation holds the lock. With
/// [`LockMode::Off`], leftovers go once older than the policy's grace period.
///
/// # Errors
/// [`BackupError::LockHeld`] / [`BackupError::LockUnsupported`] from the lock;
/// [`BackupError::S3`] when listing or deleting fails.
pub async fn prune_backups(
    store: &(impl ObjectStore + ?Sized),
    policy: &RetentionPolicy,
) -> Result<PruneReport, BackupError> {
    prune_backups_with(store, policy, &LockOptions::default()).await
}

/// [`prune_backups`] with the lock taken as `lock` says.
///
/// # Errors
/// As [`prune_backups`].
pub async fn prune_backups_with(
    store: &(impl ObjectStore + ?Sized),
    policy: &RetentionPolicy,
    lock: &LockOptions,
) -> Result<PruneReport, BackupError> {
    if lock.mode == LockMode::Off {
        return prune_unlocked(
            store,
            policy,
            Leftovers::OlderThan(grace(policy)),
            None,
            &LockConfirmer::default(),
        )
        .await;
    }
    if policy.dry_run {
        let running = BackupLock::live_holder(store, lock.ttl).await?;
        let (leftovers, running) = match running {
            Some(info) => (Leftovers::None, Some(info.holder())),
            None => (Leftovers::All, None),
        };
        return prune_unlocked(store, policy, leftovers, running, &LockConfirmer::default()).await;
    }
    let guard = BackupLock::acquire(store, &LockOwner::current("prune"), lock).await?;
    let result = prune_unlocked(store, policy, Leftovers::All, None, &guard.confirmer()).await;
    let released = guard.release().await;
    let report = result?;
    released?;
    Ok(report)
}

async fn prune_unlocked(
    store: &(impl ObjectStore + ?Sized),
    policy: &RetentionPolicy,
    leftovers: Leftovers,
    create_running: Option<String>,
    lock: &LockConfirmer,
) -> Result<PruneReport, BackupError> {
    let now = Utc::now();
    let backups = list_backups(store).await?;
    let protected = protected_backups(&backups);
    let (deleted, kept) = select(&backups, policy, now, leftovers);
    let mut aborted_uploads = 0;
    let prefix = store.object_key("");
    let uploads = match store.list_multipart_uploads(&prefix).await {
        Ok(u) => u,
        Err(S3Error::NotImplemented { .. }) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let stale: Vec<_> = uploads
        .into_iter()
        .filter(|u| {
            u.key
                .strip_prefix(prefix.as_str())
                .is_some_and(|name| name.parse::<BackupId>().is_ok())
        })
        .filter(|u| match leftovers {
            Leftovers::All => true,
            other => u.initiated.is_some_and(|t| other.may_go(now - t)),
        })
        .collect();
    for id in &protected {
        tracing::info!(backup_id = %id, "kept whatever the policy: the newest restorable or complete backup");
    }
    if !policy.dry_run {
        for b in &deleted {
            match delete_unlocked(store, &b.id, lock).await {
                Ok(()) | Err(BackupError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        for u in &stale {
            lock.confirm(&format!("aborting the upload of {}", u.key))
                .await?;
            match store.abort_multipart_upload(&u.key, &u.upload_id).await {
                Ok(()) => aborted_uploads += 1,
                Err(S3Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    } else {
        aborted_uploads = stale.len();
    }
    Ok(PruneReport {
        deleted,
        kept,
        protected,
        create_running,
        aborted_uploads,
        dry_run: policy.dry_run,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_manifest_cap_admits_a_backup_of_a_million_files() {
        use crate::backup::manifest::{EntryKind, ManifestEntry, ManifestPath};
        // Paths of 200 bytes (a Synapse's media paths are about 60 to 100) and sizes
        // of ten digits, as create writes them: compact, one comma apart.
        let entry = ManifestEntry {
            path: ManifestPath::Text(format!(
                "data/media_store/local_content/{}",
                "x".repeat(169)
            )),
            kind: EntryKind::File,
            size: 9_999_999_999,
        };
        assert_eq!(entry.path.as_bytes().len(), 200);
        let per_entry = serde_json::to_vec(&entry).unwrap().len() as u64 + 1;
        let million = 1_000_000 * per_entry + 64 * 1024;
        assert!(
            million < MAX_MANIFEST_BYTES,
            "{million} bytes for a million files, cap {MAX_MANIFEST_BYTES}"
        );
    }

    fn info(days_ago: i64, status: BackupStatus, now: DateTime<Utc>) -> BackupInfo {
        let t = now - ChronoDuration::days(days_ago);
        BackupInfo {
            id: BackupId::from_time(t),
            key: String::new(),
            last_modified: t,
            size: 1,
            status,
        }
    }

    fn ids(v: &[BackupInfo]) -> Vec<i64> {
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).unwrap();
        v.iter()
            .map(|b| (now - b.id.created()).num_days())
            .collect()
    }

    #[test]
    fn retention_by_age_keeps_newest_complete_and_keep_last() {
        use BackupStatus::*;
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).unwrap();
        let backups: Vec<_> = (0..12)
            .map(|d| info(d * 10 + 5, if d == 3 { Legacy } else { Complete }, now))
            .collect();
        let p = RetentionPolicy {
            older_than_days: Some(30),
            ..Default::default()
        };
        let (del, keep) = select_for_pruning(&backups, &p, now);
        assert_eq!(ids(&del), [35, 45, 55, 65, 75, 85, 95, 105, 115]);
        assert_eq!(keep.len(), 3);
        let p = RetentionPolicy {
            older_than_days: Some(30),
            keep_last: Some(5),
            ..Default::default()
        };
        let (del, _) = select_for_pruning(&backups, &p, now);
        assert_eq!(ids(&del), [55, 65, 75, 85, 95, 105, 115]);
        let p = RetentionPolicy {
            keep_last: Some(10),
            ..Default::default()
        };
        assert_eq!(ids(&select_for_pruning(&backups, &p, now).0), [105, 115]);
        let p = RetentionPolicy {
            older_than_days: Some(1),
            ..Default::default()
        };
        let (del, keep) = select_for_pruning(&backups, &p, now);
        assert_eq!(del.len(), 11, "the newest complete backup is never deleted");
        assert_eq!(ids(&backups[..1]), [5]);
        assert_eq!(keep, vec![backups[0].id.clone()]);
        assert!(
            select_for_pruning(&backups, &RetentionPolicy::default(), now)
                .0
                .is_empty()
        );
    }

    #[test]
    fn newest_complete_and_newest_restorable_survive_behind_legacy_and_incomplete() {
        use BackupStatus::*;
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).unwrap();
        let backups = vec![
            info(40, Incomplete, now),
            info(50, Legacy, now),
            info(60, Complete, now),
            info(70, Complete, now),
        ];
        let p = RetentionPolicy {
            older_than_days: Some(30),
            ..Default::default()
        };
        let (del, keep) = select_for_pruning(&backups, &p, now);
        assert_eq!(ids(&del), [40, 70]);
        assert_eq!(keep, vec![backups[1].id.clone(), backups[2].id.clone()]);
        assert_eq!(
            protected_backups(&backups),
            vec![backups[1].id.clone(), backups[2].id.clone()]
        );
        let fresh = vec![info(0, Incomplete, now)];
        assert!(
            select_for_pruning(&fresh, &p, now).0.is_empty(),
            "incomplete within the grace period is kept"
        );
    }

    #[test]
    fn a_legacy_only_bucket_keeps_its_newest_backup_whatever_the_policy() {
        use BackupStatus::*;
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).unwrap();
        let backups = vec![
            info(20, Incomplete, now),
            info(40, Legacy, now),
            info(50, Legacy, now),
            info(60, Legacy, now),
        ];
        for p in [
            RetentionPolicy {
                older_than_days: Some(1),
                ..Default::default()
            },
            RetentionPolicy {
                older_than_days: Some(1),
                keep_last: Some(0),
                ..Default::default()
            },
            RetentionPolicy {
                keep_last: Some(0),
                ..Default::default()
            },
        ] {
            let (del, keep) = select_for_pruning(&backups, &p, now);
            // The incomplete one is past its grace period.
            assert_eq!(ids(&del), [20, 50, 60], "{p:?}");
            assert_eq!(keep, vec![backups[1].id.clone()]);
        }
        assert_eq!(protected_backups(&backups), vec![backups[1].id.clone()]);
        assert!(protected_backups(&backups[..1]).is_empty());
    }

    #[test]
    fn leftovers_go_by_age_all_or_none() {
        use BackupStatus::*;
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).unwrap();
        let mut fresh = info(0, Incomplete, now);
        fresh.id = BackupId::from_time(now - ChronoDuration::minutes(5));
        let backups = vec![fresh, info(3, Incomplete, now), info(4, Complete, now)];
        let p = RetentionPolicy::default();
        let by_age = select(&backups, &p, now, Leftovers::OlderThan(grace(&p)));
        assert_eq!(by_age.0.len(), 1);
        assert_eq!(by_age.0[0].id, backups[1].id);
        let all = select(&backups, &p, now, Leftovers::All);
        assert_eq!(all.0.len(), 2);
        assert!(all.0.iter().all(|b| b.status == Incomplete));
        let none = select(&backups, &p, now, Leftovers::None);
        assert!(none.0.is_empty());
    }
}

/// The catalog over [`MemoryStore`](crate::s3::MemoryStore): no server, no sleeping.
#[cfg(test)]
mod store_tests {
    use std::collections::HashMap;

    use super::*;
    use crate::BackupError;
    use crate::backup::lock::{LOCK_NAME, PROBE_NAME};
    use crate::s3::MemoryStore;

    const PATH: &str = "synapse/backups";

    fn ours() -> HashMap<String, String> {
        HashMap::from([(plan::METADATA_KEY.to_string(), plan::metadata_value())])
    }

    fn id_aged(store: &MemoryStore, days: i64) -> BackupId {
        BackupId::from_time(store.now() - ChronoDuration::days(days))
    }

    async fn put(store: &MemoryStore, name: &str, metadata: &HashMap<String, String>) {
        store
            .put_object(
                &store.object_key(name),
                b"data".to_vec(),
                "application/octet-stream",
                metadata,
            )
            .await
            .unwrap();
    }

    /// Tagged data and a manifest.
    async fn complete(store: &MemoryStore, id: &BackupId) {
        put(store, id.as_str(), &ours()).await;
        put(store, &format!("{id}{MANIFEST_SUFFIX}"), &HashMap::new()).await;
    }

    /// Untagged data without manifest (the Python charm's).
    async fn legacy(store: &MemoryStore, id: &BackupId) {
        put(store, id.as_str(), &HashMap::new()).await;
    }

    /// Tagged data without manifest (a failed or running create).
    async fn incomplete(store: &MemoryStore, id: &BackupId) {
        put(store, id.as_str(), &ours()).await;
    }

    fn statuses(backups: &[BackupInfo]) -> Vec<(BackupId, BackupStatus)> {
        backups.iter().map(|b| (b.id.clone(), b.status)).collect()
    }

    #[tokio::test]
    async fn list_classifies_backups_and_hides_everything_else() {
        use BackupStatus::*;
        let store = MemoryStore::new(PATH);
        let (a, b, c, d) = (
            id_aged(&store, 1),
            id_aged(&store, 2),
            id_aged(&store, 3),
            id_aged(&store, 4),
        );
        complete(&store, &a).await;
        incomplete(&store, &b).await;
        legacy(&store, &c).await;
        // A manifest whose data is gone.
        put(&store, &format!("{d}{MANIFEST_SUFFIX}"), &HashMap::new()).await;
        // Not backups: the lock, its probe, unrelated names, nested and foreign keys.
        for name in [LOCK_NAME, PROBE_NAME, "notes.txt", &format!("sub/{a}")] {
            put(&store, name, &ours()).await;
        }
        store
            .put_object(
                &format!("synapse/other/{a}"),
                b"x".to_vec(),
                "text/plain",
                &ours(),
            )
            .await
            .unwrap();

        let backups = list_backups(&store).await.unwrap();
        assert_eq!(
            statuses(&backups),
            [
                (a.clone(), Complete),
                (b.clone(), Incomplete),
                (c.clone(), Legacy),
                (d.clone(), Incomplete),
            ]
        );
        assert_eq!(backups[0].key, format!("{PATH}/{a}"));
        assert_eq!(backups[0].size, 4);
        assert_eq!(backups[3].size, 0, "no data");
    }

    #[tokio::test]
    async fn status_and_exists_follow_the_objects() {
        let store = MemoryStore::new(PATH);
        let (a, b, c, missing) = (
            id_aged(&store, 1),
            id_aged(&store, 2),
            id_aged(&store, 3),
            id_aged(&store, 4),
        );
        complete(&store, &a).await;
        incomplete(&store, &b).await;
        legacy(&store, &c).await;
        for (id, status, restorable) in [
            (&a, Some(BackupStatus::Complete), true),
            (&b, Some(BackupStatus::Incomplete), false),
            (&c, Some(BackupStatus::Legacy), true),
            (&missing, None, false),
        ] {
            assert_eq!(backup_status(&store, id).await.unwrap(), status, "{id}");
            assert_eq!(exists_backup(&store, id).await.unwrap(), restorable, "{id}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delete_removes_manifest_and_data_and_a_missing_backup_is_not_found() {
        let store = MemoryStore::new(PATH);
        let (a, b) = (id_aged(&store, 1), id_aged(&store, 2));
        complete(&store, &a).await;
        legacy(&store, &b).await;
        delete_backup(&store, &a).await.unwrap();
        assert_eq!(store.keys(), [format!("{PATH}/{b}")], "lock released too");
        assert!(matches!(
            delete_backup(&store, &a).await,
            Err(BackupError::NotFound { .. })
        ));
    }

    /// Legacy at 40 days (the newest restorable), complete at 50 (the newest complete)
    /// and 60 days, an old incomplete one and a multipart upload of a backup key.
    async fn aged_bucket(store: &MemoryStore) -> [BackupId; 4] {
        let ids = [
            id_aged(store, 3),
            id_aged(store, 40),
            id_aged(store, 50),
            id_aged(store, 60),
        ];
        incomplete(store, &ids[0]).await;
        legacy(store, &ids[1]).await;
        complete(store, &ids[2]).await;
        complete(store, &ids[3]).await;
        store.start_multipart_upload(&store.object_key(ids[0].as_str()));
        ids
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prune_keeps_the_newest_restorable_and_complete_and_a_dry_run_changes_nothing() {
        let store = MemoryStore::new(PATH);
        let [fresh, legacy_40, complete_50, complete_60] = aged_bucket(&store).await;
        let before = store.keys();
        let policy = RetentionPolicy {
            older_than_days: Some(30),
            dry_run: true,
            ..RetentionPolicy::default()
        };

        let dry = prune_backups(&store, &policy).await.unwrap();
        assert!(dry.dry_run);
        let deleted: Vec<_> = dry.deleted.iter().map(|b| b.id.clone()).collect();
        assert_eq!(deleted, [fresh.clone(), complete_60.clone()]);
        assert_eq!(dry.protected, [legacy_40.clone(), complete_50.clone()]);
        assert_eq!(dry.aborted_uploads, 1);
        assert_eq!(dry.create_running, None);
        assert_eq!(store.keys(), before, "a dry run deletes nothing");
        assert_eq!(store.list_multipart_uploads("").await.unwrap().len(), 1);

        let policy = RetentionPolicy {
            dry_run: false,
            ..policy
        };
        let done = prune_backups(&store, &policy).await.unwrap();
        assert_eq!(done.deleted, dry.deleted);
        assert_eq!(done.aborted_uploads, 1);
        let left: Vec<_> = list_backups(&store)
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.id)
            .collect();
        assert_eq!(left, [legacy_40, complete_50.clone()]);
        assert!(store.list_multipart_uploads("").await.unwrap().is_empty());
        assert!(
            store
                .keys()
                .iter()
                .all(|k| !k.contains(".synapse-backup.lock")),
            "lock and probe removed: {:?}",
            store.keys()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prune_leaves_leftovers_of_a_running_create_alone() {
        let store = MemoryStore::new(PATH);
        let [fresh, ..] = aged_bucket(&store).await;
        let create = BackupLock::acquire(
            &store,
            &LockOwner::new("synapse/1", "host-b", 7, "create"),
            &LockOptions::default(),
        )
        .await
        .unwrap();
        let policy = RetentionPolicy {
            older_than_days: Some(30),
            dry_run: true,
            ..RetentionPolicy::default()
        };
        let dry = prune_backups(&store, &policy).await.unwrap();
        assert!(
            dry.create_running
                .as_deref()
                .is_some_and(|h| h.contains("synapse/1")),
            "{dry:?}"
        );
        assert!(dry.deleted.iter().all(|b| b.id != fresh), "{dry:?}");
        assert_eq!(dry.aborted_uploads, 0);
        let refused = prune_backups(
            &store,
            &RetentionPolicy {
                dry_run: false,
                ..policy
            },
        )
        .await;
        assert!(
            matches!(refused, Err(BackupError::LockHeld { .. })),
            "{refused:?}"
        );
        create.release().await.unwrap();
    }
}

//! Listing, checking, deleting and pruning backups in the bucket.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::Serialize;

use crate::backup::plan::{self, BackupId, MANIFEST_SUFFIX};
use crate::error::{BackupError, S3Error};
use crate::s3::S3Client;

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

/// Lists every backup under the configured path, newest first. Manifests and
/// unrelated keys are not listed as backups.
///
/// # Errors
/// [`BackupError::S3`] when listing fails.
pub async fn list_backups(client: &S3Client) -> Result<Vec<BackupInfo>, BackupError> {
    let prefix = client.object_key("");
    let mut seen: BTreeMap<BackupId, Seen> = BTreeMap::new();
    for object in client.list_objects().await? {
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
        let key = client.object_key(id.as_str());
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
                let status = if is_ours(client, &d.key).await? {
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
async fn is_ours(client: &S3Client, key: &str) -> Result<bool, S3Error> {
    match client.head_object(key).await {
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
    client: &S3Client,
    id: &BackupId,
) -> Result<Option<BackupStatus>, BackupError> {
    let key = client.object_key(id.as_str());
    let data = match client.head_object(&key).await {
        Ok(h) => Some(h),
        Err(S3Error::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let manifest = match client.head_object(&format!("{key}{MANIFEST_SUFFIX}")).await {
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
pub async fn exists_backup(client: &S3Client, id: &BackupId) -> Result<bool, BackupError> {
    Ok(matches!(
        backup_status(client, id).await?,
        Some(BackupStatus::Complete | BackupStatus::Legacy)
    ))
}

/// Deletes a backup: its manifest first (so it never lists as complete without its
/// data), then its data.
///
/// # Errors
/// [`BackupError::NotFound`] when neither exists; [`BackupError::S3`] otherwise.
pub async fn delete_backup(client: &S3Client, id: &BackupId) -> Result<(), BackupError> {
    let key = client.object_key(id.as_str());
    let mut found = false;
    for k in [format!("{key}{MANIFEST_SUFFIX}"), key.clone()] {
        match client.head_object(&k).await {
            Ok(_) => {
                client.delete_object(&k).await?;
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
    /// Incomplete backups and multipart uploads older than this are removed.
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
    /// Multipart uploads aborted (or to abort).
    pub aborted_uploads: usize,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// Which backups a policy deletes, from a listing (newest first). Pure.
pub fn select_for_pruning(
    backups: &[BackupInfo],
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> (Vec<BackupInfo>, Vec<BackupId>) {
    let newest_complete = backups
        .iter()
        .find(|b| b.status == BackupStatus::Complete)
        .map(|b| b.id.clone());
    let grace = ChronoDuration::from_std(policy.grace_period).unwrap_or(ChronoDuration::days(1));
    let mut delete = Vec::new();
    let mut keep = Vec::new();
    let mut restorable_seen = 0usize;
    for b in backups {
        let age = now - b.id.created();
        let go = match b.status {
            BackupStatus::Incomplete => now - b.id.created().min(b.last_modified) > grace,
            BackupStatus::Complete | BackupStatus::Legacy => {
                restorable_seen += 1;
                let protected = Some(&b.id) == newest_complete.as_ref()
                    || policy.keep_last.is_some_and(|n| restorable_seen <= n);
                let old = policy
                    .older_than_days
                    .is_some_and(|d| age > ChronoDuration::days(i64::from(d)));
                let beyond_keep = policy.older_than_days.is_none()
                    && policy.keep_last.is_some_and(|n| restorable_seen > n);
                !protected && (old || beyond_keep)
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

/// Deletes backups the policy no longer wants, incomplete leftovers older than the
/// grace period, and multipart uploads under the path older than it. The newest
/// complete backup is never deleted.
///
/// # Errors
/// [`BackupError::S3`] when listing or deleting fails.
pub async fn prune_backups(
    client: &S3Client,
    policy: &RetentionPolicy,
) -> Result<PruneReport, BackupError> {
    let now = Utc::now();
    let backups = list_backups(client).await?;
    let (deleted, kept) = select_for_pruning(&backups, policy, now);
    let grace = ChronoDuration::from_std(policy.grace_period).unwrap_or(ChronoDuration::days(1));
    let mut aborted_uploads = 0;
    let uploads = match client.list_multipart_uploads(&client.object_key("")).await {
        Ok(u) => u,
        Err(S3Error::NotImplemented { .. }) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let stale: Vec<_> = uploads
        .into_iter()
        .filter(|u| u.initiated.is_some_and(|t| now - t > grace))
        .collect();
    if !policy.dry_run {
        for b in &deleted {
            match delete_backup(client, &b.id).await {
                Ok(()) | Err(BackupError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        for u in &stale {
            client.abort_multipart_upload(&u.key, &u.upload_id).await?;
            aborted_uploads += 1;
        }
    } else {
        aborted_uploads = stale.len();
    }
    Ok(PruneReport {
        deleted,
        kept,
        aborted_uploads,
        dry_run: policy.dry_run,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

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
    fn newest_complete_survives_even_behind_legacy_and_incomplete() {
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
        assert_eq!(ids(&del), [40, 50, 70]);
        assert_eq!(keep, vec![backups[2].id.clone()]);
        let fresh = vec![info(0, Incomplete, now)];
        assert!(
            select_for_pruning(&fresh, &p, now).0.is_empty(),
            "incomplete within the grace period is kept"
        );
    }
}

//! Listing, checking, deleting and pruning backups in the bucket.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt, stream};
use serde::Serialize;

use crate::backup::incremental::{
    DATABASE_SUFFIX, chain_of, index_suffix, parse_database_name, parse_index_name,
};
use crate::backup::lock::{BackupLock, LockConfirmer, LockMode, LockOptions, LockOwner};
use crate::backup::manifest::Manifest;
use crate::backup::plan::{self, BackupId, MANIFEST_SUFFIX};
use crate::backup::prune_plan::{
    ClockSource, LeftoverRule, PlanContext, PruneAction, PrunePlan, PruneReason,
    order_by_server_time, plan_prune,
};
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

/// What a backup is, as the bucket's listing tells from the objects' names alone (no
/// request per backup): the index object `<key>.index.ndjson` is a full backup's,
/// `<key>.on-<base>.index.ndjson` an incremental one's ([`parse_index_name`]).
///
/// A backup without an index object is `Full` when it is ours and complete (a backup
/// made without `--incremental`, or before indexes existed: one pack holding
/// everything), `Legacy` when it is not ours (made by the Python charm: one gpg stream,
/// no manifest), and `Unknown` when it is incomplete (a create that failed or is still
/// running before it wrote its index: not restorable either way).
///
/// Serialized flat into [`BackupInfo`]: `"kind": "full" | "incremental" | "legacy" |
/// "unknown"`, with `"base"` for an incremental backup.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[non_exhaustive]
pub enum ListedKind {
    /// One pack holding everything.
    Full,
    /// A pack of what changed since `base`, which (with `base`'s own chain) it needs.
    Incremental {
        /// The backup it was made on.
        base: BackupId,
    },
    /// Made by the Python charm (no manifest, no index): one pack.
    Legacy,
    /// Incomplete and without an index object: what it would have been is not known.
    Unknown,
}

impl ListedKind {
    /// The base of an incremental backup.
    pub fn base(&self) -> Option<&BackupId> {
        match self {
            ListedKind::Incremental { base } => Some(base),
            _ => None,
        }
    }

    /// The kind from the listing: the index object's base (`Some(None)`: a full
    /// backup's index; `None`: no index object) and the backup's status. Pure.
    pub fn from_listing(index: Option<Option<BackupId>>, status: BackupStatus) -> ListedKind {
        match (index, status) {
            (Some(Some(base)), _) => ListedKind::Incremental { base },
            (Some(None), _) | (None, BackupStatus::Complete) => ListedKind::Full,
            (None, BackupStatus::Legacy) => ListedKind::Legacy,
            (None, BackupStatus::Incomplete) => ListedKind::Unknown,
        }
    }
}

impl fmt::Display for ListedKind {
    /// `full`, `incremental on <base>`, `legacy` or `unknown`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListedKind::Full => f.write_str("full"),
            ListedKind::Incremental { base } => write!(f, "incremental on {base}"),
            ListedKind::Legacy => f.write_str("legacy"),
            ListedKind::Unknown => f.write_str("unknown"),
        }
    }
}

/// One backup in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BackupInfo {
    /// The backup id.
    pub id: BackupId,
    /// The data object's key (without the manifest suffix).
    pub key: String,
    /// When the data object (or, without data, the manifest) was last modified.
    pub last_modified: DateTime<Utc>,
    /// The data object's size in bytes (0 without data), with its database pack's
    /// (an incremental backup's `<key>.database`) when there is one.
    pub size: u64,
    /// Complete, incomplete or legacy.
    pub status: BackupStatus,
    /// Full, incremental on a base, legacy or unknown ([`ListedKind`]), from the same
    /// listing. Serialized flat: `"kind"`, and `"base"` for an incremental backup.
    #[serde(flatten)]
    pub kind: ListedKind,
}

impl BackupInfo {
    /// Whether the time in the id is far from when the server stored the backup (the
    /// host that made it had a wrong clock): listings and prunes order and age backups
    /// by the server's time.
    pub fn id_time_disagrees(&self) -> bool {
        crate::backup::prune_plan::id_time_disagrees(self)
    }
}

/// A backup with the older packs its chain needs, from one listing ([`chain_in`],
/// [`describe_backup`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BackupChain {
    /// The backup.
    pub backup: BackupInfo,
    /// The older packs it needs, the full one first (empty for a full or legacy
    /// backup).
    pub packs: Vec<BackupInfo>,
    /// The first base the listing does not hold as a complete backup (deleted or
    /// damaged): the chain is broken there and the backup is not restorable. `packs`
    /// holds what was found up to it.
    pub broken_at: Option<BackupId>,
    /// The backup's own size plus its older packs' sizes (bytes of the data objects):
    /// what the bucket holds for it.
    pub total_size: u64,
}

/// Backup `id` and the older packs of its chain, following each backup's base in
/// `backups` (one listing, [`list_backups`]); `None` when `id` is not listed. A base
/// that is not listed as complete, or is not older than its backup, ends the chain
/// there ([`BackupChain::broken_at`]). Pure.
pub fn chain_in(backups: &[BackupInfo], id: &BackupId) -> Option<BackupChain> {
    let backup = backups.iter().find(|b| b.id == *id)?;
    let mut packs = Vec::new();
    let mut broken_at = None;
    let mut at = backup;
    while let Some(base) = at.kind.base() {
        match backups.iter().find(|b| b.id == *base) {
            Some(found) if *base < at.id && found.status == BackupStatus::Complete => {
                packs.push(found.clone());
                at = found;
            }
            _ => {
                broken_at = Some(base.clone());
                break;
            }
        }
    }
    packs.reverse();
    let total_size = backup.size + packs.iter().map(|p| p.size).sum::<u64>();
    Some(BackupChain {
        backup: backup.clone(),
        packs,
        broken_at,
        total_size,
    })
}

/// Backup `id` with its kind, its chain's older packs and its total size, from one
/// listing ([`list_backups`], [`chain_in`]). Does not take the lock.
///
/// # Errors
/// [`BackupError::NotFound`] when the listing has no such backup; [`BackupError::S3`]
/// when listing fails.
pub async fn describe_backup(
    store: &(impl ObjectStore + ?Sized),
    id: &BackupId,
) -> Result<BackupChain, BackupError> {
    let backups = list_backups(store).await?;
    chain_in(&backups, id).ok_or_else(|| BackupError::NotFound { id: id.to_string() })
}

#[derive(Default)]
struct Seen {
    data: Option<crate::ObjectInfo>,
    manifest: Option<crate::ObjectInfo>,
    /// The index object's base (`Some(None)`: a full backup's index).
    index: Option<Option<BackupId>>,
    /// The database pack (an incremental backup's).
    database: Option<crate::ObjectInfo>,
}

/// How many HEADs [`list_backups`] has in flight at once (one per data object without
/// a manifest: legacy backups and failed runs).
pub const LIST_HEAD_CONCURRENCY: usize = 16;

/// Lists every backup under the configured path, newest first by the server's time
/// (the objects' `LastModified`, never the time in the id: a host with a wrong clock
/// names its backups wrongly, see [`BackupInfo::id_time_disagrees`]). Manifests, the lock
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
        } else if let Some((id, base)) = parse_index_name(name) {
            seen.entry(id).or_default().index = Some(base);
        } else if let Some(id) = parse_database_name(name) {
            seen.entry(id).or_default().database = Some(object);
        } else if let Ok(id) = name.parse::<BackupId>() {
            seen.entry(id).or_default().data = Some(object);
        }
    }
    // Data without a manifest (ours, failed, or legacy) needs a HEAD each, unless an
    // index object or a database pack says it is ours: made concurrently, at most LIST_HEAD_CONCURRENCY at
    // a time, in the listing's order.
    let unmanifested: Vec<String> = seen
        .values()
        .filter(|s| s.manifest.is_none() && s.index.is_none() && s.database.is_none())
        .filter_map(|s| s.data.as_ref().map(|d| d.key.clone()))
        .collect();
    let heads: Vec<bool> = stream::iter(unmanifested)
        .map(|key| async move { is_ours(store, &key).await })
        .buffered(LIST_HEAD_CONCURRENCY)
        .try_collect()
        .await?;
    let mut heads = heads.into_iter();
    let mut out = Vec::with_capacity(seen.len());
    for (id, s) in seen {
        let database = s.database.as_ref().map_or(0, |d| d.size);
        let complete = s.manifest.is_some();
        let (object, status) = match (s.data, s.manifest.or(s.database)) {
            (Some(d), _) if complete => (d, BackupStatus::Complete),
            // Data and a database pack: ours, without its manifest.
            (Some(d), Some(_)) => (d, BackupStatus::Incomplete),
            // Without data: a manifest, or a database pack alone (what a failed create
            // or a half-done delete left).
            (None, Some(m)) => (crate::ObjectInfo { size: 0, ..m }, BackupStatus::Incomplete),
            (Some(d), None) => {
                let ours = s.index.is_some() || heads.next().unwrap_or(false);
                let status = if ours {
                    BackupStatus::Incomplete
                } else {
                    BackupStatus::Legacy
                };
                (d, status)
            }
            (None, None) => continue,
        };
        out.push(BackupInfo {
            key: store.object_key(id.as_str()),
            id,
            last_modified: object.last_modified,
            size: object.size + database,
            status,
            kind: ListedKind::from_listing(s.index, status),
        });
    }
    order_by_server_time(&mut out);
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
    read_manifest_with(store, id, false).await
}

/// As [`read_manifest`], without its file list (`files` is empty; the entries are
/// parsed one at a time and dropped): for an incremental create's base, whose files
/// its index lists.
///
/// # Errors
/// As [`read_manifest`].
pub(crate) async fn read_manifest_without_files(
    store: &(impl ObjectStore + ?Sized),
    id: &BackupId,
) -> Result<Manifest, BackupError> {
    read_manifest_with(store, id, true).await
}

async fn read_manifest_with(
    store: &(impl ObjectStore + ?Sized),
    id: &BackupId,
    without_files: bool,
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
    let parsed = if without_files {
        Manifest::from_json_compact(&bytes).map(|(m, _)| m)
    } else {
        Manifest::from_json(&bytes)
    };
    drop(bytes);
    let manifest = parsed.map_err(|e| corrupted(format!("unreadable manifest: {e}")))?;
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
/// data), then its data and its file index. Takes the backup lock with the default
/// [`LockOptions`] (fails at once when another operation holds it). A backup that an
/// incremental backup's chain needs is not deleted.
///
/// # Errors
/// [`BackupError::NeededByOthers`] naming the backups whose chains need it;
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

/// Deletes backup `id` and every complete backup whose chain needs it (its
/// dependents), newest first, so that a chain is never left broken even when this is
/// stopped half-way: what is left is always a set of whole chains. Each deleted backup
/// is deleted as [`delete_backup`] deletes one (manifest first, then data and index)
/// and reported to `on_deleted` as soon as it is gone, `id` last. Takes the lock once,
/// as `lock` says, for all of them.
///
/// # Errors
/// [`BackupError::NotFound`] when nothing of `id` exists (nothing is deleted);
/// [`BackupError::LockHeld`] / [`BackupError::LockUnsupported`] from the lock;
/// [`BackupError::S3`] otherwise (what was deleted before it was reported).
pub async fn delete_backup_with_dependents(
    store: &(impl ObjectStore + ?Sized),
    id: &BackupId,
    lock: &LockOptions,
    on_deleted: &mut (dyn FnMut(&BackupId) + Send),
) -> Result<Vec<BackupId>, BackupError> {
    let guard = BackupLock::acquire(store, &LockOwner::current("delete"), lock).await?;
    let result = delete_chain_unlocked(store, id, &guard.confirmer(), on_deleted).await;
    let released = guard.release().await;
    let deleted = result?;
    released?;
    Ok(deleted)
}

/// [`delete_backup_with_dependents`] under the lock.
async fn delete_chain_unlocked(
    store: &(impl ObjectStore + ?Sized),
    id: &BackupId,
    lock: &LockConfirmer,
    on_deleted: &mut (dyn FnMut(&BackupId) + Send),
) -> Result<Vec<BackupId>, BackupError> {
    if backup_status(store, id).await?.is_none() {
        return Err(BackupError::NotFound { id: id.to_string() });
    }
    let dependents = newest_first(list_bases(store).await?.dependents(id));
    let mut deleted = Vec::with_capacity(dependents.len() + 1);
    for backup in dependents.iter().chain(std::iter::once(id)) {
        // Each deletion checks again that nothing still needs it: a dependent is
        // always newer than what it needs, so newest first nothing does.
        delete_unlocked(store, backup, lock).await?;
        on_deleted(backup);
        deleted.push(backup.clone());
    }
    Ok(deleted)
}

/// The ids [`Bases::dependents`] gives (newest first), parsed back.
fn newest_first(ids: Vec<String>) -> Vec<BackupId> {
    let mut ids: Vec<BackupId> = ids.into_iter().filter_map(|i| i.parse().ok()).collect();
    ids.sort_by(|a, b| b.cmp(a));
    ids
}

/// The backups with an index object and their bases, from the objects' names
/// ([`parse_index_name`]), in one listing.
pub(crate) struct Bases {
    /// Every backup with an index object, with its base (`None`: full).
    pub(crate) all: BTreeMap<BackupId, Option<BackupId>>,
    /// Those that are complete (the index of a create that never finished names no
    /// chain).
    pub(crate) complete: BTreeMap<BackupId, Option<BackupId>>,
}

impl Bases {
    /// Every complete backup whose chain needs `id`, newest first.
    pub(crate) fn dependents(&self, id: &BackupId) -> Vec<String> {
        self.complete
            .keys()
            .rev()
            .filter(|other| chain_of(&self.complete, other).contains(id))
            .map(ToString::to_string)
            .collect()
    }

    /// Each complete incremental backup's older packs.
    pub(crate) fn chains(&self) -> BTreeMap<BackupId, Vec<BackupId>> {
        self.complete
            .keys()
            .map(|id| (id.clone(), chain_of(&self.complete, id)))
            .filter(|(_, chain)| !chain.is_empty())
            .collect()
    }
}

/// Lists the index objects ([`Bases`]).
///
/// # Errors
/// [`BackupError::S3`] when listing fails.
pub(crate) async fn list_bases(store: &(impl ObjectStore + ?Sized)) -> Result<Bases, BackupError> {
    let prefix = store.object_key("");
    let mut manifests = std::collections::BTreeSet::new();
    let mut bases = BTreeMap::new();
    for object in store.list_objects().await? {
        let Some(name) = object.key.strip_prefix(prefix.as_str()) else {
            continue;
        };
        if let Some(id) = name
            .strip_suffix(MANIFEST_SUFFIX)
            .and_then(|n| n.parse::<BackupId>().ok())
        {
            manifests.insert(id);
        } else if let Some((id, base)) = parse_index_name(name) {
            bases.insert(id, base);
        }
    }
    let mut complete = bases.clone();
    complete.retain(|id, _| manifests.contains(id));
    Ok(Bases {
        all: bases,
        complete,
    })
}

/// Deletes backup `id` (manifest, data, index): refused while a complete backup's
/// chain needs it.
async fn delete_unlocked(
    store: &(impl ObjectStore + ?Sized),
    id: &BackupId,
    lock: &LockConfirmer,
) -> Result<(), BackupError> {
    let bases = list_bases(store).await?;
    let needing = bases.dependents(id);
    if !needing.is_empty() {
        return Err(BackupError::NeededByOthers {
            id: id.to_string(),
            dependents: needing,
        });
    }
    let key = store.object_key(id.as_str());
    let mut found = false;
    let index = format!(
        "{key}{}",
        index_suffix(bases.all.get(id).and_then(Option::as_ref))
    );
    // The manifest first (the backup is no longer complete), then its packs.
    for k in [
        format!("{key}{MANIFEST_SUFFIX}"),
        key.clone(),
        format!("{key}{DATABASE_SUFFIX}"),
        index,
    ] {
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

/// What [`prune_backups`] deletes, with a setter per field
/// (`RetentionPolicy::default().keep_last(Some(7))`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, derive_setters::Setters)]
#[setters(prefix = "", generate = true)]
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
    #[serde(rename = "grace_period_seconds", serialize_with = "seconds")]
    pub grace_period: std::time::Duration,
}

fn seconds<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
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
    /// The plan carried out (for a real prune, the one made under the lock): every
    /// backup with keep or delete and why.
    pub plan: PrunePlan,
}

impl PruneReport {
    fn from_plan(plan: PrunePlan, aborted_uploads: usize, dry_run: bool) -> Self {
        PruneReport {
            deleted: plan.to_delete().map(|b| b.backup.clone()).collect(),
            kept: plan.to_keep().map(|b| b.backup.id.clone()).collect(),
            protected: plan.protected(),
            create_running: match &plan.leftovers {
                LeftoverRule::NoneWhileHeld { holder } => Some(holder.clone()),
                _ => None,
            },
            aborted_uploads: if dry_run {
                plan.uploads.len()
            } else {
                aborted_uploads
            },
            dry_run,
            plan,
        }
    }
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

/// The object written to read the server's clock (its `LastModified`), then removed.
pub(crate) const CLOCK_NAME: &str = ".synapse-backup.clock";

/// The server's time: the `LastModified` of a small object written for it (then
/// removed), or this host's clock ([`ClockSource::Local`]) when it cannot be written
/// (read-only credentials).
///
/// # Errors
/// Never: a failure falls back to the local clock, which the plan then reports.
pub(crate) async fn server_now(
    store: &(impl ObjectStore + ?Sized),
) -> (DateTime<Utc>, ClockSource) {
    let key = store.object_key(CLOCK_NAME);
    let written = store
        .put_object(
            &key,
            b"{\"clock\":true}".to_vec(),
            "application/json",
            &std::collections::HashMap::new(),
        )
        .await;
    let read = match written {
        Ok(_) => store.head_object(&key).await.map(|h| h.last_modified),
        Err(e) => Err(e),
    };
    let _ = store.delete_object(&key).await;
    match read {
        Ok(now) => (now, ClockSource::Server),
        Err(e) => {
            tracing::warn!(key, error = %e, "could not read the server's clock; using this host's");
            (Utc::now(), ClockSource::Local)
        }
    }
}

fn grace_seconds(policy: &RetentionPolicy) -> u64 {
    policy.grace_period.as_secs()
}

/// Which backups a policy deletes, from a listing, as a prune without the lock sees it
/// at `now` (incomplete backups older than the grace period go): `(delete, keep)`,
/// newest first by the server's time. The backups of [`protected_backups`] are always
/// kept. Pure; [`plan_prune`] says why.
pub fn select_for_pruning(
    backups: &[BackupInfo],
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> (Vec<BackupInfo>, Vec<BackupId>) {
    let context = PlanContext::new(
        now,
        LeftoverRule::OlderThan {
            grace_seconds: grace_seconds(policy),
        },
        "",
    );
    let plan = plan_prune(backups, &[], policy, &context);
    (
        plan.to_delete().map(|b| b.backup.clone()).collect(),
        plan.to_keep().map(|b| b.backup.id.clone()).collect(),
    )
}

/// Deletes backups the policy no longer wants, incomplete leftovers and multipart
/// uploads of backups, holding the backup lock (default [`LockOptions`]). The newest
/// restorable backup and the newest complete one are never deleted (see
/// [`protected_backups`]). Backups are ordered and aged by the server's time.
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
    if policy.dry_run {
        let plan = plan_pruning(store, policy, lock, None).await?;
        return Ok(PruneReport::from_plan(plan, 0, true));
    }
    prune_locked(store, policy, lock, None).await
}

/// Plans a prune without taking the lock and without deleting anything (see
/// [`plan_prune`]): the listing, the server's clock, the multipart uploads, and whether
/// a live operation holds the lock (then incomplete leftovers stay). With
/// [`LockMode::Off`], leftovers go once older than the policy's grace period.
/// `opens_with_passphrase` is the newest backup the prune's passphrase opens, kept
/// whatever the policy.
///
/// # Errors
/// [`BackupError::S3`] when a request fails, [`BackupError::LockUnsupported`] from the
/// lock probe.
pub(crate) async fn plan_pruning(
    store: &(impl ObjectStore + ?Sized),
    policy: &RetentionPolicy,
    lock: &LockOptions,
    opens_with_passphrase: Option<BackupId>,
) -> Result<PrunePlan, BackupError> {
    let leftovers = if lock.mode == LockMode::Off {
        LeftoverRule::OlderThan {
            grace_seconds: grace_seconds(policy),
        }
    } else {
        match BackupLock::live_holder(store, lock.ttl).await? {
            Some(info) => LeftoverRule::NoneWhileHeld {
                holder: info.holder(),
            },
            None => LeftoverRule::All,
        }
    };
    let mut context = PlanContext::new(Utc::now(), leftovers, store.object_key(""));
    context.opens_with_passphrase = opens_with_passphrase;
    read_plan(store, policy, context).await
}

/// Lists the bucket and its uploads, reads the server's clock and plans.
async fn read_plan(
    store: &(impl ObjectStore + ?Sized),
    policy: &RetentionPolicy,
    mut context: PlanContext,
) -> Result<PrunePlan, BackupError> {
    let backups = list_backups(store).await?;
    let uploads = match store.list_multipart_uploads(&context.prefix).await {
        Ok(u) => u,
        Err(S3Error::NotImplemented { .. }) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    context.chains = list_bases(store).await?.chains();
    (context.now, context.clock) = server_now(store).await;
    Ok(plan_prune(&backups, &uploads, policy, &context))
}

/// Carries out `given` (a plan from [`plan_pruning`]), or plans afresh when `None`,
/// holding the lock: the bucket is planned again under the lock and only what both
/// plans delete is deleted, so a plan made earlier never deletes what has since become
/// the newest, and never less is protected than `given` protects.
///
/// # Errors
/// As [`prune_backups`].
pub(crate) async fn prune_locked(
    store: &(impl ObjectStore + ?Sized),
    policy: &RetentionPolicy,
    lock: &LockOptions,
    given: Option<&PrunePlan>,
) -> Result<PruneReport, BackupError> {
    let guard = BackupLock::acquire(store, &LockOwner::current("prune"), lock).await?;
    let result = prune_held(store, policy, lock, given, &guard.confirmer()).await;
    let released = guard.release().await;
    let report = result?;
    released?;
    Ok(report)
}

async fn prune_held(
    store: &(impl ObjectStore + ?Sized),
    policy: &RetentionPolicy,
    lock: &LockOptions,
    given: Option<&PrunePlan>,
    confirmer: &LockConfirmer,
) -> Result<PruneReport, BackupError> {
    let leftovers = if lock.mode == LockMode::Off {
        LeftoverRule::OlderThan {
            grace_seconds: grace_seconds(policy),
        }
    } else {
        LeftoverRule::All
    };
    let mut context = PlanContext::new(Utc::now(), leftovers, store.object_key(""));
    if let Some(given) = given {
        for b in &given.backups {
            for reason in &b.reasons {
                match reason {
                    PruneReason::OpensWithPassphrase => {
                        context.opens_with_passphrase = Some(b.backup.id.clone());
                    }
                    PruneReason::NeededBy { id } => {
                        context.needed.push((b.backup.id.clone(), id.clone()));
                    }
                    _ => {}
                }
            }
        }
    }
    let mut plan = read_plan(store, policy, context).await?;
    if let Some(given) = given {
        restrict_to(&mut plan, given);
    }
    let aborted = execute_plan(store, &plan, confirmer).await?;
    Ok(PruneReport::from_plan(plan, aborted, false))
}

/// Keeps every backup and upload of `plan` that `given` does not delete.
fn restrict_to(plan: &mut PrunePlan, given: &PrunePlan) {
    for b in &mut plan.backups {
        let also = given
            .get(&b.backup.id)
            .is_some_and(|g| g.action == PruneAction::Delete);
        if b.action == PruneAction::Delete && !also {
            b.action = PruneAction::Keep;
        }
    }
    plan.freed_bytes = plan.freed();
    plan.uploads.retain(|u| {
        given
            .uploads
            .iter()
            .any(|g| g.key == u.key && g.upload_id == u.upload_id)
    });
}

/// Deletes what `plan` deletes and aborts its uploads; returns how many were aborted.
async fn execute_plan(
    store: &(impl ObjectStore + ?Sized),
    plan: &PrunePlan,
    lock: &LockConfirmer,
) -> Result<usize, BackupError> {
    for id in plan.protected() {
        tracing::info!(backup_id = %id, "kept whatever the policy: the newest restorable or complete backup");
    }
    for b in plan.to_delete() {
        match delete_unlocked(store, &b.backup.id, lock).await {
            Ok(()) | Err(BackupError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let mut aborted = 0;
    for u in &plan.uploads {
        lock.confirm(&format!("aborting the upload of {}", u.key))
            .await?;
        match store.abort_multipart_upload(&u.key, &u.upload_id).await {
            Ok(()) => aborted += 1,
            Err(S3Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(aborted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration as ChronoDuration;
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
            kind: ListedKind::from_listing(None, status),
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
}

/// The catalog over [`MemoryStore`](crate::s3::MemoryStore): no server, no sleeping.
#[cfg(test)]
mod store_tests {
    use std::collections::HashMap;

    use super::*;
    use crate::BackupError;
    use crate::backup::lock::{LOCK_NAME, PROBE_NAME};
    use crate::s3::MemoryStore;
    use chrono::Duration as ChronoDuration;

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

    /// Writes with the server's clock at the time the id names, as a create on a host
    /// with a right clock would.
    async fn put_at_id_time(
        store: &MemoryStore,
        id: &BackupId,
        name: &str,
        metadata: &HashMap<String, String>,
    ) {
        let now = store.now();
        store.set_now(id.created());
        put(store, name, metadata).await;
        store.set_now(now);
    }

    /// Tagged data and a manifest.
    async fn complete(store: &MemoryStore, id: &BackupId) {
        put_at_id_time(store, id, id.as_str(), &ours()).await;
        put_at_id_time(
            store,
            id,
            &format!("{id}{MANIFEST_SUFFIX}"),
            &HashMap::new(),
        )
        .await;
    }

    /// Untagged data without manifest (the Python charm's).
    async fn legacy(store: &MemoryStore, id: &BackupId) {
        put_at_id_time(store, id, id.as_str(), &HashMap::new()).await;
    }

    /// Tagged data without manifest (a failed or running create).
    async fn incomplete(store: &MemoryStore, id: &BackupId) {
        put_at_id_time(store, id, id.as_str(), &ours()).await;
    }

    fn statuses(backups: &[BackupInfo]) -> Vec<(BackupId, BackupStatus)> {
        backups.iter().map(|b| (b.id.clone(), b.status)).collect()
    }

    /// Many data objects without a manifest (legacy and failed runs, mixed with
    /// complete backups) are told apart by HEADs made concurrently: every status is the
    /// one a HEAD at a time gives, newest first.
    #[tokio::test]
    async fn many_legacy_backups_list_as_one_head_at_a_time_would() {
        let store = MemoryStore::new(PATH);
        let mut expected = Vec::new();
        for n in 0..(3 * LIST_HEAD_CONCURRENCY as i64 + 5) {
            let id = BackupId::from_time(store.now() - ChronoDuration::minutes(n + 1));
            let status = match n % 3 {
                0 => {
                    legacy(&store, &id).await;
                    BackupStatus::Legacy
                }
                1 => {
                    incomplete(&store, &id).await;
                    BackupStatus::Incomplete
                }
                _ => {
                    complete(&store, &id).await;
                    BackupStatus::Complete
                }
            };
            expected.push((id, status));
        }
        let listed = list_backups(&store).await.unwrap();
        assert_eq!(statuses(&listed), expected);
        // The same, one HEAD at a time.
        for (info, (id, status)) in listed.iter().zip(&expected) {
            assert_eq!(backup_status(&store, id).await.unwrap(), Some(*status));
            assert_eq!(info.size, 4);
        }
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
        put_at_id_time(
            &store,
            &d,
            &format!("{d}{MANIFEST_SUFFIX}"),
            &HashMap::new(),
        )
        .await;
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

    /// An incremental backup's database pack counts in its size and goes with it; one
    /// without its backup is an incomplete leftover (no HEAD needed to tell it is ours),
    /// deleted with a delete of its id.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_pack_is_listed_with_its_backup_and_deleted_with_it() {
        let store = MemoryStore::new(PATH);
        let (a, b, c) = (id_aged(&store, 3), id_aged(&store, 2), id_aged(&store, 1));
        indexed(&store, &a, None).await;
        indexed(&store, &b, Some(&a)).await;
        put_at_id_time(&store, &b, &format!("{b}{DATABASE_SUFFIX}"), &ours()).await;
        // A failed create's database pack, alone, untagged.
        put_at_id_time(
            &store,
            &c,
            &format!("{c}{DATABASE_SUFFIX}"),
            &HashMap::new(),
        )
        .await;
        let listed = list_backups(&store).await.unwrap();
        let got: Vec<(BackupId, u64, BackupStatus)> = listed
            .iter()
            .map(|i| (i.id.clone(), i.size, i.status))
            .collect();
        assert_eq!(
            got,
            [
                (c.clone(), 4, BackupStatus::Incomplete),
                (b.clone(), 8, BackupStatus::Complete),
                (a.clone(), 4, BackupStatus::Complete),
            ]
        );
        assert_eq!(chain_in(&listed, &b).unwrap().total_size, 12);
        delete_backup(&store, &b).await.unwrap();
        delete_backup(&store, &c).await.unwrap();
        let mut left = store.keys();
        left.sort();
        let mut want = vec![
            format!("{PATH}/{a}"),
            format!("{PATH}/{a}{MANIFEST_SUFFIX}"),
            format!("{PATH}/{a}.index.ndjson"),
        ];
        want.sort();
        assert_eq!(left, want);
    }

    /// An index object for `id` on `base` (`None`: a full backup's).
    async fn index(store: &MemoryStore, id: &BackupId, base: Option<&BackupId>) {
        put_at_id_time(store, id, &format!("{id}{}", index_suffix(base)), &ours()).await;
    }

    /// A complete backup with its index object.
    async fn indexed(store: &MemoryStore, id: &BackupId, base: Option<&BackupId>) {
        complete(store, id).await;
        index(store, id, base).await;
    }

    fn kinds(backups: &[BackupInfo]) -> Vec<(BackupId, ListedKind)> {
        backups
            .iter()
            .map(|b| (b.id.clone(), b.kind.clone()))
            .collect()
    }

    /// The kind comes from the index objects' names in the same listing; without an
    /// index, a complete backup is full, a legacy one legacy and an incomplete one
    /// unknown. An index makes data without a manifest ours (incomplete), without the
    /// HEAD that would otherwise tell.
    #[tokio::test]
    async fn list_gives_each_backups_kind_from_the_index_names() {
        use ListedKind::*;
        let store = MemoryStore::new(PATH);
        let ids: Vec<BackupId> = (0..7).rev().map(|d| id_aged(&store, d + 1)).collect();
        let [
            full,
            on_full,
            on_on,
            plain,
            old_legacy,
            failed,
            failed_indexed,
        ] = <[BackupId; 7]>::try_from(ids).unwrap();
        indexed(&store, &full, None).await;
        indexed(&store, &on_full, Some(&full)).await;
        indexed(&store, &on_on, Some(&on_full)).await;
        complete(&store, &plain).await;
        legacy(&store, &old_legacy).await;
        incomplete(&store, &failed).await;
        // Untagged data with an incremental index: the index says it is ours.
        put_at_id_time(
            &store,
            &failed_indexed,
            failed_indexed.as_str(),
            &HashMap::new(),
        )
        .await;
        index(&store, &failed_indexed, Some(&plain)).await;

        let listed = list_backups(&store).await.unwrap();
        let mut expected = vec![
            (full.clone(), Full),
            (on_full.clone(), Incremental { base: full.clone() }),
            (
                on_on.clone(),
                Incremental {
                    base: on_full.clone(),
                },
            ),
            (plain.clone(), Full),
            (old_legacy.clone(), Legacy),
            (failed.clone(), Unknown),
            (
                failed_indexed.clone(),
                Incremental {
                    base: plain.clone(),
                },
            ),
        ];
        expected.reverse();
        assert_eq!(kinds(&listed), expected);
        assert_eq!(listed[0].status, BackupStatus::Incomplete, "{listed:?}");
        let json = serde_json::to_value(&listed).unwrap();
        assert_eq!(json[0]["kind"], "incremental");
        assert_eq!(json[0]["base"], plain.as_str());
        assert_eq!(json[2]["kind"], "legacy");
        assert!(json[2].get("base").is_none(), "{json}");
        assert_eq!(
            Incremental { base: full.clone() }.to_string(),
            format!("incremental on {full}")
        );
    }

    fn sized(id: &BackupId, size: u64, kind: ListedKind, status: BackupStatus) -> BackupInfo {
        BackupInfo {
            id: id.clone(),
            key: String::new(),
            last_modified: id.created(),
            size,
            status,
            kind,
        }
    }

    /// A backup's chain and total size from a listing; a missing, incomplete or newer
    /// base breaks it there.
    #[test]
    fn chain_in_follows_the_bases_and_says_where_a_chain_is_broken() {
        use BackupStatus::{Complete, Incomplete};
        use ListedKind::{Full, Incremental, Unknown};
        let id = |n: u32| {
            BackupId::from_time(DateTime::from_timestamp(1_800_000_000 + i64::from(n), 0).unwrap())
        };
        let on = |n: u32| Incremental { base: id(n) };
        let listing = vec![
            sized(&id(9), 900, on(8), Complete),
            sized(&id(8), 800, on(5), Complete),
            sized(&id(7), 700, on(6), Complete),
            sized(&id(6), 0, Unknown, Incomplete),
            sized(&id(5), 500, on(1), Complete),
            sized(&id(4), 400, on(10), Complete),
            sized(&id(3), 300, ListedKind::Legacy, BackupStatus::Legacy),
            sized(&id(2), 200, on(0), Complete),
            sized(&id(1), 100, Full, Complete),
        ];
        let c = chain_in(&listing, &id(9)).unwrap();
        assert_eq!(c.backup.id, id(9));
        assert_eq!(
            c.packs.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
            [id(1), id(5), id(8)],
            "full first"
        );
        assert_eq!((c.total_size, c.broken_at), (2300, None));
        let full = chain_in(&listing, &id(1)).unwrap();
        assert!(full.packs.is_empty());
        assert_eq!((full.total_size, full.broken_at), (100, None));
        let legacy = chain_in(&listing, &id(3)).unwrap();
        assert_eq!((legacy.total_size, legacy.broken_at), (300, None));
        for (n, broken) in [(7, 6), (4, 10), (2, 0)] {
            let c = chain_in(&listing, &id(n)).unwrap();
            assert!(c.packs.is_empty(), "{n}");
            assert_eq!(c.broken_at, Some(id(broken)), "{n}");
            assert_eq!(c.total_size, u64::from(n) * 100, "{n}");
        }
        assert!(chain_in(&listing, &id(11)).is_none());
    }

    /// Whether every complete backup's chain is whole in the bucket's keys: each base
    /// an index names has its manifest, data and own index.
    fn chains_whole(keys: &[String]) -> Result<(), String> {
        let names: Vec<&str> = keys
            .iter()
            .filter_map(|k| k.strip_prefix(&format!("{PATH}/")))
            .collect();
        for name in &names {
            let Some((id, Some(base))) = parse_index_name(name) else {
                continue;
            };
            if !names.contains(&format!("{id}{MANIFEST_SUFFIX}").as_str()) {
                continue;
            }
            for needed in [base.to_string(), format!("{base}{MANIFEST_SUFFIX}")] {
                if !names.contains(&needed.as_str()) {
                    return Err(format!("{id} needs {needed}: {names:?}"));
                }
            }
        }
        Ok(())
    }

    /// `delete_backup_with_dependents` deletes a base and every backup built on it
    /// (two branches), newest first, reporting each as it goes; after every single
    /// deletion the chains left are whole (what a kill at that point leaves). Other
    /// chains are untouched, and the lock is released.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delete_with_dependents_deletes_newest_first_and_never_breaks_a_chain() {
        let store = MemoryStore::new(PATH);
        let ids: Vec<BackupId> = (0..6).rev().map(|d| id_aged(&store, d + 1)).collect();
        let [base, b1, other_full, b2, branch, other_incr] =
            <[BackupId; 6]>::try_from(ids).unwrap();
        indexed(&store, &base, None).await;
        indexed(&store, &b1, Some(&base)).await;
        indexed(&store, &other_full, None).await;
        indexed(&store, &b2, Some(&b1)).await;
        indexed(&store, &branch, Some(&base)).await;
        indexed(&store, &other_incr, Some(&other_full)).await;

        let refused = delete_backup(&store, &base).await;
        assert!(
            matches!(&refused, Err(BackupError::NeededByOthers { dependents, .. })
                if *dependents == [branch.to_string(), b2.to_string(), b1.to_string()]),
            "{refused:?}"
        );
        assert!(
            refused
                .unwrap_err()
                .to_string()
                .contains("--with-dependents")
        );

        let mut reported = Vec::new();
        let mut states = Vec::new();
        let deleted = delete_backup_with_dependents(
            &store,
            &base,
            &LockOptions::default(),
            &mut |id: &BackupId| {
                reported.push(id.clone());
                states.push(store.keys());
            },
        )
        .await
        .unwrap();
        assert_eq!(
            deleted,
            [branch.clone(), b2.clone(), b1.clone(), base.clone()]
        );
        assert_eq!(reported, deleted);
        for state in &states {
            chains_whole(state).unwrap();
        }
        let left: Vec<BackupId> = list_backups(&store)
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.id)
            .collect();
        assert_eq!(left, [other_incr.clone(), other_full.clone()]);
        assert_eq!(store.keys().len(), 6, "{:?}", store.keys());
        // A backup nothing needs is deleted alone; a missing one is not found.
        let alone = delete_backup_with_dependents(
            &store,
            &other_incr,
            &LockOptions::default(),
            &mut |_: &BackupId| {},
        )
        .await
        .unwrap();
        assert_eq!(alone, [other_incr]);
        assert!(matches!(
            delete_backup_with_dependents(
                &store,
                &base,
                &LockOptions::default(),
                &mut |_: &BackupId| {}
            )
            .await,
            Err(BackupError::NotFound { .. })
        ));
        assert_eq!(store.keys().len(), 3, "lock released: {:?}", store.keys());
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

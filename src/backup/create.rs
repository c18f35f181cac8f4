//! `create_backup`: collect, snapshot, archive, encrypt, upload, check, manifest.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;

use super::chain::Planned;
use super::incremental::{BackupKind, DATABASE_SUFFIX, FullReason};
use super::layout::{DatabaseKind, HomeserverConfig, Layout, join};
use super::listing::parse_members;
use super::manifest::{
    Cipher, DatabasePack, DatabaseSnapshot, EntryKind, INNER_MANIFEST_MEMBER, InnerManifest,
    MANIFEST_FORMAT, Manifest, ManifestEntry, ManifestJson, ManifestLayout, ManifestPath,
};
use super::plan::{self, BackupId, BackupOptions, LiveChanges, WorkDir};

use super::reserve::Reserve;
use super::restore_plan::{MemberSource, RestoreRules};
use super::run::Run;
use super::scripts::{Exit, WorkFile};
use super::transfer::Tally;
use super::work::{self, Outputs, WorkPlace};
use crate::container::Container;
use crate::error::{BackupError, ConfigError, ContainerError, S3Error, Stage};
use crate::s3::{ObjectStore, S3Parameters};

/// What [`create_backup_with`] did.
#[derive(Debug, Clone, serde::Serialize)]
#[non_exhaustive]
pub struct BackupReport {
    /// The new backup's id.
    pub id: BackupId,
    /// The data object's key (the manifest is at `key` + `.manifest.json`).
    pub key: String,
    /// The manifest as uploaded, without its file list (`files` is empty: the list
    /// is streamed to the bucket, not held; read it back with
    /// [`crate::read_manifest`]).
    pub manifest: Manifest,
    /// How many regular files the archive holds.
    pub files: u64,
    /// What changed in the live tree while tar read it (also in the manifest's
    /// warnings).
    pub live_changes: LiveChanges,
    /// Wall time of the whole backup.
    pub duration: Duration,
    /// Full (and, when an incremental one was asked for, why) or incremental (with
    /// its base).
    pub kind: BackupKind,
}

/// Backs up a Synapse workload laid out as in the Synapse rock ([`Layout::default`])
/// with the default [`BackupOptions`].
///
/// # Errors
/// See [`create_backup_with`].
pub async fn create_backup<C: Container + ?Sized>(
    container: &C,
    s3_parameters: &S3Parameters,
    passphrase: &str,
) -> Result<BackupId, BackupError> {
    create_backup_with(
        container,
        s3_parameters,
        passphrase,
        &Layout::default(),
        &BackupOptions::default(),
    )
    .await
    .map(|report| report.id)
}

/// Backs up the signing keys, a consistent snapshot of the SQLite database and the
/// local media of the workload described by `layout`, as one gpg-encrypted tar object,
/// then writes its manifest. A backup exists only once its manifest does.
///
/// On any failure the data object and multipart uploads under its key are removed, and
/// the private work dir (passphrase file, snapshot) is removed in every case.
///
/// Holds the backup lock ([`BackupOptions::lock`], see [`crate::BackupLock`]) for the
/// whole run: refreshed while it runs, released at the end and on every failure.
///
/// # Errors
/// [`BackupError::LockHeld`] / [`BackupError::LockUnsupported`] from the lock,
/// [`BackupError::InvalidPassphrase`], [`BackupError::Config`] (layout,
/// `homeserver.yaml`, S3 parameters), [`BackupError::NothingToBackUp`],
/// [`BackupError::StageFailed`] naming the failing stage (snapshot, tar, gpg, upload,
/// check) with its trimmed stderr, [`BackupError::InsufficientSpace`] /
/// [`BackupError::SpaceReserve`] when the database snapshot does not fit, or not with
/// [`BackupOptions::space_reserve_mib`] still free, [`BackupError::Corrupted`] when the
/// uploaded size differs, [`BackupError::S3`] and [`BackupError::Container`] otherwise.
pub async fn create_backup_with<C: Container + ?Sized>(
    container: &C,
    s3_parameters: &S3Parameters,
    passphrase: &str,
    layout: &Layout,
    options: &BackupOptions,
) -> Result<BackupReport, BackupError> {
    let run =
        Run::new(container, s3_parameters, layout, passphrase)?.with_transfer(options.transfer);
    create_in(&run, options).await
}

/// As [`create_backup_with`], in the context `run` (its store takes every bucket
/// request).
pub(crate) async fn create_in<C: Container + ?Sized>(
    run: &Run<'_, C>,
    options: &BackupOptions,
) -> Result<BackupReport, BackupError> {
    super::passphrase::before_create(run, options).await?;
    run.locked(
        "create",
        &options.lock,
        &options.cancel,
        create_locked(run, options),
    )
    .await
}

async fn create_locked<C: Container + ?Sized>(
    run: &Run<'_, C>,
    options: &BackupOptions,
) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    let collected = collect(run.container, run.layout).await?;
    let id = BackupId::generate();
    let key = run.client.object_key(id.as_str());
    // A dead restore's kept dir is reported (error level) by the sweep itself.
    work::sweep_work_dirs(run.container, run.layout, false).await;
    tracing::info!(backup_id = %id, members = collected.members.len(), "starting backup");
    let work = run.work_dir(id.as_str(), options).await?;
    let backup = BackupRun {
        run,
        options,
        collected,
        id,
        key,
        work: work.dir(),
        uploading: AtomicBool::new(false),
        index_key: std::sync::Mutex::new(None),
        database_apart: AtomicBool::new(false),
    };
    let result = tokio::select! {
        result = backup.execute() => result,
        // Dropping the run kills the pipeline's process group; then the same clean-up
        // as any failure, by this run's exact work dir and key.
        () = options.cancel.cancelled() => Err(BackupError::Cancelled),
    };
    let BackupRun {
        id,
        key,
        uploading,
        index_key,
        ..
    } = backup;
    work.finish().await;
    match result {
        Ok((manifest, live_changes, files)) => {
            let duration = started.elapsed();
            tracing::info!(backup_id = %id, bytes = manifest.ciphertext_bytes, ?duration, "backup complete");
            let kind = manifest.chain.as_ref().map_or(
                BackupKind::Full {
                    reason: FullReason::NotRequested,
                },
                |c| c.kind.clone(),
            );
            Ok(BackupReport {
                kind,
                id,
                key,
                manifest,
                files,
                live_changes,
                duration,
            })
        }
        Err(e) => {
            if uploading.into_inner() {
                let index = index_key
                    .into_inner()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                remove_failed_objects(&*run.client, &key, index.as_deref()).await;
            }
            if matches!(e, BackupError::Cancelled) {
                // The caller asked for it, and says so itself.
                tracing::info!(backup_id = %id, "backup cancelled; nothing was kept");
            } else {
                tracing::warn!(backup_id = %id, error = %e, "backup failed; nothing was kept");
            }
            Err(e)
        }
    }
}

/// Removes the work dirs that runs left behind when they could not clean up (a killed
/// process, a dropped future): those whose owner record names a process of this host
/// that is gone, or this very process when none of its runs still holds the dir (a
/// dropped operation's dirs go; a running one's stay, so this is safe to call while
/// other operations of this process run, e.g. after dropping one on a signal). A restore's dir whose swap had
/// begun keeps the live files it set aside (the only copy of the previous data) and
/// its swap logs, and loses its keys, aws config and staging; how to roll back is
/// logged at error level. Other hosts' or live processes' dirs are never touched;
/// everything runs as the workload user. Returns the dirs removed.
pub async fn remove_abandoned_work_dirs<C: Container + ?Sized>(
    container: &C,
    layout: &Layout,
) -> Vec<String> {
    work::sweep_work_dirs(container, layout, true).await.removed
}

/// Deletes what a failed run uploaded: its data object (and multipart uploads under
/// its key, the database pack's included), its database pack and its `index` object.
async fn remove_failed_objects(client: &dyn ObjectStore, key: &str, index: Option<&str>) {
    remove_partial_upload(client, key).await;
    let database = format!("{key}{DATABASE_SUFFIX}");
    for (object, what) in [(Some(database.as_str()), "database pack"), (index, "index")] {
        let Some(object) = object else { continue };
        match client.delete_object(object).await {
            Ok(()) | Err(S3Error::NotFound { .. }) => {}
            Err(e) => {
                tracing::warn!(key = object, error = %e, "could not delete the failed backup's {what}")
            }
        }
    }
}

/// Deletes a failed run's data object and aborts multipart uploads under its key.
async fn remove_partial_upload(client: &dyn ObjectStore, key: &str) {
    match client.delete_object(key).await {
        Ok(()) | Err(S3Error::NotFound { .. }) => {}
        Err(e) => tracing::warn!(key, error = %e, "could not delete the partial backup object"),
    }
    match abort_multipart_uploads(client, key).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            key,
            aborted = n,
            "aborted multipart uploads of the failed backup"
        ),
        Err(S3Error::NotImplemented { operation }) => {
            tracing::info!(
                key,
                operation,
                "the server cannot list multipart uploads; none aborted"
            );
        }
        Err(e) => tracing::warn!(key, error = %e, "could not abort multipart uploads"),
    }
}

/// Aborts every unfinished multipart upload whose key starts with `key_prefix` (one
/// already gone counts as done); returns how many it aborted.
async fn abort_multipart_uploads(
    client: &dyn ObjectStore,
    key_prefix: &str,
) -> Result<usize, S3Error> {
    let mut aborted = 0;
    for upload in client.list_multipart_uploads(key_prefix).await? {
        match client
            .abort_multipart_upload(&upload.key, &upload.upload_id)
            .await
        {
            Ok(()) => aborted += 1,
            Err(S3Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(aborted)
}

/// What will be archived.
#[derive(Debug, Clone)]
struct Collected {
    /// Top-level members relative to the root archived in place (keys, other
    /// `homeserver.db*`, `local_*`).
    members: Vec<String>,
    /// Top-level members that are symlinks to files (a signing key on a mounted secret):
    /// copied, following the link, into the work dir and archived under their name.
    links: Vec<String>,
    /// The live SQLite database to snapshot (container path).
    db: Option<String>,
    config: HomeserverConfig,
    warnings: Vec<String>,
}

impl Collected {
    /// Every top-level member, as the manifest lists them.
    fn all_members(&self) -> Vec<String> {
        self.members
            .iter()
            .chain(&self.links)
            .cloned()
            .chain(self.db.as_deref().map(Layout::member_name))
            .collect()
    }

    /// The top-level `local_*` media members (which a purge may remove mid-backup).
    fn media_members(&self) -> Vec<String> {
        let media = Layout::member_name(&self.config.media_store_path);
        self.members
            .iter()
            .filter(|m| {
                m.strip_prefix(media.as_str())
                    .and_then(|r| r.strip_prefix('/'))
                    .is_some_and(|r| r.starts_with("local_") && !r.contains('/'))
            })
            .cloned()
            .collect()
    }
}

/// The entries of the directory `dir` (a host path) matching `pattern`, following `dir`
/// itself when it is a symlink (a volume mounted elsewhere); empty when it is missing.
/// Listed as the workload user.
async fn list_or_empty<C: Container + ?Sized>(
    container: &C,
    layout: &Layout,
    dir: &str,
    pattern: &str,
) -> Result<Vec<work::Entry>, ContainerError> {
    Ok(work::list_dir(container, layout, dir, pattern)
        .await?
        .unwrap_or_default())
}

fn split_dir(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("/", path),
    }
}

fn symlinked_media(path: &str) -> BackupError {
    BackupError::Config(ConfigError::field(
        "media_store_path",
        format!(
            "{path} is a symbolic link: a local_* media dir must be a real directory (link its parent, media_store_path, instead)"
        ),
    ))
}

/// The members found so far: plain ones and symlinks (to files), each once.
#[derive(Default)]
struct Found {
    members: Vec<String>,
    links: Vec<String>,
}

impl Found {
    /// Adds the container path `path` of this kind.
    fn add(&mut self, path: &str, kind: crate::FileKind) {
        let m = Layout::member_name(path);
        let list = if kind == crate::FileKind::Symlink {
            &mut self.links
        } else {
            &mut self.members
        };
        if !list.contains(&m) {
            list.push(m);
        }
    }
}

async fn collect<C: Container + ?Sized>(
    container: &C,
    layout: &Layout,
) -> Result<Collected, BackupError> {
    let config = work::read_homeserver_config(container, layout).await?;
    let mut found = Found::default();
    let mut warnings = Vec::new();
    collect_keys(container, layout, &config, &mut found, &mut warnings).await?;
    let db = collect_database(container, layout, &config, &mut found, &mut warnings).await?;
    collect_media(container, layout, &config, &mut found, &mut warnings).await?;
    if found.members.is_empty() && found.links.is_empty() && db.is_none() {
        return Err(BackupError::NothingToBackUp {
            root: layout.root.clone(),
        });
    }
    Ok(Collected {
        members: found.members,
        links: found.links,
        db,
        config,
        warnings,
    })
}

/// The signing keys: every `*.key` of the config dir and `signing_key_path`.
async fn collect_keys<C: Container + ?Sized>(
    container: &C,
    layout: &Layout,
    config: &HomeserverConfig,
    found: &mut Found,
    warnings: &mut Vec<String>,
) -> Result<(), BackupError> {
    use crate::FileKind;
    for (kind, name) in list_or_empty(
        container,
        layout,
        &layout.host_path(&layout.config_dir),
        "*.key",
    )
    .await?
    {
        if matches!(kind, FileKind::File | FileKind::Symlink) {
            found.add(&join(&layout.config_dir, &name), kind);
        }
    }
    if let Some(key) = &config.signing_key_path {
        match work::kind_of(container, layout, &layout.host_path(key)).await? {
            Some(kind @ (FileKind::File | FileKind::Symlink)) => found.add(key, kind),
            Some(_) => {
                return Err(BackupError::Config(ConfigError::field(
                    "signing_key_path",
                    format!("{key} is not a regular file"),
                )));
            }
            None => warnings.push(format!("signing_key_path {key} does not exist")),
        }
    }
    Ok(())
}

/// The SQLite database (snapshotted, so given apart) and the files beside it that
/// share its name and are not its sidecars; nothing for PostgreSQL.
async fn collect_database<C: Container + ?Sized>(
    container: &C,
    layout: &Layout,
    config: &HomeserverConfig,
    found: &mut Found,
    warnings: &mut Vec<String>,
) -> Result<Option<String>, BackupError> {
    use crate::FileKind;
    let path = match &config.database {
        DatabaseKind::Postgresql => {
            tracing::info!(
                "homeserver.yaml names a PostgreSQL database: it is backed up by the PostgreSQL charm, not here"
            );
            warnings
                .push("the database is PostgreSQL: back it up with the PostgreSQL charm".into());
            return Ok(None);
        }
        DatabaseKind::Sqlite(path) => path,
    };
    let mut db = None;
    let (dir, name) = split_dir(path);
    for (kind, entry) in list_or_empty(
        container,
        layout,
        &layout.host_path(dir),
        &format!("{}*", glob::Pattern::escape(name)),
    )
    .await?
    {
        let suffix = &entry[name.len().min(entry.len())..];
        let file_like = matches!(kind, FileKind::File | FileKind::Symlink);
        if entry == name && file_like {
            // SQLite opens it through a symlink: the snapshot follows it.
            db = Some(path.clone());
        } else if file_like && !super::layout::is_sqlite_sidecar_suffix(suffix) {
            found.add(&join(dir, &entry), kind);
        }
    }
    Ok(db)
}

/// The local media: every `local_*` dir of the media store (none may be a symlink).
async fn collect_media<C: Container + ?Sized>(
    container: &C,
    layout: &Layout,
    config: &HomeserverConfig,
    found: &mut Found,
    warnings: &mut Vec<String>,
) -> Result<(), BackupError> {
    use crate::FileKind;
    let media = &config.media_store_path;
    let media_host = layout.host_path(media);
    let media_kind = work::kind_of(container, layout, &media_host).await?;
    let media_entries = list_or_empty(container, layout, &media_host, "local_*").await?;
    if media_kind.is_none() || (media_kind == Some(FileKind::Symlink) && media_entries.is_empty()) {
        if media_kind.is_some() {
            // A symlink to nothing (or to an empty dir): say which.
            tracing::warn!(media_store_path = %media, "the media store is a symlink with no local media behind it");
        } else {
            tracing::warn!(media_store_path = %media, "the media store does not exist: no media backed up");
        }
    }
    if media_kind.is_none() {
        warnings.push(format!(
            "media store {media} does not exist: no media backed up"
        ));
    }
    for (kind, name) in media_entries {
        match kind {
            FileKind::Symlink => return Err(symlinked_media(&join(media, &name))),
            kind => found.add(&join(media, &name), kind),
        }
    }
    Ok(())
}

/// This process's peak resident set size so far (`VmHWM`), for the debug log.
fn peak_rss_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// One backup in progress: what it archives, where, and whether its upload started
/// (then a failure removes the partial object and multipart uploads).
struct BackupRun<'r, 'a, C: Container + ?Sized> {
    run: &'r Run<'a, C>,
    options: &'r BackupOptions,
    collected: Collected,
    id: BackupId,
    key: String,
    work: &'r WorkDir,
    uploading: AtomicBool,
    /// The index object's key, once its upload started (a failure removes it too).
    index_key: std::sync::Mutex<Option<String>>,
    /// An incremental backup's database goes to its database pack: the own pack's
    /// pipeline archives no snapshot.
    database_apart: AtomicBool,
}

impl<C: Container + ?Sized> BackupRun<'_, '_, C> {
    /// The error of a failed `prepare.sh`: no room for the snapshot, a damaged
    /// database, the snapshot or a collection step.
    async fn prepare_error(&self, e: ContainerError) -> BackupError {
        let work = self.work;
        let outputs = Outputs::new(self.run.container, self.run.layout, work);
        match Exit::of(&e).unwrap_or(Exit::Other(-1)) {
            Exit::SnapshotNoSpace => {
                let space = async {
                    Ok::<_, ContainerError>((
                        outputs.field(WorkFile::Need, 0).await?,
                        outputs.field(WorkFile::Avail, 0).await?,
                    ))
                };
                match space.await {
                    Ok((needed, available)) => BackupError::InsufficientSpace {
                        path: work.parent().to_string(),
                        needed,
                        available,
                    },
                    Err(read) => read.into(),
                }
            }
            Exit::SnapshotBelowReserve => {
                let space = async {
                    Ok::<_, ContainerError>(BackupError::SpaceReserve {
                        path: work.parent().to_string(),
                        needed: outputs.field(WorkFile::Need, 0).await?,
                        available: outputs.field(WorkFile::Avail, 0).await?,
                        reserve: outputs.field(WorkFile::Reserve, 1).await?,
                    })
                };
                space.await.unwrap_or_else(BackupError::from)
            }
            Exit::SnapshotCorrupt => {
                let detail = match e {
                    ContainerError::ExitedNonZero { stderr, .. } => stderr,
                    other => other.to_string(),
                };
                let db = self.collected.db.as_deref().unwrap_or("the database");
                BackupError::StageFailed {
                    stage: Stage::Snapshot,
                    exit_code: Exit::SnapshotCorrupt.code(),
                    stderr: format!(
                        "{db} is damaged: its snapshot fails SQLite's PRAGMA integrity_check, so a restore would refuse it; nothing was uploaded ({detail})"
                    ),
                }
            }
            Exit::NoSnapshotTool | Exit::SnapshotFailed => work::stage_error(Stage::Snapshot, e),
            _ => work::stage_error(Stage::Collect, e),
        }
    }

    /// The backup's stages: the inner manifest and the pipeline's inputs, `prepare.sh`,
    /// the upload, tar's verdict and listing, the upload's check, the manifest.
    async fn execute(&self) -> Result<(Manifest, LiveChanges, u64), BackupError> {
        let mut inner = self.inner_manifest()?;
        self.write_inputs(&inner).await?;
        // An incremental create reads its base (a listing, its manifest and index, and
        // its inner manifest: an aws CLI start and gpg's key derivation, about a second)
        // while `prepare.sh` snapshots the database. Both run to their end.
        let (prepared, found) = if self.options.incremental {
            let (prepared, found) =
                tokio::join!(self.prepare(), super::chain::find_base(self.run, self.work));
            (prepared, Some(found))
        } else {
            (self.prepare().await, None)
        };
        let mut expected_size = prepared?;
        let outputs = Outputs::new(self.run.container, self.run.layout, self.work);
        let mut planned = if let Some(found) = found {
            let planned = self.plan_pack(&outputs, &mut inner, found?).await?;
            expected_size += planned.plan.new.bytes + 1024 * planned.plan.new.files;
            Some(planned)
        } else {
            None
        };
        let database = planned.as_ref().map_or(&[][..], |p| &p.chain.database[..]);
        let (tally, database) = if database.is_empty() {
            (self.upload(expected_size).await?, None)
        } else {
            self.database_apart.store(true, Ordering::SeqCst);
            // Side by side: the database pack is the larger one of an increment.
            let (tally, database) = tokio::try_join!(
                self.upload(expected_size),
                self.upload_database(&inner, expected_size),
            )?;
            (tally, Some(database))
        };
        if planned.is_some() {
            self.tar_exactly(&outputs).await?;
        }
        let mut changes = self.live_changes(&outputs).await?;
        let (sha, length) = self.check_object(&outputs, &self.key, tally).await?;
        // The file index is uploaded (and let go) before the manifest's file list is
        // built, so the two are never held at once.
        if let Some(planned) = &mut planned {
            self.put_index(planned).await?;
        }
        let database_listing = database.as_ref().map_or(&[][..], |(_, l)| &l[..]);
        let mut archived = self
            .read_index(&outputs, &mut changes.changed, database_listing)
            .await?;
        changes.changed.sort();
        changes.dirs_changed = std::mem::take(&mut archived.changed_dirs);
        let mut manifest = self.manifest(inner, &changes, archived.plaintext_bytes, sha, length);
        if let Some(planned) = planned {
            let pack = database.map(|(pack, _)| pack);
            let apart = pack.as_ref().map_or(0, |p| p.ciphertext_bytes);
            let mut chain = planned.manifest_chain(length + apart);
            chain.database = pack;
            manifest.chain = Some(chain);
        }
        self.put_manifest(&manifest, archived.files).await?;
        Ok((manifest, changes, archived.regular_files))
    }

    /// The manifest the stream carries first (id, layout, nonce).
    fn inner_manifest(&self) -> Result<InnerManifest, BackupError> {
        let (layout, collected) = (self.run.layout, &self.collected);
        let database = match collected.config.database {
            DatabaseKind::Postgresql => DatabaseSnapshot::Postgresql,
            DatabaseKind::Sqlite(_) if collected.db.is_some() => DatabaseSnapshot::Sqlite,
            DatabaseKind::Sqlite(_) => DatabaseSnapshot::None,
        };
        Ok(InnerManifest {
            format: MANIFEST_FORMAT,
            backup_id: self.id.clone(),
            created: Utc::now(),
            created_by: plan::metadata_value(),
            layout: ManifestLayout {
                config_dir: layout.config_dir.clone(),
                data_dir: layout.data_dir.clone(),
                media_store_path: collected.config.media_store_path.clone(),
                members: collected.all_members(),
            },
            database,
            nonce: InnerManifest::new_nonce().map_err(|e| ContainerError::Io {
                path: "getrandom".into(),
                source: e,
            })?,
            chain: None,
        })
    }

    /// Writes what `prepare.sh` and `backup.sh` read: the inner manifest, the members
    /// and the members that are symlinks. For an incremental backup, the media members
    /// go to `prepare.sh`'s listing instead, and the inner manifest is written once the
    /// pack is planned ([`Self::plan_pack`]).
    async fn write_inputs(&self, inner: &InnerManifest) -> Result<(), BackupError> {
        let (container, layout, work) = (self.run.container, self.run.layout, self.work);
        let collected = &self.collected;
        let inputs = if self.options.incremental {
            let media = collected.media_members();
            let rest: Vec<String> = collected
                .members
                .iter()
                .filter(|m| !media.contains(m))
                .cloned()
                .collect();
            vec![
                (WorkFile::Files, plan::files_list(&rest)),
                (WorkFile::Links, plan::files_list(&collected.links)),
                (WorkFile::Media, plan::files_list(&media)),
            ]
        } else {
            vec![
                (WorkFile::InnerManifest, inner.to_json()),
                (WorkFile::Files, plan::files_list(&collected.members)),
                (WorkFile::Links, plan::files_list(&collected.links)),
            ]
        };
        for (file, content) in inputs {
            work::write_file(container, layout, work, file, content).await?;
        }
        Ok(())
    }

    /// Plans an incremental backup's pack from `prepare.sh`'s media listing and the base
    /// found beside it, then writes the inner manifest (with the chain) and the media
    /// the pack archives.
    async fn plan_pack(
        &self,
        outputs: &Outputs<'_, C>,
        inner: &mut InnerManifest,
        found: super::chain::FoundBase,
    ) -> Result<Planned, BackupError> {
        let (container, layout, work) = (self.run.container, self.run.layout, self.work);
        let tree = copy_tree(outputs).await?;
        let mut planned =
            super::chain::plan_pack(self.run, self.options, &self.id, &tree, found).await?;
        drop(tree);
        if matches!(planned.kind, BackupKind::Incremental { .. }) {
            // The snapshot dir's members go to the database pack (none: no pack).
            let snap = outputs.read(WorkFile::SnapFiles).await?;
            planned.chain.database = snap
                .split(|b| *b == 0)
                .filter(|m| !m.is_empty())
                .map(|m| String::from_utf8_lossy(m).into_owned())
                .collect();
        }
        inner.chain = Some(planned.chain.clone());
        for (file, content) in [
            (WorkFile::InnerManifest, inner.to_json()),
            // Written once: the list is not needed again.
            (WorkFile::NewMedia, std::mem::take(&mut planned.members)),
        ] {
            work::write_file(container, layout, work, file, content).await?;
        }
        Ok(planned)
    }

    /// An incremental pack must hold exactly the media its index assigns to it: a
    /// media file that vanished or changed while tar read it fails the backup.
    async fn tar_exactly(&self, outputs: &Outputs<'_, C>) -> Result<(), BackupError> {
        let tar_status: i32 = outputs.field(WorkFile::TarStatus, 0).await?;
        if tar_status == 0 {
            return Ok(());
        }
        let stderr = outputs.text(WorkFile::TarErr).await?;
        Err(BackupError::StageFailed {
            stage: Stage::Tar,
            exit_code: tar_status,
            stderr: format!(
                "a file changed or vanished while the incremental backup read it, so its pack would not hold what its index says; nothing was kept, run it again ({})",
                crate::error::trim_tail(&stderr, 4096)
            ),
        })
    }

    /// Uploads the file index beside the data (before the manifest: the backup exists
    /// only once that is written), giving its bytes up.
    async fn put_index(&self, planned: &mut Planned) -> Result<(), BackupError> {
        let metadata = HashMap::from([(plan::METADATA_KEY.to_string(), plan::metadata_value())]);
        let key = format!("{}{}", self.key, planned.index_suffix());
        *self
            .index_key
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(key.clone());
        self.run
            .client
            .put_object_file(
                &key,
                planned.index.path(),
                "application/x-ndjson",
                &metadata,
            )
            .await
            .map_err(|e| BackupError::StageFailed {
                stage: Stage::Manifest,
                exit_code: 0,
                stderr: format!("the file index could not be uploaded: {e}"),
            })
    }

    /// Runs `prepare.sh` (the snapshot, the total size); gives the size to archive.
    async fn prepare(&self) -> Result<u64, BackupError> {
        let (container, layout, work) = (self.run.container, self.run.layout, self.work);
        let options = self.options;
        let mut prepare =
            plan::prepare_call(layout, self.run.params, work, self.collected.db.as_deref());
        if let Some(limit) = options.snapshot_timeout {
            prepare.env.insert(
                "SB_SNAPSHOT_TIMEOUT".into(),
                limit.as_secs().max(1).to_string(),
            );
        }
        options.priority.apply(&mut prepare.env);
        if self.collected.db.is_some() {
            Reserve::of(options.space_reserve_mib).apply(&mut prepare.env, false);
        }
        if self.run.transfer == super::transfer::Transfer::Library {
            super::upload::without_bucket(&mut prepare);
        }
        if let Err(e) = container
            .exec(
                &prepare.argv,
                work::exec_options(layout, &prepare, work, options.timeout),
            )
            .await
        {
            return Err(self.prepare_error(e).await);
        }
        Ok(Outputs::new(container, layout, work)
            .field(WorkFile::Size, 0)
            .await?)
    }

    /// Runs the backup pipeline (from here on, a failure removes the partial upload).
    /// Gives the library's tally of the stream when the library uploaded it.
    async fn upload(&self, expected_size: u64) -> Result<Option<Tally>, BackupError> {
        tracing::info!(backup_id = %self.id, expected_size, transfer = %self.run.transfer, "running the backup pipeline");
        self.uploading.store(true, Ordering::SeqCst);
        // With a database pack, the own pack archives no snapshot.
        let env: &[(&str, &str)] = if self.database_apart.load(Ordering::SeqCst) {
            &[("SB_SNAP", "")]
        } else {
            &[]
        };
        super::upload::run_backup_pipeline(
            self.run,
            self.options,
            self.work,
            &self.key,
            expected_size,
            env,
        )
        .await
    }

    /// Runs the database pack's pipeline (`backup.sh` in a work dir of its own inside
    /// the backup's, archiving the backup's snapshot dir after the same `inner`
    /// manifest) to `<key>.database`; checks its upload. Gives the pack as the
    /// manifest records it and tar's listing of it.
    async fn upload_database(
        &self,
        inner: &InnerManifest,
        expected_size: u64,
    ) -> Result<(DatabasePack, Vec<u8>), BackupError> {
        let run = self.run;
        let guard = run
            .work_dir_in(WorkPlace::Under(&self.work.dir), "database", self.options)
            .await?;
        let result = self
            .database_pipeline(guard.dir(), inner, expected_size)
            .await;
        guard.finish().await;
        result
    }

    async fn database_pipeline(
        &self,
        work: &WorkDir,
        inner: &InnerManifest,
        expected_size: u64,
    ) -> Result<(DatabasePack, Vec<u8>), BackupError> {
        let (run, options) = (self.run, self.options);
        let (container, layout) = (run.container, run.layout);
        for (file, content) in [
            (WorkFile::InnerManifest, inner.to_json()),
            (WorkFile::Files, Vec::new()),
        ] {
            work::write_file(container, layout, work, file, content).await?;
        }
        let key = format!("{}{DATABASE_SUFFIX}", self.key);
        tracing::info!(backup_id = %self.id, transfer = %run.transfer, "running the database pack's pipeline");
        let outputs = Outputs::new(container, layout, work);
        // The own pack's pipeline reports the progress.
        let mut quiet = options.clone();
        quiet.progress = None;
        let tally = super::upload::run_backup_pipeline(
            run,
            &quiet,
            work,
            &key,
            expected_size,
            &[("SB_SNAP", self.work.dir.as_str())],
        )
        .await?;
        // A snapshot never changes while tar reads it: any warning is a failure.
        let tar_status: i32 = outputs.field(WorkFile::TarStatus, 0).await?;
        if tar_status != 0 {
            return Err(BackupError::StageFailed {
                stage: Stage::Tar,
                exit_code: tar_status,
                stderr: outputs.text(WorkFile::TarErr).await?,
            });
        }
        let (sha, length) = self.check_object(&outputs, &key, tally).await?;
        let listing = outputs.read(WorkFile::Index).await?;
        Ok((
            DatabasePack {
                ciphertext_bytes: length,
                ciphertext_sha256: sha,
            },
            listing,
        ))
    }

    /// tar's own verdict: 0, or 1/2 for a live tree (warnings, unless a line says
    /// otherwise).
    async fn live_changes(&self, outputs: &Outputs<'_, C>) -> Result<LiveChanges, BackupError> {
        let tar_status: i32 = outputs.field(WorkFile::TarStatus, 0).await?;
        if tar_status == 0 {
            return Ok(LiveChanges::default());
        }
        let stderr = outputs.text(WorkFile::TarErr).await?;
        plan::read_tar_warnings(tar_status, &stderr, &self.collected.media_members()).map_err(
            |line| BackupError::StageFailed {
                stage: Stage::Tar,
                exit_code: tar_status,
                stderr: if line.is_empty() {
                    crate::error::trim_tail(&stderr, 4096)
                } else {
                    line
                },
            },
        )
    }

    /// What tar archived: its own listing of the stream, read in chunks and turned
    /// into the manifest's JSON line by line, so 100,000 members are held once, as
    /// JSON. Dirs named in `changed` move to the result's `changed_dirs`.
    async fn read_index(
        &self,
        outputs: &Outputs<'_, C>,
        changed: &mut Vec<String>,
        database: &[u8],
    ) -> Result<Archived, BackupError> {
        let rules = RestoreRules::new(self.run.layout, &self.collected.config);
        let mut index = IndexReader::new(&rules, changed)?;
        outputs
            .for_each_record(WorkFile::Index, b'\n', INDEX_CHUNK, |line| index.line(line))
            .await?;
        // The database pack's members after the own pack's (its inner manifest is the
        // own pack's, listed once).
        let inner_members = index.inner_members;
        for line in database.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            index.line(line)?;
        }
        if !database.is_empty() {
            if index.inner_members != inner_members + 1 {
                return Err(BackupError::StageFailed {
                    stage: Stage::Tar,
                    exit_code: 0,
                    stderr: "the database pack's inner manifest is not its one first member".into(),
                });
            }
            index.inner_members = inner_members;
        }
        index.finish()
    }

    /// The stream's checksum and length, as the library counted them when it uploaded
    /// (`tally`) or else as the pipeline whose outputs are `outputs` computed them,
    /// checked against the size of the object uploaded to `key`.
    async fn check_object(
        &self,
        outputs: &Outputs<'_, C>,
        key: &str,
        tally: Option<Tally>,
    ) -> Result<(String, u64), BackupError> {
        let (sha, length): (String, u64) = match tally {
            Some(Tally { sha256, length }) => (sha256, length),
            None => (
                outputs.field(WorkFile::Sha256, 0).await?,
                outputs.field(WorkFile::Length, 0).await?,
            ),
        };
        if sha.len() != 64 || length == 0 {
            return Err(BackupError::StageFailed {
                stage: Stage::Check,
                exit_code: 0,
                stderr: format!(
                    "the pipeline reported no checksum or size (sha256 {sha:?}, {length} bytes)"
                ),
            });
        }
        let head = self.run.client.head_object(key).await?;
        if head.size != length {
            return Err(BackupError::Corrupted {
                id: self.id.to_string(),
                reason: format!(
                    "the uploaded object {key} is {} bytes but the pipeline wrote {length}",
                    head.size
                ),
            });
        }
        Ok((sha, length))
    }

    /// The external manifest (its file list apart, written by [`ManifestJson`]).
    fn manifest(
        &self,
        inner: InnerManifest,
        changes: &LiveChanges,
        plaintext_bytes: u64,
        sha: String,
        length: u64,
    ) -> Manifest {
        let collected = &self.collected;
        let mut warnings = collected.warnings.clone();
        warnings.extend(changes.warnings());
        for w in changes.warnings() {
            tracing::warn!(backup_id = %self.id, "{w}");
        }
        Manifest {
            format: MANIFEST_FORMAT,
            backup_id: self.id.clone(),
            created: inner.created,
            created_by: inner.created_by,
            server_name: collected.config.server_name.clone(),
            layout: inner.layout,
            database: inner.database,
            warnings,
            files: Vec::new(),
            plaintext_bytes,
            ciphertext_bytes: length,
            ciphertext_sha256: sha,
            cipher: Cipher::Aes256,
            compression: self.options.compression,
            nonce: Some(inner.nonce),
            chain: None,
        }
    }

    /// Writes the manifest beside the data: the backup exists from here on.
    async fn put_manifest(
        &self,
        manifest: &Manifest,
        files: ManifestJson<ManifestFile>,
    ) -> Result<(), BackupError> {
        // Compact: a pretty manifest of 100,000 files is a third larger.
        let file = files
            .finish(manifest)
            .and_then(|out| {
                out.into_inner()
                    .map_err(std::io::IntoInnerError::into_error)
            })
            .map_err(manifest_file_failed)?;
        let metadata = HashMap::from([(plan::METADATA_KEY.to_string(), plan::metadata_value())]);
        tracing::debug!(
            backup_id = %self.id,
            peak_rss_kib = peak_rss_kib(),
            "manifest built"
        );
        self.run.confirm_lock("the manifest write").await?;
        self.run
            .client
            .put_object_file(
                &format!("{}{}", self.key, plan::MANIFEST_SUFFIX),
                file.path(),
                "application/json",
                &metadata,
            )
            .await
            .map_err(|e| BackupError::StageFailed {
                stage: Stage::Manifest,
                exit_code: 0,
                stderr: e.to_string(),
            })?;
        Ok(())
    }
}

/// How much of tar's listing is read at a time.
const INDEX_CHUNK: u64 = 1 << 20;

/// `prepare.sh`'s media listing copied a chunk at a time into a temp file of this
/// process, for the plan to read as it goes (never held whole).
async fn copy_tree<C: Container + ?Sized>(
    outputs: &Outputs<'_, C>,
) -> Result<std::fs::File, BackupError> {
    use std::io::Write as _;
    let failed = |e| super::chain::temp_file_failed("media listing", e);
    let mut file = tempfile::tempfile().map_err(failed)?;
    let mut offset = 0;
    loop {
        let part = outputs.chunk(WorkFile::Tree, offset, INDEX_CHUNK).await?;
        file.write_all(&part).map_err(failed)?;
        offset += part.len() as u64;
        if (part.len() as u64) < INDEX_CHUNK {
            return Ok(file);
        }
    }
}

/// Where a create writes its manifest's JSON before uploading it (from there, never
/// held whole): a temp file of this process, removed when dropped.
type ManifestFile = std::io::BufWriter<tempfile::NamedTempFile>;

/// The error of a manifest's temp file that could not be written.
fn manifest_file_failed(e: std::io::Error) -> BackupError {
    BackupError::StageFailed {
        stage: Stage::Manifest,
        exit_code: 0,
        stderr: format!(
            "the manifest could not be written to a temp file in {}: {e}",
            std::env::temp_dir().display()
        ),
    }
}

/// What the listing says was archived.
struct Archived {
    files: ManifestJson<ManifestFile>,
    plaintext_bytes: u64,
    regular_files: u64,
    changed_dirs: Vec<String>,
}

/// tar's `-vv` listing of the stream, turned line by line into the manifest's file
/// list, each member checked with the rules restore applies (pure: fed by the chunked
/// read in [`BackupRun::read_index`]).
struct IndexReader<'r> {
    rules: &'r RestoreRules,
    /// What tar said changed; dirs named there move to `archived.changed_dirs` (tar
    /// names a dir whose entries changed, a file added, like a file).
    changed: &'r mut Vec<String>,
    archived: Archived,
    inner_members: u32,
    lines: usize,
}

impl<'r> IndexReader<'r> {
    fn new(rules: &'r RestoreRules, changed: &'r mut Vec<String>) -> Result<Self, BackupError> {
        let file = tempfile::NamedTempFile::new().map_err(manifest_file_failed)?;
        Ok(IndexReader {
            rules,
            changed,
            archived: Archived {
                files: ManifestJson::new(std::io::BufWriter::with_capacity(64 << 10, file))
                    .map_err(manifest_file_failed)?,
                plaintext_bytes: 0,
                regular_files: 0,
                changed_dirs: Vec::new(),
            },
            inner_members: 0,
            lines: 0,
        })
    }

    /// One line of the listing (without its newline).
    fn line(&mut self, line: &[u8]) -> Result<(), BackupError> {
        self.lines += 1;
        let number = self.lines;
        let members = parse_members(line).map_err(|e| BackupError::StageFailed {
            stage: Stage::Tar,
            exit_code: 0,
            stderr: format!("tar's listing of the archive is unreadable at line {number}: {e}"),
        })?;
        for m in members {
            if m.name == INNER_MANIFEST_MEMBER.as_bytes() {
                self.inner_members += 1;
                continue;
            }
            // A backup is complete only if restore will accept it: the same rules.
            self.rules
                .check(std::slice::from_ref(&m), MemberSource::Listing)
                .map_err(|(member, reason)| BackupError::UnsafeMember { member, reason })?;
            if m.kind == 'd'
                && let Some(pos) = self
                    .changed
                    .iter()
                    .position(|n| n.trim_end_matches('/').as_bytes() == m.name)
            {
                self.archived
                    .changed_dirs
                    .push(self.changed.swap_remove(pos));
            }
            if m.kind == '-' {
                self.archived.plaintext_bytes += m.size;
                self.archived.regular_files += 1;
            }
            // The rules above refused every kind but files, hard links (archived
            // dereferenced) and directories.
            let kind =
                EntryKind::from_tar_letter(m.kind).ok_or_else(|| BackupError::UnsafeMember {
                    member: String::from_utf8_lossy(&m.name).into_owned(),
                    reason: format!("tar archived it as an unknown kind {:?}", m.kind),
                })?;
            self.archived
                .files
                .push(&ManifestEntry {
                    path: match String::from_utf8(m.name) {
                        Ok(text) => ManifestPath::Text(text),
                        Err(e) => ManifestPath::Bytes(e.into_bytes()),
                    },
                    kind,
                    size: m.size,
                })
                .map_err(manifest_file_failed)?;
        }
        Ok(())
    }

    /// The archived entries, once the whole listing was read.
    ///
    /// # Errors
    /// [`BackupError::StageFailed`] (tar) when the inner manifest is not the
    /// archive's one member of its name.
    fn finish(self) -> Result<Archived, BackupError> {
        if self.inner_members != 1 {
            return Err(BackupError::StageFailed {
                stage: Stage::Tar,
                exit_code: 0,
                stderr: "the inner manifest is not the archive's one first member".into(),
            });
        }
        let mut archived = self.archived;
        archived.changed_dirs.sort();
        Ok(archived)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::scripts;
    use crate::container::{ExecOutput, MockContainer};
    use std::sync::{Arc, Mutex};

    /// No S3 server here: the lock is off, and no passphrase check (which lists).
    fn unlocked() -> BackupOptions {
        BackupOptions {
            lock: crate::LockOptions::off(),
            new_passphrase: true,
            ..BackupOptions::default()
        }
    }

    fn params() -> S3Parameters {
        let m: HashMap<String, String> = [
            ("access-key", "AKIDEXAMPLE"),
            ("secret-key", "s3cr3t-value"),
            ("bucket", "bkt"),
            ("endpoint", "http://127.0.0.1:9"),
            ("s3-uri-style", "path"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        S3Parameters::from_relation_data(&m).unwrap()
    }

    fn layout() -> Layout {
        Layout {
            root: "/r".into(),
            ..Layout::default()
        }
    }

    /// What the workload saw: every exec (argv, user, stdin), the files written into
    /// the work dir and the dirs removed.
    /// One exec: argv, user, stdin.
    type Exec = (Vec<String>, Option<String>, Option<Vec<u8>>);

    #[derive(Default)]
    struct Seen {
        execs: Vec<Exec>,
        written: Vec<(String, String, Vec<u8>)>,
        removed: Vec<String>,
    }

    /// A workload with one signing key and no database or media, whose pipeline exits
    /// with `pipeline_exit`; writing into the work dir fails when `write_fails`.
    fn workload(
        pipeline_exit: i32,
        stage_status: &'static str,
        write_fails: bool,
    ) -> (MockContainer, Arc<Mutex<Seen>>) {
        let mut c = MockContainer::new();
        // Every workload path is read and listed through exec, as the workload user.
        c.expect_pull().never();
        c.expect_list_files().returning(|_, _| Ok(vec![]));
        c.expect_exists().returning(|_| Ok(false));
        c.expect_push().never();
        c.expect_make_dir().never();
        c.expect_remove_path().never();
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let s2 = seen.clone();
        c.expect_exec().returning(move |argv, options| {
            let mut seen = s2.lock().unwrap();
            seen.execs
                .push((argv.to_vec(), options.user.clone(), options.stdin.clone()));
            let fail = |code: i32, stderr: &str| {
                Err(ContainerError::ExitedNonZero {
                    command: "bash".into(),
                    exit_code: code,
                    stderr: stderr.into(),
                })
            };
            let ok = |stdout: &[u8]| {
                Ok(ExecOutput {
                    stdout: stdout.to_vec(),
                    ..ExecOutput::default()
                })
            };
            if argv[2] == scripts::WORKDIR {
                return match argv[4].as_str() {
                    "make" => ok(format!("{}/{}.AbCdEfGhIj\n", argv[5], argv[6]).as_bytes()),
                    "write" if write_fails => fail(1, "disk full"),
                    "write" => {
                        let stdin = options.stdin.clone().unwrap_or_default();
                        seen.written.push((argv[5].clone(), argv[6].clone(), stdin));
                        ok(b"")
                    }
                    "list" if argv[5].trim_end_matches('/') == "/r/data" && argv[6] == "*.key" => {
                        ok(b"f x.key\0")
                    }
                    "list" | "kind" => fail(Exit::NoSuchPath.code(), ""),
                    "read" => match argv[5].rsplit('/').next().unwrap() {
                        "homeserver.yaml" => ok(b"server_name: x\n"),
                        "size" => ok(b"10\n"),
                        "listing" => ok(b"f 10 data/x.key\0"),
                        "failed" => ok(stage_status.as_bytes()),
                        _ => fail(Exit::NoSuchPath.code(), "no such file"),
                    },
                    "remove" => {
                        seen.removed.push(argv[5].clone());
                        ok(b"")
                    }
                    other => panic!("{other}"),
                };
            }
            if argv[2] == scripts::PREPARE {
                ok(b"")
            } else {
                fail(pipeline_exit, "gpg: fatal")
            }
        });
        (c, seen)
    }

    /// The argv of the exec that made the work dir.
    fn make_call(seen: &Seen) -> &Vec<String> {
        &seen
            .execs
            .iter()
            .find(|(argv, ..)| argv[2] == scripts::WORKDIR && argv[4] == "make")
            .expect("a work dir was made")
            .0
    }

    /// The work dir the mock's mktemp made.
    fn made(seen: &Seen) -> String {
        let make = make_call(seen);
        format!("{}/{}.AbCdEfGhIj", make[5], make[6])
    }

    #[tokio::test]
    async fn a_failed_pipeline_names_its_stage_and_removes_the_work_dir() {
        let (c, seen) = workload(11, "gpg 2\n", false);
        let e = create_backup_with(&c, &params(), "pass phrase", &layout(), &unlocked())
            .await
            .unwrap_err();
        match e {
            BackupError::StageFailed {
                stage,
                exit_code,
                stderr,
            } => {
                assert_eq!(
                    (stage, exit_code, stderr.as_str()),
                    (Stage::Gpg, 2, "gpg: fatal")
                );
            }
            other => panic!("{other}"),
        }
        let seen = seen.lock().unwrap();
        let work = made(&seen);
        assert_eq!(seen.removed, vec![work.clone()]);
        // Every step ran as the workload user.
        for (argv, user, _) in &seen.execs {
            assert_eq!(user.as_deref(), Some("synapse"), "{:?}", &argv[3..]);
        }
        // The work dir was made by mktemp under the data dir.
        let make = make_call(&seen);
        assert_eq!((make[4].as_str(), make[5].as_str()), ("make", "/r/data"));
        assert!(make[6].starts_with(".synapse-backup-backup-"), "{make:?}");
        // The passphrase reached only the pipeline, on its standard input.
        let with_passphrase: Vec<_> = seen
            .execs
            .iter()
            .filter(|(_, _, stdin)| stdin.as_deref() == Some(b"pass phrase\n"))
            .collect();
        assert_eq!(with_passphrase.len(), 1);
        assert_eq!(with_passphrase[0].0[2], scripts::BACKUP);
        for (dir, name, content) in &seen.written {
            assert_eq!(dir, &work);
            assert!(!content.windows(11).any(|w| w == b"pass phrase"), "{name}");
        }
        let files = seen.written.iter().find(|(_, n, _)| n == "files").unwrap();
        assert_eq!(files.2, b"data/x.key\0");
        for (argv, ..) in &seen.execs {
            for a in argv {
                assert!(
                    !a.contains("s3cr3t-value") && !a.contains("pass phrase"),
                    "secret in argv: {a}"
                );
            }
        }
    }

    #[tokio::test]
    async fn stages_map_from_the_pipeline_exit_code() {
        for (exit, status, stage) in [
            (10, "tar 2\n", Stage::Tar),
            (13, "upload 1\n", Stage::Upload),
            (12, "tee 1\n", Stage::Check),
        ] {
            let (c, _) = workload(exit, status, false);
            let e = create_backup_with(&c, &params(), "pw", &layout(), &unlocked())
                .await
                .unwrap_err();
            assert!(
                matches!(e, BackupError::StageFailed { stage: s, .. } if s == stage),
                "{exit}: {e}"
            );
            assert!(e.to_string().starts_with(&stage.to_string()), "{e}");
        }
    }

    #[tokio::test]
    async fn the_work_dir_is_removed_even_when_writing_fails() {
        let (c, seen) = workload(0, "", true);
        let e = create_backup_with(&c, &params(), "pw", &layout(), &unlocked())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("disk full"), "{e}");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.removed, vec![made(&seen)]);
        assert!(
            !seen
                .execs
                .iter()
                .any(|(argv, ..)| argv[2] == scripts::PREPARE),
            "nothing ran"
        );
    }
}

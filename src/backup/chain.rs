//! An incremental create's I/O around the pure [`incremental`](super::incremental)
//! module: the base (the newest complete backup: its manifest, the inner manifest at
//! the head of its stream and its file index, checked against each other before
//! anything in it is referenced), the plan of the new pack from the workload's media
//! listing, and the index object beside the data.

use super::catalog::{self, BackupInfo, BackupStatus};
use super::incremental::{
    BackupKind, BaseState, ChainLink, FullReason, IncrementalPlan, IndexReader, IndexWriter,
    PackChain, Planner, TreeListing, choose_base, full_after_plan, index_suffix, plan_incremental,
};
use super::index_read::{self, IndexRead};
use super::manifest::{InnerManifest, Manifest, ManifestChain};
use super::plan::{BackupId, BackupOptions, WorkDir};
use super::run::Run;
use crate::container::Container;
use crate::error::{BackupError, IndexError, Stage};

/// The newest complete backup, checked: its manifest and inner manifest agree (its
/// index is checked as the plan reads it, [`plan_on`]).
struct Base {
    id: BackupId,
    inner: InnerManifest,
    chain: PackChain,
    manifest: Manifest,
    /// Its index object's key.
    index_key: String,
}

/// What an incremental create found to build on ([`find_base`]): the state of the
/// newest complete backup and, when it can be a base, the base read and checked.
pub(crate) struct FoundBase(BaseState, Option<Base>);

/// The new pack, planned.
pub(crate) struct Planned {
    /// Full (and why) or incremental (on which base).
    pub kind: BackupKind,
    /// What the inner manifest carries.
    pub chain: PackChain,
    /// The new index (NDJSON), in a temp file of this process (uploaded from there,
    /// never held whole).
    pub index: tempfile::NamedTempFile,
    /// The NUL-terminated media files the pack archives.
    pub members: Vec<u8>,
    /// What is archived, referenced and superseded.
    pub plan: IncrementalPlan,
    /// The encrypted bytes of the older packs.
    pub older_ciphertext: u64,
}

impl Planned {
    /// The index object's key suffix ([`index_suffix`]).
    pub(crate) fn index_suffix(&self) -> String {
        match &self.kind {
            BackupKind::Incremental { base } => index_suffix(Some(base)),
            _ => index_suffix(None),
        }
    }

    /// The external manifest's record, once the pack's own size (with its database
    /// pack's) is known; the database pack's record is set by its caller.
    pub(crate) fn manifest_chain(&self, ciphertext_bytes: u64) -> ManifestChain {
        ManifestChain {
            kind: self.kind.clone(),
            packs: self.chain.links.iter().map(|l| l.id.clone()).collect(),
            index: self.index_suffix(),
            index_sha256: self.chain.index_sha256.clone(),
            indexed_files: self.plan.index.total.files,
            indexed_bytes: self.plan.index.total.bytes,
            own_files: self.plan.new.files,
            own_bytes: self.plan.new.bytes,
            total_ciphertext_bytes: self.older_ciphertext + ciphertext_bytes,
            database: None,
        }
    }
}

fn collect_error(e: &IndexError) -> BackupError {
    BackupError::StageFailed {
        stage: Stage::Collect,
        exit_code: 0,
        stderr: e.to_string(),
    }
}

/// Plans the pack of backup `id` from the media listing `tree` (what `prepare.sh`
/// wrote) and what [`find_base`] found (its index read here, a range at a time, as the
/// plan goes): incremental on the newest complete backup when
/// it can be a base and the policy allows, full (with the reason, logged) otherwise.
///
/// # Errors
/// [`BackupError::S3`] when the base's index cannot be read; [`BackupError::StageFailed`]
/// (collect) when the listing is malformed.
pub(crate) async fn plan_pack<C: Container + ?Sized>(
    run: &Run<'_, C>,
    options: &BackupOptions,
    id: &BackupId,
    tree: &std::fs::File,
    found: FoundBase,
) -> Result<Planned, BackupError> {
    let FoundBase(state, base) = found;
    let reason = match (
        choose_base(true, options.new_passphrase, &state, &options.chain),
        base,
    ) {
        (Ok(_), Some(base)) => {
            let links = base.chain.extend(
                &base.id,
                &base.inner.nonce,
                &base.manifest.ciphertext_sha256,
            );
            let mut packs: Vec<BackupId> = links.iter().map(|l| l.id.clone()).collect();
            packs.push(id.clone());
            match plan_on(run, &base, packs, tree, id).await? {
                Err(detail) => {
                    tracing::warn!(backup_id = %base.id, reason = detail, "the newest backup cannot be a base");
                    FullReason::BaseUnreadable {
                        base: base.id,
                        detail,
                    }
                }
                Ok((plan, index, members)) => {
                    match full_after_plan(&plan, &links, &options.chain) {
                        None => {
                            let older_ciphertext = base.manifest.chain.as_ref().map_or(
                                base.manifest.ciphertext_bytes,
                                |c| {
                                    // The base's database pack is not read by a later restore.
                                    let apart =
                                        c.database.as_ref().map_or(0, |d| d.ciphertext_bytes);
                                    c.total_ciphertext_bytes.saturating_sub(apart)
                                },
                            );
                            return Ok(planned(
                                BackupKind::Incremental { base: base.id },
                                links,
                                (plan, index, members),
                                older_ciphertext,
                            ));
                        }
                        Some(reason) => reason,
                    }
                }
            }
        }
        (Ok(base_id), None) => FullReason::BaseUnreadable {
            base: base_id,
            detail: "it was not read".into(),
        },
        (Err(reason), _) => reason,
    };
    tracing::info!(backup_id = %id, %reason, "making a full backup");
    let planned_full = run_plan(std::iter::empty(), tree, id)?;
    Ok(planned(
        BackupKind::Full { reason },
        Vec::new(),
        planned_full,
        0,
    ))
}

fn planned(
    kind: BackupKind,
    links: Vec<ChainLink>,
    (plan, index, members): (IncrementalPlan, tempfile::NamedTempFile, Vec<u8>),
    older_ciphertext: u64,
) -> Planned {
    if let BackupKind::Incremental { base } = &kind {
        tracing::info!(
            %base,
            packs = links.len() + 1,
            new_files = plan.new.files,
            new_bytes = plan.new.bytes,
            referenced_files = plan.referenced.files,
            "making an incremental backup"
        );
    }
    Planned {
        kind,
        chain: PackChain {
            index_sha256: plan.index.sha256.clone(),
            links,
            own_bytes: plan.new.bytes,
            database: Vec::new(),
        },
        index,
        members,
        plan,
        older_ciphertext,
    }
}

/// Plans over `base`'s entries and the listing: the plan (with the new index's
/// summary), the index and the member list.
fn run_plan<B>(
    base: B,
    tree: &std::fs::File,
    id: &BackupId,
) -> Result<(IncrementalPlan, tempfile::NamedTempFile, Vec<u8>), BackupError>
where
    B: IntoIterator<Item = Result<super::incremental::IndexEntry, IndexError>>,
{
    let mut index = IndexWriter::new(index_file()?);
    let mut members = Vec::new();
    let mut plan = plan_incremental(base, listing(tree)?, id, &mut index, &mut members)
        .map_err(|e| collect_error(&e))?;
    let (summary, file) = index.finish().map_err(|e| collect_error(&e))?;
    plan.index = summary;
    Ok((plan, into_file(file)?, members))
}

/// The listing `tree` (a temp file) from its start, read as it is planned.
fn listing(
    tree: &std::fs::File,
) -> Result<TreeListing<std::io::BufReader<&std::fs::File>>, BackupError> {
    use std::io::Seek as _;
    let mut reader = tree;
    reader
        .rewind()
        .map_err(|e| temp_file_failed("media listing", e))?;
    Ok(TreeListing::new(std::io::BufReader::with_capacity(
        64 << 10,
        tree,
    )))
}

/// A temp file of this process for the new index.
fn index_file() -> Result<std::io::BufWriter<tempfile::NamedTempFile>, BackupError> {
    let file = tempfile::NamedTempFile::new().map_err(|e| temp_file_failed("file index", e))?;
    Ok(std::io::BufWriter::with_capacity(64 << 10, file))
}

/// The new index's temp file, written.
fn into_file(
    out: std::io::BufWriter<tempfile::NamedTempFile>,
) -> Result<tempfile::NamedTempFile, BackupError> {
    out.into_inner()
        .map_err(|e| temp_file_failed("file index", e.into_error()))
}

/// The error of a temp file of this process (`what` it holds) that failed.
pub(crate) fn temp_file_failed(what: &str, e: std::io::Error) -> BackupError {
    BackupError::StageFailed {
        stage: Stage::Collect,
        exit_code: 0,
        stderr: format!(
            "the {what} could not be written to or read from a temp file in {}: {e}",
            std::env::temp_dir().display()
        ),
    }
}

/// Plans over `base`'s index, read a range at a time and checked as it is read (every
/// entry naming one of `packs`, its SHA-256 the one the base's inner manifest records),
/// and the listing `tree`: `Ok(Err(why))` when the index cannot be read or does not
/// check, so that nothing in it is referenced (the plan made so far is dropped).
///
/// # Errors
/// [`BackupError::StageFailed`] (collect) when the listing is malformed.
async fn plan_on<C: Container + ?Sized>(
    run: &Run<'_, C>,
    base: &Base,
    packs: Vec<BackupId>,
    tree: &std::fs::File,
    id: &BackupId,
) -> Result<Result<(IncrementalPlan, tempfile::NamedTempFile, Vec<u8>), String>, BackupError> {
    /// Which list a line's error comes from.
    enum Side {
        Base(IndexError),
        Tree(IndexError),
    }
    let mut reader = IndexReader::new(std::io::empty()).with_packs(packs);
    let mut index = IndexWriter::new(index_file()?);
    let mut members = Vec::new();
    let mut planner = Planner::new(listing(tree)?, id, &mut index, &mut members)
        .map_err(|e| collect_error(&e))?;
    let read = index_read::each_line(&run.client, &base.index_key, index_read::INDEX, |line| {
        let entry = reader.line(line).map_err(Side::Base)?;
        planner.base(entry).map_err(Side::Tree)
    })
    .await;
    let unreadable =
        |e: &dyn std::fmt::Display| Ok(Err(format!("its file index could not be read: {e}")));
    match read {
        Ok(()) => {}
        Err(IndexRead::Each(Side::Tree(e))) => return Err(collect_error(&e)),
        Err(IndexRead::Each(Side::Base(e)) | IndexRead::Object(e)) => return unreadable(&e),
        Err(IndexRead::S3(e)) => return unreadable(&e),
    }
    let summary = reader.finish();
    if summary.sha256 != base.chain.index_sha256 {
        let mismatch = IndexError::Mismatch {
            id: base.id.to_string(),
            expected: base.chain.index_sha256.clone(),
            actual: summary.sha256,
        };
        return Ok(Err(mismatch.to_string()));
    }
    let mut plan = planner.finish().map_err(|e| collect_error(&e))?;
    let (summary, file) = index.finish().map_err(|e| collect_error(&e))?;
    plan.index = summary;
    Ok(Ok((plan, into_file(file)?, members)))
}

/// The newest restorable backup and, when it is a complete one that checks, it as a
/// base. The base's check runs in a dir inside `work` (the create's own work dir), so
/// it can run beside `prepare.sh`.
///
/// # Errors
/// [`BackupError::S3`] when the bucket cannot be listed.
pub(crate) async fn find_base<C: Container + ?Sized>(
    run: &Run<'_, C>,
    work: &WorkDir,
) -> Result<FoundBase, BackupError> {
    let (state, base) = find_base_in(run, work).await?;
    Ok(FoundBase(state, base))
}

async fn find_base_in<C: Container + ?Sized>(
    run: &Run<'_, C>,
    work: &WorkDir,
) -> Result<(BaseState, Option<Base>), BackupError> {
    let backups = catalog::list_backups(&run.client).await?;
    let Some(newest) = backups
        .iter()
        .find(|b| matches!(b.status, BackupStatus::Complete | BackupStatus::Legacy))
    else {
        return Ok((BaseState::None, None));
    };
    if newest.status == BackupStatus::Legacy {
        return Ok((BaseState::Legacy(newest.id.clone()), None));
    }
    match load_base(run, newest, work).await {
        Ok(base) => Ok((
            BaseState::Usable {
                id: base.id.clone(),
                packs: base.chain.packs(),
            },
            Some(base),
        )),
        Err(reason) => {
            tracing::warn!(backup_id = %newest.id, reason, "the newest backup cannot be a base");
            Ok((
                BaseState::Unreadable {
                    id: newest.id.clone(),
                    reason,
                },
                None,
            ))
        }
    }
}

/// Reads and checks `info` as a base: its manifest and the inner manifest at the head
/// of its stream (decrypted with the passphrase, naming it, with the manifest's nonce).
/// Its index is checked against the SHA-256 and packs that inner manifest records as
/// the plan reads it ([`plan_on`]).
async fn load_base<C: Container + ?Sized>(
    run: &Run<'_, C>,
    info: &BackupInfo,
    work: &WorkDir,
) -> Result<Base, String> {
    let manifest = catalog::read_manifest_without_files(&run.client, &info.id)
        .await
        .map_err(|e| e.to_string())?;
    let Some(listed) = &manifest.chain else {
        return Err("it has no file index (a full backup made without --incremental)".into());
    };
    let base_in_key = match &listed.kind {
        BackupKind::Incremental { base } => Some(base),
        _ => None,
    };
    // Only the two names create writes: a manifest cannot send the read elsewhere.
    let suffix = index_suffix(base_in_key);
    if listed.index != suffix {
        return Err(format!(
            "its manifest names the index {:?}, not {suffix:?}",
            listed.index
        ));
    }
    let inner = super::passphrase::read_inner_within(run, &info.id, &info.key, work).await?;
    if manifest.nonce.as_deref() != Some(inner.nonce.as_str()) {
        return Err("its manifest does not belong to its data (the nonces differ)".into());
    }
    let chain = inner
        .chain
        .clone()
        .ok_or("its inner manifest records no file index")?;
    Ok(Base {
        id: info.id.clone(),
        inner,
        chain,
        manifest,
        index_key: format!("{}{suffix}", info.key),
    })
}

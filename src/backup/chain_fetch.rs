//! Reading a backup of a chain back, the I/O around [`chain_read`](super::chain_read):
//! its own inner manifest read ahead (the chain it records), its file index fetched
//! and checked, each older pack located and checked against the chain, then read
//! (listed or extracted) for exactly the members the index assigns to it, in the one
//! work dir the backup's own pack is read into last.

use crate::backup::aws_ranges;
use crate::backup::catalog::BackupStatus;
use crate::backup::chain_read::{
    IndexSplit, PackPart, check_database_listed, check_database_pack, check_database_record,
    check_older_manifest, check_older_pack, check_own_listing, check_partial_listing, check_record,
    in_pieces, stage_dirs,
};
use crate::backup::fetch::{Fetch, Fetched, fetch, locate_compact};
use crate::backup::incremental::{BackupKind, ChainLink, DATABASE_SUFFIX, PackChain};
use crate::backup::index_read::{self, IndexRead};
use crate::backup::listing::Members;
use crate::backup::manifest::{DatabasePack, InnerManifest, ManifestFiles};
use crate::backup::plan::{BackupId, ScriptCall, WorkDir};
use crate::backup::progress::ProgressStage;
use crate::backup::restore::RestoreOptions;
use crate::backup::restore_plan::{self, Part, inner_position};
use crate::backup::run::Run;
use crate::backup::scripts::WorkFile;
use crate::backup::transfer::Transfer;
use crate::backup::work::{self, WorkPlace};
use crate::container::Container;
use crate::error::{BackupError, IndexError, S3Error, Stage};
use futures_util::stream::{self, StreamExt};

/// Older packs read side by side, beside the backup's own: the chain's base (the
/// largest, read first) beside increments. Each read is a pipeline of its own
/// (download, checksum, gpg, tar) that alone leaves cores and the network idle (a full
/// restore keeps about half of two cores busy), so three in flight (two older packs
/// and the own one) overlap the increments' fixed costs (the aws CLI's start, gpg's
/// key derivation) and their databases with the base's transfer.
const PACKS_AT_ONCE: usize = 2;

/// An incremental backup's data that records no chain.
const NO_OLDER_PACKS: &str =
    "its manifest says it is incremental, but its data records no older packs";

/// Older packs located at once (a few small requests each).
const LOCATE_AT_ONCE: usize = 8;

/// A backup of a chain, planned: what each pack gives, the older packs located and
/// checked against the chain, and the inner manifest its own pack starts with.
pub(crate) struct Chain {
    /// The packs, the older ones in chain order, the backup's own last.
    parts: Vec<PackPart>,
    /// The older packs as found in the bucket (in the order of `parts`).
    older: Vec<Fetched>,
    /// The backup's own inner manifest, as read ahead (checked again when its pack is
    /// read whole).
    inner: InnerManifest,
    /// Its database pack, located and checked against its manifest's record.
    database: Option<Fetched>,
}

/// How an older pack is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// Listed (verify).
    List,
    /// Extracted into the work dir's stage (restore, extract).
    Extract,
}

impl Read {
    /// The progress stage a read of this kind reports.
    fn progress(self) -> ProgressStage {
        match self {
            Read::List => ProgressStage::Verify,
            Read::Extract => ProgressStage::Restore,
        }
    }
}

/// Backup `id` is corrupted: `reason`.
fn corrupted(id: &BackupId, reason: impl Into<String>) -> BackupError {
    BackupError::Corrupted {
        id: id.to_string(),
        reason: reason.into(),
    }
}

/// Plans the read of backup `id` (found as `fetched`) when its manifest says it is an
/// incremental one: `None` for any other backup, which is read as a whole (and
/// refused there if its data says it is a pack of a chain after all).
///
/// # Errors
/// [`BackupError::Corrupted`] naming what is missing, damaged, spliced or
/// substituted (the backup's index, or one of its older packs by id);
/// [`BackupError::S3`] when the bucket cannot be read.
pub(crate) async fn plan<C: Container + ?Sized>(
    run: &Run<'_, C>,
    id: &BackupId,
    fetched: &mut Fetched,
) -> Result<Option<Chain>, BackupError> {
    let Some(manifest) = &fetched.manifest else {
        return Ok(None);
    };
    let Some(record) = manifest
        .chain
        .as_ref()
        .filter(|c| matches!(c.kind, BackupKind::Incremental { .. }))
    else {
        return Ok(None);
    };
    // The chain as the passphrase vouches for it, before anything else is read.
    let inner = super::passphrase::read_inner(run, id, &fetched.key)
        .await
        .map_err(|why| corrupted(id, format!("its inner manifest: {why}")))?;
    if manifest.nonce.as_deref() != Some(inner.nonce.as_str()) {
        return Err(corrupted(
            id,
            "its manifest does not belong to its data (the nonces differ)",
        ));
    }
    let chain = inner
        .chain
        .clone()
        .filter(|c| c.base().is_some())
        .ok_or_else(|| corrupted(id, NO_OLDER_PACKS))?;
    let suffix = check_record(id, &chain, Some(record)).map_err(|why| corrupted(id, why))?;
    let (database, apart) = plan_database(run, id, fetched, &chain, record).await?;
    fetched.apart = apart;
    let index_key = format!("{}{suffix}", fetched.key);
    let parts = read_index(run, id, &chain, &index_key).await?;
    // Located side by side (a listing and a manifest each), checked in chain order.
    // Collected before any await, here and in the reads below: an iterator whose
    // closure borrows the parts, held across an await, keeps rustc from proving the
    // whole read `Send` (a caller could not `tokio::spawn` it).
    let linked: Vec<(&PackPart, &ChainLink)> = parts[..parts.len() - 1]
        .iter()
        .filter_map(|part| part.link.as_ref().map(|link| (part, link)))
        .collect();
    let lookups: Vec<_> = linked
        .iter()
        .map(|(part, _)| locate_compact(&run.client, &part.id))
        .collect();
    let located: Vec<_> = stream::iter(lookups)
        .buffered(LOCATE_AT_ONCE)
        .collect()
        .await;
    let mut older = Vec::new();
    for ((part, link), found) in linked.into_iter().zip(located) {
        let found = match found {
            Ok(found) => found,
            Err(BackupError::S3(e)) => return Err(BackupError::S3(e)),
            Err(e) => {
                return Err(corrupted(
                    id,
                    format!("the pack {} of its chain: {e}", part.id),
                ));
            }
        };
        check_older_manifest(link, found.manifest.as_ref())
            .map_err(|why| corrupted(id, format!("the pack {} of its chain: {why}", part.id)))?;
        older.push(found);
    }
    Ok(Some(Chain {
        parts,
        older,
        inner,
        database,
    }))
}

/// Reads the file index `index_key` of backup `id` (whose pack's inner manifest
/// records `chain`) a range at a time, split as it comes: only the member lists are
/// kept, and only once the whole checks.
///
/// # Errors
/// [`BackupError::Corrupted`] for a missing, damaged or swapped index;
/// [`BackupError::S3`] when the bucket cannot be read.
async fn read_index<C: Container + ?Sized>(
    run: &Run<'_, C>,
    id: &BackupId,
    chain: &PackChain,
    index_key: &str,
) -> Result<Vec<PackPart>, BackupError> {
    let mut split = IndexSplit::new(id, chain);
    let read = index_read::each_line(&run.client, index_key, index_read::INDEX, |line| {
        split.line(line)
    })
    .await;
    let damaged = |e: IndexError| corrupted(id, format!("its file index {index_key}: {e}"));
    match read {
        Ok(()) => split.finish().map_err(damaged),
        Err(IndexRead::S3(S3Error::NotFound { .. })) => Err(corrupted(
            id,
            format!("its file index {index_key} is missing"),
        )),
        Err(IndexRead::S3(e)) => Err(e.into()),
        Err(IndexRead::Object(e) | IndexRead::Each(e)) => Err(damaged(e)),
    }
}

/// The database pack of backup `id` (found as `fetched`, its inner manifest recording
/// `chain`, its manifest `record`): none when neither records one; else its manifest
/// must list its members as files, and it is located ([`locate_database`]). Gives it
/// and its members, sorted: the own pack's listing is checked against the manifest
/// without them ([`Fetched::apart`]).
async fn plan_database<C: Container + ?Sized>(
    run: &Run<'_, C>,
    id: &BackupId,
    fetched: &Fetched,
    chain: &crate::backup::incremental::PackChain,
    record: &crate::backup::manifest::ManifestChain,
) -> Result<(Option<Fetched>, Vec<Vec<u8>>), BackupError> {
    let Some(pack) = check_database_record(chain, record).map_err(|why| corrupted(id, why))? else {
        return Ok((None, Vec::new()));
    };
    let listed: Vec<_> = fetched.entries().collect();
    check_database_listed(
        &chain.database,
        listed.iter().map(|(p, kind, _)| (p.as_ref(), *kind)),
    )
    .map_err(|why| corrupted(id, why))?;
    drop(listed);
    let found = locate_database(run, id, fetched, pack).await?;
    let mut apart: Vec<Vec<u8>> = chain
        .database
        .iter()
        .map(|m| m.as_bytes().to_vec())
        .collect();
    apart.sort();
    Ok((Some(found), apart))
}

/// Finds backup `id`'s database pack beside its own pack (`fetched`) and checks its
/// size against `pack`, the manifest's record: a [`Fetched`] for it, with a manifest
/// that is its backup's with the pack's size and SHA-256 (what its read is checked
/// against).
async fn locate_database<C: Container + ?Sized>(
    run: &Run<'_, C>,
    id: &BackupId,
    fetched: &Fetched,
    pack: &DatabasePack,
) -> Result<Fetched, BackupError> {
    let key = format!("{}{DATABASE_SUFFIX}", fetched.key);
    let head = match run.client.head_object(&key).await {
        Ok(head) => head,
        Err(S3Error::NotFound { .. }) => {
            return Err(corrupted(id, format!("its database pack {key} is missing")));
        }
        Err(e) => return Err(e.into()),
    };
    if head.size != pack.ciphertext_bytes {
        return Err(corrupted(
            id,
            format!(
                "its database pack {key} is {} bytes but its manifest says {} (truncated or replaced)",
                head.size, pack.ciphertext_bytes
            ),
        ));
    }
    let manifest = fetched
        .manifest
        .as_ref()
        .map(|m| crate::backup::manifest::Manifest {
            files: Vec::new(),
            ciphertext_bytes: pack.ciphertext_bytes,
            ciphertext_sha256: pack.ciphertext_sha256.clone(),
            ..m.clone()
        });
    Ok(Fetched {
        status: BackupStatus::Complete,
        manifest,
        files: ManifestFiles::default(),
        key,
        size: head.size,
        warnings: Vec::new(),
        apart: Vec::new(),
    })
}

/// Runs `reads` up to `at_once` side by side, the next one starting as soon as any
/// one ends, so that a large read (the chain's base) does not hold back the small ones
/// queued behind it; gives every result, in the order of `reads`.
async fn side_by_side<T>(reads: Vec<impl Future<Output = T>>, at_once: usize) -> Vec<T> {
    let numbered: Vec<_> = reads
        .into_iter()
        .enumerate()
        .map(|(i, read)| async move { (i, read.await) })
        .collect();
    let mut done: Vec<(usize, T)> = stream::iter(numbered)
        .buffer_unordered(at_once)
        .collect()
        .await;
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, result)| result).collect()
}

impl Chain {
    /// Probes the server for the chain's downloads in the workload, before any of them
    /// starts, on the smallest object of the chain large enough to tell
    /// ([`aws_ranges::probe_target`]: often the database pack, not the base): a server
    /// that reads the whole object for a range (moto) then reads a tenth of the bytes
    /// it would for the base, and not while the packs download. Nothing when no pack
    /// of the chain is downloaded in the workload with its ranges left to the probe, or
    /// none is large enough (each download then probes its own object).
    async fn probe_ahead<C: Container + ?Sized>(
        &self,
        run: &Run<'_, C>,
        options: &RestoreOptions,
        own: &Fetched,
    ) {
        let objects = || {
            std::iter::once(own)
                .chain(&self.older)
                .chain(&self.database)
        };
        let probed = |f: &Fetched| {
            f.size > aws_ranges::PROBED_ABOVE
                && options.probes(options.pack_transfer(run.transfer, f.size))
        };
        if !objects().any(probed) {
            return;
        }
        let target = aws_ranges::probe_target(objects().map(|f| (f.key.as_str(), f.size)));
        if let Some((key, size)) = target {
            run.probed(key, size).await;
        }
    }

    /// How many older packs a read fetches (those the index assigns files to).
    pub(crate) fn older_read(&self) -> usize {
        self.parts[..self.parts.len() - 1]
            .iter()
            .filter(|p| p.usage.files > 0)
            .count()
    }

    /// Reads every older pack the index assigns files to (others give nothing), up to
    /// [`PACKS_AT_ONCE`] side by side, each in a work dir of its own inside `work`
    /// (`how`: listed, or extracted into `work`'s stage, which they share): each
    /// checked against its manifest and the chain (object SHA-256, id and nonce), with
    /// gpg's status, its inner manifest and a listing of exactly its files. Gives their
    /// members (without their inner manifests), in chain order. Every read runs to its
    /// end before an error is told (the first in chain order), so that none is left
    /// running in the work dir.
    ///
    /// # Errors
    /// [`BackupError::Corrupted`] naming the pack and what is wrong with it, or the
    /// fetch's error.
    pub(crate) async fn read_older<C: Container + ?Sized>(
        &self,
        run: &Run<'_, C>,
        work: &WorkDir,
        id: &BackupId,
        options: &RestoreOptions,
        how: Read,
    ) -> Result<Members, BackupError> {
        let reads: Vec<_> = self
            .parts
            .iter()
            .zip(&self.older)
            .filter(|(part, _)| part.usage.files > 0)
            .filter_map(|(part, found)| {
                let link = part.link.as_ref()?;
                let pack = Pack { part, link, found };
                Some(pack.read(run, work, id, options, how))
            })
            .collect();
        let results = side_by_side(reads, PACKS_AT_ONCE).await;
        // Each pack's list is moved in, not copied.
        let mut members = Members::default();
        for result in results {
            members.append(result?);
        }
        Ok(members)
    }

    /// Checks the backup's own pack, read whole as `got`, against the chain: the inner
    /// manifest read ahead, the files its index assigns to it and to the older packs;
    /// then gives the whole backup's read: its members followed by the older packs'
    /// `older` members.
    ///
    /// # Errors
    /// [`BackupError::Corrupted`].
    pub(crate) fn join(
        &self,
        id: &BackupId,
        mut got: Fetch,
        older: Members,
        database: Members,
    ) -> Result<Fetch, BackupError> {
        if got.inner.as_ref() != Some(&self.inner) {
            return Err(corrupted(
                id,
                "its pack is not the one its chain was read from (it changed while it was read)",
            ));
        }
        check_own_listing(&self.parts, got.listing.iter()).map_err(|why| corrupted(id, why))?;
        // Moved in, not copied: no second listing is held beside the first.
        got.listing.append(database);
        got.listing.append(older);
        Ok(got)
    }

    /// Reads the backup's database pack (when it has one) whole, in a work dir of its
    /// own inside `work`: listed, its database staged in `work`'s stage for verify's
    /// check (`verify_db`: the environment the own pack's call carried for it), or
    /// extracted into `work`'s stage. Checked with the rules of any pack (SHA-256 and
    /// size against the manifest, gpg's status, its inner manifest's id and nonce) and
    /// [`check_database_pack`]. Gives its members without its inner manifest.
    ///
    /// # Errors
    /// [`BackupError::Corrupted`] naming the database pack, or the fetch's error.
    async fn read_database<C: Container + ?Sized>(
        &self,
        run: &Run<'_, C>,
        work: &WorkDir,
        id: &BackupId,
        options: &RestoreOptions,
        how: Read,
        verify_db: Vec<(String, String)>,
    ) -> Result<Members, BackupError> {
        let Some(found) = &self.database else {
            return Ok(Members::default());
        };
        let transfer = options.pack_transfer(run.transfer, found.size);
        let settings = run
            .download_settings(options, &found.key, found.size, transfer)
            .await;
        let guard = run
            .work_dir_for(WorkPlace::Under(&work.dir), "database", &settings, transfer)
            .await?;
        let own = guard.dir();
        let stage = format!("{}/stage", work.dir);
        let mut call = match how {
            Read::List => {
                let mut call = restore_plan::list_call(
                    run.layout,
                    run.params,
                    own,
                    &found.key,
                    found.compression(),
                );
                call.env.extend(verify_db);
                call
            }
            Read::Extract => {
                let need = found.size.saturating_add(found.size / 8);
                let mut call = restore_plan::extract_call(
                    run.layout,
                    run.params,
                    own,
                    &found.key,
                    found.compression(),
                    need,
                );
                call.env.insert("SB_STAGE_SHARED".into(), "1".into());
                call.env.insert("SB_PACK_TAG".into(), "database".into());
                call
            }
        };
        call.env.insert("SB_STAGE".into(), stage);
        let got = fetch(
            run,
            own,
            &call,
            id,
            found,
            options,
            how.progress(),
            Part::Older,
            transfer,
        )
        .await;
        guard.finish().await;
        let named = |why: String| corrupted(id, format!("its database pack {}: {why}", found.key));
        let got = got.map_err(|e| match e {
            BackupError::Corrupted { reason, .. } => named(reason),
            other => other,
        })?;
        check_database_pack(&self.inner, got.inner.as_ref(), got.listing.iter()).map_err(named)?;
        // Its inner manifest (checked first) dropped in place.
        let mut members = got.listing;
        let mut first = true;
        members.retain(|_| !std::mem::replace(&mut first, false));
        members.shrink_to_fit();
        Ok(members)
    }
}

/// A backup to read: its id, where it was found and, for a backup of a chain, its
/// chain ([`plan`]).
pub(crate) struct Backup<'a> {
    /// The backup.
    pub(crate) id: &'a BackupId,
    /// Its data object and manifest.
    pub(crate) fetched: &'a Fetched,
    /// Its chain, when it is incremental.
    pub(crate) chain: Option<&'a Chain>,
}

impl Backup<'_> {
    /// The aws CLI settings of the run's own work dir: those its own data object's
    /// download in the workload needs ([`RestoreOptions::download_settings_for`]; a pack
    /// of a chain small enough for the library gets none, nor does a run with
    /// [`Transfer::Library`]).
    pub(crate) async fn download_settings<C: Container + ?Sized>(
        &self,
        run: &Run<'_, C>,
        options: &RestoreOptions,
    ) -> crate::backup::plan::BackupOptions {
        let transfer = match self.chain {
            Some(chain) => {
                chain.probe_ahead(run, options, self.fetched).await;
                options.pack_transfer(run.transfer, self.fetched.size)
            }
            None => run.transfer,
        };
        run.download_settings(options, &self.fetched.key, self.fetched.size, transfer)
            .await
    }

    /// Reads the backup into the work dir `work` (`how`: listed or extracted), `call`
    /// being the fetch of its own data object: a whole backup is read with today's
    /// checks (a pack of a chain refused); a backup of a chain reads every older pack it
    /// needs ([`Chain::read_older`], side by side), its own pack and its database
    /// pack, all side by side (extracted, into the stage they share, whose directories
    /// are made first: [`stage_dirs`]), then walks the stage once; its own pack is
    /// checked with the same rules and against the chain ([`Chain::join`]). An older
    /// pack's error is told before the own pack's.
    ///
    /// # Errors
    /// The fetch's errors; [`BackupError::Corrupted`] naming a pack that does not
    /// check.
    pub(crate) async fn read<C: Container + ?Sized>(
        &self,
        run: &Run<'_, C>,
        work: &WorkDir,
        mut call: ScriptCall,
        options: &RestoreOptions,
        how: Read,
    ) -> Result<Fetch, BackupError> {
        let stage = how.progress();
        let Some(chain) = self.chain else {
            return fetch(
                run,
                work,
                &call,
                self.id,
                self.fetched,
                options,
                stage,
                Part::Whole,
                run.transfer,
            )
            .await;
        };
        if how == Read::Extract {
            call.env.insert("SB_STAGE_SHARED".into(), "1".into());
            call.env.insert("SB_NO_WALK".into(), "1".into());
        }
        // Verify's database check stages the database from the pack that holds it.
        let verify_db: Vec<(String, String)> = if chain.database.is_some() {
            ["SB_VERIFY_DB", "SB_NEED_BYTES", "SB_SPACE_DIR"]
                .into_iter()
                .filter(|_| how == Read::List)
                .filter_map(|k| call.env.remove(k).map(|v| (k.to_string(), v)))
                .collect()
        } else {
            Vec::new()
        };
        let database = chain.read_database(run, work, self.id, options, how, verify_db);
        let own = fetch(
            run,
            work,
            &call,
            self.id,
            self.fetched,
            options,
            stage,
            Part::Own,
            options.pack_transfer(run.transfer, self.fetched.size),
        );
        let older = chain.read_older(run, work, self.id, options, how);
        if how == Read::Extract {
            // Every directory the packs write into is made first: the packs then share
            // the stage side by side with no two making the same directory at once.
            let database = chain.inner.chain.as_ref().map_or(&[][..], |c| &c.database);
            let dirs = stage_dirs(&chain.parts, database);
            work::write_file(run.container, run.layout, work, WorkFile::StageDirs, dirs).await?;
            stage_step(run, work, &call, options, "dirs").await?;
        }
        let (older, got, database) = tokio::join!(older, own, database);
        let (older, got, database) = (older?, got?, database?);
        if how == Read::Extract {
            stage_step(run, work, &call, options, "walk").await?;
        }
        chain.join(self.id, got, older, database)
    }
}

/// Runs `fetch.sh` in `work`'s stage with `SB_MODE=mode` (`call` being a fetch into
/// it), downloading nothing: `dirs` makes the stage and the directories listed in
/// [`WorkFile::StageDirs`] before the packs are read; `walk`, once every pack is in it,
/// writes the staged records restore checks and strips the set-id, sticky and
/// world-writable bits.
async fn stage_step<C: Container + ?Sized>(
    run: &Run<'_, C>,
    work: &WorkDir,
    call: &ScriptCall,
    options: &RestoreOptions,
    mode: &str,
) -> Result<(), BackupError> {
    // Nothing of the bucket's: no download, whatever the transfer.
    let mut step = restore_plan::streamed_input(call);
    step.env.remove("SB_INPUT");
    step.env.insert("SB_MODE".into(), mode.into());
    let mut exec = work::exec_options(run.layout, &step, work, options.timeout);
    options.priority.apply(&mut exec.environment);
    run.container
        .exec(&step.argv, exec)
        .await
        .map(drop)
        .map_err(|e| work::stage_error(Stage::Extract, e))
}

/// The size of each piece in which an older pack's member list is written to its work
/// dir (one exec each): 1 MiB, so a pack of 100,000 files (a list of about 6 MB) is
/// never held whole beside the chain's index and the listings.
const MEMBER_LIST_PIECE: usize = 1 << 20;

/// An older pack of a chain to read: what its backup's index assigns to it, its link
/// in the chain, and where it was found.
struct Pack<'c> {
    part: &'c PackPart,
    link: &'c ChainLink,
    found: &'c Fetched,
}

impl Pack<'_> {
    /// Reads the pack in a work dir of its own inside `work` (removed afterwards on
    /// every path), extracting into `work`'s stage or listing it, and checks it: gives
    /// its members without its inner manifest.
    async fn read<C: Container + ?Sized>(
        self,
        run: &Run<'_, C>,
        work: &WorkDir,
        id: &BackupId,
        options: &RestoreOptions,
        how: Read,
    ) -> Result<Members, BackupError> {
        let transfer = options.pack_transfer(run.transfer, self.found.size);
        let settings = run
            .download_settings(options, &self.found.key, self.found.size, transfer)
            .await;
        let guard = run
            .work_dir_for(WorkPlace::Under(&work.dir), "pack", &settings, transfer)
            .await?;
        let got = self
            .read_in(run, (guard.dir(), transfer), work, id, options, how)
            .await;
        guard.finish().await;
        got
    }

    async fn read_in<C: Container + ?Sized>(
        &self,
        run: &Run<'_, C>,
        (own, transfer): (&WorkDir, Transfer),
        work: &WorkDir,
        id: &BackupId,
        options: &RestoreOptions,
        how: Read,
    ) -> Result<Members, BackupError> {
        let (part, link, found) = (self.part, self.link, self.found);
        let list = part.tar_list(MEMBER_LIST_PIECE);
        work::write_file_pieces(run.container, run.layout, own, WorkFile::PackMembers, list)
            .await?;
        // What tar skips, and (summed as the list is written, in the one pass) the
        // bytes it then does not write.
        let mut skipped = 0_u64;
        if how == Read::Extract {
            let names = part.unwanted_files(found.entries()).map(|(path, size)| {
                skipped = skipped.saturating_add(size);
                path.into_owned()
            });
            let list = in_pieces(names, b'\n', MEMBER_LIST_PIECE);
            work::write_file_pieces(run.container, run.layout, own, WorkFile::PackExclude, list)
                .await?;
        }
        let call = self.call(run, (own, work), how, skipped);
        let stage = how.progress();
        let got = fetch(
            run,
            own,
            &call,
            &part.id,
            found,
            options,
            stage,
            Part::Older,
            transfer,
        )
        .await
        .map_err(|e| in_chain(id, &part.id, e))?;
        let named =
            |why: String| corrupted(id, format!("the pack {} of its chain: {why}", part.id));
        check_older_pack(link, &got.sha256, got.inner.as_ref()).map_err(named)?;
        let files = found.entries().map(|(path, kind, _)| (path, kind));
        let wanted = check_partial_listing(part, got.listing.iter(), files).map_err(named)?;
        // The pack was read whole: only the files its backup's index assigns to it
        // were staged, and only they are kept (in place, the listing never copied).
        let skip = inner_position(got.listing.iter()).map_or(0, |p| p + 1);
        let mut members = got.listing;
        let mut at = 0;
        members.retain(|member| {
            at += 1;
            at > skip && wanted.contains(&member.name)
        });
        members.shrink_to_fit();
        Ok(members)
    }

    /// The pack's fetch call in its own work dir `own`: listed, or extracted there and
    /// its files moved into the stage of the backup's work dir `work` (tar skipping
    /// `skipped` bytes of files it lists in [`WorkFile::PackExclude`]).
    fn call<C: Container + ?Sized>(
        &self,
        run: &Run<'_, C>,
        (own, work): (&WorkDir, &WorkDir),
        how: Read,
        skipped: u64,
    ) -> ScriptCall {
        let (part, key) = (self.part, &self.found.key);
        let compression = self.found.compression();
        let mut call = match how {
            Read::List => restore_plan::list_call(run.layout, run.params, own, key, compression),
            Read::Extract => {
                // The pack is extracted, but for the files tar skips, before its files
                // are picked.
                let whole = self.found.manifest.as_ref().map_or(part.usage.bytes, |m| {
                    m.plaintext_bytes
                        .saturating_sub(skipped)
                        .max(part.usage.bytes)
                });
                let need = whole.saturating_add(whole / 8);
                let mut call =
                    restore_plan::extract_call(run.layout, run.params, own, key, compression, need);
                call.env.insert("SB_STAGE_SHARED".into(), "1".into());
                call.env
                    .insert("SB_STAGE".into(), format!("{}/stage", work.dir));
                call
            }
        };
        call.env.insert("SB_PACK_MEMBERS".into(), "1".into());
        call
    }
}

/// An older pack's read error, told as the backup's: a corrupted or incomplete pack
/// names the pack and the backup that needs it.
fn in_chain(id: &BackupId, pack: &BackupId, e: BackupError) -> BackupError {
    match e {
        BackupError::Corrupted { reason, .. } => {
            corrupted(id, format!("the pack {pack} of its chain: {reason}"))
        }
        BackupError::StageFailed {
            stage: Stage::Extract,
            stderr,
            ..
        } if stderr.contains("Not found in archive") => corrupted(
            id,
            format!(
                "the pack {pack} of its chain lacks files its index assigns to it: {}",
                stderr.lines().next().unwrap_or_default()
            ),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::side_by_side;
    use std::future::Future;
    use std::pin::Pin;
    use std::time::Duration;

    /// The first read ends only once the last one has run: a stream that starts a read
    /// only when the oldest one in flight ends (`buffered`) never gets there.
    #[tokio::test]
    async fn a_long_read_does_not_hold_back_the_reads_queued_behind_it() {
        let (last_ran, wait) = tokio::sync::oneshot::channel::<()>();
        let mut reads: Vec<Pin<Box<dyn Future<Output = usize>>>> = vec![Box::pin(async move {
            wait.await.expect("the last read runs");
            0
        })];
        reads.extend(
            (1_usize..4)
                .map(|i| Box::pin(async move { i }) as Pin<Box<dyn Future<Output = usize>>>),
        );
        reads.push(Box::pin(async move {
            last_ran.send(()).expect("the first read waits");
            4
        }));
        let got = tokio::time::timeout(Duration::from_secs(10), side_by_side(reads, 2))
            .await
            .expect("the reads behind the long one ran beside it");
        assert_eq!(got, [0, 1, 2, 3, 4], "the results in the reads' order");
    }
}

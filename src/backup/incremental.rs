//! Incremental backups, the pure part (no I/O): the file index of a tree, the chain
//! of packs a backup needs, the plan of an incremental create and the rule that forces
//! a full backup.
//!
//! A backup is one or more **packs**: a pack is what a full backup is (one
//! gpg-encrypted tar stream, its inner manifest first). An incremental backup's pack
//! holds the keys, the database snapshot and only the media files no pack of its chain
//! holds with the same path, size and modification time; its **file index** names, for
//! every media file of the tree, the pack that holds its bytes. The index is NDJSON
//! (one [`IndexEntry`] a line, paths in byte order, each once), so it is written, read
//! and compared in one pass without being held whole. Its SHA-256 and the
//! [`PackChain`] (each older pack as id, nonce and object SHA-256) are in the pack's
//! inner manifest, authenticated by the passphrase.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use derive_setters::Setters;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::backup::manifest::ManifestPath;
use crate::backup::plan::BackupId;
use crate::error::IndexError;

const INDEX: &str = "file index";
const TREE: &str = "tree listing";

/// The default [`ChainPolicy::full_every`]: a full backup at least every 14 backups.
/// Two weeks of nightly backups: restore reads at most 14 packs (one request and one
/// gpg stream each, a few seconds of overhead in all), and a chain's base is replaced
/// (so purged media leave the bucket) within two weeks plus the retention.
pub const DEFAULT_FULL_EVERY: u32 = 14;

/// The default [`ChainPolicy::max_superseded_percent`]: a full backup once 30 % of the
/// bytes the chain's packs hold are no longer in the tree (deleted or changed media).
/// Below that, what a chain keeps alive beyond the live media stays under ~1.4× the
/// store; above it, a full backup (which costs the whole store once) is cheaper than
/// keeping the dead bytes.
pub const DEFAULT_MAX_SUPERSEDED_PERCENT: u8 = 30;

/// When an incremental create makes a full backup anyway.
#[derive(Debug, Clone, PartialEq, Eq, Setters)]
#[non_exhaustive]
#[setters(prefix = "", generate = true)]
pub struct ChainPolicy {
    /// A chain holds at most this many packs (its full base included): the backup that
    /// would be the next one is full. 1 makes every backup full.
    pub full_every: u32,
    /// A backup is full when more than this share (percent) of the bytes the chain's
    /// packs hold would no longer be referenced by its index.
    pub max_superseded_percent: u8,
}

impl Default for ChainPolicy {
    fn default() -> Self {
        ChainPolicy {
            full_every: DEFAULT_FULL_EVERY,
            max_superseded_percent: DEFAULT_MAX_SUPERSEDED_PERCENT,
        }
    }
}

/// One file of a tree as the index records it: its path (the archive member name), size,
/// modification time and the pack (backup id) whose archive holds its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexEntry {
    /// The member name (relative, as in the archive).
    pub path: ManifestPath,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// The backup whose pack holds the bytes.
    pub pack: BackupId,
}

/// One regular file of the live tree, from the tree listing (see [`TreeListing`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    /// The member name (relative to the root, as in the archive).
    pub path: ManifestPath,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
}

/// A pack a backup needs, as its inner manifest records it: enough to tell the very
/// object apart from any other (a pack of another backup, an older upload under the
/// same key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainLink {
    /// The pack's backup id.
    pub id: BackupId,
    /// Its inner manifest's nonce.
    pub nonce: String,
    /// SHA-256 of its encrypted object, lower-case hex.
    pub object_sha256: String,
    /// The bytes of indexed files it holds (its own media), for the superseded share.
    pub bytes: u64,
}

/// What an incremental backup's inner manifest adds: the SHA-256 of its full file
/// index and the older packs it needs, base first (its own pack is the stream itself).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackChain {
    /// SHA-256 of the file index object, lower-case hex.
    pub index_sha256: String,
    /// The older packs, the full backup first, the newest (the base) last.
    pub links: Vec<ChainLink>,
    /// The bytes of indexed files this pack holds itself.
    pub own_bytes: u64,
    /// The members of the backup's database pack (`<key>.database`, beside its own
    /// pack: the database snapshot and the files archived from the snapshot dir), which
    /// its own pack does not hold. Empty for a full backup, whose one pack holds them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub database: Vec<String>,
}

impl PackChain {
    /// The base: the newest older pack, `None` for a full backup.
    pub fn base(&self) -> Option<&ChainLink> {
        self.links.last()
    }

    /// How many packs a restore reads (the older ones and this one).
    pub fn packs(&self) -> usize {
        self.links.len() + 1
    }

    /// The chain of a backup made on top of this one (`id`, `nonce`, `object_sha256`
    /// being this backup's), before its index is known.
    pub fn extend(&self, id: &BackupId, nonce: &str, object_sha256: &str) -> Vec<ChainLink> {
        let mut links = self.links.clone();
        links.push(ChainLink {
            id: id.clone(),
            nonce: nonce.into(),
            object_sha256: object_sha256.into(),
            bytes: self.own_bytes,
        });
        links
    }
}

/// Lower-case hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn lossy(path: &ManifestPath) -> String {
    String::from_utf8_lossy(path.as_bytes()).into_owned()
}

/// Checks that each path sorts strictly after the one before (byte order).
#[derive(Default)]
struct Order {
    previous: Option<ManifestPath>,
    line: u64,
}

impl Order {
    fn next(&mut self, what: &'static str, path: &ManifestPath) -> Result<u64, IndexError> {
        self.line += 1;
        if let Some(previous) = &self.previous
            && previous.as_bytes() >= path.as_bytes()
        {
            return Err(IndexError::Unsorted {
                what,
                line: self.line,
                path: lossy(path),
                previous: lossy(previous),
            });
        }
        self.previous = Some(path.clone());
        Ok(self.line)
    }
}

/// Files and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Usage {
    /// How many files.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl Usage {
    fn add(&mut self, bytes: u64) {
        self.files += 1;
        self.bytes += bytes;
    }
}

/// What an index holds, once written or read whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct IndexSummary {
    /// SHA-256 of the index's bytes, lower-case hex.
    pub sha256: String,
    /// Every file of the index.
    pub total: Usage,
    /// The files and bytes each pack holds of it.
    pub packs: BTreeMap<BackupId, Usage>,
}

/// Writes an index one entry at a time (NDJSON), checking the order and hashing as it
/// goes.
pub struct IndexWriter<W: Write> {
    out: W,
    hash: Sha256,
    order: Order,
    summary: IndexSummary,
}

impl<W: Write> IndexWriter<W> {
    /// An empty index written to `out`.
    pub fn new(out: W) -> Self {
        IndexWriter {
            out,
            hash: Sha256::new(),
            order: Order::default(),
            summary: IndexSummary::default(),
        }
    }

    /// Appends one entry.
    ///
    /// # Errors
    /// [`IndexError::Unsorted`] when its path does not sort after the last one,
    /// [`IndexError::Io`] when writing fails.
    pub fn push(&mut self, entry: &IndexEntry) -> Result<(), IndexError> {
        self.order.next(INDEX, &entry.path)?;
        // An entry always serialises.
        let mut line = serde_json::to_vec(entry).unwrap_or_default();
        line.push(b'\n');
        self.hash.update(&line);
        self.out.write_all(&line).map_err(|source| IndexError::Io {
            action: "write",
            what: INDEX,
            source,
        })?;
        self.summary.total.add(entry.size);
        self.summary
            .packs
            .entry(entry.pack.clone())
            .or_default()
            .add(entry.size);
        Ok(())
    }

    /// Flushes the output; returns what was written and the output.
    ///
    /// # Errors
    /// [`IndexError::Io`] when flushing fails.
    pub fn finish(mut self) -> Result<(IndexSummary, W), IndexError> {
        self.out.flush().map_err(|source| IndexError::Io {
            action: "write",
            what: INDEX,
            source,
        })?;
        self.summary.sha256 = hex(&self.hash.finalize());
        Ok((self.summary, self.out))
    }
}

/// Reads an index one entry at a time (an iterator), checking each line's form, the
/// order and (when given) that every pack is in the chain, hashing as it goes.
pub struct IndexReader<R: BufRead> {
    input: R,
    hash: Sha256,
    order: Order,
    packs: Option<Vec<BackupId>>,
    summary: IndexSummary,
    failed: bool,
}

impl<R: BufRead> IndexReader<R> {
    /// Reads `input`.
    pub fn new(input: R) -> Self {
        IndexReader {
            input,
            hash: Sha256::new(),
            order: Order::default(),
            packs: None,
            summary: IndexSummary::default(),
            failed: false,
        }
    }

    /// Refuses entries naming a pack not in `packs` (the chain, and the backup itself).
    #[must_use]
    pub fn with_packs(mut self, packs: Vec<BackupId>) -> Self {
        self.packs = Some(packs);
        self
    }

    /// Reads the rest and returns what the index holds, its SHA-256 included.
    ///
    /// # Errors
    /// The first error of any line.
    pub fn summarise(mut self) -> Result<IndexSummary, IndexError> {
        for entry in self.by_ref() {
            entry?;
        }
        Ok(self.finish())
    }

    /// Reads the rest and checks the SHA-256 against `expected` (from the inner
    /// manifest of `id`'s pack).
    ///
    /// # Errors
    /// As [`IndexReader::summarise`], and [`IndexError::Mismatch`].
    pub fn verify(self, id: &BackupId, expected: &str) -> Result<IndexSummary, IndexError> {
        let summary = self.summarise()?;
        if summary.sha256 != expected {
            return Err(IndexError::Mismatch {
                id: id.to_string(),
                expected: expected.into(),
                actual: summary.sha256,
            });
        }
        Ok(summary)
    }

    /// What was read so far (the SHA-256 of the bytes read).
    pub fn finish(self) -> IndexSummary {
        IndexSummary {
            sha256: hex(&self.hash.finalize()),
            ..self.summary
        }
    }

    /// One line of the index (its newline included; the last one may lack it) read by
    /// the caller (a reader of ranged GETs): hashed, checked and counted as
    /// [`Iterator::next`] does with a line of its input. After an error, nothing more
    /// should be given.
    ///
    /// # Errors
    /// The line's error.
    pub(crate) fn line(&mut self, line: &[u8]) -> Result<IndexEntry, IndexError> {
        self.hash.update(line);
        let result = self.parse(line);
        match &result {
            Ok(entry) => {
                self.summary.total.add(entry.size);
                self.summary
                    .packs
                    .entry(entry.pack.clone())
                    .or_default()
                    .add(entry.size);
            }
            Err(_) => self.failed = true,
        }
        result
    }

    fn parse(&mut self, line: &[u8]) -> Result<IndexEntry, IndexError> {
        let number = self.order.line + 1;
        let malformed = |message: String| IndexError::Malformed {
            what: INDEX,
            line: number,
            message,
        };
        let body = line
            .strip_suffix(b"\n")
            .ok_or_else(|| malformed("the last line has no newline (a cut index)".into()))?;
        let mut de = serde_json::Deserializer::from_slice(body);
        let entry: IndexEntry = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            match e.path().to_string().as_str() {
                "." => malformed(e.into_inner().to_string()),
                path => malformed(format!("{path}: {}", e.into_inner())),
            }
        })?;
        de.end().map_err(|e| malformed(e.to_string()))?;
        self.order.next(INDEX, &entry.path)?;
        if let Some(packs) = &self.packs
            && !packs.contains(&entry.pack)
        {
            return Err(IndexError::UnknownPack {
                line: number,
                path: lossy(&entry.path),
                pack: entry.pack.to_string(),
                chain: packs
                    .iter()
                    .map(BackupId::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(entry)
    }
}

impl<R: BufRead> Iterator for IndexReader<R> {
    type Item = Result<IndexEntry, IndexError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let mut line = Vec::new();
        match self.input.read_until(b'\n', &mut line) {
            Ok(0) => None,
            Ok(_) => Some(self.line(&line)),
            Err(source) => {
                self.failed = true;
                Some(Err(IndexError::Io {
                    action: "read",
                    what: INDEX,
                    source,
                }))
            }
        }
    }
}

/// Parses `find`'s `%T@` (seconds, a dot and up to 10 fractional digits) into
/// nanoseconds.
fn parse_mtime(text: &str) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (secs, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let nanos: i64 = format!("{:0<9}", &frac[..frac.len().min(9)]).parse().ok()?;
    let total = secs.checked_mul(1_000_000_000)?.checked_add(nanos)?;
    Some(if negative { -total } else { total })
}

/// Reads the live tree's regular files from a listing of NUL-terminated records
/// `SIZE MTIME PATH` (what `find … -type f -printf '%s %T@ %P\0'` prints, prefixed
/// sorted by path with `LC_ALL=C sort -z -t ' ' -k 3`), one at a time.
pub struct TreeListing<R: BufRead> {
    input: R,
    order: Order,
    failed: bool,
}

impl<R: BufRead> TreeListing<R> {
    /// Reads `input`.
    pub fn new(input: R) -> Self {
        TreeListing {
            input,
            order: Order::default(),
            failed: false,
        }
    }

    fn parse(&mut self, record: &[u8]) -> Result<TreeFile, IndexError> {
        let number = self.order.line + 1;
        let malformed = |message: &str| IndexError::Malformed {
            what: TREE,
            line: number,
            message: message.into(),
        };
        let record = record
            .strip_suffix(b"\0")
            .ok_or_else(|| malformed("the last record has no NUL (a cut listing)"))?;
        let mut fields = record.splitn(3, |b| *b == b' ');
        let (Some(size), Some(mtime), Some(path)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(malformed("expected SIZE MTIME PATH"));
        };
        let size = std::str::from_utf8(size)
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| malformed("the size is not a number of bytes"))?;
        let mtime_ns = std::str::from_utf8(mtime)
            .ok()
            .and_then(parse_mtime)
            .ok_or_else(|| malformed("the modification time is not SECONDS.FRACTION"))?;
        if path.is_empty()
            || path.starts_with(b"/")
            || path
                .split(|b| *b == b'/')
                .any(|c| c == b".." || c.is_empty())
        {
            return Err(malformed(
                "the path is empty, absolute, or has an empty or .. component",
            ));
        }
        let path = ManifestPath::from_bytes(path);
        self.order.next(TREE, &path)?;
        Ok(TreeFile {
            path,
            size,
            mtime_ns,
        })
    }
}

impl<R: BufRead> Iterator for TreeListing<R> {
    type Item = Result<TreeFile, IndexError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let mut record = Vec::new();
        let result = match self.input.read_until(0, &mut record) {
            Ok(0) => return None,
            Ok(_) => self.parse(&record),
            Err(source) => Err(IndexError::Io {
                action: "read",
                what: TREE,
                source,
            }),
        };
        self.failed = result.is_err();
        Some(result)
    }
}

/// What an incremental create will do, once planned ([`plan_incremental`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct IncrementalPlan {
    /// Files new or changed since the base: archived in the new pack.
    pub new: Usage,
    /// Files unchanged since the base: referenced, their bytes in older packs.
    pub referenced: Usage,
    /// Files of the base's index that are gone from the tree or changed.
    pub superseded: Usage,
    /// The new index (its SHA-256 and what each pack holds of it).
    pub index: IndexSummary,
}

impl IncrementalPlan {
    /// The share (percent, rounded down) of the bytes `chain`'s packs hold that the new
    /// index no longer references: what keeping the chain costs beyond the live media.
    pub fn superseded_percent(&self, chain: &[ChainLink]) -> u64 {
        let held: u64 = chain.iter().map(|l| l.bytes).sum();
        if held == 0 {
            return 0;
        }
        let kept: u64 = chain
            .iter()
            .filter_map(|l| self.index.packs.get(&l.id))
            .map(|u| u.bytes)
            .sum();
        held.saturating_sub(kept).saturating_mul(100) / held
    }
}

/// Plans an incremental create in one pass over two sorted lists: `base` (the base's
/// index, already checked against its inner manifest) and `tree` (the live files). A
/// tree file the base holds with the same path, size and modification time keeps the
/// base's pack; every other one is written to `members` (NUL-terminated member names,
/// what tar archives into the new pack `id`). The new index goes to `index`.
///
/// # Errors
/// The first error of either list or of writing.
pub fn plan_incremental<B, T, W, M>(
    base: B,
    tree: T,
    id: &BackupId,
    index: &mut IndexWriter<W>,
    members: &mut M,
) -> Result<IncrementalPlan, IndexError>
where
    B: IntoIterator<Item = Result<IndexEntry, IndexError>>,
    T: IntoIterator<Item = Result<TreeFile, IndexError>>,
    W: Write,
    M: Write,
{
    let mut planner = Planner::new(tree, id, index, members)?;
    for entry in base {
        planner.base(entry?)?;
    }
    planner.finish()
}

/// [`plan_incremental`] driven by the base's index as it is read (each entry given
/// with [`Planner::base`], in index order), the tree listing pulled as needed: so the
/// base's index is never held, only the entry at hand.
pub(crate) struct Planner<'a, T: Iterator, W: Write, M: Write> {
    tree: T,
    /// The tree's next file, not yet planned.
    next: Option<TreeFile>,
    id: &'a BackupId,
    index: &'a mut IndexWriter<W>,
    members: &'a mut M,
    plan: IncrementalPlan,
}

impl<'a, T, W, M> Planner<'a, T, W, M>
where
    T: Iterator<Item = Result<TreeFile, IndexError>>,
    W: Write,
    M: Write,
{
    /// Plans the new pack `id` over `tree`, writing the new index to `index` and the
    /// members it archives to `members`.
    ///
    /// # Errors
    /// The tree's first error.
    pub(crate) fn new(
        tree: impl IntoIterator<IntoIter = T>,
        id: &'a BackupId,
        index: &'a mut IndexWriter<W>,
        members: &'a mut M,
    ) -> Result<Self, IndexError> {
        let mut tree = tree.into_iter();
        let next = tree.next().transpose()?;
        Ok(Planner {
            tree,
            next,
            id,
            index,
            members,
            plan: IncrementalPlan::default(),
        })
    }

    fn advance(&mut self) -> Result<(), IndexError> {
        self.next = self.tree.next().transpose()?;
        Ok(())
    }

    /// A tree file no base entry keeps: archived in the new pack.
    fn archive(&mut self, file: TreeFile) -> Result<(), IndexError> {
        new_member(&mut self.plan, &file, self.members)?;
        self.push(file, self.id.clone())
    }

    fn push(&mut self, file: TreeFile, pack: BackupId) -> Result<(), IndexError> {
        self.index.push(&IndexEntry {
            path: file.path,
            size: file.size,
            mtime_ns: file.mtime_ns,
            pack,
        })
    }

    /// The base's next entry (in index order).
    ///
    /// # Errors
    /// The tree's first error, or writing's.
    pub(crate) fn base(&mut self, entry: IndexEntry) -> Result<(), IndexError> {
        // Tree files before this path are new.
        while let Some(file) = self
            .next
            .take_if(|f| f.path.as_bytes() < entry.path.as_bytes())
        {
            self.advance()?;
            self.archive(file)?;
        }
        match self.next.take() {
            Some(file) if file.path == entry.path => {
                self.advance()?;
                if entry.size == file.size && same_mtime(entry.mtime_ns, file.mtime_ns) {
                    self.plan.referenced.add(file.size);
                    self.push(file, entry.pack)
                } else {
                    self.plan.superseded.add(entry.size);
                    self.archive(file)
                }
            }
            // Gone from the tree.
            later => {
                self.next = later;
                self.plan.superseded.add(entry.size);
                Ok(())
            }
        }
    }

    /// Plans the rest of the tree (files after the base's last entry are new).
    ///
    /// # Errors
    /// The tree's first error, or writing's.
    pub(crate) fn finish(mut self) -> Result<IncrementalPlan, IndexError> {
        while let Some(file) = self.next.take() {
            self.advance()?;
            self.archive(file)?;
        }
        Ok(self.plan)
    }
}

/// Whether a tree file's modification time `live` is the one the index recorded,
/// `indexed`: the same, or the same second when `live` has no fraction. A restore
/// writes a file's time as its archive holds it, in whole seconds (tar's default
/// format), so a tree restored in place keeps referencing the packs it came from
/// instead of archiving every file again. A file rewritten within the same second, to
/// the same size, and given a time of exactly that second is the only change this
/// misses.
fn same_mtime(indexed: i64, live: i64) -> bool {
    const NS: i64 = 1_000_000_000;
    indexed == live || (live.rem_euclid(NS) == 0 && indexed.div_euclid(NS) == live.div_euclid(NS))
}

fn new_member<M: Write>(
    plan: &mut IncrementalPlan,
    file: &TreeFile,
    members: &mut M,
) -> Result<(), IndexError> {
    plan.new.add(file.size);
    members
        .write_all(file.path.as_bytes())
        .and_then(|()| members.write_all(b"\0"))
        .map_err(|source| IndexError::Io {
            action: "write",
            what: "member list",
            source,
        })
}

/// What a create knows of the newest complete backup before planning.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BaseState {
    /// There is no complete backup.
    None,
    /// The newest is a legacy (reference-made) backup: it has no index.
    Legacy(BackupId),
    /// Its manifest, inner manifest or index could not be read or did not check.
    Unreadable {
        /// The backup.
        id: BackupId,
        /// Why.
        reason: String,
    },
    /// It can be the base: its chain (as its inner manifest records it, an empty one
    /// for a full backup of this crate made before incremental backups).
    Usable {
        /// The backup.
        id: BackupId,
        /// How many packs its restore reads (1 for a full backup).
        packs: usize,
    },
}

/// Why a backup is full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum FullReason {
    /// No incremental backup was asked for.
    NotRequested,
    /// There is no complete backup to build on.
    FirstBackup,
    /// The newest backup is a legacy (reference-made) one, which has no index.
    LegacyBase {
        /// The legacy backup.
        base: BackupId,
    },
    /// The newest backup's manifest, inner manifest or index is missing or does not
    /// check.
    BaseUnreadable {
        /// The backup.
        base: BackupId,
        /// Why.
        detail: String,
    },
    /// The passphrase changes: a chain's packs must all open with one passphrase.
    NewPassphrase,
    /// The chain would hold more packs than [`ChainPolicy::full_every`].
    ChainLength {
        /// Packs the chain would hold.
        packs: usize,
        /// The limit.
        full_every: u32,
    },
    /// Too much of what the chain holds is no longer in the tree.
    Superseded {
        /// The share, percent.
        percent: u64,
        /// The limit.
        max_percent: u8,
    },
}

impl std::fmt::Display for FullReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FullReason::NotRequested => f.write_str("no incremental backup was asked for"),
            FullReason::FirstBackup => f.write_str("there is no complete backup to build on"),
            FullReason::LegacyBase { base } => write!(
                f,
                "the newest backup {base} is a legacy backup, which has no file index"
            ),
            FullReason::BaseUnreadable { base, detail } => {
                write!(f, "the newest backup {base} cannot be a base: {detail}")
            }
            FullReason::NewPassphrase => {
                f.write_str("the passphrase changes (every pack of a chain opens with one)")
            }
            FullReason::ChainLength { packs, full_every } => write!(
                f,
                "the chain would hold {packs} packs, more than full_every ({full_every})"
            ),
            FullReason::Superseded {
                percent,
                max_percent,
            } => write!(
                f,
                "{percent} % of what the chain holds is no longer in the tree, more than {max_percent} %"
            ),
        }
    }
}

/// What a backup is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum BackupKind {
    /// One pack holding everything.
    Full {
        /// Why (when an incremental one was asked for, why not).
        #[serde(flatten)]
        reason: FullReason,
    },
    /// A pack of what changed, on top of `base`'s chain.
    Incremental {
        /// The backup it was made on.
        base: BackupId,
    },
}

/// The decision before planning: `Err` with the reason when the backup is full
/// whatever the tree holds, `Ok` with the base otherwise.
///
/// # Errors
/// The [`FullReason`] of a full backup.
pub fn choose_base(
    incremental: bool,
    new_passphrase: bool,
    base: &BaseState,
    policy: &ChainPolicy,
) -> Result<BackupId, FullReason> {
    if !incremental {
        return Err(FullReason::NotRequested);
    }
    if new_passphrase {
        return Err(FullReason::NewPassphrase);
    }
    match base {
        BaseState::None => Err(FullReason::FirstBackup),
        BaseState::Legacy(id) => Err(FullReason::LegacyBase { base: id.clone() }),
        BaseState::Unreadable { id, reason } => Err(FullReason::BaseUnreadable {
            base: id.clone(),
            detail: reason.clone(),
        }),
        BaseState::Usable { id, packs } => {
            let would = packs + 1;
            if would > policy.full_every as usize {
                Err(FullReason::ChainLength {
                    packs: would,
                    full_every: policy.full_every,
                })
            } else {
                Ok(id.clone())
            }
        }
    }
}

/// The decision after planning: `Some` reason when the plan supersedes too much of
/// `chain` (the new backup's older packs).
pub fn full_after_plan(
    plan: &IncrementalPlan,
    chain: &[ChainLink],
    policy: &ChainPolicy,
) -> Option<FullReason> {
    let percent = plan.superseded_percent(chain);
    (percent > u64::from(policy.max_superseded_percent)).then_some(FullReason::Superseded {
        percent,
        max_percent: policy.max_superseded_percent,
    })
}

/// The NUL-terminated member names `index` assigns to `pack`, in index order: what a
/// restore hands `tar -x --null -T` for that pack.
///
/// # Errors
/// The first error of the index or of writing.
pub fn members_of<I, M>(index: I, pack: &BackupId, out: &mut M) -> Result<Usage, IndexError>
where
    I: IntoIterator<Item = Result<IndexEntry, IndexError>>,
    M: Write,
{
    let mut usage = Usage::default();
    for entry in index {
        let entry = entry?;
        if &entry.pack == pack {
            usage.add(entry.size);
            out.write_all(entry.path.as_bytes())
                .and_then(|()| out.write_all(b"\0"))
                .map_err(|source| IndexError::Io {
                    action: "write",
                    what: "member list",
                    source,
                })?;
        }
    }
    Ok(usage)
}

/// The index object's key suffix (after the data object's key): `.index.ndjson` for a
/// full backup, `.on-<base id>.index.ndjson` for an incremental one, so that a listing
/// of the bucket tells each backup's kind and base without reading anything.
pub fn index_suffix(base: Option<&BackupId>) -> String {
    match base {
        None => ".index.ndjson".into(),
        Some(base) => format!(".on-{base}.index.ndjson"),
    }
}

/// The database pack's key suffix (after the data object's key): an incremental
/// backup's database snapshot is an object of its own, so that a later backup's
/// restore, which reads this backup's pack for its media, never downloads it.
pub const DATABASE_SUFFIX: &str = ".database";

/// An object name (the key after the backups' prefix) read as a database pack: its
/// backup.
pub fn parse_database_name(name: &str) -> Option<BackupId> {
    name.strip_suffix(DATABASE_SUFFIX)?.parse().ok()
}

/// An object name (the key after the backups' prefix) read as an index object: the
/// backup and its base (`None` for a full backup).
pub fn parse_index_name(name: &str) -> Option<(BackupId, Option<BackupId>)> {
    let stem = name.strip_suffix(".index.ndjson")?;
    match stem.split_once(".on-") {
        None => Some((stem.parse().ok()?, None)),
        Some((id, base)) => Some((id.parse().ok()?, Some(base.parse().ok()?))),
    }
}

/// The older packs backup `id` needs, the full one first, by following each backup's
/// base in `bases` (from [`parse_index_name`]). A base missing from `bases`, or one
/// not older than its backup, ends the chain there (a broken chain: what is listed is
/// still kept).
pub fn chain_of(bases: &BTreeMap<BackupId, Option<BackupId>>, id: &BackupId) -> Vec<BackupId> {
    let mut chain = Vec::new();
    let mut at = id;
    while let Some(Some(base)) = bases.get(at) {
        if base >= at {
            break;
        }
        chain.push(base.clone());
        at = base;
    }
    chain.reverse();
    chain
}

#[cfg(test)]
mod tests;

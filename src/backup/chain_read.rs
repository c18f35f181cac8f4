//! Reading a backup of a chain back (verify, restore, extract), the pure part: which
//! members each pack gives (from the backup's file index, streamed once and checked
//! against the SHA-256 its pack's inner manifest records), and the checks that tie
//! every older pack to the chain the backup's inner manifest records (object SHA-256,
//! id and nonce), so that a pack spliced in, substituted or re-uploaded under its key
//! is named and refused before anything it holds is used.
//!
//! The order of a read: the backup's own inner manifest (authenticated by the
//! passphrase) gives the [`PackChain`]; [`check_record`] holds the external manifest's
//! chain record to it; [`IndexSplit`] reads the index into one member list per pack;
//! each older pack is checked before its download ([`check_older_manifest`]) and after
//! ([`check_older_pack`], [`check_partial_listing`]); the backup's own pack is checked
//! with today's rules and [`check_own_listing`].

#[cfg(test)]
use std::io::BufRead;

use crate::backup::incremental::{ChainLink, IndexReader, PackChain, Usage, index_suffix};
use crate::backup::listing::{put_entry, take_entry, take_varint};
use crate::backup::manifest::{
    DatabasePack, EntryKind, INNER_MANIFEST_MEMBER, InnerManifest, Manifest, ManifestChain,
};
use crate::backup::plan::BackupId;
use crate::backup::restore_plan::{MemberRef, inner_position};
use crate::error::IndexError;

/// What one pack of a chain gives a restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PackPart {
    /// The pack's backup id.
    pub id: BackupId,
    /// The chain link that identifies it (`None` for the backup's own pack).
    pub link: Option<ChainLink>,
    /// The media files the index assigns to it, in index (byte) order, held
    /// front-coded ([`SortedNames`]).
    pub members: SortedNames,
    /// How many files and bytes those are.
    pub usage: Usage,
}

impl PackPart {
    /// The member list an older pack is read with: its inner manifest first (so that it
    /// is checked as in any pack), then the files the index assigns to it, each
    /// NUL-terminated; in pieces of about `bytes` (each at least one whole name, the
    /// last shorter), so that a pack of many files is never held as one list.
    pub(crate) fn tar_list(&self, bytes: usize) -> impl Iterator<Item = Vec<u8>> + Send + '_ {
        let names =
            std::iter::once(INNER_MANIFEST_MEMBER.as_bytes().to_vec()).chain(self.members.iter());
        in_pieces(names, b'\0', bytes)
    }

    /// The files of this (older) pack that tar need not write, from its manifest's
    /// `entries` (path, kind, size): every file the index does not assign to it (the
    /// database a later pack holds, media superseded or gone since), which its read
    /// would write only to remove. tar's `--exclude-from` takes them one per line, as
    /// they are (`--anchored --no-wildcards --no-unquote`), but trims white space (C's
    /// `isspace`) at a line's end: a name with a newline or ending in white space would
    /// be read as another name, perhaps a wanted file's, so it is left out (written and
    /// removed, as before). The inner manifest is never one (it is checked).
    pub(crate) fn unwanted_files<'a, P: AsRef<[u8]> + 'a>(
        &'a self,
        entries: impl Iterator<Item = (P, EntryKind, u64)> + 'a,
    ) -> impl Iterator<Item = (P, u64)> + 'a {
        entries.filter_map(move |(path, kind, size)| {
            let name = path.as_ref();
            let listable = !name.is_empty()
                && !name.contains(&b'\n')
                && !name
                    .last()
                    .is_some_and(|b| b.is_ascii_whitespace() || *b == 0x0b);
            let unwanted = kind == EntryKind::File
                && name != INNER_MANIFEST_MEMBER.as_bytes()
                && self.members.position(name).is_none();
            (listable && unwanted).then_some((path, size))
        })
    }

    /// The member names, in index order.
    pub(crate) fn names(&self) -> impl Iterator<Item = Vec<u8>> + '_ {
        self.members.iter()
    }
}

/// `names`, each followed by `end`, in pieces of about `bytes` (each at least one whole
/// name, the last shorter), so that a long list is never held whole.
pub(crate) fn in_pieces(
    names: impl Iterator<Item = Vec<u8>> + Send,
    end: u8,
    bytes: usize,
) -> impl Iterator<Item = Vec<u8>> + Send {
    let mut names = names.peekable();
    std::iter::from_fn(move || {
        names.peek()?;
        let mut piece = Vec::with_capacity(bytes.saturating_add(4096));
        while piece.len() < bytes {
            let Some(name) = names.next() else { break };
            piece.extend_from_slice(&name);
            piece.push(end);
        }
        Some(piece)
    })
}

/// Checks the external manifest's chain record of backup `id` against `chain`, the one
/// its pack's inner manifest records: the same older packs in the same order, the same
/// index SHA-256, and the index named as create names it. Gives the index object's key
/// suffix.
///
/// # Errors
/// What differs, in words (a spliced chain, a swapped manifest).
pub(crate) fn check_record(
    id: &BackupId,
    chain: &PackChain,
    listed: Option<&ManifestChain>,
) -> Result<String, String> {
    let ids = |ids: &mut dyn Iterator<Item = &BackupId>| {
        ids.map(BackupId::as_str).collect::<Vec<_>>().join(", ")
    };
    let Some(base) = chain.base() else {
        return Err(format!("{id} is a full backup, not a pack of a chain"));
    };
    let Some(listed) = listed else {
        return Err(format!(
            "the manifest of {id} has no chain, but its data needs {} older packs ({})",
            chain.links.len(),
            ids(&mut chain.links.iter().map(|l| &l.id))
        ));
    };
    if !listed.packs.iter().eq(chain.links.iter().map(|l| &l.id)) {
        return Err(format!(
            "the manifest of {id} lists the packs [{}] but its data records the chain [{}] (a spliced chain)",
            ids(&mut listed.packs.iter()),
            ids(&mut chain.links.iter().map(|l| &l.id))
        ));
    }
    if listed.index_sha256 != chain.index_sha256 {
        return Err(format!(
            "the manifest of {id} names another file index than its data records"
        ));
    }
    let suffix = index_suffix(Some(&base.id));
    if listed.index != suffix {
        return Err(format!(
            "the manifest of {id} names the index {:?}, not {suffix:?}",
            listed.index
        ));
    }
    Ok(suffix)
}

/// Reads the file index of backup `id` (whose pack's inner manifest records `chain`)
/// in one pass, into one member list per pack ([`IndexSplit`] over the lines of
/// `index`).
///
/// # Errors
/// As [`IndexSplit::line`] and [`IndexSplit::finish`], and a failed read.
#[cfg(test)]
pub(crate) fn split_index<R: BufRead>(
    mut index: R,
    id: &BackupId,
    chain: &PackChain,
) -> Result<Vec<PackPart>, IndexError> {
    let mut split = IndexSplit::new(id, chain);
    let mut line = Vec::new();
    loop {
        line.clear();
        match index.read_until(b'\n', &mut line) {
            Ok(0) => return split.finish(),
            Ok(_) => split.line(&line)?,
            Err(source) => {
                return Err(IndexError::Io {
                    action: "read",
                    what: "file index",
                    source,
                });
            }
        }
    }
}

/// The file index of a backup of a chain, split as it is read (a line at a time, from
/// ranged GETs) into one member list per pack: the older packs in chain order, then
/// the backup's own. Every entry must name a pack of the chain, the paths must be
/// sorted and unique, and the bytes read must have the SHA-256 the chain records;
/// nothing is given before the whole index checks ([`finish`](Self::finish)).
pub(crate) struct IndexSplit {
    id: BackupId,
    sha256: String,
    parts: Vec<PackPart>,
    reader: IndexReader<std::io::Empty>,
    /// The lines given so far.
    lines: u64,
}

impl IndexSplit {
    /// A split of the index of backup `id`, whose pack's inner manifest records `chain`.
    pub(crate) fn new(id: &BackupId, chain: &PackChain) -> Self {
        let parts: Vec<PackPart> = chain
            .links
            .iter()
            .map(|l| (l.id.clone(), Some(l.clone())))
            .chain(std::iter::once((id.clone(), None)))
            .map(|(id, link)| PackPart {
                id,
                link,
                members: SortedNames::default(),
                usage: Usage::default(),
            })
            .collect();
        let packs: Vec<BackupId> = parts.iter().map(|p| p.id.clone()).collect();
        IndexSplit {
            id: id.clone(),
            sha256: chain.index_sha256.clone(),
            parts,
            reader: IndexReader::new(std::io::empty()).with_packs(packs),
            lines: 0,
        }
    }

    /// The index's next line (its newline included).
    ///
    /// # Errors
    /// The line's error (nothing more should be given).
    pub(crate) fn line(&mut self, line: &[u8]) -> Result<(), IndexError> {
        self.lines += 1;
        let entry = self.reader.line(line)?;
        // The reader refuses a pack outside the chain: this one is there.
        if let Some(part) = self.parts.iter_mut().find(|p| p.id == entry.pack) {
            // The reader refuses paths out of byte order too: each pack's are in order.
            let path = entry.path.as_bytes();
            if !part.members.push(path) {
                return Err(IndexError::Unsorted {
                    what: "file index",
                    line: self.lines,
                    path: String::from_utf8_lossy(path).into_owned(),
                    previous: String::from_utf8_lossy(&part.members.last).into_owned(),
                });
            }
            part.usage.files += 1;
            part.usage.bytes += entry.size;
        }
        Ok(())
    }

    /// The member lists, once every line was given and the whole checks.
    ///
    /// # Errors
    /// [`IndexError::Mismatch`] for another index than the chain records.
    pub(crate) fn finish(mut self) -> Result<Vec<PackPart>, IndexError> {
        let summary = self.reader.finish();
        if summary.sha256 != self.sha256 {
            return Err(IndexError::Mismatch {
                id: self.id.to_string(),
                expected: self.sha256,
                actual: summary.sha256,
            });
        }
        for part in &mut self.parts {
            part.members.shrink_to_fit();
        }
        Ok(self.parts)
    }
}

/// How many names a block of [`SortedNames`] holds: the first whole, the others
/// front-coded against the name before them.
const NAMES_PER_BLOCK: usize = 16;

/// Names in strictly ascending byte order (the file index's paths of one pack), held
/// front-coded in blocks of [`NAMES_PER_BLOCK`] whose first name is whole, so that a
/// name is found by a binary search over the blocks' first names and a scan of one
/// block: 100,000 media paths cost about their differing ends (a third of their bytes)
/// and no pointer each. The blocks go into buffers of [`NAMES_BUFFER_BYTES`], a new one
/// when one is full: they grow without doubling (and copying) one large buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SortedNames {
    /// Per name: the length it shares with the name before it in its block (0 for a
    /// block's first) and the rest's length, as varints, then the rest. A block is in
    /// one buffer.
    bufs: Vec<Vec<u8>>,
    /// Where each block starts: its buffer and its offset there.
    blocks: Vec<(u32, u32)>,
    /// The last name pushed.
    last: Vec<u8>,
    len: usize,
}

/// The bytes of a [`SortedNames`] buffer past which the next block starts a new one.
const NAMES_BUFFER_BYTES: usize = 256 << 10;

impl SortedNames {
    /// Appends `name`; `false` (and nothing appended) when it does not sort after the
    /// last name.
    pub(crate) fn push(&mut self, name: &[u8]) -> bool {
        if self.len > 0 && name <= self.last.as_slice() {
            return false;
        }
        // A block's first name is held whole (coded against no name before it).
        let block_start = self.len.is_multiple_of(NAMES_PER_BLOCK);
        if block_start {
            match self.bufs.last() {
                Some(buf) if buf.len() < NAMES_BUFFER_BYTES => {}
                Some(_) => self
                    .bufs
                    .push(Vec::with_capacity(NAMES_BUFFER_BYTES + 1024)),
                None => self.bufs.push(Vec::new()),
            }
            let (Ok(buf), Some(Ok(at))) = (
                u32::try_from(self.bufs.len() - 1),
                self.bufs.last().map(|b| u32::try_from(b.len())),
            ) else {
                return false;
            };
            self.blocks.push((buf, at));
        }
        let Some(buf) = self.bufs.last_mut() else {
            return false;
        };
        let before: &[u8] = if block_start { &[] } else { &self.last };
        put_entry::<0>(buf, before, name, []);
        self.last.clear();
        self.last.extend_from_slice(name);
        self.len += 1;
        true
    }

    /// How many names it holds.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Gives back the room it does not use.
    pub(crate) fn shrink_to_fit(&mut self) {
        if let Some(buf) = self.bufs.last_mut() {
            buf.shrink_to_fit();
        }
        self.blocks.shrink_to_fit();
    }

    /// The bytes its names take.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.bufs.iter().map(Vec::len).sum()
    }

    /// The names, in order (each its own copy). A buffer starts with a block, whose
    /// first name is whole.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Vec<u8>> + '_ {
        let mut bufs = self.bufs.iter();
        let mut rest: &[u8] = &[];
        let mut name = Vec::new();
        std::iter::from_fn(move || {
            while rest.is_empty() {
                rest = bufs.next()?;
            }
            take_entry::<0>(&mut rest, &mut name)?;
            Some(name.clone())
        })
    }

    /// The bytes from where block `block` starts to the end of its buffer.
    fn block(&self, block: usize) -> Option<&[u8]> {
        let (buf, at) = *self.blocks.get(block)?;
        let buf = self.bufs.get(usize::try_from(buf).ok()?)?;
        buf.get(usize::try_from(at).ok()?..)
    }

    /// The first name of block `block`, borrowed (it is held whole).
    fn block_first(&self, block: usize) -> Option<&[u8]> {
        let mut rest = self.block(block)?;
        let _shared = take_varint(&mut rest)?;
        let length = usize::try_from(take_varint(&mut rest)?).ok()?;
        rest.get(..length)
    }

    /// Where `name` is among the names (its index in order), if it is one.
    pub(crate) fn position(&self, name: &[u8]) -> Option<usize> {
        // The last block whose first name is not after `name` (a binary search).
        let mut low = 0;
        let mut high = self.blocks.len();
        while low < high {
            let mid = low + (high - low) / 2;
            if self.block_first(mid)? <= name {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        let block = low.checked_sub(1)?;
        let mut rest = self.block(block)?;
        let mut current = Vec::new();
        for at in 0..NAMES_PER_BLOCK {
            take_entry::<0>(&mut rest, &mut current)?;
            match current.as_slice().cmp(name) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Some(block * NAMES_PER_BLOCK + at),
                std::cmp::Ordering::Greater => return None,
            }
        }
        None
    }
}

/// The directories a chain's packs write into the stage they share, NUL-separated, for
/// `fetch.sh` (`SB_MODE=dirs`) to make before any pack is read: the parent of every
/// file the index assigns to a pack (`parts`), of every member of the database pack
/// (`database`, from the inner manifest) and of the inner manifests. Made ahead, no
/// directory is ever made by two of the side-by-side readers at once: GNU tar gives a
/// file up ("Cannot open: No such file or directory") when another process makes its
/// directory between tar's failed open and tar's own mkdir. Both sources are
/// authenticated (the index by the SHA-256 its pack's inner manifest records), and
/// every directory is one a reader would have made anyway. A parent repeated right
/// after itself is given once (the index is sorted, so most repeats are).
pub(crate) fn stage_dirs(parts: &[PackPart], database: &[String]) -> Vec<u8> {
    fn parent(name: &[u8]) -> Option<&[u8]> {
        name.iter()
            .rposition(|b| *b == b'/')
            .map(|cut| &name[..cut])
    }
    let names = || {
        std::iter::once(INNER_MANIFEST_MEMBER.as_bytes().to_vec())
            .chain(parts.iter().flat_map(PackPart::names))
            .chain(database.iter().map(|m| m.as_bytes().to_vec()))
    };
    // Each directory once after itself, given to `each`.
    let each_dir = |each: &mut dyn FnMut(&[u8])| {
        let mut last: Vec<u8> = Vec::new();
        for name in names() {
            if let Some(dir) = parent(&name)
                && dir != last.as_slice()
            {
                each(dir);
                last.clear();
                last.extend_from_slice(dir);
            }
        }
    };
    // Sized first (a pass over the names), so the list is one allocation of its size
    // rather than a buffer doubled (and copied) as it grows.
    let mut size = 0;
    each_dir(&mut |dir| size += dir.len() + 1);
    let mut dirs = Vec::with_capacity(size);
    each_dir(&mut |dir| {
        dirs.extend_from_slice(dir);
        dirs.push(0);
    });
    dirs
}

/// Checks an older pack's external manifest (`None`: it has none) against the `link`
/// that names it, before anything is downloaded: the same nonce and object SHA-256.
///
/// # Errors
/// What differs, in words.
pub(crate) fn check_older_manifest(
    link: &ChainLink,
    manifest: Option<&Manifest>,
) -> Result<(), String> {
    let Some(m) = manifest else {
        return Err("it has no manifest (a pack of a chain always has one)".into());
    };
    if m.nonce.as_deref() != Some(link.nonce.as_str()) {
        return Err(
            "its manifest is not the one of the pack the chain was made on (the nonces differ: a substituted pack)"
                .into(),
        );
    }
    if m.ciphertext_sha256 != link.object_sha256 {
        return Err(
            "its manifest's SHA-256 is not the one of the pack the chain was made on (a substituted or re-uploaded pack)"
                .into(),
        );
    }
    Ok(())
}

/// Checks an older pack as read: the SHA-256 of its encrypted object and its inner
/// manifest (its id and nonce) against the `link` that names it.
///
/// # Errors
/// What differs, in words.
pub(crate) fn check_older_pack(
    link: &ChainLink,
    object_sha256: &str,
    inner: Option<&InnerManifest>,
) -> Result<(), String> {
    if object_sha256 != link.object_sha256 {
        return Err(
            "its SHA-256 is not the one of the pack the chain was made on (a substituted or re-uploaded pack)"
                .into(),
        );
    }
    let Some(inner) = inner else {
        return Err("it carries no inner manifest".into());
    };
    if inner.backup_id != link.id || inner.nonce != link.nonce {
        return Err(format!(
            "its inner manifest names {} with another nonce than the chain records",
            inner.backup_id
        ));
    }
    Ok(())
}

/// The files an older pack gives ([`PackPart::members`], sorted): what
/// [`check_partial_listing`] found in its listing and what its read keeps.
#[derive(Debug)]
pub(crate) struct Wanted<'p>(&'p SortedNames);

impl Wanted<'_> {
    /// Whether `name` is one of them.
    pub(crate) fn contains(&self, name: &[u8]) -> bool {
        self.0.position(name).is_some()
    }
}

/// Checks tar's listing of an older pack, read whole: its inner manifest first, and
/// every file `part` names in it once, as a regular file, each listed as a file by the
/// pack's own manifest, whose entries (path and kind) are `files`. Its other members
/// (files of other states, an older format's database) are not staged. Gives the
/// names, for the caller to keep only those.
///
/// # Errors
/// What differs, in words.
pub(crate) fn check_partial_listing<'m, 'p, P: AsRef<[u8]>>(
    part: &'p PackPart,
    members: impl Iterator<Item = MemberRef<'m>> + Clone,
    files: impl IntoIterator<Item = (P, EntryKind)>,
) -> Result<Wanted<'p>, String> {
    let Some(position) = inner_position(members.clone()) else {
        return Err("its inner manifest is not its first member".into());
    };
    let lossy = |n: &[u8]| String::from_utf8_lossy(n).into_owned();
    // The index's names are sorted and unique, held front-coded and searched where
    // they are, with a flag per wanted name: 100,000 names cost their bytes once.
    let wanted = &part.members;
    let mut seen = vec![false; wanted.len()];
    for m in members.skip(position + 1) {
        let Some(i) = wanted.position(&m.name) else {
            continue;
        };
        if m.kind != '-' {
            return Err(format!(
                "it gave {:?}, which the index assigns to it as a file, as another kind of member",
                lossy(&m.name)
            ));
        }
        if std::mem::replace(&mut seen[i], true) {
            return Err(format!("it holds {:?} twice", lossy(&m.name)));
        }
    }
    if let Some((missing, _)) = wanted.iter().zip(&seen).find(|(_, s)| !**s) {
        return Err(format!(
            "it lacks {:?}, which the index assigns to it",
            lossy(&missing)
        ));
    }
    // Every wanted name was seen: each must be a file of the manifest (a flag per
    // wanted name, the manifest's entries read once and not held).
    let mut listed = vec![false; wanted.len()];
    for (path, kind) in files {
        if kind == EntryKind::File
            && let Some(i) = wanted.position(path.as_ref())
        {
            listed[i] = true;
        }
    }
    if let Some((unlisted, _)) = wanted.iter().zip(&listed).find(|(_, l)| !**l) {
        return Err(format!(
            "its manifest does not list {:?} as a file",
            lossy(&unlisted)
        ));
    }
    Ok(Wanted(wanted))
}

/// Checks tar's listing of the backup's own pack against the index's `parts` (the
/// last one its own): every file the index assigns to it is a file member, and no
/// file member is one the index assigns to an older pack (so no pack's file replaces
/// another's, and nothing of another state is restored).
///
/// # Errors
/// What differs, in words.
pub(crate) fn check_own_listing<'m>(
    parts: &[PackPart],
    members: impl IntoIterator<Item = MemberRef<'m>>,
) -> Result<(), String> {
    let lossy = |n: &[u8]| String::from_utf8_lossy(n).into_owned();
    let Some((own, older)) = parts.split_last() else {
        return Ok(());
    };
    // The index's names, sorted and searched where they are held, with a flag per own
    // name: the members are read once and not held.
    let mut seen = vec![false; own.members.len()];
    let mut stale = None;
    for m in members.into_iter().filter(|m| m.kind == '-') {
        if let Some(i) = own.members.position(&m.name) {
            seen[i] = true;
        } else if stale.is_none()
            && let Some(n) = older
                .iter()
                .position(|part| part.members.position(&m.name).is_some())
        {
            stale = Some((m.name.into_owned(), n));
        }
    }
    if let Some((missing, _)) = own.members.iter().zip(&seen).find(|(_, s)| !**s) {
        return Err(format!(
            "its pack lacks {:?}, which its index assigns to it",
            lossy(&missing)
        ));
    }
    if let Some((both, n)) = stale {
        return Err(format!(
            "its pack holds {:?}, which its index assigns to the older pack {}",
            lossy(&both),
            older[n].id
        ));
    }
    Ok(())
}

/// Checks the external manifest's record of the database pack against `chain`, the
/// one the backup's inner manifest records: a database pack exactly when the inner
/// manifest lists its members. Gives the record (size and SHA-256), `None` when the
/// backup has no database pack.
///
/// # Errors
/// What differs, in words.
pub(crate) fn check_database_record<'m>(
    chain: &PackChain,
    listed: &'m ManifestChain,
) -> Result<Option<&'m DatabasePack>, String> {
    match (chain.database.is_empty(), listed.database.as_ref()) {
        (true, None) => Ok(None),
        (true, Some(_)) => Err(
            "its manifest records a database pack, but its data records none (an altered manifest)"
                .into(),
        ),
        (false, None) => Err(format!(
            "its manifest records no database pack, but its data records one holding {} (an altered manifest)",
            chain.database.join(", ")
        )),
        (false, Some(pack)) => Ok(Some(pack)),
    }
}

/// Checks that the manifest's entries `listed` (path and kind) list every member of
/// the database pack (`database`, from the inner manifest) as a file: the database
/// pack's members and the own pack's then make up the manifest's list.
///
/// # Errors
/// The first member not listed as a file.
pub(crate) fn check_database_listed<'a>(
    database: &[String],
    listed: impl Iterator<Item = (&'a [u8], EntryKind)>,
) -> Result<(), String> {
    let mut files: Vec<&[u8]> = listed
        .filter(|(_, kind)| *kind == EntryKind::File)
        .map(|(p, _)| p)
        .collect();
    files.sort_unstable();
    match database
        .iter()
        .find(|m| files.binary_search(&m.as_bytes()).is_err())
    {
        Some(m) => Err(format!(
            "its manifest does not list {m:?}, which its database pack holds, as a file"
        )),
        None => Ok(()),
    }
}

/// Checks the database pack as read whole: it carries the very inner manifest of its
/// backup's own pack (`own`: same id, nonce and chain, so a database pack of another
/// backup or of another run is refused) as its first member, then exactly the
/// `database` members that inner manifest lists, each a regular file, each once.
///
/// # Errors
/// What differs, in words.
pub(crate) fn check_database_pack<'m>(
    own: &InnerManifest,
    inner: Option<&InnerManifest>,
    members: impl Iterator<Item = MemberRef<'m>> + Clone,
) -> Result<(), String> {
    if inner != Some(own) {
        return Err(
            "its inner manifest is not its backup's (a database pack of another backup or of another run)"
                .into(),
        );
    }
    if inner_position(members.clone()) != Some(0) {
        return Err("its inner manifest is not its first member".into());
    }
    let lossy = |n: &[u8]| String::from_utf8_lossy(n).into_owned();
    let mut wanted: Vec<&[u8]> = own
        .chain
        .iter()
        .flat_map(|c| c.database.iter())
        .map(String::as_bytes)
        .collect();
    wanted.sort_unstable();
    let mut seen = vec![false; wanted.len()];
    for m in members.skip(1) {
        let Some(i) = wanted
            .binary_search(&m.name.as_ref())
            .ok()
            .filter(|_| m.kind == '-')
        else {
            return Err(format!(
                "it holds {:?}, which its inner manifest does not list as a database member",
                lossy(&m.name)
            ));
        };
        if std::mem::replace(&mut seen[i], true) {
            return Err(format!("it holds {:?} twice", lossy(&m.name)));
        }
    }
    if let Some((missing, _)) = wanted.iter().zip(&seen).find(|(_, s)| !**s) {
        return Err(format!(
            "it lacks {:?}, which its inner manifest lists",
            lossy(missing)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;

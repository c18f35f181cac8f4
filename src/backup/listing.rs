//! GNU tar's verbose listing (`-vv --numeric-owner --quoting-style=escape`, C locale),
//! as `tar --list` and `--index-file` write it, parsed strictly: every line is an
//! archive member or tar's own "Creating directory:" note, and anything else is an
//! error rather than a line to skip. Pure: no I/O.
//!
//! A line is `<mode> <uid>/<gid> <size> <YYYY-MM-DD> <hh:mm> <name>` with the name
//! escaped (so it holds no newline), `<name> -> <target>` for a symlink and
//! `<name> link to <target>` for a hard link; devices give `<major>,<minor>` as the
//! size.

use std::borrow::Cow;

use crate::error::ConfigError;

/// One member of an archive, from tar's verbose listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveMember {
    /// The type letter: `-` file, `d` directory, `l` symlink, `h` hard link, `c`/`b`
    /// devices, `p` FIFO, `s` socket, and GNU tar's rarer ones (`C`, `D`, `M`, `N`, `V`).
    pub kind: char,
    /// The name, as bytes (decoded from tar's escaped form), without a trailing `/`.
    pub name: Vec<u8>,
    /// The size in bytes (0 for devices).
    pub size: u64,
    /// The permission bits, set-id and sticky bits included (`0o7777` at most).
    pub mode: u32,
    /// The numeric owner.
    pub uid: u32,
    /// The numeric group.
    pub gid: u32,
}

impl ArchiveMember {
    /// A borrowed view of it.
    pub fn as_ref(&self) -> MemberRef<'_> {
        MemberRef {
            kind: self.kind,
            name: Cow::Borrowed(&self.name),
            size: self.size,
            mode: self.mode,
        }
    }
}

/// An archive member as the checks after a read look at it (kind, name, size, mode),
/// borrowed from an [`ArchiveMember`] or decoded from a [`Members`] record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRef<'a> {
    /// As [`ArchiveMember::kind`].
    pub kind: char,
    /// As [`ArchiveMember::name`].
    pub name: Cow<'a, [u8]>,
    /// As [`ArchiveMember::size`].
    pub size: u64,
    /// As [`ArchiveMember::mode`].
    pub mode: u32,
}

/// Appends `value` as a LEB128 varint.
pub(crate) fn put_varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// Takes a LEB128 varint off the front of `rest`.
pub(crate) fn take_varint(rest: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, tail) = rest.split_first()?;
        *rest = tail;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

/// Appends the entry `name` with its `numbers`, front-coded against `last` (the name
/// before it).
pub(crate) fn put_entry<const N: usize>(
    buf: &mut Vec<u8>,
    last: &[u8],
    name: &[u8],
    numbers: [u64; N],
) {
    let shared = last.iter().zip(name).take_while(|(a, b)| a == b).count();
    put_varint(buf, shared as u64);
    put_varint(buf, (name.len() - shared) as u64);
    buf.extend_from_slice(&name[shared..]);
    for n in numbers {
        put_varint(buf, n);
    }
}

/// Takes the entry off the front of `rest`: its name replaces `name` (the one before
/// it), its numbers are given; `None` at the end or on a malformed entry.
pub(crate) fn take_entry<const N: usize>(rest: &mut &[u8], name: &mut Vec<u8>) -> Option<[u64; N]> {
    let shared = usize::try_from(take_varint(rest)?).ok()?;
    let length = usize::try_from(take_varint(rest)?).ok()?;
    let (suffix, tail) = rest.split_at_checked(length)?;
    if shared > name.len() {
        return None;
    }
    name.truncate(shared);
    name.extend_from_slice(suffix);
    *rest = tail;
    let mut numbers = [0u64; N];
    for n in &mut numbers {
        *n = take_varint(rest)?;
    }
    Some(numbers)
}

/// A list of names, each with `N` numbers, front-coded: a name is stored as the
/// length it shares with the one before and the rest of it, numbers as varints. tar
/// lists a directory's entries one after the other, so a media file's record costs
/// about the bytes of its own name's end (about a third of a Synapse media path).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrontCoded<const N: usize> {
    buf: Vec<u8>,
    last: Vec<u8>,
    len: usize,
}

impl<const N: usize> FrontCoded<N> {
    /// An empty list with room for `bytes` of entries.
    pub fn with_capacity(bytes: usize) -> Self {
        FrontCoded {
            buf: Vec::with_capacity(bytes),
            last: Vec::new(),
            len: 0,
        }
    }

    /// Appends `name` with its `numbers`.
    pub fn push(&mut self, name: &[u8], numbers: [u64; N]) {
        put_entry(&mut self.buf, &self.last, name, numbers);
        self.last.clear();
        self.last.extend_from_slice(name);
        self.len += 1;
    }

    /// How many names it holds.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Gives back the room it does not use.
    pub fn shrink_to_fit(&mut self) {
        self.buf.shrink_to_fit();
        self.last = Vec::new();
    }

    /// The bytes its entries take.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// Keeps only the entries `keep` says yes to (given each name and its numbers, in
    /// order), in place: no second list is ever held beside it. A kept entry is coded
    /// again against the kept one before it, which never takes more bytes than the
    /// entries it follows took (the prefix a dropped entry shared is in the dropped
    /// entries' own bytes), so the rewrite stays behind the read; were it ever to
    /// catch up, the rest is kept aside and put back after, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8], &[u64; N]) -> bool) {
        let mut read = 0;
        let mut write = 0;
        let mut name: Vec<u8> = Vec::new();
        let mut kept: Vec<u8> = Vec::new();
        let mut record: Vec<u8> = Vec::new();
        let mut spill: Vec<u8> = Vec::new();
        let mut len = 0;
        while read < self.buf.len() {
            let mut rest = &self.buf[read..];
            let before = rest.len();
            let Some(numbers) = take_entry(&mut rest, &mut name) else {
                break;
            };
            read += before - rest.len();
            if !keep(&name, &numbers) {
                continue;
            }
            record.clear();
            put_entry(&mut record, &kept, &name, numbers);
            if spill.is_empty() && write + record.len() <= read {
                self.buf[write..write + record.len()].copy_from_slice(&record);
                write += record.len();
            } else {
                spill.extend_from_slice(&record);
            }
            kept.clear();
            kept.extend_from_slice(&name);
            len += 1;
        }
        self.buf.truncate(write);
        self.buf.extend_from_slice(&spill);
        self.last = kept;
        self.len = len;
    }

    /// The names and their numbers, in the order they were pushed.
    pub fn iter(&self) -> FrontCodedIter<'_, N> {
        FrontCodedIter {
            rest: &self.buf,
            name: Vec::new(),
        }
    }
}

/// The entries of a [`FrontCoded`], in order (each name given as its own copy).
#[derive(Debug, Clone)]
pub struct FrontCodedIter<'a, const N: usize> {
    rest: &'a [u8],
    name: Vec<u8>,
}

impl<const N: usize> Iterator for FrontCodedIter<'_, N> {
    type Item = (Vec<u8>, [u64; N]);

    fn next(&mut self) -> Option<Self::Item> {
        let numbers = take_entry(&mut self.rest, &mut self.name)?;
        Some((self.name.clone(), numbers))
    }
}

/// [`FrontCoded`] entries in lists of up to [`LIST_BYTES`], a new list when the last
/// is full: a long list grows a list at a time, never by doubling (and copying) one
/// large buffer, and gives back at most the room of its last list. Lists are joined
/// ([`append`](Self::append)) by moving them in, not by copying their entries.
#[derive(Debug, Clone, Default)]
pub struct FrontCodedLists<const N: usize>(Vec<FrontCoded<N>>);

/// The bytes of entries a [`FrontCodedLists`] list holds before the next ones go to a
/// list of their own.
const LIST_BYTES: usize = 256 << 10;

impl<const N: usize> PartialEq for FrontCodedLists<N> {
    /// The same entries in the same order, however they are split into lists.
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl<const N: usize> Eq for FrontCodedLists<N> {}

impl<const N: usize> FrontCodedLists<N> {
    /// Appends `name` with its `numbers`.
    pub fn push(&mut self, name: &[u8], numbers: [u64; N]) {
        match self.0.last() {
            None => self.0.push(FrontCoded::default()),
            Some(last) if last.bytes() >= LIST_BYTES => {
                self.0.push(FrontCoded::with_capacity(LIST_BYTES + 1024));
            }
            Some(_) => {}
        }
        if let Some(last) = self.0.last_mut() {
            last.push(name, numbers);
        }
    }

    /// Moves every entry of `other` in after its own, without copying them.
    pub fn append(&mut self, other: Self) {
        self.0
            .extend(other.0.into_iter().filter(|list| list.bytes() > 0));
    }

    /// Keeps only the entries `keep` says yes to, in order, in place
    /// ([`FrontCoded::retain`]).
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8], &[u64; N]) -> bool) {
        for list in &mut self.0 {
            list.retain(&mut keep);
        }
        self.0.retain(|list| list.bytes() > 0);
    }

    /// How many entries it holds.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.iter().map(FrontCoded::len).sum()
    }

    /// Whether it holds none.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(FrontCoded::is_empty)
    }

    /// How many lists hold its entries.
    #[cfg(test)]
    pub fn lists(&self) -> usize {
        self.0.len()
    }

    /// Gives back the room it does not use.
    pub fn shrink_to_fit(&mut self) {
        for list in &mut self.0 {
            list.shrink_to_fit();
        }
        self.0.shrink_to_fit();
    }

    /// The entries, in the order they were pushed.
    pub fn iter(&self) -> impl Iterator<Item = (Vec<u8>, [u64; N])> + Clone + '_ {
        self.0.iter().flat_map(FrontCoded::iter)
    }
}

/// Archive members held compactly, in the order given ([`FrontCodedLists`]: kind, size
/// and mode beside each name), so the listing of a backup of 100,000 media files costs
/// a few MB. Lists are joined ([`append`](Self::append)) by moving them in, not by
/// copying their members: a backup of a chain's listing is its packs' lists one after
/// the other.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members(FrontCodedLists<3>);

impl Members {
    /// Appends one member.
    pub fn push(&mut self, m: &MemberRef<'_>) {
        self.0
            .push(&m.name, [u64::from(m.kind), m.size, u64::from(m.mode)]);
    }

    /// Moves every member of `other` in after its own, without copying them.
    pub fn append(&mut self, other: Members) {
        self.0.append(other.0);
    }

    /// Keeps only the members `keep` says yes to, in order, in place
    /// ([`FrontCoded::retain`]).
    pub fn retain(&mut self, mut keep: impl FnMut(&MemberRef<'_>) -> bool) {
        self.0
            .retain(|name, numbers| keep(&member(Cow::Borrowed(name), *numbers)));
    }

    /// How many members it holds.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it holds none.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Gives back the room it does not use.
    pub fn shrink_to_fit(&mut self) {
        self.0.shrink_to_fit();
    }

    /// The members, in the order they were pushed.
    pub fn iter(&self) -> impl Iterator<Item = MemberRef<'_>> + Clone + '_ {
        self.0
            .iter()
            .map(|(name, numbers)| member(Cow::Owned(name), numbers))
    }
}

/// A [`Members`] record as a member.
fn member(name: Cow<'_, [u8]>, [kind, size, mode]: [u64; 3]) -> MemberRef<'_> {
    MemberRef {
        kind: u32::try_from(kind)
            .ok()
            .and_then(char::from_u32)
            .unwrap_or('?'),
        name,
        size,
        mode: u32::try_from(mode).unwrap_or(u32::MAX),
    }
}

/// Decodes tar's `--quoting-style=escape` form (C locale) back into bytes.
pub fn unescape(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            let c = b[i + 1];
            let simple = match c {
                b'\\' => Some(b'\\'),
                b'n' => Some(b'\n'),
                b't' => Some(b'\t'),
                b'r' => Some(b'\r'),
                b'a' => Some(7),
                b'b' => Some(8),
                b'f' => Some(12),
                b'v' => Some(11),
                b' ' => Some(b' '),
                b'"' => Some(b'"'),
                b'\'' => Some(b'\''),
                b'?' => Some(b'?'),
                _ => None,
            };
            if let Some(s) = simple {
                out.push(s);
                i += 2;
                continue;
            }
            let digits: Vec<u8> = b[i + 1..]
                .iter()
                .take(3)
                .take_while(|d| (b'0'..=b'7').contains(d))
                .copied()
                .collect();
            if !digits.is_empty() {
                let v = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(v & 0xff).unwrap_or(0));
                i += 1 + digits.len();
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Parses a mode string such as `-rwsr-xr-t` into its type letter and bits.
fn parse_mode(field: &str) -> Option<(char, u32)> {
    let chars: Vec<char> = field.chars().collect();
    if chars.len() != 10 {
        return None;
    }
    let kind = chars[0];
    let mut mode = 0u32;
    for (who, triple) in chars[1..].chunks(3).enumerate() {
        let shift = 6 - 3 * u32::try_from(who).ok()?;
        let (special, special_bit) = match who {
            0 => ('s', 0o4000),
            1 => ('s', 0o2000),
            _ => ('t', 0o1000),
        };
        match triple[0] {
            'r' => mode |= 0o4 << shift,
            '-' => {}
            _ => return None,
        }
        match triple[1] {
            'w' => mode |= 0o2 << shift,
            '-' => {}
            _ => return None,
        }
        match triple[2] {
            'x' => mode |= 0o1 << shift,
            '-' => {}
            c if c == special => mode |= (0o1 << shift) | special_bit,
            c if c == special.to_ascii_uppercase() => mode |= special_bit,
            _ => return None,
        }
    }
    Some((kind, mode))
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

fn is_time(s: &str) -> bool {
    let b = s.as_bytes();
    (b.len() == 5 || b.len() == 8)
        && b.iter().enumerate().all(|(i, c)| match i {
            2 | 5 => *c == b':',
            _ => c.is_ascii_digit(),
        })
}

/// Splits off the next space-separated field (leading spaces skipped).
fn field(rest: &str) -> Option<(&str, &str)> {
    let rest = rest.trim_start_matches(' ');
    if rest.is_empty() {
        return None;
    }
    let end = rest.find(' ').unwrap_or(rest.len());
    Some((&rest[..end], &rest[end..]))
}

fn parse_line(line: &str) -> Result<Option<ArchiveMember>, String> {
    let (mode_field, rest) = field(line).ok_or("an empty line")?;
    let (kind, mode) =
        parse_mode(mode_field).ok_or_else(|| format!("bad mode string {mode_field:?}"))?;
    let (owner, rest) = field(rest).ok_or("no owner")?;
    if owner == "Creating" {
        // tar's own note, `<mode> Creating directory: <name>`: owners are numeric, so
        // no member line has this second field. The directory itself is checked where
        // it is staged.
        return match rest.strip_prefix(" directory: ") {
            Some(name) if !name.is_empty() => Ok(None),
            _ => Err("a malformed \"Creating directory:\" note".into()),
        };
    }
    let (uid, gid) = owner
        .split_once('/')
        .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)))
        .ok_or_else(|| format!("owner {owner:?} is not numeric uid/gid"))?;
    let (size_field, rest) = field(rest).ok_or("no size")?;
    let size = match kind {
        'c' | 'b' => {
            let (major, minor) = size_field.split_once(',').ok_or("bad device numbers")?;
            if major.parse::<u64>().is_err() || minor.trim().parse::<u64>().is_err() {
                return Err(format!("bad device numbers {size_field:?}"));
            }
            0
        }
        _ => size_field
            .parse()
            .map_err(|_| format!("bad size {size_field:?}"))?,
    };
    let (date, rest) = field(rest).ok_or("no date")?;
    let (time, rest) = field(rest).ok_or("no time")?;
    if !is_date(date) || !is_time(time) {
        return Err(format!("bad date or time {date:?} {time:?}"));
    }
    let name = rest
        .strip_prefix(' ')
        .filter(|n| !n.is_empty())
        .ok_or("no name")?;
    let name = match kind {
        'l' => name.split_once(" -> ").map_or(name, |(n, _)| n),
        'h' => name.split_once(" link to ").map_or(name, |(n, _)| n),
        _ => name,
    };
    let mut bytes = unescape(name);
    while bytes.len() > 1 && bytes.ends_with(b"/") {
        bytes.pop();
    }
    Ok(Some(ArchiveMember {
        kind,
        name: bytes,
        size,
        mode,
        uid,
        gid,
    }))
}

/// Parses tar's verbose listing. Blank lines and tar's "Creating directory:" notes are
/// the only lines that are not members.
///
/// # Errors
/// [`ConfigError::Parse`] naming the first line that is neither, with its number.
pub fn parse_members(listing: &[u8]) -> Result<Vec<ArchiveMember>, ConfigError> {
    let mut out = Vec::new();
    for (number, line) in listing.split(|b| *b == b'\n').enumerate() {
        if let Some(member) = parse_member_line(number + 1, line)? {
            out.push(member);
        }
    }
    Ok(out)
}

/// Parses line `number` (from 1) of tar's verbose listing, as [`parse_members`] does:
/// `None` for a blank line or tar's "Creating directory:" note.
///
/// # Errors
/// [`ConfigError::Parse`] naming the line by its number.
pub fn parse_member_line(number: usize, line: &[u8]) -> Result<Option<ArchiveMember>, ConfigError> {
    if line.is_empty() {
        return Ok(None);
    }
    let bad = |message: String| ConfigError::Parse {
        what: "archive listing".into(),
        message: format!("line {number}: {message}"),
    };
    // With --quoting-style=escape every byte of a name outside printable ASCII is
    // escaped, so a line that is not UTF-8 is not tar's.
    let line = std::str::from_utf8(line).map_err(|_| bad("not text".into()))?;
    parse_line(line).map_err(bad)
}

/// Parses the staged-tree walk: `find -printf '%y %m %n %U %s %P\0'` records (type
/// letter, octal mode, link count, owner, size, path relative to the staging dir). The
/// type letters become tar's (`f` is `-`); a file with several links is still a file.
///
/// # Errors
/// [`ConfigError::Parse`] naming the first malformed record.
#[cfg(test)]
pub fn parse_staged(walk: &[u8]) -> Result<Vec<ArchiveMember>, ConfigError> {
    walk.split(|b| *b == 0)
        .filter(|r| !r.is_empty())
        .enumerate()
        .map(|(number, rec)| parse_staged_record(number + 1, rec))
        .collect()
}

/// Parses record `number` (from 1, empty records not counted) of the staged-tree walk:
/// a `find -printf '%y %m %n %U %s %P\0'` record (type letter, octal mode, link count,
/// owner, size, path relative to the staging dir); the type letters become tar's (`f`
/// is `-`), and a file with several links is still a file.
///
/// # Errors
/// [`ConfigError::Parse`] naming the record by its number.
pub fn parse_staged_record(number: usize, rec: &[u8]) -> Result<ArchiveMember, ConfigError> {
    let bad = |what: &str| ConfigError::Parse {
        what: "staged tree".into(),
        message: format!(
            "record {number}: {what} in {:?}",
            String::from_utf8_lossy(rec)
        ),
    };
    let mut parts = rec.splitn(6, |b| *b == b' ');
    let mut text = |what: &str| {
        parts
            .next()
            .and_then(|p| std::str::from_utf8(p).ok())
            .map(str::to_string)
            .ok_or_else(|| bad(what))
    };
    let kind = match text("no type")?.as_str() {
        "f" => '-',
        "d" => 'd',
        "l" => 'l',
        "b" => 'b',
        "c" => 'c',
        "p" => 'p',
        "s" => 's',
        _ => '?',
    };
    let mode = u32::from_str_radix(&text("no mode")?, 8).map_err(|_| bad("bad mode"))?;
    let _links: u64 = text("no link count")?
        .parse()
        .map_err(|_| bad("bad link count"))?;
    let uid = text("no owner")?.parse().map_err(|_| bad("bad owner"))?;
    let size = text("no size")?.parse().map_err(|_| bad("bad size"))?;
    let name = parts
        .next()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("no path"))?;
    Ok(ArchiveMember {
        kind,
        name: name.to_vec(),
        size,
        mode: mode & 0o7777,
        uid,
        gid: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(names: &[&str]) -> Members {
        let mut members = Members::default();
        for (i, name) in names.iter().enumerate() {
            members.push(&MemberRef {
                kind: if i % 3 == 0 { 'd' } else { '-' },
                name: Cow::Borrowed(name.as_bytes()),
                size: i as u64 * 1000,
                mode: 0o644,
            });
        }
        members
    }

    fn names_of(members: &Members) -> Vec<String> {
        members
            .iter()
            .map(|m| String::from_utf8_lossy(&m.name).into_owned())
            .collect()
    }

    /// Members kept in place are those a copy of the kept ones would hold, with their
    /// numbers, whatever is dropped (a name's shared prefix with a dropped one
    /// included); appending moves lists in, in order.
    #[test]
    fn members_kept_in_place_and_appended_are_those_of_a_copy() {
        let names: Vec<String> = (0..300)
            .map(|i| match i % 4 {
                0 => format!("data/media_store/local_content/{:02}", i / 8),
                1 => format!("data/media_store/local_content/{:02}/{i:0200}", i / 8),
                2 => format!("data/media_store/local_content/{:02}/x{i}", i / 8),
                _ => format!("d{i}"),
            })
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let whole = listed(&refs);
        for keep_every in 1..6 {
            for offset in 0..keep_every {
                let mut kept = whole.clone();
                let mut at = 0;
                kept.retain(|_| {
                    at += 1;
                    at % keep_every == offset
                });
                let mut copy = Members::default();
                for (i, m) in whole.iter().enumerate() {
                    if (i + 1) % keep_every == offset {
                        copy.push(&m);
                    }
                }
                assert_eq!(kept, copy, "every {keep_every} from {offset}");
                assert_eq!(
                    kept.iter().collect::<Vec<_>>(),
                    copy.iter().collect::<Vec<_>>()
                );
                // Pushing after a retain goes on from the last kept name.
                kept.push(&MemberRef {
                    kind: '-',
                    name: Cow::Borrowed(b"data/media_store/z"),
                    size: 1,
                    mode: 0o600,
                });
                assert_eq!(
                    names_of(&kept).last().map(String::as_str),
                    Some("data/media_store/z")
                );
            }
        }
        // Past one list: many lists, kept in place and joined the same.
        let many: Vec<String> = (0..30_000)
            .map(|i| format!("data/media_store/local_content/{:04}/{i:030}", i / 3))
            .collect();
        let many_refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let mut big = listed(&many_refs);
        assert!(big.0.lists() > 2, "{} lists", big.0.lists());
        assert_eq!(names_of(&big), many);
        big.retain(|m| m.name.ends_with(b"7"));
        let sevens: Vec<String> = many.iter().filter(|n| n.ends_with('7')).cloned().collect();
        assert_eq!(names_of(&big), sevens);
        big.shrink_to_fit();
        assert_eq!(big.len(), sevens.len());

        let mut none = whole.clone();
        none.retain(|_| false);
        assert!(none.is_empty() && none.iter().next().is_none());

        let mut joined = listed(&refs[..10]);
        joined.shrink_to_fit();
        joined.append(listed(&refs[10..200]));
        joined.append(Members::default());
        joined.append(listed(&refs[200..]));
        assert_eq!(joined.len(), whole.len());
        assert_eq!(names_of(&joined), names);
        let sizes: Vec<u64> = joined.iter().map(|m| m.size).collect();
        let expected: Vec<u64> = (0..10)
            .chain(0..190)
            .chain(0..100)
            .map(|i| i as u64 * 1000)
            .collect();
        assert_eq!(sizes, expected);
    }

    #[test]
    fn unescapes_tar_names() {
        assert_eq!(unescape(r"d/u\303\251"), "d/u\u{e9}".as_bytes());
        assert_eq!(unescape(r"d/nl\nx"), b"d/nl\nx");
        assert_eq!(unescape(r"d/bs\\x"), b"d/bs\\x");
        assert_eq!(unescape(r"d/r\377"), b"d/r\xff");
        assert_eq!(unescape("d/$(touch p) q'\"x"), b"d/$(touch p) q'\"x");
    }

    fn names(m: &[ArchiveMember]) -> Vec<(char, String)> {
        m.iter()
            .map(|m| (m.kind, String::from_utf8_lossy(&m.name).into_owned()))
            .collect()
    }

    #[test]
    fn parses_verbose_listing() {
        let listing =
            b"drwxr-xr-x 0/0         0 2026-11-26 07:26 data/media_store/local_content/\n\
-rw-r--r-- 65534/65534 2 2026-11-26 07:26 data/media_store/local_content/a b\n\
lrwxrwxrwx 0/0         0 2026-11-26 07:32 data/l -> /etc\n\
hrw-r--r-- 0/0         0 2026-11-26 07:32 data/h link to data/x\n\
crw-r--r-- 0/0       1,3 2026-11-26 07:32 data/null\n\
-rwsr-sr-t 0/0         5 2026-11-26 07:32 data/suid\n\
drwxr-xr-x                  Creating directory: tmp\n";
        let m = parse_members(listing).unwrap();
        assert_eq!(
            names(&m),
            [
                ('d', "data/media_store/local_content".into()),
                ('-', "data/media_store/local_content/a b".into()),
                ('l', "data/l".into()),
                ('h', "data/h".into()),
                ('c', "data/null".into()),
                ('-', "data/suid".into()),
            ]
        );
        assert_eq!((m[1].size, m[1].mode, m[1].uid), (2, 0o644, 65534));
        assert_eq!(m[5].mode, 0o7755);
        assert_eq!(parse_mode("-rwSr-Sr-T"), Some(('-', 0o7644)));
    }

    /// A name that contains tar's note text is still a member, checked like any other.
    #[test]
    fn a_name_with_the_creating_directory_text_is_a_member() {
        let listing =
            b"lrwxrwxrwx 0/0 0 2026-11-26 07:32 data/media_store/local_content/x Creating directory: y -> /etc\n";
        let m = parse_members(listing).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].kind, 'l');
    }

    #[test]
    fn parses_the_staged_walk() {
        let walk = b"d 755 2 65534 4096 data\0f 4755 2 0 5 data/a b\nc\0l 777 1 0 4 data/l\0p 644 1 0 0 data/fifo\0";
        let m = parse_staged(walk).unwrap();
        assert_eq!(
            names(&m),
            [
                ('d', "data".into()),
                ('-', "data/a b\nc".into()),
                ('l', "data/l".into()),
                ('p', "data/fifo".into()),
            ]
        );
        assert_eq!((m[0].uid, m[1].mode, m[1].size), (65534, 0o4755, 5));
        for bad in [&b"f x 1 0 0 a\0"[..], b"f 644 1 0 0\0", b"f 644 1 0 z a\0"] {
            let e = parse_staged(bad).unwrap_err().to_string();
            assert!(e.contains("staged tree") && e.contains("record 1"), "{e}");
        }
    }

    #[test]
    fn unparseable_lines_are_errors_naming_the_line() {
        for bad in [
            &b"-rw-r--r-- root/root 2 2026-11-26 07:26 a\n"[..],
            b"-rw-r--r-- 0/0 x 2026-11-26 07:26 a\n",
            b"-rw-r--r-- 0/0 2 -1 07:26 a\n",
            b"-rw-r--r-- 0/0 2 2026-11-26 07:26\n",
            b"garbage\n",
            b"drwxr-xr-x Creating\n",
            b"-rw-r--r-- 0/0 2 2026-11-26 07:26 \xff\n",
        ] {
            let e = parse_members(bad).unwrap_err().to_string();
            assert!(e.contains("archive listing") && e.contains("line 1"), "{e}");
        }
        let e = parse_members(b"-rw-r--r-- 0/0 2 2026-11-26 07:26 a\nbad\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}

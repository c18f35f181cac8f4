//! The pure side of reading backups back: the fetch (verify/restore) and swap scripts,
//! the archive listing parser, and the rules for which members may be restored.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use crate::backup::layout::{DatabaseKind, HomeserverConfig, Layout, join};
pub use crate::backup::listing::{
    ArchiveMember, MemberRef, Members, parse_member_line, parse_members, parse_staged_record,
};
use crate::backup::manifest::{
    EntryKind, INNER_MANIFEST_MEMBER, InnerManifest, Manifest, ManifestLayout,
};
use crate::backup::plan::{self, Compression, ScriptCall, WorkDir};
use crate::backup::scripts::{self, WorkFile};
use crate::s3::S3Parameters;
use crate::s3::aws_cli::{self, Transfer};

/// The environment shared with the backup script, plus the object URL.
fn fetch_env(
    layout: &Layout,
    params: &S3Parameters,
    work: &WorkDir,
    key: &str,
) -> BTreeMap<String, String> {
    let mut env = plan::script_env(layout, params, work);
    env.insert("SB_URL".into(), plan::s3_url(params, key));
    env
}

/// The call that lists a backup without touching live files; `compression` is the
/// backup's (its manifest's): with zstd, gpg's output goes through `zstd -d`.
pub fn list_call(
    layout: &Layout,
    params: &S3Parameters,
    work: &WorkDir,
    key: &str,
    compression: Compression,
) -> ScriptCall {
    let mut env = fetch_env(layout, params, work, key);
    env.insert("SB_MODE".into(), "list".into());
    if compression.zstd_level().is_some() {
        env.insert("SB_DECOMPRESS".into(), "zstd".into());
    }
    let mut argv = vec![
        layout.bash.clone(),
        "-c".into(),
        scripts::FETCH.into(),
        "bash".into(),
    ];
    argv.extend(plan::aws_common_args(params));
    argv.extend(aws_cli::sse_args(
        params,
        Transfer::Download,
        &work.path(WorkFile::SseCKey),
    ));
    ScriptCall { argv, env }
}

/// The call that extracts a backup (compressed as `compression` says) into the work
/// dir's `stage`, after checking that `need_bytes` are free where the work dir is.
pub fn extract_call(
    layout: &Layout,
    params: &S3Parameters,
    work: &WorkDir,
    key: &str,
    compression: Compression,
    need_bytes: u64,
) -> ScriptCall {
    let mut call = list_call(layout, params, work, key, compression);
    call.env.insert("SB_MODE".into(), "extract".into());
    call.env
        .insert("SB_NEED_BYTES".into(), need_bytes.to_string());
    call.env.insert("SB_SPACE_DIR".into(), work.dir.clone());
    call
}

/// `call` (a fetch) with its input read from standard input
/// after the passphrase line (`SB_INPUT=stdin`), for [`Transfer::Library`](crate::Transfer::Library):
/// the script's constant argv only (no aws CLI argument, so no SSE-C key path) and no
/// `AWS_*` variable, `SB_AWS` or object address in its environment.
pub(crate) fn streamed_input(call: &ScriptCall) -> ScriptCall {
    let mut env: BTreeMap<String, String> = call
        .env
        .iter()
        .filter(|(k, _)| !k.starts_with("AWS_") && !matches!(k.as_str(), "SB_AWS" | "SB_URL"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.insert("SB_INPUT".into(), "stdin".into());
    ScriptCall {
        argv: call.argv.iter().take(4).cloned().collect(),
        env,
    }
}

/// The env of the swap script: the `SB_` part of the shared environment (no secrets).
fn swap_env(layout: &Layout, params: &S3Parameters, work: &WorkDir) -> BTreeMap<String, String> {
    plan::script_env(layout, params, work)
        .into_iter()
        .filter(|(k, _)| k.starts_with("SB_") && k != "SB_HASH_PY")
        .collect()
}

fn swap_argv(layout: &Layout, mode: &str) -> Vec<String> {
    vec![
        layout.bash.clone(),
        "-c".into(),
        scripts::SWAP.into(),
        "bash".into(),
        mode.into(),
    ]
}

/// The call that swaps staged files in (`rollback: false`) or undoes it. With `db` (the
/// database's member name), every live SQLite sidecar of it (`<db>-wal`, `-shm`, `-journal`, `-mj…`) is set aside too and its name
/// printed (NUL-terminated).
pub fn swap_call(
    layout: &Layout,
    params: &S3Parameters,
    work: &WorkDir,
    rollback: bool,
    db: Option<&str>,
) -> ScriptCall {
    let mut env = swap_env(layout, params, work);
    if let Some(db) = db {
        env.insert("SB_DB_MEMBER".into(), db.into());
    }
    let mode = if rollback { "rollback" } else { "swap" };
    ScriptCall {
        argv: swap_argv(layout, mode),
        env,
    }
}

/// The call that checks the staged database `db` (member name): `PRAGMA
/// integrity_check`, one-time keys removed unless `keep_one_time_keys`.
pub fn check_db_call(
    layout: &Layout,
    params: &S3Parameters,
    work: &WorkDir,
    db: &str,
    keep_one_time_keys: bool,
) -> ScriptCall {
    let mut env = swap_env(layout, params, work);
    env.insert("SB_STAGED_DB".into(), join(&work.path(WorkFile::Stage), db));
    env.insert(
        "SB_KEEP_OTK".into(),
        if keep_one_time_keys { "1" } else { "0" }.into(),
    );
    ScriptCall {
        argv: swap_argv(layout, "check-db"),
        env,
    }
}

/// The call that checks what the swap of the units in the work dir's `swap.sizes` needs
/// (write access, and space where a move crosses file systems), with staging in
/// `stage_base` still to come for `staging` bytes (0 when staged already).
pub fn preflight_call(
    layout: &Layout,
    params: &S3Parameters,
    work: &WorkDir,
    stage_base: &str,
    staging: u64,
) -> ScriptCall {
    let mut env = swap_env(layout, params, work);
    env.insert("SB_STAGE_BASE".into(), stage_base.into());
    // Within what the script's shell arithmetic adds to without overflowing.
    env.insert(
        "SB_PREFLIGHT_STAGING".into(),
        staging.min(1 << 60).to_string(),
    );
    ScriptCall {
        argv: swap_argv(layout, "preflight"),
        env,
    }
}

/// The `swap.sizes` file of [`preflight_call`]: each of `units` and what the regular
/// files and directories of `members` under it take on disk
/// ([`EntryKind::on_disk`](crate::backup::manifest::EntryKind::on_disk): whole blocks,
/// not bytes), as NUL-separated pairs.
pub fn unit_sizes<'m>(
    rules: &RestoreRules,
    members: impl IntoIterator<Item = MemberRef<'m>>,
    units: &[String],
) -> Vec<u8> {
    let mut sizes: BTreeMap<&str, u64> = units.iter().map(|u| (u.as_str(), 0)).collect();
    // A hard link ('h') takes no room of its own.
    for m in members.into_iter().filter(|m| matches!(m.kind, '-' | 'd')) {
        if let Some(unit) = rules.unit(&String::from_utf8_lossy(&m.name))
            && let Some(total) = sizes.get_mut(unit.as_str())
        {
            let kind = EntryKind::from_tar_letter(m.kind).unwrap_or(EntryKind::File);
            *total = total.saturating_add(kind.on_disk(m.size));
        }
    }
    let mut out = Vec::new();
    for (unit, size) in sizes {
        out.extend_from_slice(unit.as_bytes());
        out.push(0);
        out.extend_from_slice(size.to_string().as_bytes());
        out.push(0);
    }
    out
}

/// The call that moves the staged paths listed in the work dir's `place.list` into
/// `target` (an extraction: nothing live is touched).
pub fn place_call(
    layout: &Layout,
    params: &S3Parameters,
    work: &WorkDir,
    target: &str,
) -> ScriptCall {
    let mut env = swap_env(layout, params, work);
    env.insert("SB_TARGET".into(), target.into());
    ScriptCall {
        argv: swap_argv(layout, "place"),
        env,
    }
}

/// The paths an extraction places, relative to the root: every unit when `include` is
/// empty, else each include (a leading `/` and trailing `/` dropped) that is a member
/// of the archive or a directory above one, without those inside another include.
/// `members` is the archive's listing without the inner manifest; `never` says which
/// members are never restored (the database's sidecars).
///
/// # Errors
/// The include that names nothing in the archive, or is not a plain relative path.
pub fn select_includes<N: AsRef<[u8]>, I: Iterator<Item = N>>(
    names: impl Fn() -> I,
    units: &[String],
    include: &[String],
    never: impl Fn(&str) -> bool,
) -> Result<Vec<String>, String> {
    if include.is_empty() {
        return Ok(units.to_vec());
    }
    let mut chosen: Vec<String> = Vec::new();
    for raw in include {
        let path = raw.trim_start_matches('/').trim_end_matches('/');
        if path.is_empty()
            || path.contains('\0')
            || path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(format!(
                "--include {raw:?}: not a path in the backup (e.g. data/homeserver.db)"
            ));
        }
        if never(path) {
            return Err(format!(
                "--include {raw:?}: a sidecar of the database, which is never restored (the database is made self-contained)"
            ));
        }
        let below = format!("{path}/");
        let found = names().any(|n| {
            let n = n.as_ref();
            n == path.as_bytes() || n.starts_with(below.as_bytes())
        });
        if !found {
            return Err(format!(
                "--include {raw:?}: the backup holds nothing at {path}"
            ));
        }
        chosen.push(path.to_string());
    }
    chosen.sort();
    chosen.dedup();
    let all = chosen.clone();
    chosen.retain(|p| {
        !all.iter()
            .any(|other| other != p && p.starts_with(&format!("{other}/")))
    });
    Ok(chosen)
}

/// Which archive members may be restored, from the live layout and `homeserver.yaml`
/// (or, for a verify without them, the layout a manifest recorded).
///
/// One rule set serves verify (over tar's listing) and restore (over that listing and
/// the walk of the staged tree), so a backup that verifies is one restore accepts.
#[derive(Debug, Clone)]
pub struct RestoreRules {
    config_dir: String,
    signing_key: Option<String>,
    db_dir: Option<String>,
    db_name: Option<String>,
    media: String,
    /// Further single files a manifest names as archived (e.g. a signing key outside
    /// the config dir).
    extra: Vec<String>,
}

/// Where a member list comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberSource {
    /// tar's verbose listing, in archive order: the inner manifest may only lead it.
    Listing,
    /// The walk of the staged tree (any order).
    Staged,
}

/// What [`RestoreRules::check`] found in an acceptable member list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckedMembers {
    /// The swap units (top-level paths moved as a whole).
    pub units: BTreeSet<String>,
    /// Entries whose set-id, sticky or world-writable bits are stripped at restore:
    /// `(name, archived mode)`.
    pub stripped: Vec<(String, u32)>,
    /// Whether the list carries the inner manifest (exempt from the rules, never restored).
    pub has_inner_manifest: bool,
}

/// The bits never restored: set-user-id, set-group-id, sticky and world-writable.
pub const STRIPPED_BITS: u32 = 0o7002;

/// The inner manifest's directory (`.synapse-backup`).
fn inner_dir() -> &'static str {
    INNER_MANIFEST_MEMBER
        .split_once('/')
        .map_or(INNER_MANIFEST_MEMBER, |(d, _)| d)
}

/// How a restore reports a stripped mode: `name: 4755 -> 0755`.
pub fn describe_stripped(name: &str, mode: u32) -> String {
    format!("{name}: {:04o} -> {:04o}", mode, mode & !STRIPPED_BITS)
}

impl RestoreRules {
    /// The rules for this workload.
    pub fn new(layout: &Layout, config: &HomeserverConfig) -> Self {
        let (db_dir, db_name) = match &config.database {
            DatabaseKind::Sqlite(p) => split_member(&Layout::member_name(p)),
            DatabaseKind::Postgresql => (None, None),
        };
        RestoreRules {
            config_dir: Layout::member_name(&layout.config_dir),
            signing_key: config.signing_key_path.as_deref().map(Layout::member_name),
            db_dir,
            db_name,
            media: Layout::member_name(&config.media_store_path),
            extra: Vec::new(),
        }
    }

    /// The rules for a backup's recorded layout, when the workload's own
    /// `homeserver.yaml` cannot be read (a verify on an admin machine): its config dir,
    /// media store, `<data dir>/homeserver.db` (or the `.db` member it names) and the
    /// single files it names.
    pub fn from_manifest(recorded: &ManifestLayout) -> Self {
        let data_dir = Layout::member_name(&recorded.data_dir);
        let media = Layout::member_name(&recorded.media_store_path);
        let db = recorded
            .members
            .iter()
            .find(|m| {
                m.ends_with(".db") && !m.starts_with(&format!("{media}/")) && !m.contains("/.")
            })
            .cloned()
            .unwrap_or_else(|| {
                if data_dir.is_empty() {
                    "homeserver.db".into()
                } else {
                    join(&data_dir, "homeserver.db")
                }
            });
        let (db_dir, db_name) = split_member(&db);
        let mut rules = RestoreRules {
            config_dir: Layout::member_name(&recorded.config_dir),
            signing_key: None,
            db_dir,
            db_name,
            media,
            extra: Vec::new(),
        };
        rules.extra = recorded
            .members
            .iter()
            .filter(|m| rules.unit(m).is_none())
            .cloned()
            .collect();
        rules
    }

    /// The database's member name, when the database is SQLite.
    pub fn database(&self) -> Option<String> {
        let (dir, name) = (self.db_dir.as_ref()?, self.db_name.as_ref()?);
        Some(if dir.is_empty() {
            name.clone()
        } else {
            join(dir, name)
        })
    }

    /// Whether `name` is one of SQLite's own sidecars of the database
    /// (`homeserver.db-wal`, `-shm`, `-journal`, a super-journal `-mj…`); a user's
    /// `homeserver.db-before-upgrade` is not one.
    pub fn is_db_sidecar(&self, name: &str) -> bool {
        self.database().is_some_and(|db| {
            name.strip_prefix(db.as_str())
                .is_some_and(crate::backup::layout::is_sqlite_sidecar_suffix)
        })
    }

    /// The member's swap unit (the top-level path moved as a whole: a key file, a
    /// database file, a `local_*` media dir), or `None` when it is not restorable.
    pub fn unit(&self, name: &str) -> Option<String> {
        let (dir, base) = name.rsplit_once('/').unwrap_or(("", name));
        if (dir == self.config_dir && base.ends_with(".key"))
            || self.signing_key.as_deref() == Some(name)
            || self.extra.iter().any(|e| e == name)
        {
            return Some(name.to_string());
        }
        if let (Some(db_dir), Some(db_name)) = (&self.db_dir, &self.db_name)
            && dir == db_dir
            && base.starts_with(db_name.as_str())
        {
            return Some(name.to_string());
        }
        let under_media = name
            .strip_prefix(self.media.as_str())
            .and_then(|r| r.strip_prefix('/'))?;
        let first = under_media.split('/').next()?;
        first
            .starts_with("local_")
            .then(|| format!("{}/{first}", self.media))
    }

    /// Whether `name` is an ancestor directory of some restorable path.
    fn is_ancestor(&self, name: &str) -> bool {
        let prefix = format!("{name}/");
        [
            Some(&self.config_dir),
            self.db_dir.as_ref(),
            Some(&self.media),
        ]
        .into_iter()
        .flatten()
        .chain(self.signing_key.iter())
        .chain(self.extra.iter())
        .any(|d| d == name || d.starts_with(&prefix))
    }

    /// Checks every member: only regular files (a hard link to another member counts
    /// as one) and directories inside the restorable paths (signing keys, the database and its sidecars, local media), never absolute,
    /// never with `..`. The inner manifest (`.synapse-backup/manifest.json`, a regular
    /// file, and its directory) is exempt and never a unit; from tar's listing only when
    /// it leads the archive. Set-id, sticky and world-writable bits are not refused but
    /// reported in [`CheckedMembers::stripped`].
    ///
    /// # Errors
    /// `(member, reason)` for the first member that is refused.
    pub fn check(
        &self,
        members: &[ArchiveMember],
        source: MemberSource,
    ) -> Result<CheckedMembers, (String, String)> {
        self.check_refs(members.iter().map(ArchiveMember::as_ref), source)
    }

    /// [`RestoreRules::check`] of borrowed members (e.g. a compact [`Members`]).
    ///
    /// # Errors
    /// As [`RestoreRules::check`].
    pub fn check_refs<'m, I>(
        &self,
        members: I,
        source: MemberSource,
    ) -> Result<CheckedMembers, (String, String)>
    where
        I: IntoIterator<Item = MemberRef<'m>>,
        I::IntoIter: Clone,
    {
        let members = members.into_iter();
        let mut out = CheckedMembers::default();
        let leading = match source {
            MemberSource::Listing => inner_position(members.clone()).map_or(0, |p| p + 1),
            MemberSource::Staged => 0,
        };
        for (i, m) in members.enumerate() {
            let text = String::from_utf8_lossy(&m.name).into_owned();
            if m.name.starts_with(b"/") {
                return Err((text, "absolute member names are refused".into()));
            }
            if m.name.split(|b| *b == b'/').any(|c| c == b"..") {
                return Err((text, "member names with '..' are refused".into()));
            }
            let exempt = match source {
                MemberSource::Listing => i < leading,
                MemberSource::Staged => {
                    (m.name == inner_dir().as_bytes() && m.kind == 'd')
                        || (m.name == INNER_MANIFEST_MEMBER.as_bytes() && m.kind == '-')
                }
            };
            if exempt {
                out.has_inner_manifest |= m.name == INNER_MANIFEST_MEMBER.as_bytes();
                continue;
            }
            match m.kind {
                // A hard link to another member is a file with several links once
                // staged: its target is a member too, checked by these same rules.
                '-' | 'd' | 'h' => {}
                'l' => return Err((text, "symbolic links are refused".into())),
                _ => {
                    return Err((
                        text,
                        "devices, FIFOs and other special files are refused".into(),
                    ));
                }
            }
            let unit = match std::str::from_utf8(&m.name) {
                Ok(name) => match self.unit(name) {
                    Some(u) => Some(u),
                    None if m.kind == 'd' && self.is_ancestor(name) => None,
                    None => {
                        return Err((
                            text,
                            "outside the restorable paths (signing keys, homeserver.db*, local media)"
                                .into(),
                        ));
                    }
                },
                // Non-UTF-8 names can only be inside a media dir: find its unit by bytes.
                Err(_) => match self.unit(&text) {
                    Some(u) if u.contains("/local_") => Some(u),
                    _ => return Err((text, "outside the restorable paths".into())),
                },
            };
            if let Some(u) = unit {
                out.units.insert(u);
            }
            if m.mode & STRIPPED_BITS != 0 {
                out.stripped.push((text, m.mode));
            }
        }
        Ok(out)
    }
}

fn split_member(m: &str) -> (Option<String>, Option<String>) {
    match m.rsplit_once('/') {
        Some((d, n)) => (Some(d.to_string()), Some(n.to_string())),
        None => (Some(String::new()), Some(m.to_string())),
    }
}

/// Where the inner manifest sits in tar's listing: index 0, or 1 after its directory;
/// `None` when the archive does not start with it (only the first two members are
/// looked at).
pub fn inner_position<'m>(members: impl IntoIterator<Item = MemberRef<'m>>) -> Option<usize> {
    let is_file = |m: &MemberRef<'_>| m.kind == '-' && m.name == INNER_MANIFEST_MEMBER.as_bytes();
    let mut first = members.into_iter();
    match (first.next(), first.next()) {
        (Some(m), _) if is_file(&m) => Some(0),
        (Some(dir), Some(second))
            if dir.kind == 'd' && dir.name == inner_dir().as_bytes() && is_file(&second) =>
        {
            Some(1)
        }
        _ => None,
    }
}

/// Checks what a backup claims against what its encrypted stream carries: the inner
/// manifest (its bytes in `head`, the stream's first file) against the id asked for
/// and the external manifest's nonce, and the external manifest's file list against the
/// archive's members, both ways. Returns the inner manifest when there is one, and
/// warnings.
///
/// A stream that carries an inner manifest is never accepted without the external
/// manifest repeating its nonce (so it is never a `legacy` backup); an external manifest
/// that names a nonce needs an inner manifest. `part` says what the stream is read as:
/// a whole backup (a pack of a chain is refused), the own pack of a chain, or an older
/// pack read for some of its members (its listing is checked by the caller).
///
/// # Errors
/// What does not match.
pub fn check_claims<'m, 'f, M, F>(
    id: &str,
    members: M,
    head: Option<&[u8]>,
    manifest: Option<(&Manifest, F)>,
    part: Part,
) -> Result<(Option<InnerManifest>, Vec<String>), String>
where
    M: Iterator<Item = MemberRef<'m>> + Clone,
    F: Iterator<Item = (Cow<'f, [u8]>, EntryKind)> + Clone,
{
    let mut warnings = Vec::new();
    let (manifest, files) = match manifest {
        Some((m, files)) => (Some(m), Some(files)),
        None => (None, None),
    };
    let inner = match inner_position(members.clone()) {
        Some(p) => {
            let declared = members.clone().nth(p).map_or(0, |m| m.size);
            let size = usize::try_from(declared).unwrap_or(usize::MAX);
            let head = head.unwrap_or_default();
            if size > head.len() || size > 65536 {
                return Err(format!(
                    "its inner manifest ({declared} bytes) could not be read whole"
                ));
            }
            let inner = InnerManifest::from_json(&head[..size]).map_err(|e| e.to_string())?;
            if inner.backup_id.as_str() != id {
                return Err(format!(
                    "it was made as {:?}, not {id:?} (a backup copied under another id)",
                    inner.backup_id
                ));
            }
            let Some(m) = manifest else {
                return Err(
                    "its data carries an inner manifest but it has no manifest: a backup of ours stripped of its manifest is not restored as legacy"
                        .into(),
                );
            };
            if m.nonce.as_deref() != Some(inner.nonce.as_str()) {
                return Err("its manifest does not belong to its data (the nonces differ)".into());
            }
            if part == Part::Whole
                && let Some(base) = inner.chain.as_ref().and_then(|c| c.base())
            {
                // Its pack alone is not the backup: never restore part of a chain as if
                // it were whole.
                return Err(format!(
                    "it is an incremental backup on top of {} ({} packs), but its manifest records no chain (altered or stripped): it is not restored as if it were whole",
                    base.id,
                    inner.chain.as_ref().map_or(1, |c| c.packs())
                ));
            }
            Some(inner)
        }
        None => {
            if let Some(m) = manifest {
                if m.nonce.is_some() {
                    return Err(
                        "its manifest names an inner manifest that its data does not carry".into(),
                    );
                }
                warnings.push(
                    "made before backups carried an inner manifest: its id and manifest are not authenticated"
                        .into(),
                );
            }
            None
        }
    };
    if let (Some(m), Some(files)) = (manifest, files) {
        if part == Part::Older {
            if m.backup_id.as_str() != id {
                return Err(format!("its manifest names {:?}, not {id:?}", m.backup_id));
            }
        } else {
            check_listed(id, members, m, files)?;
        }
    }
    Ok((inner, warnings))
}

/// What a stream is read as, for [`check_claims`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// A whole backup: a pack of a chain is refused.
    Whole,
    /// The backup's own pack of a chain, read whole.
    Own,
    /// An older pack of a chain, read for the members its backup's index assigns to it:
    /// its listing is a part of its manifest's, checked by the caller.
    Older,
}

/// Sorted by name, one entry per name (the last one given of a name, as a map
/// collected from `entries` keeps): a compact map for [`check_listed`], without a
/// tree's nodes.
fn sorted_unique<'a, K: Copy>(
    entries: impl Iterator<Item = (Cow<'a, [u8]>, K)>,
) -> Vec<(Cow<'a, [u8]>, K)> {
    let mut v: Vec<(Cow<'a, [u8]>, K)> = entries.collect();
    // Stable: of one name, the entries stay in the order given.
    v.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<(Cow<'a, [u8]>, K)> = Vec::with_capacity(v.len());
    for entry in v {
        match out.last_mut() {
            Some(last) if last.0 == entry.0 => *last = entry,
            _ => out.push(entry),
        }
    }
    out
}

/// The value of `name` in a [`sorted_unique`] list.
fn lookup<K: Copy>(list: &[(Cow<'_, [u8]>, K)], name: &[u8]) -> Option<K> {
    list.binary_search_by(|(n, _)| n.as_ref().cmp(name))
        .ok()
        .map(|i| list[i].1)
}

/// A member's kind as the manifest says it, or tar's letter when it has none.
type TarKind = Result<EntryKind, char>;

/// The external manifest `m` against the archive's `members`: its id, and every
/// member listed with its kind, none missing, none extra.
fn check_listed<'m, 'f>(
    id: &str,
    members: impl Iterator<Item = MemberRef<'m>> + Clone,
    m: &Manifest,
    files: impl Iterator<Item = (Cow<'f, [u8]>, EntryKind)> + Clone,
) -> Result<(), String> {
    if m.backup_id.as_str() != id {
        return Err(format!("its manifest names {:?}, not {id:?}", m.backup_id));
    }
    let skip = inner_position(members.clone()).map_or(0, |p| p + 1);
    let listed_entries = || {
        files.clone().filter(|(p, _)| {
            p.as_ref() != INNER_MANIFEST_MEMBER.as_bytes() && p.as_ref() != inner_dir().as_bytes()
        })
    };
    let archived_entries = || {
        members
            .clone()
            .skip(skip)
            .map(|a| (a.name, EntryKind::from_tar_letter(a.kind).ok_or(a.kind)))
    };
    // Create writes the manifest from tar's listing, in archive order: when the two
    // agree entry for entry (names and kinds), they agree as maps too, and nothing
    // needs sorting (nor held: both are walked once, side by side).
    if listed_entries()
        .map(|(p, kind)| (p, Ok(kind)))
        .eq(archived_entries())
    {
        return Ok(());
    }
    // A tar type letter with no manifest kind (e.g. GNU tar's rare ones) is told as
    // itself and matches nothing the manifest lists.
    let archived: Vec<(Cow<'_, [u8]>, TarKind)> = sorted_unique(archived_entries());
    let listed: Vec<(Cow<'_, [u8]>, EntryKind)> = sorted_unique(listed_entries());
    if let Some((name, _)) = listed
        .iter()
        .find(|(n, _)| lookup(&archived, n.as_ref()).is_none())
    {
        return Err(format!(
            "the archive lacks {:?}, which its manifest lists",
            String::from_utf8_lossy(name)
        ));
    }
    if let Some((name, _)) = archived
        .iter()
        .find(|(n, _)| lookup(&listed, n.as_ref()).is_none())
    {
        return Err(format!(
            "the archive holds {:?}, which its manifest does not list",
            String::from_utf8_lossy(name)
        ));
    }
    if let Some((name, k)) = listed
        .iter()
        .find(|(n, k)| lookup(&archived, n.as_ref()) != Some(Ok(*k)))
    {
        let in_archive = match lookup(&archived, name.as_ref()) {
            Some(Ok(kind)) => kind.to_string(),
            Some(Err(letter)) => format!("member of tar type {letter:?}"),
            None => "missing member".into(),
        };
        return Err(format!(
            "{:?} is a {k} in the manifest but a {in_archive} in the archive",
            String::from_utf8_lossy(name),
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Parameters of a bucket on AWS (the calls only carry them).
    fn params() -> S3Parameters {
        S3Parameters::builder("a", "b", "bkt")
            .region("us-east-1")
            .build()
            .unwrap()
    }

    /// [`super::check_claims`] of a member list and a manifest's own file list.
    fn check_claims(
        id: &str,
        members: &[ArchiveMember],
        head: Option<&[u8]>,
        manifest: Option<&Manifest>,
        part: Part,
    ) -> Result<(Option<InnerManifest>, Vec<String>), String> {
        super::check_claims(
            id,
            members.iter().map(ArchiveMember::as_ref),
            head,
            manifest.map(|m| {
                (
                    m,
                    m.files
                        .iter()
                        .map(|f| (Cow::Borrowed(f.path.as_bytes()), f.kind)),
                )
            }),
            part,
        )
    }

    /// [`super::select_includes`] of a member list.
    fn select_includes(
        members: &[ArchiveMember],
        units: &[String],
        include: &[String],
        never: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>, String> {
        super::select_includes(
            || members.iter().map(|m| m.name.as_slice()),
            units,
            include,
            never,
        )
    }

    /// The rules of a Synapse tree at `/r` with its media in `/data/media_store`.
    pub(crate) fn rules() -> RestoreRules {
        let layout = Layout {
            root: "/r".into(),
            ..Layout::default()
        };
        let config = HomeserverConfig::parse(
            "media_store_path: /data/media_store\n",
            "/data/homeserver.yaml",
            &layout,
        )
        .unwrap();
        RestoreRules::new(&layout, &config)
    }

    fn member(kind: char, name: &str) -> ArchiveMember {
        ArchiveMember {
            kind,
            name: name.as_bytes().to_vec(),
            size: 0,
            mode: 0o644,
            uid: 0,
            gid: 0,
        }
    }

    /// What the swap's preflight is told each unit takes: whole 4 KiB blocks for each
    /// file and directory under it, nothing for a hard link.
    #[test]
    fn unit_sizes_count_what_the_files_take_on_disk() {
        let r = rules();
        let sized = |kind, name: &str, size| ArchiveMember {
            size,
            ..member(kind, name)
        };
        let members = [
            sized('d', "data/media_store/local_content", 0),
            sized('d', "data/media_store/local_content/ab", 0),
            sized('-', "data/media_store/local_content/ab/one", 1),
            sized('-', "data/media_store/local_content/ab/two", 4097),
            sized('h', "data/media_store/local_content/ab/three", 0),
            sized('-', "data/homeserver.db", 0),
        ];
        let units = [
            "data/media_store/local_content".to_string(),
            "data/homeserver.db".to_string(),
        ];
        let sizes = unit_sizes(&r, members.iter().map(ArchiveMember::as_ref), &units);
        assert_eq!(
            sizes,
            b"data/homeserver.db\x000\x00data/media_store/local_content\x0020480\x00"
        );
    }

    #[test]
    fn rules_accept_the_backup_set_and_name_units() {
        let r = rules();
        let members = vec![
            member('-', "data/signing.key"),
            member('-', "data/homeserver.db"),
            member('d', "data/media_store/local_content"),
            member('-', "data/media_store/local_content/ab/cd/ef"),
            member('-', "data/media_store/local_thumbnails/x"),
            member('d', "data"),
        ];
        let units = r.check(&members, MemberSource::Listing).unwrap().units;
        assert_eq!(
            units.into_iter().collect::<Vec<_>>(),
            [
                "data/homeserver.db",
                "data/media_store/local_content",
                "data/media_store/local_thumbnails",
                "data/signing.key"
            ]
        );
    }

    #[test]
    fn rules_refuse_hostile_members() {
        let r = rules();
        for (m, why) in [
            (member('-', "/etc/x"), "absolute"),
            (member('-', "data/../../etc/x"), ".."),
            (member('l', "data/media_store/local_content/l"), "symbolic"),
            (member('c', "data/media_store/local_content/dev"), "devices"),
            (member('-', "data/homeserver.yaml"), "outside"),
            (member('-', "data/media_store/remote_content/x"), "outside"),
            (member('-', "etc/passwd"), "outside"),
        ] {
            for source in [MemberSource::Listing, MemberSource::Staged] {
                let (name, reason) = r.check(std::slice::from_ref(&m), source).unwrap_err();
                assert!(reason.contains(why), "{name}: {reason}");
            }
        }
    }

    #[test]
    fn sidecars_are_known_by_the_database_name() {
        let r = rules();
        assert_eq!(r.database().as_deref(), Some("data/homeserver.db"));
        for s in [
            "data/homeserver.db-wal",
            "data/homeserver.db-shm",
            "data/homeserver.db-journal",
            "data/homeserver.db-mj1A2B",
        ] {
            assert!(r.is_db_sidecar(s), "{s}");
        }
        for s in [
            "data/homeserver.db",
            "data/homeserver.dbx",
            "data/x.db-wal",
            "data/homeserver.db-before-upgrade",
            "data/homeserver.db-mj",
            "data/homeserver.db-wal.bak",
            "data/homeserver.db-",
        ] {
            assert!(!r.is_db_sidecar(s), "{s}");
        }
    }

    #[test]
    fn the_inner_manifest_is_exempt_only_where_it_belongs() {
        let r = rules();
        let inner = member('-', INNER_MANIFEST_MEMBER);
        let dir = member('d', ".synapse-backup");
        let key = member('-', "data/signing.key");
        for list in [
            vec![inner.clone(), key.clone()],
            vec![dir.clone(), inner.clone(), key.clone()],
        ] {
            let c = r.check(&list, MemberSource::Listing).unwrap();
            assert!(c.has_inner_manifest);
            assert_eq!(
                c.units.into_iter().collect::<Vec<_>>(),
                ["data/signing.key"]
            );
        }
        // Anywhere else in the listing it is outside the restorable paths.
        let (name, _) = r
            .check(&[key.clone(), inner.clone()], MemberSource::Listing)
            .unwrap_err();
        assert_eq!(name, INNER_MANIFEST_MEMBER);
        // In the staged tree, order does not matter, but the kind does.
        let c = r
            .check(
                &[key.clone(), inner.clone(), dir.clone()],
                MemberSource::Staged,
            )
            .unwrap();
        assert!(c.has_inner_manifest);
        let link = member('l', INNER_MANIFEST_MEMBER);
        assert!(r.check(&[dir.clone(), link], MemberSource::Staged).is_err());
        let other = member('-', ".synapse-backup/other");
        assert!(r.check(&[dir, other], MemberSource::Staged).is_err());
    }

    #[test]
    fn special_bits_are_reported_not_refused() {
        let r = rules();
        let mut suid = member('-', "data/media_store/local_content/x");
        suid.mode = 0o4755;
        let mut open = member('d', "data/media_store/local_content");
        open.mode = 0o1777;
        let c = r.check(&[open, suid], MemberSource::Staged).unwrap();
        assert_eq!(
            c.stripped
                .iter()
                .map(|(n, m)| describe_stripped(n, *m))
                .collect::<Vec<_>>(),
            [
                "data/media_store/local_content: 1777 -> 0775",
                "data/media_store/local_content/x: 4755 -> 0755"
            ]
        );
    }

    #[test]
    fn rules_from_a_recorded_layout() {
        let recorded = ManifestLayout {
            config_dir: "/conf".into(),
            data_dir: "/var/lib/synapse".into(),
            media_store_path: "/media".into(),
            members: vec![
                "conf/a.key".into(),
                "keys/signing.key".into(),
                "media/local_content".into(),
                "var/lib/synapse/homeserver.db".into(),
            ],
        };
        let r = RestoreRules::from_manifest(&recorded);
        for (name, unit) in [
            ("conf/a.key", Some("conf/a.key")),
            ("keys/signing.key", Some("keys/signing.key")),
            ("media/local_content/x", Some("media/local_content")),
            (
                "var/lib/synapse/homeserver.db",
                Some("var/lib/synapse/homeserver.db"),
            ),
            ("var/lib/synapse/homeserver.yaml", None),
            ("media/remote_content/x", None),
        ] {
            assert_eq!(r.unit(name).as_deref(), unit, "{name}");
        }
    }

    fn inner_json(id: &str, nonce: &str) -> Vec<u8> {
        InnerManifest {
            format: crate::backup::manifest::MANIFEST_FORMAT,
            backup_id: id.parse().unwrap(),
            created: chrono::Utc::now(),
            created_by: "synapse-backup/test".into(),
            layout: ManifestLayout {
                config_dir: "/data".into(),
                data_dir: "/data".into(),
                media_store_path: "/data/media_store".into(),
                members: vec![],
            },
            database: crate::backup::manifest::DatabaseSnapshot::Sqlite,
            nonce: nonce.into(),
            chain: None,
        }
        .to_json()
    }

    fn external(id: &str, nonce: Option<&str>, files: &[(&str, char)]) -> Manifest {
        Manifest {
            format: crate::backup::manifest::MANIFEST_FORMAT,
            backup_id: id.parse().unwrap(),
            created: chrono::Utc::now(),
            created_by: "synapse-backup/test".into(),
            server_name: None,
            layout: ManifestLayout {
                config_dir: "/data".into(),
                data_dir: "/data".into(),
                media_store_path: "/data/media_store".into(),
                members: vec![],
            },
            database: crate::backup::manifest::DatabaseSnapshot::Sqlite,
            warnings: vec![],
            files: files
                .iter()
                .map(|(p, k)| crate::backup::manifest::ManifestEntry {
                    path: crate::backup::manifest::ManifestPath::Text((*p).into()),
                    kind: EntryKind::from_find_letter(*k).unwrap(),
                    size: 0,
                })
                .collect(),
            plaintext_bytes: 0,
            ciphertext_bytes: 0,
            ciphertext_sha256: String::new(),
            cipher: crate::backup::manifest::Cipher::Aes256,
            compression: crate::backup::plan::Compression::None,
            nonce: nonce.map(str::to_string),
            chain: None,
        }
    }

    #[test]
    fn a_pack_of_a_chain_is_refused_naming_its_base() {
        let id = "backup-20261126071900000000";
        let json = inner_json(id, "n1");
        let mut inner = member('-', INNER_MANIFEST_MEMBER);
        inner.size = json.len() as u64;
        let members = vec![inner, member('-', "data/signing.key")];
        let good = external(id, Some("n1"), &[("data/signing.key", 'f')]);
        // A pack of a chain is refused, naming its base; a full one starting a chain
        // (its index, no older packs) is restored as any full backup.
        for (links, refused) in [(0, false), (2, true)] {
            let mut parsed = InnerManifest::from_json(&json).unwrap();
            parsed.chain = Some(crate::backup::incremental::PackChain {
                index_sha256: "ab".into(),
                links: (0..links)
                    .map(|n| crate::backup::incremental::ChainLink {
                        id: format!("backup-2026112607180000000{n}").parse().unwrap(),
                        nonce: "00".into(),
                        object_sha256: "cd".into(),
                        bytes: 1,
                    })
                    .collect(),
                own_bytes: 1,
                database: Vec::new(),
            });
            let chained = parsed.to_json();
            let mut members = members.clone();
            members[0].size = chained.len() as u64;
            let got = check_claims(id, &members, Some(&chained), Some(&good), Part::Whole);
            if refused {
                let e = got.unwrap_err();
                assert!(
                    e.contains(
                        "incremental backup on top of backup-20261126071800000001 (3 packs)"
                    ),
                    "{e}"
                );
            } else {
                assert_eq!(got.unwrap().0.unwrap().chain, parsed.chain);
            }
            // Read as the own pack of its chain, it is checked as a whole backup is.
            let own = check_claims(id, &members, Some(&chained), Some(&good), Part::Own);
            assert_eq!(own.unwrap().0.unwrap().chain, parsed.chain);
            let lacking = external(
                id,
                Some("n1"),
                &[("data/signing.key", 'f'), ("data/other", 'f')],
            );
            let e = check_claims(id, &members, Some(&chained), Some(&lacking), Part::Own);
            assert!(e.unwrap_err().contains("lacks"));
            // Read as an older pack (a part of its members), its listing is the
            // caller's to check; its id and nonce are checked still.
            assert!(
                check_claims(id, &members, Some(&chained), Some(&lacking), Part::Older).is_ok()
            );
            let other = external(id, Some("n2"), &[]);
            let e = check_claims(id, &members, Some(&chained), Some(&other), Part::Older);
            assert!(e.unwrap_err().contains("nonces differ"));
            let e = check_claims(
                "backup-20261126071900000001",
                &members,
                Some(&chained),
                Some(&good),
                Part::Older,
            );
            assert!(e.unwrap_err().contains("not"));
        }
    }

    /// [`check_claims`] of a whole backup.
    fn whole(
        id: &str,
        members: &[ArchiveMember],
        head: Option<&[u8]>,
        manifest: Option<&Manifest>,
    ) -> Result<(Option<InnerManifest>, Vec<String>), String> {
        check_claims(id, members, head, manifest, Part::Whole)
    }

    #[test]
    fn claims_are_checked_against_the_stream() {
        let id = "backup-20261126071900000000";
        let json = inner_json(id, "n1");
        let mut inner = member('-', INNER_MANIFEST_MEMBER);
        inner.size = json.len() as u64;
        let key = member('-', "data/signing.key");
        let members = vec![inner, key];
        let files = [("data/signing.key", 'f')];
        let good = external(id, Some("n1"), &files);
        let (got, warnings) = whole(id, &members, Some(&json), Some(&good)).unwrap();
        assert_eq!(got.unwrap().nonce, "n1");
        assert!(warnings.is_empty());
        // The inner manifest may be listed by the external one too.
        let listed = external(
            id,
            Some("n1"),
            &[
                ("data/signing.key", 'f'),
                (INNER_MANIFEST_MEMBER, 'f'),
                (".synapse-backup", 'd'),
            ],
        );
        assert!(whole(id, &members, Some(&json), Some(&listed)).is_ok());
        for (asked, head, manifest, why) in [
            (
                "backup-20261126071900000001",
                &json,
                Some(external("backup-20261126071900000001", Some("n1"), &files)),
                "another id",
            ),
            (
                id,
                &json,
                Some(external(id, Some("n2"), &files)),
                "nonces differ",
            ),
            (id, &json, Some(external(id, None, &files)), "nonces differ"),
            (id, &json, None, "not restored as legacy"),
            (
                id,
                &json,
                Some(external(id, Some("n1"), &[])),
                "does not list",
            ),
            (
                id,
                &json,
                Some(external(
                    id,
                    Some("n1"),
                    &[("data/signing.key", 'f'), ("data/x.key", 'f')],
                )),
                "lacks",
            ),
            (
                id,
                &json,
                Some(external(id, Some("n1"), &[("data/signing.key", 'd')])),
                "in the archive",
            ),
            (id, &json[..10].to_vec(), Some(good.clone()), "read whole"),
        ] {
            let e = whole(asked, &members, Some(head), manifest.as_ref()).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        }
        // Without an inner manifest: a manifest naming a nonce is refused, one without
        // is accepted with a warning, and legacy needs nothing.
        let plain = vec![member('-', "data/signing.key")];
        let e = whole(id, &plain, None, Some(&good)).unwrap_err();
        assert!(e.contains("does not carry"), "{e}");
        let (none, w) = whole(id, &plain, None, Some(&external(id, None, &files))).unwrap();
        assert!(
            none.is_none() && w[0].contains("not authenticated"),
            "{w:?}"
        );
        assert!(whole(id, &plain, None, None).unwrap().0.is_none());
    }

    /// The members and the manifest's file list compact ([`Members`],
    /// [`ManifestFiles`](crate::backup::manifest::ManifestFiles)), checked side by
    /// side as a read does: the same verdict, word for word, as the lists held whole.
    #[test]
    fn compact_lists_are_checked_as_the_whole_ones() {
        let id = "backup-20261126071900000000";
        let names: Vec<String> = (0..40)
            .map(|i| format!("data/media_store/local_content/ab/cd/{i:03}"))
            .collect();
        let files = |list: &[&str]| -> Vec<(String, char)> {
            list.iter().map(|n| ((*n).to_string(), 'f')).collect()
        };
        let all: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut middle = all.clone();
        middle[20] = "data/media_store/local_content/ab/cd/zzz";
        let mut swapped = all.clone();
        swapped.swap(3, 30);
        let mut twice = all.clone();
        twice.insert(10, all[10]);
        let mut dir_kind = files(&all);
        dir_kind[39].1 = 'd';
        // (archive, manifest, verdict: None for accepted, else a word of the error)
        type Case<'a> = (Vec<&'a str>, Vec<(String, char)>, Option<&'a str>);
        let cases: Vec<Case<'_>> = vec![
            (all.clone(), files(&all), None),
            // Out of order, but the same as maps.
            (swapped.clone(), files(&all), None),
            (all.clone(), files(&swapped), None),
            // A mismatch in the middle: each side lacks the other's name.
            (middle.clone(), files(&all), Some("lacks")),
            (all.clone(), files(&middle), Some("lacks")),
            // An extra or a missing entry at the end, on either side.
            (all[..39].to_vec(), files(&all), Some("lacks")),
            (all.clone(), files(&all[..39]), Some("does not list")),
            (all[1..].to_vec(), files(&all), Some("lacks")),
            // A name twice, on either side: as maps, still the same.
            (twice.clone(), files(&all), None),
            (all.clone(), files(&twice), None),
            // The same names, another kind at the very end.
            (all.clone(), dir_kind, Some("in the archive")),
            // Nothing at all on one side.
            (Vec::new(), files(&all), Some("lacks")),
            (all.clone(), Vec::new(), Some("does not list")),
        ];
        for (n, (archive, listed, verdict)) in cases.into_iter().enumerate() {
            let members: Vec<ArchiveMember> = archive.iter().map(|a| member('-', a)).collect();
            let listed_refs: Vec<(&str, char)> =
                listed.iter().map(|(p, k)| (p.as_str(), *k)).collect();
            let manifest = external(id, None, &listed_refs);
            let whole_verdict = check_claims(id, &members, None, Some(&manifest), Part::Whole);
            let mut compact = Members::default();
            let mut compact_files = crate::backup::manifest::ManifestFiles::default();
            for m in &members {
                compact.push(&m.as_ref());
            }
            for f in &manifest.files {
                compact_files.push(f.path.as_bytes(), f.kind, f.size);
            }
            assert_eq!(compact.len(), members.len());
            assert_eq!(compact_files.len(), manifest.files.len());
            let compact_verdict = super::check_claims(
                id,
                compact.iter(),
                None,
                Some((
                    &Manifest {
                        files: Vec::new(),
                        ..manifest.clone()
                    },
                    compact_files.iter().map(|(p, k, _)| (Cow::Owned(p), k)),
                )),
                Part::Whole,
            );
            assert_eq!(compact_verdict, whole_verdict, "case {n}");
            match verdict {
                None => assert!(whole_verdict.is_ok(), "case {n}: {whole_verdict:?}"),
                Some(word) => {
                    let e = whole_verdict.unwrap_err();
                    assert!(e.contains(word), "case {n}: {e}");
                }
            }
        }
    }

    #[test]
    fn compact_members_give_back_what_was_pushed() {
        let mut members = vec![
            member('d', ".synapse-backup"),
            member('-', INNER_MANIFEST_MEMBER),
            member('-', "data/signing.key"),
            member('h', "data/media_store/local_content/\n é"),
            member('-', ""),
        ];
        members[2].size = u64::MAX;
        members[2].mode = 0o4755;
        members[3].name.push(0xff);
        let mut compact = Members::default();
        assert!(compact.is_empty());
        for m in &members {
            compact.push(&m.as_ref());
        }
        compact.shrink_to_fit();
        assert_eq!(compact.len(), 5);
        let back: Vec<MemberRef<'_>> = compact.iter().collect();
        let whole: Vec<MemberRef<'_>> = members.iter().map(ArchiveMember::as_ref).collect();
        assert_eq!(back, whole);
        assert_eq!(inner_position(compact.iter()), Some(1));
        assert_eq!(inner_position(compact.iter().skip(1)), Some(0));
        assert_eq!(inner_position(compact.iter().skip(2)), None);
        // The rules see the same members either way.
        let r = rules();
        assert_eq!(
            r.check_refs(compact.iter().take(3), MemberSource::Listing),
            r.check(&members[..3], MemberSource::Listing)
        );
    }

    #[test]
    fn a_name_archived_twice_is_checked_by_its_last_entry() {
        // As a map collected from the listing: the last entry of a name counts.
        let id = "backup-20261126071900000000";
        let members = vec![
            member('d', "data/media_store/local_content/x"),
            member('-', "data/media_store/local_content/x"),
            member('-', "data/signing.key"),
        ];
        let files = [
            ("data/media_store/local_content/x", 'f'),
            ("data/signing.key", 'f'),
        ];
        assert!(whole(id, &members, None, Some(&external(id, None, &files))).is_ok());
        let dirs = [
            ("data/media_store/local_content/x", 'd'),
            ("data/signing.key", 'f'),
        ];
        let e = whole(id, &members, None, Some(&external(id, None, &dirs))).unwrap_err();
        assert!(
            e.contains("is a directory in the manifest but a file"),
            "{e}"
        );
        // Unsorted on both sides, one missing each way: the first by name is told.
        let unsorted = vec![
            member('-', "data/z.key"),
            member('-', "data/b.key"),
            member('-', "data/a.key"),
        ];
        let listed = [
            ("data/y.key", 'f'),
            ("data/b.key", 'f'),
            ("data/c.key", 'f'),
        ];
        let e = whole(id, &unsorted, None, Some(&external(id, None, &listed))).unwrap_err();
        assert!(e.contains("lacks \"data/c.key\""), "{e}");
        let listed = [
            ("data/z.key", 'f'),
            ("data/b.key", 'f'),
            ("data/a.key", 'f'),
        ];
        assert!(whole(id, &unsorted, None, Some(&external(id, None, &listed))).is_ok());
    }

    #[test]
    fn calls_carry_mode_and_space_check() {
        let layout = Layout::default();
        let p = params();
        let work = WorkDir::new(&layout, "r");
        let list = list_call(&layout, &p, &work, "backup-1", Compression::None);
        assert_eq!(list.env["SB_MODE"], "list");
        assert_eq!(list.env["SB_URL"], "s3://bkt/backup-1");
        assert!(!list.env.contains_key("SB_NEED_BYTES"));
        assert!(!list.env.contains_key("SB_DECOMPRESS"));
        let ex = extract_call(&layout, &p, &work, "backup-1", Compression::None, 99);
        assert_eq!(
            (ex.env["SB_MODE"].as_str(), ex.env["SB_NEED_BYTES"].as_str()),
            ("extract", "99")
        );
        assert!(!ex.env.contains_key("SB_DECOMPRESS"));
        // gpg undoes its own zlib; zstd's needs zstd -d.
        for (compression, decompress) in [
            (Compression::Zlib(6), None),
            (Compression::Zstd(3), Some("zstd")),
        ] {
            let ex = extract_call(&layout, &p, &work, "backup-1", compression, 99);
            let list = list_call(&layout, &p, &work, "backup-1", compression);
            for call in [ex, list] {
                assert_eq!(
                    call.env.get("SB_DECOMPRESS").map(String::as_str),
                    decompress
                );
            }
        }
        let swap = swap_call(&layout, &p, &work, true, None);
        assert_eq!(swap.argv.last().unwrap(), "rollback");
        assert!(!swap.env.contains_key("AWS_SECRET_ACCESS_KEY"));
    }

    #[test]
    fn a_streamed_call_holds_nothing_of_the_buckets() {
        let layout = Layout::default();
        let key = "kbdHqFF4TiFej05J2TfqXDRc4QcyvesAQYmfnQvOosY=";
        let m: std::collections::HashMap<String, String> = [
            ("access-key", "the-access-key"),
            ("secret-key", "the-secret-key"),
            ("bucket", "bkt"),
            ("region", "us-east-1"),
            ("endpoint", "http://127.0.0.1:9"),
            (
                "attributes",
                &format!("X-Amz-Server-Side-Encryption-Customer-Key={key}"),
            ),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let p = S3Parameters::from_relation_data(&m).unwrap();
        let work = WorkDir::new(&layout, "r");
        let full = extract_call(&layout, &p, &work, "backup-1", Compression::None, 99);
        assert!(
            full.argv.len() > 4,
            "the aws CLI's arguments: {:?}",
            full.argv
        );
        let streamed = streamed_input(&full);
        assert_eq!(streamed.argv, full.argv[..4]);
        assert_eq!(streamed.env["SB_INPUT"], "stdin");
        assert_eq!(
            (
                streamed.env["SB_MODE"].as_str(),
                streamed.env["SB_NEED_BYTES"].as_str()
            ),
            ("extract", "99")
        );
        for (name, value) in &streamed.env {
            assert!(
                !name.starts_with("AWS_") && !["SB_AWS", "SB_URL"].contains(&name.as_str()),
                "{name} left in"
            );
            for secret in ["the-secret-key", "the-access-key", key, "bkt", "127.0.0.1"] {
                assert!(!value.contains(secret), "{name} holds {secret}");
            }
        }
        // None of the aws CLI's arguments (the script's text is an argument too, and
        // says "compressed").
        let bucket_args = |argv: &[String]| {
            argv.iter()
                .filter(|a| a.contains("--sse") || a.contains("--endpoint"))
                .count()
        };
        assert!(bucket_args(&full.argv) >= 2, "{:?}", &full.argv[4..]);
        assert_eq!(bucket_args(&streamed.argv), 0);
    }

    #[test]
    fn includes_name_members_or_dirs_above_them() {
        let members = vec![
            member('-', "data/signing.key"),
            member('-', "data/homeserver.db"),
            member('d', "data/media_store/local_content"),
            member('-', "data/media_store/local_content/ab/cd/x"),
        ];
        let units = vec!["data/signing.key".to_string(), "data/homeserver.db".into()];
        let never = |p: &str| p.starts_with("data/homeserver.db-");
        let pick = |include: &[&str]| {
            let include: Vec<String> = include.iter().map(|s| s.to_string()).collect();
            select_includes(&members, &units, &include, never)
        };
        assert_eq!(pick(&[]).unwrap(), units);
        assert_eq!(
            pick(&["/data/signing.key", "data/media_store/"]).unwrap(),
            ["data/media_store", "data/signing.key"]
        );
        // One inside another is placed with it.
        assert_eq!(
            pick(&["data/media_store/local_content/ab", "data/media_store"]).unwrap(),
            ["data/media_store"]
        );
        assert!(pick(&["data/nope"]).unwrap_err().contains("data/nope"));
        assert!(
            pick(&["data/sign"]).is_err(),
            "a prefix of a name is not a dir above it"
        );
        for bad in ["", "/", "data/../etc", "./data", "data//x"] {
            assert!(pick(&[bad]).is_err(), "{bad:?}");
        }
        assert!(
            pick(&["data/homeserver.db-wal"])
                .unwrap_err()
                .contains("sidecar")
        );
    }

    /// With the real `swap.sh` in real bash: an undo moves back what was set aside,
    /// leaves the live file alone where the aside dir lacks a path the log lists, and
    /// when it cannot put everything back (a dir came back where a set-aside one goes)
    /// it fails (31) keeping its logs and the set-aside files, so the roll-back advice
    /// still lists what is where. Before, the logs were emptied on that failure too.
    #[tokio::test]
    async fn an_undo_that_cannot_put_everything_back_fails_and_keeps_its_logs() {
        use crate::container::Container as _;
        use crate::error::ContainerError;
        let tmp = tempfile::tempdir().unwrap();
        let (root, w) = (tmp.path().join("root"), tmp.path().join("work"));
        let put = |path: &std::path::Path, text: &str| {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        put(&w.join("aside/data/a.key"), "old key");
        put(&w.join("aside/data/media/f"), "old media");
        put(&root.join("data/media/new"), "written since");
        put(&root.join("data/b"), "live b");
        let log = "data/a.key\0data/media\0data/b\0";
        put(&w.join("aside.log"), log);
        put(&w.join("placed.log"), "");
        let layout = no_user_layout(&root);
        let p = params();
        let work = WorkDir::at(w.to_str().unwrap());
        let call = swap_call(&layout, &p, &work, true, None);
        let exec = crate::ExecOptions {
            environment: call.env.clone(),
            ..crate::ExecOptions::default()
        };
        let undone = crate::LocalContainer::new().exec(&call.argv, exec).await;
        assert!(
            matches!(
                &undone,
                Err(ContainerError::ExitedNonZero { exit_code: 31, .. })
            ),
            "{undone:?}"
        );
        let read = |path: std::path::PathBuf| std::fs::read_to_string(path).unwrap();
        assert_eq!(read(root.join("data/a.key")), "old key");
        assert_eq!(read(root.join("data/b")), "live b");
        assert_eq!(read(w.join("aside/data/media/f")), "old media");
        assert_eq!(read(root.join("data/media/new")), "written since");
        assert_eq!(read(w.join("aside.log")), log, "the log was emptied");
    }

    /// A layout of `root` whose scripts run as the caller (no workload user).
    fn no_user_layout(root: &std::path::Path) -> Layout {
        Layout {
            user: None,
            user_id: None,
            group: None,
            group_id: None,
            root: root.to_string_lossy().into_owned(),
            ..Layout::default()
        }
    }

    /// A log line cut short (an append that a full disk stopped part-way: its move was
    /// reverted) is not a record: the undo puts back what the whole records list and
    /// succeeds, whichever log was cut. Before, it tried to move back the cut name,
    /// found nothing there, and failed (31), leaving the service stopped for a roll-back
    /// a person had to finish.
    #[tokio::test]
    async fn an_undo_ignores_a_log_line_cut_short_by_a_full_disk() {
        use crate::container::Container as _;
        let put = |path: &std::path::Path, text: &str| {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        let read = |path: std::path::PathBuf| std::fs::read_to_string(path).unwrap();
        // The key was set aside and the staged one placed; then setting the database
        // aside (or placing the staged one) moved it, could not write all of its log
        // line, and moved it back.
        for (aside_log, placed_log, db_at) in [
            ("data/a.key\0data/homeserver.d", "data/a.key\0", "root"),
            (
                "data/a.key\0data/homeserver.db\0",
                "data/a.key\0data/home",
                "aside",
            ),
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let (root, w) = (tmp.path().join("root"), tmp.path().join("work"));
            put(&w.join("aside/data/a.key"), "old key");
            put(&root.join("data/a.key"), "restored key");
            if db_at == "root" {
                put(&root.join("data/homeserver.db"), "live db");
            } else {
                put(&w.join("aside/data/homeserver.db"), "live db");
                put(&w.join("stage/data/homeserver.db"), "staged db");
            }
            std::fs::create_dir_all(w.join("stage/data")).unwrap();
            put(&w.join("aside.log"), aside_log);
            put(&w.join("placed.log"), placed_log);
            let layout = no_user_layout(&root);
            let work = WorkDir::at(w.to_str().unwrap());
            let call = swap_call(&layout, &params(), &work, true, None);
            let exec = crate::ExecOptions {
                environment: call.env.clone(),
                ..crate::ExecOptions::default()
            };
            let undone = crate::LocalContainer::new().exec(&call.argv, exec).await;
            assert!(undone.is_ok(), "{placed_log:?}: {undone:?}");
            assert_eq!(read(root.join("data/a.key")), "old key");
            assert_eq!(read(root.join("data/homeserver.db")), "live db");
            assert_eq!(read(w.join("stage/data/a.key")), "restored key");
            assert!(!w.join("aside/data/a.key").exists());
        }
    }

    #[test]
    fn place_runs_swap_sh_in_place_mode_with_the_target() {
        let layout = Layout::default();
        let p = params();
        let work = WorkDir::at("/t/.synapse-backup-extract.x");
        let call = place_call(&layout, &p, &work, "/t");
        assert_eq!(call.argv.last().unwrap(), "place");
        assert_eq!(call.env["SB_TARGET"], "/t");
        assert!(!call.env.contains_key("AWS_SECRET_ACCESS_KEY"));
    }
}

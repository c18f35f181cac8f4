//! The pure side of reading backups back: the fetch (verify/restore) and swap scripts,
//! the archive listing parser, and the rules for which members may be restored.

use std::collections::{BTreeMap, BTreeSet};

use crate::backup::layout::{DatabaseKind, HomeserverConfig, Layout, join};
use crate::backup::plan::{self, ScriptCall, WorkDir};
use crate::s3::S3Parameters;

/// Downloads, checksums and decrypts a backup, then lists it (`SB_MODE=list`) or
/// extracts it into `$SB_WORK/stage` (`SB_MODE=extract`), writing tar's `-vv` listing
/// to `$SB_WORK/members`. With `SB_NEED_BYTES`, first checks free space in
/// `SB_SPACE_DIR` (exit 40). On failure exits `10 + stage` (download, tee, gpg, tar)
/// or 14 (checksum readers), as the backup script does.
pub const FETCH_SCRIPT: &str = concat!(
    r#"set -euo pipefail
umask 077
w=$SB_WORK
if [ -n "${SB_NEED_BYTES:-}" ]; then
  avail=$(df -B1 --output=avail "$SB_SPACE_DIR" | tail -n 1 | tr -d ' ')
  printf '%s\n' "$avail" >"$w/avail"
  if [ "$avail" -lt "$SB_NEED_BYTES" ]; then
    echo "not enough free space in $SB_SPACE_DIR: need $SB_NEED_BYTES bytes, $avail available" >&2
    exit 40
  fi
fi
"#,
    checksum_stage!(),
    r#"if [ "$SB_MODE" = extract ]; then
  mkdir -m 700 "$w/stage"
  tar_args=(--extract --directory "$w/stage" --preserve-permissions --delay-directory-restore)
else
  tar_args=(--list)
fi
# Stage names and stderr files, in pipeline order.
names=(download tee gpg tar)
errs=("$w/aws.err" "$w/tee.err" "$w/gpg.err" "$w/tar.err")
set +e
"$SB_AWS" s3 cp --only-show-errors --no-progress "$@" "$SB_URL" - 2>"$w/aws.err" |
  checksum 2>"$w/tee.err" |
  "$SB_GPG" --batch --no-tty --no-symkey-cache --pinentry-mode loopback \
    --passphrase-file "$w/passphrase" --decrypt 2>"$w/gpg.err" |
  LC_ALL=C "$SB_TAR" "${tar_args[@]}" -vv --quoting-style=escape --index-file "$w/members" 2>"$w/tar.err"
"#,
    pipeline_status!()
);

/// Exit code of [`FETCH_SCRIPT`] when free space is short.
pub const EXIT_NO_SPACE: i32 = 40;

/// Swaps staged paths into place (`swap`), or undoes a swap (`rollback`).
///
/// `swap`: for each member in `$SB_WORK/swap.list` (NUL-separated, relative to the
/// root) the live path, if any, is moved to `$SB_WORK/aside/<member>` and the staged
/// one moved in; each member in `drop.list` is moved aside. Every move is logged, and
/// on the first failure everything done is undone and the script exits 30 (31 when
/// the undo itself failed: the set-aside copies are then left in place).
/// `rollback` undoes a completed swap the same way.
pub const SWAP_SCRIPT: &str = r#"set -euo pipefail
umask 077
w=$SB_WORK
root=$SB_ROOT
mkdir -p "$w/aside"
undo() {
  local ok=0 i placed=() aside=()
  [ -f "$w/placed.log" ] && mapfile -d '' -t placed <"$w/placed.log"
  [ -f "$w/aside.log" ] && mapfile -d '' -t aside <"$w/aside.log"
  for ((i = ${#placed[@]} - 1; i >= 0; i--)); do
    { mkdir -p "$w/stage/$(dirname -- "${placed[$i]}")" && mv -T -- "$root/${placed[$i]}" "$w/stage/${placed[$i]}"; } || ok=1
  done
  for ((i = ${#aside[@]} - 1; i >= 0; i--)); do
    mv -T -- "$w/aside/${aside[$i]}" "$root/${aside[$i]}" || ok=1
  done
  : >"$w/placed.log"
  : >"$w/aside.log"
  return "$ok"
}
if [ "${1:-swap}" = rollback ]; then
  undo || exit 31
  exit 0
fi
: >"$w/placed.log"
: >"$w/aside.log"
set_aside() {
  local m=$1
  if [ -e "$root/$m" ] || [ -L "$root/$m" ]; then
    mkdir -p "$w/aside/$(dirname -- "$m")" &&
      mv -T -- "$root/$m" "$w/aside/$m" &&
      printf '%s\0' "$m" >>"$w/aside.log"
  fi
}
fail() {
  echo "swap failed at $1" >&2
  undo || { echo "rollback failed: the live files set aside are in $w/aside" >&2; exit 31; }
  exit 30
}
while IFS= read -r -d '' m; do
  set_aside "$m" || fail "$m"
  { mkdir -p "$root/$(dirname -- "$m")" && mv -T -- "$w/stage/$m" "$root/$m" && printf '%s\0' "$m" >>"$w/placed.log"; } || fail "$m"
done <"$w/swap.list"
if [ -s "$w/drop.list" ]; then
  while IFS= read -r -d '' m; do
    set_aside "$m" || fail "$m"
  done <"$w/drop.list"
fi
"#;

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

/// The call that lists a backup without touching live files.
pub fn list_call(layout: &Layout, params: &S3Parameters, work: &WorkDir, key: &str) -> ScriptCall {
    let mut env = fetch_env(layout, params, work, key);
    env.insert("SB_MODE".into(), "list".into());
    let mut argv = vec![
        layout.bash.clone(),
        "-c".into(),
        FETCH_SCRIPT.into(),
        "bash".into(),
    ];
    argv.extend(plan::aws_common_args(params));
    ScriptCall { argv, env }
}

/// The call that extracts a backup into the work dir's `stage`, after checking that
/// `need_bytes` are free where the work dir is.
pub fn extract_call(
    layout: &Layout,
    params: &S3Parameters,
    work: &WorkDir,
    key: &str,
    need_bytes: u64,
) -> ScriptCall {
    let mut call = list_call(layout, params, work, key);
    call.env.insert("SB_MODE".into(), "extract".into());
    call.env
        .insert("SB_NEED_BYTES".into(), need_bytes.to_string());
    call.env.insert("SB_SPACE_DIR".into(), work.dir.clone());
    call
}

/// The call that swaps staged files in (`rollback: false`) or undoes it.
pub fn swap_call(
    layout: &Layout,
    params: &S3Parameters,
    work: &WorkDir,
    rollback: bool,
) -> ScriptCall {
    let env = plan::script_env(layout, params, work)
        .into_iter()
        .filter(|(k, _)| k.starts_with("SB_"))
        .collect();
    let mode = if rollback { "rollback" } else { "swap" };
    ScriptCall {
        argv: vec![
            layout.bash.clone(),
            "-c".into(),
            SWAP_SCRIPT.into(),
            "bash".into(),
            mode.into(),
        ],
        env,
    }
}

/// Maps the fetch script's exit code to the failing stage's name.
pub fn fetch_stage(exit_code: i32) -> &'static str {
    match exit_code {
        10 => "download",
        11 | 14 => "check",
        12 => "gpg",
        13 => "tar",
        EXIT_NO_SPACE => "space",
        _ => "fetch",
    }
}

/// One member of an archive, from tar's `-vv` listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveMember {
    /// The type letter: `-` file, `d` directory, `l` symlink, `h` hard link, `c`/`b`
    /// devices, `p` FIFO.
    pub kind: char,
    /// The name, as bytes (decoded from tar's escaped form), without a trailing `/`.
    pub name: Vec<u8>,
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

/// Parses tar's `-vv` listing (`perms owner size date time name[ -> target]`),
/// skipping its "Creating directory:" notes.
pub fn parse_members(listing: &[u8]) -> Vec<ArchiveMember> {
    let text = String::from_utf8_lossy(listing);
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut rest = line;
        let mut fields = Vec::new();
        for _ in 0..5 {
            rest = rest.trim_start();
            let end = rest.find(' ').unwrap_or(rest.len());
            fields.push(&rest[..end]);
            rest = &rest[end..];
        }
        if fields.get(1) == Some(&"Creating") || line.contains(" Creating directory: ") {
            continue;
        }
        let name = rest.strip_prefix(' ').unwrap_or(rest);
        let kind = fields[0].chars().next().unwrap_or('?');
        let name = match kind {
            'l' => name.split(" -> ").next().unwrap_or(name),
            'h' => name.split(" link to ").next().unwrap_or(name),
            _ => name,
        };
        let mut bytes = unescape(name);
        while bytes.len() > 1 && bytes.ends_with(b"/") {
            bytes.pop();
        }
        out.push(ArchiveMember { kind, name: bytes });
    }
    out
}

/// Which archive members may be restored, from the live layout and `homeserver.yaml`.
#[derive(Debug, Clone)]
pub struct RestoreRules {
    config_dir: String,
    signing_key: Option<String>,
    db_dir: Option<String>,
    db_name: Option<String>,
    media: String,
}

impl RestoreRules {
    /// The rules for this workload.
    pub fn new(layout: &Layout, config: &HomeserverConfig) -> Self {
        let (db_dir, db_name) = match &config.database {
            DatabaseKind::Sqlite(p) => {
                let m = Layout::member_name(p);
                match m.rsplit_once('/') {
                    Some((d, n)) => (Some(d.to_string()), Some(n.to_string())),
                    None => (Some(String::new()), Some(m)),
                }
            }
            DatabaseKind::Postgresql => (None, None),
        };
        RestoreRules {
            config_dir: Layout::member_name(&layout.config_dir),
            signing_key: config.signing_key_path.as_deref().map(Layout::member_name),
            db_dir,
            db_name,
            media: Layout::member_name(&config.media_store_path),
        }
    }

    /// The member's swap unit (the top-level path moved as a whole: a key file, a
    /// database file, a `local_*` media dir), or `None` when it is not restorable.
    pub fn unit(&self, name: &str) -> Option<String> {
        let (dir, base) = name.rsplit_once('/').unwrap_or(("", name));
        if (dir == self.config_dir && base.ends_with(".key"))
            || self.signing_key.as_deref() == Some(name)
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
        .any(|d| d == name || d.starts_with(&prefix))
    }

    /// Checks every member and returns the swap units.
    ///
    /// # Errors
    /// `(member, reason)` for the first member that is absolute, has `..`, is a link or
    /// device, or lies outside the restorable paths.
    pub fn check(&self, members: &[ArchiveMember]) -> Result<BTreeSet<String>, (String, String)> {
        let mut units = BTreeSet::new();
        for m in members {
            let text = String::from_utf8_lossy(&m.name).into_owned();
            if m.name.starts_with(b"/") {
                return Err((text, "absolute member names are refused".into()));
            }
            if m.name.split(|b| *b == b'/').any(|c| c == b"..") {
                return Err((text, "member names with '..' are refused".into()));
            }
            match m.kind {
                '-' | 'd' => {}
                'l' => return Err((text, "symbolic links are refused".into())),
                'h' => return Err((text, "hard links are refused".into())),
                _ => {
                    return Err((
                        text,
                        "devices, FIFOs and other special files are refused".into(),
                    ));
                }
            }
            let Ok(name) = std::str::from_utf8(&m.name) else {
                // Non-UTF-8 names can only be inside a media dir: find its unit by bytes.
                let lossy = String::from_utf8_lossy(&m.name).into_owned();
                match self.unit(&lossy) {
                    Some(u) if u.contains("/local_") => {
                        units.insert(u);
                        continue;
                    }
                    _ => return Err((text, "outside the restorable paths".into())),
                }
            };
            match self.unit(name) {
                Some(u) => {
                    units.insert(u);
                }
                None if m.kind == 'd' && self.is_ancestor(name) => {}
                None => {
                    return Err((
                        text,
                        "outside the restorable paths (signing keys, homeserver.db*, local media)"
                            .into(),
                    ));
                }
            }
        }
        Ok(units)
    }

    /// The live database companions (`-wal`, `-shm`) to move aside when the archive
    /// does not carry them: a snapshot restored beside an old WAL would be corrupted.
    pub fn drops(&self, units: &BTreeSet<String>) -> Vec<String> {
        let (Some(dir), Some(name)) = (&self.db_dir, &self.db_name) else {
            return Vec::new();
        };
        let db = if dir.is_empty() {
            name.clone()
        } else {
            join(dir, name)
        };
        if !units.contains(&db) {
            return Vec::new();
        }
        ["-wal", "-shm"]
            .iter()
            .map(|s| format!("{db}{s}"))
            .filter(|p| !units.contains(p))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> RestoreRules {
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
        }
    }

    #[test]
    fn unescapes_tar_names() {
        assert_eq!(unescape(r"d/u\303\251"), "d/u\u{e9}".as_bytes());
        assert_eq!(unescape(r"d/nl\nx"), b"d/nl\nx");
        assert_eq!(unescape(r"d/bs\\x"), b"d/bs\\x");
        assert_eq!(unescape(r"d/r\377"), b"d/r\xff");
        assert_eq!(unescape("d/$(touch p) q'\"x"), b"d/$(touch p) q'\"x");
    }

    #[test]
    fn parses_verbose_listing() {
        let listing =
            b"drwxr-xr-x root/root         0 2026-11-26 07:26 data/media_store/local_content/\n\
-rw-r--r-- root/root         2 2026-11-26 07:26 data/media_store/local_content/a b\n\
lrwxrwxrwx root/root         0 2026-11-26 07:32 data/l -> /etc\n\
hrw-r--r-- root/root         0 2026-11-26 07:32 data/h link to data/x\n\
drwxr-xr-x                  Creating directory: tmp\n";
        let m = parse_members(listing);
        assert_eq!(
            m,
            vec![
                member('d', "data/media_store/local_content"),
                member('-', "data/media_store/local_content/a b"),
                member('l', "data/l"),
                member('h', "data/h"),
            ]
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
        let units = r.check(&members).unwrap();
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
            (member('h', "data/media_store/local_content/h"), "hard"),
            (member('c', "data/media_store/local_content/dev"), "devices"),
            (member('-', "data/homeserver.yaml"), "outside"),
            (member('-', "data/media_store/remote_content/x"), "outside"),
            (member('-', "etc/passwd"), "outside"),
        ] {
            let (name, reason) = r.check(std::slice::from_ref(&m)).unwrap_err();
            assert!(reason.contains(why), "{name}: {reason}");
        }
    }

    #[test]
    fn wal_and_shm_dropped_only_when_not_carried() {
        let r = rules();
        let units: BTreeSet<String> = ["data/homeserver.db".to_string()].into();
        assert_eq!(
            r.drops(&units),
            ["data/homeserver.db-wal", "data/homeserver.db-shm"]
        );
        let legacy: BTreeSet<String> = [
            "data/homeserver.db".to_string(),
            "data/homeserver.db-wal".to_string(),
        ]
        .into();
        assert_eq!(r.drops(&legacy), ["data/homeserver.db-shm"]);
        assert!(r.drops(&BTreeSet::new()).is_empty());
    }

    #[test]
    fn calls_carry_mode_and_space_check() {
        let layout = Layout::default();
        let m: std::collections::HashMap<String, String> = [
            ("access-key", "a"),
            ("secret-key", "b"),
            ("bucket", "bkt"),
            ("region", "us-east-1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let p = S3Parameters::from_relation_data(&m).unwrap();
        let work = WorkDir::new(&layout, "r");
        let list = list_call(&layout, &p, &work, "backup-1");
        assert_eq!(list.env["SB_MODE"], "list");
        assert_eq!(list.env["SB_URL"], "s3://bkt/backup-1");
        assert!(!list.env.contains_key("SB_NEED_BYTES"));
        let ex = extract_call(&layout, &p, &work, "backup-1", 99);
        assert_eq!(
            (ex.env["SB_MODE"].as_str(), ex.env["SB_NEED_BYTES"].as_str()),
            ("extract", "99")
        );
        let swap = swap_call(&layout, &p, &work, true);
        assert_eq!(swap.argv.last().unwrap(), "rollback");
        assert!(!swap.env.contains_key("AWS_SECRET_ACCESS_KEY"));
    }
}

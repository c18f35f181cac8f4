//! The pure side of reading backups back: the fetch (verify/restore) and swap scripts,
//! the archive listing parser, and the rules for which members may be restored.

use std::collections::{BTreeMap, BTreeSet};

use crate::backup::layout::{DatabaseKind, HomeserverConfig, Layout, join};
pub use crate::backup::listing::{ArchiveMember, parse_members, unescape};
use crate::backup::plan::{self, ScriptCall, WorkDir};
use crate::backup::scripts;
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

/// The call that lists a backup without touching live files.
pub fn list_call(layout: &Layout, params: &S3Parameters, work: &WorkDir, key: &str) -> ScriptCall {
    let mut env = fetch_env(layout, params, work, key);
    env.insert("SB_MODE".into(), "list".into());
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
        &work.file(plan::SSE_C_KEY_FILE),
    ));
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
            scripts::SWAP.into(),
            "bash".into(),
            mode.into(),
        ],
        env,
    }
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
            size: 0,
            mode: 0o644,
            uid: 0,
            gid: 0,
        }
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

//! Where a Synapse workload keeps its state, and what `homeserver.yaml` says about it.
//!
//! Pure code: no I/O. The defaults are the Synapse rock's; every field can be changed so
//! other charms (or tests, with `root` set to a temp dir) can reuse the crate.

use crate::error::{ConfigError, FieldProblem};

/// Where the workload keeps its state and tools. [`Layout::default`] is the Synapse rock.
///
/// Container paths (`config_dir`, `data_dir`, `media_store_path` in `homeserver.yaml`)
/// are resolved under `root`; archive members are stored relative to `root`, so a
/// backup of `/data/homeserver.db` holds `data/homeserver.db`, as the reference does.
///
/// ```
/// use synapse_backup::Layout;
/// let layout = Layout::default()
///     .root("/srv/synapse-root")
///     .user(None)
///     .group(None);
/// assert_eq!(layout.host_path("/data/x.key"), "/srv/synapse-root/data/x.key");
/// assert_eq!(Layout::member_name("/data/x.key"), "data/x.key");
/// ```
///
/// Under the `cli` feature it is also the command line's description of the workload
/// (`clap::Args`): each field is the flag of the same name (`data_dir` is `--data-dir`),
/// global to every subcommand. The command line's defaults are not
/// [`Layout::default`]'s: it runs the tools found on `PATH` and, unless told, runs the
/// pipelines as the invoking user (as root: the data dir's owner) with no service.
#[derive(Debug, Clone, PartialEq, Eq, derive_setters::Setters)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[non_exhaustive]
#[setters(prefix = "", generate = true, into)]
pub struct Layout {
    /// The directory container paths are resolved under (`/` in a real container).
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            value_name = "DIR",
            default_value = "/",
            global = true,
            env = "SYNAPSE_BACKUP_ROOT",
            help = "Directory the workload's paths (/data, media_store_path) resolve under",
            long_help = None
        )
    )]
    pub root: String,
    /// The config dir holding `homeserver.yaml` and the signing key(s).
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            value_name = "DIR",
            default_value = "/data",
            global = true,
            help = "Synapse's config dir (homeserver.yaml, signing key), under --root",
            long_help = None
        )
    )]
    pub config_dir: String,
    /// The data dir holding `homeserver.db` (and, by default, `media_store`).
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            value_name = "DIR",
            default_value = "/data",
            global = true,
            help = "Synapse's data dir (homeserver.db, media_store), under --root",
            long_help = None
        )
    )]
    pub data_dir: String,
    /// `homeserver.yaml`; `<config_dir>/homeserver.yaml` when `None`.
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            value_name = "PATH",
            global = true,
            help = "Synapse's homeserver.yaml, under --root (default: homeserver.yaml in --config-dir)",
            long_help = None
        )
    )]
    pub homeserver_config: Option<String>,
    /// Where private work dirs (passphrase, SQLite snapshot) and restore staging are
    /// made; `data_dir` when `None` (the same file system as the data).
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            value_name = "DIR",
            global = true,
            help = "Where work dirs (database snapshot) and restore staging are made, under --root (default: --data-dir, the data's file system)",
            long_help = None
        )
    )]
    pub work_dir: Option<String>,
    /// The workload user the pipeline runs as; the container's default when `None`.
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            value_name = "USER",
            global = true,
            help = "Run the pipelines as this user (default: run as root, the owner of the data dir; otherwise the invoking user)",
            long_help = None
        )
    )]
    pub user: Option<String>,
    /// The workload group.
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            value_name = "GROUP",
            global = true,
            help = "Run the pipelines with this group (default: run as root, the data dir's group)",
            long_help = None
        )
    )]
    pub group: Option<String>,
    /// The workload user as a numeric id: alone for a uid with no passwd entry (common
    /// in containers), or with `user` (they must then agree); see
    /// [`ExecOptions::user_id`](crate::ExecOptions::user_id). The command line's
    /// `--user-id`; run as root without `--user`/`--user-id`, the command line sets it to
    /// the data dir's owner when that uid has no name.
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            value_name = "UID",
            global = true,
            help = "Run the pipelines as this numeric uid, also one with no passwd entry (default: as root, the data dir's owner)",
            long_help = None
        )
    )]
    pub user_id: Option<u32>,
    /// The workload group as a numeric id, alone or with `group` (see
    /// [`ExecOptions::group_id`](crate::ExecOptions::group_id)).
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            value_name = "GID",
            global = true,
            help = "Run the pipelines with this numeric gid (default: as root, the data dir's group)",
            long_help = None
        )
    )]
    pub group_id: Option<u32>,
    /// The service stopped around a restore's swap; no service is touched when `None`.
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            value_name = "NAME",
            global = true,
            help = "Service stopped and started around a restore's swap: a systemd unit, or with --pebble a Pebble service (default: none)",
            long_help = None
        )
    )]
    pub service: Option<String>,
    /// bash.
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            value_name = "PATH",
            default_value = "bash",
            global = true,
            help = "bash to run the pipelines with",
            long_help = None
        )
    )]
    pub bash: String,
    /// GNU tar.
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            value_name = "PATH",
            default_value = "tar",
            global = true,
            help = "GNU tar",
            long_help = None
        )
    )]
    pub tar: String,
    /// gpg (GnuPG 2).
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            value_name = "PATH",
            default_value = "gpg",
            global = true,
            help = "gpg (GnuPG 2)",
            long_help = None
        )
    )]
    pub gpg: String,
    /// The aws CLI.
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            value_name = "PATH",
            default_value = "aws",
            global = true,
            help = "The aws CLI",
            long_help = None
        )
    )]
    pub aws: String,
    /// python3 (its `sqlite3` module takes the database snapshot).
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            value_name = "PATH",
            default_value = "python3",
            global = true,
            help = "python3 with its sqlite3 module (the database snapshot)",
            long_help = None
        )
    )]
    pub python3: String,
    /// The sqlite3 CLI, used when python3 has no `sqlite3` module.
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            value_name = "PATH",
            default_value = "sqlite3",
            global = true,
            help = "The sqlite3 CLI, used when python3 has no sqlite3 module",
            long_help = None
        )
    )]
    pub sqlite3: String,
    /// zstd, for backups made with [`Compression::Zstd`](crate::Compression::Zstd)
    /// (and their restores); nothing else runs it.
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            value_name = "PATH",
            default_value = "zstd",
            global = true,
            help = "zstd, for backups made (and restored) with --compression zstd-N",
            long_help = None
        )
    )]
    pub zstd: String,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            root: "/".into(),
            config_dir: "/data".into(),
            data_dir: "/data".into(),
            homeserver_config: None,
            work_dir: None,
            user: Some("synapse".into()),
            group: Some("synapse".into()),
            user_id: None,
            group_id: None,
            service: Some("synapse".into()),
            bash: "/usr/bin/bash".into(),
            tar: "tar".into(),
            gpg: "gpg".into(),
            aws: "/aws/dist/aws".into(),
            python3: "python3".into(),
            sqlite3: "sqlite3".into(),
            zstd: "zstd".into(),
        }
    }
}

impl Layout {
    /// The host (container) path of a path as the workload sees it, under `root`.
    pub fn host_path(&self, container_path: &str) -> String {
        let rel = container_path.trim_start_matches('/');
        let root = self.root.trim_end_matches('/');
        if rel.is_empty() {
            if root.is_empty() {
                "/".into()
            } else {
                root.into()
            }
        } else {
            format!("{root}/{rel}")
        }
    }

    /// The archive member name of a container path (relative to `root`).
    pub fn member_name(container_path: &str) -> String {
        normalize(container_path)
            .trim_start_matches('/')
            .to_string()
    }

    /// The container path of `homeserver.yaml`.
    pub fn homeserver_config_path(&self) -> String {
        self.homeserver_config
            .clone()
            .unwrap_or_else(|| join(&self.config_dir, "homeserver.yaml"))
    }

    /// The container dir under which work and staging dirs are made.
    pub fn work_base(&self) -> &str {
        self.work_dir.as_deref().unwrap_or(&self.data_dir)
    }

    /// Checks every path field is absolute and free of `..` and NUL.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] listing each bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut check = |field: &str, value: &str| {
            if !value.starts_with('/') {
                problems.push(FieldProblem {
                    field: field.into(),
                    message: format!("{value:?} must be an absolute path"),
                });
            } else if value.contains('\0') || value.split('/').any(|c| c == "..") {
                problems.push(FieldProblem {
                    field: field.into(),
                    message: format!("{value:?} must not contain '..' or NUL"),
                });
            }
        };
        check("root", &self.root);
        check("config_dir", &self.config_dir);
        check("data_dir", &self.data_dir);
        if let Some(p) = &self.homeserver_config {
            check("homeserver_config", p);
        }
        if let Some(p) = &self.work_dir {
            check("work_dir", p);
        }
        for (field, value) in [
            ("user", &self.user),
            ("group", &self.group),
            ("service", &self.service),
        ] {
            if let Some(v) = value
                && (v.is_empty() || v.contains('\0'))
            {
                problems.push(FieldProblem {
                    field: field.into(),
                    message: "must be a non-empty name".into(),
                });
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid { problems })
        }
    }
}

/// Joins a container dir and a relative path with one `/`.
pub(crate) fn join(dir: &str, rel: &str) -> String {
    format!(
        "{}/{}",
        dir.trim_end_matches('/'),
        rel.trim_start_matches('/')
    )
}

/// Whether `suffix`, what follows a SQLite database's file name, names one of SQLite's
/// own sidecar files: the write-ahead log (`-wal`), its shared memory (`-shm`), the
/// rollback journal (`-journal`) or a super-journal (`-mj` and SQLite's random
/// letters). Anything else beside the database (`homeserver.db-before-upgrade`, a
/// user's copy) is a file of its own.
pub(crate) fn is_sqlite_sidecar_suffix(suffix: &str) -> bool {
    matches!(suffix, "-wal" | "-shm" | "-journal")
        || suffix
            .strip_prefix("-mj")
            .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Collapses repeated slashes and `.` components (no `..` resolution: those are refused).
pub(crate) fn normalize(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let body = parts.join("/");
    if path.starts_with('/') {
        format!("/{body}")
    } else {
        body
    }
}

/// Which database Synapse uses, from `homeserver.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseKind {
    /// SQLite at this container path.
    Sqlite(String),
    /// PostgreSQL (backed up by the PostgreSQL charm, not by this crate).
    Postgresql,
}

/// What the backup needs from `homeserver.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeserverConfig {
    /// `server_name`, recorded in the manifest.
    pub server_name: Option<String>,
    /// The media store (container path; Synapse's default `<data_dir>/media_store`).
    pub media_store_path: String,
    /// `signing_key_path`, if set (container path).
    pub signing_key_path: Option<String>,
    /// The database.
    pub database: DatabaseKind,
}

/// Describes a YAML syntax error by its kind and place only: the text around it may
/// hold a secret (`macaroon_secret_key`, `registration_shared_secret`, …).
fn describe_yaml_error(e: &serde_saphyr::Error) -> String {
    let what = match e {
        serde_saphyr::Error::Eof { .. } => "unexpected end of the document",
        serde_saphyr::Error::Unexpected { expected, .. } => {
            return match e.location() {
                Some(l) => format!(
                    "invalid YAML at line {}, column {}: expected {expected}",
                    l.line(),
                    l.column()
                ),
                None => format!("invalid YAML: expected {expected}"),
            };
        }
        serde_saphyr::Error::ContainerEndMismatch { .. } => "a bracket or brace is not closed",
        serde_saphyr::Error::UnknownAnchor { .. } => "an alias names an unknown anchor",
        serde_saphyr::Error::Budget { .. } => "the document is too large or too deeply nested",
        _ => "malformed YAML",
    };
    match e.location() {
        Some(l) => format!(
            "invalid YAML at line {}, column {}: {what}",
            l.line(),
            l.column()
        ),
        None => format!("invalid YAML: {what}"),
    }
}

/// The YAML type of a value, for messages that must not quote it.
fn type_name(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a map",
    }
}

struct RawConfig {
    server_name: Option<String>,
    media_store_path: Option<String>,
    signing_key_path: Option<String>,
    database: Option<RawDatabase>,
}

struct RawDatabase {
    name: Option<String>,
    args: Option<RawDatabaseArgs>,
}

struct RawDatabaseArgs {
    database: Option<String>,
}

impl HomeserverConfig {
    /// Parses `homeserver.yaml`; relative paths resolve against `data_dir` (media,
    /// database) or `config_dir` (signing key).
    ///
    /// # Errors
    /// [`ConfigError::Parse`] naming `path` when the YAML is invalid or a field has the
    /// wrong type.
    pub fn parse(yaml: &str, path: &str, layout: &Layout) -> Result<Self, ConfigError> {
        let raw = RawConfig::parse(yaml, path)?;
        let resolve = |base: &str, p: &str| {
            if p.starts_with('/') {
                normalize(p)
            } else {
                normalize(&join(base, p))
            }
        };
        let media_store_path = resolve(
            &layout.data_dir,
            raw.media_store_path.as_deref().unwrap_or("media_store"),
        );
        let signing_key_path = raw
            .signing_key_path
            .as_deref()
            .map(|p| resolve(&layout.config_dir, p));
        let database = match raw.database {
            Some(db)
                if matches!(
                    db.name.as_deref(),
                    Some("psycopg2" | "postgresql" | "postgres")
                ) =>
            {
                DatabaseKind::Postgresql
            }
            Some(RawDatabase {
                args: Some(RawDatabaseArgs { database: Some(p) }),
                ..
            }) if p != ":memory:" => DatabaseKind::Sqlite(resolve(&layout.data_dir, &p)),
            _ => DatabaseKind::Sqlite(join(&layout.data_dir, "homeserver.db")),
        };
        for (field, value) in [
            ("media_store_path", Some(&media_store_path)),
            ("signing_key_path", signing_key_path.as_ref()),
        ] {
            if let Some(v) = value
                && (v.split('/').any(|c| c == "..") || v.contains('\0'))
            {
                return Err(ConfigError::field(
                    field,
                    format!("{v:?} in {path} must not contain '..'"),
                ));
            }
        }
        Ok(HomeserverConfig {
            server_name: raw.server_name,
            media_store_path,
            signing_key_path,
            database,
        })
    }
}

/// A map of a YAML document, as JSON.
type YamlMap = serde_json::Map<String, serde_json::Value>;

/// A nested key of `homeserver.yaml`, named by its dotted path (`database.args.database`).
fn dotted(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_string()
    } else {
        format!("{parent}.{field}")
    }
}

/// The string `field` of `map` (under `parent`) in the file `path`; `None` when absent
/// or null.
fn yaml_text(
    map: &YamlMap,
    parent: &str,
    field: &str,
    path: &str,
) -> Result<Option<String>, ConfigError> {
    match map.get(field) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ConfigError::field(
            &dotted(parent, field),
            format!("in {path} must be a string, not {}", type_name(other)),
        )),
    }
}

/// The map `field` of `map` (under `parent`) in the file `path`; `None` when absent or
/// null.
fn yaml_map(
    map: &YamlMap,
    parent: &str,
    field: &str,
    path: &str,
) -> Result<Option<YamlMap>, ConfigError> {
    match map.get(field) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Object(m)) => Ok(Some(m.clone())),
        Some(other) => Err(ConfigError::field(
            &dotted(parent, field),
            format!("in {path} must be a map, not {}", type_name(other)),
        )),
    }
}

impl RawConfig {
    /// The fields this crate reads of `homeserver.yaml` (the file `path`), as written.
    fn parse(yaml: &str, path: &str) -> Result<Self, ConfigError> {
        // Duplicate keys are accepted as Synapse's loader accepts them: the last wins.
        // No snippet: the text around an error may hold a secret.
        let options = serde_saphyr::options! {
            with_snippet: false,
            duplicate_keys: serde_saphyr::DuplicateKeyPolicy::LastWins,
        };
        let doc: serde_json::Value =
            serde_saphyr::from_str_with_options(yaml, options).map_err(|e| ConfigError::Parse {
                what: path.to_string(),
                message: describe_yaml_error(&e),
            })?;
        let empty = serde_json::Map::new();
        let top = match &doc {
            serde_json::Value::Object(map) => map,
            serde_json::Value::Null => &empty,
            other => {
                return Err(ConfigError::Parse {
                    what: path.to_string(),
                    message: format!("the document is {}, not a map", type_name(other)),
                });
            }
        };
        let text = |map: &YamlMap, parent: &str, field: &str| yaml_text(map, parent, field, path);
        let database_map = yaml_map(top, "", "database", path)?;
        let server_name = text(top, "", "server_name")?;
        let media_store_path = text(top, "", "media_store_path")?;
        let signing_key_path = text(top, "", "signing_key_path")?;
        let database = match database_map {
            Some(db) => Some(RawDatabase {
                name: text(&db, "database", "name")?,
                args: match yaml_map(&db, "database", "args", path)? {
                    Some(args) => Some(RawDatabaseArgs {
                        database: text(&args, "database.args", "database")?,
                    }),
                    None => None,
                },
            }),
            None => None,
        };
        Ok(RawConfig {
            server_name,
            media_store_path,
            signing_key_path,
            database,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            root: "/tmp/r".into(),
            ..Layout::default()
        }
    }

    #[test]
    fn host_path_and_member_names() {
        let l = layout();
        assert_eq!(
            l.host_path("/data/homeserver.db"),
            "/tmp/r/data/homeserver.db"
        );
        assert_eq!(Layout::default().host_path("/data"), "/data");
        assert_eq!(
            Layout {
                root: "/tmp/r/".into(),
                ..l.clone()
            }
            .host_path("data//x"),
            "/tmp/r/data//x"
        );
        assert_eq!(
            Layout::member_name("/data//media_store/./local_content"),
            "data/media_store/local_content"
        );
        assert_eq!(l.homeserver_config_path(), "/data/homeserver.yaml");
        assert_eq!(l.work_base(), "/data");
    }

    #[test]
    fn validate_names_every_bad_field() {
        let l = Layout {
            config_dir: "data".into(),
            data_dir: "/a/../b".into(),
            user: Some(String::new()),
            ..layout()
        };
        let e = l.validate().unwrap_err();
        assert_eq!(e.fields(), vec!["config_dir", "data_dir", "user"]);
        assert!(layout().validate().is_ok());
    }

    /// Every field [`Layout::validate`] can name is a field of `Layout`, spelled as in
    /// Rust (the `FieldProblem::field` rule), so that a program mapping the fields to
    /// its own names (the CLI's flags, derived from the same fields) finds each one.
    #[cfg(feature = "cli")]
    #[test]
    fn validate_names_layout_fields_that_are_flags() {
        use clap::Args;
        let command = Layout::augment_args(clap::Command::new("t"));
        let flags: std::collections::BTreeMap<String, String> = command
            .get_arguments()
            .map(|a| {
                (
                    a.get_id().to_string(),
                    a.get_long()
                        .expect("every Layout field is a long flag")
                        .to_string(),
                )
            })
            .collect();
        // Every field is a flag named after it.
        let debug = format!("{:?}", Layout::default());
        for (field, long) in &flags {
            assert_eq!(long, &field.replace('_', "-"));
            assert!(
                debug.contains(&format!("{field}: ")),
                "{field} not in {debug}"
            );
        }
        assert_eq!(
            flags.len(),
            debug.matches(": ").count(),
            "{flags:?} vs {debug}"
        );
        // Every field the validation checks is bad here, so each is named.
        let bad = Layout {
            root: "r".into(),
            config_dir: "c".into(),
            data_dir: "/a/../b".into(),
            homeserver_config: Some("h".into()),
            work_dir: Some("/w\0".into()),
            user: Some(String::new()),
            group: Some("g\0".into()),
            service: Some(String::new()),
            ..Layout::default()
        };
        let e = bad.validate().unwrap_err();
        let named = e.fields();
        assert_eq!(
            named,
            vec![
                "root",
                "config_dir",
                "data_dir",
                "homeserver_config",
                "work_dir",
                "user",
                "group",
                "service"
            ]
        );
        for field in named {
            assert!(
                flags.contains_key(field),
                "{field} is no Layout field: {flags:?}"
            );
        }
    }

    #[test]
    fn nested_homeserver_keys_are_named_by_their_path() {
        let e = HomeserverConfig::parse(
            "database:\n  name: sqlite3\n  args:\n    database: [1]\n",
            "/data/homeserver.yaml",
            &layout(),
        )
        .unwrap_err();
        assert_eq!(e.fields(), vec!["database.args.database"]);
        let e =
            HomeserverConfig::parse("database:\n  args: 3\n", "/data/homeserver.yaml", &layout())
                .unwrap_err();
        assert_eq!(e.fields(), vec!["database.args"]);
        let e = HomeserverConfig::parse("database: []\n", "/data/homeserver.yaml", &layout())
            .unwrap_err();
        assert_eq!(e.fields(), vec!["database"]);
    }

    #[test]
    fn parses_media_key_and_database() {
        let yaml = "server_name: example.org\nmedia_store_path: /media\nsigning_key_path: keys/signing.key\n\
                    database:\n  name: sqlite3\n  args:\n    database: /data/homeserver.db\n";
        let c = HomeserverConfig::parse(yaml, "/data/homeserver.yaml", &layout()).unwrap();
        assert_eq!(c.server_name.as_deref(), Some("example.org"));
        assert_eq!(c.media_store_path, "/media");
        assert_eq!(
            c.signing_key_path.as_deref(),
            Some("/data/keys/signing.key")
        );
        assert_eq!(
            c.database,
            DatabaseKind::Sqlite("/data/homeserver.db".into())
        );
    }

    #[test]
    fn defaults_when_keys_are_absent() {
        let c = HomeserverConfig::parse("server_name: x\n", "/data/homeserver.yaml", &layout())
            .unwrap();
        assert_eq!(c.media_store_path, "/data/media_store");
        assert_eq!(c.signing_key_path, None);
        assert_eq!(
            c.database,
            DatabaseKind::Sqlite("/data/homeserver.db".into())
        );
        let empty = HomeserverConfig::parse("", "/data/homeserver.yaml", &layout()).unwrap();
        assert_eq!(empty.media_store_path, "/data/media_store");
    }

    #[test]
    fn postgres_is_recognised() {
        let yaml =
            "database:\n  name: psycopg2\n  args:\n    user: synapse\n    database: synapse\n";
        let c = HomeserverConfig::parse(yaml, "/data/homeserver.yaml", &layout()).unwrap();
        assert_eq!(c.database, DatabaseKind::Postgresql);
    }

    #[test]
    fn invalid_yaml_names_the_file() {
        let e = HomeserverConfig::parse(
            "media_store_path: [unclosed",
            "/data/homeserver.yaml",
            &layout(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("/data/homeserver.yaml"), "{e}");
        let e = HomeserverConfig::parse(
            "media_store_path: {a: 1}",
            "/data/homeserver.yaml",
            &layout(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("/data/homeserver.yaml"), "{e}");
        let e = HomeserverConfig::parse(
            "media_store_path: /a/../etc",
            "/data/homeserver.yaml",
            &layout(),
        )
        .unwrap_err();
        assert_eq!(e.fields(), vec!["media_store_path"]);
    }
}

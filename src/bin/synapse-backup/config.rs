//! What the command line is told: the S3 parameters file, the passphrase, the layout
//! and the tools. Everything here is checked before anything is sent or changed, and
//! every message names the file, flag or variable that is wrong, never a secret value.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};
use synapse_backup::AmbientCredentials;
use synapse_backup::{ConfigError, Layout, S3Client, S3Parameters};

/// Environment variable that sets (or overrides) `access-key` of the `--s3` file.
pub const ENV_ACCESS_KEY: &str = "SYNAPSE_BACKUP_ACCESS_KEY";
/// Environment variable that sets (or overrides) `secret-key` of the `--s3` file.
pub const ENV_SECRET_KEY: &str = "SYNAPSE_BACKUP_SECRET_KEY";
/// Environment variable that sets (or overrides) `session-token` of the `--s3` file
/// (temporary credentials), as the AWS tools name it. Without keys in the file or
/// [`ENV_ACCESS_KEY`] / [`ENV_SECRET_KEY`], it is the AWS chain's (with
/// `AWS_ACCESS_KEY_ID`).
pub const ENV_SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";
/// Environment variable holding the passphrase when `--passphrase-file` is not given.
pub const ENV_PASSPHRASE: &str = "SYNAPSE_BACKUP_PASSPHRASE";
/// Environment variable naming the passphrase file (what `--passphrase-file` gives).
pub const ENV_PASSPHRASE_FILE: &str = "SYNAPSE_BACKUP_PASSPHRASE_FILE";

/// The relation keys the `--s3` file may hold (s3 interface v0 and v1): the library's.
const KNOWN_KEYS: &[&str] = S3Parameters::RELATION_KEYS;

/// Reads and validates the `--s3` file (YAML, or JSON when it ends in `.json`), with
/// `access-key` / `secret-key` / `session-token` taken from [`ENV_ACCESS_KEY`] /
/// [`ENV_SECRET_KEY`] / [`ENV_SESSION_TOKEN`] when those are set and not empty. The
/// file takes the relation's keys, v0 or v1 (`lib-version`, base64 `tls-ca-chain`,
/// `;`-separated `attributes`), with the keys given directly: a v1 `secret-extra`
/// names a Juju secret the CLI cannot read.
///
/// When neither the file nor [`ENV_ACCESS_KEY`] / [`ENV_SECRET_KEY`] give a key (nor a
/// `session-token`, nor a `secret-extra`), the credentials come from the standard AWS
/// chain (see [`AmbientCredentials::from_process_env`]), resolved once here so that
/// an empty chain is a usage error naming every way to give keys.
///
/// # Errors
/// A message naming the file and, for invalid values, every bad field.
pub fn load_s3_parameters(path: &Path) -> Result<S3Parameters, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the s3 parameters file {shown}: {e}"))?;
    let is_json = path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
    let document: Value = if is_json {
        serde_json::from_str(&text).map_err(|e| format!("{shown}: malformed JSON: {e}"))?
    } else {
        // No snippet: it would quote the offending line, which may hold a secret.
        let options = serde_saphyr::options! { with_snippet: false };
        serde_saphyr::from_str_with_options(&text, options)
            .map_err(|e| format!("{shown}: malformed YAML: {e}"))?
    };
    let mut map = match document {
        Value::Object(map) => map,
        Value::Null => {
            return Err(format!(
                "{shown} is empty: it must be a map of s3-integrator keys (bucket, endpoint or region, access-key, secret-key, …)"
            ));
        }
        _ => {
            return Err(format!(
                "{shown} must be a map of s3-integrator keys (bucket, endpoint or region, access-key, secret-key, …)"
            ));
        }
    };
    // A file a person writes: a misspelt key (`endpiont`) must not fall back to a
    // default (AWS's public endpoint). Relation data from Juju is the library's, which
    // keeps ignoring keys it does not know.
    let unknown: Vec<String> = map
        .keys()
        .filter(|key| !KNOWN_KEYS.contains(&key.as_str()))
        .map(|key| match nearest_key(key) {
            Some(near) => format!("{key:?} (did you mean {near:?}?)"),
            None => format!("{key:?}"),
        })
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "{shown}: unknown key{} {}; the keys are: {}",
            if unknown.len() == 1 { "" } else { "s" },
            unknown.join(", "),
            KNOWN_KEYS.join(", ")
        ));
    }
    apply_secret_env(
        &mut map,
        [
            (ENV_ACCESS_KEY, "access-key"),
            (ENV_SECRET_KEY, "secret-key"),
        ],
    )?;
    if map.contains_key("secret-extra")
        && !map.contains_key("access-key")
        && !map.contains_key("secret-key")
    {
        return Err(format!(
            "{shown}: secret-extra names a Juju secret, which the command line cannot read: \
             put access-key and secret-key in the file, or set {ENV_ACCESS_KEY} and {ENV_SECRET_KEY}"
        ));
    }
    if ["access-key", "secret-key", "session-token", "secret-extra"]
        .iter()
        .all(|key| !map.contains_key(*key))
    {
        return ambient_parameters(path, map);
    }
    apply_secret_env(&mut map, [(ENV_SESSION_TOKEN, "session-token")])?;
    let missing_keys = !map.contains_key("access-key") || !map.contains_key("secret-key");
    S3Parameters::deserialize(Value::Object(map)).map_err(|e| {
        if missing_keys {
            format!(
                "{shown}: {e} (put access-key and secret-key in the file, or set {ENV_ACCESS_KEY} and {ENV_SECRET_KEY})"
            )
        } else {
            format!("{shown}: {e}")
        }
    })
}

/// The parameters of a file without keys: credentials from the AWS chain, checked
/// once.
fn ambient_parameters(path: &Path, map: Map<String, Value>) -> Result<S3Parameters, String> {
    let shown = path.display();
    let ways = format!(
        "put access-key and secret-key in the file, set {ENV_ACCESS_KEY} and {ENV_SECRET_KEY}, \
         or give the AWS credential chain keys (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
         a profile with AWS_PROFILE, web identity, or instance metadata)"
    );
    let ambient = AmbientCredentials::from_process_env().map_err(|e| {
        format!("{shown} holds no access-key or secret-key, and the AWS credential chain cannot be used: {e}")
    })?;
    let params = S3Parameters::deserialize_with_ambient_credentials(Value::Object(map), ambient)
        .map_err(|e| format!("{shown}: {e}"))?;
    check_credentials(&params).map_err(|why| {
        format!(
            "{shown} holds no access-key or secret-key, and the AWS credential chain found none ({why}): {ways}"
        )
    })?;
    tracing::info!("no keys in {shown}: using the AWS credential chain");
    Ok(params)
}

/// Resolves the AWS chain's credentials once, on a thread of its own (callers may be
/// inside an async runtime).
fn check_credentials(params: &S3Parameters) -> Result<(), String> {
    let client = S3Client::new(params).map_err(|e| e.to_string())?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start the async runtime: {e}"))?;
                runtime
                    .block_on(client.check_credentials())
                    .map_err(|e| match e {
                        synapse_backup::S3Error::Client(message) => message,
                        other => other.to_string(),
                    })
            })
            .join()
            .unwrap_or_else(|_| Err("the credential check panicked".into()))
    })
}

/// The known key closest to `key` (a typo, another case, `_` for `-`), if one is close.
fn nearest_key(key: &str) -> Option<&'static str> {
    let normalised = key.trim().to_ascii_lowercase().replace('_', "-");
    KNOWN_KEYS
        .iter()
        .map(|known| (strsim::damerau_levenshtein(&normalised, known), *known))
        .filter(|(distance, known)| *distance <= (known.len() / 3).max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, known)| known)
}

/// Puts the secrets from the environment variables `vars` into the document.
fn apply_secret_env<const N: usize>(
    map: &mut Map<String, Value>,
    vars: [(&str, &str); N],
) -> Result<(), String> {
    for (var, key) in vars {
        if let Some(value) = non_empty_env(var)? {
            map.insert(key.to_string(), Value::String(value));
        }
    }
    Ok(())
}

/// A variable's value when it is set and not empty.
fn non_empty_env(var: &str) -> Result<Option<String>, String> {
    match std::env::var_os(var) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => v
            .into_string()
            .map(Some)
            .map_err(|_: OsString| format!("{var} is not valid UTF-8")),
    }
}

/// A passphrase that never shows in `Debug` output.
pub struct Passphrase(String);

impl Passphrase {
    /// The passphrase.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(******)")
    }
}

/// Reads the passphrase from `file` (exactly one trailing `\n` is dropped, as
/// `echo passphrase > file` writes it) or, without a file, from [`ENV_PASSPHRASE`],
/// and checks gpg can use it whole.
///
/// # Errors
/// A message naming the file or variable: unreadable, not UTF-8, empty, or holding a
/// line break or NUL.
pub fn load_passphrase(file: Option<&Path>) -> Result<Passphrase, String> {
    let (passphrase, source) = match file {
        Some(path) => {
            let shown = path.display();
            let bytes = read_private_file(path)?;
            let mut text = String::from_utf8(bytes)
                .map_err(|_| format!("the passphrase file {shown} is not valid UTF-8"))?;
            if text.ends_with('\n') {
                text.pop();
            }
            (text, format!("the passphrase file {shown}"))
        }
        None => match non_empty_env(ENV_PASSPHRASE)? {
            Some(text) => (text, ENV_PASSPHRASE.to_string()),
            None => {
                return Err(format!(
                    "a passphrase is needed: pass --passphrase-file FILE, or set {ENV_PASSPHRASE_FILE} (a file) or {ENV_PASSPHRASE}"
                ));
            }
        },
    };
    synapse_backup::check_passphrase(&passphrase).map_err(|e| format!("{source}: {e}"))?;
    Ok(Passphrase(passphrase))
}

/// Reads the passphrase file, checking its mode on the file opened (no race with a
/// rename): writable by others is refused (whoever can change it chooses the
/// passphrase of the next backups); readable by its group or others, or writable by
/// its group, is used with a warning naming the file and the fix, as ssh and restic
/// warn about such key files (a group-writable file is common under umask 002).
fn read_private_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let cannot = |e: std::io::Error| format!("cannot read the passphrase file {shown}: {e}");
    let file = std::fs::File::open(path).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(format!("the passphrase file {shown} is not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o002 != 0 {
        return Err(format!(
            "the passphrase file {shown} is writable by others (mode {mode:04o}): whoever can change it chooses the passphrase of the next backups; make it private with `chmod 600 {shown}`"
        ));
    }
    if mode & 0o066 != 0 {
        let mut who = Vec::new();
        if mode & 0o040 != 0 {
            who.push("readable by its group");
        }
        if mode & 0o004 != 0 {
            who.push("readable by others");
        }
        if mode & 0o020 != 0 {
            who.push("writable by its group");
        }
        tracing::warn!(
            "the passphrase file {shown} is {} (mode {mode:04o}): anyone who can read it can decrypt the backups, and whoever can change it chooses the next backups' passphrase; make it private with `chmod 600 {shown}`",
            who.join(" and ")
        );
    }
    // A passphrase is a line: anything much longer is not a passphrase file.
    let mut bytes = Vec::new();
    file.take(64 * 1024 + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() > 64 * 1024 {
        return Err(format!(
            "the passphrase file {shown} is larger than 64 KiB: not a passphrase file"
        ));
    }
    Ok(bytes)
}

/// Checks the layout the flags give and fills in what the flags leave to the host:
/// `--root` must be an existing directory (a relative one is made absolute), every
/// path flag absolute; run as root without `--user`, the pipelines run as the data
/// dir's owner.
///
/// # Errors
/// A message naming each bad flag.
pub fn layout(flags: &Layout) -> Result<Layout, String> {
    let root = std::path::absolute(&flags.root)
        .map_err(|e| format!("{} {}: {e}", flag("root"), flags.root))?;
    if !root.is_dir() {
        return Err(format!(
            "{} {}: no such directory",
            flag("root"),
            root.display()
        ));
    }
    let root = root
        .to_str()
        .ok_or_else(|| format!("{} {}: must be valid UTF-8", flag("root"), root.display()))?
        .to_string();
    let (user, group, ids) = default_owner(flags, &root);
    let mut layout = flags.clone().root(root).user(user).group(group);
    if let Some((uid, gid)) = ids {
        layout = layout.user_id(Some(uid)).group_id(Some(gid));
    }
    layout.validate().map_err(|e| describe_layout_error(&e))?;
    Ok(layout)
}

/// Checks the layout the flags give for a workload reached through `--pebble`: every
/// path flag (`--root` too) absolute, as the workload sees it, nothing checked on this
/// host; the default owner is read from the workload by the caller.
///
/// # Errors
/// A message naming each bad flag.
pub fn workload_layout(flags: &Layout) -> Result<Layout, String> {
    flags.validate().map_err(|e| describe_layout_error(&e))?;
    Ok(flags.clone())
}

/// `--user` and `--group`; run as root without them, the owner and group of the data
/// dir (the workload user), so that every step in the workload runs as that user and
/// what it writes (the snapshot, restored files) belongs to it. A data dir owned by
/// root, or missing, keeps root. An owner with no passwd name (common in containers)
/// is run as by its numeric ids (the third value: uid and gid).
fn default_owner(
    flags: &Layout,
    root: &str,
) -> (Option<String>, Option<String>, Option<(u32, u32)>) {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() || flags.user.is_some() || flags.user_id.is_some() {
        return (flags.user.clone(), flags.group.clone(), None);
    }
    let data = Path::new(root).join(flags.data_dir.trim_start_matches('/'));
    let Ok(meta) = std::fs::metadata(&data) else {
        return (None, flags.group.clone(), None);
    };
    if meta.uid() == 0 {
        return (None, flags.group.clone(), None);
    }
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(meta.uid()))
        .ok()
        .flatten()
        .map(|u| u.name);
    let group = flags.group.clone().or_else(|| {
        nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(meta.gid()))
            .ok()
            .flatten()
            .map(|g| g.name)
    });
    match user {
        Some(user) => {
            tracing::info!(user, group = ?group, dir = %data.display(), "running the pipelines as the owner of the data dir");
            (Some(user), group, None)
        }
        None => {
            tracing::info!(uid = meta.uid(), gid = meta.gid(), dir = %data.display(), "running the pipelines as the owner of the data dir (a uid with no name)");
            (None, None, Some((meta.uid(), meta.gid())))
        }
    }
}

/// The flag that sets a [`Layout`] field (`data_dir` is `--data-dir`), as clap derives
/// it from `Layout`: the one place a [`FieldProblem`](synapse_backup::FieldProblem)'s
/// field name becomes a flag. A name that is no field stays as it is.
pub fn flag(field: &str) -> String {
    use clap::Args;
    Layout::augment_args(clap::Command::new("layout"))
        .get_arguments()
        .find(|arg| arg.get_id() == field)
        .and_then(|arg| arg.get_long())
        .map_or_else(|| field.to_string(), |long| format!("--{long}"))
}

/// Names the flags of a layout error (`config_dir` is `--config-dir`).
fn describe_layout_error(error: &ConfigError) -> String {
    match error {
        ConfigError::Invalid { problems } => problems
            .iter()
            .map(|p| format!("{}: {}", flag(&p.field), p.message))
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

/// The tools the backup and restore pipelines run, their flag, and how to install them.
const TOOLS: [(&str, &str); 4] = [
    ("bash", "install it with: sudo apt-get install -y bash"),
    ("tar", "install GNU tar with: sudo apt-get install -y tar"),
    ("gpg", "install GnuPG with: sudo apt-get install -y gnupg"),
    (
        "aws",
        "install the AWS CLI with `pip install awscli` (in a virtualenv), or run ./scripts/quickstart once to get one under target/tools-venv",
    ),
];

/// Finds bash, tar, gpg and the aws CLI (on `PATH` for a bare name), and puts their
/// absolute paths in the layout. Without `aws` (the library transfers: `--transfer
/// library`), the aws CLI is left as given: nothing runs it.
///
/// # Errors
/// A message naming the missing tool, its flag and how to install it.
pub fn resolve_tools(layout: &mut Layout, aws: bool) -> Result<(), String> {
    for (name, hint) in TOOLS {
        if name == "aws" && !aws {
            continue;
        }
        let slot = match name {
            "bash" => &mut layout.bash,
            "tar" => &mut layout.tar,
            "gpg" => &mut layout.gpg,
            _ => &mut layout.aws,
        };
        match find_program(slot) {
            Some(found) => *slot = found.to_string_lossy().into_owned(),
            None if slot.contains('/') => {
                let flag = flag(name);
                return Err(format!(
                    "{flag} {slot}: not an executable file; {hint}, or pass {flag} PATH"
                ));
            }
            None => {
                return Err(format!(
                    "{slot} is not on PATH; {hint}, or pass {} PATH",
                    flag(name)
                ));
            }
        }
    }
    // zstd only for backups made with it: left as given when missing (the pipeline
    // that needs it says so).
    if let Some(found) = find_program(&layout.zstd) {
        layout.zstd = found.to_string_lossy().into_owned();
    }
    Ok(())
}

/// `program` itself when it holds a `/`, else the first match on `PATH`; only
/// executable regular files count.
pub fn find_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.is_empty() {
        return None;
    }
    if program.contains('/') {
        let path = std::path::absolute(program).ok()?;
        return executable(&path).then_some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(program))
        .find(|candidate| executable(candidate))
}

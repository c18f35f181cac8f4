//! Test support (feature `testing`): backups written into an [`ObjectStore`] as the real
//! pipeline leaves them ([`put_backup`]), and a scripted workload whose pipeline
//! "uploads" into the store ([`FakeWorkload`]), so that a charm's unit test of create,
//! list, status, prune, delete and restore's decision path runs with
//! [`MemoryStore`](crate::testing::MemoryStore) and no server or tools.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chrono::Utc;
use sha2::{Digest, Sha256};

use crate::backup::catalog::BackupStatus;
use crate::backup::manifest::INNER_MANIFEST_MEMBER;
use crate::backup::manifest::{
    Cipher, DatabaseSnapshot, MANIFEST_FORMAT, Manifest, ManifestLayout,
};
use crate::backup::plan::{self, BackupId, Compression, MANIFEST_SUFFIX};
use crate::backup::scripts;
use crate::container::{
    Container, ExecOptions, ExecOutput, FileInfo, FileKind, ListOptions, MakeDirOptions,
    PushOptions,
};
use crate::error::{ContainerError, S3Error, Stage};
use crate::s3::ObjectStore;

/// Writes the objects of backup `id` with `data` as its (stand-in) encrypted object, as
/// a run of `create` leaves them in the bucket, stamped with the store's clock:
/// - [`BackupStatus::Complete`]: the data tagged as ours, then its manifest (what a
///   successful create uploads; the manifest's checksum is a placeholder: only a
///   download checks it);
/// - [`BackupStatus::Incomplete`]: the tagged data without a manifest (a create that
///   failed or was killed after its upload);
/// - [`BackupStatus::Legacy`]: untagged data without a manifest (the Python charm's).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use synapse_backup::testing::{MemoryStore, put_backup};
/// use synapse_backup::{BackupId, BackupStatus, list_backups};
///
/// let store = MemoryStore::new("synapse/backups");
/// let id = BackupId::from_time(store.now());
/// put_backup(&store, &id, BackupStatus::Complete, b"ciphertext").await?;
/// assert_eq!(list_backups(&store).await?[0].status, BackupStatus::Complete);
/// # Ok(()) }
/// ```
///
/// # Errors
/// The store's, when a write fails.
pub async fn put_backup(
    store: &(impl ObjectStore + ?Sized),
    id: &BackupId,
    status: BackupStatus,
    data: &[u8],
) -> Result<(), S3Error> {
    let key = store.object_key(id.as_str());
    let ours = HashMap::from([(plan::METADATA_KEY.to_string(), plan::metadata_value())]);
    let tag = if status == BackupStatus::Legacy {
        HashMap::new()
    } else {
        ours.clone()
    };
    store
        .put_object(&key, data.to_vec(), "application/octet-stream", &tag)
        .await?;
    if status == BackupStatus::Complete {
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            backup_id: id.clone(),
            created: Utc::now(),
            created_by: plan::metadata_value(),
            server_name: Some("example.test".into()),
            layout: ManifestLayout {
                config_dir: "/data".into(),
                data_dir: "/data".into(),
                media_store_path: "/data/media_store".into(),
                members: vec!["data/homeserver.db".into()],
            },
            database: DatabaseSnapshot::Sqlite,
            warnings: Vec::new(),
            files: Vec::new(),
            plaintext_bytes: data.len() as u64,
            ciphertext_bytes: data.len() as u64,
            ciphertext_sha256: "0".repeat(64),
            cipher: Cipher::Aes256,
            compression: Compression::None,
            nonce: None,
            chain: None,
        };
        store
            .put_object(
                &format!("{key}{MANIFEST_SUFFIX}"),
                manifest.to_json(),
                "application/json",
                &ours,
            )
            .await?;
    }
    Ok(())
}

/// Where a [`FakeWorkload`]'s backup pipeline fails, when told to.
const PIPELINE_STAGES: [(Stage, &str); 4] = [
    (Stage::Tar, "tar"),
    (Stage::Gpg, "gpg"),
    (Stage::Check, "tee"),
    (Stage::Upload, "upload"),
];

/// The first bytes of a [`FakeWorkload`]'s stand-in ciphertext.
pub const FAKE_CIPHERTEXT_HEADER: &[u8] = b"synapse-backup fake workload: not encrypted\n";

/// A scripted stand-in for the workload (feature `testing`): an in-memory file tree and
/// the part the pipeline plays, without bash, tar, gpg or the aws CLI. With a
/// [`MemoryStore`](crate::testing::MemoryStore) as the bucket, a charm's unit test runs
/// `create`, `list`, `prune` and restore's decision path with no server:
///
/// - the work dir's steps (`workdir.sh`: make, write, read, list, kind, remove, …) act
///   on the tree, as the workload user would;
/// - `prepare.sh` copies the database into the work dir's snapshot and writes the size;
/// - `backup.sh` "archives" the members (tar's listing in the work dir's `index`), and
///   "uploads" a stand-in ciphertext (the members' names and contents, not encrypted)
///   into the store at the pipeline's URL, with the `--metadata` it was given, and
///   writes its checksum and length, as the real pipeline uploads into the bucket;
///   [`FakeWorkload::fail_at`] makes it fail at a stage instead, uploading nothing;
/// - anything that reads a backup back (the passphrase check, restore's and verify's
///   download) fails as a failed download does: exit 10, "the fake workload does not
///   read backups back". A restore therefore stops at its download, after its checks
///   and the bucket's answers; a create's passphrase check is skipped with a warning.
///
/// Services are a set of names, all running at first.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use synapse_backup::testing::{FakeWorkload, MemoryStore};
/// use synapse_backup::{BackupStatus, Backups, CreateOptions, Layout, S3Parameters};
///
/// let store = MemoryStore::new("synapse");
/// let params = S3Parameters::from_relation_data(&[("access-key", "AKID"),
///     ("secret-key", "secret"), ("bucket", "synapse-backups"), ("endpoint", "http://127.0.0.1:1")]
///     .into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())?;
/// let workload = FakeWorkload::synapse(store.clone());
/// let backups = Backups::with_store(workload, params, Layout::default(), store)?;
/// let report = backups.create("a passphrase", &CreateOptions::default()).await?;
/// assert_eq!(backups.list().await?[0].status, BackupStatus::Complete);
/// let manifest = backups.read_manifest(&report.id).await?;
/// assert!(manifest.files.iter().any(|f| f.path.as_bytes() == b"data/homeserver.db"));
/// # Ok(()) }
/// ```
pub struct FakeWorkload {
    store: Arc<dyn ObjectStore>,
    state: Mutex<FakeState>,
}

#[derive(Default)]
struct FakeState {
    /// Every path (no trailing `/`): a file's content, or `None` for a dir.
    tree: BTreeMap<String, Option<Vec<u8>>>,
    fail_at: Option<Stage>,
    stopped: BTreeSet<String>,
    made: u32,
    scripts: Vec<String>,
}

impl fmt::Debug for FakeWorkload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("FakeWorkload")
            .field("paths", &state.tree.len())
            .field("fail_at", &state.fail_at)
            .finish_non_exhaustive()
    }
}

/// The `homeserver.yaml` of [`FakeWorkload::synapse`].
pub const FAKE_HOMESERVER_YAML: &str = "server_name: example.test\n\
    signing_key_path: /data/example.test.signing.key\n\
    media_store_path: /data/media_store\n\
    database:\n  name: sqlite3\n  args:\n    database: /data/homeserver.db\n";

impl FakeWorkload {
    /// An empty workload (only `/` and `/tmp`) whose pipeline uploads into `store`.
    pub fn new(store: impl ObjectStore + 'static) -> Self {
        let mut state = FakeState::default();
        state.tree.insert("/".into(), None);
        state.tree.insert("/tmp".into(), None);
        FakeWorkload {
            store: Arc::new(store),
            state: Mutex::new(state),
        }
    }

    /// A Synapse workload laid out as [`Layout::default`](crate::Layout): under
    /// `/data`, [`FAKE_HOMESERVER_YAML`], a signing key, a (stand-in) SQLite
    /// `homeserver.db` and one local media file.
    pub fn synapse(store: impl ObjectStore + 'static) -> Self {
        Self::new(store)
            .with_file("/data/homeserver.yaml", FAKE_HOMESERVER_YAML)
            .with_file("/data/example.test.signing.key", "ed25519 a_key fakekey\n")
            .with_file("/data/homeserver.db", "SQLite format 3\0(a stand-in)")
            .with_file(
                "/data/media_store/local_content/ab/cd/efghijklmnop",
                "a media file",
            )
    }

    /// Puts a file (and its missing parent dirs) in the tree.
    #[must_use]
    pub fn with_file(self, path: &str, content: impl AsRef<[u8]>) -> Self {
        {
            let mut state = self.lock();
            state.make_parents(path);
            state
                .tree
                .insert(normal(path), Some(content.as_ref().to_vec()));
        }
        self
    }

    /// Makes the backup pipeline fail at `stage` (`Tar`, `Gpg`, `Check` or `Upload`):
    /// it exits as the real one does when that stage fails, and uploads nothing. `None`
    /// makes it succeed again.
    pub fn fail_at(&self, stage: Option<Stage>) {
        self.lock().fail_at = stage;
    }

    /// A file's content, `None` when it is missing (or a dir).
    pub fn file(&self, path: &str) -> Option<Vec<u8>> {
        self.lock().tree.get(&normal(path)).cloned().flatten()
    }

    /// Every path in the tree, sorted.
    pub fn paths(&self) -> Vec<String> {
        self.lock().tree.keys().cloned().collect()
    }

    /// The pipeline scripts run so far, by name (`prepare`, `backup`, `fetch`,
    /// `swap preflight`, …); the work dir's steps are not listed.
    pub fn scripts_run(&self) -> Vec<String> {
        self.lock().scripts.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn backup(
        &self,
        argv: &[String],
        env: &BTreeMap<String, String>,
    ) -> Result<ExecOutput, ContainerError> {
        let work = env.get("SB_WORK").cloned().unwrap_or_default();
        let root = env.get("SB_ROOT").cloned().unwrap_or_else(|| "/".into());
        let failed = {
            let mut state = self.lock();
            state.fail_at.and_then(|stage| {
                let (position, (_, name)) = PIPELINE_STAGES
                    .iter()
                    .enumerate()
                    .find(|(_, (s, _))| *s == stage)?;
                state.tree.insert(
                    format!("{work}/failed"),
                    Some(format!("{name} 2\n").into_bytes()),
                );
                Some((position, *name))
            })
        };
        if let Some((position, name)) = failed {
            return Err(exited(
                argv,
                10 + position as i32,
                &format!("{name}: the fake workload's scripted failure"),
            ));
        }
        let (index, body) = self.lock().archive(&work, &root);
        let url = env.get("SB_URL").cloned().unwrap_or_default();
        let key = url
            .strip_prefix("s3://")
            .and_then(|rest| rest.split_once('/'))
            .map(|(_, key)| key.to_string())
            .unwrap_or_default();
        let metadata: HashMap<String, String> = argv
            .iter()
            .position(|a| a == "--metadata")
            .and_then(|i| argv.get(i + 1))
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_default();
        let sha = hex(&Sha256::digest(&body));
        let length = body.len();
        if let Err(e) = self
            .store
            .put_object(&key, body, "application/octet-stream", &metadata)
            .await
        {
            self.lock()
                .tree
                .insert(format!("{work}/failed"), Some(b"upload 1\n".to_vec()));
            return Err(exited(argv, 13, &format!("upload failed: {e}")));
        }
        let mut state = self.lock();
        for (name, content) in [
            ("index", index),
            ("tar.status", b"0\n".to_vec()),
            ("sha256", format!("{sha}  -\n").into_bytes()),
            ("length", format!("{length}\n").into_bytes()),
        ] {
            state.tree.insert(format!("{work}/{name}"), Some(content));
        }
        Ok(ExecOutput::default())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn normal(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    }
}

fn parent(path: &str) -> Option<&str> {
    match path.rsplit_once('/') {
        Some(("", _)) if path != "/" => Some("/"),
        Some((dir, _)) if !dir.is_empty() => Some(dir),
        _ => None,
    }
}

fn exited(argv: &[String], exit_code: i32, stderr: &str) -> ContainerError {
    ContainerError::ExitedNonZero {
        command: argv.first().cloned().unwrap_or_default(),
        exit_code,
        stderr: stderr.into(),
    }
}

fn output(stdout: impl Into<Vec<u8>>) -> Result<ExecOutput, ContainerError> {
    Ok(ExecOutput {
        stdout: stdout.into(),
        ..ExecOutput::default()
    })
}

/// One member line of tar's `-vv` listing.
fn index_line(name: &str, content: Option<&[u8]>) -> String {
    match content {
        Some(bytes) => format!("-rw------- 0/0 {} 2026-01-01 00:00 {name}\n", bytes.len()),
        None => format!("drwx------ 0/0 0 2026-01-01 00:00 {name}/\n"),
    }
}

impl FakeState {
    fn make_parents(&mut self, path: &str) {
        let mut dir = parent(path);
        while let Some(d) = dir {
            self.tree.entry(d.to_string()).or_insert(None);
            dir = parent(d);
        }
    }

    fn children(&self, dir: &str) -> Vec<(String, Option<Vec<u8>>)> {
        let prefix = if dir == "/" {
            "/".to_string()
        } else {
            format!("{dir}/")
        };
        self.tree
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| !k[prefix.len()..].contains('/') && k.len() > prefix.len())
            .map(|(k, v)| (k[prefix.len()..].to_string(), v.clone()))
            .collect()
    }

    fn subtree(&self, path: &str) -> Vec<(String, Option<Vec<u8>>)> {
        let prefix = format!("{path}/");
        self.tree
            .iter()
            .filter(|(k, _)| *k == path || k.starts_with(&prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn remove(&mut self, path: &str) {
        for (k, _) in self.subtree(path) {
            self.tree.remove(&k);
        }
    }

    fn nul_list(&self, path: &str) -> Vec<String> {
        self.tree
            .get(path)
            .cloned()
            .flatten()
            .unwrap_or_default()
            .split(|b| *b == 0)
            .filter(|m| !m.is_empty())
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .collect()
    }

    /// tar's listing of what `backup.sh` archives, and the stand-in ciphertext.
    fn archive(&self, work: &str, root: &str) -> (Vec<u8>, Vec<u8>) {
        let mut index = String::new();
        let mut body = FAKE_CIPHERTEXT_HEADER.to_vec();
        let mut add = |name: &str, content: Option<&[u8]>| {
            index.push_str(&index_line(name, content));
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            body.extend_from_slice(content.unwrap_or_default());
            body.push(0);
        };
        let inner = format!("{work}/inner/{INNER_MANIFEST_MEMBER}");
        add(
            INNER_MANIFEST_MEMBER,
            self.tree.get(&inner).cloned().flatten().as_deref(),
        );
        let root = root.trim_end_matches('/');
        let snap = format!("{work}/snap");
        let members = self
            .nul_list(&format!("{work}/files"))
            .into_iter()
            .map(|m| (root.to_string(), m))
            .chain(
                self.nul_list(&format!("{work}/snapfiles"))
                    .into_iter()
                    .map(|m| (snap.clone(), m)),
            );
        for (base, member) in members {
            for (path, content) in self.subtree(&format!("{base}/{member}")) {
                add(&path[base.len() + 1..], content.as_deref());
            }
        }
        (index.into_bytes(), body)
    }
}

impl FakeState {
    /// `workdir.sh MODE ARGS`, on the tree.
    fn workdir(
        &mut self,
        argv: &[String],
        stdin: Option<&[u8]>,
    ) -> Result<ExecOutput, ContainerError> {
        let arg = |i: usize| argv.get(5 + i).map_or("", String::as_str);
        let missing = |path: &str| exited(argv, 52, &format!("{path} does not exist"));
        match argv.get(4).map_or("", String::as_str) {
            "make" => self.make(argv, arg(0), arg(1), stdin),
            "make-temp" => self.make(argv, "/tmp", arg(0), stdin),
            "make-in" => self.make_in(argv, arg(0), arg(1), stdin),
            "target" => self.target(argv, arg(0)),
            "unmake" => self.unmake(arg(0), arg(1)),
            "write" => {
                let path = format!("{}/{}", normal(arg(0)), arg(1));
                if self.tree.contains_key(&path) {
                    return Err(exited(
                        argv,
                        1,
                        &format!("{path}: cannot overwrite existing file"),
                    ));
                }
                self.tree
                    .insert(path, Some(stdin.unwrap_or_default().to_vec()));
                output("")
            }
            "append" => {
                let path = format!("{}/{}", normal(arg(0)), arg(1));
                match self.tree.get_mut(&path) {
                    Some(Some(content)) => content.extend_from_slice(stdin.unwrap_or_default()),
                    _ => {
                        return Err(exited(argv, 52, &format!("{path} is not a regular file")));
                    }
                }
                output("")
            }
            "read" => {
                let content = self
                    .tree
                    .get(&normal(arg(0)))
                    .cloned()
                    .flatten()
                    .ok_or_else(|| missing(arg(0)))?;
                let offset = arg(1).parse::<usize>().unwrap_or(0).min(content.len());
                let length = arg(2).parse::<usize>().unwrap_or(usize::MAX);
                output(
                    content[offset..]
                        .iter()
                        .take(length)
                        .copied()
                        .collect::<Vec<u8>>(),
                )
            }
            "size" => {
                let content = self
                    .tree
                    .get(&normal(arg(0)))
                    .cloned()
                    .flatten()
                    .ok_or_else(|| missing(arg(0)))?;
                output(format!("{}\n", content.len()))
            }
            "list" => self.list(argv, arg(0), arg(1)),
            "kind" => match self.tree.get(&normal(arg(0))) {
                None => Err(exited(argv, 52, "")),
                Some(content) => output(if content.is_some() { "f" } else { "d" }),
            },
            "remove" => {
                self.remove(&normal(arg(0)));
                output("")
            }
            "sweep" => {
                self.remove(&normal(arg(0)));
                output("removed\n")
            }
            other => Err(exited(argv, 50, &format!("unknown mode {other:?}"))),
        }
    }

    fn make_in(
        &mut self,
        argv: &[String],
        dir: &str,
        prefix: &str,
        stdin: Option<&[u8]>,
    ) -> Result<ExecOutput, ContainerError> {
        let dir = normal(dir);
        self.make_parents(&format!("{dir}/x"));
        if !self.children(&dir).is_empty() {
            return Err(exited(argv, 51, &format!("{dir} is not empty")));
        }
        self.make(argv, &dir, prefix, stdin)
    }

    /// An extraction's target: made, and the topmost dir made printed.
    fn target(&mut self, argv: &[String], dir: &str) -> Result<ExecOutput, ContainerError> {
        let dir = normal(dir);
        let mut top = String::new();
        let mut d = Some(dir.as_str());
        while let Some(p) = d.filter(|p| !self.tree.contains_key(*p)) {
            top = p.to_string();
            d = parent(p);
        }
        if matches!(self.tree.get(&dir), Some(Some(_))) {
            return Err(exited(argv, 54, &format!("{dir} is not a directory")));
        }
        self.make_parents(&format!("{dir}/x"));
        output(format!("{top}\n"))
    }

    /// Removes `dir` and its parents up to `top` while they are empty.
    fn unmake(&mut self, dir: &str, top: &str) -> Result<ExecOutput, ContainerError> {
        let (mut d, top) = (normal(dir), normal(top));
        while self.tree.get(&d) == Some(&None) && self.children(&d).is_empty() {
            self.tree.remove(&d);
            if d == top {
                break;
            }
            d = parent(&d).unwrap_or("/").to_string();
        }
        output("")
    }

    fn list(
        &self,
        argv: &[String],
        dir: &str,
        pattern: &str,
    ) -> Result<ExecOutput, ContainerError> {
        let dir = normal(dir);
        match self.tree.get(&dir) {
            None => return Err(exited(argv, 52, "")),
            Some(Some(_)) => return Err(exited(argv, 53, &format!("{dir} is not a directory"))),
            Some(None) => {}
        }
        let pattern = glob::Pattern::new(pattern).map_err(|e| exited(argv, 1, &e.to_string()))?;
        let mut out = Vec::new();
        for (name, content) in self.children(&dir) {
            if pattern.matches(&name) {
                let letter = if content.is_some() { 'f' } else { 'd' };
                out.extend_from_slice(format!("{letter} {name}\0").as_bytes());
            }
        }
        output(out)
    }

    fn make(
        &mut self,
        argv: &[String],
        base: &str,
        prefix: &str,
        stdin: Option<&[u8]>,
    ) -> Result<ExecOutput, ContainerError> {
        let base = normal(base);
        if self.tree.get(&base) != Some(&None) {
            return Err(exited(
                argv,
                1,
                &format!(
                    "mktemp: failed to create directory via template '{base}/{prefix}.XXXXXXXXXX': No such file or directory"
                ),
            ));
        }
        self.made += 1;
        let dir = format!(
            "{}/{prefix}.fake{:06}",
            base.trim_end_matches('/'),
            self.made
        );
        self.tree.insert(dir.clone(), None);
        self.tree.insert(format!("{dir}/gnupg"), None);
        self.tree.insert(
            format!("{dir}/owner"),
            Some(stdin.unwrap_or_default().to_vec()),
        );
        output(format!("{dir}\n"))
    }

    /// `prepare.sh`: the database's snapshot and the size to archive.
    fn prepare(
        &mut self,
        argv: &[String],
        env: &BTreeMap<String, String>,
    ) -> Result<ExecOutput, ContainerError> {
        let work = env.get("SB_WORK").cloned().unwrap_or_default();
        let root = env
            .get("SB_ROOT")
            .map_or("", |r| r.trim_end_matches('/'))
            .to_string();
        let mut size = 0;
        self.tree
            .insert(format!("{work}/snapfiles"), Some(Vec::new()));
        if let (Some(db), Some(member)) = (env.get("SB_DB"), env.get("SB_DB_MEMBER")) {
            let content = self.tree.get(db).cloned().flatten().ok_or_else(|| {
                exited(
                    argv,
                    21,
                    &format!("the snapshot of {db} failed: no such file"),
                )
            })?;
            size += content.len();
            let snapshot = format!("{work}/snap/{member}");
            self.make_parents(&snapshot);
            self.tree.insert(snapshot, Some(content));
            self.tree.insert(
                format!("{work}/snapfiles"),
                Some(format!("{member}\0").into_bytes()),
            );
        }
        for member in self.nul_list(&format!("{work}/files")) {
            size += self
                .subtree(&format!("{root}/{member}"))
                .iter()
                .map(|(_, c)| c.as_ref().map_or(0, Vec::len))
                .sum::<usize>();
        }
        self.tree.insert(
            format!("{work}/size"),
            Some(format!("{size}\n").into_bytes()),
        );
        output("")
    }
}

/// The pipeline script an argv runs (`bash -c SCRIPT bash …`).
fn script_of(argv: &[String]) -> Option<&'static str> {
    let script = argv.get(2)?;
    [
        (scripts::WORKDIR, "workdir"),
        (scripts::PREPARE, "prepare"),
        (scripts::BACKUP, "backup"),
        (scripts::FETCH, "fetch"),
        (scripts::SWAP, "swap"),
        (scripts::PASSCHECK, "passcheck"),
    ]
    .into_iter()
    .find(|(text, _)| script == text)
    .map(|(_, name)| name)
}

#[async_trait]
impl Container for FakeWorkload {
    async fn exec(
        &self,
        command: &[String],
        options: ExecOptions,
    ) -> Result<ExecOutput, ContainerError> {
        let Some(script) = script_of(command) else {
            return Err(exited(
                command,
                127,
                "the fake workload runs only the pipeline's scripts",
            ));
        };
        if script != "workdir" {
            let mode = command.get(4).filter(|_| script == "swap");
            let name = mode.map_or_else(|| script.to_string(), |m| format!("{script} {m}"));
            self.lock().scripts.push(name);
        }
        match script {
            "workdir" => self.lock().workdir(command, options.stdin.as_deref()),
            "prepare" => self.lock().prepare(command, &options.environment),
            "backup" => self.backup(command, &options.environment).await,
            _ => Err(exited(
                command,
                10,
                "the fake workload does not read backups back",
            )),
        }
    }

    async fn push(
        &self,
        path: &str,
        content: &[u8],
        options: PushOptions,
    ) -> Result<(), ContainerError> {
        let mut state = self.lock();
        if options.make_dirs {
            state.make_parents(path);
        } else if parent(path).is_some_and(|p| state.tree.get(p) != Some(&None)) {
            return Err(ContainerError::NotFound { path: path.into() });
        }
        state.tree.insert(normal(path), Some(content.to_vec()));
        Ok(())
    }

    async fn pull(&self, path: &str) -> Result<Vec<u8>, ContainerError> {
        self.file(path)
            .ok_or_else(|| ContainerError::NotFound { path: path.into() })
    }

    async fn list_files(
        &self,
        path: &str,
        options: ListOptions,
    ) -> Result<Vec<FileInfo>, ContainerError> {
        let state = self.lock();
        let dir = normal(path);
        if !state.tree.contains_key(&dir) {
            return Err(ContainerError::NotFound { path: path.into() });
        }
        let pattern = options
            .pattern
            .as_deref()
            .and_then(|p| glob::Pattern::new(p).ok());
        Ok(state
            .children(&dir)
            .into_iter()
            .filter(|(name, _)| pattern.as_ref().is_none_or(|p| p.matches(name)))
            .map(|(name, content)| FileInfo {
                path: format!("{}/{name}", dir.trim_end_matches('/')),
                kind: if content.is_some() {
                    FileKind::File
                } else {
                    FileKind::Directory
                },
                size: content.as_ref().map_or(0, |c| c.len() as u64),
                permissions: if content.is_some() { 0o600 } else { 0o700 },
                name,
            })
            .collect())
    }

    async fn remove_path(&self, path: &str, recursive: bool) -> Result<(), ContainerError> {
        let mut state = self.lock();
        let path = normal(path);
        if !recursive && !state.children(&path).is_empty() {
            return Err(exited(&["rm".into()], 1, &format!("{path} is not empty")));
        }
        state.remove(&path);
        Ok(())
    }

    async fn make_dir(&self, path: &str, options: MakeDirOptions) -> Result<(), ContainerError> {
        let mut state = self.lock();
        if options.make_parents {
            state.make_parents(path);
        }
        state.tree.entry(normal(path)).or_insert(None);
        Ok(())
    }

    async fn exists(&self, path: &str) -> Result<bool, ContainerError> {
        Ok(self.lock().tree.contains_key(&normal(path)))
    }

    async fn start(&self, services: &[String]) -> Result<(), ContainerError> {
        let mut state = self.lock();
        for s in services {
            state.stopped.remove(s);
        }
        Ok(())
    }

    async fn stop(&self, services: &[String]) -> Result<(), ContainerError> {
        self.lock().stopped.extend(services.iter().cloned());
        Ok(())
    }

    async fn is_running(&self, service: &str) -> Result<bool, ContainerError> {
        Ok(!self.lock().stopped.contains(service))
    }
}

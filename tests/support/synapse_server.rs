//! A real Synapse for tests: the releases `scripts/synapse.sh` installs, a homeserver
//! generated for the test (SQLite, one client listener on 127.0.0.1, no federation, no
//! key servers, raised rate limits, pre-generated thumbnails), run as its own system
//! user under a [`ProcessSupervisor`] service named `synapse`, and a client for its
//! client API over 127.0.0.1.
//!
//! The client is Python's `urllib` in the Synapse virtualenv (one short process per
//! request): it needs nothing the Synapse install does not already bring.
//!
//! Include with `#[path = "support/synapse_server.rs"] mod synapse_server;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use synapse_backup::{Container, Layout, LocalContainer, ProcessSupervisor};
use tokio::io::AsyncWriteExt;

/// The system user (and group) Synapse runs as.
pub const USER: &str = "synapse-test";
/// The service name under the supervisor.
pub const SERVICE: &str = "synapse";
/// The server name of every generated homeserver.
pub const SERVER_NAME: &str = "example.test";
/// `registration_shared_secret` of every generated homeserver (a test value).
const SHARED_SECRET: &str = "synapse-backup-test-registration-secret";

/// Which of the releases `scripts/synapse.sh` installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The pinned release (`SYNAPSE_BACKUP_SYNAPSE_CURRENT`).
    Current,
    /// The older release an upgrade starts from (`SYNAPSE_BACKUP_SYNAPSE_PREVIOUS`).
    Previous,
}

/// An installed Synapse: its virtualenv's python and its version.
#[derive(Debug, Clone)]
pub struct Install {
    pub python: PathBuf,
    pub version: String,
}

impl Install {
    /// The version as numbers, for ordering releases.
    pub fn version_numbers(&self) -> Vec<u64> {
        self.version
            .split('.')
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    }
}

/// Where `scripts/synapse.sh` installs the releases (the same rule as the script).
fn venvs_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SYNAPSE_BACKUP_SYNAPSE") {
        return PathBuf::from(dir);
    }
    if nix::unistd::geteuid().is_root() {
        PathBuf::from("/opt/synapse-backup-synapse")
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/synapse-venvs")
    }
}

/// The installed `release`; fails (never skips) with the command that installs it.
pub fn install(release: Release) -> Install {
    let slot = match release {
        Release::Current => "current",
        Release::Previous => "previous",
    };
    let python = venvs_dir().join(slot).join("bin/python");
    let out = Command::new(&python)
        .args([
            "-c",
            "from importlib.metadata import version\nimport PIL, synapse\nprint(version('matrix-synapse'))",
        ])
        .output();
    match out {
        Ok(out) if out.status.success() => Install {
            python,
            version: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        },
        other => panic!(
            "matrix-synapse ({slot} release) is not installed at {}: install it with \
             `bash scripts/synapse.sh` (./scripts/test runs it through scripts/tools.sh); {other:?}",
            python.display()
        ),
    }
}

/// Fails (never skips) unless this test runs as root: it creates a system user and
/// runs Synapse as that user.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the Synapse end-to-end tests run as root (they create the system user {USER} and run Synapse as it): run the tests as root"
    );
}

/// The uid and gid of [`USER`], created (a system user with its own group, no home, no
/// login shell) when missing.
pub fn ensure_user() -> (u32, u32) {
    static CREATING: Mutex<()> = Mutex::new(());
    let _guard = CREATING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if nix::unistd::User::from_name(USER).unwrap().is_none() {
        let out = Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ])
            .output()
            .expect("useradd (apt-get install -y passwd) creates the Synapse test user");
        assert!(
            out.status.success(),
            "useradd {USER} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let user = nix::unistd::User::from_name(USER)
        .unwrap()
        .expect("the test user exists");
    (user.uid.as_raw(), user.gid.as_raw())
}

/// A free TCP port on 127.0.0.1 (bound, then released for Synapse to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The command that runs `program` as [`USER`] (setpriv, util-linux).
fn as_user(program: &Path) -> Vec<String> {
    vec![
        "setpriv".into(),
        format!("--reuid={USER}"),
        format!("--regid={USER}"),
        "--clear-groups".into(),
        program.to_string_lossy().into_owned(),
    ]
}

fn run_checked(mut cmd: Command, what: &str) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A homeserver generated for one test, under a temp dir:
/// `<dir>/data` (config dir and data dir: `homeserver.yaml`, the signing key,
/// `homeserver.db`, `media_store`) and `<dir>/log/homeserver.log`.
pub struct Homeserver {
    /// The container whose service `synapse` is this homeserver.
    pub container: LocalContainer,
    /// The supervisor running it (shared with `container`).
    pub supervisor: ProcessSupervisor,
    /// The layout of the data for the backup crate (root `/`: the paths in
    /// `homeserver.yaml` are this host's), running the pipelines as [`USER`].
    pub layout: Layout,
    /// The Synapse release the service runs.
    pub install: Install,
    /// The client API base URL, `http://127.0.0.1:<port>`.
    pub base: String,
    pub data: PathBuf,
    pub media: PathBuf,
    pub log: PathBuf,
    pub uid: u32,
    pub gid: u32,
    /// Removed last (fields drop in order): the supervisor has killed Synapse by then.
    pub dir: tempfile::TempDir,
}

impl Homeserver {
    /// Writes `homeserver.yaml` and its log config, generates the signing key (as
    /// [`USER`], with `install`), and registers the service; Synapse is not started.
    pub fn generate(install: &Install, aws: &Path) -> Homeserver {
        Self::generate_in(install, aws, &std::env::temp_dir())
    }

    /// [`Homeserver::generate`] in a temp dir under `parent` (which [`USER`] must be
    /// able to traverse).
    pub fn generate_in(install: &Install, aws: &Path, parent: &Path) -> Homeserver {
        require_root();
        let (uid, gid) = ensure_user();
        let dir = tempfile::Builder::new()
            .prefix("synapse-e2e-")
            .tempdir_in(parent)
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let data = dir.path().join("data");
        let log_dir = dir.path().join("log");
        fs::create_dir_all(&data).unwrap();
        fs::create_dir_all(&log_dir).unwrap();
        let port = free_port();
        let d = data.display();
        let log = log_dir.join("homeserver.log");
        let unlimited = "{per_second: 100000, burst_count: 1000000}";
        fs::write(
            data.join("homeserver.yaml"),
            format!(
                "server_name: {SERVER_NAME}\n\
                 report_stats: false\n\
                 listeners:\n\
                 \x20 - port: {port}\n\
                 \x20   bind_addresses: ['127.0.0.1']\n\
                 \x20   type: http\n\
                 \x20   tls: false\n\
                 \x20   x_forwarded: false\n\
                 \x20   resources:\n\
                 \x20     - names: [client, keys]\n\
                 \x20       compress: false\n\
                 database:\n\
                 \x20 name: sqlite3\n\
                 \x20 args:\n\
                 \x20   database: {d}/homeserver.db\n\
                 log_config: {d}/{SERVER_NAME}.log.config\n\
                 media_store_path: {d}/media_store\n\
                 signing_key_path: {d}/{SERVER_NAME}.signing.key\n\
                 registration_shared_secret: {SHARED_SECRET}\n\
                 macaroon_secret_key: synapse-backup-test-macaroon-secret\n\
                 form_secret: synapse-backup-test-form-secret\n\
                 trusted_key_servers: []\n\
                 suppress_key_server_warning: true\n\
                 federation_domain_whitelist: []\n\
                 url_preview_enabled: false\n\
                 enable_media_repo: true\n\
                 dynamic_thumbnails: false\n\
                 thumbnail_sizes:\n\
                 \x20 - {{width: 32, height: 32, method: crop}}\n\
                 \x20 - {{width: 96, height: 96, method: scale}}\n\
                 rc_message: {unlimited}\n\
                 rc_registration: {unlimited}\n\
                 rc_login:\n\
                 \x20 address: {unlimited}\n\
                 \x20 account: {unlimited}\n\
                 \x20 failed_attempts: {unlimited}\n\
                 rc_joins:\n\
                 \x20 local: {unlimited}\n\
                 \x20 remote: {unlimited}\n\
                 rc_media_create: {unlimited}\n\
                 rc_key_requests: {unlimited}\n\
                 rc_admin_redaction: {unlimited}\n"
            ),
        )
        .unwrap();
        fs::write(
            data.join(format!("{SERVER_NAME}.log.config")),
            format!(
                "version: 1\n\
                 formatters:\n\
                 \x20 precise:\n\
                 \x20   format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'\n\
                 handlers:\n\
                 \x20 file:\n\
                 \x20   class: logging.FileHandler\n\
                 \x20   formatter: precise\n\
                 \x20   filename: {}\n\
                 \x20   encoding: utf8\n\
                 root:\n\
                 \x20 level: INFO\n\
                 \x20 handlers: [file]\n\
                 disable_existing_loggers: false\n",
                log.display()
            ),
        )
        .unwrap();
        let chown = Command::new("chown")
            .arg("-R")
            .arg(format!("{USER}:{USER}"))
            .arg(&data)
            .arg(&log_dir)
            .output()
            .unwrap();
        assert!(chown.status.success(), "{chown:?}");
        let mut keys = Command::new("setpriv");
        keys.args(&as_user(&install.python)[1..])
            .args(["-m", "synapse.app.homeserver", "--config-path"])
            .arg(data.join("homeserver.yaml"))
            .arg("--generate-keys");
        run_checked(keys, "synapse --generate-keys");
        let supervisor = ProcessSupervisor::new()
            .with_grace_period(Duration::from_secs(30))
            .with_start_check(Duration::from_millis(500));
        let hs = Homeserver {
            container: LocalContainer::with_services(supervisor.clone()),
            supervisor,
            layout: Layout::default()
                .root("/")
                .config_dir(data.to_string_lossy().into_owned())
                .data_dir(data.to_string_lossy().into_owned())
                .user(Some(USER.to_string()))
                .group(Some(USER.to_string()))
                .service(Some(SERVICE.to_string()))
                .bash("bash")
                .aws(aws.to_string_lossy().into_owned())
                .python3(install.python.to_string_lossy().into_owned()),
            install: install.clone(),
            base: format!("http://127.0.0.1:{port}"),
            media: data.join("media_store"),
            data,
            log,
            uid,
            gid,
            dir,
        };
        hs.use_release(install);
        hs
    }

    /// Makes the service run `install` from its next start.
    pub fn use_release(&self, install: &Install) {
        let mut command = as_user(&install.python);
        command.extend(["-m", "synapse.app.homeserver", "--config-path"].map(String::from));
        command.push(
            self.data
                .join("homeserver.yaml")
                .to_string_lossy()
                .into_owned(),
        );
        self.supervisor.add(SERVICE, command);
    }

    /// The command line (program first, no user switch) that runs `install` on this
    /// homeserver's config: what a Pebble layer's service `command` runs as [`USER`].
    pub fn command(&self, install: &Install) -> Vec<String> {
        vec![
            install.python.to_string_lossy().into_owned(),
            "-m".into(),
            "synapse.app.homeserver".into(),
            "--config-path".into(),
            self.data
                .join("homeserver.yaml")
                .to_string_lossy()
                .into_owned(),
        ]
    }

    /// Waits (up to 60 s) until `/_matrix/client/versions` answers 200, whoever runs
    /// Synapse (not only this homeserver's supervisor).
    pub async fn wait_serving(&self) {
        let client = self.client();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = client
                .try_request("GET", "/_matrix/client/versions", None, None, Vec::new())
                .await
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "synapse did not answer within 60 s:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Starts the service and waits until the client API answers.
    pub async fn start(&self) {
        self.container
            .start(&[SERVICE.to_string()])
            .await
            .unwrap_or_else(|e| panic!("synapse did not start: {e}\n{}", self.log_text()));
        self.wait_ready().await;
    }

    /// Stops the service (SIGTERM, then SIGKILL after the grace period).
    pub async fn stop(&self) {
        self.container.stop(&[SERVICE.to_string()]).await.unwrap();
    }

    /// Whether the service runs.
    pub async fn is_running(&self) -> bool {
        self.supervisor_running().await
    }

    async fn supervisor_running(&self) -> bool {
        use synapse_backup::ServiceManager;
        self.supervisor.is_running(SERVICE).await.unwrap()
    }

    /// Waits (up to 60 s) until `/_matrix/client/versions` answers 200.
    pub async fn wait_ready(&self) {
        let client = self.client();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = client
                .try_request("GET", "/_matrix/client/versions", None, None, Vec::new())
                .await
            {
                return;
            }
            assert!(
                self.supervisor_running().await,
                "synapse exited before it served:\n{}",
                self.log_text()
            );
            assert!(
                Instant::now() < deadline,
                "synapse did not answer within 60 s:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The whole Synapse log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Lines of the log at level ERROR or CRITICAL.
    pub fn log_errors(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains(" - ERROR - ") || l.contains(" - CRITICAL - "))
            .map(String::from)
            .collect()
    }

    /// A client of this homeserver's client API.
    pub fn client(&self) -> Client {
        Client {
            base: self.base.clone(),
            python: self.install.python.clone(),
        }
    }

    /// The signing key file's bytes.
    pub fn signing_key(&self) -> Vec<u8> {
        fs::read(self.data.join(format!("{SERVER_NAME}.signing.key"))).unwrap()
    }

    /// Runs `sql` on `homeserver.db` as [`USER`] (so no file SQLite makes belongs to
    /// root) and returns its rows as JSON arrays.
    pub fn query(&self, sql: &str) -> Vec<Vec<Value>> {
        let mut cmd = Command::new("setpriv");
        cmd.args(&as_user(&self.install.python)[1..])
            .arg("-c")
            .arg(
                "import json, sqlite3, sys\n\
                 c = sqlite3.connect(sys.argv[1], timeout=30)\n\
                 print(json.dumps(c.execute(sys.argv[2]).fetchall()))\n",
            )
            .arg(self.data.join("homeserver.db"))
            .arg(sql);
        serde_json::from_slice(&run_checked(cmd, &format!("sqlite3 query {sql:?}"))).unwrap()
    }

    /// Every regular file under the media store's `local_content` and
    /// `local_thumbnails`, with its bytes, keyed by the path relative to the store.
    pub fn local_media_files(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for top in ["local_content", "local_thumbnails"] {
            for path in walk(&self.media.join(top)) {
                let rel = path
                    .strip_prefix(&self.media)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, fs::read(&path).unwrap());
            }
        }
        out
    }

    /// Paths under the data dir (and the dir itself) not owned by [`USER`].
    pub fn not_owned_by_user(&self) -> Vec<String> {
        let mut bad = Vec::new();
        let mut stack = vec![self.data.clone()];
        while let Some(p) = stack.pop() {
            let meta = fs::symlink_metadata(&p).unwrap();
            if meta.uid() != self.uid || meta.gid() != self.gid {
                bad.push(format!("{} ({}:{})", p.display(), meta.uid(), meta.gid()));
            }
            if meta.is_dir() {
                for e in fs::read_dir(&p).unwrap() {
                    stack.push(e.unwrap().path());
                }
            }
        }
        bad
    }
}

/// The media store path of a local media id's file (`local_content/ab/cd/rest`).
pub fn content_path(media_id: &str) -> String {
    format!(
        "local_content/{}/{}/{}",
        &media_id[..2],
        &media_id[2..4],
        &media_id[4..]
    )
}

/// The media store dir of a local media id's thumbnails.
pub fn thumbnail_dir(media_id: &str) -> String {
    format!(
        "local_thumbnails/{}/{}/{}",
        &media_id[..2],
        &media_id[2..4],
        &media_id[4..]
    )
}

/// All regular files under `dir`, sorted (none when it does not exist).
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// One request through Python's urllib: `request METHOD URL TOKEN CONTENT_TYPE` with
/// the body on stdin, or `register BASE USER` with the shared secret on stdin (the
/// admin API's HMAC registration). Prints the status, a newline, then the body.
const CLIENT_PY: &str = r#"import hashlib, hmac, json, sys, urllib.error, urllib.request

def request(method, url, token, content_type, body):
    data = body if method in ("POST", "PUT") else None
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()

mode = sys.argv[1]
if mode == "request":
    method, url, token, content_type = sys.argv[2:6]
    status, data = request(method, url, token, content_type, sys.stdin.buffer.read())
else:
    base, user = sys.argv[2:4]
    secret = sys.stdin.buffer.read()
    url = base + "/_synapse/admin/v1/register"
    status, data = request("GET", url, "", "", b"")
    if status == 200:
        nonce = json.loads(data)["nonce"]
        password = "password-" + user
        mac = hmac.new(secret, b"\0".join([nonce.encode(), user.encode(), password.encode(), b"notadmin"]), hashlib.sha1).hexdigest()
        body = {"nonce": nonce, "username": user, "password": password, "admin": False, "mac": mac}
        status, data = request("POST", url, "", "application/json", json.dumps(body).encode())
sys.stdout.buffer.write(b"%d\n" % status + data)
"#;

/// A registered user: its id and access token.
#[derive(Debug, Clone)]
pub struct User {
    pub user_id: String,
    pub token: String,
}

/// A client of the client API over 127.0.0.1.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    python: PathBuf,
}

/// Percent-encodes a path segment (room ids start with `!`).
pub fn encode(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    async fn run(&self, args: &[&str], stdin: Vec<u8>) -> Result<(u16, Vec<u8>), String> {
        let mut child = tokio::process::Command::new(&self.python)
            .arg("-c")
            .arg(CLIENT_PY)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.python.display()))?;
        let mut input = child.stdin.take().unwrap();
        input.write_all(&stdin).await.map_err(|e| e.to_string())?;
        drop(input);
        let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let newline = out
            .stdout
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("no status line")?;
        let status = std::str::from_utf8(&out.stdout[..newline])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("bad status line")?;
        Ok((status, out.stdout[newline + 1..].to_vec()))
    }

    /// One request; `Err` when it could not be made (connection refused, ...).
    pub async fn try_request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), String> {
        let url = format!("{}{path}", self.base);
        self.run(
            &[
                "request",
                method,
                &url,
                token.unwrap_or(""),
                content_type.unwrap_or(""),
            ],
            body,
        )
        .await
    }

    /// One request that must answer 200; its body.
    pub async fn request_ok(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Vec<u8> {
        let (status, data) = self
            .try_request(method, path, token, content_type, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(
            status,
            200,
            "{method} {path}: {}",
            String::from_utf8_lossy(&data)
        );
        data
    }

    /// A JSON request that must answer 200; its JSON body.
    pub async fn json(&self, method: &str, path: &str, token: Option<&str>, body: Value) -> Value {
        let data = self
            .request_ok(
                method,
                path,
                token,
                Some("application/json"),
                serde_json::to_vec(&body).unwrap(),
            )
            .await;
        serde_json::from_slice(&data).unwrap()
    }

    /// Registers `localpart` through the shared-secret admin API.
    pub async fn register(&self, localpart: &str) -> User {
        let (status, data) = self
            .run(
                &["register", &self.base, localpart],
                SHARED_SECRET.as_bytes().to_vec(),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "register: {}", String::from_utf8_lossy(&data));
        let v: Value = serde_json::from_slice(&data).unwrap();
        User {
            user_id: v["user_id"].as_str().unwrap().to_string(),
            token: v["access_token"].as_str().unwrap().to_string(),
        }
    }

    /// Creates a room; its id.
    pub async fn create_room(&self, user: &User, name: &str) -> String {
        let v = self
            .json(
                "POST",
                "/_matrix/client/v3/createRoom",
                Some(&user.token),
                json!({"name": name, "preset": "private_chat"}),
            )
            .await;
        v["room_id"].as_str().unwrap().to_string()
    }

    /// Sends a text message (transaction id `txn`); its event id.
    pub async fn send_text(&self, user: &User, room: &str, txn: &str, body: &str) -> String {
        let v = self
            .json(
                "PUT",
                &format!(
                    "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
                    encode(room),
                    encode(txn)
                ),
                Some(&user.token),
                json!({"msgtype": "m.text", "body": body}),
            )
            .await;
        v["event_id"].as_str().unwrap().to_string()
    }

    /// Uploads media; its local media id.
    pub async fn upload(
        &self,
        user: &User,
        content_type: &str,
        name: &str,
        bytes: Vec<u8>,
    ) -> String {
        let data = self
            .request_ok(
                "POST",
                &format!("/_matrix/media/v3/upload?filename={}", encode(name)),
                Some(&user.token),
                Some(content_type),
                bytes,
            )
            .await;
        let v: Value = serde_json::from_slice(&data).unwrap();
        let uri = v["content_uri"].as_str().unwrap();
        uri.strip_prefix(&format!("mxc://{SERVER_NAME}/"))
            .unwrap_or_else(|| panic!("unexpected content uri {uri}"))
            .to_string()
    }

    /// Downloads local media through the authenticated (v1) endpoint.
    pub async fn download(&self, user: &User, media_id: &str) -> Vec<u8> {
        self.request_ok(
            "GET",
            &format!("/_matrix/client/v1/media/download/{SERVER_NAME}/{media_id}"),
            Some(&user.token),
            None,
            Vec::new(),
        )
        .await
    }

    /// A thumbnail of local media through the authenticated (v1) endpoint.
    pub async fn thumbnail(
        &self,
        user: &User,
        media_id: &str,
        width: u32,
        height: u32,
        method: &str,
    ) -> Vec<u8> {
        self.request_ok(
            "GET",
            &format!(
                "/_matrix/client/v1/media/thumbnail/{SERVER_NAME}/{media_id}?width={width}&height={height}&method={method}"
            ),
            Some(&user.token),
            None,
            Vec::new(),
        )
        .await
    }

    /// Uploads `count` one-time keys for the user's device; the server's counts.
    pub async fn upload_one_time_keys(&self, user: &User, count: usize) -> Value {
        let keys: serde_json::Map<String, Value> = (0..count)
            .map(|i| {
                (
                    format!("curve25519:AAAA{i:04}"),
                    Value::String(format!("b3RrLWtleS0{i:04}")),
                )
            })
            .collect();
        let v = self
            .json(
                "POST",
                "/_matrix/client/v3/keys/upload",
                Some(&user.token),
                json!({"one_time_keys": keys}),
            )
            .await;
        v["one_time_key_counts"].clone()
    }

    /// The number of unclaimed `curve25519` one-time keys of the user's device.
    pub async fn one_time_key_count(&self, user: &User) -> u64 {
        let v = self
            .json(
                "POST",
                "/_matrix/client/v3/keys/upload",
                Some(&user.token),
                json!({}),
            )
            .await;
        v["one_time_key_counts"]["curve25519"].as_u64().unwrap_or(0)
    }

    /// The bodies of the room's `m.room.message` events, oldest first.
    pub async fn message_bodies(&self, user: &User, room: &str) -> Vec<String> {
        let mut bodies = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let mut path = format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=500",
                encode(room)
            );
            if let Some(f) = &from {
                path.push_str(&format!("&from={}", encode(f)));
            }
            let data = self
                .request_ok("GET", &path, Some(&user.token), None, Vec::new())
                .await;
            let v: Value = serde_json::from_slice(&data).unwrap();
            let chunk = v["chunk"].as_array().cloned().unwrap_or_default();
            for e in &chunk {
                if e["type"] == "m.room.message"
                    && let Some(b) = e["content"]["body"].as_str()
                {
                    bodies.push(b.to_string());
                }
            }
            match v["end"].as_str() {
                Some(end) if !chunk.is_empty() => from = Some(end.to_string()),
                _ => break,
            }
        }
        bodies.reverse();
        bodies
    }

    /// The server's published signing (verify) keys, from `/_matrix/key/v2/server`.
    pub async fn verify_keys(&self) -> Value {
        let data = self
            .request_ok("GET", "/_matrix/key/v2/server", None, None, Vec::new())
            .await;
        let v: Value = serde_json::from_slice(&data).unwrap();
        v["verify_keys"].clone()
    }
}

/// Real images drawn with Pillow in the Synapse virtualenv, one per seed, in one
/// Python process: PNG for even seeds, JPEG for odd ones, of sizes that vary with it.
/// Each is `(content type, file name, bytes)`.
pub fn images(install: &Install, seeds: &[u32]) -> Vec<(String, String, Vec<u8>)> {
    let mut cmd = Command::new(&install.python);
    cmd.arg("-c")
        .arg(
            "import io, struct, sys\n\
             from PIL import Image\n\
             for seed in map(int, sys.argv[1:]):\n\
             \x20   w, h = 120 + seed % 7 * 10, 90 + seed % 5 * 10\n\
             \x20   im = Image.new('RGB', (w, h))\n\
             \x20   im.putdata([((x * 7 + seed * 31) % 256, (y * 5 + seed * 17) % 256, (x * y + seed) % 256) for y in range(h) for x in range(w)])\n\
             \x20   out = io.BytesIO()\n\
             \x20   im.save(out, 'PNG' if seed % 2 == 0 else 'JPEG')\n\
             \x20   sys.stdout.buffer.write(struct.pack('>Q', len(out.getvalue())) + out.getvalue())\n",
        )
        .args(seeds.iter().map(u32::to_string));
    let out = run_checked(cmd, "Pillow images");
    let mut rest = out.as_slice();
    seeds
        .iter()
        .map(|seed| {
            let (len, tail) = rest.split_at(8);
            let len = u64::from_be_bytes(len.try_into().unwrap()) as usize;
            let (bytes, tail) = tail.split_at(len);
            rest = tail;
            let (content_type, ext) = if seed.is_multiple_of(2) {
                ("image/png", "png")
            } else {
                ("image/jpeg", "jpg")
            };
            (
                content_type.to_string(),
                format!("image-{seed}.{ext}"),
                bytes.to_vec(),
            )
        })
        .collect()
}

/// Sends messages one after another over one keep-alive HTTP connection and times each
/// (from the request to the end of the response, in Python's `time.perf_counter`),
/// until its standard input closes or `limit` messages were sent.
const PROBE_PY: &str = r#"import http.client, json, sys, threading, time, urllib.parse
host, port, room, tag, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
token = sys.stdin.readline().strip()
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
conn = http.client.HTTPConnection(host, port, timeout=120)
path = "/_matrix/client/v3/rooms/%s/send/m.room.message/" % urllib.parse.quote(room, safe="")
headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
latencies = []
while not stop.is_set() and len(latencies) < limit:
    i = len(latencies)
    body = json.dumps({"msgtype": "m.text", "body": "probe %s %d" % (tag, i)})
    started = time.perf_counter()
    conn.request("PUT", path + "probe-%s-%d" % (tag, i), body, headers)
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        sys.exit("send failed with HTTP %d" % response.status)
    latencies.append((time.perf_counter() - started) * 1000.0)
print(json.dumps(latencies))
"#;

/// A client that keeps sending messages and times each (see [`SendProbe::start`]).
pub struct SendProbe {
    child: std::process::Child,
}

impl SendProbe {
    /// Starts sending to `room` as `user` (`tag` makes the transaction ids unique),
    /// at most `limit` messages.
    pub fn start(hs: &Homeserver, user: &User, room: &str, tag: &str, limit: usize) -> SendProbe {
        use std::io::Write;
        let port = hs.base.rsplit(':').next().unwrap().to_string();
        let mut child = Command::new(&hs.install.python)
            .arg("-c")
            .arg(PROBE_PY)
            .args(["127.0.0.1", &port, room, tag, &limit.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the send probe starts");
        let stdin = child.stdin.as_mut().unwrap();
        writeln!(stdin, "{}", user.token).unwrap();
        stdin.flush().unwrap();
        SendProbe { child }
    }

    /// Stops sending (or waits for the limit when `stop` is false); each send's latency
    /// in milliseconds.
    pub fn finish(mut self, stop: bool) -> Vec<f64> {
        let stdin = self.child.stdin.take();
        if stop {
            drop(stdin);
        }
        let out = self.child.wait_with_output().unwrap();
        assert!(out.status.success(), "the send probe failed: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// One write through the client API (a message, an upload) and when it ran.
#[derive(Debug, Clone)]
pub struct Timed<T> {
    pub made: T,
    pub started: Instant,
    pub finished: Instant,
}

impl<T> Timed<T> {
    /// Runs `write` and records when.
    pub async fn of(write: impl std::future::Future<Output = T>) -> Timed<T> {
        let started = Instant::now();
        let made = write.await;
        Timed {
            made,
            started,
            finished: Instant::now(),
        }
    }
}

/// A backup made while writes kept arriving: its report, when it ran, and every write
/// of the traffic around it.
pub struct LiveBackup<T> {
    pub report: synapse_backup::BackupReport,
    pub started: Instant,
    pub finished: Instant,
    pub writes: Vec<Timed<T>>,
}

impl<T: std::fmt::Debug> LiveBackup<T> {
    /// How many writes overlapped the backup.
    pub fn during(&self) -> usize {
        self.writes
            .iter()
            .filter(|w| w.finished > self.started && w.started < self.finished)
            .count()
    }

    /// Asserts that `present` (whether each write, in order, is in the restored server)
    /// is a prefix of the writes: all made before the backup started, none made after
    /// it finished, nothing torn. Returns where the restored history ends.
    pub fn assert_restored_prefix(&self, present: &[bool]) -> usize {
        assert_eq!(present.len(), self.writes.len());
        let cut = present.iter().take_while(|p| **p).count();
        eprintln!(
            "{} writes, {} while the {:?} backup {} ran; restored up to #{cut}; live changes {:?}",
            self.writes.len(),
            self.during(),
            self.finished - self.started,
            self.report.id,
            self.report.live_changes
        );
        assert!(
            present[cut..].iter().all(|p| !p),
            "the restored server holds a torn history: {:?}",
            self.writes
                .iter()
                .zip(present)
                .map(|(w, p)| format!("{:?}={p}", w.made))
                .collect::<Vec<_>>()
        );
        for (w, p) in self.writes.iter().zip(present) {
            if w.finished < self.started {
                assert!(
                    p,
                    "{:?} was made before the backup started but is missing",
                    w.made
                );
            }
            if w.started > self.finished {
                assert!(
                    !p,
                    "{:?} was made after the backup finished but is restored",
                    w.made
                );
            }
        }
        cut
    }
}

/// A backup of `hs` through `container` (the supervisor's `LocalContainer`, a
/// `PebbleContainer`, …) while `write(i)` keeps running against it (from before the
/// backup until after it, at most 2000 writes); `writes` are the ones made before,
/// kept first in the result. Synapse runs SQLite in WAL mode, so the latest writes are
/// only in the WAL when the backup starts: the snapshot must read it. Fails unless some
/// write ran while the backup did.
pub async fn backup_under_traffic<C, T, W, F>(
    hs: &Homeserver,
    container: &C,
    params: &synapse_backup::S3Parameters,
    passphrase: &str,
    mut writes: Vec<Timed<T>>,
    mut write: W,
) -> LiveBackup<T>
where
    C: Container,
    T: std::fmt::Debug + Send + 'static,
    W: FnMut(u32) -> F + Send + 'static,
    F: std::future::Future<Output = Timed<T>> + Send,
{
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let live = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut made = Vec::new();
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && i < 2000 {
                made.push(write(i).await);
                i += 1;
            }
            made
        }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let wal = fs::metadata(hs.data.join("homeserver.db-wal")).map(|m| m.len());
    assert!(
        wal.as_ref().is_ok_and(|len| *len > 0),
        "Synapse has no live WAL: {wal:?}"
    );
    let started = Instant::now();
    let report = synapse_backup::create_backup_with(
        container,
        params,
        passphrase,
        &hs.layout,
        &synapse_backup::BackupOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("live backup failed: {e}\n{}", hs.log_text()));
    let finished = Instant::now();
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writes.extend(live.await.unwrap());
    let backup = LiveBackup {
        report,
        started,
        finished,
        writes,
    };
    assert!(
        backup.during() > 0,
        "nothing was written while the backup ran ({:?})",
        finished - started
    );
    backup
}

/// What a restore must keep: the signing key and the keys the server publishes.
pub struct Keys {
    signing_key: Vec<u8>,
    verify_keys: Value,
}

impl Homeserver {
    /// The keys a restore must keep, as they are now.
    pub async fn keys(&self) -> Keys {
        Keys {
            signing_key: self.signing_key(),
            verify_keys: self.client().verify_keys().await,
        }
    }

    /// Fails with the log's errors if Synapse logged any (`when`: "after the restore").
    pub fn assert_no_errors(&self, when: &str) {
        let errors = self.log_errors();
        assert!(
            errors.is_empty(),
            "Synapse logged errors {when}:\n{}",
            errors.join("\n")
        );
    }

    /// After a restore that did not keep one-time keys: the same `keys`, no one-time
    /// key (for `user` or in the database), and every file owned by [`USER`].
    pub async fn assert_restored_keys(&self, user: &User, keys: &Keys) {
        let client = self.client();
        assert_eq!(self.signing_key(), keys.signing_key);
        assert_eq!(client.verify_keys().await, keys.verify_keys);
        assert_eq!(client.one_time_key_count(user).await, 0);
        assert_eq!(
            self.query("SELECT count(*) FROM e2e_one_time_keys_json")[0][0],
            0
        );
        assert_eq!(self.not_owned_by_user(), Vec::<String>::new());
    }
}

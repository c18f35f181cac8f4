//! Real S3 servers for tests, examples and benches, on 127.0.0.1 only.
//!
//! - [`TestS3Server`]: s3s + s3s-fs in-process (on its own thread and tokio runtime),
//!   with a random access/secret key pair that s3s really checks (SigV4), plain HTTP or
//!   TLS. Objects are plain files under [`TestS3Server::root`]`/<bucket>/<key>`.
//! - [`TestCertificates`]: a throw-away CA and a server certificate for 127.0.0.1 and
//!   localhost (rcgen), for TLS tests of `tls-ca-chain`.
//! - [`MotoServer`]: `python3 -m moto.server` as a child process, for what s3s-fs does
//!   not implement (ListMultipartUploads). moto accepts any key.
//!
//! One self-contained file with no dependency on other test files. Include it with
//! `#[path = "support/s3_server.rs"] mod s3_server;` from `tests/`, or
//! `#[path = "../tests/support/s3_server.rs"] mod s3_server;` from `examples/` and
//! `benches/`. It needs the dev-dependencies s3s, s3s-fs, hyper-util, tokio-rustls and
//! rcgen, and the crate's tokio, tempfile, rustls-pki-types and serde_json.
//!
//! The server runs on a thread of its own, so it works the same from `#[tokio::test]`
//! (any flavour), from a plain `fn main` ([`TestS3Server::start_blocking`]), and while
//! the caller's runtime is busy.
#![allow(dead_code)]

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{SocketAddr, TcpListener as StdTcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::sync::oneshot;

#[path = "conditional.rs"]
mod conditional;
#[path = "sse_c.rs"]
pub mod sse_c;

/// The region the servers here are used with.
pub const REGION: &str = "us-east-1";

/// How a [`TestS3Server`] is started. `Default` is: a fresh temp dir, a free port,
/// random credentials, plain HTTP.
#[derive(Clone, Default)]
pub struct ServerOptions {
    /// The s3s-fs data directory (created if missing). `None`: a new temp dir, removed
    /// when the last server using it is dropped.
    pub root: Option<PathBuf>,
    /// The port on 127.0.0.1. `None`: any free port.
    pub port: Option<u16>,
    /// `(access key, secret key)`. `None`: the pair last used with the same root in
    /// this process, or a new random pair.
    pub credentials: Option<(String, String)>,
    /// Serve HTTPS with this identity instead of plain HTTP.
    pub tls: Option<TlsIdentity>,
    /// Ignore `If-None-Match` / `If-Match` (a server without conditional writes).
    /// Otherwise they are honoured atomically per key (see `conditional.rs`).
    pub no_conditional_writes: bool,
    /// Ignore `If-Match` on DeleteObject only.
    pub no_conditional_deletes: bool,
    /// What the SSE-C enforcement ([`sse_c::SseC`]) knows and saw; pass a clone to
    /// inspect it (it survives restarts).
    pub sse: sse_c::SseState,
}

/// A PEM server certificate (chain) and its PEM private key.
#[derive(Clone)]
pub struct TlsIdentity {
    /// The server certificate, optionally followed by intermediates.
    pub cert_pem: String,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: String,
}

/// A throw-away certificate authority and a server certificate it signed.
#[derive(Clone)]
pub struct TestCertificates {
    /// The CA certificate: what goes into `tls-ca-chain`.
    pub ca_pem: String,
    /// The server certificate (for 127.0.0.1, ::1 and localhost).
    pub cert_pem: String,
    /// The server's private key.
    pub key_pem: String,
}

impl TestCertificates {
    /// A new CA and a server certificate for 127.0.0.1, ::1 and localhost.
    pub fn generate() -> TestCertificates {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "synapse-backup test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ])
        .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        let cert = params.signed_by(&key, &issuer).expect("server certificate");
        TestCertificates {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// The server side of these certificates.
    pub fn identity(&self) -> TlsIdentity {
        TlsIdentity {
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
        }
    }
}

/// An s3s-fs server on 127.0.0.1 with SigV4 authentication.
///
/// Dropping it shuts the server down gracefully (in the background) and removes its
/// temp dir once no other server uses that root. Buckets are directories under
/// [`root`](Self::root): [`create_bucket`](Self::create_bucket) just makes one.
pub struct TestS3Server {
    /// `http://127.0.0.1:<port>` (or `https://…` with TLS).
    pub endpoint: String,
    /// The access key the server accepts.
    pub access_key: String,
    /// The secret key the server accepts.
    pub secret_key: String,
    /// The s3s-fs data directory: `<root>/<bucket>/<key>` are the objects.
    pub root: PathBuf,
    /// With TLS from [`start_tls_self_signed`](Self::start_tls_self_signed): the CA
    /// certificate clients must trust.
    pub ca_pem: Option<String>,
    port: u16,
    options: ServerOptions,
    running: Option<Running>,
    temp: Option<Arc<tempfile::TempDir>>,
}

struct Running {
    shutdown: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Roots used in this process: the temp dir (shared by restarted servers) and the
/// credentials (so a restarted server accepts the same keys).
struct RootEntry {
    temp: Weak<tempfile::TempDir>,
    credentials: (String, String),
}

fn roots() -> &'static Mutex<HashMap<PathBuf, RootEntry>> {
    static ROOTS: OnceLock<Mutex<HashMap<PathBuf, RootEntry>>> = OnceLock::new();
    ROOTS.get_or_init(Default::default)
}

/// A random lower-case hex string of `len` characters (std only).
pub fn random_hex(len: usize) -> String {
    let mut out = String::new();
    let mut counter = 0u64;
    while out.len() < len {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(counter);
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        out.push_str(&format!("{:016x}", hasher.finish()));
        counter += 1;
    }
    out.truncate(len);
    out
}

impl TestS3Server {
    /// A plain-HTTP server on a fresh temp dir and a free port, with random keys.
    pub async fn start() -> TestS3Server {
        Self::start_with(ServerOptions::default()).await
    }

    /// A plain-HTTP server on `root` (e.g. the root of a stopped server, to restart it
    /// on the same data) and `port` (`None`: any free port). A root already used in
    /// this process keeps its credentials and its temp dir stays alive.
    pub async fn start_at(root: &Path, port: Option<u16>) -> TestS3Server {
        Self::start_with(ServerOptions {
            root: Some(root.to_path_buf()),
            port,
            ..ServerOptions::default()
        })
        .await
    }

    /// An HTTPS server with the given PEM certificate (chain) and key.
    pub async fn start_tls(cert_pem: &str, key_pem: &str) -> TestS3Server {
        let tls = TlsIdentity {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
        };
        Self::start_with(ServerOptions {
            tls: Some(tls),
            ..ServerOptions::default()
        })
        .await
    }

    /// An HTTPS server with a certificate from a new [`TestCertificates`] CA; the CA is
    /// in [`ca_pem`](Self::ca_pem) and in [`relation_data`](Self::relation_data).
    pub async fn start_tls_self_signed() -> TestS3Server {
        let certs = TestCertificates::generate();
        let mut server = Self::start_with(ServerOptions {
            tls: Some(certs.identity()),
            ..ServerOptions::default()
        })
        .await;
        server.ca_pem = Some(certs.ca_pem);
        server
    }

    /// A server as `options` say.
    pub async fn start_with(options: ServerOptions) -> TestS3Server {
        let (mut server, ready) = Self::launch(options);
        let port = ready
            .await
            .expect("the s3 server thread died")
            .unwrap_or_else(|e| panic!("{e}"));
        server.set_port(port);
        server
    }

    /// [`start_with`](Self::start_with) for callers without an async context (a plain
    /// `fn main`). Must not be called from inside a tokio runtime.
    pub fn start_blocking(options: ServerOptions) -> TestS3Server {
        let (mut server, ready) = Self::launch(options);
        let port = ready
            .blocking_recv()
            .expect("the s3 server thread died")
            .unwrap_or_else(|e| panic!("{e}"));
        server.set_port(port);
        server
    }

    fn set_port(&mut self, port: u16) {
        self.port = port;
        self.options.port = Some(port);
        let scheme = if self.options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        self.endpoint = format!("{scheme}://127.0.0.1:{port}");
    }

    fn launch(
        mut options: ServerOptions,
    ) -> (TestS3Server, oneshot::Receiver<Result<u16, String>>) {
        let (root, temp) = match &options.root {
            Some(root) => {
                std::fs::create_dir_all(root).expect("create the s3 root");
                (root.canonicalize().expect("canonical s3 root"), None)
            }
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("test-s3-")
                    .tempdir()
                    .expect("temp dir for s3");
                let root = dir.path().canonicalize().expect("canonical temp dir");
                (root, Some(Arc::new(dir)))
            }
        };
        let (temp, credentials) = {
            let mut map = roots().lock().unwrap();
            let entry = map.get(&root);
            let temp = temp.or_else(|| entry.and_then(|e| e.temp.upgrade()));
            let credentials = options
                .credentials
                .clone()
                .or_else(|| entry.map(|e| e.credentials.clone()))
                .unwrap_or_else(|| {
                    (
                        format!("AK{}", random_hex(18).to_uppercase()),
                        random_hex(40),
                    )
                });
            map.insert(
                root.clone(),
                RootEntry {
                    temp: temp.as_ref().map(Arc::downgrade).unwrap_or_default(),
                    credentials: credentials.clone(),
                },
            );
            (temp, credentials)
        };
        options.root = Some(root.clone());
        options.credentials = Some(credentials.clone());

        let (ready_tx, ready_rx) = oneshot::channel();
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let thread_options = options.clone();
        let thread = std::thread::Builder::new()
            .name("test-s3-server".into())
            .spawn(move || {
                let workers =
                    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(workers)
                    .thread_name("test-s3-worker")
                    .enable_all()
                    .build()
                    .expect("tokio runtime for the s3 server");
                runtime.block_on(serve(thread_options, ready_tx, shutdown_rx));
                drop(runtime);
                let _ = done_tx.send(());
            })
            .expect("spawn the s3 server thread");
        let server = TestS3Server {
            endpoint: String::new(),
            access_key: credentials.0,
            secret_key: credentials.1,
            root,
            ca_pem: None,
            port: 0,
            options,
            running: Some(Running {
                shutdown: Some(shutdown_tx),
                done: Some(done_rx),
                thread: Some(thread),
            }),
            temp,
        };
        (server, ready_rx)
    }

    /// The SSE-C enforcement's state: which objects have a customer key, what
    /// encryption headers each request carried.
    pub fn sse(&self) -> &sse_c::SseState {
        &self.options.sse
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server is serving (not stopped).
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Stops the server gracefully and waits until its port is free. The data stays
    /// (until this value is dropped and no restarted server shares the root).
    pub async fn stop(&mut self) {
        if let Some(mut running) = self.running.take() {
            if let Some(tx) = running.shutdown.take() {
                let _ = tx.send(());
            }
            if let Some(done) = running.done.take() {
                let _ = done.await;
            }
            if let Some(thread) = running.thread.take() {
                let _ = thread.join();
            }
        }
    }

    /// [`stop`](Self::stop) for callers without an async context.
    pub fn stop_blocking(&mut self) {
        if let Some(mut running) = self.running.take() {
            if let Some(tx) = running.shutdown.take() {
                let _ = tx.send(());
            }
            if let Some(thread) = running.thread.take() {
                let _ = thread.join();
            }
        }
    }

    /// Stops (if running) and starts again on the same root, port, credentials and TLS
    /// identity.
    pub async fn restart(&mut self) {
        self.stop().await;
        let ca_pem = self.ca_pem.take();
        let mut next = Self::start_with(self.options.clone()).await;
        next.ca_pem = ca_pem;
        // Keep the temp dir alive across the swap.
        if next.temp.is_none() {
            next.temp = self.temp.clone();
        }
        *self = next;
    }

    /// Creates a bucket: s3s-fs buckets are directories under the root.
    pub fn create_bucket(&self, name: &str) {
        std::fs::create_dir_all(self.root.join(name)).expect("create the bucket dir");
    }

    /// The file holding `key` in `bucket`.
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.join(bucket).join(key)
    }

    /// s3-integrator relation data for `bucket` on this server: access-key, secret-key,
    /// bucket, endpoint, region (us-east-1), s3-uri-style (path), and tls-ca-chain when
    /// the server was started with [`start_tls_self_signed`](Self::start_tls_self_signed).
    pub fn relation_data(&self, bucket: &str) -> HashMap<String, String> {
        let mut data: HashMap<String, String> = [
            ("access-key", self.access_key.as_str()),
            ("secret-key", self.secret_key.as_str()),
            ("bucket", bucket),
            ("endpoint", self.endpoint.as_str()),
            ("region", REGION),
            ("s3-uri-style", "path"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if let Some(ca) = &self.ca_pem {
            data.insert(
                "tls-ca-chain".into(),
                serde_json::to_string(&[ca]).expect("json"),
            );
        }
        data
    }
}

impl Drop for TestS3Server {
    fn drop(&mut self) {
        // The thread finishes on its own (graceful shutdown, at most a few seconds); it
        // is not joined here so that dropping inside an async context never blocks.
        if let Some(tx) = self.running.as_mut().and_then(|r| r.shutdown.take()) {
            let _ = tx.send(());
        }
    }
}

fn tls_acceptor(identity: &TlsIdentity) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let certs = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad server certificate PEM: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
        .map_err(|e| format!("bad server key PEM: {e}"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("bad server identity: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn bind(port: u16) -> std::io::Result<tokio::net::TcpListener> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            // A just-stopped server's port can take a moment to be free again.
            Err(e)
                if port != 0
                    && e.kind() == std::io::ErrorKind::AddrInUse
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn serve(
    options: ServerOptions,
    ready: oneshot::Sender<Result<u16, String>>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let root = options.root.clone().expect("root set by launch");
    let (access_key, secret_key) = options
        .credentials
        .clone()
        .expect("credentials set by launch");
    let fs = match s3s_fs::FileSystem::new(&root) {
        Ok(fs) => fs,
        Err(e) => {
            let _ = ready.send(Err(format!("s3s-fs on {}: {e:?}", root.display())));
            return;
        }
    };
    let service = {
        let fs = conditional::Conditional::new(fs, !options.no_conditional_writes)
            .conditional_deletes(!options.no_conditional_deletes);
        let mut builder = S3ServiceBuilder::new(sse_c::SseC::new(fs, options.sse.clone()));
        builder.set_auth(SimpleAuth::from_single(access_key, secret_key));
        builder.build()
    };
    let acceptor = match options.tls.as_ref().map(tls_acceptor).transpose() {
        Ok(acceptor) => acceptor,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let listener = match bind(options.port.unwrap_or(0)).await {
        Ok(listener) => listener,
        Err(e) => {
            let _ = ready.send(Err(format!(
                "cannot listen on 127.0.0.1:{}: {e}",
                options.port.unwrap_or(0)
            )));
            return;
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let _ = ready.send(Ok(port));

    let http = ConnBuilder::new(TokioExecutor::new());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(_) => continue,
            },
            _ = &mut shutdown => break,
        };
        let _ = socket.set_nodelay(true);
        let service = service.clone();
        let http = http.clone();
        let watcher = graceful.watcher();
        match &acceptor {
            None => {
                tokio::spawn(async move {
                    let conn = http
                        .serve_connection(TokioIo::new(socket), service)
                        .into_owned();
                    let _ = watcher.watch(conn).await;
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A failed handshake (e.g. a client that does not trust the CA) just
                    // drops the connection.
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(socket))
                            .await
                    else {
                        return;
                    };
                    let conn = http
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    let _ = watcher.watch(conn).await;
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(2)) => {}
    }
}

/// The Python interpreter for moto: `$SYNAPSE_BACKUP_TOOLS/bin/python` when the test
/// scripts set that virtualenv up, else `python3` on PATH.
fn moto_python() -> PathBuf {
    if let Some(tools) = std::env::var_os("SYNAPSE_BACKUP_TOOLS") {
        let python = Path::new(&tools).join("bin/python");
        if python.exists() {
            return python;
        }
    }
    PathBuf::from("python3")
}

/// A moto S3 server (`python3 -m moto.server`) on 127.0.0.1, killed on drop. Unlike
/// s3s-fs it implements ListMultipartUploads; it accepts any credentials.
pub struct MotoServer {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// An access key (moto accepts any).
    pub access_key: String,
    /// A secret key (moto accepts any).
    pub secret_key: String,
    child: Child,
    log: tempfile::NamedTempFile,
}

impl MotoServer {
    /// Starts moto on a free port and waits (up to 60 s) until it answers.
    ///
    /// Panics, with the install command, when moto is not installed: tests that need
    /// it fail rather than skip. Blocks the calling thread while waiting.
    pub fn start() -> MotoServer {
        let python = moto_python();
        let check = Command::new(&python)
            .args(["-c", "import moto.server, flask"])
            .output();
        match check {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "moto is not installed for {}: install moto: pip install 'moto[server]' (or run ./scripts/test, which installs it): {}",
                python.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => panic!(
                "cannot run {}: {e}; install python3, then install moto: pip install 'moto[server]'",
                python.display()
            ),
        }
        let port = StdTcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = tempfile::NamedTempFile::new().expect("moto log file");
        let child = Command::new(&python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("moto log"))
            .stderr(log.reopen().expect("moto log"))
            .env_remove("AWS_ENDPOINT_URL")
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start moto with {}: {e}", python.display()));
        let mut server = MotoServer {
            endpoint: format!("http://127.0.0.1:{port}"),
            access_key: "testing".into(),
            secret_key: "testing".into(),
            child,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("moto exited with {status}: {}", server.log_text());
            }
            if answers_http(port) {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "moto did not answer on port {port} within 60 s: {}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What moto printed so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Creates a bucket through moto's REST API (path style, unsigned: moto does not
    /// check signatures).
    pub fn create_bucket(&self, name: &str) {
        let port = self
            .endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .expect("port");
        let response = http_request(port, "PUT", &format!("/{name}")).expect("PUT bucket to moto");
        assert!(
            response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"),
            "moto create bucket: {response}"
        );
    }

    /// Relation data for `bucket` on this server (path style, us-east-1).
    pub fn relation_data(&self, bucket: &str) -> HashMap<String, String> {
        [
            ("access-key", self.access_key.as_str()),
            ("secret-key", self.secret_key.as_str()),
            ("bucket", bucket),
            ("endpoint", self.endpoint.as_str()),
            ("region", REGION),
            ("s3-uri-style", "path"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 request to 127.0.0.1; the whole response as text.
fn http_request(port: u16, method: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

fn answers_http(port: u16) -> bool {
    http_request(port, "GET", "/")
        .map(|r| r.starts_with("HTTP/"))
        .unwrap_or(false)
}

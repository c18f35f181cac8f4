//! A fault injector: a `Container` that delegates to a real one, records what goes
//! into the workload and breaks one thing on purpose (a real component with a fault,
//! not a mock).
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use synapse_backup::{
    Container, ContainerError, ExecOptions, ExecOutput, ExecProcess, FileInfo, ListOptions,
    MakeDirOptions, PushOptions,
};
use tokio::sync::oneshot;

/// A pause after a call: the variable that marks it, then (finished, go on).
pub type PauseAfter = (String, oneshot::Sender<()>, oneshot::Receiver<()>);

/// What went into the workload: every command's argv, environment (`NAME=value`) and
/// standard input given whole, and every pushed file. Clones share the record.
#[derive(Clone, Default)]
pub struct Seen(Arc<Mutex<Vec<Vec<u8>>>>);

impl Seen {
    fn add(&self, bytes: impl Into<Vec<u8>>) {
        self.0.lock().unwrap().push(bytes.into());
    }

    fn command(&self, command: &[String], options: &ExecOptions) {
        for arg in command {
            self.add(arg.as_bytes());
        }
        for (name, value) in &options.environment {
            self.add(format!("{name}={value}"));
        }
        if let Some(stdin) = &options.stdin {
            self.add(stdin.clone());
        }
    }

    /// Whether any of it holds `needle`.
    pub fn holds(&self, needle: &[u8]) -> bool {
        self.0
            .lock()
            .unwrap()
            .iter()
            .any(|blob| blob.windows(needle.len()).any(|w| w == needle))
    }

    /// The names of the environment variables given (upper-case `NAME=` records).
    pub fn env_names(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|blob| {
                let text = String::from_utf8_lossy(blob);
                let (name, _) = text.split_once('=')?;
                name.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                    .then(|| name.to_string())
            })
            .collect()
    }
}

/// Delegates to `inner`, recording what goes in (`seen`); see the other fields for
/// the faults, which apply to `exec` (`exec_streaming` only delegates and records).
pub struct Faulty<C> {
    pub inner: C,
    /// What went into the workload (`exec`, `exec_streaming`, `push`), as given to
    /// `inner`.
    pub seen: Seen,
    /// Give the backup pipeline no passphrase on its standard input (gpg gets none).
    pub break_passphrase: bool,
    /// When the backup pipeline returns, send on the first channel and wait on the second.
    pub after_pipeline: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
    /// When a call whose environment has this variable returns, send on the first
    /// channel and wait on the second (once).
    pub after_exec_with: Mutex<Option<PauseAfter>>,
}

impl<C> Faulty<C> {
    pub fn new(inner: C) -> Self {
        Faulty {
            inner,
            seen: Seen::default(),
            break_passphrase: false,
            after_pipeline: Mutex::new(None),
            after_exec_with: Mutex::new(None),
        }
    }

    /// Returns (the call with `variable` in its environment finished, go on).
    pub fn pause_after_exec_with(
        &self,
        variable: &str,
    ) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (done_tx, done_rx) = oneshot::channel();
        let (go_tx, go_rx) = oneshot::channel();
        *self.after_exec_with.lock().unwrap() = Some((variable.to_string(), done_tx, go_rx));
        (done_rx, go_tx)
    }

    /// Returns (pipeline finished, go on).
    pub fn pause_after_pipeline(&self) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (done_tx, done_rx) = oneshot::channel();
        let (go_tx, go_rx) = oneshot::channel();
        *self.after_pipeline.lock().unwrap() = Some((done_tx, go_rx));
        (done_rx, go_tx)
    }
}

#[async_trait]
impl<C: Container> Container for Faulty<C> {
    async fn exec(
        &self,
        command: &[String],
        options: ExecOptions,
    ) -> Result<ExecOutput, ContainerError> {
        // The backup pipeline is the one call given an expected upload size.
        let is_pipeline = options.environment.contains_key("SB_EXPECTED_SIZE");
        let pause_here = {
            let mut slot = self.after_exec_with.lock().unwrap();
            match slot.take() {
                Some((var, done, go)) if options.environment.contains_key(&var) => Some((done, go)),
                other => {
                    *slot = other;
                    None
                }
            }
        };
        let mut options = options;
        if is_pipeline && self.break_passphrase {
            options.stdin = None;
        }
        self.seen.command(command, &options);
        let result = self.inner.exec(command, options).await;
        if let Some((done, go)) = pause_here {
            let _ = done.send(());
            let _ = go.await;
        }
        if is_pipeline {
            let pause = self.after_pipeline.lock().unwrap().take();
            if let Some((done, go)) = pause {
                let _ = done.send(());
                let _ = go.await;
            }
        }
        result
    }
    async fn exec_streaming(
        &self,
        command: &[String],
        options: ExecOptions,
    ) -> Result<ExecProcess, ContainerError> {
        self.seen.command(command, &options);
        self.inner.exec_streaming(command, options).await
    }
    async fn push(
        &self,
        path: &str,
        content: &[u8],
        options: PushOptions,
    ) -> Result<(), ContainerError> {
        self.seen.add(content);
        self.inner.push(path, content, options).await
    }
    async fn pull(&self, path: &str) -> Result<Vec<u8>, ContainerError> {
        self.inner.pull(path).await
    }
    async fn list_files(
        &self,
        path: &str,
        options: ListOptions,
    ) -> Result<Vec<FileInfo>, ContainerError> {
        self.inner.list_files(path, options).await
    }
    async fn remove_path(&self, path: &str, recursive: bool) -> Result<(), ContainerError> {
        self.inner.remove_path(path, recursive).await
    }
    async fn make_dir(&self, path: &str, options: MakeDirOptions) -> Result<(), ContainerError> {
        self.inner.make_dir(path, options).await
    }
    async fn exists(&self, path: &str) -> Result<bool, ContainerError> {
        self.inner.exists(path).await
    }
    async fn start(&self, services: &[String]) -> Result<(), ContainerError> {
        self.inner.start(services).await
    }
    async fn stop(&self, services: &[String]) -> Result<(), ContainerError> {
        self.inner.stop(services).await
    }
    async fn is_running(&self, service: &str) -> Result<bool, ContainerError> {
        self.inner.is_running(service).await
    }
}

/// A misbehaving S3 endpoint on 127.0.0.1: plain HTTP/1.1 by hand (it checks no
/// signature), each request answered as its [`Behaviour`] says. For what no real
/// server does on purpose: never answering, listings whose continuation tokens cycle
/// or never end, objects of endless size.
pub mod endpoint {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// How the endpoint answers.
    #[derive(Clone, Debug)]
    pub enum Behaviour {
        /// Accepts connections, reads the request, never answers.
        NeverAnswers,
        /// ListObjectsV2: one object per page; the page asked for with token `t`
        /// (none for the first) names the next token `cycle[(i + 1) % len]` where `i`
        /// is `t`'s place in `cycle` (the first page names `cycle[0]`): A → B → A …
        CyclingTokens(Vec<String>),
        /// ListObjectsV2: empty pages, each naming a new token, forever.
        EndlessTokens,
        /// GET of any object: `Content-Length` of this many bytes, zeros sent until
        /// the client hangs up.
        HugeObject(u64),
        /// GET of any object: chunked, no length, zeros sent until the client hangs up.
        EndlessChunkedObject,
    }

    /// A running endpoint; stops when dropped.
    pub struct HostileEndpoint {
        /// `http://127.0.0.1:<port>`.
        pub endpoint: String,
        /// Requests received.
        pub requests: Arc<AtomicUsize>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for HostileEndpoint {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl HostileEndpoint {
        /// Starts serving on a free port of 127.0.0.1 (on the current runtime).
        pub async fn start(behaviour: Behaviour) -> HostileEndpoint {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let port = listener.local_addr().expect("addr").port();
            let requests = Arc::new(AtomicUsize::new(0));
            let counter = Arc::clone(&requests);
            let task = tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let behaviour = behaviour.clone();
                    let counter = Arc::clone(&counter);
                    tokio::spawn(async move {
                        let _ = serve(stream, behaviour, counter).await;
                    });
                }
            });
            HostileEndpoint {
                endpoint: format!("http://127.0.0.1:{port}"),
                requests,
                task,
            }
        }

        /// s3-integrator relation data for `bucket` here (path style, any keys).
        pub fn relation_data(&self, bucket: &str) -> HashMap<String, String> {
            [
                ("access-key", "AKIDHOSTILE"),
                ("secret-key", "hostile-secret"),
                ("bucket", bucket),
                ("endpoint", self.endpoint.as_str()),
                ("region", "us-east-1"),
                ("s3-uri-style", "path"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
        }
    }

    /// One request's head: method, target, headers; `None` at the end of the stream.
    async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<(String, String, usize)>> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await? == 0 {
                return Ok(None);
            }
            head.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut lines = text.lines();
        let mut first = lines.next().unwrap_or("").split(' ');
        let method = first.next().unwrap_or("").to_string();
        let target = first.next().unwrap_or("").to_string();
        let length = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        Ok(Some((method, target, length)))
    }

    fn query(target: &str, name: &str) -> Option<String> {
        let (_, q) = target.split_once('?')?;
        q.split('&')
            .filter_map(|p| p.split_once('=').or(Some((p, ""))))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }

    fn page(token: Option<&str>, next: &str, with_object: bool) -> String {
        let contents = if with_object {
            format!(
                "<Contents><Key>obj-{}</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>\"e\"</ETag><Size>1</Size><StorageClass>STANDARD</StorageClass></Contents>",
                token.unwrap_or("first")
            )
        } else {
            String::new()
        };
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>b</Name><Prefix></Prefix><KeyCount>{}</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated>{}<NextContinuationToken>{next}</NextContinuationToken>{contents}</ListBucketResult>",
            u8::from(with_object),
            token
                .map(|t| format!("<ContinuationToken>{t}</ContinuationToken>"))
                .unwrap_or_default()
        )
    }

    async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
        let text = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(text.as_bytes()).await
    }

    async fn serve(
        mut stream: TcpStream,
        behaviour: Behaviour,
        counter: Arc<AtomicUsize>,
    ) -> std::io::Result<()> {
        let mut endless = 0u64;
        loop {
            let Some((method, target, length)) = read_head(&mut stream).await? else {
                return Ok(());
            };
            let mut body = vec![0u8; length];
            stream.read_exact(&mut body).await?;
            counter.fetch_add(1, Ordering::SeqCst);
            let token = query(&target, "continuation-token");
            match &behaviour {
                Behaviour::NeverAnswers => {
                    // Hold the connection open, answering nothing.
                    let mut sink = [0u8; 1024];
                    while stream.read(&mut sink).await? > 0 {}
                    return Ok(());
                }
                Behaviour::CyclingTokens(cycle) => {
                    let next = match &token {
                        None => cycle[0].clone(),
                        Some(t) => {
                            let i = cycle.iter().position(|c| c == t).unwrap_or(0);
                            cycle[(i + 1) % cycle.len()].clone()
                        }
                    };
                    respond(&mut stream, "200 OK", &page(token.as_deref(), &next, true)).await?;
                }
                Behaviour::EndlessTokens => {
                    endless += 1;
                    let next = format!("t{}-{endless}", counter.load(Ordering::SeqCst));
                    respond(&mut stream, "200 OK", &page(token.as_deref(), &next, false)).await?;
                }
                Behaviour::HugeObject(size) => {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nETag: \"e\"\r\nLast-Modified: Thu, 01 Jan 2026 00:00:00 GMT\r\nContent-Length: {size}\r\n\r\n"
                    );
                    stream.write_all(head.as_bytes()).await?;
                    if method == "HEAD" {
                        continue;
                    }
                    let zeros = vec![0u8; 64 * 1024];
                    loop {
                        stream.write_all(&zeros).await?;
                    }
                }
                Behaviour::EndlessChunkedObject => {
                    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nETag: \"e\"\r\nLast-Modified: Thu, 01 Jan 2026 00:00:00 GMT\r\nTransfer-Encoding: chunked\r\n\r\n";
                    stream.write_all(head.as_bytes()).await?;
                    if method == "HEAD" {
                        continue;
                    }
                    let mut chunk = format!("{:x}\r\n", 64 * 1024).into_bytes();
                    chunk.extend(vec![b'{'; 64 * 1024]);
                    chunk.extend_from_slice(b"\r\n");
                    loop {
                        stream.write_all(&chunk).await?;
                    }
                }
            }
            let _ = &method;
        }
    }
}

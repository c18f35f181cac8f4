//! HTTP over Pebble's unix socket: one connection per request (hyper's HTTP/1 client on a
//! `tokio::net::UnixStream`), bounded in time and size, and Pebble's JSON envelope.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

use crate::error::ContainerError;

/// How long connecting to the socket may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one ordinary request (send and read the whole answer) may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest JSON answer read into memory.
const JSON_LIMIT: usize = 16 * 1024 * 1024;

/// A client of one Pebble daemon.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    socket: PathBuf,
}

/// Pebble's answer, decoded from its envelope.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The HTTP status.
    pub(crate) status: StatusCode,
    /// `result` (for an error: `{"message", "kind"?}`).
    pub(crate) result: Value,
    /// `change`, for async answers.
    pub(crate) change: Option<String>,
}

impl Answer {
    /// Whether Pebble reported an error.
    pub(crate) fn is_error(&self) -> bool {
        !self.status.is_success()
    }

    /// The error message of an error answer.
    pub(crate) fn message(&self) -> String {
        self.result
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("(no message)")
            .to_string()
    }

    /// The error kind of an error answer (`not-found`, `permission-denied`, …).
    pub(crate) fn kind(&self) -> Option<&str> {
        self.result.get("kind").and_then(Value::as_str)
    }
}

/// An I/O error on `what` (the request or the socket).
pub(crate) fn failed(what: &str, message: impl Into<String>) -> ContainerError {
    ContainerError::Io {
        path: what.to_string(),
        source: io::Error::other(message.into()),
    }
}

/// The error for an error answer to `what`: `PermissionDenied` for 401/403, else `Io`
/// with the status and Pebble's message.
pub(crate) fn answer_error(what: &str, answer: &Answer) -> ContainerError {
    let message = answer.message();
    if matches!(
        answer.status,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
    ) {
        return ContainerError::PermissionDenied {
            path: what.to_string(),
            reason: format!(
                "pebble refused the request ({}): {message} (exec, files and services need \
                 Pebble admin access: run as root or as the daemon's user)",
                answer.status
            ),
        };
    }
    failed(
        what,
        format!("pebble answered {}: {message}", answer.status),
    )
}

impl Client {
    pub(crate) fn new(socket: PathBuf) -> Self {
        Self { socket }
    }

    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }

    /// Connects to the socket, within [`CONNECT_TIMEOUT`].
    pub(crate) async fn connect(&self) -> Result<UnixStream, ContainerError> {
        let what = || format!("pebble socket {}", self.socket.display());
        match tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&self.socket)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(source)) => Err(match source.kind() {
                io::ErrorKind::NotFound => ContainerError::Io {
                    path: what(),
                    source: io::Error::new(
                        io::ErrorKind::NotFound,
                        "no such socket: is the Pebble daemon running, and is the path right?",
                    ),
                },
                io::ErrorKind::PermissionDenied => ContainerError::PermissionDenied {
                    path: what(),
                    reason: source.to_string(),
                },
                _ => ContainerError::Io {
                    path: what(),
                    source,
                },
            }),
            Err(_) => Err(failed(
                &what(),
                format!("could not connect within {CONNECT_TIMEOUT:?}"),
            )),
        }
    }

    /// Sends one request and returns the response with its body unread; the caller
    /// bounds the reading of the body.
    pub(crate) async fn send<B>(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: B,
    ) -> Result<hyper::Response<Incoming>, ContainerError>
    where
        B: hyper::body::Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let what = format!("pebble {method} {}", strip_query(path));
        let stream = self.connect().await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed(&what, format!("http handshake failed: {e}")))?;
        tokio::spawn(async move {
            // Ends when the response is read (or dropped); its error is the request's.
            let _ = connection.await;
        });
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "localhost");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(body)
            .map_err(|e| failed(&what, format!("bad request: {e}")))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| failed(&what, format!("no answer: {e}")))
    }

    /// Sends a request with a JSON body (or none) and decodes Pebble's envelope, all
    /// within `timeout`.
    pub(crate) async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Answer, ContainerError> {
        let what = format!("pebble {method} {}", strip_query(path));
        let call = async {
            let (headers, bytes): (&[(&str, &str)], Bytes) = match body {
                Some(v) => (
                    &[("content-type", "application/json")],
                    Bytes::from(serde_json::to_vec(v).map_err(|e| failed(&what, e.to_string()))?),
                ),
                None => (&[], Bytes::new()),
            };
            let response = self
                .send(method.clone(), path, headers, Full::new(bytes))
                .await?;
            let status = response.status();
            let body = Limited::new(response.into_body(), JSON_LIMIT)
                .collect()
                .await
                .map_err(|e| failed(&what, format!("could not read the answer: {e}")))?
                .to_bytes();
            decode(&what, status, &body)
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(answer) => answer,
            Err(_) => Err(failed(
                &what,
                format!("pebble did not answer within {timeout:?}"),
            )),
        }
    }
}

/// The path without its query string (queries may carry file paths: fine, but shorter).
fn strip_query(path: &str) -> &str {
    path.split_once('?').map_or(path, |(p, _)| p)
}

/// Decodes Pebble's envelope `{"type","status-code","result","change"?}`.
pub(crate) fn decode(
    what: &str,
    status: StatusCode,
    body: &[u8],
) -> Result<Answer, ContainerError> {
    let envelope: Value = serde_json::from_slice(body).map_err(|e| {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        failed(
            what,
            format!(
                "pebble answered {status} with a body that is not its JSON envelope ({e}): {text:?}"
            ),
        )
    })?;
    let result = envelope.get("result").cloned().unwrap_or(Value::Null);
    let change = envelope
        .get("change")
        .and_then(Value::as_str)
        .map(str::to_string);
    let is_error = envelope.get("type").and_then(Value::as_str) == Some("error");
    let status = if is_error && status.is_success() {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        status
    };
    Ok(Answer {
        status,
        result,
        change,
    })
}

/// Percent-encodes a query value.
pub(crate) fn query_value(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// What a finished change reports.
#[derive(Debug, Clone)]
pub(crate) struct ChangeOutcome {
    /// `Done`, `Error`, …
    pub(crate) status: String,
    /// The change's error, if any.
    pub(crate) err: Option<String>,
    /// The first task's `exit-code` (exec changes).
    pub(crate) exit_code: Option<i64>,
}

impl Client {
    /// Waits until the change `id` is ready (re-waiting whenever Pebble's own wait times
    /// out with 504); the caller bounds the total time.
    pub(crate) async fn wait_change(&self, id: &str) -> Result<ChangeOutcome, ContainerError> {
        let what = format!("pebble change {id}");
        loop {
            let answer = self
                .json(
                    Method::GET,
                    &format!("/v1/changes/{}/wait?timeout=30s", query_value(id)),
                    None,
                    Duration::from_secs(45),
                )
                .await?;
            if answer.status == StatusCode::GATEWAY_TIMEOUT {
                continue;
            }
            if answer.is_error() {
                return Err(answer_error(&what, &answer));
            }
            let result = &answer.result;
            if result.get("ready").and_then(Value::as_bool) != Some(true) {
                continue;
            }
            let status = result
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let err = result
                .get("err")
                .and_then(Value::as_str)
                .map(str::to_string);
            let exit_code = result
                .get("tasks")
                .and_then(Value::as_array)
                .and_then(|tasks| tasks.first())
                .and_then(|task| task.get("data"))
                .and_then(|data| data.get("exit-code"))
                .and_then(Value::as_i64);
            return Ok(ChangeOutcome {
                status,
                err,
                exit_code,
            });
        }
    }
}

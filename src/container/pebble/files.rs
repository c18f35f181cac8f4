//! Files over Pebble: `/v1/files` where it is safe, exec as the owner where it is not.
//!
//! Pebble's daemon runs as root and its file calls follow symlinks (`list` and `read`
//! use `os.Stat`; `make-dirs` with an owner writes `<path>.mkdir-new` and chowns by
//! path). So:
//! - a push or make_dir that sets an owner runs as that owner through exec
//!   (`push_as_owner.sh`, `make_dir_as_owner.sh`), unless the nearest existing directory
//!   is root's alone (owned by root, not writable by group or others), where nobody else
//!   can plant a link and Pebble's API is used;
//! - `list_files` of a path itself lists its parent with an exact pattern (a directory
//!   listing does not follow symlinks), so a symlink (dangling too) is a `Symlink`;
//! - every read checks the per-file error inside Pebble's 200 multipart answer.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::client::{Answer, Client, REQUEST_TIMEOUT, answer_error, decode, failed, query_value};
use crate::container::local::check_path;
use crate::container::{FileInfo, FileKind, ListOptions};
use crate::error::ContainerError;

/// How long a whole file transfer may take.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);
/// Content goes to Pebble in chunks of this size (no second whole copy in memory).
const CHUNK: usize = 64 * 1024;

pub(crate) const PUSH_AS_OWNER: &str = include_str!("push_as_owner.sh");
pub(crate) const MAKE_DIR_AS_OWNER: &str = include_str!("make_dir_as_owner.sh");

/// The error for a failed file call on `path`, from Pebble's `kind`.
fn file_error(path: &str, kind: Option<&str>, message: &str, what: &str) -> ContainerError {
    match kind {
        Some("not-found") => ContainerError::NotFound {
            path: path.to_string(),
        },
        Some("permission-denied") => ContainerError::PermissionDenied {
            path: path.to_string(),
            reason: message.to_string(),
        },
        _ => failed(what, format!("{path}: {message}")),
    }
}

fn answer_file_error(path: &str, answer: &Answer, what: &str) -> ContainerError {
    if answer.kind().is_some() {
        file_error(path, answer.kind(), &answer.message(), what)
    } else {
        answer_error(what, answer)
    }
}

/// Checks Pebble's per-file results (`[{path, error?}]`) of a files call.
fn check_results(result: &Value, what: &str) -> Result<(), ContainerError> {
    for entry in result.as_array().map(Vec::as_slice).unwrap_or_default() {
        if let Some(error) = entry.get("error") {
            let path = entry.get("path").and_then(Value::as_str).unwrap_or("?");
            let kind = error.get("kind").and_then(Value::as_str);
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("(no message)");
            return Err(file_error(path, kind, message, what));
        }
    }
    Ok(())
}

/// Escapes `name` for Pebble's `path.Match` so that it matches only itself.
pub(crate) fn exact_pattern(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '*' | '?' | '[' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Checks a glob pattern in the dialect of Go's `path.Match` (which Pebble uses):
/// `*`, `?`, `[…]` with ranges and `^` negation, `\` escapes.
pub(crate) fn check_pattern(pattern: &str) -> Result<(), ContainerError> {
    let bad = |reason: &str| ContainerError::InvalidArgument {
        what: "pattern",
        value: pattern.to_string(),
        reason: reason.to_string(),
    };
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                if i + 1 >= chars.len() {
                    return Err(bad("ends with a lone '\\'"));
                }
                i += 2;
            }
            '[' => {
                i += 1;
                if chars.get(i) == Some(&'^') {
                    i += 1;
                }
                let mut items = 0;
                loop {
                    match chars.get(i) {
                        None => return Err(bad("has an unclosed '['")),
                        Some(']') if items > 0 => {
                            i += 1;
                            break;
                        }
                        Some(']') => return Err(bad("has an empty '[]'")),
                        Some('-') => return Err(bad("has a '-' without a range start")),
                        Some('\\') => {
                            if i + 1 >= chars.len() {
                                return Err(bad("ends with a lone '\\'"));
                            }
                            i += 2;
                        }
                        Some(_) => i += 1,
                    }
                    if chars.get(i) == Some(&'-') {
                        i += 1;
                        match chars.get(i) {
                            None | Some(']') => return Err(bad("has a range without an end")),
                            Some('\\') => i += 2,
                            Some(_) => i += 1,
                        }
                    }
                    items += 1;
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Whether `name` matches `pattern` (already checked) in `path.Match`'s dialect.
pub(crate) fn pattern_matches(pattern: &str, name: &str) -> bool {
    // glob's dialect differs in negation (`[!…]`): translate `[^` to `[!`.
    let translated = pattern.replace("[^", "[!");
    glob::Pattern::new(&translated).is_ok_and(|p| {
        p.matches_with(
            name,
            glob::MatchOptions {
                case_sensitive: true,
                require_literal_separator: true,
                require_literal_leading_dot: false,
            },
        )
    })
}

fn parse_mode(text: &str) -> u32 {
    u32::from_str_radix(text, 8).unwrap_or(0)
}

fn to_info(entry: &Value) -> FileInfo {
    let text = |k: &str| {
        entry
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let kind = match entry.get("type").and_then(Value::as_str) {
        Some("file") => FileKind::File,
        Some("directory") => FileKind::Directory,
        Some("symlink") => FileKind::Symlink,
        _ => FileKind::Other,
    };
    FileInfo {
        path: text("path"),
        name: text("name"),
        kind,
        size: entry.get("size").and_then(Value::as_u64).unwrap_or(0),
        permissions: parse_mode(&text("permissions")),
    }
}

/// Pebble's listing of `path` (`itself`: the entry itself, followed if a symlink).
async fn raw_list(
    client: &Client,
    path: &str,
    pattern: Option<&str>,
    itself: bool,
) -> Result<Vec<Value>, ContainerError> {
    let mut query = format!("/v1/files?action=list&path={}", query_value(path));
    if let Some(p) = pattern {
        query.push_str(&format!("&pattern={}", query_value(p)));
    }
    if itself {
        query.push_str("&itself=true");
    }
    let what = format!("pebble list of {path}");
    let answer = client
        .json(Method::GET, &query, None, REQUEST_TIMEOUT)
        .await?;
    if answer.is_error() {
        return Err(answer_file_error(path, &answer, &what));
    }
    Ok(answer.result.as_array().cloned().unwrap_or_default())
}

/// The parent and the last component of an absolute path other than `/`.
fn split(path: &str) -> Option<(&str, &str)> {
    let trimmed = path.trim_end_matches('/');
    let (parent, name) = trimmed.rsplit_once('/')?;
    if name.is_empty() {
        return None;
    }
    Some((if parent.is_empty() { "/" } else { parent }, name))
}

/// The entry at `path` itself, not followed: `None` when it does not exist.
pub(crate) async fn lstat(client: &Client, path: &str) -> Result<Option<Value>, ContainerError> {
    let Some((parent, name)) = split(path) else {
        // `/` itself.
        return Ok(raw_list(client, "/", None, true).await?.into_iter().next());
    };
    match raw_list(client, parent, Some(&exact_pattern(name)), false).await {
        Ok(entries) => Ok(entries
            .into_iter()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(name))),
        Err(ContainerError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) async fn list_files(
    client: &Client,
    path: &str,
    options: &ListOptions,
) -> Result<Vec<FileInfo>, ContainerError> {
    check_path("path", path)?;
    if let Some(p) = &options.pattern {
        check_pattern(p)?;
    }
    let Some(entry) = lstat(client, path).await? else {
        return Err(ContainerError::NotFound {
            path: path.to_string(),
        });
    };
    let mut me = to_info(&entry);
    if me.kind != FileKind::Directory || options.itself {
        // Name the entry as asked (Pebble joins the parent it listed).
        me.path = path.to_string();
        let keep = options
            .pattern
            .as_deref()
            .is_none_or(|p| pattern_matches(p, &me.name));
        return Ok(if keep { vec![me] } else { Vec::new() });
    }
    let mut out: Vec<FileInfo> = raw_list(client, path, options.pattern.as_deref(), false)
        .await?
        .iter()
        .map(to_info)
        .collect();
    out.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(out)
}

pub(crate) async fn exists(client: &Client, path: &str) -> Result<bool, ContainerError> {
    check_path("path", path)?;
    Ok(lstat(client, path).await?.is_some())
}

/// Reads of a file whose multipart answer ended before its closing boundary, in all.
const READ_ATTEMPTS: usize = 3;

pub(crate) async fn pull(client: &Client, path: &str) -> Result<Vec<u8>, ContainerError> {
    check_path("path", path)?;
    // A read changes nothing: one whose answer came cut short (seen under heavy load, the
    // body ending cleanly before the multipart's closing boundary) is asked again.
    let mut attempt = 1;
    loop {
        match pull_once(client, path).await {
            Err(ContainerError::Io { path: what, source })
                if source.kind() == std::io::ErrorKind::UnexpectedEof
                    && attempt < READ_ATTEMPTS =>
            {
                tracing::warn!(what, attempt, error = %source, "reading the file again");
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn pull_once(client: &Client, path: &str) -> Result<Vec<u8>, ContainerError> {
    let what = format!("pebble read of {path}");
    let call = async {
        let response = client
            .send(
                Method::GET,
                &format!("/v1/files?action=read&path={}", query_value(path)),
                &[("accept", "multipart/form-data")],
                http_body_util::Empty::<Bytes>::new(),
            )
            .await?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if status != StatusCode::OK || !content_type.starts_with("multipart/") {
            let body = http_body_util::Limited::new(response.into_body(), 1024 * 1024)
                .collect()
                .await
                .map_err(|e| failed(&what, format!("could not read the answer: {e}")))?
                .to_bytes();
            let answer = decode(&what, status, &body)?;
            return Err(answer_file_error(path, &answer, &what));
        }
        read_answer(response, &content_type, path, &what).await
    };
    match tokio::time::timeout(TRANSFER_TIMEOUT, call).await {
        Ok(result) => result,
        Err(_) => Err(failed(
            &what,
            format!("not done within {TRANSFER_TIMEOUT:?}"),
        )),
    }
}

/// The file in a read's multipart answer (of `content_type`), once its response part
/// says the read succeeded.
async fn read_answer(
    response: hyper::Response<hyper::body::Incoming>,
    content_type: &str,
    path: &str,
    what: &str,
) -> Result<Vec<u8>, ContainerError> {
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| failed(what, format!("bad multipart answer: {e}")))?;
    // An answer that ends early, wherever it ends, is cut short (asked again).
    let bad = |e: multer::Error| match e {
        multer::Error::IncompleteStream
        | multer::Error::IncompleteFieldData { .. }
        | multer::Error::IncompleteHeaders => ContainerError::Io {
            path: what.to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("bad multipart answer: {e}"),
            ),
        },
        e => failed(what, format!("bad multipart answer: {e}")),
    };
    let stream = http_body_util::BodyStream::new(response.into_body()).filter_map(|frame| async {
        match frame {
            Ok(frame) => frame.into_data().ok().map(Ok::<Bytes, hyper::Error>),
            Err(e) => Some(Err(e)),
        }
    });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut content: Option<Vec<u8>> = None;
    let mut checked = false;
    while let Some(mut field) = multipart.next_field().await.map_err(bad)? {
        match field.name() {
            Some("files") => {
                let mut buf = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    buf.extend_from_slice(&chunk);
                }
                content = Some(buf);
            }
            Some("response") => {
                let bytes = field.bytes().await.map_err(bad)?;
                let answer = decode(what, StatusCode::OK, &bytes)?;
                if answer.is_error() {
                    return Err(answer_file_error(path, &answer, what));
                }
                check_results(&answer.result, what)?;
                checked = true;
            }
            _ => {}
        }
    }
    match (checked, content) {
        (true, Some(content)) => Ok(content),
        (false, _) => Err(failed(what, "the answer has no response part")),
        (true, None) => Err(failed(what, "the answer has no file part")),
    }
}

/// A multipart boundary: random, 32+ characters as Pebble asks.
fn boundary() -> String {
    let mut bytes = [0u8; 24];
    let _ = getrandom::fill(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("synapse-backup-{hex}")
}

/// Escapes a file name for a `Content-Disposition` header value.
fn escape_quoted(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// `POST /v1/files` write of `content` to `path` (atomic in Pebble), streamed in chunks.
pub(crate) async fn write(
    client: &Client,
    path: &str,
    content: &[u8],
    request: Value,
) -> Result<(), ContainerError> {
    let what = format!("pebble write of {path}");
    let boundary = boundary();
    let head = format!(
        "--{boundary}\r\nContent-Type: application/json\r\nContent-Disposition: form-data; \
         name=\"request\"\r\n\r\n{request}\r\n--{boundary}\r\nContent-Type: \
         application/octet-stream\r\nContent-Disposition: form-data; name=\"files\"; \
         filename=\"{}\"\r\n\r\n",
        escape_quoted(path)
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let (mut sender, body) = http_body_util::channel::Channel::<Bytes, hyper::Error>::new(4);
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let call = async {
        let feed = async {
            let _ = sender.send_data(Bytes::from(head)).await;
            for chunk in content.chunks(CHUNK) {
                if sender
                    .send_data(Bytes::copy_from_slice(chunk))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let _ = sender.send_data(Bytes::from(tail)).await;
            drop(sender);
        };
        let request = async {
            let response = client
                .send(
                    Method::POST,
                    "/v1/files",
                    &[("content-type", content_type.as_str())],
                    body,
                )
                .await?;
            let status = response.status();
            let bytes = http_body_util::Limited::new(response.into_body(), 1024 * 1024)
                .collect()
                .await
                .map_err(|e| failed(&what, format!("could not read the answer: {e}")))?
                .to_bytes();
            decode(&what, status, &bytes)
        };
        let ((), answer) = tokio::join!(feed, request);
        let answer = answer?;
        if answer.is_error() {
            return Err(answer_file_error(path, &answer, &what));
        }
        check_results(&answer.result, &what)
    };
    match tokio::time::timeout(TRANSFER_TIMEOUT, call).await {
        Ok(result) => result,
        Err(_) => Err(failed(
            &what,
            format!("not done within {TRANSFER_TIMEOUT:?}"),
        )),
    }
}

/// `POST /v1/files` with a JSON body (`make-dirs`, `remove`), checking per-path errors.
pub(crate) async fn files_json(
    client: &Client,
    path: &str,
    body: &Value,
    what: &str,
) -> Result<(), ContainerError> {
    let answer = client
        .json(Method::POST, "/v1/files", Some(body), REQUEST_TIMEOUT)
        .await?;
    if answer.is_error() {
        return Err(answer_file_error(path, &answer, what));
    }
    check_results(&answer.result, what)
}

pub(crate) async fn remove(
    client: &Client,
    path: &str,
    recursive: bool,
) -> Result<(), ContainerError> {
    let target = check_path("path", path)?;
    if target.parent().is_none() {
        return Err(ContainerError::InvalidArgument {
            what: "path",
            value: path.to_string(),
            reason: "must name an entry below /".into(),
        });
    }
    // A recursive remove of a missing path succeeds in Pebble: the trait says NotFound.
    if lstat(client, path).await?.is_none() {
        return Err(ContainerError::NotFound {
            path: path.to_string(),
        });
    }
    let body = json!({"action": "remove", "paths": [{"path": path, "recursive": recursive}]});
    files_json(client, path, &body, &format!("pebble remove of {path}")).await
}

/// Whether the nearest existing directory at or above `dir` is root's alone (owned by
/// root, not writable by group or others): nobody else can plant anything there.
pub(crate) async fn root_only(client: &Client, dir: &str) -> Result<bool, ContainerError> {
    let mut current = dir.to_string();
    loop {
        match raw_list(client, &current, None, true).await {
            Ok(entries) => {
                let Some(entry) = entries.first() else {
                    return Ok(false);
                };
                let uid = entry.get("user-id").and_then(Value::as_u64);
                let mode = parse_mode(
                    entry
                        .get("permissions")
                        .and_then(Value::as_str)
                        .unwrap_or("777"),
                );
                return Ok(uid == Some(0) && mode & 0o022 == 0);
            }
            Err(ContainerError::NotFound { .. }) => match split(&current) {
                Some((parent, _)) => current = parent.to_string(),
                None => return Ok(false),
            },
            Err(e) => return Err(e),
        }
    }
}

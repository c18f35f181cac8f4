//! Server-side encryption from the relation's `attributes` and session tokens, against
//! the s3s test server whose backend enforces SSE-C like S3 (`support/sse_c.rs`: a
//! HEAD or GET without the PUT's customer key is refused) and records the encryption
//! and session-token headers of every request. Both clients are checked: the crate's
//! SDK client and the real aws CLI driven by `s3::aws_cli`'s arguments and environment.

use crate::support::s3_server;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use s3_server::TestS3Server;
use s3_server::sse_c::SeenRequest;
use synapse_backup::testing::internals::{self as aws_cli, Transfer, TransferSettings};
use synapse_backup::{S3Client, S3Error, S3Parameters};

const KEY_A: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const KEY_B: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
const CUSTOMER_KEY: &str = "x-amz-server-side-encryption-customer-key";
const CUSTOMER_ALGORITHM: &str = "x-amz-server-side-encryption-customer-algorithm";
const CUSTOMER_KEY_MD5: &str = "x-amz-server-side-encryption-customer-key-md5";
const SSE: &str = "x-amz-server-side-encryption";
const KMS_KEY_ID: &str = "x-amz-server-side-encryption-aws-kms-key-id";
const TOKEN: &str = "x-amz-security-token";

async fn server() -> TestS3Server {
    let server = TestS3Server::start().await;
    server.create_bucket("bucket-one");
    server
}

fn params(server: &TestS3Server, extra: &[(&str, &str)]) -> S3Parameters {
    let mut data = server.relation_data("bucket-one");
    for (k, v) in extra {
        data.insert(k.to_string(), v.to_string());
    }
    S3Parameters::from_relation_data(&data).unwrap()
}

fn sse_c(key: &str) -> String {
    format!("X-Amz-Server-Side-Encryption-Customer-Key={key}")
}

/// The requests for `operation` seen since the last clear.
fn seen(server: &TestS3Server, operation: &str) -> Vec<SeenRequest> {
    server
        .sse()
        .seen()
        .into_iter()
        .filter(|s| s.operation == operation)
        .collect()
}

fn value<'a>(request: &'a SeenRequest, header: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|(n, _)| n == header)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn the_sdk_client_sends_sse_c_on_put_get_and_head() {
    let server = server().await;
    let with_key = S3Client::new(&params(&server, &[("attributes", &sse_c(KEY_A))])).unwrap();
    let body = b"manifest body".to_vec();
    with_key
        .put_object("m.json", body.clone(), "application/json", &HashMap::new())
        .await
        .unwrap();
    assert_eq!(
        server
            .sse()
            .written_with_customer_key("bucket-one", "m.json"),
        Some(true)
    );
    assert_eq!(
        with_key.head_object("m.json").await.unwrap().size,
        body.len() as u64
    );
    assert_eq!(with_key.get_object("m.json", 1 << 20).await.unwrap(), body);
    for operation in ["PutObject", "HeadObject", "GetObject"] {
        let requests = seen(&server, operation);
        assert!(!requests.is_empty(), "no {operation}");
        for request in requests {
            assert_eq!(value(&request, CUSTOMER_KEY), Some(KEY_A), "{request:?}");
            assert_eq!(value(&request, CUSTOMER_ALGORITHM), Some("AES256"));
            assert!(request.has(CUSTOMER_KEY_MD5), "{request:?}");
            assert!(!request.has(SSE), "{request:?}");
        }
    }
    // Without the key, or with another one, the object cannot be read or HEADed.
    let without = S3Client::new(&params(&server, &[])).unwrap();
    let other = S3Client::new(&params(&server, &[("attributes", &sse_c(KEY_B))])).unwrap();
    for client in [&without, &other] {
        let e = client.head_object("m.json").await.unwrap_err();
        assert!(matches!(e, S3Error::Request { .. }), "{e:?}");
        let e = client.get_object("m.json", 1 << 20).await.unwrap_err();
        assert!(matches!(e, S3Error::Request { .. }), "{e:?}");
    }
    // A missing object is still "not found" with the key.
    assert!(matches!(
        with_key.head_object("missing").await,
        Err(S3Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn the_sdk_client_sends_sse_kms_and_sse_s3_on_writes_only() {
    let server = server().await;
    let kms = params(
        &server,
        &[(
            "attributes",
            r#"["X-Amz-Server-Side-Encryption=aws:kms", "X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id=alias/synapse"]"#,
        )],
    );
    let s3 = params(
        &server,
        &[("attributes", "X-Amz-Server-Side-Encryption=AES256")],
    );
    for (params, algorithm, key_id) in [
        (kms, "aws:kms", Some("alias/synapse")),
        (s3, "AES256", None),
    ] {
        server.sse().clear_seen();
        let client = S3Client::new(&params).unwrap();
        client
            .put_object("o", b"x".to_vec(), "text/plain", &HashMap::new())
            .await
            .unwrap();
        client.head_object("o").await.unwrap();
        client.get_object("o", 1 << 20).await.unwrap();
        let put = &seen(&server, "PutObject")[0];
        assert_eq!(value(put, SSE), Some(algorithm), "{put:?}");
        assert_eq!(value(put, KMS_KEY_ID), key_id, "{put:?}");
        for operation in ["HeadObject", "GetObject"] {
            for request in seen(&server, operation) {
                assert!(request.headers.is_empty(), "{request:?}");
            }
        }
    }
}

#[tokio::test]
async fn a_session_token_reaches_the_sdk_client() {
    let server = server().await;
    let token = "FwoGZXIvYXdzEJr//////////wEaDFAKE+token=";
    let client = S3Client::new(&params(&server, &[("session-token", token)])).unwrap();
    client
        .put_object("t", b"x".to_vec(), "text/plain", &HashMap::new())
        .await
        .unwrap();
    client.head_object("t").await.unwrap();
    for operation in ["PutObject", "HeadObject"] {
        let request = &seen(&server, operation)[0];
        assert_eq!(value(request, TOKEN), Some(token), "{request:?}");
    }
    assert!(!format!("{client:?}").contains(token));
}

/// Runs the real aws CLI as the pipeline would: credentials from
/// `aws_cli::credential_env`, the per-run config from `aws_cli::config_file`,
/// `--endpoint-url`, and `extra` arguments; `stdin` piped in.
fn aws(params: &S3Parameters, work: &Path, args: &[String], stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let config = work.join("aws-config");
    std::fs::write(
        &config,
        aws_cli::config_file(params, &TransferSettings::new(2, 5)).unwrap(),
    )
    .unwrap();
    let mut command = Command::new(aws_binary());
    command
        .args(["s3", "cp", "--only-show-errors", "--no-progress"])
        .args(["--endpoint-url", params.endpoint().unwrap()])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_SHARED_CREDENTIALS_FILE", work.join("no-credentials"))
        .envs(aws_cli::credential_env(params))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("run the aws CLI");
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn aws_binary() -> std::path::PathBuf {
    let out = Command::new("bash")
        .args(["-c", "command -v aws"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the aws CLI is not on PATH: run the tests through ./scripts/test (or `source scripts/tools.sh`), or `pip install awscli`"
    );
    String::from_utf8_lossy(&out.stdout).trim().into()
}

fn upload(params: &S3Parameters, work: &Path, key: &str, body: &[u8]) -> Output {
    let key_file = work.join("sse-c.key");
    let mut args = aws_cli::sse_args(params, Transfer::Upload, key_file.to_str().unwrap());
    args.extend(["-".to_string(), format!("s3://bucket-one/{key}")]);
    aws(params, work, &args, Some(body))
}

fn download(params: &S3Parameters, work: &Path, key: &str) -> Output {
    let key_file = work.join("sse-c.key");
    let mut args = aws_cli::sse_args(params, Transfer::Download, key_file.to_str().unwrap());
    args.extend([format!("s3://bucket-one/{key}"), "-".to_string()]);
    aws(params, work, &args, None)
}

fn write_key_file(params: &S3Parameters, work: &Path) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let bytes = aws_cli::customer_key_file(params).expect("SSE-C");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(work.join("sse-c.key"))
        .unwrap();
    file.write_all(bytes).unwrap();
}

#[tokio::test]
async fn the_aws_cli_sends_sse_c_on_upload_multipart_and_download() {
    let server = server().await;
    let work = tempfile::tempdir().unwrap();
    let params = params(
        &server,
        &[
            ("attributes", &sse_c(KEY_A)),
            ("session-token", "cli-session-token"),
        ],
    );
    write_key_file(&params, work.path());
    // 6 MiB with 5 MiB parts: a multipart upload.
    let body: Vec<u8> = (0..6 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    for (key, body) in [("small", &b"small object"[..]), ("large", &body[..])] {
        let out = upload(&params, work.path(), key, body);
        assert!(
            out.status.success(),
            "upload {key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            server.sse().written_with_customer_key("bucket-one", key),
            Some(true)
        );
        let out = download(&params, work.path(), key);
        assert!(
            out.status.success(),
            "download {key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == body, "{key}: downloaded bytes differ");
    }
    let requests = server.sse().seen();
    for operation in [
        "PutObject",
        "CreateMultipartUpload",
        "UploadPart",
        "HeadObject",
        "GetObject",
    ] {
        let of_kind: Vec<_> = requests
            .iter()
            .filter(|r| r.operation == operation)
            .collect();
        assert!(!of_kind.is_empty(), "no {operation} in {requests:?}");
        for request in of_kind {
            assert_eq!(value(request, CUSTOMER_KEY), Some(KEY_A), "{request:?}");
            assert_eq!(
                value(request, CUSTOMER_ALGORITHM),
                Some("AES256"),
                "{request:?}"
            );
            assert_eq!(
                value(request, TOKEN),
                Some("cli-session-token"),
                "{request:?}"
            );
        }
    }
    // Without the key the aws CLI cannot read it back.
    let plain = self::params(&server, &[]);
    let out = download(&plain, work.path(), "small");
    assert!(
        !out.status.success(),
        "downloaded an SSE-C object without its key"
    );
}

#[tokio::test]
async fn the_aws_cli_sends_sse_kms_on_upload_only() {
    let server = server().await;
    let work = tempfile::tempdir().unwrap();
    let params = params(
        &server,
        &[(
            "attributes",
            "X-Amz-Server-Side-Encryption=aws:kms;X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id=alias/synapse",
        )],
    );
    let out = upload(&params, work.path(), "k", b"kms object");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = download(&params, work.path(), "k");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"kms object");
    let requests = server.sse().seen();
    let put = requests
        .iter()
        .find(|r| r.operation == "PutObject")
        .expect("PutObject");
    assert_eq!(value(put, SSE), Some("aws:kms"), "{put:?}");
    assert_eq!(value(put, KMS_KEY_ID), Some("alias/synapse"), "{put:?}");
    for request in requests.iter().filter(|r| r.operation != "PutObject") {
        assert!(request.headers.is_empty(), "{request:?}");
    }
}

//! `tls-ca-chain` in every form the s3 interface allows (PEM or base64 of PEM, in a
//! JSON list or bare) against the TLS test server, for the SDK client and for the aws
//! CLI given the pipeline's CA bundle (`backup::plan::ca_bundle`).

use crate::support::s3_server;

use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use s3_server::TestS3Server;
use synapse_backup::testing::internals::ca_bundle;
use synapse_backup::testing::internals::{self as aws_cli, TransferSettings};
use synapse_backup::{S3Client, S3Parameters};

fn aws_binary() -> String {
    let out = Command::new("bash")
        .args(["-c", "command -v aws"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the aws CLI is not on PATH: run the tests through ./scripts/test (or `source scripts/tools.sh`), or `pip install awscli`"
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Uploads a small object with the aws CLI, trusting only the parameters' CA bundle.
fn aws_upload(params: &S3Parameters, key: &str) -> std::process::Output {
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("ca-bundle.pem");
    std::fs::write(&bundle, ca_bundle(params).expect("a CA bundle")).unwrap();
    let config = work.path().join("aws-config");
    std::fs::write(
        &config,
        aws_cli::config_file(params, &TransferSettings::new(1, 5)).unwrap(),
    )
    .unwrap();
    let mut child = Command::new(aws_binary())
        .args(["s3", "cp", "--only-show-errors", "--no-progress"])
        .args(["--endpoint-url", params.endpoint().unwrap()])
        .args(["-", &format!("s3://{}/{key}", params.bucket())])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_SHARED_CREDENTIALS_FILE", work.path().join("none"))
        .env("AWS_CA_BUNDLE", &bundle)
        .envs(aws_cli::credential_env(params))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"over tls").unwrap();
    child.wait_with_output().unwrap()
}

/// A CA that signed nothing here, with its own name (OpenSSL picks issuers by name).
fn other_ca() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "an unrelated CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem()
}

#[tokio::test]
async fn pem_and_base64_ca_chains_work_against_the_tls_server() {
    let server = TestS3Server::start_tls_self_signed().await;
    server.create_bucket("bucket-one");
    let ca = server.ca_pem.clone().unwrap();
    let other = other_ca();
    let b64 = |pem: &str| BASE64.encode(pem.as_bytes());
    let forms = [
        ("PEM list", serde_json::to_string(&[&ca]).unwrap()),
        ("base64 list", serde_json::to_string(&[b64(&ca)]).unwrap()),
        ("bare base64", b64(&ca)),
        (
            "base64 of a chain with another CA",
            serde_json::to_string(&[b64(&format!("{other}{ca}"))]).unwrap(),
        ),
        (
            "PEM and base64 mixed",
            serde_json::to_string(&[other.clone(), b64(&ca)]).unwrap(),
        ),
    ];
    for (i, (form, chain)) in forms.iter().enumerate() {
        let mut data = server.relation_data("bucket-one");
        data.insert("tls-ca-chain".into(), chain.clone());
        let params =
            S3Parameters::from_relation_data(&data).unwrap_or_else(|e| panic!("{form}: {e}"));
        let client = S3Client::new(&params).unwrap();
        assert!(client.can_use_bucket().await, "{form}: the SDK client");
        let out = aws_upload(&params, &format!("object-{i}"));
        assert!(
            out.status.success(),
            "{form}: the aws CLI: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            client
                .get_object(&format!("object-{i}"), 1 << 20)
                .await
                .unwrap(),
            b"over tls"
        );
    }
    // Trusting only another CA fails (so the CA above is what made it work).
    let mut data = server.relation_data("bucket-one");
    data.insert(
        "tls-ca-chain".into(),
        serde_json::to_string(&[b64(&other)]).unwrap(),
    );
    let params = S3Parameters::from_relation_data(&data).unwrap();
    assert!(!S3Client::new(&params).unwrap().can_use_bucket().await);
    assert!(!aws_upload(&params, "refused").status.success());
}

/// A streamed upload's parts carry their CRC32 in a header; over TLS their payload is
/// not signed as well (`UNSIGNED-PAYLOAD`: no SHA-256 of every byte, the aws CLI's own
/// rule for its uploads), over plain HTTP it is (the SHA-256 of the part). Either way
/// the object reads back byte for byte.
#[tokio::test]
async fn parts_are_signed_over_plain_http_and_not_over_tls() {
    let body: Vec<u8> = (0..(11_u32 << 20)).map(|i| (i % 251) as u8).collect();
    let tls = TestS3Server::start_tls_self_signed().await;
    let plain = TestS3Server::start().await;
    for (server, over_tls) in [(&tls, true), (&plain, false)] {
        server.create_bucket("bucket-one");
        let mut data = server.relation_data("bucket-one");
        if let Some(ca) = &server.ca_pem {
            data.insert("tls-ca-chain".into(), serde_json::to_string(&[ca]).unwrap());
        }
        let params = S3Parameters::from_relation_data(&data).unwrap();
        assert_eq!(params.endpoint().unwrap().starts_with("https://"), over_tls);
        let client = S3Client::new(&params).unwrap();
        server.sse().clear_seen();
        let mut reader = &body[..];
        client
            .put_object_stream(
                "streamed",
                &mut reader,
                "application/octet-stream",
                &Default::default(),
                5 << 20,
                2,
            )
            .await
            .unwrap();
        let parts: Vec<_> = server
            .sse()
            .seen()
            .into_iter()
            .filter(|r| r.operation == "UploadPart")
            .collect();
        assert_eq!(parts.len(), 3, "{parts:?}");
        for part in &parts {
            let value = |name: &str| {
                part.integrity
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            assert!(!value("x-amz-checksum-crc32").is_empty(), "{part:?}");
            let signed = value("x-amz-content-sha256");
            if over_tls {
                assert_eq!(signed, "UNSIGNED-PAYLOAD", "{part:?}");
            } else {
                assert!(
                    signed.len() == 64 && signed.bytes().all(|b| b.is_ascii_hexdigit()),
                    "{part:?}"
                );
            }
        }
        assert!(client.get_object("streamed", 12 << 20).await.unwrap() == body);
    }
}

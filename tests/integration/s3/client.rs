//! `S3Client` against real S3 servers on 127.0.0.1: s3s-fs in-process (which checks
//! SigV4 signatures), over HTTP and over TLS with a CA made in the test, and moto for
//! multipart uploads (s3s-fs does not implement ListMultipartUploads).

use crate::support::{faulty, s3_server};

use std::collections::HashMap;

use s3_server::{MotoServer, TestCertificates, TestS3Server};
use synapse_backup::{AddressingStyle, S3Client, S3Error, S3Parameters};

const BUCKET: &str = "synapse-backups";

/// Logs (including `can_use_bucket`'s reasons) go to the test output.
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("synapse_backup=debug"))
        .with_test_writer()
        .try_init();
}

fn client_for(data: &HashMap<String, String>) -> S3Client {
    init_logs();
    let params = S3Parameters::from_relation_data(data).expect("valid parameters");
    S3Client::new(&params).expect("client")
}

async fn server_with_bucket() -> (TestS3Server, HashMap<String, String>) {
    let server = TestS3Server::start().await;
    server.create_bucket(BUCKET);
    let data = server.relation_data(BUCKET);
    (server, data)
}

#[tokio::test]
async fn an_existing_bucket_is_usable() {
    let (_server, data) = server_with_bucket().await;
    assert!(client_for(&data).can_use_bucket().await);
}

#[tokio::test]
async fn a_missing_bucket_is_not_usable() {
    let (_server, mut data) = server_with_bucket().await;
    data.insert("bucket".into(), "no-such-bucket".into());
    assert!(!client_for(&data).can_use_bucket().await);
}

#[tokio::test]
async fn wrong_credentials_are_refused_by_the_signature_check() {
    let (server, data) = server_with_bucket().await;
    let mut wrong_secret = data.clone();
    wrong_secret.insert("secret-key".into(), format!("{}x", server.secret_key));
    assert!(!client_for(&wrong_secret).can_use_bucket().await);
    let mut wrong_access = data.clone();
    wrong_access.insert("access-key".into(), "AKNOBODY".into());
    assert!(!client_for(&wrong_access).can_use_bucket().await);

    // The error of a refused request names the operation but never the secret.
    let e = client_for(&wrong_secret)
        .get_object("x", 1 << 20)
        .await
        .unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(
        matches!(
            e,
            S3Error::Request {
                operation: "GetObject",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!text.contains(&server.secret_key), "{text}");
    assert!(
        text.contains("403") || text.contains("Signature") || text.contains("AccessDenied"),
        "{text}"
    );
}

#[tokio::test]
async fn creating_the_client_does_not_touch_the_network() {
    // Nothing listens on port 1; construction still succeeds.
    let data: HashMap<String, String> = [
        ("access-key", "AK"),
        ("secret-key", "SK"),
        ("bucket", "some-bucket"),
        ("endpoint", "http://127.0.0.1:1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let client = client_for(&data);
    assert_eq!(client.region(), "us-east-1");
    assert_eq!(client.bucket(), "some-bucket");
}

#[tokio::test]
async fn listing_follows_pagination_and_stays_under_the_prefix() {
    let (server, mut data) = server_with_bucket().await;
    data.insert("path".into(), "/synapse//backups/".into());
    // s3s-fs objects are files: write 1,050 keys directly (fast), plus decoys outside
    // the prefix, including one that shares its first characters.
    let dir = server.root.join(BUCKET).join("synapse/backups");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..1050 {
        std::fs::write(dir.join(format!("backup-{i:05}")), format!("object {i}")).unwrap();
    }
    std::fs::create_dir_all(server.root.join(BUCKET).join("synapse/backupsX")).unwrap();
    std::fs::write(
        server.root.join(BUCKET).join("synapse/backupsX/decoy"),
        "no",
    )
    .unwrap();
    std::fs::write(server.root.join(BUCKET).join("top-level"), "no").unwrap();

    let client = client_for(&data);
    assert_eq!(client.prefix(), "synapse/backups");
    let objects = client.list_objects().await.unwrap();
    // One ListObjectsV2 page holds at most 1,000 keys, so 1,050 means pages were followed.
    assert_eq!(objects.len(), 1050);
    let mut keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), 1050, "no key listed twice");
    assert!(
        keys.iter()
            .all(|k| k.starts_with("synapse/backups/backup-")),
        "{:?}",
        &keys[..3]
    );
    let first = objects
        .iter()
        .find(|o| o.key == "synapse/backups/backup-00007")
        .unwrap();
    assert_eq!(first.size, "object 7".len() as u64);
    let age = chrono::Utc::now() - first.last_modified;
    assert!(
        age.num_seconds().abs() < 600,
        "last_modified {}",
        first.last_modified
    );

    // An empty path lists the whole bucket.
    data.insert("path".into(), String::new());
    assert_eq!(client_for(&data).list_objects().await.unwrap().len(), 1052);
}

#[tokio::test]
async fn path_and_virtual_style_on_an_ip_endpoint() {
    let (_server, mut data) = server_with_bucket().await;
    // Path style: https://endpoint/bucket/key.
    let path_client = client_for(&data);
    assert!(path_client.can_use_bucket().await);
    path_client
        .put_object("k", b"v".to_vec(), "text/plain", &HashMap::new())
        .await
        .unwrap();

    // Virtual style asks for https://bucket.endpoint/key, which an IP address cannot
    // carry: the SDK's endpoint rules fall back to path style for IP hosts, so the same
    // requests work against http://127.0.0.1:port.
    data.insert("s3-uri-style".into(), "host".into());
    let params = S3Parameters::from_relation_data(&data).unwrap();
    assert_eq!(params.addressing_style(), AddressingStyle::Virtual);
    let virtual_client = S3Client::new(&params).unwrap();
    assert!(virtual_client.can_use_bucket().await);
    assert_eq!(virtual_client.get_object("k", 1 << 20).await.unwrap(), b"v");

    // With a host name instead, virtual style would send requests to
    // `synapse-backups.<host>`, which needs wildcard DNS and a server set up for virtual
    // hosts; not exercised here, since resolving that name could leave the loopback.
    // Path style with a host name works as with an IP address.
    let endpoint = data["endpoint"].replace("127.0.0.1", "localhost");
    data.insert("endpoint".into(), endpoint);
    data.insert("s3-uri-style".into(), "path".into());
    assert!(
        client_for(&data).can_use_bucket().await,
        "path style with a host name works"
    );
}

#[tokio::test]
async fn put_head_get_delete_and_not_found() {
    let (server, mut data) = server_with_bucket().await;
    data.insert("path".into(), "a/b".into());
    let client = client_for(&data);
    let key = client.object_key("backup-1.manifest.json");
    assert_eq!(key, "a/b/backup-1.manifest.json");
    let metadata = HashMap::from([("synapse-backup".to_string(), "1.0".to_string())]);
    let body = br#"{"format":1}"#.to_vec();
    client
        .put_object(&key, body.clone(), "application/json", &metadata)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(server.object_path(BUCKET, &key)).unwrap(),
        body,
        "stored at the key as given"
    );

    let head = client.head_object(&key).await.unwrap();
    assert_eq!(head.key, key);
    assert_eq!(head.size, body.len() as u64);
    assert_eq!(
        head.metadata.get("synapse-backup").map(String::as_str),
        Some("1.0"),
        "{:?}",
        head.metadata
    );
    assert!(
        (chrono::Utc::now() - head.last_modified)
            .num_seconds()
            .abs()
            < 600
    );
    assert_eq!(client.get_object(&key, 1 << 20).await.unwrap(), body);

    client.delete_object(&key).await.unwrap();
    assert!(
        matches!(client.head_object(&key).await, Err(S3Error::NotFound { key: k, .. }) if k == key)
    );
    assert!(matches!(
        client.get_object(&key, 1 << 20).await,
        Err(S3Error::NotFound { .. })
    ));
    client
        .delete_object(&key)
        .await
        .expect("deleting a missing key succeeds");

    data.insert("bucket".into(), "missing-bucket".into());
    let missing = client_for(&data);
    assert!(matches!(
        missing.head_object("x").await,
        Err(S3Error::NotFound { .. })
    ));
    assert!(matches!(
        missing.list_objects().await,
        Err(S3Error::NotFound { .. })
    ));
}

/// A file is uploaded as it is read (a manifest of many files is never held whole):
/// the object is the file byte for byte, with its metadata (s3s-fs checks the
/// Content-MD5 it is sent with); a file that cannot be read is an error naming it.
#[tokio::test]
async fn a_file_is_uploaded_as_it_is_read() {
    use synapse_backup::ObjectStore;
    let (server, data) = server_with_bucket().await;
    let client = client_for(&data);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifest.json");
    // Several of the SDK's read buffers, not a multiple of any.
    let body: Vec<u8> = (0..3_000_017_u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &body).unwrap();
    let metadata = HashMap::from([("synapse-backup".to_string(), "1.0".to_string())]);
    let store: &dyn ObjectStore = &client;
    store
        .put_object_file("m.json", &path, "application/json", &metadata)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(server.object_path(BUCKET, "m.json")).unwrap(),
        body
    );
    let head = client.head_object("m.json").await.unwrap();
    assert_eq!(head.size, body.len() as u64);
    assert_eq!(
        head.metadata.get("synapse-backup").map(String::as_str),
        Some("1.0")
    );
    let missing = dir.path().join("gone.json");
    let err = store
        .put_object_file("n.json", &missing, "application/json", &metadata)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, S3Error::UploadGivenUp { key, .. } if key == "n.json"),
        "{err:?}"
    );
    assert!(err.to_string().contains("gone.json"), "{err}");
    assert!(matches!(
        client.head_object("n.json").await,
        Err(S3Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn storage_class_is_sent_with_uploads() {
    let (_server, mut data) = server_with_bucket().await;
    data.insert("storage-class".into(), "REDUCED_REDUNDANCY".into());
    client_for(&data)
        .put_object("a", b"1".to_vec(), "text/plain", &HashMap::new())
        .await
        .unwrap();
    // s3s-fs knows only STANDARD and REDUCED_REDUNDANCY: refusing GLACIER proves the
    // class reaches the server.
    data.insert("storage-class".into(), "GLACIER".into());
    let e = client_for(&data)
        .put_object("b", b"1".to_vec(), "text/plain", &HashMap::new())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("InvalidStorageClass"), "{e}");
}

#[tokio::test]
async fn create_bucket_makes_a_usable_bucket() {
    let server = TestS3Server::start().await;
    let client = client_for(&server.relation_data("made-by-the-client"));
    assert!(!client.can_use_bucket().await);
    client.create_bucket().await.unwrap();
    assert!(client.can_use_bucket().await);
    assert!(server.root.join("made-by-the-client").is_dir());
}

#[tokio::test]
async fn a_stopped_server_is_not_usable_and_a_restart_keeps_data_and_keys() {
    let (mut server, data) = server_with_bucket().await;
    let client = client_for(&data);
    client
        .put_object("kept", b"data".to_vec(), "text/plain", &HashMap::new())
        .await
        .unwrap();
    let (root, port) = (server.root.clone(), server.port());
    server.stop().await;
    assert!(!client.can_use_bucket().await);
    let restarted = TestS3Server::start_at(&root, Some(port)).await;
    drop(server);
    assert!(
        root.is_dir(),
        "the data outlives the stopped server while a restarted one uses it"
    );
    assert_eq!(restarted.endpoint, data["endpoint"]);
    assert!(client.can_use_bucket().await);
    assert_eq!(client.get_object("kept", 1 << 20).await.unwrap(), b"data");
}

#[tokio::test]
async fn tls_needs_the_ca_from_tls_ca_chain() {
    let server = TestS3Server::start_tls_self_signed().await;
    server.create_bucket(BUCKET);
    let data = server.relation_data(BUCKET);
    assert!(data["endpoint"].starts_with("https://127.0.0.1:"));
    assert!(data.contains_key("tls-ca-chain"));

    let client = client_for(&data);
    assert!(
        client.can_use_bucket().await,
        "trusted through tls-ca-chain"
    );
    client
        .put_object(
            "over-tls",
            b"secret bytes".to_vec(),
            "application/octet-stream",
            &HashMap::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        client.get_object("over-tls", 1 << 20).await.unwrap(),
        b"secret bytes"
    );

    let mut without = data.clone();
    without.remove("tls-ca-chain");
    assert!(
        !client_for(&without).can_use_bucket().await,
        "the system roots do not trust the test CA"
    );

    let mut other_ca = data.clone();
    other_ca.insert(
        "tls-ca-chain".into(),
        serde_json::to_string(&[TestCertificates::generate().ca_pem]).unwrap(),
    );
    assert!(
        !client_for(&other_ca).can_use_bucket().await,
        "another CA does not help"
    );

    // The CA may come with other certificates in the chain, in one entry or several.
    let mut chain = data.clone();
    let extra = TestCertificates::generate().ca_pem;
    chain.insert(
        "tls-ca-chain".into(),
        serde_json::to_string(&[extra, server.ca_pem.clone().unwrap()]).unwrap(),
    );
    assert!(client_for(&chain).can_use_bucket().await);
}

#[tokio::test]
async fn s3s_fs_cannot_list_multipart_uploads() {
    let (_server, data) = server_with_bucket().await;
    let client = client_for(&data);
    match client.abort_multipart_uploads("synapse/backup-1").await {
        Err(S3Error::NotImplemented { operation }) => assert_eq!(operation, "ListMultipartUploads"),
        other => panic!("expected NotImplemented, got {other:?}"),
    }
}

/// A plain SDK client for what `S3Client` deliberately does not offer (starting a
/// multipart upload).
fn sdk_client(data: &HashMap<String, String>) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            &data["access-key"],
            &data["secret-key"],
            None,
            None,
            "test",
        ))
        .endpoint_url(&data["endpoint"])
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

#[tokio::test]
async fn multipart_uploads_under_a_key_are_listed_and_aborted_on_moto() {
    let moto = MotoServer::start();
    moto.create_bucket(BUCKET);
    let data = moto.relation_data(BUCKET);
    let client = client_for(&data);
    assert!(client.can_use_bucket().await);
    let sdk = sdk_client(&data);
    let key = client.object_key("backup-20260101000000000000");
    let mut started = Vec::new();
    for k in [key.as_str(), key.as_str(), "other/backup-2"] {
        let upload = sdk
            .create_multipart_upload()
            .bucket(BUCKET)
            .key(k)
            .send()
            .await
            .unwrap();
        started.push(upload.upload_id().unwrap().to_string());
    }

    let listed = client.list_multipart_uploads(&key).await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed
            .iter()
            .all(|u| u.key == key && started.contains(&u.upload_id))
    );
    assert!(listed.iter().all(|u| u.initiated.is_some()));
    assert_eq!(client.list_multipart_uploads("").await.unwrap().len(), 3);

    assert_eq!(client.abort_multipart_uploads(&key).await.unwrap(), 2);
    assert!(
        client
            .list_multipart_uploads(&key)
            .await
            .unwrap()
            .is_empty()
    );
    let rest = client.list_multipart_uploads("").await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].key, "other/backup-2");
    assert_eq!(client.abort_multipart_uploads(&key).await.unwrap(), 0);
}

// A hostile or broken endpoint: every request ends, nothing is read without bound.

use faulty::endpoint::{Behaviour, HostileEndpoint};
use std::time::Duration;
use synapse_backup::BackupLock;

/// What the old code did forever (hang, loop, read 64 GiB) fails here within a minute.
const NO_HANG: Duration = Duration::from_secs(60);

fn hostile_client(endpoint: &HostileEndpoint, timeout: Duration) -> S3Client {
    init_logs();
    let params = S3Parameters::from_relation_data(&endpoint.relation_data(BUCKET))
        .expect("valid parameters")
        .with_request_timeout(timeout);
    S3Client::new(&params).expect("client")
}

#[tokio::test]
async fn an_endpoint_that_never_answers_fails_within_the_request_deadline() {
    let endpoint = HostileEndpoint::start(Behaviour::NeverAnswers).await;
    let client = hostile_client(&endpoint, Duration::from_secs(2));
    let listed = tokio::time::timeout(NO_HANG, client.list_objects())
        .await
        .expect("the listing ends (before: it waited forever)");
    let e = listed.unwrap_err();
    assert!(
        matches!(
            e,
            S3Error::TimedOut {
                operation: "ListObjectsV2",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("no answer within 2 s"), "{e}");
    let head = tokio::time::timeout(NO_HANG, client.head_object("k"))
        .await
        .expect("head ends");
    assert!(matches!(head, Err(S3Error::TimedOut { .. })), "{head:?}");
    assert!(
        !tokio::time::timeout(NO_HANG, client.can_use_bucket())
            .await
            .expect("check ends")
    );
}

#[tokio::test]
async fn the_request_deadline_defaults_to_two_minutes_and_is_at_least_a_second() {
    let (_server, data) = server_with_bucket().await;
    let params = S3Parameters::from_relation_data(&data).unwrap();
    assert_eq!(params.request_timeout(), Duration::from_secs(120));
    let short = params.with_request_timeout(Duration::ZERO);
    assert_eq!(short.request_timeout(), Duration::from_secs(1));
    assert_eq!(
        S3Client::new(&short).unwrap().request_timeout(),
        Duration::from_secs(1)
    );
}

#[tokio::test]
async fn continuation_tokens_that_cycle_end_the_listing_with_an_error() {
    let endpoint =
        HostileEndpoint::start(Behaviour::CyclingTokens(vec!["A".into(), "B".into()])).await;
    let client = hostile_client(&endpoint, Duration::from_secs(10));
    let listed = tokio::time::timeout(NO_HANG, client.list_objects())
        .await
        .expect("the listing ends (before: A, B, A, … forever)");
    let e = listed.unwrap_err();
    assert!(
        matches!(
            &e,
            S3Error::Listing {
                operation: "ListObjectsV2",
                ..
            }
        ),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(text.contains("\"A\"") && text.contains("cycle"), "{text}");
    assert!(
        endpoint.requests.load(std::sync::atomic::Ordering::SeqCst) <= 3,
        "A, B, then A again is the end"
    );
}

#[tokio::test]
async fn a_listing_with_new_tokens_forever_stops_at_the_page_bound() {
    let endpoint = HostileEndpoint::start(Behaviour::EndlessTokens).await;
    let client = hostile_client(&endpoint, Duration::from_secs(10));
    let listed = tokio::time::timeout(Duration::from_secs(300), client.list_objects())
        .await
        .expect("the listing ends");
    let e = listed.unwrap_err();
    assert!(
        matches!(&e, S3Error::Listing { .. }) && e.to_string().contains("10000 pages"),
        "{e}"
    );
}

#[tokio::test]
async fn a_huge_lock_object_is_refused_without_reading_it_whole() {
    for behaviour in [
        Behaviour::HugeObject(64 << 30),
        Behaviour::EndlessChunkedObject,
    ] {
        let endpoint = HostileEndpoint::start(behaviour.clone()).await;
        let client = hostile_client(&endpoint, Duration::from_secs(10));
        let key = BackupLock::key(&client);
        let read = tokio::time::timeout(NO_HANG, client.get_object_versioned(&key, 64 * 1024))
            .await
            .unwrap_or_else(|_| panic!("{behaviour:?}: the read ends (before: it read 64 GiB)"));
        match read {
            Err(S3Error::TooLarge { limit, key, .. }) => {
                assert_eq!(limit, 64 * 1024);
                assert_eq!(key, ".synapse-backup.lock");
            }
            other => panic!("{behaviour:?}: {other:?}"),
        }
        // The lock reads it as a lock of unknown holder (it expires and is taken over
        // like any unreadable lock object), never as a reason to fail for ever.
        let info = tokio::time::timeout(NO_HANG, BackupLock::inspect(&client))
            .await
            .expect("ends")
            .unwrap()
            .expect("a lock");
        assert_eq!(info.owner, None, "{behaviour:?}");
        assert_eq!(info.etag, "\"e\"");
        assert!(info.holder().contains("unknown"));
        let manifest = tokio::time::timeout(NO_HANG, client.get_object("m.json", 1 << 20))
            .await
            .expect("ends");
        assert!(
            matches!(manifest, Err(S3Error::TooLarge { limit: 1048576, .. })),
            "{manifest:?}"
        );
    }
}

/// An `S3Error::Request` carries what callers match on: the server's HTTP status and
/// error code when it answered, the transport failure when nothing answered, and the
/// SDK's error as its source (never just text).
#[tokio::test]
async fn a_failed_request_carries_its_status_code_transport_and_source() {
    use std::error::Error as _;
    use synapse_backup::Transport;

    let (server, data) = server_with_bucket().await;
    let mut wrong_secret = data.clone();
    wrong_secret.insert("secret-key".into(), format!("{}x", server.secret_key));
    let e = client_for(&wrong_secret)
        .get_object("x", 1 << 20)
        .await
        .unwrap_err();
    let S3Error::Request {
        status,
        code,
        transport,
        ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(*status, Some(403), "{e:?}");
    assert_eq!(code.as_deref(), Some("SignatureDoesNotMatch"), "{e:?}");
    assert_eq!(*transport, None);
    assert!(e.source().is_some(), "the SDK's error is the source");

    // Nothing listens on port 1: no status, no code, a refused connection, and an I/O
    // error down the source chain.
    let mut closed = data.clone();
    closed.insert("endpoint".into(), "http://127.0.0.1:1".into());
    let e = client_for(&closed).head_object("x").await.unwrap_err();
    let S3Error::Request {
        status,
        code,
        transport,
        ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!((*status, code.as_deref()), (None, None), "{e:?}");
    assert_eq!(*transport, Some(Transport::ConnectionRefused), "{e:?}");
    let mut cause = e.source();
    let mut io = false;
    while let Some(c) = cause {
        io |= c.downcast_ref::<std::io::Error>().is_some();
        cause = c.source();
    }
    assert!(io, "an io::Error in the chain: {e:?}");

    // TLS: an untrusted certificate, and https to a plain-HTTP port.
    let tls = TestS3Server::start_tls_self_signed().await;
    tls.create_bucket(BUCKET);
    let mut untrusted = tls.relation_data(BUCKET);
    untrusted.remove("tls-ca-chain");
    let e = client_for(&untrusted).head_object("x").await.unwrap_err();
    assert!(
        matches!(
            &e,
            S3Error::Request {
                transport: Some(Transport::UntrustedCertificate),
                ..
            }
        ),
        "{e:?}"
    );
    let mut plain = data.clone();
    plain.insert(
        "endpoint".into(),
        data["endpoint"].replacen("http://", "https://", 1),
    );
    let e = client_for(&plain).head_object("x").await.unwrap_err();
    assert!(
        matches!(
            &e,
            S3Error::Request {
                transport: Some(Transport::NotTls),
                ..
            }
        ),
        "{e:?}"
    );
}

/// A `MemoryStore`'s missing object is the structured `NotFound`, naming the key.
#[tokio::test]
async fn a_memory_store_miss_is_not_found_with_its_key() {
    use synapse_backup::ObjectStore;
    let store = synapse_backup::testing::MemoryStore::new("p");
    let e = store.head_object("p/absent").await.unwrap_err();
    assert!(
        matches!(&e, S3Error::NotFound { key, .. } if key == "p/absent"),
        "{e:?}"
    );
}

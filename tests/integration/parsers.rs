//! Property tests: the parsers of outside data never panic. Relation data (any map of
//! strings, through `from_relation_data` and `from_relation_data_with_secret`), a
//! manifest or inner manifest (any bytes, any JSON shaped like one), the `find` file
//! listing and tar's archive listing (any bytes, lines shaped like theirs) give `Ok`
//! or a `ConfigError`, never a panic. Accepted relation data must also build a client
//! and render without panicking.
//!
//! Values read from S3 too: any lock object (bytes, or JSON shaped like a lock with
//! any time to live and times) read, judged and competed for at any server time;
//! any continuation tokens a listing is sent (cycles, repeats, endless new ones), any
//! keys and times a listing holds: `Ok` or an error, never a panic, a hang or
//! unbounded memory.
//!
//! Fixed seed and case count, so CI runs the same cases every time; no failure
//! persistence files are written.

use std::collections::HashMap;

use proptest::collection::{hash_map, vec};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::Value;
use synapse_backup::testing::internals::parse_members;
use synapse_backup::testing::internals::{self as aws_cli, Transfer, TransferSettings};
use synapse_backup::{ConfigError, S3Client, S3Parameters};
use synapse_backup::{InnerManifest, Manifest};

const SEED: [u8; 32] = *b"synapse-backup proptest seed 014";
const CASES: u32 = 384;

fn runner() -> TestRunner {
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &SEED))
}

const FIELDS: [&str; 15] = [
    "access-key",
    "secret-key",
    "session-token",
    "secret-extra",
    "bucket",
    "region",
    "endpoint",
    "path",
    "s3-uri-style",
    "storage-class",
    "tls-ca-chain",
    "s3-api-version",
    "attributes",
    "lib-version",
    "delete-older-than-days",
];

/// Values that reach every branch: plausible ones, near misses, JSON and base64
/// fragments, control characters, and anything at all.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9.\\-]{0,70}",
        "[ -~]{0,40}",
        "[a-zA-Z0-9 \\n\\r\\t\\x00\\x7f=;,:/\\[\\]\"{}-]{0,40}",
        prop::sample::select(vec![
            "4", "2", "path", "host", "us-east-1", "http://127.0.0.1:9000", "https://[::1]/",
            "1.10", "30", "0", "-1", "[]", "{}", "[1]", "[\"\"]", "null", "secret://x/y",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
            "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t", "AAAA", "====",
            "X-Amz-Server-Side-Encryption=aws:kms",
            "X-Amz-Server-Side-Encryption-Customer-Key=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
            "X-Amz-Server-Side-Encryption-Customer-Algorithm=AES256",
            "X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id=k;X-Amz-Server-Side-Encryption=AES256",
            "[\"a=b\", \"X-Amz-Server-Side-Encryption-Customer-Key-MD5=AAAA\"]",
        ])
        .prop_map(str::to_string),
        vec(any::<String>(), 0..4).prop_map(|l| serde_json::to_string(&l).unwrap()),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(FIELDS.to_vec()).prop_map(str::to_string),
        1 => any::<String>(),
    ]
}

/// Valid v0 relation data, so mutations of it reach the deeper checks.
fn valid() -> HashMap<String, String> {
    [
        ("access-key", "AKIDEXAMPLE"),
        ("secret-key", "secret"),
        ("bucket", "synapse-backups"),
        ("region", "eu-west-1"),
        ("endpoint", "http://127.0.0.1:9000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// What a caller does with accepted parameters: none of it may panic, and the aws CLI
/// config file they give always has exactly its seven lines (nothing injected).
fn use_parameters(runtime: &tokio::runtime::Runtime, params: &S3Parameters) {
    let _ = format!("{params:?} {params}");
    let config = aws_cli::config_file(params, &TransferSettings::new(4, 8))
        .expect("accepted parameters give a config file");
    assert_eq!(config.lines().count(), 7, "{config}");
    for transfer in [Transfer::Upload, Transfer::Download] {
        for arg in aws_cli::sse_args(params, transfer, "/work/sse-c.key") {
            assert!(!arg.chars().any(char::is_control), "{arg:?}");
        }
    }
    for (name, value) in aws_cli::credential_env(params) {
        assert!(!value.contains('\0'), "{name} holds a NUL");
    }
    let _guard = runtime.enter();
    let client = S3Client::new(params).expect("accepted parameters build a client");
    let _ = format!("{client:?}");
}

fn check(
    runtime: &tokio::runtime::Runtime,
    result: Result<S3Parameters, ConfigError>,
) -> Result<(), TestCaseError> {
    match result {
        Ok(params) => use_parameters(runtime, &params),
        Err(ConfigError::Invalid { problems }) => {
            prop_assert!(!problems.is_empty());
            for problem in problems {
                prop_assert!(!problem.field.is_empty() && !problem.message.is_empty());
            }
        }
        Err(e) => prop_assert!(false, "unexpected error kind {e:?}"),
    }
    Ok(())
}

#[test]
fn arbitrary_relation_data_gives_ok_or_a_config_error() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runner()
        .run(&hash_map(key(), value(), 0..16), |data| {
            check(&runtime, S3Parameters::from_relation_data(&data))
        })
        .unwrap();
}

#[test]
fn mutated_valid_relation_data_and_secrets_give_ok_or_a_config_error() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let accepted = std::cell::Cell::new(0u32);
    let strategy = (
        hash_map(key(), value(), 0..6),
        hash_map(key(), value(), 0..4),
        any::<bool>(),
    );
    runner()
        .run(&strategy, |(changes, secret, with_secret)| {
            let mut data = valid();
            data.extend(changes);
            let result = if with_secret {
                S3Parameters::from_relation_data_with_secret(&data, &secret)
            } else {
                S3Parameters::from_relation_data(&data)
            };
            if result.is_ok() {
                accepted.set(accepted.get() + 1);
            }
            check(&runtime, result)
        })
        .unwrap();
    // Not everything was refused: the accepted side was exercised too.
    assert!(accepted.get() > 0, "no case was accepted");
}

/// JSON shaped like a manifest: its keys with values of any JSON type.
fn manifest_like() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        Just(Value::from("2026-11-30T10:00:00Z")),
        Just(Value::from("backup-20261130100000000000")),
    ];
    let json = leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            hash_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    let keys = prop::sample::select(vec![
        "format",
        "backup_id",
        "created",
        "created_by",
        "server_name",
        "layout",
        "config_dir",
        "data_dir",
        "media_store_path",
        "members",
        "database",
        "warnings",
        "files",
        "path",
        "kind",
        "size",
        "plaintext_bytes",
        "ciphertext_bytes",
        "ciphertext_sha256",
        "cipher",
        "compression",
        "nonce",
    ]);
    hash_map(keys, json, 0..22).prop_map(|m| {
        serde_json::to_vec(&Value::Object(
            m.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        ))
        .unwrap()
    })
}

#[test]
fn arbitrary_manifests_give_ok_or_a_config_error() {
    let strategy = prop_oneof![vec(any::<u8>(), 0..256), manifest_like()];
    runner()
        .run(&strategy, |bytes| {
            for result in [
                Manifest::from_json(&bytes).map(|_| ()),
                InnerManifest::from_json(&bytes).map(|_| ()),
            ] {
                if let Err(e) = result {
                    prop_assert!(matches!(e, ConfigError::Parse { .. }), "{e:?}");
                }
            }
            Ok(())
        })
        .unwrap();
}

/// A manifest as 0.2 writes it.
const GOOD_MANIFEST: &str = r#"{"files":[{"path":"data/a.key","kind":"f","size":3}],"format":1,"backup_id":"backup-20261126071900123456","created":"2026-11-26T07:19:00Z","created_by":"synapse-backup/0.2.0","server_name":null,"layout":{"config_dir":"/data","data_dir":"/data","media_store_path":"/data/media_store","members":[]},"database":"sqlite","warnings":[],"plaintext_bytes":3,"ciphertext_bytes":9,"ciphertext_sha256":"ab","cipher":"AES256","compression":"none"}"#;

#[test]
fn unknown_typed_values_are_errors_naming_their_field() {
    let valid = |field: &str, text: &str| match field {
        "backup_id" => text.parse::<synapse_backup::BackupId>().is_ok(),
        "database" => ["sqlite", "postgresql", "none"].contains(&text),
        "cipher" => text == "AES256",
        "compression" => {
            text == "none"
                || text
                    .strip_prefix("zlib-")
                    .is_some_and(|l| l.len() == 1 && ("1"..="9").contains(&l))
        }
        _ => ["f", "d", "l", "p", "s", "b", "c"].contains(&text),
    };
    let strategy = (
        prop::sample::select(vec![
            "backup_id",
            "database",
            "cipher",
            "compression",
            "files[0].kind",
        ]),
        prop_oneof![
            any::<String>(),
            "backup-[0-9]{18,22}",
            "zlib-[0-9]{1,2}",
            "[a-zA-Z0-9]{1,2}",
            Just("SQLITE".to_string()),
            Just("aes256".to_string()),
        ],
    );
    assert!(Manifest::from_json(GOOD_MANIFEST.as_bytes()).is_ok());
    runner()
        .run(&strategy, |(field, text)| {
            let mut json: Value = serde_json::from_str(GOOD_MANIFEST).unwrap();
            let slot = match field {
                "files[0].kind" => &mut json["files"][0]["kind"],
                other => &mut json[other],
            };
            *slot = Value::from(text.clone());
            let bytes = serde_json::to_vec(&json).unwrap();
            match Manifest::from_json(&bytes) {
                Ok(m) => prop_assert!(valid(field, &text), "{field} {text:?} accepted: {m:?}"),
                Err(ConfigError::Parse { what, message }) => {
                    prop_assert!(!valid(field, &text), "{field} {text:?}: {message}");
                    prop_assert_eq!(what, "manifest");
                    prop_assert!(
                        message.starts_with(&format!("{field}: ")),
                        "{field} {text:?}: {message}"
                    );
                }
                Err(e) => prop_assert!(false, "{e:?}"),
            }
            Ok(())
        })
        .unwrap();
}

/// Lines shaped like `find -printf '%y %s %p\0'` records and `tar -tvv` lines, with
/// their fields drawn from plausible and implausible pieces.
fn listing_like() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        prop::sample::select(vec![
            "f",
            "d",
            "l",
            "-rw-r--r--",
            "drwxr-xr-x",
            "lrwxrwxrwx",
            "crw-rw-rw-",
            "-rwsr-sr-t",
            "0/0",
            "1000/1000",
            "synapse/synapse",
            "12",
            "0",
            "-1",
            "4,5",
            "1,",
            "18446744073709551616",
            "2026-11-30",
            "10:00",
            "10:00:59",
            "Creating",
            "directory:",
            "->",
            "link to",
            "./",
            "data/homeserver.db",
            "a\\nb",
            "\\303\\251",
            "\\",
            "\\777",
        ])
        .prop_map(str::to_string),
        any::<String>(),
    ];
    let line = vec(piece, 0..9).prop_map(|p| p.join(" "));
    (vec(line, 0..6), any::<bool>())
        .prop_map(|(lines, nul)| lines.join(if nul { "\0" } else { "\n" }).into_bytes())
}

#[test]
fn arbitrary_listings_give_ok_or_a_config_error() {
    let strategy = prop_oneof![vec(any::<u8>(), 0..256), listing_like()];
    runner()
        .run(&strategy, |bytes| {
            if let Err(e) = parse_members(&bytes) {
                prop_assert!(matches!(e, ConfigError::Parse { .. }), "{e:?}");
            }
            Ok(())
        })
        .unwrap();
}

// Values read from S3.

use std::time::Duration;

use synapse_backup::testing::MemoryStore;
use synapse_backup::testing::internals::{
    MAX_LIST_OBJECTS, MAX_LIST_PAGES, check_next_page, check_objects,
};
use synapse_backup::{BackupError, BackupLock, LockOptions, LockOwner, ObjectStore};

/// Lock objects: any bytes, or JSON shaped like a lock with any values.
fn lock_like() -> impl Strategy<Value = Vec<u8>> {
    let json = (
        any::<u64>(),
        prop_oneof![
            Just("2026-01-01T00:00:00Z".to_string()),
            Just("+262142-12-31T23:59:59Z".to_string()),
            Just("-262143-01-01T00:00:00Z".to_string()),
            any::<String>(),
        ],
        any::<bool>(),
        any::<u64>(),
        any::<String>(),
        any::<u32>(),
    )
        .prop_map(|(ttl, since, released, refreshes, unit, pid)| {
            serde_json::to_vec(&serde_json::json!({
                "format": 1,
                "owner": {"unit": unit, "host": "h", "pid": pid, "operation": "create"},
                "since": since,
                "ttl_seconds": ttl,
                "token": "t",
                "refreshes": refreshes,
                "released": released,
            }))
            .unwrap()
        });
    prop_oneof![json, vec(any::<u8>(), 0..300)]
}

/// Server times from the earliest to the latest chrono can hold.
fn server_time() -> impl Strategy<Value = chrono::DateTime<chrono::Utc>> {
    prop_oneof![
        Just(chrono::DateTime::<chrono::Utc>::MIN_UTC),
        Just(chrono::DateTime::<chrono::Utc>::MAX_UTC),
        (0i64..4_102_444_800).prop_map(|s| chrono::DateTime::from_timestamp(s, 0).unwrap()),
    ]
}

#[test]
fn any_lock_object_at_any_server_time_gives_ok_or_an_error() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let strategy = (
        lock_like(),
        server_time(),
        server_time(),
        any::<u64>(),
        any::<u64>(),
    );
    runner()
        .run(&strategy, |(body, written, now, fallback, wait)| {
            runtime.block_on(async {
                let store = MemoryStore::new("p");
                store.set_now(written);
                store
                    .put_object(
                        &BackupLock::key(&store),
                        body,
                        "application/json",
                        &HashMap::new(),
                    )
                    .await
                    .unwrap();
                store.set_now(now);
                let info = BackupLock::inspect(&store).await.unwrap().unwrap();
                let _ = (info.holder(), info.age(now), info.ttl_or(Duration::MAX));
                let _ = info.is_expired(now, Duration::from_secs(fallback));
                let _ = info.is_live(now, Duration::MAX);
                let mut options = LockOptions::new().ttl(Duration::from_secs(fallback));
                // Public fields, set past their clamps: still no overflow. (A short
                // real wait: the held case then fails at once or after 50 ms polls.)
                options.wait = Duration::from_millis(wait % 120);
                let taken = tokio::time::timeout(
                    Duration::from_secs(30),
                    BackupLock::acquire(&store, &LockOwner::new("u", "h", 1, "prune"), &options),
                )
                .await
                .expect("acquire ends");
                match taken {
                    Ok(guard) => guard.release().await.unwrap(),
                    Err(BackupError::LockHeld { ttl_seconds, .. }) => {
                        assert!(ttl_seconds <= LockOptions::MAX_TTL.as_secs());
                    }
                    Err(other) => panic!("{other:?}"),
                }
            });
            Ok(())
        })
        .unwrap();
}

/// Continuation tokens: short alphabets so that repeats (cycles) are common, and long
/// random runs of new ones.
fn tokens() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        vec("[ab]{0,2}", 0..40),
        vec("[a-c]{1,3}", 0..40),
        vec(any::<String>(), 0..40),
    ]
}

#[test]
fn any_continuation_tokens_end_the_listing_at_a_repeat_or_the_bound() {
    runner()
        .run(&tokens(), |sequence| {
            let mut seen = std::collections::HashSet::new();
            let mut bytes = 0;
            let mut followed = Vec::new();
            for token in &sequence {
                match check_next_page(&mut seen, &mut bytes, token) {
                    Ok(()) => followed.push(token.clone()),
                    Err(reason) => {
                        prop_assert!(!reason.is_empty());
                        prop_assert!(
                            token.is_empty() || followed.contains(token),
                            "stopped at a new token: {reason}"
                        );
                        break;
                    }
                }
            }
            let distinct: std::collections::HashSet<_> = followed.iter().collect();
            prop_assert_eq!(distinct.len(), followed.len(), "no token followed twice");
            Ok(())
        })
        .unwrap();
    // Endless new tokens stop at the page bound, with memory bounded by it.
    let mut seen = std::collections::HashSet::new();
    let mut bytes = 0;
    let followed = (0..)
        .take_while(|n| check_next_page(&mut seen, &mut bytes, &format!("t{n}")).is_ok())
        .count();
    assert!(followed < MAX_LIST_PAGES, "{followed}");
    assert!(check_objects(MAX_LIST_OBJECTS - 1, 1).is_ok());
    assert!(check_objects(MAX_LIST_OBJECTS, 1).is_err());
    assert!(check_objects(usize::MAX, usize::MAX).is_err());
}

#[test]
fn any_listing_gives_backups_or_an_error() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let key = prop_oneof![
        "backup-[0-9]{20}(\\.manifest\\.json)?",
        "backup-[0-9]{0,30}[a-z.]{0,12}",
        ".synapse-backup[a-z.\\-]{0,12}",
        any::<String>(),
    ];
    let strategy = vec((key, vec(any::<u8>(), 0..64), server_time()), 0..12);
    runner()
        .run(&strategy, |objects| {
            runtime.block_on(async {
                let store = MemoryStore::new("synapse/backups");
                for (name, body, time) in objects {
                    store.set_now(time);
                    let key = store.object_key(&name);
                    store
                        .put_object(&key, body, "application/octet-stream", &HashMap::new())
                        .await
                        .unwrap();
                }
                if let Ok(backups) = synapse_backup::list_backups(&store).await {
                    for b in backups {
                        let _ = synapse_backup::backup_status(&store, &b.id).await;
                        let _ = synapse_backup::read_manifest(&store, &b.id).await;
                    }
                }
            });
            Ok(())
        })
        .unwrap();
}

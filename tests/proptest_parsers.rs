//! Property tests: the parsers of outside data never panic. Relation data (any map of
//! strings, through `from_relation_data` and `from_relation_data_with_secret`), a
//! manifest or inner manifest (any bytes, any JSON shaped like one), the `find` file
//! listing and tar's archive listing (any bytes, lines shaped like theirs) give `Ok`
//! or a `ConfigError`, never a panic. Accepted relation data must also build a client
//! and render without panicking.
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

//! `S3Parameters`: every validation rule, accepted and rejected, through serde (JSON
//! and YAML documents) and through `from_relation_data`; every problem reported with
//! its field; secrets never shown.

use std::collections::HashMap;

use serde_json::{Value, json};
use synapse_backup::{AddressingStyle, ConfigError, S3Parameters};

const ACCESS: &str = "AKIAVERYSECRETACCESS";
const SECRET: &str = "wJalrXUtnFEMI-very-secret-key";

fn ca_pem() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem()
}

fn base() -> HashMap<String, String> {
    [
        ("access-key", ACCESS),
        ("secret-key", SECRET),
        ("bucket", "synapse-backups"),
        ("region", "eu-west-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn with(extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut m = base();
    for (k, v) in extra {
        m.insert(k.to_string(), v.to_string());
    }
    m
}

fn base_json() -> Value {
    json!({"access-key": ACCESS, "secret-key": SECRET, "bucket": "synapse-backups", "region": "eu-west-1"})
}

fn json_with(extra: Value) -> Value {
    let mut v = base_json();
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

/// Through relation data: the problems as `field: message` strings.
fn relation_problems(data: &HashMap<String, String>) -> Vec<(String, String)> {
    match S3Parameters::from_relation_data(data) {
        Ok(p) => panic!("expected a validation error, got {p:?}"),
        Err(ConfigError::Invalid { problems }) => {
            problems.into_iter().map(|p| (p.field, p.message)).collect()
        }
        Err(e) => panic!("expected ConfigError::Invalid, got {e:?}"),
    }
}

fn relation_rejects(extra: &[(&str, &str)], field: &str) -> String {
    let problems = relation_problems(&with(extra));
    let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(fields, vec![field], "{extra:?}: {problems:?}");
    problems[0].1.clone()
}

/// Through serde: the error text (it lists every problem with its field).
fn serde_rejects(doc: Value, field: &str) -> String {
    let text = serde_json::to_string(&doc).unwrap();
    let e = serde_json::from_str::<S3Parameters>(&text)
        .expect_err(&text)
        .to_string();
    assert!(
        e.contains(&format!("{field}: ")),
        "{field} not named in {e}"
    );
    assert_secret_free(&e);
    e
}

fn serde_accepts(doc: Value) -> S3Parameters {
    let text = serde_json::to_string(&doc).unwrap();
    serde_json::from_str::<S3Parameters>(&text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn assert_secret_free(text: &str) {
    assert!(!text.contains(ACCESS), "access key leaked: {text}");
    assert!(!text.contains(SECRET), "secret key leaked: {text}");
}

#[test]
fn minimal_parameters_and_defaults() {
    let p = S3Parameters::from_relation_data(&base()).unwrap();
    assert_eq!(p.access_key(), ACCESS);
    assert_eq!(p.secret_key(), SECRET);
    assert_eq!(p.bucket(), "synapse-backups");
    assert_eq!(p.region(), Some("eu-west-1"));
    assert_eq!(p.endpoint(), None);
    assert_eq!(p.path(), "");
    assert_eq!(p.addressing_style(), AddressingStyle::Virtual);
    assert_eq!(p.storage_class(), None);
    assert!(p.tls_ca_chain().is_empty());
    assert_eq!(p.s3_api_version(), None);
    assert!(p.attributes().is_empty());
    assert_eq!(p.delete_older_than_days(), None);
    // The same through serde and the builder.
    assert_eq!(serde_accepts(base_json()), p);
    let built = S3Parameters::builder(ACCESS, SECRET, "synapse-backups")
        .region("eu-west-1")
        .build()
        .unwrap();
    assert_eq!(built, p);
}

#[test]
fn every_field_through_relation_data_serde_and_the_builder() {
    let ca = ca_pem();
    let data = with(&[
        ("endpoint", "https://s3.example.com:9000"),
        ("path", "/synapse//backups/"),
        ("s3-uri-style", "path"),
        ("storage-class", "STANDARD_IA"),
        ("tls-ca-chain", &serde_json::to_string(&[&ca]).unwrap()),
        ("s3-api-version", "4"),
        ("attributes", "a=1;b=two"),
        ("delete-older-than-days", "30"),
        ("unknown-key", "ignored"),
    ]);
    let p = S3Parameters::from_relation_data(&data).unwrap();
    assert_eq!(p.endpoint(), Some("https://s3.example.com:9000"));
    assert_eq!(
        p.path(),
        "/synapse//backups/",
        "kept as given; keys are normalised by the client"
    );
    assert_eq!(p.addressing_style(), AddressingStyle::Path);
    assert_eq!(p.storage_class(), Some("STANDARD_IA"));
    assert_eq!(p.tls_ca_chain(), std::slice::from_ref(&ca));
    assert_eq!(p.s3_api_version(), Some("4"));
    assert_eq!(p.attributes().get("b").map(String::as_str), Some("two"));
    assert_eq!(p.delete_older_than_days(), Some(30));

    let doc = json_with(json!({
        "endpoint": "https://s3.example.com:9000",
        "path": "/synapse//backups/",
        "s3-uri-style": "path",
        "storage-class": "STANDARD_IA",
        "tls-ca-chain": [ca],
        "s3-api-version": "4",
        "attributes": {"a": "1", "b": "two"},
        "delete-older-than-days": 30,
        "unknown-key": {"any": ["thing"]},
    }));
    assert_eq!(serde_accepts(doc), p);

    let built = S3Parameters::builder(ACCESS, SECRET, "synapse-backups")
        .region("eu-west-1")
        .endpoint("https://s3.example.com:9000")
        .path("/synapse//backups/")
        .addressing_style(AddressingStyle::Path)
        .storage_class("STANDARD_IA")
        .tls_ca_chain([ca.clone()])
        .s3_api_version("4")
        .attributes([("a", "1"), ("b", "two")])
        .delete_older_than_days(30)
        .build()
        .unwrap();
    assert_eq!(built, p);
    // Through TryFrom too.
    assert_eq!(S3Parameters::try_from(&data).unwrap(), p);
}

#[test]
fn yaml_documents_deserialise_with_real_lists_and_numbers() {
    let ca = ca_pem();
    let indented: String = ca.lines().map(|l| format!("    {l}\n")).collect();
    let yaml = format!(
        "access-key: {ACCESS}\nsecret-key: {SECRET}\nbucket: synapse-backups\nendpoint: http://127.0.0.1:9000\n\
         delete-older-than-days: 7\ntls-ca-chain:\n  - |\n{indented}attributes:\n  team: matrix\n"
    );
    let p: S3Parameters = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(p.delete_older_than_days(), Some(7));
    assert_eq!(p.tls_ca_chain().len(), 1);
    assert_eq!(
        p.attributes().get("team").map(String::as_str),
        Some("matrix")
    );
    assert_eq!(p.region(), None);
}

#[test]
fn required_fields() {
    for field in ["access-key", "secret-key", "bucket"] {
        let mut data = base();
        data.remove(field);
        let problems = relation_problems(&data);
        assert_eq!(
            problems,
            vec![(field.to_string(), "is required".to_string())],
            "{field} missing"
        );
        data.insert(field.into(), String::new());
        assert_eq!(relation_problems(&data)[0].0, field, "{field} empty");

        let mut doc = base_json();
        doc.as_object_mut().unwrap().remove(field);
        serde_rejects(doc, field);
    }
}

#[test]
fn region_or_endpoint_must_be_set() {
    let mut data = base();
    data.remove("region");
    let problems = relation_problems(&data);
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0].1.contains("region") && problems[0].1.contains("endpoint"),
        "{problems:?}"
    );
    // Empty counts as unset.
    data.insert("region".into(), "  ".into());
    data.insert("endpoint".into(), String::new());
    assert_eq!(relation_problems(&data).len(), 1);
    // Either one is enough.
    data.insert("endpoint".into(), "http://127.0.0.1:9000".into());
    assert!(S3Parameters::from_relation_data(&data).is_ok());

    let mut doc = base_json();
    doc.as_object_mut().unwrap().remove("region");
    let e = serde_rejects(doc.clone(), "region");
    assert!(e.contains("endpoint"), "{e}");
    doc["endpoint"] = json!("http://127.0.0.1:9000");
    serde_accepts(doc);
}

#[test]
fn bucket_naming_rules() {
    for ok in [
        "abc",
        "synapse-backups",
        "my.bucket.2024",
        "0numbers9",
        &"b".repeat(63),
    ] {
        assert!(
            S3Parameters::from_relation_data(&with(&[("bucket", ok)])).is_ok(),
            "{ok}"
        );
        serde_accepts(json_with(json!({ "bucket": ok })));
    }
    let cases: [(&str, &str); 9] = [
        ("ab", "3 to 63"),
        (&"b".repeat(64), "3 to 63"),
        ("Synapse-Backups", "lowercase"),
        ("under_score", "lowercase"),
        ("-leading", "start and end"),
        ("trailing.", "start and end"),
        ("two..dots", "adjacent dots"),
        ("192.168.10.1", "IP address"),
        ("spa ce", "lowercase"),
    ];
    for (bad, why) in cases {
        let message = relation_rejects(&[("bucket", bad)], "bucket");
        assert!(message.contains(why), "{bad}: {message}");
        let e = serde_rejects(json_with(json!({ "bucket": bad })), "bucket");
        assert!(e.contains(why), "{bad}: {e}");
    }
    // Several rules broken at once are all named.
    let message = relation_rejects(&[("bucket", "-A")], "bucket");
    assert!(
        message.contains("3 to 63")
            && message.contains("lowercase")
            && message.contains("start and end"),
        "{message}"
    );
}

#[test]
fn endpoint_is_an_http_url_with_a_host() {
    for ok in [
        "http://127.0.0.1:9000",
        "https://s3.example.com",
        "https://s3.example.com:8443/ceph",
        "http://[::1]:9000",
    ] {
        assert!(
            S3Parameters::from_relation_data(&with(&[("endpoint", ok)])).is_ok(),
            "{ok}"
        );
        serde_accepts(json_with(json!({ "endpoint": ok })));
    }
    for bad in [
        "s3.example.com",
        "ftp://s3.example.com",
        "http://",
        "https://s3.example.com/?x=1",
        "https://s3.example.com/#f",
        "not a url",
    ] {
        relation_rejects(&[("endpoint", bad)], "endpoint");
        serde_rejects(json_with(json!({ "endpoint": bad })), "endpoint");
    }
    // Credentials in the URL are refused and not echoed.
    let message = relation_rejects(
        &[("endpoint", "https://user:hunter2@s3.example.com")],
        "endpoint",
    );
    assert!(
        message.contains("credentials") && !message.contains("hunter2"),
        "{message}"
    );
}

#[test]
fn s3_uri_style_is_path_or_host() {
    for (value, style) in [
        ("path", AddressingStyle::Path),
        ("host", AddressingStyle::Virtual),
        ("PATH", AddressingStyle::Path),
        ("", AddressingStyle::Virtual),
    ] {
        let p = S3Parameters::from_relation_data(&with(&[("s3-uri-style", value)])).unwrap();
        assert_eq!(p.addressing_style(), style, "{value}");
        assert_eq!(
            serde_accepts(json_with(json!({ "s3-uri-style": value }))).addressing_style(),
            style
        );
    }
    for bad in ["virtual", "paths", "dns"] {
        let message = relation_rejects(&[("s3-uri-style", bad)], "s3-uri-style");
        assert!(message.contains("\"path\" or \"host\""), "{message}");
        serde_rejects(json_with(json!({ "s3-uri-style": bad })), "s3-uri-style");
    }
}

#[test]
fn tls_ca_chain_entries_are_pem_certificates() {
    let (a, b) = (ca_pem(), ca_pem());
    // As the relation sends it: a JSON-encoded list.
    let p = S3Parameters::from_relation_data(&with(&[(
        "tls-ca-chain",
        &serde_json::to_string(&[&a, &b]).unwrap(),
    )]))
    .unwrap();
    assert_eq!(p.tls_ca_chain(), [a.clone(), b.clone()]);
    // A bare PEM string (one entry holding two certificates) and an empty list.
    let both = format!("{a}{b}");
    assert_eq!(
        S3Parameters::from_relation_data(&with(&[("tls-ca-chain", &both)]))
            .unwrap()
            .tls_ca_chain()
            .len(),
        1
    );
    assert!(
        S3Parameters::from_relation_data(&with(&[("tls-ca-chain", "[]")]))
            .unwrap()
            .tls_ca_chain()
            .is_empty()
    );
    assert!(
        S3Parameters::from_relation_data(&with(&[("tls-ca-chain", "")]))
            .unwrap()
            .tls_ca_chain()
            .is_empty()
    );
    // A real list in a document, and the JSON-encoded string there too.
    assert_eq!(
        serde_accepts(json_with(json!({ "tls-ca-chain": [a, b] })))
            .tls_ca_chain()
            .len(),
        2
    );
    assert_eq!(
        serde_accepts(json_with(
            json!({ "tls-ca-chain": serde_json::to_string(&[&a]).unwrap() })
        ))
        .tls_ca_chain()
        .len(),
        1
    );

    let key_only = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let not_der = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQsIHRoaXMgaXMgbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";
    let bad_base64 = "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n";
    let truncated = {
        let lines: Vec<&str> = a.lines().collect();
        format!("{}\n{}\n{}\n", lines[0], lines[1], lines[lines.len() - 1])
    };
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "not base64"),
        ("[not json".into(), "JSON list"),
        ("{\"a\": 1}".into(), "list"),
        (
            serde_json::to_string(&["garbage"]).unwrap(),
            "no PEM certificate",
        ),
        (
            serde_json::to_string(&[&key_only]).unwrap(),
            "no PEM certificate",
        ),
        (
            serde_json::to_string(&[not_der]).unwrap(),
            "not a valid X.509",
        ),
        (serde_json::to_string(&[bad_base64]).unwrap(), "entry 1"),
        (serde_json::to_string(&[&truncated]).unwrap(), "entry 1"),
        (
            serde_json::to_string(&[a.as_str(), "garbage"]).unwrap(),
            "entry 2",
        ),
        ("[1]".into(), "entry 1 must be a string"),
    ];
    for (bad, why) in &cases {
        let message = relation_rejects(&[("tls-ca-chain", bad)], "tls-ca-chain");
        assert!(message.contains(why), "{bad}: {message}");
    }
    // A wrong entry type and a bad certificate in one list: both reported.
    let problems = relation_problems(&with(&[("tls-ca-chain", r#"[1, "garbage"]"#)]));
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems.iter().all(|(f, _)| f == "tls-ca-chain"));
    assert!(
        problems[0].1.contains("entry 1 must be a string"),
        "{problems:?}"
    );
    assert!(
        problems[1].1.contains("entry 2 holds no PEM certificate"),
        "{problems:?}"
    );
    let e = serde_rejects(
        json_with(json!({ "tls-ca-chain": ["garbage"] })),
        "tls-ca-chain",
    );
    assert!(e.contains("no PEM certificate"), "{e}");
    serde_rejects(json_with(json!({ "tls-ca-chain": 5 })), "tls-ca-chain");
    assert!(
        S3Parameters::builder(ACCESS, SECRET, "bucket")
            .region("r")
            .tls_ca_chain([not_der])
            .build()
            .is_err()
    );
}

#[test]
fn delete_older_than_days_is_a_positive_whole_number() {
    for (value, days) in [("30", 30), (" 7 ", 7), ("1", 1), ("4294967295", u32::MAX)] {
        let p =
            S3Parameters::from_relation_data(&with(&[("delete-older-than-days", value)])).unwrap();
        assert_eq!(p.delete_older_than_days(), Some(days));
    }
    assert_eq!(
        S3Parameters::from_relation_data(&with(&[("delete-older-than-days", "")]))
            .unwrap()
            .delete_older_than_days(),
        None
    );
    assert_eq!(
        serde_accepts(json_with(json!({ "delete-older-than-days": 30 }))).delete_older_than_days(),
        Some(30)
    );
    assert_eq!(
        serde_accepts(json_with(json!({ "delete-older-than-days": "30" })))
            .delete_older_than_days(),
        Some(30)
    );
    for bad in ["0", "-1", "1.5", "thirty", "4294967296"] {
        let message =
            relation_rejects(&[("delete-older-than-days", bad)], "delete-older-than-days");
        assert!(message.contains("positive"), "{bad}: {message}");
    }
    for bad in [json!(0), json!(-3), json!(2.5), json!(true), json!([1])] {
        serde_rejects(
            json_with(json!({ "delete-older-than-days": bad })),
            "delete-older-than-days",
        );
    }
    assert!(
        S3Parameters::builder(ACCESS, SECRET, "bucket")
            .region("r")
            .delete_older_than_days(0)
            .build()
            .is_err()
    );
}

#[test]
fn attributes_in_every_shape() {
    // Entries are separated by ';' (the interface's example); values keep ',' and '='.
    let p = S3Parameters::from_relation_data(&with(&[("attributes", "a=1,b=2;c=x=y")])).unwrap();
    assert_eq!(p.attributes().get("a").map(String::as_str), Some("1,b=2"));
    assert_eq!(p.attributes().get("c").map(String::as_str), Some("x=y"));
    let get = |p: &S3Parameters| {
        p.attributes()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    for value in [
        "a=1;b=x y",
        " a = 1 ; b=x y ;",
        "{\"a\": \"1\", \"b\": \"x y\"}",
        "{\"a\": 1, \"b\": \"x y\"}",
        "[\"a=1\", \"b=x y\"]",
    ] {
        let p = S3Parameters::from_relation_data(&with(&[("attributes", value)])).unwrap();
        assert_eq!(get(&p), "a=1,b=x y", "{value}");
    }
    assert!(
        S3Parameters::from_relation_data(&with(&[("attributes", "")]))
            .unwrap()
            .attributes()
            .is_empty()
    );
    assert_eq!(
        get(&serde_accepts(json_with(
            json!({ "attributes": {"a": "1"} })
        ))),
        "a=1"
    );
    assert_eq!(
        get(&serde_accepts(json_with(json!({ "attributes": ["a=1"] })))),
        "a=1"
    );
    for bad in [
        "novalue",
        "a=1;=2",
        "{not json",
        "{\"a\": [1]}",
        "a=1;A=2",
        "bad name=1",
    ] {
        relation_rejects(&[("attributes", bad)], "attributes");
    }
    serde_rejects(json_with(json!({ "attributes": 3 })), "attributes");
}

#[test]
fn storage_class_and_path_rules() {
    for ok in ["STANDARD", "STANDARD_IA", "GLACIER_IR", "custom-class"] {
        assert_eq!(
            S3Parameters::from_relation_data(&with(&[("storage-class", ok)]))
                .unwrap()
                .storage_class(),
            Some(ok)
        );
    }
    relation_rejects(&[("storage-class", "STANDARD IA")], "storage-class");
    serde_rejects(
        json_with(json!({ "storage-class": "a/b" })),
        "storage-class",
    );
    relation_rejects(&[("path", "a\nb")], "path");
    serde_rejects(json_with(json!({ "path": ["a"] })), "path");
}

#[test]
fn every_problem_is_listed_with_its_field() {
    let data: HashMap<String, String> = [
        ("bucket", "Bad_Bucket"),
        ("endpoint", "ftp://x"),
        ("s3-uri-style", "virtual"),
        ("tls-ca-chain", "[\"garbage\"]"),
        ("delete-older-than-days", "0"),
        ("attributes", "novalue"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let e = S3Parameters::from_relation_data(&data).unwrap_err();
    assert_eq!(
        e.fields(),
        vec![
            "access-key",
            "secret-key",
            "bucket",
            "endpoint",
            "s3-uri-style",
            "tls-ca-chain",
            "attributes",
            "delete-older-than-days"
        ],
        "{e}"
    );
    let text = e.to_string();
    for field in e.fields() {
        assert!(text.contains(&format!("{field}: ")), "{field} in {text}");
    }

    // The same document through serde lists the same problems.
    let doc = serde_json::to_string(&data).unwrap();
    let e = serde_json::from_str::<S3Parameters>(&doc)
        .unwrap_err()
        .to_string();
    for field in [
        "access-key",
        "secret-key",
        "bucket",
        "endpoint",
        "s3-uri-style",
        "tls-ca-chain",
        "attributes",
        "delete-older-than-days",
    ] {
        assert!(e.contains(&format!("{field}: ")), "{field} in {e}");
    }

    // Wrong types are problems like any other, reported together.
    let e = serde_json::from_value::<S3Parameters>(
        json!({"access-key": 1, "secret-key": true, "bucket": ["x"], "region": {}}),
    )
    .unwrap_err()
    .to_string();
    for field in ["access-key", "secret-key", "bucket", "region"] {
        assert!(
            e.contains(&format!("{field}: must be a string")),
            "{field} in {e}"
        );
    }
}

#[test]
fn secrets_are_never_shown() {
    let p =
        S3Parameters::from_relation_data(&with(&[("endpoint", "http://127.0.0.1:9000")])).unwrap();
    for text in [format!("{p:?}"), format!("{p:#?}"), p.to_string()] {
        assert_secret_free(&text);
        assert!(text.contains("******"), "{text}");
        assert!(text.contains("synapse-backups"), "{text}");
    }
    let builder = S3Parameters::builder(ACCESS, SECRET, "b");
    assert_secret_free(&format!("{builder:?}"));

    // Not in validation errors, whatever is wrong with the secrets.
    for (access, secret) in [
        (
            ACCESS,
            "bad\nsecret-with-newline-wJalrXUtnFEMI-very-secret-key",
        ),
        ("", SECRET),
        (ACCESS, ""),
    ] {
        let data = HashMap::from([
            ("access-key".to_string(), access.to_string()),
            ("secret-key".to_string(), secret.to_string()),
            ("bucket".to_string(), "x".to_string()),
        ]);
        let e = S3Parameters::from_relation_data(&data).unwrap_err();
        assert_secret_free(&format!("{e} {e:?}"));
    }
    // Not in serde errors: wrong types, duplicate keys, a broken document after them.
    for doc in [
        format!(
            r#"{{"access-key": ["{ACCESS}"], "secret-key": {{"k": "{SECRET}"}}, "bucket": "b"}}"#
        ),
        format!(
            r#"{{"access-key": "{ACCESS}", "secret-key": "{SECRET}", "secret-key": "{SECRET}", "bucket": "bb"}}"#
        ),
        format!(r#"{{"access-key": "{ACCESS}", "secret-key": "{SECRET}", "bucket": Bad}}"#),
        format!(
            r#"{{"access-key": "{ACCESS}", "secret-key": "{SECRET}", "bucket": "Bad_Bucket", "region": 5}}"#
        ),
    ] {
        let e = serde_json::from_str::<S3Parameters>(&doc).unwrap_err();
        assert_secret_free(&format!("{e} {e:?}"));
    }
}

//! The s3 relation as charms speak it today (interface v1: keys in the Juju secret
//! `secret-extra` names) and as they spoke it before (v0), from the fixture
//! `tests/fixtures/s3-v1-provider.yaml` shaped like the interface's own example.

use std::collections::HashMap;

use synapse_backup::{ConfigError, S3Client, S3Parameters, ServerSideEncryption};

const FIXTURE: &str = include_str!("../../fixtures/s3-v1-provider.yaml");
const ACCESS: &str = "AKIAFIXTUREACCESSKEY";
const SECRET: &str = "fixture/secret+key/0123456789abcdefghij";
const CUSTOMER_KEY: &str = "kbdHqFF4TiFej05J2TfqXDRc4QcyvesAQYmfnQvOosY=";

/// The fixture's databag and secret content.
fn fixture() -> (HashMap<String, String>, HashMap<String, String>) {
    let mut doc: HashMap<String, HashMap<String, String>> =
        serde_saphyr::from_str(FIXTURE).expect("the fixture is YAML");
    (
        doc.remove("databag").expect("databag"),
        doc.remove("secret").expect("secret"),
    )
}

fn assert_no_secret(text: &str) {
    for secret in [ACCESS, SECRET, CUSTOMER_KEY, "kbdHqFF4"] {
        assert!(!text.contains(secret), "secret {secret} leaked: {text}");
    }
}

#[test]
fn a_v1_databag_parses_with_the_secret_content() {
    let (databag, secret) = fixture();
    let p = S3Parameters::from_relation_data_with_secret(&databag, &secret).unwrap();
    assert_eq!(p.access_key(), ACCESS);
    assert_eq!(p.secret_key(), SECRET);
    assert_eq!(p.session_token(), None);
    assert_eq!(p.bucket(), "synapse-media");
    assert_eq!(p.path(), "synapse/backups");
    assert_eq!(p.endpoint(), Some("https://s3.example.internal/"));
    assert_eq!(p.region(), Some("eu-west-1"));
    assert_eq!(p.storage_class(), Some("STANDARD_IA"));
    assert_eq!(p.s3_api_version(), Some("4"));
    assert_eq!(p.lib_version(), Some("1.10"));
    // The base64 CA entry is decoded to PEM.
    assert_eq!(p.tls_ca_chain().len(), 1);
    assert!(p.tls_ca_chain()[0].starts_with("-----BEGIN CERTIFICATE-----"));
    // The SSE-C key is taken out of the attributes; the other attribute is kept whole.
    let key = p
        .server_side_encryption()
        .and_then(ServerSideEncryption::customer_key)
        .expect("SSE-C from attributes");
    assert_eq!(key.base64(), CUSTOMER_KEY);
    assert_eq!(
        p.attributes().iter().collect::<Vec<_>>(),
        vec![(
            &"Cache-Control".to_string(),
            &"max-age=3600,no-transform".to_string()
        )]
    );
    // Secrets (keys and the customer key) never shown.
    assert_no_secret(&format!("{p:?} {p:#?} {p}"));
    // The client builds with the decoded CA chain.
    let client = S3Client::new(&p).unwrap();
    assert_no_secret(&format!("{client:?}"));
}

#[test]
fn a_v1_databag_without_the_secret_content_names_secret_extra() {
    let (databag, _) = fixture();
    let e = S3Parameters::from_relation_data(&databag).unwrap_err();
    assert_eq!(e.fields(), vec!["secret-extra"], "{e}");
    let text = e.to_string();
    assert!(
        text.contains("secret-extra: ") && text.contains("from_relation_data_with_secret"),
        "{text}"
    );
    assert_no_secret(&format!("{text} {e:?}"));

    // The secret content without a key: that key is named.
    let (databag, mut secret) = fixture();
    secret.remove("secret-key");
    let e = S3Parameters::from_relation_data_with_secret(&databag, &secret).unwrap_err();
    assert_eq!(e.fields(), vec!["secret-key"], "{e}");
    // A malformed secret-extra is named too.
    let (mut databag, secret) = fixture();
    databag.insert("secret-extra".into(), "not a secret uri".into());
    let e = S3Parameters::from_relation_data_with_secret(&databag, &secret).unwrap_err();
    assert_eq!(e.fields(), vec!["secret-extra"], "{e}");
}

#[test]
fn the_interfaces_example_placeholders_are_the_only_problems() {
    // The interface's example verbatim, apart from the key the secret supplies: its
    // CA chain and customer key are placeholders, and only those two are refused.
    let databag: HashMap<String, String> = [
        ("bucket", "mybucket"),
        (
            "secret-extra",
            "secret://91f805c5-5b49-47a3-8e7b-70befa766caf/d40rbhnmp25c76d6bdn0",
        ),
        ("path", "my/path"),
        ("endpoint", "https://my-s3-endpoint/"),
        ("region", "us-east-1"),
        ("s3-uri-style", "path"),
        ("storage-class", "glacier"),
        ("tls-ca-chain", "base64-encoded-ca-chain=="),
        ("s3-api-version", "4"),
        (
            "attributes",
            "Cache-Control=max-age=90000,min-fresh=9000;X-Amz-Server-Side-Encryption-Customer-Key=CuStoMerKey=",
        ),
        ("lib-version", "1.10"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let secret: HashMap<String, String> = [
        ("access-key", "my-s3-access-key"),
        ("secret-key", "my-s3-secret-key"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let e = S3Parameters::from_relation_data_with_secret(&databag, &secret).unwrap_err();
    assert_eq!(e.fields(), vec!["tls-ca-chain", "attributes"], "{e}");
    let text = e.to_string();
    assert!(text.contains("32-byte"), "{text}");
    assert!(!text.contains("CuStoMerKey"), "the key is echoed: {text}");
}

#[test]
fn a_v0_databag_still_parses() {
    // As the s3-integrator 1 sends it: keys in the databag, lists JSON-encoded.
    let (databag, secret) = fixture();
    let mut v0: HashMap<String, String> = databag
        .into_iter()
        .filter(|(k, _)| k != "secret-extra" && k != "lib-version")
        .collect();
    v0.extend(secret);
    v0.insert(
        "attributes".into(),
        r#"["Cache-Control=max-age=3600,no-transform"]"#.into(),
    );
    let p = S3Parameters::from_relation_data(&v0).unwrap();
    assert_eq!(p.access_key(), ACCESS);
    assert_eq!(p.lib_version(), None);
    assert_eq!(p.server_side_encryption(), None);
    assert_eq!(
        p.attributes().get("Cache-Control").map(String::as_str),
        Some("max-age=3600,no-transform")
    );
    // The secret variant accepts a v0 databag too (an empty secret changes nothing).
    let same = S3Parameters::from_relation_data_with_secret(&v0, &HashMap::new()).unwrap();
    assert_eq!(same, p);
}

#[test]
fn session_tokens_are_accepted_and_never_shown() {
    let (databag, mut secret) = fixture();
    let token = "IQoJb3JpZ2luX2VjEFAKE/session+token=";
    secret.insert("session-token".into(), token.into());
    let p = S3Parameters::from_relation_data_with_secret(&databag, &secret).unwrap();
    assert_eq!(p.session_token(), Some(token));
    let shown = format!("{p:?} {p}");
    assert!(
        !shown.contains(token) && shown.contains("session_token"),
        "{shown}"
    );
    let built = S3Parameters::builder(ACCESS, SECRET, "b-1")
        .region("eu-west-1")
        .session_token(token)
        .build()
        .unwrap();
    assert_eq!(built.session_token(), Some(token));
    // A token goes into a header: visible ASCII only, and it is not echoed.
    secret.insert("session-token".into(), "tok en\n".into());
    let e = S3Parameters::from_relation_data_with_secret(&databag, &secret).unwrap_err();
    assert_eq!(e.fields(), vec!["session-token"], "{e}");
    assert!(!e.to_string().contains("tok en"), "{e}");
}

#[test]
fn lib_version_is_major_dot_minor() {
    let (mut databag, secret) = fixture();
    for bad in ["1", "one.two", "1.2.3", "1.", ".1"] {
        databag.insert("lib-version".into(), bad.into());
        let e = S3Parameters::from_relation_data_with_secret(&databag, &secret).unwrap_err();
        assert_eq!(e.fields(), vec!["lib-version"], "{bad}: {e}");
    }
}

#[test]
fn sse_kms_and_sse_s3_come_from_attributes() {
    let (mut databag, secret) = fixture();
    databag.insert(
        "attributes".into(),
        r#"["X-Amz-Server-Side-Encryption=aws:kms", "X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id=arn:aws:kms:eu-west-1:111122223333:key/1234abcd", "Content-Language=en"]"#.into(),
    );
    let p = S3Parameters::from_relation_data_with_secret(&databag, &secret).unwrap();
    match p.server_side_encryption() {
        Some(ServerSideEncryption::Kms { dsse, key_id }) => {
            assert!(!dsse);
            assert_eq!(
                key_id.as_deref(),
                Some("arn:aws:kms:eu-west-1:111122223333:key/1234abcd")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.attributes().len(), 1, "{:?}", p.attributes());
    databag.insert(
        "attributes".into(),
        "x-amz-server-side-encryption=AES256".into(),
    );
    let p = S3Parameters::from_relation_data_with_secret(&databag, &secret).unwrap();
    assert_eq!(p.server_side_encryption(), Some(&ServerSideEncryption::S3));
    // Two kinds at once cannot be honoured.
    databag.insert(
        "attributes".into(),
        format!("X-Amz-Server-Side-Encryption=AES256;X-Amz-Server-Side-Encryption-Customer-Key={CUSTOMER_KEY}"),
    );
    let e = S3Parameters::from_relation_data_with_secret(&databag, &secret).unwrap_err();
    assert!(matches!(e, ConfigError::Invalid { .. }));
    assert_eq!(e.fields(), vec!["attributes"]);
    assert_no_secret(&e.to_string());
}

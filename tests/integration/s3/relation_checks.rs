//! Relation data that used to pass validation and then broke something later: a region
//! or any other field holding a control character, `s3-api-version: 2`, certificates
//! the crate's own DER walker accepted but the TLS stack panics on, base64 CA entries
//! (refused although v0 and v1 both specify them), and `attributes` in the interface's
//! own `;`-separated example form. Only `from_relation_data` is used here, so these
//! tests also run against the code before the fix.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use synapse_backup::{ConfigError, S3Client, S3Parameters};

fn base() -> HashMap<String, String> {
    [
        ("access-key", "AKIDEXAMPLE"),
        ("secret-key", "wJalrXUtnFEMI-secret"),
        ("bucket", "synapse-backups"),
        ("region", "eu-west-1"),
        ("endpoint", "https://s3.example.com"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn with(field: &str, value: &str) -> HashMap<String, String> {
    let mut data = base();
    data.insert(field.to_string(), value.to_string());
    data
}

/// The fields with a problem, or a panic when the data was accepted.
fn refused_fields(data: &HashMap<String, String>) -> Vec<String> {
    match S3Parameters::from_relation_data(data) {
        Ok(p) => panic!("accepted {p:?}"),
        Err(ConfigError::Invalid { problems }) => problems.into_iter().map(|p| p.field).collect(),
        Err(e) => panic!("expected ConfigError::Invalid, got {e:?}"),
    }
}

fn ca_pem() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem()
}

#[test]
fn a_region_with_a_newline_is_refused_naming_region() {
    for region in [
        "us-east-1\nx",
        "us-east\n-1",
        "eu-west-1\r\n[profile x]",
        "a\tb",
    ] {
        let e = S3Parameters::from_relation_data(&with("region", region)).unwrap_err();
        assert_eq!(e.fields(), vec!["region"], "{region:?}: {e}");
        assert!(e.to_string().contains("region: "), "{e}");
    }
    // Not a region name at all.
    for region in ["US-EAST-1", "us east 1", "-us", "us-", "a=b", "eu/west"] {
        assert_eq!(
            refused_fields(&with("region", region)),
            vec!["region"],
            "{region:?}"
        );
    }
    // AWS regions and the names S3-compatible servers use.
    for region in [
        "us-east-1",
        "us-gov-west-1",
        "fr-par",
        "nyc3",
        "auto",
        "default",
    ] {
        S3Parameters::from_relation_data(&with("region", region))
            .unwrap_or_else(|e| panic!("{region}: {e}"));
    }
}

#[test]
fn no_field_may_hold_a_control_character() {
    for field in [
        "access-key",
        "secret-key",
        "bucket",
        "region",
        "endpoint",
        "path",
        "s3-uri-style",
        "storage-class",
        "s3-api-version",
    ] {
        let value = match field {
            "endpoint" => "https://s3.exam\nple.com".to_string(),
            "s3-api-version" => "4\n4".to_string(),
            "s3-uri-style" => "pa\nth".to_string(),
            _ => format!("{}\u{7}x", base().get(field).cloned().unwrap_or("x".into())),
        };
        assert_eq!(
            refused_fields(&with(field, &value)),
            vec![field],
            "{field} = {value:?}"
        );
    }
    // An attribute value with a control character (a header it would be sent as).
    assert_eq!(
        refused_fields(&with(
            "attributes",
            r#"["Cache-Control=max-age=1\r\nX-Evil: 1"]"#
        )),
        vec!["attributes"]
    );
}

#[test]
fn s3_api_version_2_is_refused_naming_the_field() {
    let e = S3Parameters::from_relation_data(&with("s3-api-version", "2")).unwrap_err();
    assert_eq!(e.fields(), vec!["s3-api-version"], "{e}");
    assert!(e.to_string().contains("s3-api-version: "), "{e}");
    for ok in ["4", ""] {
        S3Parameters::from_relation_data(&with("s3-api-version", ok))
            .unwrap_or_else(|e| panic!("{ok:?}: {e}"));
    }
    assert_eq!(
        refused_fields(&with("s3-api-version", "5")),
        vec!["s3-api-version"]
    );
}

/// A certificate whose outer structure is sound but whose version field is not one
/// X.509 defines: the old DER walker skipped the version; rustls's trust-anchor parser
/// (which the SDK unwraps) refuses it.
#[test]
fn certificates_the_tls_stack_cannot_load_are_refused() {
    let pem = ca_pem();
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let mut bytes = der.as_ref().to_vec();
    // tbsCertificate starts after the two outer headers: [0] { INTEGER 2 } → INTEGER 9.
    let at = bytes
        .windows(5)
        .position(|w| w == [0xa0, 0x03, 0x02, 0x01, 0x02])
        .expect("a v3 version field");
    bytes[at + 4] = 9;
    let bad = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        BASE64.encode(&bytes)
    );
    let chain = serde_json::to_string(&[&bad]).unwrap();
    assert_eq!(
        refused_fields(&with("tls-ca-chain", &chain)),
        vec!["tls-ca-chain"]
    );
    // The good one loads: building the client (and its TLS setup) does not panic.
    let chain = serde_json::to_string(&[&pem]).unwrap();
    let params = S3Parameters::from_relation_data(&with("tls-ca-chain", &chain)).unwrap();
    S3Client::new(&params).unwrap();
}

#[test]
fn base64_ca_entries_are_accepted_as_the_interface_specifies() {
    let (a, b) = (ca_pem(), ca_pem());
    let a64 = BASE64.encode(a.as_bytes());
    let chain64 = BASE64.encode(format!("{a}{b}").as_bytes());
    let der64 = BASE64.encode(
        CertificateDer::from_pem_slice(b.as_bytes())
            .unwrap()
            .as_ref(),
    );
    for (value, entries) in [
        (serde_json::to_string(&[&a64]).unwrap(), 1),
        (serde_json::to_string(&[&a64, &der64]).unwrap(), 2),
        // One bare base64 string, as in the interface's example.
        (chain64.clone(), 1),
        // PEM and base64 mixed.
        (serde_json::to_string(&[a.as_str(), &chain64]).unwrap(), 2),
    ] {
        let p = S3Parameters::from_relation_data(&with("tls-ca-chain", &value))
            .unwrap_or_else(|e| panic!("{value}: {e}"));
        assert_eq!(p.tls_ca_chain().len(), entries, "{value}");
        for pem in p.tls_ca_chain() {
            assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
        }
        S3Client::new(&p).unwrap();
    }
    // Not base64 of a certificate.
    for bad in [
        serde_json::to_string(&[BASE64.encode("hello")]).unwrap(),
        "base64-encoded-ca-chain==".to_string(),
    ] {
        assert_eq!(
            refused_fields(&with("tls-ca-chain", &bad)),
            vec!["tls-ca-chain"]
        );
    }
}

#[test]
fn attributes_in_the_interfaces_semicolon_form_keep_commas_and_equals_in_values() {
    let p = S3Parameters::from_relation_data(&with(
        "attributes",
        "Cache-Control=max-age=90000,min-fresh=9000;Content-Language=en",
    ))
    .unwrap();
    let attributes: Vec<(&str, &str)> = p
        .attributes()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        attributes,
        vec![
            ("Cache-Control", "max-age=90000,min-fresh=9000"),
            ("Content-Language", "en")
        ]
    );
    // The schema's form: a JSON list of Name=value strings.
    let p = S3Parameters::from_relation_data(&with(
        "attributes",
        r#"["Cache-Control=max-age=90000,min-fresh=9000", "Content-Language=en"]"#,
    ))
    .unwrap();
    assert_eq!(
        p.attributes().get("Cache-Control").map(String::as_str),
        Some("max-age=90000,min-fresh=9000")
    );
}

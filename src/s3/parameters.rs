//! [`S3Parameters`]: the s3-integrator relation data, validated once at construction.
//!
//! The relation sends every value as a string, with kebab-case keys:
//! `access-key`, `secret-key`, `bucket` (required), `region`, `endpoint`, `path`,
//! `s3-uri-style`, `storage-class`, `tls-ca-chain` (a JSON-encoded list of PEM strings),
//! `s3-api-version`, `attributes` and `delete-older-than-days` (a number as a string).
//! The same keys are accepted through serde from JSON or YAML documents, where
//! `tls-ca-chain` may also be a real list, `delete-older-than-days` a number and
//! `attributes` a map.
//!
//! Construction goes through one validation step ([`validator`]), so an invalid
//! [`S3Parameters`] cannot exist. Every problem is reported at once in
//! [`ConfigError::Invalid`], each naming its kebab-case field. Secret values (the
//! access and secret keys) never appear in `Debug`, `Display` or error messages.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;
use serde_json::Value;
use validator::{Validate, ValidationError, ValidationErrors};

use crate::error::{ConfigError, FieldProblem};

/// What `Debug` and `Display` print instead of a secret.
const REDACTED: &str = "******";

/// The field names as the relation spells them, in the order problems are reported.
const FIELDS: [&str; 12] = [
    "access-key",
    "secret-key",
    "bucket",
    "region",
    "endpoint",
    "path",
    "s3-uri-style",
    "storage-class",
    "tls-ca-chain",
    "s3-api-version",
    "attributes",
    "delete-older-than-days",
];

/// How bucket names are put in request URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressingStyle {
    /// `https://endpoint/bucket/key` (`s3-uri-style: path`).
    Path,
    /// `https://bucket.endpoint/key` (`s3-uri-style: host`, the default).
    Virtual,
}

impl AddressingStyle {
    /// The relation's spelling: `path` or `host`.
    pub fn as_relation_value(self) -> &'static str {
        match self {
            AddressingStyle::Path => "path",
            AddressingStyle::Virtual => "host",
        }
    }
}

/// The S3 connection parameters from the s3-integrator relation, validated.
///
/// Build it with [`S3Parameters::from_relation_data`], [`S3Parameters::builder`], or
/// through serde (`Deserialize`, kebab-case keys); each runs the same validation.
///
/// ```
/// use std::collections::HashMap;
/// use synapse_backup::{AddressingStyle, S3Parameters};
///
/// let data: HashMap<String, String> = [
///     ("access-key", "AKIDEXAMPLE"),
///     ("secret-key", "wJalrXUtnFEMI"),
///     ("bucket", "synapse-backups"),
///     ("endpoint", "http://127.0.0.1:9000"),
///     ("s3-uri-style", "path"),
///     ("delete-older-than-days", "30"),
/// ]
/// .into_iter()
/// .map(|(k, v)| (k.to_string(), v.to_string()))
/// .collect();
/// let params = S3Parameters::from_relation_data(&data)?;
/// assert_eq!(params.addressing_style(), AddressingStyle::Path);
/// assert_eq!(params.delete_older_than_days(), Some(30));
/// assert!(!format!("{params:?}").contains("wJalrXUtnFEMI"));
/// # Ok::<(), synapse_backup::ConfigError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawS3Parameters")]
pub struct S3Parameters {
    access_key: String,
    secret_key: String,
    bucket: String,
    region: Option<String>,
    endpoint: Option<String>,
    path: String,
    s3_uri_style: Option<String>,
    storage_class: Option<String>,
    tls_ca_chain: Vec<String>,
    s3_api_version: Option<String>,
    attributes: BTreeMap<String, String>,
    delete_older_than_days: Option<u32>,
}

impl S3Parameters {
    /// Builds validated parameters from relation data (string keys and values, as the
    /// s3-integrator relation sends them). Unknown keys are ignored.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] listing every problem, each with its kebab-case field.
    pub fn from_relation_data(data: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut raw = RawS3Parameters::default();
        for (key, value) in data {
            if let Some(slot) = raw.slot(key) {
                *slot = Some(Value::String(value.clone()));
            }
        }
        Self::try_from(raw)
    }

    /// Starts building parameters in code; [`S3ParametersBuilder::build`] validates them.
    pub fn builder(
        access_key: impl Into<String>,
        secret_key: impl Into<String>,
        bucket: impl Into<String>,
    ) -> S3ParametersBuilder {
        let raw = RawS3Parameters {
            access_key: Some(Value::String(access_key.into())),
            secret_key: Some(Value::String(secret_key.into())),
            bucket: Some(Value::String(bucket.into())),
            ..RawS3Parameters::default()
        };
        S3ParametersBuilder { raw }
    }

    /// The access key id.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The secret access key.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The region, if set.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// The endpoint URL, if set (an `http` or `https` URL with a host).
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// The key prefix as given (may be empty). See [`crate::s3::object_key`] for how
    /// keys are built from it.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The storage class, if set.
    pub fn storage_class(&self) -> Option<&str> {
        self.storage_class.as_deref()
    }

    /// PEM CA certificates to trust in addition to the system roots. Each entry holds
    /// one or more certificates.
    pub fn tls_ca_chain(&self) -> &[String] {
        &self.tls_ca_chain
    }

    /// The S3 API version, if set.
    pub fn s3_api_version(&self) -> Option<&str> {
        self.s3_api_version.as_deref()
    }

    /// Extra attributes (`attributes` in the relation).
    pub fn attributes(&self) -> &BTreeMap<String, String> {
        &self.attributes
    }

    /// Retention in days, if set (always at least 1).
    pub fn delete_older_than_days(&self) -> Option<u32> {
        self.delete_older_than_days
    }

    /// `Path` for `s3-uri-style: path`, `Virtual` otherwise.
    pub fn addressing_style(&self) -> AddressingStyle {
        if self.s3_uri_style.as_deref() == Some("path") {
            AddressingStyle::Path
        } else {
            AddressingStyle::Virtual
        }
    }
}

impl fmt::Debug for S3Parameters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Parameters")
            .field("access_key", &format_args!("{REDACTED}"))
            .field("secret_key", &format_args!("{REDACTED}"))
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("path", &self.path)
            .field("s3_uri_style", &self.s3_uri_style)
            .field("storage_class", &self.storage_class)
            .field(
                "tls_ca_chain",
                &format_args!("[{} entries]", self.tls_ca_chain.len()),
            )
            .field("s3_api_version", &self.s3_api_version)
            .field("attributes", &self.attributes)
            .field("delete_older_than_days", &self.delete_older_than_days)
            .finish()
    }
}

impl fmt::Display for S3Parameters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bucket {}", self.bucket)?;
        if !self.path.is_empty() {
            write!(f, ", path {:?}", self.path)?;
        }
        if let Some(endpoint) = &self.endpoint {
            write!(f, ", endpoint {endpoint}")?;
        }
        if let Some(region) = &self.region {
            write!(f, ", region {region}")?;
        }
        write!(
            f,
            ", s3-uri-style {}, access-key {REDACTED}, secret-key {REDACTED}",
            self.addressing_style().as_relation_value()
        )?;
        if let Some(class) = &self.storage_class {
            write!(f, ", storage-class {class}")?;
        }
        if !self.tls_ca_chain.is_empty() {
            write!(f, ", {} tls-ca-chain entries", self.tls_ca_chain.len())?;
        }
        if let Some(days) = self.delete_older_than_days {
            write!(f, ", delete-older-than-days {days}")?;
        }
        Ok(())
    }
}

impl TryFrom<&HashMap<String, String>> for S3Parameters {
    type Error = ConfigError;

    fn try_from(data: &HashMap<String, String>) -> Result<Self, Self::Error> {
        Self::from_relation_data(data)
    }
}

/// Builds [`S3Parameters`] in code. Nothing is checked until [`build`](Self::build),
/// which runs the same validation as deserialisation.
///
/// ```
/// use synapse_backup::S3Parameters;
///
/// let params = S3Parameters::builder("AKIDEXAMPLE", "secret", "synapse-backups")
///     .endpoint("http://127.0.0.1:9000")
///     .s3_uri_style("path")
///     .path("/backups/synapse/")
///     .build()?;
/// assert_eq!(params.path(), "/backups/synapse/");
/// # Ok::<(), synapse_backup::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct S3ParametersBuilder {
    raw: RawS3Parameters,
}

impl S3ParametersBuilder {
    fn set(mut self, field: &str, value: Value) -> Self {
        if let Some(slot) = self.raw.slot(field) {
            *slot = Some(value);
        }
        self
    }

    /// The region (`region`).
    pub fn region(self, region: impl Into<String>) -> Self {
        self.set("region", Value::String(region.into()))
    }

    /// The endpoint URL (`endpoint`), e.g. `https://s3.example.com`.
    pub fn endpoint(self, endpoint: impl Into<String>) -> Self {
        self.set("endpoint", Value::String(endpoint.into()))
    }

    /// The key prefix (`path`).
    pub fn path(self, path: impl Into<String>) -> Self {
        self.set("path", Value::String(path.into()))
    }

    /// `path` or `host` (`s3-uri-style`).
    pub fn s3_uri_style(self, style: impl Into<String>) -> Self {
        self.set("s3-uri-style", Value::String(style.into()))
    }

    /// The addressing style, as [`s3_uri_style`](Self::s3_uri_style) would set it.
    pub fn addressing_style(self, style: AddressingStyle) -> Self {
        self.s3_uri_style(style.as_relation_value())
    }

    /// The storage class (`storage-class`), e.g. `STANDARD_IA`.
    pub fn storage_class(self, class: impl Into<String>) -> Self {
        self.set("storage-class", Value::String(class.into()))
    }

    /// PEM CA certificates to trust (`tls-ca-chain`).
    pub fn tls_ca_chain<I, S>(self, pems: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let list = pems.into_iter().map(|p| Value::String(p.into())).collect();
        self.set("tls-ca-chain", Value::Array(list))
    }

    /// The S3 API version (`s3-api-version`).
    pub fn s3_api_version(self, version: impl Into<String>) -> Self {
        self.set("s3-api-version", Value::String(version.into()))
    }

    /// Extra attributes (`attributes`).
    pub fn attributes<I, K, V>(self, attributes: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let map = attributes
            .into_iter()
            .map(|(k, v)| (k.into(), Value::String(v.into())))
            .collect();
        self.set("attributes", Value::Object(map))
    }

    /// Retention in days (`delete-older-than-days`); must be at least 1.
    pub fn delete_older_than_days(self, days: u32) -> Self {
        self.set("delete-older-than-days", Value::from(days))
    }

    /// Validates and returns the parameters.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] listing every problem, each with its kebab-case field.
    pub fn build(self) -> Result<S3Parameters, ConfigError> {
        S3Parameters::try_from(self.raw)
    }
}

impl fmt::Debug for S3ParametersBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3ParametersBuilder")
            .finish_non_exhaustive()
    }
}

/// The document as received: any JSON-like value per known key, nothing checked yet.
/// Loose types let every problem (including wrong types) be reported together, and
/// keep serde from echoing values (secrets) in its error messages.
#[derive(Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawS3Parameters {
    access_key: Option<Value>,
    secret_key: Option<Value>,
    bucket: Option<Value>,
    region: Option<Value>,
    endpoint: Option<Value>,
    path: Option<Value>,
    s3_uri_style: Option<Value>,
    storage_class: Option<Value>,
    tls_ca_chain: Option<Value>,
    s3_api_version: Option<Value>,
    attributes: Option<Value>,
    delete_older_than_days: Option<Value>,
}

impl RawS3Parameters {
    fn slot(&mut self, field: &str) -> Option<&mut Option<Value>> {
        Some(match field {
            "access-key" => &mut self.access_key,
            "secret-key" => &mut self.secret_key,
            "bucket" => &mut self.bucket,
            "region" => &mut self.region,
            "endpoint" => &mut self.endpoint,
            "path" => &mut self.path,
            "s3-uri-style" => &mut self.s3_uri_style,
            "storage-class" => &mut self.storage_class,
            "tls-ca-chain" => &mut self.tls_ca_chain,
            "s3-api-version" => &mut self.s3_api_version,
            "attributes" => &mut self.attributes,
            "delete-older-than-days" => &mut self.delete_older_than_days,
            _ => return None,
        })
    }
}

/// One `tls-ca-chain` entry and its 1-based position in the list as given.
#[derive(serde::Serialize)]
struct PemEntry {
    position: usize,
    pem: String,
}

/// Values coerced to their types, ready for the `validator` rules.
#[derive(Validate)]
#[validate(schema(function = "region_or_endpoint", skip_on_field_errors = false))]
struct Checked {
    #[validate(custom(function = "required_secret"))]
    access_key: String,
    #[validate(custom(function = "required_secret"))]
    secret_key: String,
    #[validate(custom(function = "bucket_name"))]
    bucket: String,
    region: Option<String>,
    #[validate(custom(function = "endpoint_url"))]
    endpoint: Option<String>,
    #[validate(custom(function = "key_prefix"))]
    path: String,
    #[validate(custom(function = "uri_style"))]
    s3_uri_style: Option<String>,
    #[validate(custom(function = "storage_class_name"))]
    storage_class: Option<String>,
    #[validate(custom(function = "pem_certificates"))]
    tls_ca_chain: Vec<PemEntry>,
    s3_api_version: Option<String>,
    #[validate(custom(function = "attribute_names"))]
    attributes: BTreeMap<String, String>,
    #[validate(range(
        min = 1,
        max = 4_294_967_295_i64,
        message = "must be a positive whole number of days"
    ))]
    delete_older_than_days: Option<i64>,
}

impl TryFrom<RawS3Parameters> for S3Parameters {
    type Error = ConfigError;

    fn try_from(raw: RawS3Parameters) -> Result<Self, ConfigError> {
        let mut problems = Problems::default();
        let checked = Checked {
            access_key: secret(&mut problems, "access-key", raw.access_key),
            secret_key: secret(&mut problems, "secret-key", raw.secret_key),
            bucket: string(&mut problems, "bucket", raw.bucket).unwrap_or_default(),
            region: string(&mut problems, "region", raw.region),
            endpoint: string(&mut problems, "endpoint", raw.endpoint),
            path: path_string(&mut problems, raw.path),
            s3_uri_style: string(&mut problems, "s3-uri-style", raw.s3_uri_style)
                .map(|s| s.to_ascii_lowercase()),
            storage_class: string(&mut problems, "storage-class", raw.storage_class),
            tls_ca_chain: pem_list(&mut problems, raw.tls_ca_chain),
            s3_api_version: string(&mut problems, "s3-api-version", raw.s3_api_version),
            attributes: attribute_map(&mut problems, raw.attributes),
            delete_older_than_days: days(&mut problems, raw.delete_older_than_days),
        };
        if let Err(errors) = checked.validate() {
            problems.add_validation(&errors);
        }
        problems.into_result()?;
        Ok(S3Parameters {
            access_key: checked.access_key,
            secret_key: checked.secret_key,
            bucket: checked.bucket,
            region: checked.region,
            endpoint: checked.endpoint,
            path: checked.path,
            s3_uri_style: checked.s3_uri_style,
            storage_class: checked.storage_class,
            tls_ca_chain: checked.tls_ca_chain.into_iter().map(|e| e.pem).collect(),
            s3_api_version: checked.s3_api_version,
            attributes: checked.attributes,
            delete_older_than_days: checked
                .delete_older_than_days
                .and_then(|d| u32::try_from(d).ok()),
        })
    }
}

/// Problems found so far. A field whose value was dropped for having the wrong type
/// gets no rule problems on top (they would only repeat that it is missing).
#[derive(Default)]
struct Problems {
    found: Vec<FieldProblem>,
    discarded: Vec<String>,
}

impl Problems {
    fn add(&mut self, field: &str, message: impl Into<String>) {
        self.found.push(FieldProblem {
            field: field.to_string(),
            message: message.into(),
        });
    }

    /// A problem that made the whole value unusable.
    fn discard(&mut self, field: &str, message: impl Into<String>) {
        self.discarded.push(field.to_string());
        self.add(field, message);
    }

    fn add_validation(&mut self, errors: &ValidationErrors) {
        let mut found = Vec::new();
        for (name, list) in errors.field_errors() {
            for error in list {
                let field = match error.params.get("field").and_then(Value::as_str) {
                    Some(field) => field.to_string(),
                    None => name.replace('_', "-"),
                };
                let message = error
                    .message
                    .as_deref()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("is invalid ({})", error.code));
                found.push(FieldProblem { field, message });
            }
        }
        for problem in found {
            if !self.discarded.contains(&problem.field) {
                self.found.push(problem);
            }
        }
    }

    fn into_result(mut self) -> Result<(), ConfigError> {
        if self.found.is_empty() {
            return Ok(());
        }
        let rank = |field: &str| {
            FIELDS
                .iter()
                .position(|f| *f == field)
                .unwrap_or(FIELDS.len())
        };
        // Stable: a field's problems keep the order they were found in.
        self.found.sort_by_key(|p| rank(&p.field));
        self.found.dedup();
        Err(ConfigError::Invalid {
            problems: self.found,
        })
    }
}

/// A JSON type name for messages (never the value itself).
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// A required secret: must be a string; emptiness is checked by the rules. The value
/// is never trimmed or echoed.
fn secret(problems: &mut Problems, field: &str, value: Option<Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s,
        Some(other) => {
            problems.discard(
                field,
                format!("must be a string, not {}", type_name(&other)),
            );
            String::new()
        }
    }
}

/// An optional string, trimmed; empty means unset.
fn string(problems: &mut Problems, field: &str, value: Option<Value>) -> Option<String> {
    match value {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
        Some(other) => {
            problems.discard(
                field,
                format!("must be a string, not {}", type_name(&other)),
            );
            None
        }
    }
}

/// `path`: a string kept as given (default empty).
fn path_string(problems: &mut Problems, value: Option<Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s,
        Some(other) => {
            problems.discard(
                "path",
                format!("must be a string, not {}", type_name(&other)),
            );
            String::new()
        }
    }
}

/// `tls-ca-chain`: a JSON-encoded list of PEM strings (as the relation sends it), a real
/// list, or a bare PEM string.
fn pem_list(problems: &mut Problems, value: Option<Value>) -> Vec<PemEntry> {
    const FIELD: &str = "tls-ca-chain";
    let list = match value {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.is_empty() {
                return Vec::new();
            }
            if s.starts_with("-----BEGIN") {
                return vec![PemEntry {
                    position: 1,
                    pem: s.to_string(),
                }];
            }
            match serde_json::from_str::<Value>(s) {
                Ok(Value::Array(list)) => list,
                Ok(Value::String(pem)) => vec![Value::String(pem)],
                Ok(other) => {
                    problems.discard(
                        FIELD,
                        format!(
                            "must be a list of PEM certificates, not {}",
                            type_name(&other)
                        ),
                    );
                    return Vec::new();
                }
                Err(_) => {
                    problems.discard(FIELD, "must be a JSON list of PEM certificates");
                    return Vec::new();
                }
            }
        }
        Some(Value::Array(list)) => list,
        Some(other) => {
            problems.discard(
                FIELD,
                format!(
                    "must be a list of PEM certificates, not {}",
                    type_name(&other)
                ),
            );
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (i, item) in list.into_iter().enumerate() {
        match item {
            Value::String(pem) if !pem.trim().is_empty() => out.push(PemEntry {
                position: i + 1,
                pem,
            }),
            Value::String(_) => problems.add(FIELD, format!("entry {} is empty", i + 1)),
            other => problems.add(
                FIELD,
                format!(
                    "entry {} must be a string, not {}",
                    i + 1,
                    type_name(&other)
                ),
            ),
        }
    }
    out
}

/// A scalar attribute value as text.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `attributes`: a map, a JSON object string, a list of `k=v` strings, or the
/// s3-integrator's comma-separated `k=v,k2=v2`.
fn attribute_map(problems: &mut Problems, value: Option<Value>) -> BTreeMap<String, String> {
    const FIELD: &str = "attributes";
    let mut out = BTreeMap::new();
    let mut pairs = |problems: &mut Problems, items: Vec<String>| {
        for item in items {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            match item.split_once('=') {
                Some((k, v)) => {
                    out.insert(k.trim().to_string(), v.trim().to_string());
                }
                None => problems.add(
                    FIELD,
                    format!("entry {item:?} is not of the form key=value"),
                ),
            }
        }
    };
    let value = match value {
        None | Some(Value::Null) => return BTreeMap::new(),
        Some(Value::String(s)) => {
            let t = s.trim();
            if t.starts_with('{') || t.starts_with('[') {
                match serde_json::from_str::<Value>(t) {
                    Ok(v) => v,
                    Err(_) => {
                        problems.discard(FIELD, "is not valid JSON");
                        return BTreeMap::new();
                    }
                }
            } else {
                pairs(problems, t.split(',').map(str::to_string).collect());
                return out;
            }
        }
        Some(v) => v,
    };
    match value {
        Value::Object(map) => {
            let mut out = BTreeMap::new();
            for (k, v) in map {
                match scalar(&v) {
                    Some(s) => {
                        out.insert(k, s);
                    }
                    None => problems.add(
                        FIELD,
                        format!("the value of {k:?} must be a string, not {}", type_name(&v)),
                    ),
                }
            }
            out
        }
        Value::Array(items) => {
            let mut strings = Vec::new();
            for item in items {
                match item {
                    Value::String(s) => strings.push(s),
                    other => problems.add(
                        FIELD,
                        format!(
                            "entries must be key=value strings, not {}",
                            type_name(&other)
                        ),
                    ),
                }
            }
            pairs(problems, strings);
            out
        }
        other => {
            problems.discard(
                FIELD,
                format!("must be a map or key=value list, not {}", type_name(&other)),
            );
            BTreeMap::new()
        }
    }
}

/// `delete-older-than-days`: a number, or a string holding one; range checked by the
/// rules.
fn days(problems: &mut Problems, value: Option<Value>) -> Option<i64> {
    const FIELD: &str = "delete-older-than-days";
    const NOT_A_NUMBER: &str = "must be a positive whole number of days";
    match value {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.is_empty() {
                return None;
            }
            match s.parse::<i64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    problems.discard(FIELD, NOT_A_NUMBER);
                    None
                }
            }
        }
        Some(Value::Number(n)) => match n.as_i64() {
            Some(n) => Some(n),
            None => {
                problems.discard(FIELD, NOT_A_NUMBER);
                None
            }
        },
        Some(other) => {
            problems.discard(
                FIELD,
                format!("must be a number, not {}", type_name(&other)),
            );
            None
        }
    }
}

fn rule(message: impl Into<Cow<'static, str>>) -> ValidationError {
    ValidationError::new("invalid").with_message(message.into())
}

fn required_secret(value: &str) -> Result<(), ValidationError> {
    if value.trim().is_empty() {
        Err(rule("is required"))
    } else if value.chars().any(char::is_control) {
        Err(rule("must not contain control characters"))
    } else {
        Ok(())
    }
}

/// S3 bucket naming rules (general purpose buckets).
fn bucket_name(name: &str) -> Result<(), ValidationError> {
    if name.is_empty() {
        return Err(rule("is required"));
    }
    let mut broken: Vec<String> = Vec::new();
    if !(3..=63).contains(&name.len()) {
        broken.push(format!(
            "must be 3 to 63 characters long (it has {})",
            name.chars().count()
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
    {
        broken.push("may contain only lowercase letters, digits, dots and hyphens".into());
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !alnum(name.chars().next()) || !alnum(name.chars().last()) {
        broken.push("must start and end with a lowercase letter or digit".into());
    }
    if name.contains("..") {
        broken.push("must not contain two adjacent dots".into());
    }
    if name.parse::<IpAddr>().is_ok() {
        broken.push("must not be formatted as an IP address".into());
    }
    if broken.is_empty() {
        Ok(())
    } else {
        Err(rule(format!(
            "{name:?} is not a valid bucket name: {}",
            broken.join(", ")
        )))
    }
}

/// An `http` or `https` URL with a host, no credentials, query or fragment. The URL is
/// not echoed (it could carry credentials).
fn endpoint_url(endpoint: &str) -> Result<(), ValidationError> {
    let url =
        url::Url::parse(endpoint).map_err(|e| rule(format!("must be an http(s) URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(rule(format!(
            "must be an http or https URL, not {}",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(rule("must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(rule("must not contain credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(rule("must not have a query or fragment"));
    }
    Ok(())
}

fn key_prefix(path: &str) -> Result<(), ValidationError> {
    if path.chars().any(char::is_control) {
        Err(rule("must not contain control characters"))
    } else {
        Ok(())
    }
}

fn uri_style(style: &str) -> Result<(), ValidationError> {
    match style {
        "path" | "host" => Ok(()),
        other => Err(rule(format!("must be \"path\" or \"host\", not {other:?}"))),
    }
}

fn storage_class_name(class: &str) -> Result<(), ValidationError> {
    if class
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(())
    } else {
        Err(rule(format!(
            "{class:?} may contain only letters, digits, '_' and '-'"
        )))
    }
}

fn pem_certificates(chain: &[PemEntry]) -> Result<(), ValidationError> {
    let mut broken = Vec::new();
    for entry in chain {
        if let Err(why) = check_pem(&entry.pem) {
            broken.push(format!("entry {} {why}", entry.position));
        }
    }
    if broken.is_empty() {
        Ok(())
    } else {
        Err(rule(broken.join("; ")))
    }
}

/// One `tls-ca-chain` entry: one or more PEM `CERTIFICATE` sections, each holding a
/// DER certificate whose outer structure is sound.
fn check_pem(pem: &str) -> Result<(), String> {
    let mut count = 0;
    for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let der = der.map_err(|e| format!("is not valid PEM ({e})"))?;
        if !der::looks_like_certificate(der.as_ref()) {
            return Err(format!(
                "certificate {} is not a valid X.509 certificate",
                count + 1
            ));
        }
        count += 1;
    }
    if count == 0 {
        Err("holds no PEM certificate".into())
    } else {
        Ok(())
    }
}

fn attribute_names(attributes: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    if attributes.keys().any(|k| k.trim().is_empty()) {
        Err(rule("names must not be empty"))
    } else {
        Ok(())
    }
}

fn region_or_endpoint(checked: &Checked) -> Result<(), ValidationError> {
    if checked.region.is_none() && checked.endpoint.is_none() {
        let mut error = rule("region or endpoint must be set");
        error.add_param(Cow::Borrowed("field"), &"region");
        Err(error)
    } else {
        Ok(())
    }
}

/// Just enough DER to reject garbage before the TLS stack sees it (it panics on
/// certificates it cannot parse): `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE
/// { [0] version?, serial INTEGER, signature SEQUENCE, issuer SEQUENCE, validity
/// SEQUENCE, subject SEQUENCE, subjectPublicKeyInfo SEQUENCE, ... }, signatureAlgorithm
/// SEQUENCE, signatureValue BIT STRING }`.
mod der {
    const SEQUENCE: u8 = 0x30;
    const INTEGER: u8 = 0x02;
    const BIT_STRING: u8 = 0x03;
    const VERSION: u8 = 0xa0;

    /// Splits one tag-length-value off `input`: `(tag, content, rest)`.
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let mut len = 0usize;
            for &b in &rest[..n] {
                len = (len << 8) | usize::from(b);
            }
            rest = &rest[n..];
            len
        };
        if rest.len() < len {
            return None;
        }
        Some((tag, &rest[..len], &rest[len..]))
    }

    fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        match tlv(input)? {
            (t, content, rest) if t == tag => Some((content, rest)),
            _ => None,
        }
    }

    pub(super) fn looks_like_certificate(der: &[u8]) -> bool {
        fn check(der: &[u8]) -> Option<()> {
            let (cert, rest) = expect(der, SEQUENCE)?;
            if !rest.is_empty() {
                return None;
            }
            let (tbs, rest) = expect(cert, SEQUENCE)?;
            let (_, rest) = expect(rest, SEQUENCE)?;
            let (_, rest) = expect(rest, BIT_STRING)?;
            if !rest.is_empty() {
                return None;
            }
            let mut fields = tbs;
            if fields.first() == Some(&VERSION) {
                fields = expect(fields, VERSION)?.1;
            }
            let (_, mut fields) = expect(fields, INTEGER)?;
            for _ in 0..5 {
                fields = expect(fields, SEQUENCE)?.1;
            }
            Some(())
        }
        check(der).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> HashMap<String, String> {
        [
            ("access-key", "AK"),
            ("secret-key", "SK-value"),
            ("bucket", "my-bucket"),
            ("region", "us-east-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn minimal_relation_data_is_accepted() {
        let p = S3Parameters::from_relation_data(&base()).unwrap();
        assert_eq!(p.bucket(), "my-bucket");
        assert_eq!(p.path(), "");
        assert_eq!(p.addressing_style(), AddressingStyle::Virtual);
    }

    #[test]
    fn bucket_rules() {
        for ok in ["abc", "my.bucket-1", "a1b", &"a".repeat(63)] {
            assert!(bucket_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "My-Bucket",
            "-abc",
            "abc-",
            "a..b",
            "192.168.1.1",
            "under_score",
            &"a".repeat(64),
            "",
        ] {
            assert!(bucket_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn der_walker_rejects_garbage() {
        assert!(!der::looks_like_certificate(b""));
        assert!(!der::looks_like_certificate(&[
            0x30, 0x03, 0x02, 0x01, 0x01
        ]));
        assert!(!der::looks_like_certificate(&[
            0x30, 0x84, 0xff, 0xff, 0xff, 0xff
        ]));
    }
}

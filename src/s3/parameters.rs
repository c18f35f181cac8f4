//! [`S3Parameters`]: the s3 relation data, validated once at construction.
//!
//! The relation sends every value as a string, with kebab-case keys. Two versions of
//! the s3 interface are in use (charm-relation-interfaces, `interfaces/s3/v0` and
//! `v1`):
//! - **v0** puts `access-key` and `secret-key` in the databag;
//! - **v1** (s3-integrator 2 and the charm library 1.x) puts them in a Juju secret whose
//!   URI is in `secret-extra`, and adds `lib-version` (`MAJOR.MINOR`). The charm reads
//!   the secret with its framework's secret API and passes the content to
//!   [`S3Parameters::from_relation_data_with_secret`].
//!
//! Both carry `bucket` (required), `region`, `endpoint`, `path`, `s3-uri-style`,
//! `storage-class`, `tls-ca-chain` (a JSON-encoded list; each entry a PEM certificate
//! chain or the base64 of one), `s3-api-version` (`4`; `2` is refused: there is no
//! SigV2 signer), `attributes` (HTTP headers: a JSON list of `Name=value` strings, or one
//! `;`-separated string; server-side encryption is taken from them, see
//! [`ServerSideEncryption`]) and `delete-older-than-days`. `session-token` (temporary
//! credentials) is accepted too. The same keys are accepted through serde from JSON or
//! YAML documents, where lists may be real lists, `attributes` a map and numbers
//! numbers.
//!
//! Construction goes through one validation step (`Checked::problems`), so an invalid
//! [`S3Parameters`] cannot exist, and nothing the relation sends can panic the crate or
//! reach a header or a config file unchecked: no field may hold control characters,
//! `region` must look like a region name, certificates are parsed by the same parser
//! the TLS stack uses. Every problem is reported at once in [`ConfigError::Invalid`],
//! each naming its kebab-case field. Secret values (the access and secret keys, the
//! session token, the SSE-C customer key) never appear in `Debug`, `Display` or error
//! messages.
//!
//! Relation data always carries keys (v0) or the secret holding them (v1). Only a
//! caller that opts in ([`S3Parameters::deserialize_with_ambient_credentials`],
//! [`S3Parameters::ambient_builder`]: the command line, when its file and environment
//! give no keys) gets parameters whose credentials come from the standard AWS chain
//! ([`CredentialSource::Ambient`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;
use serde_json::Value;

use super::credentials::{AmbientCredentials, CredentialSource};
use super::sse::{self, ServerSideEncryption};
use crate::error::{ConfigError, FieldProblem};

/// What `Debug` and `Display` print instead of a secret.
const REDACTED: &str = "******";

/// The field names as the relation spells them, in the order problems are reported.
const FIELDS: [&str; 15] = [
    "secret-extra",
    "access-key",
    "secret-key",
    "session-token",
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

/// The keys a v1 relation's secret (named by `secret-extra`) may hold.
const SECRET_FIELDS: [&str; 3] = ["access-key", "secret-key", "session-token"];

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

/// The S3 connection parameters from the s3 relation, validated.
///
/// Build it with [`S3Parameters::from_relation_data`] (v0 databags),
/// [`S3Parameters::from_relation_data_with_secret`] (v1 databags and their secret),
/// [`S3Parameters::builder`], or through serde (`Deserialize`, kebab-case keys); each
/// runs the same validation.
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
    session_token: Option<String>,
    bucket: String,
    region: Option<String>,
    endpoint: Option<String>,
    path: String,
    s3_uri_style: Option<String>,
    storage_class: Option<String>,
    tls_ca_chain: Vec<String>,
    s3_api_version: Option<String>,
    attributes: BTreeMap<String, String>,
    server_side_encryption: Option<ServerSideEncryption>,
    lib_version: Option<String>,
    delete_older_than_days: Option<u32>,
    ambient: Option<AmbientCredentials>,
    /// Not relation data: set by the program ([`S3Parameters::with_request_timeout`]).
    request_timeout: std::time::Duration,
}

/// The default per-request deadline of [`S3Parameters::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

impl S3Parameters {
    /// The relation keys the parameters are read from (s3 interface v0 and v1), as the
    /// relation spells them: a tool that reads them from a file a person writes can
    /// refuse any other key (a misspelt `endpiont`) instead of ignoring it.
    ///
    /// ```
    /// use synapse_backup::S3Parameters;
    /// assert!(S3Parameters::RELATION_KEYS.contains(&"delete-older-than-days"));
    /// ```
    pub const RELATION_KEYS: &'static [&'static str] = &FIELDS;

    /// Sets the overall deadline of every S3 request the crate's client sends
    /// ([`S3Client`](crate::S3Client)): a request without an answer by then fails with
    /// [`S3Error::TimedOut`](crate::S3Error::TimedOut) (each attempt gets it, and all
    /// attempts together three times it), and a body that stops flowing for that long
    /// is given up. Default 2 minutes; at least one
    /// second. Not relation data: the program sets it.
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.request_timeout = timeout.max(std::time::Duration::from_secs(1));
        self
    }

    /// The per-request deadline (see [`with_request_timeout`](Self::with_request_timeout)).
    pub fn request_timeout(&self) -> std::time::Duration {
        self.request_timeout
    }

    /// Builds validated parameters from relation data (string keys and values, as the
    /// s3 relation sends them). Unknown keys are ignored. A v1 databag (keys in the
    /// Juju secret named by `secret-extra`) needs
    /// [`from_relation_data_with_secret`](Self::from_relation_data_with_secret).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] listing every problem, each with its kebab-case field;
    /// for a v1 databag, a problem with `secret-extra` saying the secret's content is
    /// needed.
    pub fn from_relation_data(data: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut raw = RawS3Parameters::default();
        for (key, value) in data {
            if let Some(slot) = raw.slot(key) {
                *slot = Some(Value::String(value.clone()));
            }
        }
        Self::try_from(raw)
    }

    /// Builds validated parameters from a v1 databag and the content of the Juju secret
    /// its `secret-extra` names (`access-key`, `secret-key`, optionally
    /// `session-token`), as the charm's framework returns it. Values in the secret take
    /// precedence over the databag; other keys in the secret are ignored. A v0 databag
    /// works too.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use synapse_backup::S3Parameters;
    ///
    /// let owned = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
    ///     pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    /// };
    /// let databag = owned(&[
    ///     ("bucket", "synapse-backups"),
    ///     ("endpoint", "https://s3.example.com"),
    ///     ("secret-extra", "secret://4a1b2c3d/cq9s0e7mp25c76d6bdn0"),
    ///     ("lib-version", "1.10"),
    /// ]);
    /// // In a charm: self.model.get_secret(id=databag["secret-extra"]).get_content()
    /// let secret = owned(&[("access-key", "AKIDEXAMPLE"), ("secret-key", "wJalrXUtnFEMI")]);
    /// let params = S3Parameters::from_relation_data_with_secret(&databag, &secret)?;
    /// assert_eq!(params.access_key(), "AKIDEXAMPLE");
    /// assert_eq!(params.lib_version(), Some("1.10"));
    /// assert!(S3Parameters::from_relation_data(&databag).is_err());
    /// # Ok::<(), synapse_backup::ConfigError>(())
    /// ```
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] listing every problem, each with its kebab-case field.
    pub fn from_relation_data_with_secret(
        data: &HashMap<String, String>,
        secret: &HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let mut raw = RawS3Parameters::default();
        for (key, value) in data {
            if let Some(slot) = raw.slot(key) {
                *slot = Some(Value::String(value.clone()));
            }
        }
        for (key, value) in secret {
            if SECRET_FIELDS.contains(&key.as_str())
                && let Some(slot) = raw.slot(key)
            {
                *slot = Some(Value::String(value.clone()));
            }
        }
        raw.secret_given = true;
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

    /// Deserialises parameters from a document (the same keys and validation as
    /// `Deserialize`) where the keys may be left out: when `access-key`, `secret-key`
    /// and `session-token` are all absent (or empty) and no `secret-extra` names a Juju
    /// secret, the credentials come from the standard AWS chain described by `ambient`
    /// ([`CredentialSource::Ambient`]). Relation data never goes through here: for it,
    /// missing keys stay an error.
    ///
    /// ```
    /// use serde::Deserialize as _;
    /// use synapse_backup::S3Parameters;
    /// use synapse_backup::{AmbientCredentials, CredentialSource};
    ///
    /// let document = serde_json::json!({"bucket": "synapse-backups", "region": "eu-west-1"});
    /// let ambient = AmbientCredentials::new([("AWS_PROFILE", "backups")], None)?;
    /// let params = S3Parameters::deserialize_with_ambient_credentials(&document, ambient)?;
    /// assert!(matches!(params.credential_source(), CredentialSource::Ambient(a) if a.profile() == "backups"));
    /// assert!(S3Parameters::deserialize(&document).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// The deserialiser's error, carrying the [`ConfigError`] message that lists every
    /// problem with its kebab-case field (`access-key` or `secret-key` when only one of
    /// them is given, `session-token` when it is given without them).
    pub fn deserialize_with_ambient_credentials<'de, D>(
        deserializer: D,
        ambient: AmbientCredentials,
    ) -> Result<Self, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        let mut raw = RawS3Parameters::deserialize(deserializer)?;
        raw.ambient = Some(ambient);
        Self::try_from(raw).map_err(serde::de::Error::custom)
    }

    /// Starts building parameters whose credentials come from the standard AWS chain
    /// described by `ambient`; [`S3ParametersBuilder::build`] validates them.
    pub fn ambient_builder(
        bucket: impl Into<String>,
        ambient: AmbientCredentials,
    ) -> S3ParametersBuilder {
        let raw = RawS3Parameters {
            bucket: Some(Value::String(bucket.into())),
            ambient: Some(ambient),
            ..RawS3Parameters::default()
        };
        S3ParametersBuilder { raw }
    }

    /// Where the credentials come from: static keys, or the AWS chain.
    pub fn credential_source(&self) -> CredentialSource<'_> {
        match &self.ambient {
            Some(ambient) => CredentialSource::Ambient(ambient),
            None => CredentialSource::Static {
                access_key: &self.access_key,
                secret_key: &self.secret_key,
                session_token: self.session_token.as_deref(),
            },
        }
    }

    /// The access key id (empty when the credentials come from the AWS chain, see
    /// [`credential_source`](Self::credential_source)).
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The secret access key (empty when the credentials come from the AWS chain).
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// The session token of temporary credentials (`session-token`), if any.
    pub fn session_token(&self) -> Option<&str> {
        self.session_token.as_deref()
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

    /// The key prefix as given (may be empty). See [`S3Client::object_key`](crate::S3Client::object_key) for how
    /// keys are built from it.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The storage class, if set.
    pub fn storage_class(&self) -> Option<&str> {
        self.storage_class.as_deref()
    }

    /// PEM CA certificates to trust in addition to the system roots. Each entry holds
    /// one or more certificates; entries the relation sent in base64 are decoded.
    pub fn tls_ca_chain(&self) -> &[String] {
        &self.tls_ca_chain
    }

    /// The S3 API (signature) version, if set: always `4`.
    pub fn s3_api_version(&self) -> Option<&str> {
        self.s3_api_version.as_deref()
    }

    /// The `attributes` (HTTP headers) other than the server-side encryption ones,
    /// which are in [`server_side_encryption`](Self::server_side_encryption).
    pub fn attributes(&self) -> &BTreeMap<String, String> {
        &self.attributes
    }

    /// The server-side encryption `attributes` ask for, if any.
    pub fn server_side_encryption(&self) -> Option<&ServerSideEncryption> {
        self.server_side_encryption.as_ref()
    }

    /// The provider's charm library version (`lib-version`, `MAJOR.MINOR`), if sent.
    pub fn lib_version(&self) -> Option<&str> {
        self.lib_version.as_deref()
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
            .field("credentials", &self.credential_source())
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
            .field("server_side_encryption", &self.server_side_encryption)
            .field("lib_version", &self.lib_version)
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
            ", s3-uri-style {}",
            self.addressing_style().as_relation_value()
        )?;
        match &self.ambient {
            Some(ambient) => write!(
                f,
                ", credentials from the AWS chain (profile {})",
                ambient.profile()
            )?,
            None => write!(f, ", access-key {REDACTED}, secret-key {REDACTED}")?,
        }
        if self.session_token.is_some() {
            write!(f, ", session-token {REDACTED}")?;
        }
        if let Some(class) = &self.storage_class {
            write!(f, ", storage-class {class}")?;
        }
        if !self.tls_ca_chain.is_empty() {
            write!(f, ", {} tls-ca-chain entries", self.tls_ca_chain.len())?;
        }
        if let Some(sse) = &self.server_side_encryption {
            write!(f, ", {}", sse.kind())?;
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

    /// The session token of temporary credentials (`session-token`).
    pub fn session_token(self, token: impl Into<String>) -> Self {
        self.set("session-token", Value::String(token.into()))
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

    /// CA certificates to trust (`tls-ca-chain`): PEM, or the base64 of PEM.
    pub fn tls_ca_chain<I, S>(self, pems: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let list = pems.into_iter().map(|p| Value::String(p.into())).collect();
        self.set("tls-ca-chain", Value::Array(list))
    }

    /// The S3 API version (`s3-api-version`): `4`.
    pub fn s3_api_version(self, version: impl Into<String>) -> Self {
        self.set("s3-api-version", Value::String(version.into()))
    }

    /// Extra attributes (`attributes`): HTTP header names and values, server-side
    /// encryption headers among them.
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
    session_token: Option<Value>,
    secret_extra: Option<Value>,
    bucket: Option<Value>,
    region: Option<Value>,
    endpoint: Option<Value>,
    path: Option<Value>,
    s3_uri_style: Option<Value>,
    storage_class: Option<Value>,
    tls_ca_chain: Option<Value>,
    s3_api_version: Option<Value>,
    attributes: Option<Value>,
    lib_version: Option<Value>,
    delete_older_than_days: Option<Value>,
    /// Whether the caller passed the content of the `secret-extra` secret.
    #[serde(skip)]
    secret_given: bool,
    /// The AWS chain to use when no keys are given (the caller opted in).
    #[serde(skip)]
    ambient: Option<AmbientCredentials>,
}

impl RawS3Parameters {
    fn slot(&mut self, field: &str) -> Option<&mut Option<Value>> {
        Some(match field {
            "access-key" => &mut self.access_key,
            "secret-key" => &mut self.secret_key,
            "session-token" => &mut self.session_token,
            "secret-extra" => &mut self.secret_extra,
            "bucket" => &mut self.bucket,
            "region" => &mut self.region,
            "endpoint" => &mut self.endpoint,
            "path" => &mut self.path,
            "s3-uri-style" => &mut self.s3_uri_style,
            "storage-class" => &mut self.storage_class,
            "tls-ca-chain" => &mut self.tls_ca_chain,
            "s3-api-version" => &mut self.s3_api_version,
            "attributes" => &mut self.attributes,
            "lib-version" => &mut self.lib_version,
            "delete-older-than-days" => &mut self.delete_older_than_days,
            _ => return None,
        })
    }
}

/// One `tls-ca-chain` entry (as PEM) and its 1-based position in the list as given.
#[derive(serde::Serialize)]
struct PemEntry {
    position: usize,
    pem: String,
}

/// Values coerced to their types, ready for the rules ([`Checked::problems`]).
struct Checked {
    access_key: String,
    secret_key: String,
    session_token: Option<String>,
    secret_extra: Option<String>,
    bucket: String,
    region: Option<String>,
    endpoint: Option<String>,
    path: String,
    s3_uri_style: Option<String>,
    storage_class: Option<String>,
    tls_ca_chain: Vec<PemEntry>,
    s3_api_version: Option<String>,
    attributes: BTreeMap<String, String>,
    lib_version: Option<String>,
    delete_older_than_days: Option<i64>,
}

impl Checked {
    /// The values of `raw` coerced to their types; a value of the wrong type is a
    /// problem and is dropped.
    fn coerce(raw: RawS3Parameters, problems: &mut Problems) -> Checked {
        Checked {
            access_key: secret(problems, "access-key", raw.access_key),
            secret_key: secret(problems, "secret-key", raw.secret_key),
            session_token: Some(secret(problems, "session-token", raw.session_token))
                .filter(|s| !s.is_empty()),
            secret_extra: string(problems, "secret-extra", raw.secret_extra),
            bucket: string(problems, "bucket", raw.bucket).unwrap_or_default(),
            region: string(problems, "region", raw.region),
            endpoint: string(problems, "endpoint", raw.endpoint),
            path: path_string(problems, raw.path),
            s3_uri_style: string(problems, "s3-uri-style", raw.s3_uri_style)
                .map(|s| s.to_ascii_lowercase()),
            storage_class: string(problems, "storage-class", raw.storage_class),
            tls_ca_chain: pem_list(problems, raw.tls_ca_chain),
            s3_api_version: scalar_string(problems, "s3-api-version", raw.s3_api_version),
            attributes: attribute_map(problems, raw.attributes),
            lib_version: scalar_string(problems, "lib-version", raw.lib_version),
            delete_older_than_days: days(problems, raw.delete_older_than_days),
        }
    }

    /// What breaks a rule, each with its field: every field's own rule (on a value that
    /// is present), then the rules across fields.
    fn problems(&self) -> Vec<FieldProblem> {
        let optional = |value: &Option<String>, check: fn(&str) -> Result<(), Rule>| {
            value.as_deref().map_or(Ok(()), check)
        };
        let days = match self.delete_older_than_days {
            Some(d) if !(1..=i64::from(u32::MAX)).contains(&d) => {
                Err(rule("must be a positive whole number of days"))
            }
            _ => Ok(()),
        };
        [
            ("access-key", access_key_id(&self.access_key)),
            ("secret-key", required_secret(&self.secret_key)),
            (
                "session-token",
                optional(&self.session_token, header_safe_secret),
            ),
            ("secret-extra", optional(&self.secret_extra, secret_uri)),
            ("bucket", bucket_name(&self.bucket)),
            ("region", optional(&self.region, region_name)),
            ("endpoint", optional(&self.endpoint, endpoint_url)),
            ("path", key_prefix(&self.path)),
            ("s3-uri-style", optional(&self.s3_uri_style, uri_style)),
            (
                "storage-class",
                optional(&self.storage_class, storage_class_name),
            ),
            ("tls-ca-chain", pem_certificates(&self.tls_ca_chain)),
            (
                "s3-api-version",
                optional(&self.s3_api_version, api_version),
            ),
            ("attributes", attribute_entries(&self.attributes)),
            ("lib-version", optional(&self.lib_version, major_minor)),
            ("delete-older-than-days", days),
            ("region", region_or_endpoint(self)),
        ]
        .into_iter()
        .filter_map(|(field, result)| {
            result.err().map(|Rule(message)| FieldProblem {
                field: field.into(),
                message: message.into_owned(),
            })
        })
        .collect()
    }
}

impl TryFrom<RawS3Parameters> for S3Parameters {
    type Error = ConfigError;

    fn try_from(mut raw: RawS3Parameters) -> Result<Self, ConfigError> {
        let mut problems = Problems::default();
        let secret_given = raw.secret_given;
        let absent = |v: &Option<Value>| match v {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.is_empty(),
            Some(_) => false,
        };
        // The AWS chain, when the caller opted in and nothing names keys.
        let ambient = raw.ambient.take().filter(|_| {
            absent(&raw.access_key)
                && absent(&raw.secret_key)
                && absent(&raw.session_token)
                && absent(&raw.secret_extra)
        });
        if ambient.is_some() {
            problems
                .discarded
                .extend(["access-key".into(), "secret-key".into()]);
        }
        let mut checked = Checked::coerce(raw, &mut problems);
        // A v1 databag: the keys are in the secret `secret-extra` names.
        if checked.secret_extra.is_some()
            && !secret_given
            && checked.access_key.is_empty()
            && checked.secret_key.is_empty()
        {
            problems.discard(
                "secret-extra",
                "names the juju secret holding access-key and secret-key (s3 interface v1): \
                 read it and pass its content with from_relation_data_with_secret",
            );
            problems
                .discarded
                .extend(["access-key".into(), "secret-key".into()]);
        }
        let mut sse_problems = Vec::new();
        let server_side_encryption = sse::extract(&mut checked.attributes, &mut sse_problems);
        for message in sse_problems {
            problems.add("attributes", message);
        }
        problems.add_rules(checked.problems());
        problems.into_result()?;
        Ok(S3Parameters {
            access_key: checked.access_key,
            secret_key: checked.secret_key,
            session_token: checked.session_token,
            bucket: checked.bucket,
            region: checked.region,
            endpoint: checked.endpoint,
            path: checked.path,
            s3_uri_style: checked.s3_uri_style,
            storage_class: checked.storage_class,
            tls_ca_chain: checked.tls_ca_chain.into_iter().map(|e| e.pem).collect(),
            s3_api_version: checked.s3_api_version,
            attributes: checked.attributes,
            server_side_encryption,
            lib_version: checked.lib_version,
            delete_older_than_days: checked
                .delete_older_than_days
                .and_then(|d| u32::try_from(d).ok()),
            ambient,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
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

    /// The rules' problems, except on fields whose value was already discarded.
    fn add_rules(&mut self, found: Vec<FieldProblem>) {
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

/// An optional short value that documents may give as a string or a number
/// (`s3-api-version: 4`), trimmed; empty means unset.
fn scalar_string(problems: &mut Problems, field: &str, value: Option<Value>) -> Option<String> {
    match value {
        Some(Value::Number(n)) => Some(n.to_string()),
        other => string(problems, field, other),
    }
}

/// `tls-ca-chain`: a JSON-encoded list (as the relation sends it), a real list, or one
/// bare entry; each entry PEM or the base64 of PEM (or of one DER certificate).
fn pem_list(problems: &mut Problems, value: Option<Value>) -> Vec<PemEntry> {
    const FIELD: &str = "tls-ca-chain";
    let list = match value {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.is_empty() {
                return Vec::new();
            }
            if !s.starts_with(['[', '"', '{']) {
                vec![Value::String(s.to_string())]
            } else {
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
            Value::String(text) if !text.trim().is_empty() => match as_pem(&text) {
                Ok(pem) => out.push(PemEntry {
                    position: i + 1,
                    pem,
                }),
                Err(why) => problems.add(FIELD, format!("entry {} {why}", i + 1)),
            },
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

/// `attributes`: a map, a list of `Name=value` strings (the v1 schema), either of them
/// JSON-encoded in a string, or one `;`-separated string of `Name=value` entries (the
/// interface's example). Values may hold `=` and `,`. Entries are never echoed in
/// messages (they may hold an SSE-C key).
fn attribute_map(problems: &mut Problems, value: Option<Value>) -> BTreeMap<String, String> {
    const FIELD: &str = "attributes";
    let value = match value {
        None | Some(Value::Null) => return BTreeMap::new(),
        Some(Value::String(s)) if s.trim().starts_with(['{', '[']) => {
            match serde_json::from_str::<Value>(s.trim()) {
                Ok(v) => v,
                Err(_) => {
                    problems.discard(FIELD, "is not valid JSON");
                    return BTreeMap::new();
                }
            }
        }
        Some(v) => v,
    };
    let entries = match value {
        Value::String(s) => name_value_entries(problems, s.split(';')),
        Value::Object(map) => {
            let mut entries = Vec::new();
            for (k, v) in map {
                match scalar(&v) {
                    Some(s) => entries.push((k, s)),
                    None => problems.add(
                        FIELD,
                        format!("the value of {k:?} must be a string, not {}", type_name(&v)),
                    ),
                }
            }
            entries
        }
        Value::Array(items) => {
            let mut strings = Vec::new();
            for item in items {
                match item {
                    Value::String(s) => strings.push(s),
                    other => problems.add(
                        FIELD,
                        format!(
                            "entries must be Name=value strings, not {}",
                            type_name(&other)
                        ),
                    ),
                }
            }
            name_value_entries(problems, strings.iter().map(String::as_str))
        }
        other => {
            problems.discard(
                FIELD,
                format!(
                    "must be a map or Name=value list, not {}",
                    type_name(&other)
                ),
            );
            return BTreeMap::new();
        }
    };
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in entries {
        if let Some(old) = out.keys().find(|k| k.eq_ignore_ascii_case(&name)) {
            problems.add(FIELD, format!("{old:?} is given more than once"));
        } else {
            out.insert(name, value);
        }
    }
    out
}

/// `Name=value` entries (blank ones skipped), split at their first `=` and trimmed.
/// A malformed entry is reported by its position, never echoed.
fn name_value_entries<'a>(
    problems: &mut Problems,
    items: impl Iterator<Item = &'a str>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, item) in items.enumerate() {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        match item.split_once('=') {
            Some((k, v)) => out.push((k.trim().to_string(), v.trim().to_string())),
            None => problems.add(
                "attributes",
                format!("entry {} is not of the form Name=value", i + 1),
            ),
        }
    }
    out
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

/// A broken rule: what is wrong with the value (its field is named by the caller).
struct Rule(Cow<'static, str>);

fn rule(message: impl Into<Cow<'static, str>>) -> Rule {
    Rule(message.into())
}

const CONTROL: &str = "must not contain control characters";

fn has_control(value: &str) -> bool {
    value.chars().any(char::is_control)
}

fn required_secret(value: &str) -> Result<(), Rule> {
    if value.trim().is_empty() {
        Err(rule("is required"))
    } else if has_control(value) {
        Err(rule(CONTROL))
    } else {
        Ok(())
    }
}

/// The access key id goes into the `Authorization` header: visible ASCII only.
fn access_key_id(value: &str) -> Result<(), Rule> {
    required_secret(value)?;
    header_safe_secret(value)
}

/// A secret sent in a header (`x-amz-security-token`): visible ASCII, no spaces.
fn header_safe_secret(value: &str) -> Result<(), Rule> {
    if value.chars().all(|c| c.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(rule(
            "may contain only visible ASCII characters (no spaces)",
        ))
    }
}

/// A Juju secret URI (`secret:…` or `secret://…`). Not echoed.
fn secret_uri(value: &str) -> Result<(), Rule> {
    if value.starts_with("secret:") && value.chars().all(|c| c.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(rule(
            "must be a juju secret uri (secret:…, visible ASCII, no spaces)",
        ))
    }
}

/// A region name as AWS spells them (`us-east-1`, `eu-central-2`), which S3-compatible
/// servers follow too (`fr-par`, `nyc3`, `auto`): 1 to 63 lower-case letters, digits and
/// hyphens, starting and ending with a letter or digit. The region goes into request
/// signatures, host names and the aws CLI's config file.
fn region_name(region: &str) -> Result<(), Rule> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = (1..=63).contains(&region.len())
        && region.chars().all(|c| allowed(c) || c == '-')
        && region.chars().next().is_some_and(allowed)
        && region.chars().last().is_some_and(allowed);
    if ok {
        Ok(())
    } else if has_control(region) {
        Err(rule(format!("{region:?} is not a region name: {CONTROL}")))
    } else {
        Err(rule(format!(
            "{region:?} is not a region name (like us-east-1: lower-case letters, digits and hyphens)"
        )))
    }
}

/// `s3-api-version`: `4`. `2` (SigV2) is refused: the AWS SDK has no SigV2 signer and
/// AWS retired it.
fn api_version(version: &str) -> Result<(), Rule> {
    match version {
        "4" | "v4" | "s3v4" => Ok(()),
        "2" | "v2" | "s3v2" => Err(rule(
            "2 (signature version 2) is not supported: only 4 (SigV4) is",
        )),
        other => Err(rule(format!("must be 4, not {other:?}"))),
    }
}

/// `lib-version`: `MAJOR.MINOR`.
fn major_minor(version: &str) -> Result<(), Rule> {
    let digits = |s: &str| !s.is_empty() && s.len() <= 9 && s.chars().all(|c| c.is_ascii_digit());
    match version.split_once('.') {
        Some((major, minor)) if digits(major) && digits(minor) => Ok(()),
        _ => Err(rule(format!(
            "must be MAJOR.MINOR (like 1.10), not {version:?}"
        ))),
    }
}

/// S3 bucket naming rules (general purpose buckets).
fn bucket_name(name: &str) -> Result<(), Rule> {
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
fn endpoint_url(endpoint: &str) -> Result<(), Rule> {
    // The URL parser silently drops tabs and newlines: refuse them first.
    if has_control(endpoint) {
        return Err(rule(CONTROL));
    }
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

fn key_prefix(path: &str) -> Result<(), Rule> {
    if has_control(path) {
        Err(rule(CONTROL))
    } else {
        Ok(())
    }
}

fn uri_style(style: &str) -> Result<(), Rule> {
    match style {
        "path" | "host" => Ok(()),
        other => Err(rule(format!("must be \"path\" or \"host\", not {other:?}"))),
    }
}

fn storage_class_name(class: &str) -> Result<(), Rule> {
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

fn pem_certificates(chain: &[PemEntry]) -> Result<(), Rule> {
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

/// One `tls-ca-chain` entry (PEM): one or more `CERTIFICATE` sections, each of which
/// webpki accepts as a trust anchor. These are the very calls the SDK's TLS setup makes
/// (and unwraps) when it loads the chain, so anything accepted here loads there.
fn check_pem(pem: &str) -> Result<(), String> {
    let ders = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("is not valid PEM ({e})"))?;
    if ders.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    for (i, der) in ders.iter().enumerate() {
        webpki::anchor_from_trusted_cert(der).map_err(|e| {
            format!(
                "certificate {} is not a valid X.509 certificate ({e})",
                i + 1
            )
        })?;
    }
    Ok(())
}

/// A `tls-ca-chain` entry as PEM text: PEM as given, or decoded from base64 (of PEM
/// text, or of one DER certificate, which is wrapped in PEM).
fn as_pem(given: &str) -> Result<String, String> {
    let text = given.trim();
    if text.starts_with("-----BEGIN") {
        return Ok(given.to_string());
    }
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let Ok(bytes) = BASE64.decode(compact.as_bytes()) else {
        return Err("holds no PEM certificate and is not base64 of one".into());
    };
    match String::from_utf8(bytes) {
        Ok(pem) if pem.trim_start().starts_with("-----BEGIN") => Ok(pem.trim().to_string()),
        Ok(_) => Err("is base64 but not of a PEM certificate".into()),
        Err(e) => {
            let der = e.into_bytes();
            let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
            let body = BASE64.encode(&der);
            for line in body.as_bytes().chunks(64) {
                pem.push_str(std::str::from_utf8(line).unwrap_or_default());
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----");
            Ok(pem)
        }
    }
}

/// Attribute names are HTTP header names (RFC 9110 tokens); values hold no control
/// characters. Values are not echoed.
fn attribute_entries(attributes: &BTreeMap<String, String>) -> Result<(), Rule> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    let mut broken = Vec::new();
    for (name, value) in attributes {
        if name.is_empty() {
            broken.push("names must not be empty".to_string());
        } else if !name.chars().all(token) {
            broken.push(format!("{name:?} is not an HTTP header name"));
        }
        if has_control(value) {
            broken.push(format!("the value of {name:?} {CONTROL}"));
        }
    }
    if broken.is_empty() {
        Ok(())
    } else {
        Err(rule(broken.join("; ")))
    }
}

fn region_or_endpoint(checked: &Checked) -> Result<(), Rule> {
    if checked.region.is_none() && checked.endpoint.is_none() {
        Err(rule("region or endpoint must be set"))
    } else {
        Ok(())
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

    /// Every field's rule is run, and each broken one is reported once under its own
    /// field (the rules once ran through `validator`'s derive; now plain code).
    #[test]
    fn every_rule_names_its_field() {
        let mut data = base();
        data.remove("region");
        for (k, v) in [
            ("access-key", "A K"),
            ("secret-key", " "),
            ("session-token", "t\u{7}"),
            ("bucket", "B"),
            ("path", "a\u{1}b"),
            ("s3-uri-style", "sideways"),
            ("storage-class", "a/b"),
            ("tls-ca-chain", "not a certificate"),
            ("s3-api-version", "x"),
            ("attributes", "a=b\u{1}"),
            ("lib-version", "one"),
            ("delete-older-than-days", "0"),
        ] {
            data.insert(k.into(), v.into());
        }
        let e = S3Parameters::from_relation_data(&data).unwrap_err();
        let mut fields = e.fields();
        fields.sort_unstable();
        let mut expected = vec![
            "access-key",
            "attributes",
            "bucket",
            "delete-older-than-days",
            "lib-version",
            "path",
            "region",
            "s3-api-version",
            "s3-uri-style",
            "secret-key",
            "session-token",
            "storage-class",
            "tls-ca-chain",
        ];
        expected.sort_unstable();
        assert_eq!(fields, expected, "{e}");
        let text = e.to_string();
        assert!(text.contains("region or endpoint must be set"), "{text}");
        assert!(
            text.contains("must be a positive whole number of days"),
            "{text}"
        );

        let mut data = base();
        data.insert("region".into(), "eu west".into());
        data.insert("endpoint".into(), "ftp://x".into());
        data.insert("secret-extra".into(), "not a secret uri\n".into());
        let e = S3Parameters::from_relation_data_with_secret(&data, &HashMap::new()).unwrap_err();
        let mut fields = e.fields();
        fields.sort_unstable();
        assert_eq!(fields, ["endpoint", "region", "secret-extra"], "{e}");
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
    fn webpki_rejects_garbage_the_sdk_would_panic_on() {
        for der in [
            &b""[..],
            &[0x30, 0x03, 0x02, 0x01, 0x01],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
        ] {
            let pem = format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                BASE64.encode(der)
            );
            assert!(check_pem(&pem).is_err(), "{der:?}");
        }
    }
}

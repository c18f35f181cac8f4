//! `S3Parameters`: the s3-integrator relation data, validated.
//! (Stub: validation, serde and from_relation_data are filled in by the foundation work.)

use std::collections::BTreeMap;

/// How bucket names are put in request URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressingStyle {
    /// `https://endpoint/bucket/key` (`s3-uri-style: path`).
    Path,
    /// `https://bucket.endpoint/key` (`s3-uri-style: host`, the default).
    Virtual,
}

/// The S3 connection parameters from the s3-integrator relation.
#[derive(Clone)]
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
    /// The access key id.
    pub fn access_key(&self) -> &str { &self.access_key }
    /// The secret access key.
    pub fn secret_key(&self) -> &str { &self.secret_key }
    /// The bucket name.
    pub fn bucket(&self) -> &str { &self.bucket }
    /// The region, if set.
    pub fn region(&self) -> Option<&str> { self.region.as_deref() }
    /// The endpoint URL, if set.
    pub fn endpoint(&self) -> Option<&str> { self.endpoint.as_deref() }
    /// The key prefix (may be empty).
    pub fn path(&self) -> &str { &self.path }
    /// The storage class, if set.
    pub fn storage_class(&self) -> Option<&str> { self.storage_class.as_deref() }
    /// PEM CA certificates to trust in addition to the system roots.
    pub fn tls_ca_chain(&self) -> &[String] { &self.tls_ca_chain }
    /// The S3 API version, if set.
    pub fn s3_api_version(&self) -> Option<&str> { self.s3_api_version.as_deref() }
    /// Extra attributes.
    pub fn attributes(&self) -> &BTreeMap<String, String> { &self.attributes }
    /// Retention in days, if set.
    pub fn delete_older_than_days(&self) -> Option<u32> { self.delete_older_than_days }
    /// `Path` for `s3-uri-style: path`, `Virtual` otherwise.
    pub fn addressing_style(&self) -> AddressingStyle {
        if self.s3_uri_style.as_deref() == Some("path") { AddressingStyle::Path } else { AddressingStyle::Virtual }
    }
}

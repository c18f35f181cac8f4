//! `S3Client` over `aws-sdk-s3` (stub; filled in by the foundation work).
#![allow(missing_docs)]

use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// One object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
}

/// What HeadObject says about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHead {
    pub key: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
    pub metadata: HashMap<String, String>,
}

/// A client for the configured bucket.
#[derive(Clone, Debug)]
pub struct S3Client {}

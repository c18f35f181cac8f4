//! Server-side encryption asked for by the relation's `attributes`
//! ([`ServerSideEncryption`]) and the SSE-C customer key ([`CustomerKey`]).
//!
//! The s3 interface carries encryption as HTTP headers in `attributes`:
//! `X-Amz-Server-Side-Encryption` (`AES256`, `aws:kms` or `aws:kms:dsse`),
//! `X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id`, and for keys the customer provides
//! (SSE-C) `X-Amz-Server-Side-Encryption-Customer-Algorithm` (`AES256`),
//! `X-Amz-Server-Side-Encryption-Customer-Key` (the base64 of 32 bytes) and, optionally,
//! `X-Amz-Server-Side-Encryption-Customer-Key-MD5`. Names are matched without regard to
//! case. S3 wants SSE-S3 and SSE-KMS headers on writes only (it refuses them on GET and
//! HEAD) and SSE-C headers on every write, read and HEAD of the object.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use md5::{Digest, Md5};

/// The algorithm S3 supports for SSE-C (and names SSE-S3 with).
pub const AES256: &str = "AES256";

const SSE: &str = "x-amz-server-side-encryption";
const KMS_KEY_ID: &str = "x-amz-server-side-encryption-aws-kms-key-id";
const CONTEXT: &str = "x-amz-server-side-encryption-context";
const CUSTOMER_ALGORITHM: &str = "x-amz-server-side-encryption-customer-algorithm";
const CUSTOMER_KEY: &str = "x-amz-server-side-encryption-customer-key";
const CUSTOMER_KEY_MD5: &str = "x-amz-server-side-encryption-customer-key-md5";

/// How objects are encrypted at rest by the server.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerSideEncryption {
    /// SSE-S3: keys managed by S3 (`X-Amz-Server-Side-Encryption: AES256`). Sent on
    /// writes only.
    S3,
    /// SSE-KMS (`aws:kms`, or `aws:kms:dsse` for dual-layer), with the KMS key id when
    /// one is given (else the account's default key). Sent on writes only.
    Kms {
        /// `true` for `aws:kms:dsse`.
        dsse: bool,
        /// The KMS key id, alias or ARN.
        key_id: Option<String>,
    },
    /// SSE-C: a 256-bit key the customer provides, sent on every write, read and HEAD
    /// of the object. Objects written with it cannot be read without it.
    CustomerKey(CustomerKey),
}

impl ServerSideEncryption {
    /// The value of `X-Amz-Server-Side-Encryption` on writes (and of the aws CLI's
    /// `--sse`), `None` for SSE-C.
    pub fn algorithm(&self) -> Option<&'static str> {
        match self {
            ServerSideEncryption::S3 => Some(AES256),
            ServerSideEncryption::Kms { dsse: false, .. } => Some("aws:kms"),
            ServerSideEncryption::Kms { dsse: true, .. } => Some("aws:kms:dsse"),
            ServerSideEncryption::CustomerKey(_) => None,
        }
    }

    /// The customer key, for SSE-C.
    pub fn customer_key(&self) -> Option<&CustomerKey> {
        match self {
            ServerSideEncryption::CustomerKey(key) => Some(key),
            _ => None,
        }
    }

    /// A short name for messages: `SSE-S3`, `SSE-KMS` or `SSE-C` (never the key).
    pub fn kind(&self) -> &'static str {
        match self {
            ServerSideEncryption::S3 => "SSE-S3",
            ServerSideEncryption::Kms { .. } => "SSE-KMS",
            ServerSideEncryption::CustomerKey(_) => "SSE-C",
        }
    }
}

impl fmt::Debug for ServerSideEncryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerSideEncryption::S3 => f.write_str("S3"),
            ServerSideEncryption::Kms { dsse, key_id } => f
                .debug_struct("Kms")
                .field("dsse", dsse)
                .field("key_id", key_id)
                .finish(),
            ServerSideEncryption::CustomerKey(key) => {
                f.debug_tuple("CustomerKey").field(key).finish()
            }
        }
    }
}

/// An SSE-C key: 32 bytes. A secret: `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct CustomerKey([u8; 32]);

impl CustomerKey {
    /// The key from its raw 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        CustomerKey(bytes)
    }

    /// The key from its base64 form (as `attributes` carries it).
    ///
    /// # Errors
    /// A message (without the key) when it is not the base64 of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, String> {
        let bytes = BASE64.decode(text.trim()).map_err(|_| {
            "must be the base64 of a 32-byte (256-bit) key: it is not base64".to_string()
        })?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            format!(
                "must be the base64 of a 32-byte (256-bit) key, not of {} bytes",
                b.len()
            )
        })?;
        Ok(CustomerKey(bytes))
    }

    /// The raw 32 bytes (what the aws CLI reads from `--sse-c-key fileb://FILE`).
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key in base64 (`x-amz-server-side-encryption-customer-key`).
    pub fn base64(&self) -> String {
        BASE64.encode(self.0)
    }

    /// The base64 of the key's MD5 (`x-amz-server-side-encryption-customer-key-MD5`).
    pub fn md5_base64(&self) -> String {
        BASE64.encode(Md5::digest(self.0))
    }
}

impl fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CustomerKey(******)")
    }
}

/// Takes the encryption headers out of `attributes` (names matched without regard to
/// case) and checks them. Problems are messages for the `attributes` field and never
/// hold the customer key.
pub(crate) fn extract(
    attributes: &mut BTreeMap<String, String>,
    problems: &mut Vec<String>,
) -> Option<ServerSideEncryption> {
    let mut take = |name: &str| {
        let found = attributes
            .keys()
            .find(|k| k.eq_ignore_ascii_case(name))
            .cloned();
        found.and_then(|k| attributes.remove(&k).map(|v| (k, v)))
    };
    let sse = take(SSE);
    let kms_key_id = take(KMS_KEY_ID);
    let context = take(CONTEXT);
    let algorithm = take(CUSTOMER_ALGORITHM);
    let key = take(CUSTOMER_KEY);
    let key_md5 = take(CUSTOMER_KEY_MD5);
    let before = problems.len();

    if let Some((name, _)) = &context {
        problems.push(format!(
            "{name} is not supported (the aws CLI cannot send an SSE-KMS encryption context)"
        ));
    }
    let managed = managed(sse, kms_key_id, problems);
    let customer = customer(algorithm.as_ref(), key.as_ref(), key_md5.as_ref(), problems);
    if managed.is_some() && (customer.is_some() || key.is_some()) {
        problems.push(
            "X-Amz-Server-Side-Encryption and X-Amz-Server-Side-Encryption-Customer-Key cannot be combined: choose S3-managed, KMS or customer keys"
                .into(),
        );
    }
    if problems.len() > before {
        return None;
    }
    customer.map(ServerSideEncryption::CustomerKey).or(managed)
}

/// An entry taken out of the attributes: its name as given, and its value.
type Taken = Option<(String, String)>;

/// S3- or KMS-managed encryption from `X-Amz-Server-Side-Encryption` and the KMS key id.
fn managed(
    sse: Taken,
    kms_key_id: Taken,
    problems: &mut Vec<String>,
) -> Option<ServerSideEncryption> {
    let managed = match &sse {
        None => None,
        Some((_, v)) if v == AES256 => Some(ServerSideEncryption::S3),
        Some((_, v)) if v == "aws:kms" || v == "aws:kms:dsse" => Some(ServerSideEncryption::Kms {
            dsse: v == "aws:kms:dsse",
            key_id: None,
        }),
        Some((name, v)) => {
            problems.push(format!(
                "{name} must be AES256, aws:kms or aws:kms:dsse, not {v:?}"
            ));
            None
        }
    };
    match (managed, kms_key_id) {
        (Some(ServerSideEncryption::Kms { dsse, .. }), Some((name, id))) => {
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_graphic()) {
                problems.push(format!(
                    "{name} must be a KMS key id, alias or ARN (visible ASCII, no spaces)"
                ));
            }
            Some(ServerSideEncryption::Kms {
                dsse,
                key_id: Some(id),
            })
        }
        (_, Some((name, _))) => {
            problems.push(format!(
                "{name} needs X-Amz-Server-Side-Encryption set to aws:kms or aws:kms:dsse"
            ));
            None
        }
        (managed, None) => managed,
    }
}

/// A customer key (SSE-C) from its algorithm, key and key MD5 headers.
fn customer(
    algorithm: Option<&(String, String)>,
    key: Option<&(String, String)>,
    key_md5: Option<&(String, String)>,
    problems: &mut Vec<String>,
) -> Option<CustomerKey> {
    match (algorithm, key) {
        (None, None) => {
            if let Some((name, _)) = &key_md5 {
                problems.push(format!(
                    "{name} needs X-Amz-Server-Side-Encryption-Customer-Key"
                ));
            }
            None
        }
        (Some((name, _)), None) => {
            problems.push(format!(
                "{name} needs X-Amz-Server-Side-Encryption-Customer-Key"
            ));
            None
        }
        (algorithm, Some((name, key))) => {
            if let Some((alg_name, alg)) = algorithm
                && alg != AES256
            {
                problems.push(format!("{alg_name} must be AES256, not {alg:?}"));
            }
            match CustomerKey::from_base64(key) {
                Ok(key) => {
                    if let Some((md5_name, md5)) = &key_md5
                        && md5.trim() != key.md5_base64()
                    {
                        problems.push(format!("{md5_name} does not match the customer key"));
                    }
                    Some(key)
                }
                Err(why) => {
                    problems.push(format!("{name} {why}"));
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pairs: &[(&str, &str)]) -> (Option<ServerSideEncryption>, Vec<String>, usize) {
        let mut map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut problems = Vec::new();
        let sse = extract(&mut map, &mut problems);
        (sse, problems, map.len())
    }

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes

    #[test]
    fn each_kind_is_recognised_case_insensitively() {
        let (sse, p, left) = run(&[("x-amz-server-side-encryption", "AES256"), ("a", "b")]);
        assert_eq!(sse, Some(ServerSideEncryption::S3), "{p:?}");
        assert_eq!(left, 1, "other attributes stay");
        let (sse, p, _) = run(&[
            ("X-Amz-Server-Side-Encryption", "aws:kms"),
            (
                "X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id",
                "alias/backups",
            ),
        ]);
        assert_eq!(
            sse,
            Some(ServerSideEncryption::Kms {
                dsse: false,
                key_id: Some("alias/backups".into())
            }),
            "{p:?}"
        );
        let (sse, p, left) = run(&[("X-AMZ-SERVER-SIDE-ENCRYPTION-CUSTOMER-KEY", KEY)]);
        let key = sse
            .as_ref()
            .and_then(|s| s.customer_key())
            .unwrap_or_else(|| panic!("{p:?}"));
        assert_eq!(key.bytes(), b"0123456789abcdef0123456789abcdef");
        assert_eq!(key.base64(), KEY);
        assert_eq!(left, 0);
        let md5 = key.md5_base64();
        let (sse, p, _) = run(&[
            ("X-Amz-Server-Side-Encryption-Customer-Algorithm", "AES256"),
            ("X-Amz-Server-Side-Encryption-Customer-Key", KEY),
            ("X-Amz-Server-Side-Encryption-Customer-Key-MD5", &md5),
        ]);
        assert!(sse.is_some(), "{p:?}");
    }

    #[test]
    fn bad_combinations_are_refused_without_echoing_the_key() {
        for (pairs, why) in [
            (
                vec![("X-Amz-Server-Side-Encryption", "aes")],
                "must be AES256",
            ),
            (
                vec![("X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id", "k")],
                "needs X-Amz-Server-Side-Encryption",
            ),
            (
                vec![("X-Amz-Server-Side-Encryption-Customer-Algorithm", "AES256")],
                "needs X-Amz-Server-Side-Encryption-Customer-Key",
            ),
            (
                vec![("X-Amz-Server-Side-Encryption-Customer-Key", "CuStoMerKey=")],
                "32-byte",
            ),
            (
                vec![
                    ("X-Amz-Server-Side-Encryption-Customer-Key", KEY),
                    ("X-Amz-Server-Side-Encryption-Customer-Key-MD5", "AAAA"),
                ],
                "does not match",
            ),
            (
                vec![
                    ("X-Amz-Server-Side-Encryption-Customer-Key", KEY),
                    ("X-Amz-Server-Side-Encryption", "AES256"),
                ],
                "cannot be combined",
            ),
            (
                vec![("X-Amz-Server-Side-Encryption-Context", "e30=")],
                "not supported",
            ),
        ] {
            let (sse, problems, _) = run(&pairs);
            assert!(sse.is_none());
            let text = problems.join("; ");
            assert!(text.contains(why), "{pairs:?}: {text}");
            assert!(
                !text.contains(KEY) && !text.contains("CuStoMerKey"),
                "{text}"
            );
        }
    }

    #[test]
    fn debug_hides_the_key() {
        let key = CustomerKey::from_base64(KEY).unwrap();
        let sse = ServerSideEncryption::CustomerKey(key);
        let text = format!("{sse:?}");
        assert!(!text.contains(KEY) && !text.contains("0123"), "{text}");
        assert!(text.contains("******"));
    }
}

//! What the aws CLI (v1, run by the backup pipeline inside the workload) needs from
//! [`S3Parameters`]: its credential environment ([`credential_env`]), its server-side
//! encryption arguments ([`sse_args`], with the SSE-C key in a file:
//! [`customer_key_file`]) and a per-run config file ([`config_file`]) whose every value
//! is checked against the config file's syntax. Pure functions: no I/O.
//!
//! ```
//! use synapse_backup::S3Parameters;
//! use synapse_backup::s3::aws_cli::{self, Transfer, TransferSettings};
//!
//! let params = S3Parameters::builder("AKIDEXAMPLE", "secret", "synapse-backups")
//!     .region("eu-west-1")
//!     .session_token("FwoGZXIvYXdzEXAMPLE")
//!     .attributes([(
//!         "X-Amz-Server-Side-Encryption-Customer-Key",
//!         "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
//!     )])
//!     .build()?;
//! let env = aws_cli::credential_env(&params);
//! assert_eq!(env["AWS_SESSION_TOKEN"], "FwoGZXIvYXdzEXAMPLE");
//! // SSE-C on downloads too; the key itself never in argv.
//! let args = aws_cli::sse_args(&params, Transfer::Download, "/work/sse-c.key");
//! assert_eq!(args, ["--sse-c", "AES256", "--sse-c-key", "fileb:///work/sse-c.key"]);
//! assert_eq!(aws_cli::customer_key_file(&params).map(|k| k.len()), Some(32));
//! let config = aws_cli::config_file(&params, &TransferSettings::new(4, 8))?;
//! assert!(config.starts_with("[default]\nregion = eu-west-1\n"));
//! # Ok::<(), synapse_backup::ConfigError>(())
//! ```

use std::collections::BTreeMap;

use super::parameters::{AddressingStyle, S3Parameters};
use super::sse::{AES256, ServerSideEncryption};
use crate::error::{ConfigError, FieldProblem};

/// The region the aws CLI is given when the relation names only an endpoint.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Which way an aws CLI transfer goes: S3 wants SSE-S3 and SSE-KMS headers on uploads
/// only, SSE-C headers on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// `aws s3 cp - s3://…` (PutObject or a multipart upload).
    Upload,
    /// `aws s3 cp s3://… -` (HeadObject, GetObject).
    Download,
}

/// The region the aws CLI uses: the relation's, else [`DEFAULT_REGION`].
pub fn region(params: &S3Parameters) -> &str {
    params.region().unwrap_or(DEFAULT_REGION)
}

/// The credential environment of the aws CLI: `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` (temporary credentials only) and
/// `AWS_EC2_METADATA_DISABLED=true` (static keys need no instance metadata; it also
/// saves a slow probe off EC2). Secrets: pass them in the environment, never in argv.
pub fn credential_env(params: &S3Parameters) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("AWS_ACCESS_KEY_ID".into(), params.access_key().into());
    env.insert("AWS_SECRET_ACCESS_KEY".into(), params.secret_key().into());
    if let Some(token) = params.session_token() {
        env.insert("AWS_SESSION_TOKEN".into(), token.into());
    }
    env.insert("AWS_EC2_METADATA_DISABLED".into(), "true".into());
    env
}

/// The aws CLI's server-side encryption arguments for one `aws s3 cp`:
/// - SSE-S3: `--sse AES256` on uploads;
/// - SSE-KMS: `--sse aws:kms` (or `aws:kms:dsse`) and `--sse-kms-key-id ID` on uploads;
/// - SSE-C: `--sse-c AES256 --sse-c-key fileb://<customer_key_path>` on uploads and
///   downloads. The file must hold the raw 32 bytes of [`customer_key_file`] (aws CLI v1
///   reads `fileb://` as bytes and sends their base64 and MD5); write it 0600 in the
///   run's private work dir, as the workload user.
///
/// Empty when the relation asks for no encryption.
pub fn sse_args(params: &S3Parameters, transfer: Transfer, customer_key_path: &str) -> Vec<String> {
    let mut args = Vec::new();
    match (params.server_side_encryption(), transfer) {
        (None, _) => {}
        (Some(ServerSideEncryption::CustomerKey(_)), _) => {
            args.extend([
                "--sse-c".to_string(),
                AES256.to_string(),
                "--sse-c-key".to_string(),
                format!("fileb://{customer_key_path}"),
            ]);
        }
        (Some(_), Transfer::Download) => {}
        (Some(sse), Transfer::Upload) => {
            if let Some(algorithm) = sse.algorithm() {
                args.extend(["--sse".to_string(), algorithm.to_string()]);
            }
            if let ServerSideEncryption::Kms {
                key_id: Some(id), ..
            } = sse
            {
                args.extend(["--sse-kms-key-id".to_string(), id.clone()]);
            }
        }
    }
    args
}

/// The content of the SSE-C key file for `--sse-c-key fileb://FILE`: the raw 32 bytes
/// of the customer key, when the relation asks for SSE-C.
pub fn customer_key_file(params: &S3Parameters) -> Option<&[u8; 32]> {
    params
        .server_side_encryption()
        .and_then(ServerSideEncryption::customer_key)
        .map(|key| key.bytes())
}

/// Transfer settings for the aws CLI config file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransferSettings {
    /// `max_concurrent_requests` (at least 1).
    pub max_concurrent_requests: u32,
    /// `multipart_chunksize` and `multipart_threshold`, in MiB (at least 5, S3's
    /// minimum part size).
    pub part_size_mib: u32,
    /// `max_bandwidth`, in MiB/s, if limited.
    pub max_bandwidth_mib: Option<u32>,
}

impl TransferSettings {
    /// Settings with `max_concurrent_requests` and the part size in MiB; no bandwidth
    /// limit.
    pub fn new(max_concurrent_requests: u32, part_size_mib: u32) -> Self {
        TransferSettings {
            max_concurrent_requests,
            part_size_mib,
            max_bandwidth_mib: None,
        }
    }

    /// Limits the bandwidth to `mib` MiB/s.
    pub fn max_bandwidth_mib(mut self, mib: u32) -> Self {
        self.max_bandwidth_mib = Some(mib);
        self
    }
}

/// The per-run aws CLI config file (`AWS_CONFIG_FILE`; the replacement for
/// `aws configure set`): the region, the addressing style and the transfer settings
/// in the `[default]` profile.
///
/// Every value is checked against the config file's syntax (one line, no control
/// characters, no leading or trailing blanks, nothing the INI parser reads as a
/// section, comment or continuation), so relation data can never add sections or
/// options, whatever validation it went through before.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the field whose value cannot be written safely.
pub fn config_file(
    params: &S3Parameters,
    settings: &TransferSettings,
) -> Result<String, ConfigError> {
    let style = match params.addressing_style() {
        AddressingStyle::Path => "path",
        AddressingStyle::Virtual => "virtual",
    };
    let region = region(params);
    let mut problems = Vec::new();
    if let Err(why) = config_value(region) {
        problems.push(FieldProblem {
            field: "region".into(),
            message: format!("cannot be written to the aws CLI config file: {why}"),
        });
    }
    if !problems.is_empty() {
        return Err(ConfigError::Invalid { problems });
    }
    let part = settings.part_size_mib.max(5);
    let mut config = format!(
        "[default]\nregion = {region}\ns3 =\n  addressing_style = {style}\n  max_concurrent_requests = {}\n  multipart_chunksize = {part}MB\n  multipart_threshold = {part}MB\n",
        settings.max_concurrent_requests.max(1),
    );
    if let Some(limit) = settings.max_bandwidth_mib {
        config.push_str(&format!("  max_bandwidth = {}MB/s\n", limit.max(1)));
    }
    Ok(config)
}

/// Whether `value` can be the value of an option in the aws CLI's config file (an INI
/// file read by Python's configparser, without interpolation): one line, not empty,
/// no control characters, no leading or trailing blanks (they would be stripped or
/// start a continuation), not starting with a comment or section character.
fn config_value(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        Err("it is empty")
    } else if value.chars().any(char::is_control) {
        Err("it contains control characters (a line break would add lines)")
    } else if value.trim() != value {
        Err("it has leading or trailing blanks")
    } else if value.starts_with(['[', '#', ';']) {
        Err("it starts with a section or comment character")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    fn params(attributes: &[(&str, &str)]) -> S3Parameters {
        S3Parameters::builder("AKID", "secret-value", "bucket-one")
            .endpoint("http://127.0.0.1:9000")
            .s3_uri_style("path")
            .attributes(attributes.iter().copied())
            .build()
            .unwrap()
    }

    #[test]
    fn sse_s3_and_kms_go_on_uploads_only() {
        let p = params(&[("X-Amz-Server-Side-Encryption", "AES256")]);
        assert_eq!(sse_args(&p, Transfer::Upload, "k"), ["--sse", "AES256"]);
        assert!(sse_args(&p, Transfer::Download, "k").is_empty());
        let p = params(&[
            ("X-Amz-Server-Side-Encryption", "aws:kms"),
            ("X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id", "alias/b"),
        ]);
        assert_eq!(
            sse_args(&p, Transfer::Upload, "k"),
            ["--sse", "aws:kms", "--sse-kms-key-id", "alias/b"]
        );
        assert!(sse_args(&p, Transfer::Download, "k").is_empty());
        assert_eq!(customer_key_file(&p), None);
        assert!(sse_args(&params(&[]), Transfer::Upload, "k").is_empty());
    }

    #[test]
    fn sse_c_goes_everywhere_with_the_key_in_a_file() {
        let p = params(&[("X-Amz-Server-Side-Encryption-Customer-Key", KEY)]);
        for transfer in [Transfer::Upload, Transfer::Download] {
            let args = sse_args(&p, transfer, "/w/k");
            assert_eq!(args, ["--sse-c", "AES256", "--sse-c-key", "fileb:///w/k"]);
            assert!(!args.concat().contains(KEY));
        }
        assert_eq!(
            customer_key_file(&p),
            Some(b"0123456789abcdef0123456789abcdef")
        );
    }

    #[test]
    fn credentials_are_environment_only_with_the_token_when_given() {
        let env = credential_env(&params(&[]));
        assert_eq!(env["AWS_ACCESS_KEY_ID"], "AKID");
        assert_eq!(env["AWS_SECRET_ACCESS_KEY"], "secret-value");
        assert_eq!(env["AWS_EC2_METADATA_DISABLED"], "true");
        assert!(!env.contains_key("AWS_SESSION_TOKEN"));
        let p = S3Parameters::builder("AKID", "s", "bucket-one")
            .region("eu-west-1")
            .session_token("tok")
            .build()
            .unwrap();
        assert_eq!(credential_env(&p)["AWS_SESSION_TOKEN"], "tok");
    }

    #[test]
    fn config_file_text_and_value_checks() {
        let text = config_file(&params(&[]), &TransferSettings::new(8, 64)).unwrap();
        assert_eq!(
            text,
            "[default]\nregion = us-east-1\ns3 =\n  addressing_style = path\n  max_concurrent_requests = 8\n  multipart_chunksize = 64MB\n  multipart_threshold = 64MB\n"
        );
        let capped = config_file(
            &params(&[]),
            &TransferSettings::new(0, 1).max_bandwidth_mib(0),
        )
        .unwrap();
        assert!(
            capped.contains("max_concurrent_requests = 1\n")
                && capped.contains("multipart_chunksize = 5MB\n")
                && capped.contains("max_bandwidth = 1MB/s\n"),
            "{capped}"
        );
        for bad in ["", "a\nb", "a\r", " a", "a ", "[x]", "#x", ";x", "a\u{0}"] {
            assert!(config_value(bad).is_err(), "{bad:?}");
        }
        for ok in ["us-east-1", "fr-par", "a=b"] {
            assert!(config_value(ok).is_ok(), "{ok:?}");
        }
    }
}

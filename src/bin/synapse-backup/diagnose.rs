//! What an S3 failure means for the operator, and what to do about it: the one place
//! where the command line reads [`S3Error`]s (the SDK's account of a failure is text,
//! so this is also the one place that looks into that text).

use synapse_backup::S3Error;

use crate::config::{ENV_ACCESS_KEY, ENV_SECRET_KEY};

/// The common mistakes an S3 failure points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3Problem {
    /// The bucket does not exist.
    BucketMissing,
    /// Nothing answers at the endpoint (refused, timed out, no such host); the cause.
    Unreachable(String),
    /// `https://` to a port that speaks plain HTTP.
    TlsToPlainHttp,
    /// The server's certificate is not trusted; the cause.
    UntrustedCertificate(String),
    /// The server refused the access key or secret key (or their permission); the
    /// server's answer.
    Credentials(String),
    /// The bucket lives in another region, or needs another addressing style.
    WrongRegion(String),
}

/// Where the requests went, to name it in messages.
pub struct Context<'a> {
    /// The bucket.
    pub bucket: &'a str,
    /// The endpoint, when one is set.
    pub endpoint: Option<&'a str>,
    /// The region requests are signed for.
    pub region: &'a str,
    /// The `--s3` file, to say what to fix.
    pub s3_file: &'a str,
}

/// What `error` means. `listing` says the request was a listing of the bucket, where
/// "not found" can only mean the bucket.
pub fn classify(error: &S3Error, listing: bool) -> Option<S3Problem> {
    let message = match error {
        S3Error::NotFound { .. } if listing => return Some(S3Problem::BucketMissing),
        S3Error::Request { message, .. } => message,
        _ => return None,
    };
    let lower = message.to_ascii_lowercase();
    let has = |needle: &str| lower.contains(needle);
    if has("nosuchbucket") {
        return Some(S3Problem::BucketMissing);
    }
    if lower.starts_with("http 403")
        || has("invalidaccesskeyid")
        || has("signaturedoesnotmatch")
        || has("accessdenied")
    {
        return Some(S3Problem::Credentials(message.clone()));
    }
    if lower.starts_with("http 301")
        || lower.starts_with("http 307")
        || has("permanentredirect")
        || has("authorizationheadermalformed")
    {
        return Some(S3Problem::WrongRegion(message.clone()));
    }
    if has("certificate") || has("unknownissuer") {
        return Some(S3Problem::UntrustedCertificate(last_cause(message)));
    }
    if has("invalidcontenttype")
        || has("corrupt message")
        || has("wrong version number")
        || has("invalid message")
        || (has("tls") && has("handshake"))
    {
        return Some(S3Problem::TlsToPlainHttp);
    }
    if has("connection refused") {
        return Some(S3Problem::Unreachable("connection refused".into()));
    }
    if has("timed out") || has("timeout") {
        return Some(S3Problem::Unreachable("timed out".into()));
    }
    if has("dns error") || has("failed to lookup") || has("name or service not known") {
        return Some(S3Problem::Unreachable(
            "the host name does not resolve".into(),
        ));
    }
    if has("dispatch failure") || has("connection reset") || has("io error") {
        return Some(S3Problem::Unreachable(last_cause(message)));
    }
    None
}

/// The innermost cause of a `a: b: c` chain.
fn last_cause(message: &str) -> String {
    message
        .rsplit(": ")
        .find(|part| !part.trim().is_empty())
        .unwrap_or(message)
        .trim()
        .to_string()
}

impl S3Problem {
    /// The kind named in `--json` errors.
    pub fn kind(&self) -> &'static str {
        match self {
            S3Problem::BucketMissing => "bucket-not-found",
            S3Problem::Unreachable(_) => "unreachable",
            S3Problem::TlsToPlainHttp | S3Problem::UntrustedCertificate(_) => "tls",
            S3Problem::Credentials(_) => "credentials",
            S3Problem::WrongRegion(_) => "wrong-region",
        }
    }

    /// The cause and the fix, in one line.
    pub fn message(&self, cx: &Context<'_>) -> String {
        let file = cx.s3_file;
        let bucket = cx.bucket;
        let at = match cx.endpoint {
            Some(endpoint) => format!("at {endpoint}"),
            None => format!("in region {}", cx.region),
        };
        let endpoint = cx.endpoint.unwrap_or("the AWS endpoint");
        match self {
            S3Problem::BucketMissing => {
                let create = match cx.endpoint {
                    Some(e) => format!("aws s3 mb s3://{bucket} --endpoint-url {e}"),
                    None => format!("aws s3 mb s3://{bucket} --region {}", cx.region),
                };
                format!(
                    "bucket {bucket} does not exist {at}: check `bucket` in {file}, or create it (e.g. `{create}`)"
                )
            }
            S3Problem::Unreachable(cause) => format!(
                "cannot connect to {endpoint} ({cause}): check `endpoint` in {file} and that the server is running and reachable from here"
            ),
            S3Problem::TlsToPlainHttp => {
                let plain = endpoint.replacen("https://", "http://", 1);
                format!(
                    "TLS handshake with {endpoint} failed: the server speaks plain HTTP on that port; set `endpoint` in {file} to {plain} (or enable TLS on the server)"
                )
            }
            S3Problem::UntrustedCertificate(cause) => format!(
                "TLS certificate of {endpoint} is not trusted ({cause}): put its CA certificate in `tls-ca-chain` in {file}"
            ),
            S3Problem::Credentials(answer) => format!(
                "the s3 server {at} refused the credentials for bucket {bucket} ({answer}): check access-key and secret-key in {file}, or {ENV_ACCESS_KEY} / {ENV_SECRET_KEY}, and that they may use the bucket"
            ),
            S3Problem::WrongRegion(answer) => format!(
                "bucket {bucket} is not reachable {at} as configured ({answer}): check `region` and `s3-uri-style` in {file}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(message: &str) -> S3Error {
        S3Error::Request {
            operation: "ListObjectsV2",
            bucket: "b".into(),
            key: String::new(),
            message: message.into(),
        }
    }

    #[test]
    fn the_common_mistakes_are_told_apart() {
        let missing = S3Error::NotFound {
            bucket: "b".into(),
            key: "p/".into(),
        };
        assert_eq!(classify(&missing, true), Some(S3Problem::BucketMissing));
        assert_eq!(classify(&missing, false), None);
        assert!(matches!(
            classify(&request("HTTP 403 SignatureDoesNotMatch: no"), false),
            Some(S3Problem::Credentials(_))
        ));
        assert_eq!(
            classify(
                &request(
                    "dispatch failure: io error: tcp connect error: Connection refused (os error 111)"
                ),
                false
            ),
            Some(S3Problem::Unreachable("connection refused".into()))
        );
        assert_eq!(
            classify(
                &request("dispatch failure: received corrupt message of type InvalidContentType"),
                false
            ),
            Some(S3Problem::TlsToPlainHttp)
        );
        assert_eq!(classify(&request("HTTP 500 InternalError"), false), None);
    }
}

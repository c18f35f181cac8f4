//! What an S3 failure means for the operator, and what to do about it: the one place
//! where the command line reads [`S3Error`]s, by their fields (status, service error
//! code, transport failure), never by their text.

use synapse_backup::{S3Error, Transport};

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
    let S3Error::Request {
        status,
        code,
        transport,
        message,
        ..
    } = error
    else {
        return matches!(error, S3Error::NotFound { .. } if listing)
            .then_some(S3Problem::BucketMissing);
    };
    match (code.as_deref(), status) {
        (Some("NoSuchBucket"), _) => return Some(S3Problem::BucketMissing),
        (Some("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied"), _)
        | (_, Some(403)) => return Some(S3Problem::Credentials(message.to_string())),
        (Some("PermanentRedirect" | "AuthorizationHeaderMalformed"), _) | (_, Some(301 | 307)) => {
            return Some(S3Problem::WrongRegion(message.to_string()));
        }
        _ => {}
    }
    Some(match (*transport)? {
        Transport::UntrustedCertificate => S3Problem::UntrustedCertificate(last_cause(message)),
        Transport::NotTls => S3Problem::TlsToPlainHttp,
        Transport::ConnectionRefused => S3Problem::Unreachable("connection refused".into()),
        Transport::TimedOut => S3Problem::Unreachable("timed out".into()),
        _ => S3Problem::Unreachable(last_cause(message)),
    })
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

    fn request(status: Option<u16>, code: Option<&str>, transport: Option<Transport>) -> S3Error {
        S3Error::Request {
            operation: "ListObjectsV2",
            bucket: "b".into(),
            key: String::new(),
            status,
            code: code.map(Into::into),
            transport,
            message: "dispatch failure: io error: the cause".into(),
            source: None,
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
            classify(
                &request(Some(403), Some("SignatureDoesNotMatch"), None),
                false
            ),
            Some(S3Problem::Credentials(_))
        ));
        assert!(matches!(
            classify(&request(Some(403), None, None), false),
            Some(S3Problem::Credentials(_))
        ));
        assert_eq!(
            classify(&request(Some(404), Some("NoSuchBucket"), None), false),
            Some(S3Problem::BucketMissing)
        );
        assert!(matches!(
            classify(&request(Some(301), None, None), false),
            Some(S3Problem::WrongRegion(_))
        ));
        assert_eq!(
            classify(
                &request(None, None, Some(Transport::ConnectionRefused)),
                false
            ),
            Some(S3Problem::Unreachable("connection refused".into()))
        );
        assert_eq!(
            classify(&request(None, None, Some(Transport::NotTls)), false),
            Some(S3Problem::TlsToPlainHttp)
        );
        assert_eq!(
            classify(
                &request(None, None, Some(Transport::UntrustedCertificate)),
                false
            ),
            Some(S3Problem::UntrustedCertificate("the cause".into()))
        );
        assert_eq!(
            classify(&request(None, None, Some(Transport::Other)), false),
            Some(S3Problem::Unreachable("the cause".into()))
        );
        assert_eq!(
            classify(&request(Some(500), Some("InternalError"), None), false),
            None
        );
    }
}

//! [`S3Client`] over `aws-sdk-s3`: the only file in the crate that names the SDK.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::provider_config::ProviderConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::builders::GetObjectFluentBuilder;
use aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ServerSideEncryption as SdkSse, StorageClass};
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use chrono::{DateTime, Utc};

use super::credentials::CredentialSource;
use super::parameters::{AddressingStyle, S3Parameters};
use super::sse::{AES256, ServerSideEncryption};
use super::upload;
use crate::error::S3Error;

/// The region used when the relation gives only an endpoint.
const DEFAULT_REGION: &str = "us-east-1";
/// How long to wait for a TCP (and TLS) connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most pages one listing follows: 10,000,000 objects at S3's 1,000 a page, and
/// far more than a server that sends a few objects a page needs for any bucket of
/// backups. An endpoint sending new continuation tokens forever is stopped here.
pub const MAX_LIST_PAGES: usize = 10_000;
/// The most objects (or multipart uploads) one listing collects: each backup is two
/// objects, so this is half a million backups.
pub const MAX_LIST_OBJECTS: usize = 1_000_000;

/// The SDK's standard credential chain, for [`CredentialSource::Ambient`]. Building it
/// is async, so it is built on the first request; the client's identity cache then
/// keeps its credentials and asks again before temporary ones expire. Its own requests
/// (STS, instance metadata, containers) go through the S3 client's HTTP client, and
/// STS is asked in the S3 region, as the aws CLI of the pipeline does.
#[derive(Debug)]
struct AmbientProvider {
    conf: ProviderConfig,
    region: Region,
    chain: tokio::sync::OnceCell<DefaultCredentialsChain>,
}

impl ProvideCredentials for AmbientProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let chain = self
                .chain
                .get_or_init(|| {
                    DefaultCredentialsChain::builder()
                        .configure(self.conf.clone())
                        .region(self.region.clone())
                        .build()
                })
                .await;
            chain.provide_credentials().await
        })
    }

    fn fallback_on_interrupt(&self) -> Option<Credentials> {
        self.chain.get().and_then(|c| c.fallback_on_interrupt())
    }
}

/// One object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The full object key (including the configured prefix).
    pub key: String,
    /// The size in bytes.
    pub size: u64,
    /// When the object was last written.
    pub last_modified: DateTime<Utc>,
}

/// What HeadObject says about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHead {
    /// The full object key.
    pub key: String,
    /// The size in bytes.
    pub size: u64,
    /// When the object was last written.
    pub last_modified: DateTime<Utc>,
    /// User metadata, keys as the server returns them: lower-case and without the
    /// `x-amz-meta-` prefix.
    pub metadata: HashMap<String, String>,
    /// The ETag (quotes included), empty when the server sent none.
    pub etag: String,
}

/// A multipart upload that was started and neither completed nor aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartUpload {
    /// The full object key the upload would create.
    pub key: String,
    /// The upload id.
    pub upload_id: String,
    /// When the upload was started, if the server says.
    pub initiated: Option<DateTime<Utc>>,
}

/// A client for the bucket named by [`S3Parameters`].
///
/// Creating it does not touch the network. Requests use the parameters' static
/// credentials (with the session token, if any) or, for
/// [`CredentialSource::Ambient`], the SDK's standard chain
/// ([`DefaultCredentialsChain`]: environment, profile, web identity, container,
/// instance metadata; built on the first request, cached and refreshed before
/// temporary credentials expire), region (`us-east-1` when only an
/// endpoint is given), endpoint, addressing style, and the `tls-ca-chain` certificates
/// as trust roots in addition to the system ones. Server-side encryption from the
/// relation's `attributes` is applied where S3 wants it: SSE-S3 and SSE-KMS headers on
/// [`put_object`](Self::put_object) only, SSE-C headers on
/// [`put_object`](Self::put_object), [`get_object`](Self::get_object) and
/// [`head_object`](Self::head_object). `Debug` never shows the credentials or the
/// customer key.
#[derive(Clone)]
pub struct S3Client {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    region: String,
    endpoint: Option<String>,
    addressing_style: AddressingStyle,
    storage_class: Option<String>,
    sse: Option<ServerSideEncryption>,
    /// The AWS chain, for [`CredentialSource::Ambient`].
    ambient: Option<SharedCredentialsProvider>,
    /// What it was made from (for [`S3Client::independent`]).
    params: std::sync::Arc<S3Parameters>,
    /// The per-request deadline.
    timeout: Duration,
}

impl fmt::Debug for S3Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Client")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("addressing_style", &self.addressing_style)
            .field("storage_class", &self.storage_class)
            .field("sse", &self.sse)
            .field("ambient_credentials", &self.ambient.is_some())
            .finish_non_exhaustive()
    }
}

impl S3Client {
    /// Builds a client for `params`. No request is sent.
    ///
    /// # Errors
    /// [`S3Error::Client`] when the TLS configuration cannot be built.
    pub fn new(params: &S3Parameters) -> Result<Self, S3Error> {
        let region = params.region().unwrap_or(DEFAULT_REGION).to_string();
        let mut trust = TrustStore::default();
        for pem in params.tls_ca_chain() {
            trust = trust.with_pem_certificate(pem.as_bytes());
        }
        let tls_context = TlsContext::builder()
            .with_trust_store(trust)
            .build()
            .map_err(|e| S3Error::Client(format!("invalid TLS configuration: {e}")))?;
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .tls_context(tls_context)
            .build_https();
        let mut config = aws_sdk_s3::Config::builder();
        let mut ambient = None;
        match params.credential_source() {
            CredentialSource::Ambient(_) => {
                let provider = SharedCredentialsProvider::new(AmbientProvider {
                    conf: ProviderConfig::without_region().with_http_client(http_client.clone()),
                    region: Region::new(region.clone()),
                    chain: tokio::sync::OnceCell::new(),
                });
                config.set_credentials_provider(Some(provider.clone()));
                ambient = Some(provider);
            }
            CredentialSource::Static {
                access_key,
                secret_key,
                session_token,
            } => {
                config = config.credentials_provider(Credentials::new(
                    access_key,
                    secret_key,
                    session_token.map(str::to_string),
                    None,
                    "s3-relation",
                ));
            }
        }
        let mut config = config
            .behavior_version_latest()
            .region(Region::new(region.clone()))
            .http_client(http_client)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT.min(params.request_timeout()))
                    // Every attempt, and all of them with their retries, end: an
                    // endpoint that accepts and never answers cannot hang a command.
                    .operation_attempt_timeout(params.request_timeout())
                    .operation_timeout(params.request_timeout().saturating_mul(3))
                    .build(),
            )
            // Many S3-compatible servers reject the SDK's newer default checksums.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .force_path_style(params.addressing_style() == AddressingStyle::Path);
        if let Some(endpoint) = params.endpoint() {
            config = config.endpoint_url(endpoint);
        }
        Ok(S3Client {
            client: aws_sdk_s3::Client::from_conf(config.build()),
            bucket: params.bucket().to_string(),
            prefix: super::normalize_prefix(params.path()),
            region,
            endpoint: params.endpoint().map(str::to_string),
            addressing_style: params.addressing_style(),
            storage_class: params.storage_class().map(str::to_string),
            sse: params.server_side_encryption().cloned(),
            ambient,
            params: std::sync::Arc::new(params.clone()),
            timeout: params.request_timeout(),
        })
    }

    /// Whether requests go over TLS: to AWS (no endpoint) or an `https://` endpoint.
    fn over_tls(&self) -> bool {
        self.endpoint.as_deref().is_none_or(|e| {
            e.get(..8)
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
        })
    }

    /// A client for the same bucket that shares no connection with this one (a new
    /// HTTP client and connection pool), for another thread's runtime (see
    /// [`ObjectStore::independent_store`](crate::ObjectStore::independent_store)).
    pub fn independent(&self) -> S3Client {
        S3Client::new(&self.params).unwrap_or_else(|_| self.clone())
    }

    /// The per-request deadline
    /// ([`S3Parameters::with_request_timeout`](crate::S3Parameters::with_request_timeout)).
    pub fn request_timeout(&self) -> Duration {
        self.timeout
    }

    /// Resolves the credentials once (a no-op for static keys), so that a missing or
    /// broken AWS chain is reported before anything else is done.
    ///
    /// # Errors
    /// [`S3Error::Client`] with the chain's reason when it yields no credentials.
    pub async fn check_credentials(&self) -> Result<(), S3Error> {
        let Some(provider) = &self.ambient else {
            return Ok(());
        };
        provider.provide_credentials().await.map(drop).map_err(|e| {
            // Each cause once, on one line (the chain lists its attempts on lines).
            let mut causes: Vec<String> = Vec::new();
            let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(cause) = next {
                let text = cause
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                if !causes.iter().any(|c| c.contains(&text)) {
                    causes.push(text);
                }
                next = cause.source();
            }
            S3Error::Client(format!(
                "no credentials from the AWS chain: {}",
                causes.join(": ")
            ))
        })
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The normalised key prefix (no leading, trailing or repeated slashes; may be
    /// empty).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The region requests are signed for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The server-side encryption applied to requests, if any.
    pub fn server_side_encryption(&self) -> Option<&ServerSideEncryption> {
        self.sse.as_ref()
    }

    fn customer_key(&self) -> Option<&super::sse::CustomerKey> {
        self.sse
            .as_ref()
            .and_then(ServerSideEncryption::customer_key)
    }

    /// The full key of `name` under the configured path: the prefix, a `/`, then `name`.
    pub fn object_key(&self, name: &str) -> String {
        super::object_key(&self.prefix, name)
    }

    /// Whether the bucket exists and these credentials may use it (HeadBucket). Any
    /// failure gives `false`, with the reason logged as a warning (without secrets).
    pub async fn can_use_bucket(&self) -> bool {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(
                    bucket = %self.bucket,
                    endpoint = self.endpoint.as_deref().unwrap_or("(aws)"),
                    error = %describe(&e),
                    "cannot use the s3 bucket"
                );
                tracing::debug!(error = %DisplayErrorContext(&e), "HeadBucket failed");
                false
            }
        }
    }

    /// Creates the bucket (in the client's region). An existing bucket owned by these
    /// credentials is not an error.
    ///
    /// # Errors
    /// [`S3Error::Request`] when the server refuses.
    pub async fn create_bucket(&self) -> Result<(), S3Error> {
        let mut request = self.client.create_bucket().bucket(&self.bucket);
        if self.region != DEFAULT_REGION {
            let location = aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                    self.region.as_str(),
                ))
                .build();
            request = request.create_bucket_configuration(location);
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => Ok(()),
            Err(e) => Err(self.error("CreateBucket", "", e)),
        }
    }

    /// Every object under the configured prefix (`prefix/`, or the whole bucket when the
    /// path is empty), following pagination. Keys are full keys.
    ///
    /// # Errors
    /// [`S3Error::NotFound`] when the bucket does not exist, [`S3Error::Request`]
    /// otherwise.
    pub async fn list_objects(&self) -> Result<Vec<ObjectInfo>, S3Error> {
        let prefix = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        self.list_objects_with_prefix(&prefix).await
    }

    /// Every object whose full key starts with `key_prefix`, following pagination.
    ///
    /// # Errors
    /// [`S3Error::NotFound`] when the bucket does not exist, [`S3Error::Request`]
    /// otherwise.
    pub async fn list_objects_with_prefix(
        &self,
        key_prefix: &str,
    ) -> Result<Vec<ObjectInfo>, S3Error> {
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        let mut bound = ListingBound::new(self, "ListObjectsV2", key_prefix);
        loop {
            let mut request = self.client.list_objects_v2().bucket(&self.bucket);
            if !key_prefix.is_empty() {
                request = request.prefix(key_prefix);
            }
            if let Some(t) = &token {
                request = request.continuation_token(t);
            }
            let page = request
                .send()
                .await
                .map_err(|e| self.error("ListObjectsV2", key_prefix, e))?;
            bound.objects(objects.len(), page.contents().len())?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                objects.push(ObjectInfo {
                    key: key.to_string(),
                    size: object
                        .size()
                        .and_then(|s| u64::try_from(s).ok())
                        .unwrap_or(0),
                    last_modified: to_chrono(object.last_modified()),
                });
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => {
                    bound.next_page(next)?;
                    token = Some(next.to_string());
                }
                _ => break,
            }
        }
        Ok(objects)
    }

    /// The size, last-modified time and user metadata of the object at the full `key`.
    ///
    /// # Errors
    /// [`S3Error::NotFound`] when the object (or bucket) does not exist,
    /// [`S3Error::Request`] otherwise.
    pub async fn head_object(&self, key: &str) -> Result<ObjectHead, S3Error> {
        let mut request = self.client.head_object().bucket(&self.bucket).key(key);
        if let Some(key) = self.customer_key() {
            request = request
                .sse_customer_algorithm(AES256)
                .sse_customer_key(key.base64())
                .sse_customer_key_md5(key.md5_base64());
        }
        let head = request
            .send()
            .await
            .map_err(|e| self.error("HeadObject", key, e))?;
        Ok(ObjectHead {
            key: key.to_string(),
            size: head
                .content_length()
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(0),
            last_modified: to_chrono(head.last_modified()),
            metadata: head.metadata().cloned().unwrap_or_default(),
            etag: head.e_tag().unwrap_or_default().to_string(),
        })
    }

    /// Downloads the whole object at the full `key` into memory (for small objects such
    /// as manifests), at most `max_bytes`: a longer object (by its `Content-Length`,
    /// or by what arrives) is refused as soon as that shows, without reading the rest.
    ///
    /// # Errors
    /// [`S3Error::NotFound`] when the object (or bucket) does not exist,
    /// [`S3Error::TooLarge`] when it is longer than `max_bytes`, [`S3Error::TimedOut`]
    /// when the body stops flowing for the request timeout, [`S3Error::Request`]
    /// otherwise (including a body that breaks off).
    pub async fn get_object(&self, key: &str, max_bytes: u64) -> Result<Vec<u8>, S3Error> {
        Ok(self.get_object_versioned(key, max_bytes).await?.body)
    }

    /// Reads `body` to its end, refusing more than `max_bytes` (whatever the
    /// `Content-Length` said) and a body that stops flowing for the request timeout.
    async fn read_capped(
        &self,
        key: &str,
        declared: Option<i64>,
        mut body: ByteStream,
        max_bytes: u64,
    ) -> Result<Vec<u8>, S3Error> {
        let too_large = || S3Error::TooLarge {
            bucket: self.bucket.clone(),
            key: key.to_string(),
            limit: max_bytes,
        };
        let declared = declared.and_then(|n| u64::try_from(n).ok());
        if declared.is_some_and(|n| n > max_bytes) {
            return Err(too_large());
        }
        let failed =
            |message: String, source: aws_sdk_s3::primitives::ByteStreamError| S3Error::Request {
                operation: "GetObject",
                bucket: self.bucket.clone(),
                key: key.to_string(),
                status: None,
                code: None,
                transport: Some(crate::error::Transport::of(&source)),
                message: message.into(),
                source: Some(Box::new(source)),
            };
        // Never more than the cap ahead of time, whatever the header says.
        let expected = declared.unwrap_or(0).min(max_bytes).min(1 << 20);
        let mut out = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
        loop {
            let chunk = match tokio::time::timeout(self.timeout, body.next()).await {
                Err(_) => {
                    return Err(S3Error::TimedOut {
                        operation: "GetObject",
                        bucket: self.bucket.clone(),
                        key: key.to_string(),
                        timeout: self.timeout,
                    });
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    let message = format!("reading the body: {}", DisplayErrorContext(&e));
                    return Err(failed(message, e));
                }
                Ok(Some(Ok(chunk))) => chunk,
            };
            if (out.len() as u64).saturating_add(chunk.len() as u64) > max_bytes {
                return Err(too_large());
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// A PutObject with the server-side encryption every write carries: SSE-C with the
    /// customer key, or SSE-S3 / SSE-KMS.
    fn write_encryption(&self, request: PutObjectFluentBuilder) -> PutObjectFluentBuilder {
        match &self.sse {
            None => request,
            Some(ServerSideEncryption::CustomerKey(key)) => request
                .sse_customer_algorithm(AES256)
                .sse_customer_key(key.base64())
                .sse_customer_key_md5(key.md5_base64()),
            Some(sse @ ServerSideEncryption::Kms { key_id, .. }) => request
                .server_side_encryption(SdkSse::from(sse.algorithm().unwrap_or("aws:kms")))
                .set_ssekms_key_id(key_id.clone()),
            Some(sse) => {
                request.server_side_encryption(SdkSse::from(sse.algorithm().unwrap_or(AES256)))
            }
        }
    }

    /// A GetObject with the SSE-C customer key, when there is one (SSE-S3 and SSE-KMS
    /// headers are for writes only).
    fn read_encryption(&self, request: GetObjectFluentBuilder) -> GetObjectFluentBuilder {
        match self.customer_key() {
            Some(key) => request
                .sse_customer_algorithm(AES256)
                .sse_customer_key(key.base64())
                .sse_customer_key_md5(key.md5_base64()),
            None => request,
        }
    }

    /// Uploads `body` to the full `key` in one request (for small objects such as
    /// manifests), with `content_type`, user `metadata` (sent as `x-amz-meta-*`) and the
    /// configured storage class, if any.
    ///
    /// # Errors
    /// [`S3Error::NotFound`] when the bucket does not exist, [`S3Error::Request`]
    /// otherwise.
    pub async fn put_object(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        metadata: &HashMap<String, String>,
    ) -> Result<(), S3Error> {
        self.put_object_etag(key, body, content_type, metadata)
            .await
            .map(drop)
    }

    /// Uploads the local file at `path` to the full `key` in one request, as
    /// [`put_object`](Self::put_object) does, without holding it: the body is read as it
    /// is sent (unsigned, as a streamed body is), with its length and `Content-MD5`
    /// computed in a first pass, so the server refuses a body that is not the file.
    ///
    /// # Errors
    /// As [`put_object`](Self::put_object); [`S3Error::UploadGivenUp`] when the file
    /// cannot be read.
    pub async fn put_object_file(
        &self,
        key: &str,
        path: &std::path::Path,
        content_type: &str,
        metadata: &HashMap<String, String>,
    ) -> Result<(), S3Error> {
        let failed = |e| super::store::read_failed(self.bucket.clone(), key, path, e);
        let (md5, length) = md5_of_file(path).await.map_err(failed)?;
        let body = ByteStream::read_from()
            .path(path)
            .length(aws_sdk_s3::primitives::Length::Exact(length))
            .build()
            .await
            .map_err(|e| failed(std::io::Error::other(e)))?;
        let request = self
            .client
            .put_object()
            .content_md5(md5)
            .content_length(i64::try_from(length).unwrap_or(i64::MAX));
        self.send_put(request, key, body, content_type, metadata)
            .await
            .map(drop)
    }

    /// As [`put_object`](Self::put_object), giving the new object's ETag.
    async fn put_object_etag(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        metadata: &HashMap<String, String>,
    ) -> Result<Option<String>, S3Error> {
        let request = self.client.put_object();
        self.send_put(request, key, ByteStream::from(body), content_type, metadata)
            .await
    }

    /// Sends `request` (a PutObject) for `key` with `body`, `content_type`, `metadata`,
    /// the storage class and the encryption; gives the new object's ETag.
    async fn send_put(
        &self,
        request: PutObjectFluentBuilder,
        key: &str,
        body: ByteStream,
        content_type: &str,
        metadata: &HashMap<String, String>,
    ) -> Result<Option<String>, S3Error> {
        let mut request = request
            .bucket(&self.bucket)
            .key(key)
            .body(body)
            .content_type(content_type);
        if !metadata.is_empty() {
            request = request.set_metadata(Some(metadata.clone()));
        }
        if let Some(class) = &self.storage_class {
            request = request.storage_class(StorageClass::from(class.as_str()));
        }
        let out = self
            .write_encryption(request)
            .send()
            .await
            .map_err(|e| self.error("PutObject", key, e))?;
        Ok(out.e_tag().map(str::to_string))
    }

    /// Deletes the object at the full `key`. Deleting a missing key succeeds (S3
    /// semantics).
    ///
    /// # Errors
    /// [`S3Error::NotFound`] when the bucket does not exist, [`S3Error::Request`]
    /// otherwise.
    pub async fn delete_object(&self, key: &str) -> Result<(), S3Error> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.error("DeleteObject", key, e))?;
        Ok(())
    }

    /// The unfinished multipart uploads whose full key starts with `key_prefix`,
    /// following pagination.
    ///
    /// # Errors
    /// [`S3Error::NotImplemented`] when the server cannot list multipart uploads (some
    /// S3-compatible servers, such as s3s-fs), [`S3Error::NotFound`] when the bucket
    /// does not exist, [`S3Error::Request`] otherwise.
    pub async fn list_multipart_uploads(
        &self,
        key_prefix: &str,
    ) -> Result<Vec<MultipartUpload>, S3Error> {
        let mut uploads = Vec::new();
        let mut markers: Option<(String, Option<String>)> = None;
        let mut bound = ListingBound::new(self, "ListMultipartUploads", key_prefix);
        loop {
            let mut request = self.client.list_multipart_uploads().bucket(&self.bucket);
            if !key_prefix.is_empty() {
                request = request.prefix(key_prefix);
            }
            if let Some((key_marker, upload_id_marker)) = &markers {
                request = request
                    .key_marker(key_marker)
                    .set_upload_id_marker(upload_id_marker.clone());
            }
            let page = request
                .send()
                .await
                .map_err(|e| self.error("ListMultipartUploads", key_prefix, e))?;
            bound.objects(uploads.len(), page.uploads().len())?;
            for upload in page.uploads() {
                let (Some(key), Some(upload_id)) = (upload.key(), upload.upload_id()) else {
                    continue;
                };
                uploads.push(MultipartUpload {
                    key: key.to_string(),
                    upload_id: upload_id.to_string(),
                    initiated: upload.initiated().map(|t| to_chrono(Some(t))),
                });
            }
            let next = page.next_key_marker().filter(|k| !k.is_empty()).map(|k| {
                (
                    k.to_string(),
                    page.next_upload_id_marker().map(str::to_string),
                )
            });
            match next {
                Some(next) if page.is_truncated() == Some(true) => {
                    bound.next_page(&format!(
                        "{}\u{0}{}",
                        next.0,
                        next.1.as_deref().unwrap_or_default()
                    ))?;
                    markers = Some(next);
                }
                _ => break,
            }
        }
        Ok(uploads)
    }

    /// Aborts every unfinished multipart upload whose full key starts with
    /// `key_prefix` and returns how many were aborted. Uploads that vanish meanwhile
    /// are not counted and not an error.
    ///
    /// # Errors
    /// [`S3Error::NotImplemented`] (operation `ListMultipartUploads`) when the server
    /// cannot list multipart uploads, [`S3Error::NotFound`] when the bucket does not
    /// exist, [`S3Error::Request`] otherwise.
    pub async fn abort_multipart_uploads(&self, key_prefix: &str) -> Result<usize, S3Error> {
        let mut aborted = 0;
        for upload in self.list_multipart_uploads(key_prefix).await? {
            match self
                .abort_multipart_upload(&upload.key, &upload.upload_id)
                .await
            {
                Ok(()) => aborted += 1,
                Err(S3Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(aborted)
    }

    /// Aborts one multipart upload.
    ///
    /// # Errors
    /// [`S3Error::NotFound`] when the upload (or bucket) does not exist,
    /// [`S3Error::Request`] otherwise.
    pub async fn abort_multipart_upload(&self, key: &str, upload_id: &str) -> Result<(), S3Error> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| self.error("AbortMultipartUpload", key, e))?;
        Ok(())
    }

    /// Maps an SDK error: 404-like codes to [`S3Error::NotFound`], 501 / `NotImplemented`
    /// to [`S3Error::NotImplemented`], anything else to [`S3Error::Request`].
    fn error<E>(
        &self,
        operation: &'static str,
        key: &str,
        err: SdkError<E, HttpResponse>,
    ) -> S3Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code();
        if matches!(
            code,
            Some("NoSuchKey" | "NotFound" | "NoSuchBucket" | "NoSuchUpload")
        ) || status == Some(404)
        {
            return S3Error::NotFound {
                bucket: self.bucket.clone(),
                key: key.to_string(),
            };
        }
        if code == Some("NotImplemented") || status == Some(501) {
            return S3Error::NotImplemented { operation };
        }
        if matches!(err, SdkError::TimeoutError(_)) {
            return S3Error::TimedOut {
                operation,
                bucket: self.bucket.clone(),
                key: key.to_string(),
                timeout: self.timeout,
            };
        }
        tracing::debug!(operation, key, error = %DisplayErrorContext(&err), "s3 request failed");
        let answered = matches!(err, SdkError::ServiceError(_) | SdkError::ResponseError(_));
        S3Error::Request {
            operation,
            bucket: self.bucket.clone(),
            key: key.to_string(),
            status,
            code: code.map(Into::into),
            transport: (!answered).then(|| crate::error::Transport::of(&err)),
            message: describe(&err).into(),
            source: Some(Box::new(err)),
        }
    }
}

/// The bounds of one listing: no continuation token twice (a cycle), at most
/// [`MAX_LIST_PAGES`] pages and [`MAX_LIST_OBJECTS`] entries.
pub(crate) struct ListingBound<'a> {
    client: &'a S3Client,
    operation: &'static str,
    prefix: &'a str,
    seen: std::collections::HashSet<String>,
    /// The tokens' total length, bounded too (a server could send huge tokens).
    seen_bytes: usize,
}

impl<'a> ListingBound<'a> {
    fn new(client: &'a S3Client, operation: &'static str, prefix: &'a str) -> Self {
        ListingBound {
            client,
            operation,
            prefix,
            seen: std::collections::HashSet::new(),
            seen_bytes: 0,
        }
    }

    fn give_up(&self, reason: String) -> S3Error {
        tracing::error!(
            operation = self.operation,
            prefix = self.prefix,
            reason,
            "listing given up"
        );
        S3Error::Listing {
            operation: self.operation,
            bucket: self.client.bucket.clone(),
            prefix: self.prefix.to_string(),
            reason,
        }
    }

    /// Checks the next page's token (or markers) before following it.
    fn next_page(&mut self, token: &str) -> Result<(), S3Error> {
        check_next_page(&mut self.seen, &mut self.seen_bytes, token).map_err(|r| self.give_up(r))
    }

    /// Checks that `have` entries plus a page of `more` stay within the bound.
    fn objects(&self, have: usize, more: usize) -> Result<(), S3Error> {
        check_objects(have, more).map_err(|r| self.give_up(r))
    }
}

/// The most bytes of continuation tokens one listing remembers.
const MAX_TOKEN_BYTES: usize = 64 << 20;

/// Whether a listing may follow `token` after the tokens `seen` (of `seen_bytes`
/// together); records it. Pure, for the listings of any backend.
///
/// # Errors
/// Why not: a token seen before (a cycle), too many pages, or too many token bytes.
pub fn check_next_page(
    seen: &mut std::collections::HashSet<String>,
    seen_bytes: &mut usize,
    token: &str,
) -> Result<(), String> {
    if token.is_empty() {
        return Err(
            "the server said the listing goes on but sent an empty continuation token".into(),
        );
    }
    if seen.contains(token) {
        return Err(format!(
            "the server sent continuation token {:?} a second time (the pages go round in a cycle)",
            shorten(token)
        ));
    }
    if seen.len() + 1 >= MAX_LIST_PAGES {
        return Err(format!(
            "the server sent more than {MAX_LIST_PAGES} pages (the most a listing follows)"
        ));
    }
    *seen_bytes = seen_bytes.saturating_add(token.len());
    if *seen_bytes > MAX_TOKEN_BYTES {
        return Err(format!(
            "the server's continuation tokens add up to more than {MAX_TOKEN_BYTES} bytes"
        ));
    }
    seen.insert(token.to_string());
    Ok(())
}

/// Whether `have` entries plus a page of `more` stay within [`MAX_LIST_OBJECTS`].
///
/// # Errors
/// Why not.
pub fn check_objects(have: usize, more: usize) -> Result<(), String> {
    if have.saturating_add(more) > MAX_LIST_OBJECTS {
        return Err(format!(
            "the server listed more than {MAX_LIST_OBJECTS} entries (the most a listing collects)"
        ));
    }
    Ok(())
}

/// A token for a message: at most 64 characters.
fn shorten(token: &str) -> String {
    match token.char_indices().nth(64) {
        Some((end, _)) => format!("{}…", &token[..end]),
        None => token.to_string(),
    }
}

/// A one-line account of an SDK error: `HTTP 403 SignatureDoesNotMatch: <message>` for
/// an answer from the server, the chain of causes (`dispatch failure: … : connection
/// refused`) when there was none. Never contains credentials.
fn describe<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if let SdkError::ServiceError(service) = err {
        let status = service.raw().status().as_u16();
        let mut text = format!("HTTP {status}");
        match err.code() {
            Some(code) => {
                text.push(' ');
                text.push_str(code);
            }
            // Answers to HEAD requests have no body, hence no code: say what the
            // status usually means.
            None => text.push_str(match status {
                301 | 307 => " (redirected: wrong region or endpoint?)",
                400 => {
                    " (bad request: wrong region or addressing style, or SSE-C keys that do not match the object's?)"
                }
                403 => {
                    " (forbidden: wrong access key, secret key or SSE-C key, or no permission on the bucket)"
                }
                404 => " (not found)",
                _ => "",
            }),
        }
        if let Some(message) = err.message().filter(|m| !m.is_empty()) {
            text.push_str(": ");
            text.push_str(message);
        }
        return text;
    }
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// An SDK timestamp as chrono (the Unix epoch when absent or out of range).
fn to_chrono(time: Option<&aws_sdk_s3::primitives::DateTime>) -> DateTime<Utc> {
    time.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
        .unwrap_or_default()
}

/// The outcome of a conditional write or delete ([`S3Client::put_object_if_none_match`],
/// [`S3Client::put_object_if_match`], [`S3Client::delete_object_if_match`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Conditional {
    /// The condition held and the request was carried out. For a write, the new
    /// object's ETag (as the server sent it, quotes included) when the server gave one.
    Done {
        /// The new ETag (writes only; `None` for a delete or a server that sent none).
        etag: Option<String>,
    },
    /// The condition did not hold (HTTP 412 `PreconditionFailed`, or 409
    /// `ConditionalRequestConflict` when a concurrent conditional write won).
    PreconditionFailed,
    /// `If-Match` named an object that does not exist (some servers answer 404
    /// `NoSuchKey` rather than 412).
    Missing,
}

/// An object read whole together with its ETag and last-modified time, as one GET saw
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionedObject {
    /// The body.
    pub body: Vec<u8>,
    /// The ETag (quotes included), empty when the server sent none.
    pub etag: String,
    /// When the server last wrote the object, by the server's clock.
    pub last_modified: DateTime<Utc>,
}

/// Conditional writes (S3's `If-None-Match: *` and `If-Match: <etag>`), for the backup
/// lock. These never set a storage class: the objects they write are small and
/// rewritten often.
impl S3Client {
    /// Uploads `body` to the full `key` only if no object exists there
    /// (`If-None-Match: *`).
    ///
    /// # Errors
    /// [`S3Error::NotFound`] when the bucket does not exist, [`S3Error::Request`] when
    /// the request fails otherwise; a failed condition is
    /// [`Conditional::PreconditionFailed`], not an error.
    pub async fn put_object_if_none_match(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<Conditional, S3Error> {
        self.put_object_on(key, body, content_type, |r| r.if_none_match("*"))
            .await
    }

    /// Uploads `body` to the full `key` only if the object there has ETag `etag`
    /// (`If-Match`).
    ///
    /// # Errors
    /// As [`put_object_if_none_match`](Self::put_object_if_none_match); an object that
    /// does not exist is [`Conditional::Missing`].
    pub async fn put_object_if_match(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        etag: &str,
    ) -> Result<Conditional, S3Error> {
        self.put_object_on(key, body, content_type, |r| r.if_match(etag))
            .await
    }

    /// A PutObject (with the writes' encryption) under the condition `condition` adds.
    async fn put_object_on(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        condition: impl FnOnce(PutObjectFluentBuilder) -> PutObjectFluentBuilder,
    ) -> Result<Conditional, S3Error> {
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .content_type(content_type);
        match self.write_encryption(condition(request)).send().await {
            Ok(out) => Ok(Conditional::Done {
                etag: out.e_tag().map(str::to_string),
            }),
            Err(e) => self.conditional_error("PutObject", key, e),
        }
    }

    /// Deletes the object at the full `key` only if its ETag is `etag` (`If-Match`).
    ///
    /// # Errors
    /// As [`put_object_if_match`](Self::put_object_if_match).
    pub async fn delete_object_if_match(
        &self,
        key: &str,
        etag: &str,
    ) -> Result<Conditional, S3Error> {
        let result = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .if_match(etag)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Conditional::Done { etag: None }),
            Err(e) => self.conditional_error("DeleteObject", key, e),
        }
    }

    /// Downloads the whole (small) object at the full `key` with its ETag and
    /// last-modified time from the same response, at most `max_bytes` (as
    /// [`get_object`](Self::get_object)).
    ///
    /// # Errors
    /// As [`get_object`](Self::get_object).
    pub async fn get_object_versioned(
        &self,
        key: &str,
        max_bytes: u64,
    ) -> Result<VersionedObject, S3Error> {
        let request = self.client.get_object().bucket(&self.bucket).key(key);
        let output = self
            .read_encryption(request)
            .send()
            .await
            .map_err(|e| self.error("GetObject", key, e))?;
        let etag = output.e_tag().unwrap_or_default().to_string();
        let last_modified = to_chrono(output.last_modified());
        let declared = output.content_length();
        let body = self
            .read_capped(key, declared, output.body, max_bytes)
            .await?;
        Ok(VersionedObject {
            body,
            etag,
            last_modified,
        })
    }

    /// `length` bytes of the object at the full `key` from byte `offset`, in one ranged
    /// GET (`Range: bytes=offset-end`): fewer only when the object ends first, none
    /// when `offset` is at or past its end (the server's 416).
    ///
    /// # Errors
    /// As [`get_object`](Self::get_object), [`S3Error::TooLarge`] when the server
    /// sends more than `length` bytes.
    pub async fn get_object_range(
        &self,
        key: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, S3Error> {
        if length == 0 {
            return Ok(Vec::new());
        }
        let Some(output) = self.send_range(key, offset, length).await? else {
            return Ok(Vec::new());
        };
        let declared = output.content_length();
        self.read_capped(key, declared, output.body, length).await
    }

    /// Sends the ranged GET of `length` (> 0) bytes of `key` from `offset`: `None` when
    /// the range starts past the object's end (416).
    async fn send_range(
        &self,
        key: &str,
        offset: u64,
        length: u64,
    ) -> Result<Option<aws_sdk_s3::operation::get_object::GetObjectOutput>, S3Error> {
        let last = offset.saturating_add(length - 1);
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes={offset}-{last}"));
        match self.read_encryption(request).send().await {
            Ok(output) => Ok(Some(output)),
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(416) => Ok(None),
            Err(e) => Err(self.error("GetObject", key, e)),
        }
    }

    /// As [`get_object_range`](Self::get_object_range), the body given as it arrives
    /// ([`ObjectStore::get_object_range_stream`](crate::ObjectStore::get_object_range_stream)):
    /// each chunk within the client's timeout, never more than `length` bytes in all.
    ///
    /// # Errors
    /// As [`get_object_range`](Self::get_object_range), from this call for the
    /// request and from the stream for the body.
    pub async fn get_object_range_stream(
        &self,
        key: &str,
        offset: u64,
        length: u64,
    ) -> Result<crate::s3::RangeBody, S3Error> {
        let empty = || -> crate::s3::RangeBody { Box::pin(futures_util::stream::empty()) };
        if length == 0 {
            return Ok(empty());
        }
        let Some(output) = self.send_range(key, offset, length).await? else {
            return Ok(empty());
        };
        let declared = output.content_length().and_then(|n| u64::try_from(n).ok());
        if declared.is_some_and(|n| n > length) {
            return Err(S3Error::TooLarge {
                bucket: self.bucket.clone(),
                key: key.to_string(),
                limit: length,
            });
        }
        let state = RangeState {
            body: output.body,
            read: 0,
            length,
            bucket: self.bucket.clone(),
            key: key.to_string(),
            timeout: self.timeout,
            done: false,
        };
        Ok(Box::pin(futures_util::stream::unfold(
            state,
            |mut state| async move {
                let item = state.next_chunk().await?;
                Some((item, state))
            },
        )))
    }

    /// Maps the error of a conditional request: 412 and 409 `ConditionalRequestConflict`
    /// to [`Conditional::PreconditionFailed`], 404 `NoSuchKey` to
    /// [`Conditional::Missing`], anything else as [`error`](Self::error) does.
    fn conditional_error<E>(
        &self,
        operation: &'static str,
        key: &str,
        err: SdkError<E, HttpResponse>,
    ) -> Result<Conditional, S3Error>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code();
        if status == Some(412)
            || matches!(
                code,
                Some("PreconditionFailed" | "ConditionalRequestConflict")
            )
        {
            return Ok(Conditional::PreconditionFailed);
        }
        if code == Some("NoSuchKey") || (status == Some(404) && code != Some("NoSuchBucket")) {
            return Ok(Conditional::Missing);
        }
        Err(self.error(operation, key, err))
    }
}

/// Streamed uploads: S3's multipart upload, driven by `upload::upload`.
impl S3Client {
    /// Uploads `body`, read to its end, to the full `key` as
    /// [`ObjectStore::put_object_stream`](crate::ObjectStore::put_object_stream)
    /// says: in parts of `part_size` bytes (at least 5 MiB, S3's
    /// smallest), `in_flight` at once, with `content_type`, user `metadata`, the
    /// configured storage class and SSE-S3 / SSE-KMS on the upload's creation and the
    /// SSE-C key on every request of it. A body shorter than one part is one
    /// `PutObject`.
    ///
    /// # Errors
    /// The first request that fails ([`S3Error::NotFound`] when the bucket does not
    /// exist, [`S3Error::Request`] otherwise), [`S3Error::UploadGivenUp`] when
    /// reading `body` fails; the multipart upload is then aborted.
    pub async fn put_object_stream(
        &self,
        key: &str,
        body: &mut (dyn tokio::io::AsyncRead + Send + Unpin),
        content_type: &str,
        metadata: &HashMap<String, String>,
        part_size: usize,
        in_flight: usize,
    ) -> Result<upload::Uploaded, S3Error> {
        let target = std::sync::Arc::new(S3Upload {
            client: self.clone(),
            key: key.to_string(),
            content_type: content_type.to_string(),
            metadata: metadata.clone(),
        });
        upload::upload(
            target,
            body,
            part_size.max(upload::MIN_PART_SIZE),
            in_flight,
        )
        .await
    }
}

/// The CRC32 of `bytes`, big-endian and base64-encoded, as S3's `x-amz-checksum-crc32`.
fn crc32_base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(crc32fast::hash(bytes).to_be_bytes())
}

/// One streamed upload's requests. A multipart upload is created with CRC32 as its
/// checksum algorithm and each part carries its CRC32 (base64, the
/// `x-amz-checksum-crc32` header), as the aws CLI's do by default: the server checks
/// every part as it arrives, and one that computes an object's checksum on completion
/// (moto copies and sums the whole object when no algorithm was given) combines the
/// parts' instead. The sums are sent as header values, never as an `aws-chunked`
/// trailer, which older S3-compatible servers refuse.
struct S3Upload {
    client: S3Client,
    key: String,
    content_type: String,
    metadata: HashMap<String, String>,
}

impl S3Upload {
    /// The SSE-C key's three headers, when there is one.
    fn customer_key(&self) -> Option<(String, String)> {
        self.client
            .customer_key()
            .map(|k| (k.base64(), k.md5_base64()))
    }
}

#[async_trait::async_trait]
impl upload::PartTarget for S3Upload {
    fn bucket(&self) -> &str {
        &self.client.bucket
    }

    fn key(&self) -> &str {
        &self.key
    }

    async fn put_whole(&self, body: Vec<u8>) -> Result<Option<String>, S3Error> {
        self.client
            .put_object_etag(&self.key, body, &self.content_type, &self.metadata)
            .await
    }

    async fn create(&self) -> Result<String, S3Error> {
        let c = &self.client;
        let mut request = c
            .client
            .create_multipart_upload()
            .bucket(&c.bucket)
            .key(&self.key)
            .content_type(&self.content_type)
            .checksum_algorithm(ChecksumAlgorithm::Crc32);
        if !self.metadata.is_empty() {
            request = request.set_metadata(Some(self.metadata.clone()));
        }
        if let Some(class) = &c.storage_class {
            request = request.storage_class(StorageClass::from(class.as_str()));
        }
        request = match &c.sse {
            None => request,
            Some(ServerSideEncryption::CustomerKey(key)) => request
                .sse_customer_algorithm(AES256)
                .sse_customer_key(key.base64())
                .sse_customer_key_md5(key.md5_base64()),
            Some(sse @ ServerSideEncryption::Kms { key_id, .. }) => request
                .server_side_encryption(SdkSse::from(sse.algorithm().unwrap_or("aws:kms")))
                .set_ssekms_key_id(key_id.clone()),
            Some(sse) => {
                request.server_side_encryption(SdkSse::from(sse.algorithm().unwrap_or(AES256)))
            }
        };
        let out = request
            .send()
            .await
            .map_err(|e| c.error("CreateMultipartUpload", &self.key, e))?;
        out.upload_id()
            .filter(|id| !id.is_empty())
            .map(str::to_string)
            .ok_or_else(|| S3Error::Request {
                operation: "CreateMultipartUpload",
                bucket: c.bucket.clone(),
                key: self.key.clone(),
                status: None,
                code: None,
                transport: None,
                message: "the server returned no upload id".into(),
                source: None,
            })
    }

    async fn upload_part(
        &self,
        upload_id: &str,
        number: i32,
        body: Vec<u8>,
    ) -> Result<upload::PartReceipt, S3Error> {
        let c = &self.client;
        let sum = crc32_base64(&body);
        let mut request = c
            .client
            .upload_part()
            .bucket(&c.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .part_number(number)
            .checksum_crc32(sum.clone())
            .body(ByteStream::from(body));
        if let Some((key, md5)) = self.customer_key() {
            request = request
                .sse_customer_algorithm(AES256)
                .sse_customer_key(key)
                .sse_customer_key_md5(md5);
        }
        // Over TLS, with the part's CRC32 in a header, the payload is not signed (no
        // SHA-256 of every byte uploaded), as the aws CLI decides for its own uploads:
        // TLS and the checksum keep the part whole. Over plain HTTP it is signed.
        let sent = if c.over_tls() {
            request.customize().disable_payload_signing().send().await
        } else {
            request.send().await
        };
        let out = sent.map_err(|e| c.error("UploadPart", &self.key, e))?;
        Ok(upload::PartReceipt {
            etag: out.e_tag().unwrap_or_default().to_string(),
            crc32: Some(sum),
        })
    }

    async fn complete(
        &self,
        upload_id: &str,
        parts: Vec<(i32, upload::PartReceipt)>,
    ) -> Result<Option<String>, S3Error> {
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
        let c = &self.client;
        let parts = parts
            .into_iter()
            .map(|(n, part)| {
                CompletedPart::builder()
                    .part_number(n)
                    .e_tag(part.etag)
                    .set_checksum_crc32(part.crc32)
                    .build()
            })
            .collect();
        let mut request = c
            .client
            .complete_multipart_upload()
            .bucket(&c.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        if let Some((key, md5)) = self.customer_key() {
            request = request
                .sse_customer_algorithm(AES256)
                .sse_customer_key(key)
                .sse_customer_key_md5(md5);
        }
        let out = request
            .send()
            .await
            .map_err(|e| c.error("CompleteMultipartUpload", &self.key, e))?;
        Ok(out.e_tag().map(str::to_string))
    }

    async fn abort(&self, upload_id: &str) -> Result<(), S3Error> {
        self.client
            .abort_multipart_upload(&self.key, upload_id)
            .await
    }
}

/// A ranged GET's body being read ([`S3Client::get_object_range_stream`]).
struct RangeState {
    body: ByteStream,
    read: u64,
    length: u64,
    bucket: String,
    key: String,
    timeout: Duration,
    done: bool,
}

impl RangeState {
    /// The next chunk, `None` at the end (and after an error).
    async fn next_chunk(&mut self) -> Option<Result<bytes::Bytes, S3Error>> {
        if self.done {
            return None;
        }
        let got = tokio::time::timeout(self.timeout, self.body.next()).await;
        let item = match got {
            Err(_) => Err(S3Error::TimedOut {
                operation: "GetObject",
                bucket: self.bucket.clone(),
                key: self.key.clone(),
                timeout: self.timeout,
            }),
            Ok(None) => {
                self.done = true;
                return None;
            }
            Ok(Some(Err(e))) => Err(S3Error::Request {
                operation: "GetObject",
                bucket: self.bucket.clone(),
                key: self.key.clone(),
                status: None,
                code: None,
                transport: Some(crate::error::Transport::of(&e)),
                message: format!("reading the body: {}", DisplayErrorContext(&e)).into(),
                source: Some(Box::new(e)),
            }),
            Ok(Some(Ok(chunk))) => {
                self.read = self.read.saturating_add(chunk.len() as u64);
                if self.read > self.length {
                    Err(S3Error::TooLarge {
                        bucket: self.bucket.clone(),
                        key: self.key.clone(),
                        limit: self.length,
                    })
                } else {
                    Ok(chunk)
                }
            }
        };
        self.done = item.is_err();
        Some(item)
    }
}

/// The base64 MD5 of the file at `path` and its length, read in pieces of 64 KiB.
async fn md5_of_file(path: &std::path::Path) -> std::io::Result<(String, u64)> {
    use base64::Engine as _;
    use md5::Digest as _;
    use tokio::io::AsyncReadExt as _;
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = md5::Md5::new();
    let mut buf = vec![0; 64 << 10];
    let mut length = 0_u64;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        length += n as u64;
    }
    Ok((
        base64::engine::general_purpose::STANDARD.encode(hasher.finalize()),
        length,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parts_crc32_is_big_endian_base64_as_s3_reads_it() {
        // The CRC-32 check value of "123456789" is 0xCBF43926.
        assert_eq!(crc32_base64(b"123456789"), "y/Q5Jg==");
        assert_eq!(crc32_base64(b""), "AAAAAA==");
    }

    fn params(path: &str) -> S3Parameters {
        S3Parameters::builder("AKID", "very-secret-key", "bucket-one")
            .endpoint("http://127.0.0.1:1")
            .path(path)
            .s3_uri_style("path")
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn construction_is_offline_and_debug_hides_secrets() {
        let client = S3Client::new(&params("/a//b/")).unwrap();
        assert_eq!(client.prefix(), "a/b");
        assert_eq!(client.object_key("backup-1"), "a/b/backup-1");
        assert_eq!(client.region(), "us-east-1");
        let debug = format!("{client:?}");
        assert!(
            !debug.contains("very-secret-key") && !debug.contains("AKID"),
            "{debug}"
        );
    }
}

//! [`SseC`]: wraps an s3s backend so it enforces SSE-C the way S3 does (s3s-fs and
//! moto accept SSE-C headers and ignore them): an object written with a customer key
//! (PutObject, or a multipart upload whose CreateMultipartUpload carried one) can be
//! read (GetObject) and HEADed only with that same key; an object written without one
//! refuses requests that carry a key. Every object request's `x-amz-server-side-encryption*`
//! and `x-amz-security-token` headers are recorded in [`SseState`] so tests can check which ones were sent where.
//!
//! Used by `s3_server.rs` (every `TestS3Server` runs through it; without SSE-C headers
//! it changes nothing). Needs only s3s and async-trait.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};

/// One request as the server saw it: the operation, `bucket/key`, and its
/// `x-amz-server-side-encryption*` and `x-amz-security-token` headers (lower-case
/// names, values as sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// e.g. `PutObject`.
    pub operation: &'static str,
    /// `bucket/key`.
    pub object: String,
    /// The encryption and session token headers, sorted by name.
    pub headers: Vec<(String, String)>,
    /// Its integrity headers (`x-amz-checksum-*`, `x-amz-sdk-checksum-algorithm`,
    /// `x-amz-content-sha256`, `content-encoding`), sorted by name; for a
    /// `CompleteMultipartUpload`, also `parts` and `parts with crc32` (counts of the
    /// parts its body lists).
    pub integrity: Vec<(String, String)>,
}

impl SeenRequest {
    /// Whether a header with this (lower-case) name was sent.
    pub fn has(&self, name: &str) -> bool {
        self.headers.iter().any(|(n, _)| n == name)
    }
}

/// What the wrapper knows: each object's customer key (base64, as sent) and every
/// request seen. Shared (clone it) between the server and the test; kept across server
/// restarts when passed in `ServerOptions`.
#[derive(Clone, Default)]
pub struct SseState {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    /// `bucket/key` → the customer key it was written with (None: no SSE-C).
    objects: HashMap<String, Option<String>>,
    /// Multipart upload id → the customer key given when it was created.
    uploads: HashMap<String, Option<String>>,
    seen: Vec<SeenRequest>,
}

impl SseState {
    /// Every request seen so far, oldest first.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.inner.lock().unwrap().seen.clone()
    }

    /// Forgets the requests seen so far (not the objects' keys).
    pub fn clear_seen(&self) {
        self.inner.lock().unwrap().seen.clear();
    }

    /// Whether the object was written with a customer key (`None`: not written
    /// through this server).
    pub fn written_with_customer_key(&self, bucket: &str, key: &str) -> Option<bool> {
        let inner = self.inner.lock().unwrap();
        inner
            .objects
            .get(&format!("{bucket}/{key}"))
            .map(Option::is_some)
    }

    fn record<T>(&self, operation: &'static str, object: String, req: &S3Request<T>) {
        let mut headers: Vec<(String, String)> = req
            .headers
            .iter()
            .filter(|(name, _)| {
                name.as_str().starts_with("x-amz-server-side-encryption")
                    || name.as_str() == "x-amz-security-token"
            })
            .map(|(name, value)| {
                (
                    name.as_str().to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        headers.sort();
        let mut integrity: Vec<(String, String)> = req
            .headers
            .iter()
            .filter(|(name, _)| {
                let name = name.as_str();
                name.starts_with("x-amz-checksum")
                    || matches!(
                        name,
                        "x-amz-sdk-checksum-algorithm"
                            | "x-amz-content-sha256"
                            | "content-encoding"
                    )
            })
            .map(|(name, value)| {
                (
                    name.as_str().to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        integrity.sort();
        self.inner.lock().unwrap().seen.push(SeenRequest {
            operation,
            object,
            headers,
            integrity,
        });
    }

    /// S3's answer to a read or HEAD of `object` with `given` as the customer key.
    fn check_read(&self, object: &str, given: Option<&String>) -> S3Result<()> {
        let stored = self
            .inner
            .lock()
            .unwrap()
            .objects
            .get(object)
            .cloned()
            .flatten();
        match (stored, given) {
            (None, None) => Ok(()),
            (Some(_), None) => Err(s3_error!(
                InvalidRequest,
                "The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object."
            )),
            (None, Some(_)) => Err(s3_error!(
                InvalidRequest,
                "The encryption parameters are not applicable to this object."
            )),
            (Some(stored), Some(given)) if stored == *given => Ok(()),
            (Some(_), Some(_)) => Err(s3_error!(
                AccessDenied,
                "The calculated MD5 hash of the key did not match the hash that was provided."
            )),
        }
    }
}

/// An s3s backend that enforces SSE-C (see the module docs).
pub struct SseC<S> {
    inner: S,
    state: SseState,
}

impl<S: S3> SseC<S> {
    /// Wraps `inner`, keeping what it learns in `state`.
    pub fn new(inner: S, state: SseState) -> Self {
        SseC { inner, state }
    }
}

fn object(bucket: &str, key: &str) -> String {
    format!("{bucket}/{key}")
}

#[async_trait::async_trait]
impl<S: S3> S3 for SseC<S> {
    // Operations that involve no object data: delegated as they are.
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.inner.create_bucket(req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.inner.delete_bucket(req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.inner.delete_objects(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.inner.get_bucket_location(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.inner.head_bucket(req).await
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.inner.list_buckets(req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.inner.list_objects(req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.inner.list_objects_v2(req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.inner.list_parts(req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        self.inner.list_multipart_uploads(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.inner.abort_multipart_upload(req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.inner.upload_part_copy(req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.inner.copy_object(req).await
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let name = object(&req.input.bucket, &req.input.key);
        self.state.record("PutObject", name.clone(), &req);
        let key = req.input.sse_customer_key.clone();
        let out = self.inner.put_object(req).await?;
        self.state.inner.lock().unwrap().objects.insert(name, key);
        Ok(out)
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let name = object(&req.input.bucket, &req.input.key);
        self.state.record("GetObject", name.clone(), &req);
        let given = req.input.sse_customer_key.clone();
        let out = self.inner.get_object(req).await?;
        self.state.check_read(&name, given.as_ref())?;
        Ok(out)
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let name = object(&req.input.bucket, &req.input.key);
        self.state.record("HeadObject", name.clone(), &req);
        let given = req.input.sse_customer_key.clone();
        // A missing object is a 404 whatever the headers.
        let out = self.inner.head_object(req).await?;
        self.state.check_read(&name, given.as_ref())?;
        Ok(out)
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let name = object(&req.input.bucket, &req.input.key);
        self.state.record("DeleteObject", name.clone(), &req);
        let out = self.inner.delete_object(req).await?;
        self.state.inner.lock().unwrap().objects.remove(&name);
        Ok(out)
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let name = object(&req.input.bucket, &req.input.key);
        self.state.record("CreateMultipartUpload", name, &req);
        let key = req.input.sse_customer_key.clone();
        let out = self.inner.create_multipart_upload(req).await?;
        if let Some(id) = &out.output.upload_id {
            self.state
                .inner
                .lock()
                .unwrap()
                .uploads
                .insert(id.clone(), key);
        }
        Ok(out)
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let name = object(&req.input.bucket, &req.input.key);
        self.state.record("UploadPart", name, &req);
        let expected = self
            .state
            .inner
            .lock()
            .unwrap()
            .uploads
            .get(&req.input.upload_id)
            .cloned()
            .flatten();
        if expected != req.input.sse_customer_key {
            return Err(s3_error!(
                InvalidRequest,
                "The SSE-C parameters of the part do not match those of the upload."
            ));
        }
        self.inner.upload_part(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let name = object(&req.input.bucket, &req.input.key);
        self.state
            .record("CompleteMultipartUpload", name.clone(), &req);
        let parts = req
            .input
            .multipart_upload
            .as_ref()
            .and_then(|m| m.parts.as_ref())
            .map_or(&[][..], |p| &p[..]);
        let with_crc32 = parts.iter().filter(|p| p.checksum_crc32.is_some()).count();
        if let Some(seen) = self.state.inner.lock().unwrap().seen.last_mut() {
            seen.integrity
                .push(("parts".into(), parts.len().to_string()));
            seen.integrity
                .push(("parts with crc32".into(), with_crc32.to_string()));
        }
        let id = req.input.upload_id.clone();
        let out = self.inner.complete_multipart_upload(req).await?;
        let mut inner = self.state.inner.lock().unwrap();
        let key = inner.uploads.remove(&id).flatten();
        inner.objects.insert(name, key);
        Ok(out)
    }
}

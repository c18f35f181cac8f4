//! [`Conditional`]: wraps an s3s service (s3s-fs in the test server) so conditional
//! writes are atomic, as on real S3, and can be switched off to play a server without
//! them.
//!
//! s3s-fs checks `If-None-Match` / `If-Match` and then writes across awaits, so two
//! writers can both pass the check. Here every request that reads or writes a key holds
//! a per-key mutex from its check to its answer, and the conditions are evaluated by the
//! wrapper:
//! - PutObject: `If-None-Match: *` fails with 412 when the key exists; `If-Match: <etag>`
//!   fails with 412 when the ETag differs and with 404 `NoSuchKey` when the key does not
//!   exist (what S3 and moto answer).
//! - DeleteObject: `If-Match: <etag>` likewise.
//!
//! With conditions off ([`Conditional::new`] with `false`), the headers are dropped
//! before the inner service sees them: the server ignores them like one without
//! conditional writes ([`Conditional::conditional_deletes`] with `false`: only on
//! DeleteObject).
//!
//! Included by `s3_server.rs` (`#[path = "conditional.rs"] mod conditional;`).
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use s3s::dto::*;
use s3s::{S3, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

/// One mutex per `(bucket, key)`.
type KeyLocks = Mutex<HashMap<(String, String), Arc<tokio::sync::Mutex<()>>>>;

/// An s3s service whose conditional writes are atomic per key, or ignored.
pub struct Conditional<S: S3> {
    inner: S,
    enabled: bool,
    deletes: bool,
    keys: KeyLocks,
}

impl<S: S3> Conditional<S> {
    /// Wraps `inner`; `enabled: false` ignores `If-None-Match` and `If-Match`.
    pub fn new(inner: S, enabled: bool) -> Self {
        Conditional {
            inner,
            enabled,
            deletes: enabled,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// `false`: DeleteObject ignores `If-Match` even when writes honour conditions.
    pub fn conditional_deletes(mut self, deletes: bool) -> Self {
        self.deletes = self.enabled && deletes;
        self
    }

    /// The mutex of one key (held from the condition check to the answer).
    async fn lock(&self, bucket: &str, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let mutex = {
            let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            keys.retain(|_, m| Arc::strong_count(m) > 1);
            Arc::clone(
                keys.entry((bucket.to_string(), key.to_string()))
                    .or_default(),
            )
        };
        mutex.lock_owned().await
    }

    /// The key's current ETag, `None` when it does not exist.
    async fn current_etag<T>(
        &self,
        like: &S3Request<T>,
        bucket: &str,
        key: &str,
    ) -> S3Result<Option<ETag>> {
        let input = HeadObjectInput {
            bucket: bucket.to_string(),
            key: key.to_string(),
            ..Default::default()
        };
        let head = S3Request {
            input,
            method: like.method.clone(),
            uri: like.uri.clone(),
            headers: Default::default(),
            extensions: Default::default(),
            credentials: like.credentials.clone(),
            region: like.region.clone(),
            service: like.service.clone(),
            trailing_headers: None,
        };
        match self.inner.head_object(head).await {
            Ok(out) => Ok(Some(
                out.output
                    .e_tag
                    .unwrap_or_else(|| ETag::Strong(String::new())),
            )),
            Err(e) if *e.code() == S3ErrorCode::NoSuchKey => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Checks `If-None-Match` / `If-Match` against the key's current ETag.
    async fn check<T>(
        &self,
        like: &S3Request<T>,
        bucket: &str,
        key: &str,
        if_none_match: Option<&ETagCondition>,
        if_match: Option<&ETagCondition>,
    ) -> S3Result<()> {
        if if_none_match.is_none() && if_match.is_none() {
            return Ok(());
        }
        let current = self.current_etag(like, bucket, key).await?;
        if let (Some(condition), Some(etag)) = (if_none_match, &current) {
            let matches = match condition {
                ETagCondition::Any => true,
                ETagCondition::ETag(expected) => etag.strong_cmp(expected),
            };
            if matches {
                return Err(s3_error!(
                    PreconditionFailed,
                    "If-None-Match: the object exists"
                ));
            }
        }
        if let Some(condition) = if_match {
            let Some(etag) = &current else {
                return Err(s3_error!(NoSuchKey, "If-Match: the object does not exist"));
            };
            if let ETagCondition::ETag(expected) = condition
                && !etag.strong_cmp(expected)
            {
                return Err(s3_error!(PreconditionFailed, "If-Match: the ETag differs"));
            }
        }
        Ok(())
    }
}

/// The `S3` impl: operations that need no condition handling delegated as they are,
/// operations on one key under that key's mutex, then the hand-written ones. (One
/// macro around the whole impl, so `async_trait` sees the expanded methods.)
macro_rules! conditional_impl {
    (
        plain { $($op:ident: $input:ty => $output:ty),* $(,)? }
        locked { $($lop:ident: $linput:ty => $loutput:ty),* $(,)? }
        $($rest:tt)*
    ) => {
        #[async_trait::async_trait]
        impl<S: S3> S3 for Conditional<S> {
            $(
                async fn $op(&self, req: S3Request<$input>) -> S3Result<S3Response<$output>> {
                    self.inner.$op(req).await
                }
            )*
            $(
                async fn $lop(&self, req: S3Request<$linput>) -> S3Result<S3Response<$loutput>> {
                    let _guard = self.lock(&req.input.bucket, &req.input.key).await;
                    self.inner.$lop(req).await
                }
            )*
            $($rest)*
        }
    };
}

conditional_impl! {
    plain {
        create_bucket: CreateBucketInput => CreateBucketOutput,
        delete_bucket: DeleteBucketInput => DeleteBucketOutput,
        delete_objects: DeleteObjectsInput => DeleteObjectsOutput,
        get_bucket_location: GetBucketLocationInput => GetBucketLocationOutput,
        head_bucket: HeadBucketInput => HeadBucketOutput,
        list_buckets: ListBucketsInput => ListBucketsOutput,
        list_objects: ListObjectsInput => ListObjectsOutput,
        list_objects_v2: ListObjectsV2Input => ListObjectsV2Output,
        list_multipart_uploads: ListMultipartUploadsInput => ListMultipartUploadsOutput,
        create_multipart_upload: CreateMultipartUploadInput => CreateMultipartUploadOutput,
        upload_part: UploadPartInput => UploadPartOutput,
        upload_part_copy: UploadPartCopyInput => UploadPartCopyOutput,
        list_parts: ListPartsInput => ListPartsOutput,
        abort_multipart_upload: AbortMultipartUploadInput => AbortMultipartUploadOutput,
    }
    locked {
        get_object: GetObjectInput => GetObjectOutput,
        head_object: HeadObjectInput => HeadObjectOutput,
        copy_object: CopyObjectInput => CopyObjectOutput,
        complete_multipart_upload: CompleteMultipartUploadInput => CompleteMultipartUploadOutput,
    }

    async fn put_object(
        &self,
        mut req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let _guard = self.lock(&req.input.bucket, &req.input.key).await;
        let if_none_match = req.input.if_none_match.take();
        let if_match = req.input.if_match.take();
        if self.enabled {
            let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
            self.check(&req, &bucket, &key, if_none_match.as_ref(), if_match.as_ref())
                .await?;
        }
        self.inner.put_object(req).await
    }

    async fn delete_object(
        &self,
        mut req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let _guard = self.lock(&req.input.bucket, &req.input.key).await;
        let if_match = req.input.if_match.take();
        if self.deletes {
            let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
            self.check(&req, &bucket, &key, None, if_match.as_ref())
                .await?;
        }
        self.inner.delete_object(req).await
    }
}

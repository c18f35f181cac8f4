//! The streaming upload behind [`ObjectStore::put_object_stream`](super::ObjectStore::put_object_stream):
//! a body read in parts of a fixed size, a few parts uploaded at once (S3's multipart
//! upload), the upload aborted on any failure and when its future is dropped. A body
//! that fits in one part is one `PutObject`.
//!
//! The logic is written once, over [`PartTarget`] (the five requests one upload makes),
//! which [`S3Client`](super::S3Client) and `MemoryStore` implement.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::BufMut;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::S3Error;

/// The most parts one multipart upload may have (S3's limit).
pub const MAX_PARTS: usize = 10_000;

/// The smallest part S3 accepts, but for the last one (5 MiB).
pub const MIN_PART_SIZE: usize = 5 << 20;

/// What a streamed upload wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Uploaded {
    /// The bytes the body held, all of them uploaded.
    pub size: u64,
    /// The object's ETag as the server returned it (for a multipart upload, the ETag
    /// of the parts' ETags with `-<parts>`); `None` when the server sent none.
    pub etag: Option<String>,
    /// How many parts were uploaded: 0 when the body fit in one part and went up as
    /// one `PutObject`.
    pub parts: usize,
}

/// What the server gave back for an uploaded part, and what the completion must list
/// again for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartReceipt {
    /// The part's ETag.
    pub(crate) etag: String,
    /// The part's CRC32 as it was sent (`x-amz-checksum-crc32`, base64), when it was.
    pub(crate) crc32: Option<String>,
}

/// The requests of one upload to one key, with its content type, metadata and the
/// store's encryption and storage class bound in.
#[async_trait]
pub(crate) trait PartTarget: Send + Sync + 'static {
    /// The bucket, for errors.
    fn bucket(&self) -> &str;
    /// The full key, for errors.
    fn key(&self) -> &str;
    /// Writes the whole (small) body in one `PutObject`; returns its ETag.
    async fn put_whole(&self, body: Vec<u8>) -> Result<Option<String>, S3Error>;
    /// Starts a multipart upload; returns its id.
    async fn create(&self) -> Result<String, S3Error>;
    /// Uploads part `number` (from 1); returns what the completion lists for it.
    async fn upload_part(
        &self,
        upload_id: &str,
        number: i32,
        body: Vec<u8>,
    ) -> Result<PartReceipt, S3Error>;
    /// Completes the upload from its parts, in order; returns the object's ETag.
    async fn complete(
        &self,
        upload_id: &str,
        parts: Vec<(i32, PartReceipt)>,
    ) -> Result<Option<String>, S3Error>;
    /// Aborts the upload (its parts are discarded).
    async fn abort(&self, upload_id: &str) -> Result<(), S3Error>;
}

/// An upload under way: aborted when dropped before [`Pending::disarm`] (on the
/// current runtime, in the background; logged when there is none).
struct Pending {
    target: Arc<dyn PartTarget>,
    upload_id: Option<String>,
}

impl Pending {
    /// Aborts the upload now (once), logging a failure: the caller's error says why it
    /// was given up.
    async fn abort(&mut self) {
        if let Some(id) = self.upload_id.take() {
            abort_logged(&*self.target, &id).await;
        }
    }

    fn disarm(&mut self) {
        self.upload_id = None;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(id) = self.upload_id.take() else {
            return;
        };
        let target = Arc::clone(&self.target);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { abort_logged(&*target, &id).await });
            }
            Err(_) => tracing::warn!(
                key = target.key(),
                "a dropped multipart upload could not be aborted (no runtime); prune aborts it later"
            ),
        }
    }
}

async fn abort_logged(target: &dyn PartTarget, upload_id: &str) {
    match target.abort(upload_id).await {
        Ok(()) | Err(S3Error::NotFound { .. }) => {}
        Err(e) => {
            tracing::warn!(key = target.key(), error = %e, "could not abort the multipart upload");
        }
    }
}

/// Reads `body` to its end into parts of `part_size` bytes and uploads them, at most
/// `in_flight` at once: the memory held is at most `in_flight + 1` parts (those in
/// flight and the one being read). A body shorter than one part is one `PutObject`.
///
/// # Errors
/// The first request that fails, or [`S3Error::UploadGivenUp`] when reading `body`
/// fails or it needs more than [`MAX_PARTS`] parts; the multipart upload is then
/// aborted.
pub(crate) async fn upload(
    target: Arc<dyn PartTarget>,
    body: &mut (dyn AsyncRead + Send + Unpin),
    part_size: usize,
    in_flight: usize,
) -> Result<Uploaded, S3Error> {
    let part_size = part_size.max(1);
    let in_flight = in_flight.max(1);
    let first = read_part(&*target, body, part_size).await?;
    if first.len() < part_size {
        let size = first.len() as u64;
        let etag = target.put_whole(first).await?;
        return Ok(Uploaded {
            size,
            etag,
            parts: 0,
        });
    }
    let mut pending = Pending {
        target: Arc::clone(&target),
        upload_id: Some(target.create().await?),
    };
    let upload_id = pending.upload_id.clone().unwrap_or_default();
    match upload_parts(&*target, &upload_id, first, body, part_size, in_flight).await {
        Ok((size, parts)) => {
            let count = parts.len();
            match target.complete(&upload_id, parts).await {
                Ok(etag) => {
                    pending.disarm();
                    Ok(Uploaded {
                        size,
                        etag,
                        parts: count,
                    })
                }
                Err(e) => {
                    pending.abort().await;
                    Err(e)
                }
            }
        }
        Err(e) => {
            pending.abort().await;
            Err(e)
        }
    }
}

/// Uploads `first` and the rest of `body` as parts; returns the size and the parts'
/// numbers and ETags, in order.
async fn upload_parts(
    target: &dyn PartTarget,
    upload_id: &str,
    first: Vec<u8>,
    body: &mut (dyn AsyncRead + Send + Unpin),
    part_size: usize,
    in_flight: usize,
) -> Result<(u64, Vec<(i32, PartReceipt)>), S3Error> {
    let mut uploads = FuturesUnordered::new();
    let mut done: Vec<(i32, PartReceipt)> = Vec::new();
    let mut size = 0_u64;
    let mut next: Option<Vec<u8>> = Some(first);
    let mut number = 0_i32;
    let mut ended = false;
    // The part being read: kept across the loop's turns, so a read that a finished
    // upload interrupts loses nothing (each single read is cancel-safe). Read into its
    // spare capacity, never zeroed first.
    let mut buffer: Vec<u8> = Vec::new();
    let outcome = loop {
        if let Some(part) = next.take() {
            number += 1;
            if usize::try_from(number).unwrap_or(usize::MAX) > MAX_PARTS {
                break Err(given_up(
                    target,
                    format!(
                        "the body needs more than {MAX_PARTS} parts of {part_size} bytes (use larger parts)"
                    ),
                    None,
                ));
            }
            size += part.len() as u64;
            let n = number;
            uploads.push(async move {
                target
                    .upload_part(upload_id, n, part)
                    .await
                    .map(|receipt| (n, receipt))
            });
        }
        if ended && uploads.is_empty() {
            break Ok(());
        }
        let can_read = !ended && uploads.len() < in_flight;
        if can_read && buffer.capacity() == 0 {
            buffer = Vec::with_capacity(part_size);
        }
        let room = part_size - buffer.len();
        tokio::select! {
            Some(finished) = uploads.next(), if !uploads.is_empty() => match finished {
                Ok(part) => done.push(part),
                Err(e) => break Err(e),
            },
            read = async { body.read_buf(&mut (&mut buffer).limit(room)).await }, if can_read => {
                let n = match read {
                    Ok(n) => n,
                    Err(e) => break Err(given_up(target, "reading the body failed".into(), Some(e))),
                };
                if n == 0 || buffer.len() == part_size {
                    ended = n == 0;
                    let part = std::mem::take(&mut buffer);
                    if !part.is_empty() {
                        next = Some(part);
                    }
                }
            }
        }
    };
    if let Err(e) = outcome {
        // The parts still on their way are let finish before the upload is aborted:
        // a part the server stores after the abort (a request dropped half-way, which
        // the server may still complete) would outlive its upload.
        while uploads.next().await.is_some() {}
        return Err(e);
    }
    done.sort_unstable_by_key(|(n, _)| *n);
    Ok((size, done))
}

/// Reads up to `part_size` bytes of `body` (fewer only at its end).
async fn read_part(
    target: &dyn PartTarget,
    body: &mut (dyn AsyncRead + Send + Unpin),
    part_size: usize,
) -> Result<Vec<u8>, S3Error> {
    let mut part = Vec::with_capacity(part_size);
    (&mut *body)
        .take(part_size as u64)
        .read_to_end(&mut part)
        .await
        .map_err(|e| given_up(target, "reading the body failed".into(), Some(e)))?;
    Ok(part)
}

fn given_up(target: &dyn PartTarget, reason: String, source: Option<std::io::Error>) -> S3Error {
    S3Error::UploadGivenUp {
        bucket: target.bucket().to_string(),
        key: target.key().to_string(),
        reason,
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::s3::{MemoryStore, ObjectStore};

    fn body(length: usize) -> Vec<u8> {
        (0..length).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn every_cut_reads_back_byte_for_byte() {
        let store = MemoryStore::new("");
        for (length, part, in_flight) in [
            (0, 10, 1),
            (9, 10, 2),
            (10, 10, 2),
            (11, 10, 1),
            (1000, 7, 3),
            (4096, 1024, 4),
            (5000, 1, 8),
        ] {
            let data = body(length);
            let mut reader = &data[..];
            let up = store
                .put_object_stream("k", &mut reader, "x", &HashMap::new(), part, in_flight)
                .await
                .unwrap();
            assert_eq!(up.size, length as u64);
            let parts = if length < part {
                0
            } else {
                length.div_ceil(part)
            };
            assert_eq!(up.parts, parts, "{length} in {part}");
            assert!(store.get_object("k", 1 << 20).await.unwrap() == data);
        }
        assert!(store.list_multipart_uploads("").await.unwrap().is_empty());
    }

    /// A target that records the parts in flight and fails one part.
    struct Recording {
        inner: MemoryUpload,
        in_flight: AtomicUsize,
        most: AtomicUsize,
        fail_part: Option<i32>,
        aborted: Mutex<Vec<String>>,
    }

    struct MemoryUpload(Arc<dyn PartTarget>);

    #[async_trait]
    impl PartTarget for Recording {
        fn bucket(&self) -> &str {
            self.inner.0.bucket()
        }
        fn key(&self) -> &str {
            self.inner.0.key()
        }
        async fn put_whole(&self, body: Vec<u8>) -> Result<Option<String>, S3Error> {
            self.inner.0.put_whole(body).await
        }
        async fn create(&self) -> Result<String, S3Error> {
            self.inner.0.create().await
        }
        async fn upload_part(
            &self,
            upload_id: &str,
            number: i32,
            body: Vec<u8>,
        ) -> Result<PartReceipt, S3Error> {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if Some(number) == self.fail_part {
                return Err(S3Error::NotImplemented {
                    operation: "UploadPart",
                });
            }
            self.inner.0.upload_part(upload_id, number, body).await
        }
        async fn complete(
            &self,
            upload_id: &str,
            parts: Vec<(i32, PartReceipt)>,
        ) -> Result<Option<String>, S3Error> {
            self.inner.0.complete(upload_id, parts).await
        }
        async fn abort(&self, upload_id: &str) -> Result<(), S3Error> {
            self.aborted.lock().unwrap().push(upload_id.to_string());
            self.inner.0.abort(upload_id).await
        }
    }

    fn recording(store: &MemoryStore, fail_part: Option<i32>) -> Arc<Recording> {
        Arc::new(Recording {
            inner: MemoryUpload(Arc::new(crate::s3::memory::upload_target(store, "k"))),
            in_flight: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            fail_part,
            aborted: Mutex::new(Vec::new()),
        })
    }

    #[tokio::test]
    async fn parts_go_up_concurrently_but_never_more_than_asked() {
        let store = MemoryStore::new("");
        let target = recording(&store, None);
        let data = body(100);
        let up = upload(target.clone(), &mut &data[..], 10, 3).await.unwrap();
        assert_eq!(up.parts, 10);
        assert_eq!(target.most.load(Ordering::SeqCst), 3);
        assert!(store.get_object("k", 1000).await.unwrap() == data);
    }

    #[tokio::test]
    async fn a_failed_part_aborts_the_upload_and_writes_nothing() {
        let store = MemoryStore::new("");
        let target = recording(&store, Some(4));
        let result = upload(target.clone(), &mut &body(100)[..], 10, 2).await;
        assert!(
            matches!(result, Err(S3Error::NotImplemented { .. })),
            "{result:?}"
        );
        assert_eq!(target.aborted.lock().unwrap().len(), 1);
        assert!(store.keys().is_empty());
        assert!(store.list_multipart_uploads("").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_dropped_upload_is_aborted() {
        let store = MemoryStore::new("");
        let target = recording(&store, None);
        // A body that gives two parts, then never ends.
        let (mut writer, mut reader) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut writer, &[1; 25])
            .await
            .unwrap();
        let up = upload(target.clone(), &mut reader, 10, 2);
        let timed_out = tokio::time::timeout(std::time::Duration::from_millis(100), up).await;
        assert!(timed_out.is_err(), "the upload waits for its body");
        for _ in 0..100 {
            if !target.aborted.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(target.aborted.lock().unwrap().len(), 1);
        assert!(store.list_multipart_uploads("").await.unwrap().is_empty());
        assert!(store.keys().is_empty());
        drop(writer);
    }
}

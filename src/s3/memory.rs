//! [`MemoryStore`]: an in-memory [`ObjectStore`] for fast tests of the catalog, prune
//! and the backup lock (feature `testing`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Duration, SubsecRound, Utc};
use md5::{Digest, Md5};

use super::client::{Conditional, MultipartUpload, ObjectHead, ObjectInfo, VersionedObject};
use super::store::{ObjectStore, RangeBody};
use super::upload::{self, Uploaded};
use crate::error::S3Error;
use tokio::io::AsyncRead;

/// The largest chunk of a [`MemoryStore`] range read as a stream.
const MEMORY_CHUNK: usize = 1000;

/// An in-memory bucket behind the [`ObjectStore`] trait, with the S3 behaviour the
/// catalog and the lock rely on:
///
/// - `LastModified` comes from a clock the test controls ([`advance`](Self::advance),
///   [`set_now`](Self::set_now)), with S3's one-second precision; it starts at the
///   current time and only moves when told, so lock expiry is tested without sleeping.
/// - Conditional writes and deletes are atomic (one mutex over the bucket); `If-Match`
///   on a missing object is [`Conditional::Missing`], as S3 answers 404. They can be
///   switched off ([`set_conditional_writes`](Self::set_conditional_writes)) to play a
///   server that ignores `If-None-Match` / `If-Match`.
/// - ETags are the quoted MD5 of the body, as S3 gives for single-part uploads.
/// - Multipart uploads exist only as records
///   ([`start_multipart_upload`](Self::start_multipart_upload)) to list and abort.
///
/// Clones share the same bucket.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    bucket: String,
    prefix: String,
    state: Arc<Mutex<State>>,
    /// The bytes the range streams have given so far (how far a reader read).
    served: Arc<std::sync::atomic::AtomicU64>,
    /// The ranges requested of `get_object_range_stream`, `(offset, length)`, in order
    /// (kept for this crate's tests only: a charm's long test run does not grow it).
    #[cfg(test)]
    ranges: Arc<Mutex<Vec<(u64, u64)>>>,
}

#[derive(Debug)]
struct State {
    objects: BTreeMap<String, Stored>,
    uploads: Vec<MultipartUpload>,
    /// The parts of the uploads started by `put_object_stream`, by upload id.
    parts: HashMap<String, BTreeMap<i32, Vec<u8>>>,
    now: DateTime<Utc>,
    conditional_writes: bool,
    next_upload: u64,
}

#[derive(Debug, Clone)]
struct Stored {
    body: Vec<u8>,
    etag: String,
    last_modified: DateTime<Utc>,
    metadata: HashMap<String, String>,
}

impl MemoryStore {
    /// An empty bucket whose keys live under the relation `path` (normalised as
    /// `normalize_prefix` does), with conditional writes on and the clock
    /// at the current time.
    pub fn new(path: &str) -> Self {
        MemoryStore {
            bucket: "memory".into(),
            prefix: super::normalize_prefix(path),
            state: Arc::new(Mutex::new(State {
                objects: BTreeMap::new(),
                uploads: Vec::new(),
                parts: HashMap::new(),
                now: Utc::now().trunc_subsecs(0),
                conditional_writes: true,
                next_upload: 1,
            })),
            served: Arc::default(),
            #[cfg(test)]
            ranges: Arc::default(),
        }
    }

    /// The bytes [`ObjectStore::get_object_range_stream`]'s bodies have given so far.
    #[cfg(test)]
    pub(crate) fn range_bytes_served(&self) -> u64 {
        self.served.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The ranges [`ObjectStore::get_object_range_stream`] was asked for so far,
    /// `(offset, length)`, in order.
    #[cfg(test)]
    pub(crate) fn ranges_requested(&self) -> Vec<(u64, u64)> {
        self.ranges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The store's clock: what the next write's `LastModified` will be.
    pub fn now(&self) -> DateTime<Utc> {
        self.state().now
    }

    /// Sets the store's clock (truncated to whole seconds, as S3's `LastModified`).
    pub fn set_now(&self, now: DateTime<Utc>) {
        self.state().now = now.trunc_subsecs(0);
    }

    /// Moves the store's clock forward by `by` (saturating at the latest time chrono
    /// can hold).
    pub fn advance(&self, by: std::time::Duration) {
        let by = Duration::from_std(by).unwrap_or(Duration::MAX);
        let mut state = self.state();
        state.now = state
            .now
            .checked_add_signed(by)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
            .trunc_subsecs(0);
    }

    /// `false` plays a server that ignores `If-None-Match` and `If-Match`: conditional
    /// writes and deletes then always go ahead (`true`, the default, honours them).
    pub fn set_conditional_writes(&self, enabled: bool) {
        self.state().conditional_writes = enabled;
    }

    /// Every full key in the bucket, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.state().objects.keys().cloned().collect()
    }

    /// Records an unfinished multipart upload of `key` started now and returns its id.
    pub fn start_multipart_upload(&self, key: &str) -> String {
        let mut state = self.state();
        let upload_id = format!("upload-{}", state.next_upload);
        state.next_upload += 1;
        let initiated = Some(state.now);
        state.uploads.push(MultipartUpload {
            key: key.to_string(),
            upload_id: upload_id.clone(),
            initiated,
        });
        upload_id
    }

    fn not_found(&self, key: &str) -> S3Error {
        S3Error::NotFound {
            bucket: self.bucket.clone(),
            key: key.to_string(),
        }
    }
}

impl State {
    /// Stores `body` at `key` stamped with the clock and returns its ETag.
    fn write(&mut self, key: &str, body: Vec<u8>, metadata: &HashMap<String, String>) -> String {
        let digest: String = Md5::digest(&body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let etag = format!("\"{digest}\"");
        let metadata = metadata
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        self.objects.insert(
            key.to_string(),
            Stored {
                body,
                etag: etag.clone(),
                last_modified: self.now,
                metadata,
            },
        );
        etag
    }

    /// Whether `If-Match: etag` lets a request on `key` go ahead; `Err` is the outcome
    /// when it does not.
    fn check_match(&self, key: &str, etag: &str) -> Result<(), Conditional> {
        if !self.conditional_writes {
            return Ok(());
        }
        match self.objects.get(key) {
            None => Err(Conditional::Missing),
            Some(stored) if stored.etag == etag => Ok(()),
            Some(_) => Err(Conditional::PreconditionFailed),
        }
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    fn prefix(&self) -> &str {
        &self.prefix
    }

    async fn list_objects(&self) -> Result<Vec<ObjectInfo>, S3Error> {
        let under = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        Ok(self
            .state()
            .objects
            .range(under.clone()..)
            .take_while(|(key, _)| key.starts_with(&under))
            .map(|(key, stored)| ObjectInfo {
                key: key.clone(),
                size: stored.body.len() as u64,
                last_modified: stored.last_modified,
            })
            .collect())
    }

    async fn head_object(&self, key: &str) -> Result<ObjectHead, S3Error> {
        let state = self.state();
        let stored = state.objects.get(key).ok_or_else(|| self.not_found(key))?;
        Ok(ObjectHead {
            key: key.to_string(),
            size: stored.body.len() as u64,
            last_modified: stored.last_modified,
            metadata: stored.metadata.clone(),
            etag: stored.etag.clone(),
        })
    }

    async fn get_object(&self, key: &str, max_bytes: u64) -> Result<Vec<u8>, S3Error> {
        Ok(self.get_object_versioned(key, max_bytes).await?.body)
    }

    async fn get_object_range(
        &self,
        key: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, S3Error> {
        let state = self.state();
        let stored = state.objects.get(key).ok_or_else(|| self.not_found(key))?;
        let size = stored.body.len() as u64;
        let start = offset.min(size);
        let end = offset.saturating_add(length).min(size);
        let (start, end) = (
            usize::try_from(start).unwrap_or(usize::MAX),
            usize::try_from(end).unwrap_or(usize::MAX),
        );
        Ok(stored.body[start..end].to_vec())
    }

    /// The range in chunks of at most 1,000 bytes (as a server's body
    /// arrives in pieces), so that readers meet chunk boundaries in tests.
    async fn get_object_range_stream(
        &self,
        key: &str,
        offset: u64,
        length: u64,
    ) -> Result<RangeBody, S3Error> {
        #[cfg(test)]
        self.ranges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((offset, length));
        let mut rest = bytes::Bytes::from(self.get_object_range(key, offset, length).await?);
        let served = Arc::clone(&self.served);
        let chunks = std::iter::from_fn(move || {
            (!rest.is_empty()).then(|| {
                let chunk = rest.split_to(rest.len().min(MEMORY_CHUNK));
                served.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::SeqCst);
                Ok(chunk)
            })
        });
        Ok(Box::pin(futures_util::stream::iter(chunks)))
    }

    async fn get_object_versioned(
        &self,
        key: &str,
        max_bytes: u64,
    ) -> Result<VersionedObject, S3Error> {
        let state = self.state();
        let stored = state.objects.get(key).ok_or_else(|| self.not_found(key))?;
        if stored.body.len() as u64 > max_bytes {
            return Err(S3Error::TooLarge {
                bucket: self.bucket.clone(),
                key: key.to_string(),
                limit: max_bytes,
            });
        }
        Ok(VersionedObject {
            body: stored.body.clone(),
            etag: stored.etag.clone(),
            last_modified: stored.last_modified,
        })
    }

    async fn put_object(
        &self,
        key: &str,
        body: Vec<u8>,
        _content_type: &str,
        metadata: &HashMap<String, String>,
    ) -> Result<(), S3Error> {
        self.state().write(key, body, metadata);
        Ok(())
    }

    async fn put_object_stream(
        &self,
        key: &str,
        body: &mut (dyn AsyncRead + Send + Unpin),
        content_type: &str,
        metadata: &HashMap<String, String>,
        part_size: usize,
        in_flight: usize,
    ) -> Result<Uploaded, S3Error> {
        let _ = content_type;
        let target = Arc::new(MemoryUpload {
            store: self.clone(),
            key: key.to_string(),
            metadata: metadata.clone(),
        });
        upload::upload(target, body, part_size, in_flight).await
    }

    async fn put_object_if_none_match(
        &self,
        key: &str,
        body: Vec<u8>,
        _content_type: &str,
    ) -> Result<Conditional, S3Error> {
        let mut state = self.state();
        if state.conditional_writes && state.objects.contains_key(key) {
            return Ok(Conditional::PreconditionFailed);
        }
        let etag = state.write(key, body, &HashMap::new());
        Ok(Conditional::Done { etag: Some(etag) })
    }

    async fn put_object_if_match(
        &self,
        key: &str,
        body: Vec<u8>,
        _content_type: &str,
        etag: &str,
    ) -> Result<Conditional, S3Error> {
        let mut state = self.state();
        if let Err(outcome) = state.check_match(key, etag) {
            return Ok(outcome);
        }
        let etag = state.write(key, body, &HashMap::new());
        Ok(Conditional::Done { etag: Some(etag) })
    }

    async fn delete_object(&self, key: &str) -> Result<(), S3Error> {
        self.state().objects.remove(key);
        Ok(())
    }

    async fn delete_object_if_match(&self, key: &str, etag: &str) -> Result<Conditional, S3Error> {
        let mut state = self.state();
        if let Err(outcome) = state.check_match(key, etag) {
            return Ok(outcome);
        }
        state.objects.remove(key);
        Ok(Conditional::Done { etag: None })
    }

    async fn list_multipart_uploads(
        &self,
        key_prefix: &str,
    ) -> Result<Vec<MultipartUpload>, S3Error> {
        Ok(self
            .state()
            .uploads
            .iter()
            .filter(|u| u.key.starts_with(key_prefix))
            .cloned()
            .collect())
    }

    async fn abort_multipart_upload(&self, key: &str, upload_id: &str) -> Result<(), S3Error> {
        let mut state = self.state();
        let before = state.uploads.len();
        state
            .uploads
            .retain(|u| !(u.key == key && u.upload_id == upload_id));
        state.parts.remove(upload_id);
        if state.uploads.len() == before {
            return Err(self.not_found(key));
        }
        Ok(())
    }
}

/// The requests of one streamed upload of `key` to `store` (for the upload's own
/// tests).
#[cfg(test)]
pub(crate) fn upload_target(store: &MemoryStore, key: &str) -> impl upload::PartTarget {
    MemoryUpload {
        store: store.clone(),
        key: key.to_string(),
        metadata: HashMap::new(),
    }
}

/// One streamed upload's requests, on the in-memory bucket: parts are kept by upload
/// id until completed (concatenated in order) or aborted.
struct MemoryUpload {
    store: MemoryStore,
    key: String,
    metadata: HashMap<String, String>,
}

#[async_trait]
impl upload::PartTarget for MemoryUpload {
    fn bucket(&self) -> &str {
        &self.store.bucket
    }

    fn key(&self) -> &str {
        &self.key
    }

    async fn put_whole(&self, body: Vec<u8>) -> Result<Option<String>, S3Error> {
        Ok(Some(self.store.state().write(
            &self.key,
            body,
            &self.metadata,
        )))
    }

    async fn create(&self) -> Result<String, S3Error> {
        let id = self.store.start_multipart_upload(&self.key);
        self.store.state().parts.insert(id.clone(), BTreeMap::new());
        Ok(id)
    }

    async fn upload_part(
        &self,
        upload_id: &str,
        number: i32,
        body: Vec<u8>,
    ) -> Result<upload::PartReceipt, S3Error> {
        let mut state = self.store.state();
        let Some(parts) = state.parts.get_mut(upload_id) else {
            return Err(self.store.not_found(&self.key));
        };
        let etag = format!("\"part-{number}-{}\"", body.len());
        parts.insert(number, body);
        Ok(upload::PartReceipt { etag, crc32: None })
    }

    async fn complete(
        &self,
        upload_id: &str,
        parts: Vec<(i32, upload::PartReceipt)>,
    ) -> Result<Option<String>, S3Error> {
        let mut state = self.store.state();
        let Some(stored) = state.parts.remove(upload_id) else {
            return Err(self.store.not_found(&self.key));
        };
        state.uploads.retain(|u| u.upload_id != upload_id);
        let numbers: Vec<i32> = parts.iter().map(|(n, _)| *n).collect();
        let have: Vec<i32> = stored.keys().copied().collect();
        if numbers != have {
            return Err(S3Error::Request {
                operation: "CompleteMultipartUpload",
                bucket: self.store.bucket.clone(),
                key: self.key.clone(),
                status: Some(400),
                code: Some("InvalidPart".into()),
                transport: None,
                message: format!("parts {numbers:?} named, {have:?} uploaded").into(),
                source: None,
            });
        }
        let body: Vec<u8> = stored.into_values().flatten().collect();
        let etag = state.write(&self.key, body, &self.metadata);
        Ok(Some(etag))
    }

    async fn abort(&self, upload_id: &str) -> Result<(), S3Error> {
        self.store
            .abort_multipart_upload(&self.key, upload_id)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::CloneStore;

    #[tokio::test]
    async fn the_store_passes_the_conformance_suite() {
        let store = MemoryStore::new("/a//b/");
        assert_eq!(store.prefix(), "a/b");
        crate::s3::conformance::run(&store).await;
        let root = MemoryStore::new("");
        let shared: Arc<dyn ObjectStore> = root.clone_store();
        crate::s3::conformance::run(&*shared).await;
        crate::s3::conformance::run(&shared).await;
    }

    #[tokio::test]
    async fn last_modified_follows_the_controlled_clock() {
        let store = MemoryStore::new("p");
        let t0 = store.now();
        store
            .put_object("p/x", b"1".to_vec(), "text/plain", &HashMap::new())
            .await
            .unwrap();
        store.advance(std::time::Duration::from_secs(600));
        store
            .put_object("p/y", b"2".to_vec(), "text/plain", &HashMap::new())
            .await
            .unwrap();
        assert_eq!(store.head_object("p/x").await.unwrap().last_modified, t0);
        assert_eq!(
            store.head_object("p/y").await.unwrap().last_modified,
            t0 + Duration::seconds(600)
        );
    }

    #[tokio::test]
    async fn without_conditional_writes_conditions_are_ignored() {
        let store = MemoryStore::new("");
        store.set_conditional_writes(false);
        for _ in 0..2 {
            let outcome = store
                .put_object_if_none_match("k", b"x".to_vec(), "text/plain")
                .await
                .unwrap();
            assert!(matches!(outcome, Conditional::Done { .. }), "{outcome:?}");
        }
        let outcome = store
            .put_object_if_match("k", b"y".to_vec(), "text/plain", "\"wrong\"")
            .await
            .unwrap();
        assert!(matches!(outcome, Conditional::Done { .. }), "{outcome:?}");
        assert_eq!(store.get_object("k", 1024).await.unwrap(), b"y");
    }

    #[tokio::test]
    async fn multipart_uploads_are_listed_by_prefix_and_aborted_once() {
        let store = MemoryStore::new("p");
        let id = store.start_multipart_upload("p/a");
        store.start_multipart_upload("q/b");
        let listed = store.list_multipart_uploads("p/").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].upload_id, id);
        store.abort_multipart_upload("p/a", &id).await.unwrap();
        assert!(matches!(
            store.abort_multipart_upload("p/a", &id).await,
            Err(S3Error::NotFound { .. })
        ));
    }
}

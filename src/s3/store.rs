//! [`ObjectStore`]: the storage seam. What the catalog (list, status, delete, prune) and
//! the backup lock need from a bucket, as one dyn-compatible trait, in the style of the
//! `object_store` crate: [`S3Client`] is the real backend, `MemoryStore` (feature
//! `testing`) an in-memory one, and `testing::store_conformance` (feature `testing`) the checks
//! both pass.
//!
//! Keys are full keys (the configured prefix included), as [`ObjectStore::object_key`]
//! builds them.

use std::collections::HashMap;
use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use tokio::io::AsyncRead;

use super::client::{Conditional, MultipartUpload, ObjectHead, ObjectInfo, VersionedObject};
use super::upload::Uploaded;
use crate::error::S3Error;
use crate::s3::S3Client;

/// The body of a ranged read, as it arrives ([`ObjectStore::get_object_range_stream`]):
/// chunks in order, then the end; an error ends it.
pub type RangeBody = BoxStream<'static, Result<Bytes, S3Error>>;

/// An owned, shared handle to a store, for work that outlives a borrow (the lock's
/// background refresh and its release on drop).
///
/// Implemented for every `ObjectStore + Clone + 'static` type; implement it by hand
/// only for a store that is not `Clone` (e.g. by keeping it in an `Arc`).
pub trait CloneStore {
    /// A new shared handle to the same store (the same bucket and objects).
    fn clone_store(&self) -> Arc<dyn ObjectStore>;
}

impl<T: ObjectStore + Clone + 'static> CloneStore for T {
    fn clone_store(&self) -> Arc<dyn ObjectStore> {
        Arc::new(self.clone())
    }
}

/// The object storage the catalog and the backup lock use: one bucket, one key prefix.
///
/// Dyn-compatible (`&dyn ObjectStore` and `Arc<dyn ObjectStore>` work); the catalog's
/// functions take `&(impl ObjectStore + ?Sized)`, so an [`S3Client`], a `MemoryStore`
/// (feature `testing`) or a charm's own backend can be passed. Errors follow S3: a missing object or bucket is [`S3Error::NotFound`], an
/// operation the server lacks [`S3Error::NotImplemented`], anything else
/// [`S3Error::Request`]; a failed condition is a [`Conditional`] outcome, not an error.
///
/// ```
/// # #[cfg(feature = "testing")]
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), synapse_backup::BackupError> {
/// use std::collections::HashMap;
/// use synapse_backup::testing::MemoryStore;
/// use synapse_backup::{BackupId, BackupStatus, ObjectStore, list_backups};
///
/// let store = MemoryStore::new("synapse/backups");
/// let id = BackupId::from_time(store.now());
/// let key = store.object_key(id.as_str());
/// assert_eq!(key, format!("synapse/backups/{id}"));
/// store.put_object(&key, b"ciphertext".to_vec(), "application/octet-stream", &HashMap::new()).await?;
///
/// // An untagged data object without manifest: a backup of the Python charm.
/// let backups = list_backups(&store).await?;
/// assert_eq!(backups[0].status, BackupStatus::Legacy);
/// # Ok(()) }
/// # #[cfg(not(feature = "testing"))]
/// # fn main() {}
/// ```
#[async_trait]
pub trait ObjectStore: CloneStore + Debug + Send + Sync {
    /// The normalised key prefix (no leading, trailing or repeated slashes; empty for the
    /// bucket root).
    fn prefix(&self) -> &str;

    /// The full key of `name` under the prefix (the prefix, a `/`, then the name).
    fn object_key(&self, name: &str) -> String {
        super::object_key(self.prefix(), name)
    }

    /// Every object under the prefix (`prefix/`, or the whole bucket when the prefix
    /// is empty), with full keys, in any order.
    ///
    /// # Errors
    /// [`S3Error::NotFound`] when the bucket does not exist, [`S3Error::Request`]
    /// otherwise.
    async fn list_objects(&self) -> Result<Vec<ObjectInfo>, S3Error>;

    /// The size, last-modified time and user metadata of the object at `key`.
    ///
    /// # Errors
    /// [`S3Error::NotFound`] when the object (or bucket) does not exist,
    /// [`S3Error::Request`] otherwise.
    async fn head_object(&self, key: &str) -> Result<ObjectHead, S3Error>;

    /// The whole (small) object at `key`, at most `max_bytes` long: a larger one is
    /// refused without being read whole (the bucket may hold anything).
    ///
    /// # Errors
    /// As [`head_object`](Self::head_object); [`S3Error::TooLarge`] when the object is
    /// longer than `max_bytes`.
    async fn get_object(&self, key: &str, max_bytes: u64) -> Result<Vec<u8>, S3Error>;

    /// The whole (small) object at `key` with its ETag and the server's last-modified
    /// time, as one read saw them; at most `max_bytes` long, as
    /// [`get_object`](Self::get_object).
    ///
    /// # Errors
    /// As [`get_object`](Self::get_object).
    async fn get_object_versioned(
        &self,
        key: &str,
        max_bytes: u64,
    ) -> Result<VersionedObject, S3Error>;

    /// `length` bytes of the object at `key` from byte `offset` (one ranged GET): fewer
    /// only when the object ends first, none when `offset` is at or past its end. For
    /// reading a large object in bounded pieces, several in flight.
    ///
    /// The default returns [`S3Error::NotImplemented`], so stores written before this
    /// method existed keep compiling (only the library-side transfer needs it).
    ///
    /// # Errors
    /// As [`head_object`](Self::head_object); [`S3Error::TooLarge`] when the server
    /// sends more than `length` bytes; [`S3Error::NotImplemented`] from the default.
    async fn get_object_range(
        &self,
        key: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, S3Error> {
        let _ = (key, offset, length);
        Err(S3Error::NotImplemented {
            operation: "GetObject with a Range",
        })
    }

    /// As [`get_object_range`](Self::get_object_range), but the body is given as it
    /// arrives, not collected: the request is made (and its status checked) when this
    /// returns, and the bytes are read only as the [`RangeBody`] is polled, so that a
    /// reader holds a chunk at a time and a request can be in flight before its body is
    /// wanted (the server and the connection then hold what is not yet read).
    ///
    /// The default collects [`get_object_range`](Self::get_object_range) into one
    /// chunk, so stores written before this method existed keep working (holding a
    /// range at a time).
    ///
    /// # Errors
    /// As [`get_object_range`](Self::get_object_range), from this call for the request
    /// and from the stream for the body ([`S3Error::TooLarge`] when the server sends
    /// more than `length` bytes).
    async fn get_object_range_stream(
        &self,
        key: &str,
        offset: u64,
        length: u64,
    ) -> Result<RangeBody, S3Error> {
        let bytes = self.get_object_range(key, offset, length).await?;
        Ok(Box::pin(futures_util::stream::iter(
            (!bytes.is_empty()).then(|| Ok(Bytes::from(bytes))),
        )))
    }

    /// A handle to the same bucket that shares no connection (nor anything else tied
    /// to the current async runtime) with this one, for use on another thread's
    /// runtime: the backup lock releases itself through it when its guard is dropped,
    /// even while the current runtime cannot run (a panic on a current-thread
    /// runtime). The default is [`clone_store`](CloneStore::clone_store), right for a
    /// store whose requests need no runtime of their own (such as `MemoryStore`);
    /// [`S3Client`] builds a new client.
    fn independent_store(&self) -> Arc<dyn ObjectStore> {
        self.clone_store()
    }

    /// Writes `body` to `key` with `content_type` and user `metadata` (lower-case keys,
    /// without `x-amz-meta-`), replacing any object there.
    ///
    /// # Errors
    /// [`S3Error::NotFound`] when the bucket does not exist, [`S3Error::Request`]
    /// otherwise.
    async fn put_object(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        metadata: &HashMap<String, String>,
    ) -> Result<(), S3Error>;

    /// Writes the local file at `path` to `key` as [`put_object`](Self::put_object)
    /// does (the same encryption and storage class), for an object too large to hold
    /// whole but written in one request (a manifest of many files): [`S3Client`] sends
    /// it as it reads it, with its length and `Content-MD5` (computed first), so the
    /// server refuses a body that does not match the file.
    ///
    /// The default reads the file whole and calls [`put_object`](Self::put_object), so
    /// stores written before this method existed keep working.
    ///
    /// # Errors
    /// As [`put_object`](Self::put_object); [`S3Error::UploadGivenUp`] when the file
    /// cannot be read.
    async fn put_object_file(
        &self,
        key: &str,
        path: &Path,
        content_type: &str,
        metadata: &HashMap<String, String>,
    ) -> Result<(), S3Error> {
        let body = tokio::fs::read(path)
            .await
            .map_err(|e| read_failed(String::new(), key, path, e))?;
        self.put_object(key, body, content_type, metadata).await
    }

    /// Writes `body`, read to its end, to `key` with `content_type` and user
    /// `metadata`, as [`put_object`](Self::put_object) does (the same encryption and
    /// storage class), without holding it whole: read in parts of `part_size` bytes,
    /// `in_flight` of them uploaded at once (S3's multipart upload), so the memory held
    /// is at most `in_flight + 1` parts. A body shorter than one part is one
    /// `PutObject`. On any failure, and when the future is dropped, the multipart
    /// upload is aborted (on drop in the background, on the current runtime): no object
    /// and no upload is left.
    ///
    /// The default returns [`S3Error::NotImplemented`], so stores written before this
    /// method existed keep compiling (only the library-side upload needs it).
    ///
    /// # Errors
    /// As [`put_object`](Self::put_object); [`S3Error::UploadGivenUp`] when reading
    /// `body` fails or it needs more than S3's 10,000 parts; [`S3Error::NotImplemented`]
    /// from the default.
    async fn put_object_stream(
        &self,
        key: &str,
        body: &mut (dyn AsyncRead + Send + Unpin),
        content_type: &str,
        metadata: &HashMap<String, String>,
        part_size: usize,
        in_flight: usize,
    ) -> Result<Uploaded, S3Error> {
        let _ = (key, body, content_type, metadata, part_size, in_flight);
        Err(S3Error::NotImplemented {
            operation: "CreateMultipartUpload",
        })
    }

    /// Writes `body` to `key` only if no object exists there (`If-None-Match: *`),
    /// atomically.
    ///
    /// # Errors
    /// As [`put_object`](Self::put_object); an existing object is
    /// [`Conditional::PreconditionFailed`], not an error.
    async fn put_object_if_none_match(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<Conditional, S3Error>;

    /// Writes `body` to `key` only if the object there has ETag `etag` (`If-Match`),
    /// atomically.
    ///
    /// # Errors
    /// As [`put_object`](Self::put_object); another ETag is
    /// [`Conditional::PreconditionFailed`] and a missing object
    /// [`Conditional::Missing`], not errors.
    async fn put_object_if_match(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        etag: &str,
    ) -> Result<Conditional, S3Error>;

    /// Deletes the object at `key`; a missing object is not an error (S3 semantics).
    ///
    /// # Errors
    /// [`S3Error::NotFound`] when the bucket does not exist, [`S3Error::Request`]
    /// otherwise.
    async fn delete_object(&self, key: &str) -> Result<(), S3Error>;

    /// Deletes the object at `key` only if its ETag is `etag` (`If-Match`).
    ///
    /// # Errors
    /// As [`put_object_if_match`](Self::put_object_if_match).
    async fn delete_object_if_match(&self, key: &str, etag: &str) -> Result<Conditional, S3Error>;

    /// The unfinished multipart uploads whose full key starts with `key_prefix`.
    ///
    /// # Errors
    /// [`S3Error::NotImplemented`] when the backend cannot list them,
    /// [`S3Error::NotFound`] when the bucket does not exist, [`S3Error::Request`]
    /// otherwise.
    async fn list_multipart_uploads(
        &self,
        key_prefix: &str,
    ) -> Result<Vec<MultipartUpload>, S3Error>;

    /// Aborts one multipart upload.
    ///
    /// # Errors
    /// [`S3Error::NotFound`] when the upload (or bucket) does not exist,
    /// [`S3Error::Request`] otherwise.
    async fn abort_multipart_upload(&self, key: &str, upload_id: &str) -> Result<(), S3Error>;
}

/// Implements [`ObjectStore`] for a store by forwarding every method to the function of
/// the same name on a target type, called with `self` (coerced to `&target`); the
/// methods written in the braces (those that do not forward) come first.
///
/// The method list is written once here, for both forwarding impls below: a trait method
/// added later is forwarded by adding its signature to the list. `<target>::name`
/// resolves to the target's inherent method where it has one: for [`S3Client`] each
/// listed method must have an inherent twin (its public API), else the call would be
/// the trait method on itself again (caught by the store conformance suite, which runs
/// on [`S3Client`]).
macro_rules! forward_object_store {
    (
        $(#[$attr:meta])*
        impl [$($generics:tt)*] for $store:ty => $target:ty { $($own:tt)* }
    ) => {
        forward_object_store! {
            @impl [$(#[$attr])*] [$($generics)*] $store => $target { $($own)* }
            fn prefix() -> &str;
            fn object_key(name: &str) -> String;
            async fn list_objects() -> Result<Vec<ObjectInfo>, S3Error>;
            async fn head_object(key: &str) -> Result<ObjectHead, S3Error>;
            async fn get_object(key: &str, max_bytes: u64) -> Result<Vec<u8>, S3Error>;
            async fn get_object_versioned(
                key: &str,
                max_bytes: u64,
            ) -> Result<VersionedObject, S3Error>;
            async fn get_object_range(
                key: &str,
                offset: u64,
                length: u64,
            ) -> Result<Vec<u8>, S3Error>;
            async fn get_object_range_stream(
                key: &str,
                offset: u64,
                length: u64,
            ) -> Result<RangeBody, S3Error>;
            async fn put_object(
                key: &str,
                body: Vec<u8>,
                content_type: &str,
                metadata: &HashMap<String, String>,
            ) -> Result<(), S3Error>;
            async fn put_object_file(
                key: &str,
                path: &Path,
                content_type: &str,
                metadata: &HashMap<String, String>,
            ) -> Result<(), S3Error>;
            async fn put_object_stream(
                key: &str,
                body: &mut (dyn AsyncRead + Send + Unpin),
                content_type: &str,
                metadata: &HashMap<String, String>,
                part_size: usize,
                in_flight: usize,
            ) -> Result<Uploaded, S3Error>;
            async fn put_object_if_none_match(
                key: &str,
                body: Vec<u8>,
                content_type: &str,
            ) -> Result<Conditional, S3Error>;
            async fn put_object_if_match(
                key: &str,
                body: Vec<u8>,
                content_type: &str,
                etag: &str,
            ) -> Result<Conditional, S3Error>;
            async fn delete_object(key: &str) -> Result<(), S3Error>;
            async fn delete_object_if_match(key: &str, etag: &str) -> Result<Conditional, S3Error>;
            async fn list_multipart_uploads(
                key_prefix: &str,
            ) -> Result<Vec<MultipartUpload>, S3Error>;
            async fn abort_multipart_upload(key: &str, upload_id: &str) -> Result<(), S3Error>;
        }
    };
    (
        @impl [$($attr:tt)*] [$($generics:tt)*] $store:ty => $target:ty { $($own:tt)* }
        $(fn $sync:ident($($sarg:ident: $sty:ty),* $(,)?) -> $sret:ty;)*
        $(async fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty;)*
    ) => {
        $($attr)*
        #[async_trait]
        impl<$($generics)*> ObjectStore for $store {
            $($own)*

            $(
                fn $sync(&self, $($sarg: $sty),*) -> $sret {
                    <$target>::$sync(self, $($sarg),*)
                }
            )*

            $(
                async fn $name(&self, $($arg: $ty),*) -> $ret {
                    <$target>::$name(self, $($arg),*).await
                }
            )*
        }
    };
}

forward_object_store! {
    /// The real backend: every method is the [`S3Client`] method of the same name
    /// (`independent_store` is [`S3Client::independent`]).
    impl [] for S3Client => S3Client {
        fn independent_store(&self) -> Arc<dyn ObjectStore> {
            Arc::new(S3Client::independent(self))
        }
    }
}

forward_object_store! {
    /// A shared store is a store (so `Arc<dyn ObjectStore>` can be passed wherever an
    /// `&impl ObjectStore` is wanted): every method is the inner store's.
    impl [T: ObjectStore + ?Sized + 'static] for Arc<T> => T {
        fn independent_store(&self) -> Arc<dyn ObjectStore> {
            (**self).independent_store()
        }
    }
}

/// The error of a local file that could not be read for an upload to `key` of `bucket`.
pub(crate) fn read_failed(bucket: String, key: &str, path: &Path, e: std::io::Error) -> S3Error {
    S3Error::UploadGivenUp {
        bucket,
        key: key.to_string(),
        reason: format!("reading {} failed", path.display()),
        source: Some(e),
    }
}

//! The [`ObjectStore`] conformance suite: the behaviour the catalog and the backup lock
//! rely on, checked the same way against every implementation (compiled with the
//! `testing` feature, and in this crate's own tests). It runs against
//! [`MemoryStore`](crate::s3::memory::MemoryStore) in the unit tests and against
//! [`S3Client`](crate::S3Client) on a real S3 server in `tests/integration/s3/store_conformance.rs`,
//! so the fake cannot drift from the real thing.
//!
//! ```no_run
//! # async fn demo(store: &synapse_backup::testing::MemoryStore) {
//! synapse_backup::testing::store_conformance::run(store).await;
//! # }
//! ```
//!
//! Requirements on the store under test: nothing under its prefix, conditional writes
//! and deletes honoured. The checks write, then delete, objects under the prefix (and,
//! with a non-empty prefix, one object beside it). They panic with a message saying
//! what went wrong.

use std::collections::HashMap;

use super::client::Conditional;
use super::store::ObjectStore;
use crate::error::S3Error;

/// Runs every check in turn (see the module documentation).
pub async fn run(store: &(impl ObjectStore + ?Sized)) {
    keys_and_listing(store).await;
    reads_and_writes(store).await;
    ranged_reads(store).await;
    ranged_streams(store).await;
    conditional_writes(store).await;
    conditional_deletes(store).await;
    multipart_uploads(store).await;
    streamed_uploads(store).await;
    file_uploads(store).await;
}

/// `object_key` puts names under the prefix with one slash; the listing holds exactly
/// the objects under `prefix/`, with their sizes.
pub async fn keys_and_listing(store: &(impl ObjectStore + ?Sized)) {
    let prefix = store.prefix().to_string();
    let key = store.object_key("conformance-listed");
    let want = if prefix.is_empty() {
        "conformance-listed".to_string()
    } else {
        format!("{prefix}/conformance-listed")
    };
    assert_eq!(key, want, "object_key under prefix {prefix:?}");
    let listed = store.list_objects().await.expect("listing an empty prefix");
    assert!(
        listed.is_empty(),
        "the store under test must start empty under {prefix:?}: {listed:?}"
    );
    put(store, &key, b"12345").await;
    let beside = format!("{prefix}-beside/conformance");
    if !prefix.is_empty() {
        put(store, &beside, b"x").await;
    }
    let listed = store.list_objects().await.expect("listing");
    let keys: Vec<_> = listed.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(
        keys,
        [key.as_str()],
        "only keys under {prefix:?}/ are listed"
    );
    assert_eq!(listed[0].size, 5, "listed size");
    store.delete_object(&key).await.expect("delete");
    if !prefix.is_empty() {
        store.delete_object(&beside).await.expect("delete beside");
    }
    assert!(
        store.list_objects().await.expect("listing").is_empty(),
        "deleted objects are not listed"
    );
}

/// Put, head, get and versioned get agree; metadata keys come back lower-case; missing
/// objects are [`S3Error::NotFound`]; deleting a missing object succeeds.
pub async fn reads_and_writes(store: &(impl ObjectStore + ?Sized)) {
    let key = store.object_key("conformance-object");
    let metadata = HashMap::from([("created-by".to_string(), "conformance".to_string())]);
    store
        .put_object(
            &key,
            b"hello".to_vec(),
            "application/octet-stream",
            &metadata,
        )
        .await
        .expect("put");
    let head = store.head_object(&key).await.expect("head");
    assert_eq!(head.key, key);
    assert_eq!(head.size, 5, "head size");
    assert!(!head.etag.is_empty(), "a head has an ETag");
    assert_eq!(
        head.metadata.get("created-by").map(String::as_str),
        Some("conformance"),
        "metadata as written: {:?}",
        head.metadata
    );
    assert_eq!(
        store.get_object(&key, 1 << 20).await.expect("get"),
        b"hello"
    );
    let versioned = store
        .get_object_versioned(&key, 5)
        .await
        .expect("versioned get (exactly at the cap)");
    for result in [
        store.get_object(&key, 4).await.map(drop),
        store.get_object_versioned(&key, 4).await.map(drop),
    ] {
        assert!(
            matches!(result, Err(S3Error::TooLarge { limit: 4, .. })),
            "an object over the cap is TooLarge: {result:?}"
        );
    }
    assert_eq!(versioned.body, b"hello");
    assert!(!versioned.etag.is_empty(), "a versioned get has an ETag");
    assert_eq!(
        versioned.last_modified, head.last_modified,
        "get and head see the same LastModified"
    );
    store.delete_object(&key).await.expect("delete");
    let missing = store.object_key("conformance-missing");
    assert!(
        matches!(
            store.head_object(&missing).await,
            Err(S3Error::NotFound { .. })
        ),
        "head of a missing object is NotFound"
    );
    assert!(
        matches!(
            store.get_object(&missing, 1 << 20).await,
            Err(S3Error::NotFound { .. })
        ),
        "get of a missing object is NotFound"
    );
    assert!(
        matches!(
            store.get_object_versioned(&missing, 1 << 20).await,
            Err(S3Error::NotFound { .. })
        ),
        "versioned get of a missing object is NotFound"
    );
    store
        .delete_object(&missing)
        .await
        .expect("deleting a missing object succeeds");
}

/// Ranged reads give exactly the bytes asked for: within the object, cut at its end,
/// none past it; a missing object is [`S3Error::NotFound`].
pub async fn ranged_reads(store: &(impl ObjectStore + ?Sized)) {
    let key = store.object_key("conformance-ranged");
    let body: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    put(store, &key, &body).await;
    for (offset, length, expected) in [
        (0, 10, &body[..10]),
        (1000, 1000, &body[1000..2000]),
        (2990, 100, &body[2990..]),
        (0, 3000, &body[..]),
        (3000, 10, &body[..0]),
        (5000, 10, &body[..0]),
    ] {
        let got = store
            .get_object_range(&key, offset, length)
            .await
            .unwrap_or_else(|e| panic!("range {offset}+{length}: {e}"));
        assert!(
            got == expected,
            "range {offset}+{length}: got {} bytes, expected {}",
            got.len(),
            expected.len()
        );
    }
    store.delete_object(&key).await.expect("delete");
    let missing = store.object_key("conformance-missing");
    let result = store.get_object_range(&missing, 0, 10).await;
    assert!(
        matches!(result, Err(S3Error::NotFound { .. })),
        "a ranged read of a missing object is NotFound: {result:?}"
    );
}

/// Ranged reads as streams give the same bytes as [`ranged_reads`], in order, whatever
/// the chunks; a missing object is [`S3Error::NotFound`] from the request itself,
/// before any body is read.
pub async fn ranged_streams(store: &(impl ObjectStore + ?Sized)) {
    use futures_util::StreamExt;
    let key = store.object_key("conformance-streamed");
    let body: Vec<u8> = (0..=250u8).cycle().take(5000).collect();
    put(store, &key, &body).await;
    for (offset, length, expected) in [
        (0, 10, &body[..10]),
        (1000, 3000, &body[1000..4000]),
        (4990, 100, &body[4990..]),
        (0, 5000, &body[..]),
        (5000, 10, &body[..0]),
        (9000, 10, &body[..0]),
    ] {
        let mut stream = store
            .get_object_range_stream(&key, offset, length)
            .await
            .unwrap_or_else(|e| panic!("streamed range {offset}+{length}: {e}"));
        let mut got = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap_or_else(|e| panic!("streamed range {offset}+{length}: {e}"));
            got.extend_from_slice(&chunk);
        }
        assert!(
            got == expected,
            "streamed range {offset}+{length}: got {} bytes, expected {}",
            got.len(),
            expected.len()
        );
    }
    store.delete_object(&key).await.expect("delete");
    let missing = store.object_key("conformance-missing");
    let result = store.get_object_range_stream(&missing, 0, 10).await;
    assert!(
        matches!(result, Err(S3Error::NotFound { .. })),
        "a streamed ranged read of a missing object is NotFound: {:?}",
        result.err()
    );
}

/// `If-None-Match: *` creates once; `If-Match` writes only over its ETag, and on a
/// missing object is [`Conditional::Missing`].
pub async fn conditional_writes(store: &(impl ObjectStore + ?Sized)) {
    let key = store.object_key("conformance-conditional");
    let created = store
        .put_object_if_none_match(&key, b"one".to_vec(), "application/json")
        .await
        .expect("create");
    assert!(
        matches!(created, Conditional::Done { .. }),
        "If-None-Match on a new key: {created:?}"
    );
    let again = store
        .put_object_if_none_match(&key, b"two".to_vec(), "application/json")
        .await
        .expect("create again");
    assert_eq!(
        again,
        Conditional::PreconditionFailed,
        "If-None-Match on an existing key"
    );
    let current = store
        .get_object_versioned(&key, 1 << 20)
        .await
        .expect("read")
        .etag;
    if let Conditional::Done { etag: Some(etag) } = &created {
        assert_eq!(
            etag, &current,
            "the ETag a write returns is the one read back"
        );
    }
    let wrong = store
        .put_object_if_match(
            &key,
            b"three".to_vec(),
            "application/json",
            "\"0000000000000000000000000000000f\"",
        )
        .await
        .expect("If-Match wrong");
    assert_eq!(
        wrong,
        Conditional::PreconditionFailed,
        "If-Match on a wrong ETag"
    );
    assert_eq!(store.get_object(&key, 1 << 20).await.expect("read"), b"one");
    let right = store
        .put_object_if_match(&key, b"four".to_vec(), "application/json", &current)
        .await
        .expect("If-Match right");
    assert!(
        matches!(right, Conditional::Done { .. }),
        "If-Match on the current ETag: {right:?}"
    );
    let after = store
        .get_object_versioned(&key, 1 << 20)
        .await
        .expect("read");
    assert_eq!(after.body, b"four");
    assert_ne!(after.etag, current, "a new body has a new ETag");
    let stale = store
        .put_object_if_match(&key, b"five".to_vec(), "application/json", &current)
        .await
        .expect("If-Match stale");
    assert_eq!(
        stale,
        Conditional::PreconditionFailed,
        "If-Match on a stale ETag"
    );
    store.delete_object(&key).await.expect("delete");
    let missing = store
        .put_object_if_match(&key, b"six".to_vec(), "application/json", &current)
        .await
        .expect("If-Match missing");
    assert_eq!(missing, Conditional::Missing, "If-Match on a missing key");
    assert!(
        matches!(store.head_object(&key).await, Err(S3Error::NotFound { .. })),
        "a failed If-Match writes nothing"
    );
}

/// A delete with `If-Match` removes the object only on its current ETag.
pub async fn conditional_deletes(store: &(impl ObjectStore + ?Sized)) {
    let key = store.object_key("conformance-delete");
    put(store, &key, b"lock").await;
    let etag = store
        .get_object_versioned(&key, 1 << 20)
        .await
        .expect("read")
        .etag;
    let wrong = store
        .delete_object_if_match(&key, "\"0000000000000000000000000000000f\"")
        .await
        .expect("delete If-Match wrong");
    assert_eq!(
        wrong,
        Conditional::PreconditionFailed,
        "delete on a wrong ETag"
    );
    assert!(store.head_object(&key).await.is_ok(), "still there");
    let right = store
        .delete_object_if_match(&key, &etag)
        .await
        .expect("delete If-Match right");
    assert!(
        matches!(right, Conditional::Done { .. }),
        "delete on the current ETag: {right:?}"
    );
    assert!(
        matches!(store.head_object(&key).await, Err(S3Error::NotFound { .. })),
        "deleted"
    );
    let missing = store
        .delete_object_if_match(&key, &etag)
        .await
        .expect("delete If-Match missing");
    assert_eq!(
        missing,
        Conditional::Missing,
        "delete If-Match on a missing key"
    );
}

/// Listing multipart uploads under an empty prefix finds none, and aborting an unknown
/// upload is [`S3Error::NotFound`] (prune relies on it when an upload vanishes); a
/// backend that cannot list uploads says [`S3Error::NotImplemented`] (prune then skips
/// them) and its abort is not checked.
pub async fn multipart_uploads(store: &(impl ObjectStore + ?Sized)) {
    let prefix = store.object_key("");
    match store.list_multipart_uploads(&prefix).await {
        Ok(uploads) => assert!(uploads.is_empty(), "no uploads were started: {uploads:?}"),
        Err(S3Error::NotImplemented { .. }) => return,
        Err(e) => panic!("listing multipart uploads: {e}"),
    }
    let key = store.object_key("conformance-upload");
    // UUID-shaped: some servers reject other upload ids as malformed.
    let unknown = "00000000-0000-4000-8000-000000000000";
    match store.abort_multipart_upload(&key, unknown).await {
        Err(S3Error::NotFound { .. }) => {}
        other => panic!("aborting an unknown upload: {other:?}"),
    }
}

async fn put(store: &(impl ObjectStore + ?Sized), key: &str, body: &[u8]) {
    store
        .put_object(
            key,
            body.to_vec(),
            "application/octet-stream",
            &HashMap::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"));
}

/// A streamed upload ([`ObjectStore::put_object_stream`]) writes exactly the body, with
/// its metadata, whether it fits in one part or takes several (5 MiB parts, S3's
/// smallest, two in flight); a body whose read fails leaves no object and no
/// multipart upload.
pub async fn streamed_uploads(store: &(impl ObjectStore + ?Sized)) {
    const PART: usize = 5 << 20;
    let metadata = HashMap::from([("created-by".to_string(), "conformance".to_string())]);
    for (name, length) in [
        ("conformance-streamed-small", 1000),
        ("conformance-streamed-exact", PART),
        ("conformance-streamed-parts", 2 * PART + 12_345),
    ] {
        let key = store.object_key(name);
        let body: Vec<u8> = (0..length).map(|i| (i % 251) as u8).collect();
        let mut reader = &body[..];
        let uploaded = store
            .put_object_stream(
                &key,
                &mut reader,
                "application/octet-stream",
                &metadata,
                PART,
                2,
            )
            .await
            .unwrap_or_else(|e| panic!("streamed upload of {length} bytes: {e}"));
        assert_eq!(uploaded.size, length as u64, "{name}: the size uploaded");
        let expected_parts = if length < PART {
            0
        } else {
            length.div_ceil(PART)
        };
        assert_eq!(uploaded.parts, expected_parts, "{name}: the parts");
        let head = store.head_object(&key).await.expect("head");
        assert_eq!(head.size, length as u64, "{name}: the stored size");
        assert_eq!(
            head.metadata.get("created-by").map(String::as_str),
            Some("conformance"),
            "{name}: the metadata"
        );
        let got = store.get_object(&key, 1 << 30).await.expect("read back");
        assert!(got == body, "{name}: the bytes read back differ");
        store.delete_object(&key).await.expect("delete");
    }
    let key = store.object_key("conformance-streamed-failed");
    let mut failing = FailingBody {
        left: 2 * PART + 10,
    };
    let result = store
        .put_object_stream(
            &key,
            &mut failing,
            "application/octet-stream",
            &HashMap::new(),
            PART,
            2,
        )
        .await;
    assert!(
        matches!(result, Err(S3Error::UploadGivenUp { .. })),
        "a body whose read fails: {result:?}"
    );
    assert!(
        matches!(store.head_object(&key).await, Err(S3Error::NotFound { .. })),
        "a failed streamed upload leaves no object"
    );
    match store.list_multipart_uploads(&key).await {
        Ok(uploads) => assert!(
            uploads.is_empty(),
            "a failed streamed upload leaves no multipart upload: {uploads:?}"
        ),
        Err(S3Error::NotImplemented { .. }) => {}
        Err(e) => panic!("listing multipart uploads: {e}"),
    }
}

/// A file upload ([`ObjectStore::put_object_file`]) writes exactly the file, with its
/// metadata; a file that cannot be read is [`S3Error::UploadGivenUp`] naming its path,
/// and leaves no object.
pub async fn file_uploads(store: &(impl ObjectStore + ?Sized)) {
    let metadata = HashMap::from([("created-by".to_string(), "conformance".to_string())]);
    let mut file = tempfile::NamedTempFile::new().expect("a temp file");
    let body: Vec<u8> = (0..300_000).map(|i| (i % 253) as u8).collect();
    std::io::Write::write_all(&mut file, &body).expect("the temp file written");
    let key = store.object_key("conformance-file");
    store
        .put_object_file(&key, file.path(), "application/json", &metadata)
        .await
        .unwrap_or_else(|e| panic!("file upload: {e}"));
    let head = store.head_object(&key).await.expect("head");
    assert_eq!(head.size, body.len() as u64, "the stored size");
    assert_eq!(
        head.metadata.get("created-by").map(String::as_str),
        Some("conformance"),
        "the metadata"
    );
    let got = store.get_object(&key, 1 << 30).await.expect("read back");
    assert!(got == body, "the bytes read back differ");
    store.delete_object(&key).await.expect("delete");
    let missing = file.path().with_extension("missing");
    let key = store.object_key("conformance-file-missing");
    let result = store
        .put_object_file(&key, &missing, "application/json", &HashMap::new())
        .await;
    match &result {
        Err(e @ S3Error::UploadGivenUp { .. }) => assert!(
            e.to_string().contains(&missing.display().to_string()),
            "the error names the file: {e}"
        ),
        other => panic!("a file that cannot be read: {other:?}"),
    }
    assert!(
        matches!(store.head_object(&key).await, Err(S3Error::NotFound { .. })),
        "a failed file upload leaves no object"
    );
}

/// A body that gives `left` bytes, then fails.
struct FailingBody {
    left: usize,
}

impl tokio::io::AsyncRead for FailingBody {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.left == 0 {
            return std::task::Poll::Ready(Err(std::io::Error::other("the pipeline failed")));
        }
        let n = self.left.min(buf.remaining());
        buf.put_slice(&vec![7; n]);
        self.left -= n;
        std::task::Poll::Ready(Ok(()))
    }
}

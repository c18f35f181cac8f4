//! Test support (feature `testing`): backups written into an [`ObjectStore`] as the real
//! pipeline leaves them, so that a charm's unit test of list, status, prune and delete
//! runs with [`MemoryStore`](crate::testing::MemoryStore) and no workload or server.

use std::collections::HashMap;

use chrono::Utc;

use crate::backup::catalog::BackupStatus;
use crate::backup::manifest::{
    Cipher, DatabaseSnapshot, MANIFEST_FORMAT, Manifest, ManifestLayout,
};
use crate::backup::plan::{self, BackupId, Compression, MANIFEST_SUFFIX};
use crate::error::S3Error;
use crate::s3::ObjectStore;

/// Writes the objects of backup `id` with `data` as its (stand-in) encrypted object, as
/// a run of `create` leaves them in the bucket, stamped with the store's clock:
/// - [`BackupStatus::Complete`]: the data tagged as ours, then its manifest (what a
///   successful create uploads; the manifest's checksum is a placeholder: only a
///   download checks it);
/// - [`BackupStatus::Incomplete`]: the tagged data without a manifest (a create that
///   failed or was killed after its upload);
/// - [`BackupStatus::Legacy`]: untagged data without a manifest (the Python charm's).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use synapse_backup::testing::{MemoryStore, put_backup};
/// use synapse_backup::{BackupId, BackupStatus, list_backups};
///
/// let store = MemoryStore::new("synapse/backups");
/// let id = BackupId::from_time(store.now());
/// put_backup(&store, &id, BackupStatus::Complete, b"ciphertext").await?;
/// assert_eq!(list_backups(&store).await?[0].status, BackupStatus::Complete);
/// # Ok(()) }
/// ```
///
/// # Errors
/// The store's, when a write fails.
pub async fn put_backup(
    store: &(impl ObjectStore + ?Sized),
    id: &BackupId,
    status: BackupStatus,
    data: &[u8],
) -> Result<(), S3Error> {
    let key = store.object_key(id.as_str());
    let ours = HashMap::from([(plan::METADATA_KEY.to_string(), plan::metadata_value())]);
    let tag = if status == BackupStatus::Legacy {
        HashMap::new()
    } else {
        ours.clone()
    };
    store
        .put_object(&key, data.to_vec(), "application/octet-stream", &tag)
        .await?;
    if status == BackupStatus::Complete {
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            backup_id: id.clone(),
            created: Utc::now(),
            created_by: plan::metadata_value(),
            server_name: Some("example.test".into()),
            layout: ManifestLayout {
                config_dir: "/data".into(),
                data_dir: "/data".into(),
                media_store_path: "/data/media_store".into(),
                members: vec!["data/homeserver.db".into()],
            },
            database: DatabaseSnapshot::Sqlite,
            warnings: Vec::new(),
            files: Vec::new(),
            plaintext_bytes: data.len() as u64,
            ciphertext_bytes: data.len() as u64,
            ciphertext_sha256: "0".repeat(64),
            cipher: Cipher::Aes256,
            compression: Compression::None,
            nonce: None,
        };
        store
            .put_object(
                &format!("{key}{MANIFEST_SUFFIX}"),
                manifest.to_json(),
                "application/json",
                &ours,
            )
            .await?;
    }
    Ok(())
}

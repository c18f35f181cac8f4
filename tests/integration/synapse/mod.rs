//! End to end against a real Synapse (the releases `scripts/synapse.sh` installs): a
//! homeserver generated for the test, run as its own system user under
//! `LocalContainer`'s `ProcessSupervisor`, filled through the client API (users, a
//! room, messages, PNG and JPEG media with their thumbnails, one-time keys), backed up
//! while it serves, restored in place, and checked through the client API and its
//! database.

#[cfg(feature = "pebble")]
mod pebble;

use crate::support::{env, s3_server, synapse_server};

use std::collections::{BTreeMap, BTreeSet};

use synapse_backup::{
    BackupOptions, Compression, RestoreOptions, S3Parameters, create_backup_with,
    restore_backup_with,
};

use env::PASSPHRASE;
use s3_server::TestS3Server;
use synapse_server::{
    Client, Homeserver, Release, Timed, User, backup_under_traffic, content_path, install,
    thumbnail_dir,
};

/// An S3 server with a bucket, and the parameters for it.
async fn bucket() -> (TestS3Server, S3Parameters) {
    let server = TestS3Server::start().await;
    server.create_bucket("synapse-backups");
    let params = S3Parameters::from_relation_data(&server.relation_data("synapse-backups"))
        .expect("relation data");
    (server, params)
}

/// What the test made through the client API, in the order the server committed it.
#[derive(Debug, Clone)]
enum Made {
    Message(String),
    Media(String),
}

/// One operation and when it ran.
type Op = Timed<Made>;

/// Sends a message; the operation.
async fn message(client: &Client, user: &User, room: &str, body: String) -> Op {
    Timed::of(async {
        client
            .send_text(user, room, &format!("txn-{body}"), &body)
            .await;
        Made::Message(body)
    })
    .await
}

/// Uploads an image (`(content type, name, bytes)`); the operation.
async fn media(client: &Client, user: &User, image: &(String, String, Vec<u8>)) -> Op {
    Timed::of(async {
        Made::Media(
            client
                .upload(user, &image.0, &image.1, image.2.clone())
                .await,
        )
    })
    .await
}

/// Whether each operation's effect is in the restored server: messages through the
/// client API, media by its `local_media_repository` row.
async fn present(hs: &Homeserver, user: &User, room: &str, ops: &[Op]) -> Vec<bool> {
    let bodies: BTreeSet<String> = hs
        .client()
        .message_bodies(user, room)
        .await
        .into_iter()
        .collect();
    let rows: BTreeSet<String> = media_rows(hs);
    ops.iter()
        .map(|op| match &op.made {
            Made::Message(body) => bodies.contains(body),
            Made::Media(id) => rows.contains(id),
        })
        .collect()
}

fn media_rows(hs: &Homeserver) -> BTreeSet<String> {
    hs.query("SELECT media_id FROM local_media_repository")
        .into_iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect()
}

/// The store paths of every thumbnail row.
fn thumbnail_rows(hs: &Homeserver) -> BTreeSet<String> {
    hs.query(
        "SELECT media_id, thumbnail_width, thumbnail_height, thumbnail_type, thumbnail_method \
         FROM local_media_repository_thumbnails",
    )
    .into_iter()
    .map(|r| {
        format!(
            "{}/{}-{}-{}-{}",
            thumbnail_dir(r[0].as_str().unwrap()),
            r[1],
            r[2],
            r[3].as_str().unwrap().replace('/', "-"),
            r[4].as_str().unwrap()
        )
    })
    .collect()
}

/// The media id a media store path belongs to (`local_content/ab/cd/rest` or
/// `local_thumbnails/ab/cd/rest/<thumbnail>`).
fn media_id_of(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').collect();
    format!("{}{}{}", parts[1], parts[2], parts[3])
}

/// A live backup while messages and media keep arriving, restored in place through the
/// supervisor (restore stops and restarts Synapse): the server comes back with exactly
/// the snapshot's history and media, byte for byte, its signing key, no one-time keys
/// (kept with the option), everything owned by its user, and no error in its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_backup_restores_a_consistent_homeserver() {
    let current = install(Release::Current);
    // The S3 server first: Synapse's port is picked free after it holds its own.
    let (_s3, params) = bucket().await;
    let hs = Homeserver::generate(&current, &env::aws());
    hs.start().await;
    let client = hs.client();
    let alice = client.register("alice").await;
    let bob = client.register("bob").await;
    let room = client.create_room(&alice, "backups").await;
    client
        .json(
            "POST",
            &format!(
                "/_matrix/client/v3/rooms/{}/invite",
                synapse_server::encode(&room)
            ),
            Some(&alice.token),
            serde_json::json!({"user_id": bob.user_id}),
        )
        .await;
    client
        .json(
            "POST",
            &format!("/_matrix/client/v3/join/{}", synapse_server::encode(&room)),
            Some(&bob.token),
            serde_json::json!({}),
        )
        .await;

    // Before the backup: history, images (thumbnails are made at upload) and keys.
    // Every image the test uploads (made in one Python process): four before the
    // backup, up to 80 while it runs, one after.
    let seeds: Vec<u32> = (0..85).collect();
    let mut pool = synapse_server::images(&current, &seeds).into_iter();
    let mut ops = Vec::new();
    for i in 0..10 {
        let sender = if i % 2 == 0 { &alice } else { &bob };
        ops.push(message(&client, sender, &room, format!("before {i}")).await);
    }
    for image in pool.by_ref().take(4) {
        ops.push(media(&client, &alice, &image).await);
    }
    let after_image = pool.next().unwrap();
    let live_images: Vec<_> = pool.collect();
    let first_image = match &ops[10].made {
        Made::Media(id) => id.clone(),
        Made::Message(_) => unreachable!(),
    };
    let thumbnail_before = client.thumbnail(&alice, &first_image, 32, 32, "crop").await;
    let download_before = client.download(&bob, &first_image).await;
    assert_eq!(
        client.upload_one_time_keys(&alice, 5).await["curve25519"],
        5
    );
    let keys = hs.keys().await;
    let media_before = hs.local_media_files();
    assert!(
        media_before
            .keys()
            .any(|p| p.starts_with("local_thumbnails/")),
        "Synapse made no thumbnails: {:?}",
        media_before.keys()
    );

    // While the backup runs: a sender keeps writing messages and images.
    let live = {
        let (client, alice, room) = (client.clone(), alice.clone(), room.clone());
        move |i: u32| {
            let (client, alice, room) = (client.clone(), alice.clone(), room.clone());
            let image = (i % 3 == 2)
                .then(|| live_images.get((i / 3) as usize).cloned())
                .flatten();
            async move {
                match image {
                    Some(image) => media(&client, &alice, &image).await,
                    None => message(&client, &alice, &room, format!("live {i}")).await,
                }
            }
        }
    };
    let mut backup = backup_under_traffic(&hs, &hs.container, &params, PASSPHRASE, ops, live).await;
    let (create_started, create_finished) = (backup.started, backup.finished);
    let id = backup.report.id.clone();
    let ops = &mut backup.writes;

    // After the backup: more history, media and keys that a restore must undo.
    for i in 0..3 {
        ops.push(message(&client, &bob, &room, format!("after {i}")).await);
    }
    ops.push(media(&client, &bob, &after_image).await);
    client.upload_one_time_keys(&alice, 3).await;
    // What the backup may hold: everything in the media store when it finished (media
    // files are written once and never changed).
    let media_at_end = hs.local_media_files();

    let restored = restore_backup_with(
        &hs.container,
        &params,
        PASSPHRASE,
        &id,
        &hs.layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("restore failed: {e}\n{}", hs.log_text()));
    assert!(
        hs.is_running().await,
        "restore restarts the Synapse it stopped"
    );
    hs.wait_ready().await;
    hs.assert_no_errors("after the restore");
    assert_eq!(restored.one_time_keys_removed, Some(5), "{restored:?}");

    // History and media: what was committed up to one point, and nothing after it.
    let present = present(&hs, &alice, &room, &backup.writes).await;
    backup.assert_restored_prefix(&present);
    let ops = &backup.writes;

    // Media rows and files: every row has its file; a file without a row is only one
    // uploaded while the backup ran (its file archived after the database snapshot).
    let files = hs.local_media_files();
    let rows = media_rows(&hs);
    for id in &rows {
        assert!(
            files.contains_key(&content_path(id)),
            "media row {id} has no file"
        );
    }
    let thumbnails = thumbnail_rows(&hs);
    for t in &thumbnails {
        assert!(files.contains_key(t), "thumbnail row {t} has no file");
    }
    let uploaded_during: BTreeSet<String> = ops
        .iter()
        .filter(|op| op.finished >= create_started && op.started <= create_finished)
        .filter_map(|op| match &op.made {
            Made::Media(id) => Some(id.clone()),
            Made::Message(_) => None,
        })
        .collect();
    let has_row = |path: &str| {
        if path.starts_with("local_content/") {
            rows.contains(&media_id_of(path))
        } else {
            thumbnails.contains(path)
        }
    };
    for path in files.keys() {
        assert!(
            has_row(path) || uploaded_during.contains(&media_id_of(path)),
            "{path} has no database row and was not uploaded while the backup ran"
        );
    }
    // Byte for byte: everything made before the backup, and every restored file that
    // has its row is what the store held. A file without a row may have been archived
    // while Synapse still wrote it (it writes in place, then adds the row): a prefix.
    for (path, bytes) in &media_before {
        assert!(
            files.get(path) == Some(bytes),
            "{path} was not restored byte for byte"
        );
    }
    for (path, bytes) in &files {
        let written = media_at_end
            .get(path)
            .unwrap_or_else(|| panic!("{path} is restored but was never in the store"));
        if has_row(path) {
            assert!(written == bytes, "{path} differs from what the backup read");
        } else {
            assert!(
                written.starts_with(bytes),
                "{path} is not a prefix of what Synapse wrote"
            );
        }
    }
    assert_eq!(
        client.thumbnail(&alice, &first_image, 32, 32, "crop").await,
        thumbnail_before
    );
    assert_eq!(client.download(&bob, &first_image).await, download_before);

    // The same signing key, no one-time keys, everything owned by the Synapse user.
    hs.assert_restored_keys(&alice, &keys).await;

    // Kept on request: the backup's five one-time keys are back.
    let kept = restore_backup_with(
        &hs.container,
        &params,
        PASSPHRASE,
        &id,
        &hs.layout,
        &RestoreOptions::default().keep_one_time_keys(true),
    )
    .await
    .unwrap_or_else(|e| panic!("restore keeping one-time keys failed: {e}"));
    assert_eq!(kept.one_time_keys_removed, None);
    hs.wait_ready().await;
    assert_eq!(client.one_time_key_count(&alice).await, 5);
    assert_eq!(hs.local_media_files(), files);
    hs.assert_no_errors("after the second restore");
    assert_eq!(hs.not_owned_by_user(), Vec::<String>::new());

    // zstd on the real homeserver: a backup made while it serves, smaller than the
    // plain one above, restored in place over a message sent after it.
    let history = self::present(&hs, &alice, &room, &backup.writes).await;
    let zstd = create_backup_with(
        &hs.container,
        &params,
        PASSPHRASE,
        &hs.layout,
        &BackupOptions::default().compression(Compression::Zstd(3)),
    )
    .await
    .unwrap_or_else(|e| panic!("zstd create failed: {e}\n{}", hs.log_text()));
    assert!(
        zstd.manifest.ciphertext_bytes < backup.report.manifest.ciphertext_bytes,
        "zstd {} bytes against {} plain",
        zstd.manifest.ciphertext_bytes,
        backup.report.manifest.ciphertext_bytes
    );
    let late = message(&client, &bob, &room, "after the zstd backup".into()).await;
    assert_eq!(
        self::present(&hs, &alice, &room, std::slice::from_ref(&late)).await,
        [true]
    );
    restore_backup_with(
        &hs.container,
        &params,
        PASSPHRASE,
        &zstd.id,
        &hs.layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("zstd restore failed: {e}\n{}", hs.log_text()));
    hs.wait_ready().await;
    hs.assert_no_errors("after the zstd restore");
    assert_eq!(
        self::present(&hs, &alice, &room, &backup.writes).await,
        history
    );
    assert_eq!(
        self::present(&hs, &alice, &room, std::slice::from_ref(&late)).await,
        [false],
        "the message sent after the zstd backup is gone"
    );
    assert_eq!(hs.local_media_files(), files);
    assert_eq!(hs.not_owned_by_user(), Vec::<String>::new());
}

/// The schema deltas a database has applied.
fn applied_deltas(hs: &Homeserver) -> BTreeSet<String> {
    hs.query("SELECT version, file FROM applied_schema_deltas")
        .into_iter()
        .map(|r| format!("{}/{}", r[0], r[1].as_str().unwrap()))
        .collect()
}

/// A backup made under an older Synapse release restores, and the pinned release starts
/// on it, migrates its schema forward and serves its history and media.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_from_an_older_release_restores_and_migrates_forward() {
    let previous = install(Release::Previous);
    let current = install(Release::Current);
    assert!(
        previous.version_numbers() < current.version_numbers(),
        "the previous release {} must be older than the current {}",
        previous.version,
        current.version
    );
    // The S3 server first: Synapse's port is picked free after it holds its own.
    let (_s3, params) = bucket().await;
    let hs = Homeserver::generate(&previous, &env::aws());
    hs.start().await;
    let client = hs.client();
    let alice = client.register("alice").await;
    let room = client.create_room(&alice, "upgrade").await;
    let mut bodies = Vec::new();
    for i in 0..5 {
        let body = format!("under {} #{i}", previous.version);
        client
            .send_text(&alice, &room, &format!("txn-{i}"), &body)
            .await;
        bodies.push(body);
    }
    let (content_type, name, png) = synapse_server::images(&previous, &[8]).remove(0);
    let media_id = client
        .upload(&alice, &content_type, &name, png.clone())
        .await;
    let media_before: BTreeMap<String, Vec<u8>> = hs.local_media_files();
    let signing_key = hs.signing_key();
    let report = create_backup_with(
        &hs.container,
        &params,
        PASSPHRASE,
        &hs.layout,
        &BackupOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("backup failed: {e}"));
    let deltas_before = applied_deltas(&hs);
    hs.stop().await;
    hs.assert_no_errors(&format!("under {}", previous.version));

    // The host moves to the current release; its data is lost and restored.
    std::fs::remove_dir_all(&hs.media).unwrap();
    for name in ["homeserver.db", "homeserver.db-wal", "homeserver.db-shm"] {
        let _ = std::fs::remove_file(hs.data.join(name));
    }
    hs.use_release(&current);
    restore_backup_with(
        &hs.container,
        &params,
        PASSPHRASE,
        &report.id,
        &hs.layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("restore failed: {e}"));
    assert!(!hs.is_running().await, "a stopped Synapse stays stopped");
    hs.start().await;
    hs.assert_no_errors(&format!("under {} after the upgrade", current.version));
    let deltas_after = applied_deltas(&hs);
    assert!(
        deltas_after.is_superset(&deltas_before) && deltas_after.len() > deltas_before.len(),
        "{} applied no schema delta of its own: before {deltas_before:?}, after {deltas_after:?}",
        current.version
    );
    let log = hs.log_text();
    assert!(
        log.contains(&format!("version {}", current.version)),
        "the log shows no start of {}",
        current.version
    );
    assert_eq!(client.message_bodies(&alice, &room).await, bodies);
    assert_eq!(client.download(&alice, &media_id).await, png);
    assert_eq!(hs.signing_key(), signing_key);
    for (path, bytes) in &media_before {
        assert_eq!(
            std::fs::read(hs.media.join(path)).ok().as_ref(),
            Some(bytes),
            "{path}"
        );
    }
    assert_eq!(hs.not_owned_by_user(), Vec::<String>::new());
}

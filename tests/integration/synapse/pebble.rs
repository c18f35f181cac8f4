//! A real Synapse (the pinned release `scripts/synapse.sh` installs) as the service
//! `synapse` of a real Pebble daemon, run by Pebble as the test's Synapse system user
//! (the layer's `user:`/`group:`), the way the Synapse rock runs in a charm: filled
//! through the client API, backed up through `PebbleContainer` while messages keep
//! arriving, changed, and restored in place through `PebbleContainer` (Pebble stops
//! Synapse, restore swaps, Pebble starts it again).
//!
//! Needs `pebble` on PATH (`source scripts/pebble.sh`) and the Synapse virtualenvs
//! (`bash scripts/synapse.sh`); runs as root.
#![cfg(feature = "pebble")]

use crate::support::{env, pebble_daemon, s3_server, synapse_server};

use std::collections::BTreeSet;

use synapse_backup::{
    Container, PebbleContainer, RestoreOptions, S3Parameters, restore_backup_with,
};

use env::PASSPHRASE;
use pebble_daemon::PebbleDaemon;
use s3_server::TestS3Server;
use synapse_server::{
    Homeserver, Release, SERVICE, Timed, USER, backup_under_traffic, content_path, install,
};

/// The Pebble layer that runs `command` as the service `synapse`, as [`USER`].
fn layer(command: &[String]) -> String {
    format!(
        "summary: synapse under pebble\n\
         services:\n\
         \x20 {SERVICE}:\n\
         \x20   override: replace\n\
         \x20   command: {}\n\
         \x20   startup: disabled\n\
         \x20   user: {USER}\n\
         \x20   group: {USER}\n",
        command.join(" ")
    )
}

/// The real uids of the processes whose command line names `config` (Synapse's
/// `homeserver.yaml`).
fn synapse_uids(config: &std::path::Path) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let config = config.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&config))
        })
        .filter_map(|e| std::fs::metadata(e.path()).ok().map(|m| m.uid()))
        .collect()
}

/// A backup through `PebbleContainer` while Synapse (a Pebble service) keeps receiving
/// messages, then a restore through it: Pebble stops and starts Synapse, which comes
/// back active with the history up to the backup and nothing after, its media and
/// thumbnails byte for byte, the same signing key, no one-time keys, every file owned by
/// its user, and no error in its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn synapse_as_a_pebble_service_is_backed_up_live_and_restored_through_pebble() {
    let current = install(Release::Current);
    // The S3 server first: Synapse's port is picked free after it holds its own.
    let s3 = TestS3Server::start().await;
    s3.create_bucket("synapse-backups");
    let params = S3Parameters::from_relation_data(&s3.relation_data("synapse-backups"))
        .expect("relation data");
    let hs = Homeserver::generate(&current, &env::aws());
    // Dropped before `hs` (whose temp dir holds Synapse's data): Pebble stops Synapse.
    let daemon = PebbleDaemon::start_with(&layer(&hs.command(&current)), false);
    let pebble = PebbleContainer::new(daemon.socket());
    let synapse = [SERVICE.to_string()];
    pebble
        .start(&synapse)
        .await
        .unwrap_or_else(|e| panic!("pebble did not start synapse: {e}\n{}", hs.log_text()));
    hs.wait_serving().await;
    assert_eq!(daemon.service_status(SERVICE), "active");
    let config = hs.data.join("homeserver.yaml");
    assert_eq!(
        synapse_uids(&config),
        [hs.uid],
        "pebble runs synapse as {USER}"
    );

    let client = hs.client();
    let alice = client.register("alice").await;
    let room = client.create_room(&alice, "pebble").await;
    let mut sent = Vec::new();
    let send = {
        let (client, alice, room) = (client.clone(), alice.clone(), room.clone());
        move |body: String| {
            let (client, alice, room) = (client.clone(), alice.clone(), room.clone());
            Timed::of(async move {
                client
                    .send_text(&alice, &room, &format!("txn-{body}"), &body)
                    .await;
                body
            })
        }
    };
    for i in 0..10 {
        sent.push(send(format!("before {i}")).await);
    }
    let mut images = synapse_server::images(&current, &[0, 1, 2, 3]);
    let after_image = images.pop().unwrap();
    let mut media_ids = Vec::new();
    for (content_type, name, bytes) in &images {
        media_ids.push(
            client
                .upload(&alice, content_type, name, bytes.clone())
                .await,
        );
    }
    let thumbnails_before = {
        let mut t = Vec::new();
        for id in &media_ids {
            t.push(client.thumbnail(&alice, id, 32, 32, "crop").await);
            t.push(client.thumbnail(&alice, id, 96, 96, "scale").await);
        }
        t
    };
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

    // While the backup runs: messages keep arriving.
    let live = {
        let send = send.clone();
        move |i: u32| send(format!("live {i}"))
    };
    let mut backup = backup_under_traffic(&hs, &pebble, &params, PASSPHRASE, sent, live).await;

    // After the backup: history, media and keys the restore must undo.
    for i in 0..3 {
        backup.writes.push(send(format!("after {i}")).await);
    }
    let after_id = client
        .upload(
            &alice,
            &after_image.0,
            &after_image.1,
            after_image.2.clone(),
        )
        .await;
    client.upload_one_time_keys(&alice, 3).await;

    let restored = restore_backup_with(
        &pebble,
        &params,
        PASSPHRASE,
        &backup.report.id,
        &hs.layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("restore through pebble failed: {e}\n{}", hs.log_text()));
    assert_eq!(restored.one_time_keys_removed, Some(5), "{restored:?}");

    // Pebble stopped Synapse and started it again; it is active and serves.
    let changes = daemon.get("/v1/changes?select=all");
    assert!(
        changes.contains("\"kind\":\"stop\"") && changes.matches("\"kind\":\"start\"").count() >= 2,
        "restore did not stop and restart synapse through pebble: {changes}"
    );
    assert_eq!(daemon.service_status(SERVICE), "active", "{}", daemon.log());
    assert!(pebble.is_running(SERVICE).await.unwrap());
    assert_eq!(
        synapse_uids(&config),
        [hs.uid],
        "pebble runs synapse as {USER}"
    );
    hs.wait_serving().await;
    hs.assert_no_errors("after the restore");

    // History: everything up to one point, at least all sent before the backup started
    // and nothing sent after it finished.
    let bodies: BTreeSet<String> = client
        .message_bodies(&alice, &room)
        .await
        .into_iter()
        .collect();
    let present: Vec<bool> = backup
        .writes
        .iter()
        .map(|s| bodies.contains(&s.made))
        .collect();
    backup.assert_restored_prefix(&present);

    // Media and thumbnails byte for byte, in the store and through the client API; the
    // upload after the backup is gone.
    let files = hs.local_media_files();
    assert_eq!(
        files, media_before,
        "the media store differs from the backup's"
    );
    let mut thumbnails_after = Vec::new();
    for id in &media_ids {
        thumbnails_after.push(client.thumbnail(&alice, id, 32, 32, "crop").await);
        thumbnails_after.push(client.thumbnail(&alice, id, 96, 96, "scale").await);
    }
    assert!(thumbnails_after == thumbnails_before, "thumbnails differ");
    for (id, (_, _, bytes)) in media_ids.iter().zip(&images) {
        assert!(
            client.download(&alice, id).await == *bytes,
            "media {id} differs"
        );
    }
    assert!(!files.contains_key(&content_path(&after_id)));
    assert!(
        hs.query(&format!(
            "SELECT media_id FROM local_media_repository WHERE media_id = '{after_id}'"
        ))
        .is_empty(),
        "the upload after the backup has its row back"
    );

    // The same signing key, no one-time keys, everything owned by the Synapse user.
    hs.assert_restored_keys(&alice, &keys).await;

    pebble.stop(&synapse).await.unwrap();
    assert_eq!(daemon.service_status(SERVICE), "inactive");
    hs.assert_no_errors("after pebble stopped it");
}

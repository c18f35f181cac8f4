//! The backup lock against real S3 servers: s3s-fs behind the test server's atomic
//! conditional writes (and with them switched off), and moto. Short lifetimes through
//! `LockOptions` keep the tests fast; nothing asserts on timing beyond generous bounds.

use crate::support::{env, faulty, s3_server, synapse_tree};

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use s3_server::{MotoServer, ServerOptions, TestS3Server};
use synapse_backup::Conditional;
use synapse_backup::{
    BackupError, BackupId, BackupLock, BackupStatus, LockMode, LockOptions, LockOwner,
    RetentionPolicy, S3Client, S3Parameters, delete_backup, delete_backup_with, list_backups,
    prune_backups, prune_backups_with,
};

const BUCKET: &str = "synapse-backups";

fn client_for(data: HashMap<String, String>) -> S3Client {
    let mut data = data;
    data.insert("path".into(), "synapse/backups".into());
    S3Client::new(&S3Parameters::from_relation_data(&data).unwrap()).unwrap()
}

async fn s3s(options: ServerOptions) -> (TestS3Server, S3Client) {
    let server = TestS3Server::start_with(options).await;
    server.create_bucket(BUCKET);
    let client = client_for(server.relation_data(BUCKET));
    (server, client)
}

fn moto() -> (MotoServer, S3Client) {
    let server = MotoServer::start();
    server.create_bucket(BUCKET);
    let client = client_for(server.relation_data(BUCKET));
    (server, client)
}

fn owner(unit: &str, operation: &str) -> LockOwner {
    LockOwner::new(unit, "test-host", 4242, operation)
}

fn fast() -> LockOptions {
    LockOptions::new()
        .ttl(Duration::from_secs(2))
        .poll(Duration::from_millis(100))
}

/// Puts a lock object as a process that died would have left it: held, not released,
/// with a one-second time to live.
async fn dead_holders_lock(client: &S3Client, operation: &str) {
    let body = serde_json::json!({
        "format": 1,
        "owner": {"unit": "synapse/9", "host": "gone", "pid": 99999, "operation": operation},
        "since": "2026-01-01T00:00:00Z",
        "ttl_seconds": 1,
        "token": "dead",
        "refreshes": 0,
        "released": false,
    });
    client
        .put_object(
            &BackupLock::key(client),
            serde_json::to_vec(&body).unwrap(),
            "application/json",
            &HashMap::new(),
        )
        .await
        .unwrap();
}

/// A tagged data object without manifest: what a running (or dead) create leaves.
async fn incomplete_backup(client: &S3Client) -> BackupId {
    let id = BackupId::generate();
    let ours = HashMap::from([("created-by".to_string(), "synapse-backup/test".to_string())]);
    client
        .put_object(
            &client.object_key(id.as_str()),
            b"partial".to_vec(),
            "application/octet-stream",
            &ours,
        )
        .await
        .unwrap();
    id
}

/// No live lock: none, or a released marker.
async fn is_free(client: &S3Client) -> bool {
    BackupLock::inspect(client)
        .await
        .unwrap()
        .is_none_or(|info| info.released)
}

/// Captures this thread's log lines while alive.
struct Logs {
    buffer: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

struct BufferWriter(Arc<Mutex<Vec<u8>>>);

impl Write for BufferWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> Logs {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&buffer);
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || BufferWriter(Arc::clone(&writer)))
            .finish();
        Logs {
            buffer,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_lock_is_taken_names_its_holder_and_is_released() {
    let (_server, client) = s3s(ServerOptions::default()).await;
    let backup = incomplete_backup(&client).await;
    let a = BackupLock::acquire(&client, &owner("synapse/0", "create"), &fast())
        .await
        .unwrap();
    assert!(a.is_held());
    let info = BackupLock::inspect(&client).await.unwrap().expect("a lock");
    assert_eq!(info.key, "synapse/backups/.synapse-backup.lock");
    assert_eq!(info.owner, Some(owner("synapse/0", "create")));
    assert!(!info.released);

    // Neither the lock nor the probe object lists as a backup.
    let listed = list_backups(&client).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, backup);
    let keys: Vec<_> = client
        .list_objects()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    let mut expected = vec![
        "synapse/backups/.synapse-backup.lock".to_string(),
        client.object_key(backup.as_str()),
    ];
    expected.sort();
    assert_eq!(keys, expected, "the probe object is removed again");

    // A second operation fails at once, naming the holder and since when.
    let e = BackupLock::acquire(&client, &owner("synapse/1", "restore"), &fast())
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, BackupError::LockHeld { .. }), "{e:?}");
    assert!(
        text.contains("synapse/0 (create on host test-host, pid 4242)"),
        "{text}"
    );
    assert!(text.contains(" since 20"), "{text}");
    // delete and prune take the lock too.
    assert!(matches!(
        delete_backup(&client, &backup).await,
        Err(BackupError::LockHeld { .. })
    ));
    assert!(matches!(
        prune_backups(&client, &RetentionPolicy::default()).await,
        Err(BackupError::LockHeld { .. })
    ));

    a.release().await.unwrap();
    assert_eq!(
        BackupLock::inspect(&client).await.unwrap(),
        None,
        "released by a conditional delete"
    );
    let b = BackupLock::acquire(&client, &owner("synapse/1", "delete"), &fast())
        .await
        .unwrap();
    assert_eq!(
        BackupLock::inspect(&client).await.unwrap().unwrap().owner,
        Some(owner("synapse/1", "delete"))
    );
    b.release().await.unwrap();
    delete_backup(&client, &backup).await.unwrap();
    assert!(list_backups(&client).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_operation_gets_the_lock_once_it_is_released() {
    let (_server, client) = s3s(ServerOptions::default()).await;
    let a = BackupLock::acquire(&client, &owner("synapse/0", "create"), &fast())
        .await
        .unwrap();
    let waiter = {
        let client = client.clone();
        tokio::spawn(async move {
            BackupLock::acquire(
                &client,
                &owner("synapse/1", "prune"),
                &fast().wait(Duration::from_secs(120)),
            )
            .await
        })
    };
    // Still held by `a` (refreshed every ~0.7 s) while the waiter waits.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !waiter.is_finished(),
        "the waiter must wait while the lock is held"
    );
    a.release().await.unwrap();
    let b = waiter
        .await
        .unwrap()
        .expect("the waiter takes the released lock");
    assert_eq!(
        BackupLock::inspect(&client).await.unwrap().unwrap().owner,
        Some(owner("synapse/1", "prune"))
    );
    b.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refreshed_lock_outlives_its_time_to_live() {
    let (_server, client) = s3s(ServerOptions::default()).await;
    let a = BackupLock::acquire(
        &client,
        &owner("synapse/0", "create"),
        &LockOptions::new().ttl(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    // Several lifetimes (and the slack) pass; the refreshes keep it live.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let e = BackupLock::acquire(&client, &owner("synapse/1", "prune"), &fast())
        .await
        .unwrap_err();
    assert!(matches!(e, BackupError::LockHeld { .. }), "{e}");
    assert_eq!(a.lost(), None);
    a.release().await.unwrap();
}

/// A write of the holder's that landed although its answer was lost (a refresh cut
/// short) leaves the lock under an ETag the holder does not know: its token shows the
/// lock is still its own, so the release still succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn a_release_after_a_lost_answer_still_frees_the_lock() {
    let (_server, client) = s3s(ServerOptions::default()).await;
    let guard = BackupLock::acquire(&client, &owner("synapse/0", "create"), &fast())
        .await
        .unwrap();
    let key = BackupLock::key(&client);
    let mut record: serde_json::Value =
        serde_json::from_slice(&client.get_object(&key, 1 << 20).await.unwrap()).unwrap();
    record["refreshes"] = serde_json::json!(100);
    client
        .put_object(
            &key,
            serde_json::to_vec(&record).unwrap(),
            "application/json",
            &HashMap::new(),
        )
        .await
        .unwrap();
    guard.release().await.unwrap();
    assert_eq!(BackupLock::inspect(&client).await.unwrap(), None);

    // Someone else's lock (another token) is left alone.
    let guard = BackupLock::acquire(&client, &owner("synapse/0", "create"), &fast())
        .await
        .unwrap();
    let mut record: serde_json::Value =
        serde_json::from_slice(&client.get_object(&key, 1 << 20).await.unwrap()).unwrap();
    record["token"] = serde_json::json!("someone else");
    client
        .put_object(
            &key,
            serde_json::to_vec(&record).unwrap(),
            "application/json",
            &HashMap::new(),
        )
        .await
        .unwrap();
    guard.release().await.unwrap();
    assert!(BackupLock::inspect(&client).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_lock_is_taken_over_and_the_takeover_logged() {
    let (_server, client) = s3s(ServerOptions::default()).await;
    dead_holders_lock(&client, "create").await;
    let logs = Logs::capture();
    let e = BackupLock::acquire(&client, &owner("synapse/0", "restore"), &fast())
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("synapse/9 (create on host gone, pid 99999)"),
        "{e}"
    );
    let started = Instant::now();
    let guard = BackupLock::acquire(
        &client,
        &owner("synapse/0", "restore"),
        &fast().wait(Duration::from_secs(120)),
    )
    .await
    .unwrap();
    assert!(started.elapsed() < Duration::from_secs(120));
    assert_eq!(
        BackupLock::inspect(&client).await.unwrap().unwrap().owner,
        Some(owner("synapse/0", "restore"))
    );
    let text = logs.text();
    assert!(
        text.contains("took over an expired backup lock") && text.contains("pid 99999"),
        "{text}"
    );
    guard.release().await.unwrap();
}

/// A guard dropped without `release` (an error path, a panic, a cancelled future)
/// frees the lock, on a multi-thread runtime ...
#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_guard_releases_the_lock() {
    let (_server, client) = s3s(ServerOptions::default()).await;
    let work = {
        let client = client.clone();
        async move {
            let _guard = BackupLock::acquire(&client, &owner("synapse/0", "create"), &fast())
                .await
                .unwrap();
            std::future::pending::<()>().await;
        }
    };
    // Cancelled (as the CLI drops a create on Ctrl-C) once the lock is held.
    let cancelled = tokio::time::timeout(Duration::from_secs(3), work).await;
    assert!(cancelled.is_err());
    assert!(is_free(&client).await);

    // A failing operation: the error path drops the guard.
    let failing = async {
        let _guard = BackupLock::acquire(&client, &owner("synapse/0", "restore"), &fast()).await?;
        Err::<(), BackupError>(BackupError::NotFound { id: "x".into() })
    };
    assert!(failing.await.is_err());
    assert!(is_free(&client).await);
}

/// ... and on a current-thread runtime, before the drop returns.
#[tokio::test]
async fn a_dropped_guard_releases_the_lock_on_a_current_thread_runtime() {
    let (_server, client) = s3s(ServerOptions::default()).await;
    let guard = BackupLock::acquire(&client, &owner("synapse/0", "delete"), &fast())
        .await
        .unwrap();
    drop(guard);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !is_free(&client).await {
        assert!(
            Instant::now() < deadline,
            "the dropped guard's lock was never released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_without_conditional_writes_fails_closed() {
    let (_server, client) = s3s(ServerOptions {
        no_conditional_writes: true,
        ..ServerOptions::default()
    })
    .await;
    let id = incomplete_backup(&client).await;
    let e = BackupLock::acquire(&client, &owner("synapse/0", "create"), &fast())
        .await
        .unwrap_err();
    assert!(matches!(e, BackupError::LockUnsupported { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("does not honour conditional writes")
            && text.contains("LockMode::Off")
            && text.contains("--no-lock"),
        "{text}"
    );
    assert!(matches!(
        prune_backups(&client, &RetentionPolicy::default()).await,
        Err(BackupError::LockUnsupported { .. })
    ));
    assert!(matches!(
        delete_backup(&client, &id).await,
        Err(BackupError::LockUnsupported { .. })
    ));
    assert_eq!(list_backups(&client).await.unwrap().len(), 1);
    // Locking off: the operations run (prune keeps the fresh leftover: grace period).
    let off = LockOptions::off();
    let report = prune_backups_with(&client, &RetentionPolicy::default(), &off)
        .await
        .unwrap();
    assert!(report.deleted.is_empty());
    delete_backup_with(&client, &id, &off).await.unwrap();
    assert!(list_backups(&client).await.unwrap().is_empty());
    assert!(
        BackupLock::inspect(&client).await.unwrap().is_none(),
        "no lock object without conditional writes"
    );
}

/// Where DeleteObject ignores `If-Match`, a release leaves a `released` marker that
/// the next operation takes over; an operator's unlock removes a live lock.
#[tokio::test(flavor = "multi_thread")]
async fn without_conditional_deletes_a_release_leaves_a_released_marker() {
    let (_server, client) = s3s(ServerOptions {
        no_conditional_deletes: true,
        ..ServerOptions::default()
    })
    .await;
    let a = BackupLock::acquire(&client, &owner("synapse/0", "create"), &fast())
        .await
        .unwrap();
    a.release().await.unwrap();
    let marker = BackupLock::inspect(&client)
        .await
        .unwrap()
        .expect("a marker");
    assert!(marker.released);
    assert_eq!(marker.owner, Some(owner("synapse/0", "create")));
    let b = BackupLock::acquire(&client, &owner("synapse/1", "prune"), &fast())
        .await
        .unwrap();
    let held = BackupLock::inspect(&client).await.unwrap().unwrap();
    assert!(!held.released);
    assert_eq!(held.owner, Some(owner("synapse/1", "prune")));
    drop(b);
    assert!(is_free(&client).await);

    // unlock: removes the lock it was shown, not one that changed since.
    let c = BackupLock::acquire(&client, &owner("synapse/2", "restore"), &fast())
        .await
        .unwrap();
    let shown = BackupLock::inspect(&client).await.unwrap().unwrap();
    assert!(BackupLock::force_release(&client, &shown).await.unwrap());
    assert_eq!(BackupLock::inspect(&client).await.unwrap(), None);
    // The holder's own release then leaves the (now absent) lock alone.
    c.release().await.unwrap();
    assert_eq!(BackupLock::inspect(&client).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_test_server_makes_conditional_writes_atomic() {
    let (_server, client) = s3s(ServerOptions::default()).await;
    let key = client.object_key("race");
    // Many writers at once with If-None-Match: * — exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let client = client.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            client
                .put_object_if_none_match(&key, format!("writer {i}").into_bytes(), "text/plain")
                .await
                .unwrap()
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Conditional::Done { .. } => won += 1,
            Conditional::PreconditionFailed => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(won, 1);
    let current = client.get_object_versioned(&key, 1 << 20).await.unwrap();
    // If-Match: a wrong ETag fails, the right one succeeds, a missing key is Missing.
    assert_eq!(
        client
            .put_object_if_match(&key, b"x".to_vec(), "text/plain", "\"0123\"")
            .await
            .unwrap(),
        Conditional::PreconditionFailed
    );
    assert!(matches!(
        client
            .put_object_if_match(&key, b"y".to_vec(), "text/plain", &current.etag)
            .await
            .unwrap(),
        Conditional::Done { etag: Some(_) }
    ));
    assert_eq!(
        client
            .put_object_if_match(
                &client.object_key("nothing"),
                b"z".to_vec(),
                "text/plain",
                "\"1\""
            )
            .await
            .unwrap(),
        Conditional::Missing
    );
    // DeleteObject with If-Match.
    assert_eq!(
        client
            .delete_object_if_match(&key, &current.etag)
            .await
            .unwrap(),
        Conditional::PreconditionFailed
    );
    let now = client.get_object_versioned(&key, 1 << 20).await.unwrap();
    assert_eq!(now.body, b"y");
    assert_eq!(
        client
            .delete_object_if_match(&key, &now.etag)
            .await
            .unwrap(),
        Conditional::Done { etag: None }
    );
}

/// Moto honours conditional writes (checked for real), so the lock works there; a
/// prune while a create holds the lock leaves its multipart upload and data alone, and
/// once the create's lock has expired prune removes them, however young.
#[tokio::test(flavor = "multi_thread")]
async fn on_moto_prune_leaves_a_running_create_alone_and_cleans_up_after_a_dead_one() {
    let (moto, client) = tokio::task::spawn_blocking(moto).await.unwrap();
    // The probe passes on moto.
    let create = BackupLock::acquire(&client, &owner("synapse/0", "create"), &fast())
        .await
        .unwrap_or_else(|e| panic!("{e}; moto log: {}", moto.log_text()));
    let partial = incomplete_backup(&client).await;
    let upload_key = client.object_key(partial.as_str());
    let out = std::process::Command::new(env::aws())
        .args([
            "s3api",
            "create-multipart-upload",
            "--bucket",
            BUCKET,
            "--key",
            &upload_key,
            "--endpoint-url",
            &moto.endpoint,
        ])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let uploads = || async {
        client
            .list_multipart_uploads("synapse/")
            .await
            .unwrap()
            .len()
    };
    assert_eq!(uploads().await, 1);

    // Even with no grace period, prune does not touch them while the create holds the
    // lock: it cannot take it, and its dry run says a create is running.
    let eager = RetentionPolicy {
        grace_period: Duration::ZERO,
        ..RetentionPolicy::default()
    };
    let e = prune_backups_with(&client, &eager, &fast())
        .await
        .unwrap_err();
    assert!(matches!(e, BackupError::LockHeld { .. }), "{e}");
    let dry = prune_backups_with(
        &client,
        &RetentionPolicy {
            dry_run: true,
            ..eager.clone()
        },
        &fast(),
    )
    .await
    .unwrap();
    assert!(dry.deleted.is_empty(), "{dry:?}");
    assert_eq!(dry.aborted_uploads, 0);
    assert!(
        dry.create_running
            .as_deref()
            .unwrap_or("")
            .contains("synapse/0")
    );
    assert_eq!(uploads().await, 1);
    assert_eq!(
        list_backups(&client).await.unwrap()[0].status,
        BackupStatus::Incomplete
    );
    create.release().await.unwrap();

    // A create that died: its lock expires, prune takes it over and removes what it
    // left, although it is far younger than the grace period.
    dead_holders_lock(&client, "create").await;
    let report = prune_backups_with(
        &client,
        &RetentionPolicy::default(),
        &fast().wait(Duration::from_secs(120)),
    )
    .await
    .unwrap();
    assert_eq!(report.deleted.len(), 1, "{report:?}");
    assert_eq!(report.deleted[0].id, partial);
    assert_eq!(report.aborted_uploads, 1);
    assert_eq!(uploads().await, 0);
    assert!(list_backups(&client).await.unwrap().is_empty());
    assert!(is_free(&client).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn lock_mode_off_sends_nothing() {
    let (_server, client) = s3s(ServerOptions::default()).await;
    let guard = BackupLock::acquire(
        &client,
        &owner("synapse/0", "create"),
        &LockOptions::new().mode(LockMode::Off),
    )
    .await
    .unwrap();
    assert!(!guard.is_held());
    guard.release().await.unwrap();
    assert!(client.list_objects().await.unwrap().is_empty());
}

// ---------------------------------------------------------------------------------
// Processes: the `synapse-backup` binary, run for real.

/// A tree, a server, the S3 and passphrase files, and a stand-in for the aws CLI that
/// writes its pid to a marker and waits for a `go` file before running the real one.
struct Cli {
    dir: tempfile::TempDir,
    tree: synapse_tree::SynapseTree,
    server: TestS3Server,
    s3_file: std::path::PathBuf,
    passphrase_file: std::path::PathBuf,
    gated_aws: std::path::PathBuf,
    marker: std::path::PathBuf,
    go: std::path::PathBuf,
}

impl Cli {
    fn new() -> Cli {
        use std::os::unix::fs::PermissionsExt;
        let real_aws = env::aws();
        let dir = tempfile::tempdir().unwrap();
        let tree = synapse_tree::SynapseTree::create(
            &dir.path().join("root"),
            &synapse_tree::TreeSpec::default(),
        );
        let server = TestS3Server::start_blocking(ServerOptions::default());
        server.create_bucket(BUCKET);
        let s3_file = dir.path().join("s3.yaml");
        std::fs::write(
            &s3_file,
            format!(
                "access-key: {}\nsecret-key: {}\nbucket: {BUCKET}\nendpoint: {}\n\
                 region: us-east-1\ns3-uri-style: path\npath: synapse/backups\n",
                server.access_key, server.secret_key, server.endpoint
            ),
        )
        .unwrap();
        let passphrase_file = dir.path().join("passphrase");
        std::fs::write(&passphrase_file, "correct horse battery staple\n").unwrap();
        let marker = dir.path().join("aws-pid");
        let go = dir.path().join("go");
        let gated_aws = dir.path().join("gated-aws");
        std::fs::write(
            &gated_aws,
            format!(
                "#!/usr/bin/env bash\necho $$ > '{}'\nwhile [ ! -e '{}' ]; do sleep 0.05; done\nexec '{}' \"$@\"\n",
                marker.display(),
                go.display(),
                real_aws.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&gated_aws, std::fs::Permissions::from_mode(0o755)).unwrap();
        Cli {
            dir,
            tree,
            server,
            s3_file,
            passphrase_file,
            gated_aws,
            marker,
            go,
        }
    }

    fn cmd(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_synapse-backup"));
        for var in [
            "SYNAPSE_BACKUP_ROOT",
            "SYNAPSE_BACKUP_S3",
            "SYNAPSE_BACKUP_PASSPHRASE",
            "SYNAPSE_BACKUP_ACCESS_KEY",
            "SYNAPSE_BACKUP_SECRET_KEY",
            "RUST_LOG",
        ] {
            cmd.env_remove(var);
        }
        cmd.arg("--root")
            .arg(&self.tree.root)
            .arg("--s3")
            .arg(&self.s3_file)
            .arg("--passphrase-file")
            .arg(&self.passphrase_file)
            .stdin(std::process::Stdio::null());
        cmd
    }

    /// Runs to the end and checks the exit code.
    fn run(&self, code: i32, args: &[&str]) -> std::process::Output {
        let out = self.cmd().args(args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "synapse-backup {args:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Starts a create whose upload waits for [`open_gate`](Self::open_gate), and
    /// returns once it holds the lock (its pipeline reached the aws CLI).
    fn start_gated_create(&self, extra: &[&str]) -> (std::process::Child, i32) {
        let _ = std::fs::remove_file(&self.marker);
        let child = self
            .cmd()
            .args(extra)
            .arg("--aws")
            .arg(&self.gated_aws)
            .arg("create")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        let aws_pid = loop {
            if let Ok(text) = std::fs::read_to_string(&self.marker)
                && let Ok(pid) = text.trim().parse::<i32>()
            {
                break pid;
            }
            assert!(
                Instant::now() < deadline,
                "the create never reached the aws CLI"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        (child, aws_pid)
    }

    fn open_gate(&self) {
        std::fs::write(&self.go, "").unwrap();
    }

    fn client(&self) -> S3Client {
        client_for(self.server.relation_data(BUCKET))
    }

    fn lock(&self) -> Option<synapse_backup::LockInfo> {
        let client = self.client();
        block_on(async move { BackupLock::inspect(&client).await.unwrap() })
    }

    fn list(&self) -> Vec<serde_json::Value> {
        let out = self.run(0, &["list", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

fn signal(pid: i32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
}

#[test]
fn two_creates_at_once_one_holds_the_other_reports_the_holder_or_waits() {
    let f = Cli::new();
    // A short time to live: the running create keeps its lock by refreshing it.
    let (a, _) = f.start_gated_create(&["--lock-ttl", "1"]);
    let a_pid = a.id();
    std::thread::sleep(Duration::from_secs(4));
    let info = f.lock().expect("the running create holds the lock");
    let holder = info.owner.clone().unwrap();
    assert_eq!((holder.pid, holder.operation.as_str()), (a_pid, "create"));

    // A second create fails at once with exit code 3, naming holder and since.
    let out = f.run(3, &["create"]);
    let err = text(&out.stderr);
    assert!(
        err.contains("held by") && err.contains(&format!("pid {a_pid}")) && err.contains("create"),
        "{err}"
    );
    assert!(err.contains(" since 20"), "{err}");
    assert!(text(&out.stdout).is_empty());
    // So do prune, delete and restore; list does not take the lock.
    f.run(3, &["prune", "--keep-last", "1"]);
    f.run(3, &["delete", "backup-20260101000000000000"]);
    f.run(3, &["restore", "backup-20260101000000000000", "--yes"]);
    assert!(f.list().is_empty());

    // A third create waits for it.
    let waiter = f
        .cmd()
        .args(["--lock-wait", "600", "create"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    f.open_gate();
    let a = a.wait_with_output().unwrap();
    assert_eq!(a.status.code(), Some(0), "{}", text(&a.stderr));
    let waited = waiter.wait_with_output().unwrap();
    assert_eq!(waited.status.code(), Some(0), "{}", text(&waited.stderr));
    let list = f.list();
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list.iter().all(|b| b["status"] == "complete"), "{list:?}");
    assert_eq!(f.lock(), None, "released at the end");
}

#[test]
fn a_killed_process_lock_expires_and_is_taken_over() {
    let f = Cli::new();
    let (a, aws_pid) = f.start_gated_create(&["--lock-ttl", "2"]);
    let a_pid = a.id();
    signal(a_pid as i32, nix::sys::signal::Signal::SIGKILL);
    let _ = a.wait_with_output();
    signal(aws_pid, nix::sys::signal::Signal::SIGKILL);
    let stale = f.lock().expect("a killed process cannot release its lock");
    assert_eq!(stale.owner.unwrap().pid, a_pid);

    // Until it expires (2 s after its last refresh by the server's clock), it holds.
    // A waiting operation takes it over once expired, and says so.
    let out = f.run(0, &["--lock-wait", "600", "prune"]);
    let err = text(&out.stderr);
    assert!(err.contains("took over an expired backup lock"), "{err}");
    assert!(err.contains(&format!("pid {a_pid}")), "{err}");
    assert_eq!(f.lock(), None);
    f.run(0, &["create"]);
    assert_eq!(f.list().len(), 1);
}

#[test]
fn unlock_removes_a_dead_processes_lock_after_confirmation() {
    let f = Cli::new();
    let (a, aws_pid) = f.start_gated_create(&[]);
    let a_pid = a.id();
    signal(a_pid as i32, nix::sys::signal::Signal::SIGKILL);
    let _ = a.wait_with_output();
    signal(aws_pid, nix::sys::signal::Signal::SIGKILL);
    // Five minutes to live: held.
    let err = text(&f.run(3, &["create"]).stderr);
    assert!(err.contains("synapse-backup unlock"), "{err}");
    // No terminal to confirm on: refused, nothing changed.
    let err = text(&f.run(2, &["unlock"]).stderr);
    assert!(
        err.contains("--yes") && err.contains(&format!("pid {a_pid}")),
        "{err}"
    );
    assert!(f.lock().is_some());
    let out = f.run(0, &["unlock", "--yes"]);
    assert!(
        text(&out.stdout).contains("removed the backup lock"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(f.lock(), None);
    let out = f.run(0, &["unlock", "--yes"]);
    assert!(
        text(&out.stdout).contains("no backup lock"),
        "{}",
        text(&out.stdout)
    );
    f.run(0, &["create"]);
}

#[test]
fn the_lock_is_released_on_every_failure_path_of_the_binary() {
    use nix::sys::signal::Signal;
    let f = Cli::new();
    // Interrupted (SIGINT, SIGTERM) creates: cleaned up, lock released.
    for (sig, code) in [(Signal::SIGINT, 130), (Signal::SIGTERM, 143)] {
        let (a, _) = f.start_gated_create(&[]);
        assert!(f.lock().is_some());
        signal(a.id() as i32, sig);
        let out = a.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{}", text(&out.stderr));
        assert_eq!(f.lock(), None, "{sig:?}");
    }
    // A failing upload.
    f.run(1, &["--aws", "/bin/false", "create"]);
    assert_eq!(f.lock(), None);
    // A failing restore (no such backup) and delete.
    f.run(1, &["restore", "backup-20260101000000000000", "--yes"]);
    assert_eq!(f.lock(), None);
    f.run(1, &["delete", "backup-20260101000000000000"]);
    assert_eq!(f.lock(), None);
    // Nothing to back up.
    std::fs::remove_dir_all(&f.tree.root).unwrap();
    std::fs::create_dir_all(f.tree.data.clone()).unwrap();
    std::fs::write(
        f.tree.data.join("homeserver.yaml"),
        "server_name: example.org\n",
    )
    .unwrap();
    let out = f.cmd().arg("create").output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(f.lock(), None, "{}", text(&out.stderr));
    assert!(f.list().is_empty());
    let _ = &f.dir;
}

#[test]
fn no_lock_runs_against_a_server_without_conditional_writes() {
    let mut f = Cli::new();
    let root = f.server.root.clone();
    let credentials = (f.server.access_key.clone(), f.server.secret_key.clone());
    let port = f.server.port();
    f.server.stop_blocking();
    f.server = TestS3Server::start_blocking(ServerOptions {
        root: Some(root),
        port: Some(port),
        credentials: Some(credentials),
        no_conditional_writes: true,
        ..ServerOptions::default()
    });
    let err = text(&f.run(2, &["create"]).stderr);
    assert!(
        err.contains("does not honour conditional writes") && err.contains("--no-lock"),
        "{err}"
    );
    assert!(f.list().is_empty());
    f.run(0, &["--no-lock", "create"]);
    f.run(0, &["--no-lock", "prune", "--keep-last", "1"]);
    assert_eq!(f.list().len(), 1);
    assert_eq!(f.lock(), None);
}

/// On moto (which lists multipart uploads): a create whose upload is half-way (two
/// parts sent, the rest held back) holds the lock, so a prune started meanwhile leaves
/// its multipart upload alone, even with leftovers older than nothing; the create then
/// finishes.
#[test]
fn a_prune_started_during_a_create_leaves_its_upload_alone() {
    use std::os::unix::fs::PermissionsExt;
    let real_aws = env::aws();
    let moto = MotoServer::start();
    moto.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let tree = synapse_tree::SynapseTree::create(
        &dir.path().join("root"),
        &synapse_tree::TreeSpec {
            media_files: 6,
            media_bytes: 30 << 20,
            ..synapse_tree::TreeSpec::default()
        },
    );
    let s3_file = dir.path().join("s3.yaml");
    std::fs::write(
        &s3_file,
        format!(
            "access-key: testing\nsecret-key: testing\nbucket: {BUCKET}\nendpoint: {}\n\
             region: us-east-1\ns3-uri-style: path\npath: synapse/backups\n",
            moto.endpoint
        ),
    )
    .unwrap();
    let passphrase_file = dir.path().join("passphrase");
    std::fs::write(&passphrase_file, "correct horse battery staple\n").unwrap();
    let go = dir.path().join("go");
    // The first 12 MiB go through (the upload is multipart with 5 MiB parts), the rest
    // waits for `go`.
    let half_way_aws = dir.path().join("half-way-aws");
    std::fs::write(
        &half_way_aws,
        format!(
            "#!/usr/bin/env bash\n{{ head -c 12582912; while [ ! -e '{}' ]; do sleep 0.05; done; cat; }} | '{}' \"$@\"\n",
            go.display(),
            real_aws.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&half_way_aws, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cmd = || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_synapse-backup"));
        cmd.env_remove("RUST_LOG")
            .env_remove("SYNAPSE_BACKUP_ACCESS_KEY")
            .env_remove("SYNAPSE_BACKUP_SECRET_KEY")
            .arg("--root")
            .arg(&tree.root)
            .arg("--s3")
            .arg(&s3_file)
            .arg("--passphrase-file")
            .arg(&passphrase_file)
            .stdin(std::process::Stdio::null());
        cmd
    };
    let create = cmd()
        .arg("--aws")
        .arg(&half_way_aws)
        .arg("create")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let client = client_for(moto.relation_data(BUCKET));
    let uploads = || {
        let client = client.clone();
        block_on(async move { client.list_multipart_uploads("synapse/").await.unwrap() })
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    while uploads().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the create never started its multipart upload; moto log: {}",
            moto.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = uploads();

    // prune: the lock is held, so it does not run; its dry run leaves the upload alone.
    let out = cmd().args(["prune", "--keep-last", "1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let out = cmd().args(["prune", "--dry-run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(
        report.contains("abort 0 stale upload(s)") && report.contains("left alone"),
        "{report}"
    );
    assert_eq!(
        uploads(),
        before,
        "the running create's upload is untouched"
    );

    std::fs::write(&go, "").unwrap();
    let out = create.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(uploads().is_empty());
    let listed = {
        let client = client.clone();
        block_on(async move { list_backups(&client).await.unwrap() })
    };
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status, BackupStatus::Complete);
}

/// A create waiting for a held lock stops at once when cancelled (Ctrl-C while it
/// waits), instead of waiting out `--lock-wait` and only then seeing the cancel.
#[tokio::test(flavor = "multi_thread")]
async fn a_create_waiting_for_the_lock_is_cancelled_at_once() {
    let env = env::Env::new(&synapse_tree::TreeSpec::default()).await;
    let client = S3Client::new(&env.params).unwrap();
    let held = BackupLock::acquire(&client, &owner("unit/1", "restore"), &fast())
        .await
        .unwrap();
    let cancel = synapse_backup::CancelToken::new();
    let options = synapse_backup::BackupOptions::default()
        .lock(fast().wait(Duration::from_secs(600)))
        .cancel(cancel.clone());
    let container = synapse_backup::LocalContainer::new();
    let create = synapse_backup::create_backup_with(
        &container,
        &env.params,
        env::PASSPHRASE,
        &env.layout,
        &options,
    );
    let canceller = async {
        // The create is waiting on the held lock by now, or will see the cancel first.
        tokio::time::sleep(Duration::from_millis(500)).await;
        cancel.cancel();
    };
    let (result, ()) = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(create, canceller)
    })
    .await
    .expect("the cancelled create returned long before its ten-minute lock wait");
    assert!(matches!(result, Err(BackupError::Cancelled)), "{result:?}");
    assert_eq!(
        BackupLock::inspect(&client).await.unwrap().unwrap().owner,
        Some(owner("unit/1", "restore")),
        "the other holder keeps the lock"
    );
    held.release().await.unwrap();
    assert!(list_backups(&client).await.unwrap().is_empty());
}

// Values from the bucket are bounded; the lock is confirmed before every irreversible
// step; a panic does not leave it held.

/// Puts a live lock of another holder whose time to live is `ttl_seconds` (anything:
/// whoever can write to the bucket can put one).
async fn lock_with_ttl(client: &S3Client, ttl_seconds: u64) {
    let body = serde_json::json!({
        "format": 1,
        "owner": {"unit": "synapse/7", "host": "elsewhere", "pid": 7, "operation": "create"},
        "since": "2026-01-01T00:00:00Z",
        "ttl_seconds": ttl_seconds,
        "token": "theirs",
        "refreshes": 0,
        "released": false,
    });
    client
        .put_object(
            &BackupLock::key(client),
            serde_json::to_vec(&body).unwrap(),
            "application/json",
            &HashMap::new(),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_object_with_an_endless_ttl_is_held_for_a_day_at_most_and_never_panics() {
    let (_server, client) = s3s(ServerOptions::default()).await;
    lock_with_ttl(&client, u64::MAX).await;
    let info = BackupLock::inspect(&client).await.unwrap().unwrap();
    assert_eq!(info.ttl, Some(LockOptions::MAX_TTL));
    let now = chrono::Utc::now();
    assert!(!info.is_expired(now, Duration::from_secs(60)));
    assert!(info.is_expired(now + chrono::Duration::days(2), Duration::MAX));
    // Before: "overflow when adding durations" in is_expired, from acquire.
    match BackupLock::acquire(&client, &owner("synapse/0", "prune"), &fast()).await {
        Err(BackupError::LockHeld { ttl_seconds, .. }) => assert_eq!(ttl_seconds, 86_400),
        other => panic!("{other:?}"),
    }
    assert!(
        BackupLock::live_holder(&client, Duration::MAX)
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_lock_wait_is_clamped_instead_of_panicking() {
    let (_server, client) = s3s(ServerOptions::default()).await;
    let mut options = fast().wait(Duration::MAX);
    assert_eq!(options.wait, LockOptions::MAX_WAIT);
    assert_eq!(
        LockOptions::new().ttl(Duration::MAX).ttl,
        LockOptions::MAX_TTL
    );
    // The fields are public: set past the clamp, they are clamped where used.
    // Before: "overflow when adding a duration to an instant" in acquire.
    options.wait = Duration::from_secs(u64::MAX);
    options.ttl = Duration::MAX;
    let guard = BackupLock::acquire(&client, &owner("synapse/0", "create"), &options)
        .await
        .unwrap();
    guard.release().await.unwrap();
}

/// A panic inside an operation (a charm's unit test whose `MockContainer` misses an
/// expectation) on the single-threaded runtime `#[tokio::test]` uses frees the lock
/// before the panic leaves the runtime, which then never runs again.
#[test]
fn a_panic_inside_an_operation_on_a_current_thread_runtime_frees_the_lock() {
    let server = TestS3Server::start_blocking(ServerOptions::default());
    server.create_bucket(BUCKET);
    let mut data = server.relation_data(BUCKET);
    data.insert("path".into(), "synapse/backups".into());
    let params = S3Parameters::from_relation_data(&data).unwrap();
    let client = S3Client::new(&params).unwrap();
    let root = tempfile::tempdir().unwrap();
    let layout = env::layout_for(root.path());
    let panicked = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                // No expectation at all: the first call into the container panics.
                let container = synapse_backup::MockContainer::new();
                synapse_backup::create_backup_with(
                    &container,
                    &params,
                    "a passphrase",
                    &layout,
                    &synapse_backup::BackupOptions::default(),
                )
                .await
            })
    })
    .join();
    assert!(panicked.is_err(), "the operation panicked: {panicked:?}");
    // Before: the release was spawned on the dead runtime; the lock stayed held for
    // its five minutes.
    assert!(
        block_on(is_free(&client)),
        "the lock was released before the panic left the runtime"
    );
    block_on(async {
        BackupLock::acquire(&client, &owner("synapse/1", "create"), &fast())
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
    });
}

/// Takes the lock over as another unit would once it was removed (`unlock`).
async fn take_the_lock_away(client: &S3Client) {
    // The holder's refresher may rewrite the lock between the inspect and the release
    // (`fast()` refreshes it often; on a busy machine the window is wide): the release
    // is conditional on what was inspected, so inspect again until one wins.
    for _ in 0..50 {
        let Some(info) = BackupLock::inspect(client).await.unwrap() else {
            break;
        };
        if BackupLock::force_release(client, &info).await.unwrap() {
            break;
        }
    }
    let other = BackupLock::acquire(client, &owner("synapse/9", "prune"), &fast())
        .await
        .unwrap();
    // Left held (by a refresher that stops here): the lock is theirs now.
    std::mem::forget(other);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_whose_lock_was_lost_stops_before_the_swap() {
    let env = env::Env::new(&synapse_tree::TreeSpec::default()).await;
    let container = faulty::Faulty::new(synapse_backup::LocalContainer::new());
    let id = env.create(&container).await.unwrap().id;
    let key_file = env.tree.data.join("example.test.signing.key");
    let live = std::fs::read(&key_file).unwrap_or_default();
    std::fs::write(&key_file, b"changed after the backup").unwrap_or_default();
    let client = S3Client::new(&env.params).unwrap();
    // The download (the extract pipeline) finishes; then the lock is lost.
    let (downloaded, go_on) = container.pause_after_exec_with("SB_NEED_BYTES");
    let options = synapse_backup::RestoreOptions::default().lock(fast());
    let restore = synapse_backup::restore_backup_with(
        &container,
        &env.params,
        env::PASSPHRASE,
        &id,
        &env.layout,
        &options,
    );
    let thief = async {
        downloaded.await.unwrap();
        take_the_lock_away(&client).await;
        go_on.send(()).unwrap();
    };
    let (result, ()) = tokio::join!(restore, thief);
    match &result {
        Err(e @ BackupError::LockLost { reason, .. }) => {
            assert!(reason.contains("the swap was not done"), "{e}");
            assert!(e.to_string().contains(".synapse-backup.lock"), "{e}");
        }
        other => panic!("before: the restore swapped anyway: {other:?}"),
    }
    let _ = live;
    assert_eq!(
        std::fs::read(&key_file).unwrap_or_default(),
        b"changed after the backup",
        "live data untouched"
    );
    assert_eq!(
        BackupLock::inspect(&client).await.unwrap().unwrap().owner,
        Some(owner("synapse/9", "prune")),
        "the new holder keeps the lock"
    );
}

/// Delegates to an `S3Client`; the first HeadObject of a backup's object runs
/// `take_the_lock_away` first (the lock is lost while a delete or prune runs).
#[derive(Debug, Clone)]
struct LosesTheLock {
    inner: S3Client,
    armed: Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait::async_trait]
impl synapse_backup::ObjectStore for LosesTheLock {
    fn prefix(&self) -> &str {
        self.inner.prefix()
    }
    async fn list_objects(
        &self,
    ) -> Result<Vec<synapse_backup::ObjectInfo>, synapse_backup::S3Error> {
        self.inner.list_objects().await
    }
    async fn head_object(
        &self,
        key: &str,
    ) -> Result<synapse_backup::ObjectHead, synapse_backup::S3Error> {
        if key.contains("backup-") && self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            take_the_lock_away(&self.inner).await;
        }
        self.inner.head_object(key).await
    }
    async fn get_object(&self, key: &str, max: u64) -> Result<Vec<u8>, synapse_backup::S3Error> {
        self.inner.get_object(key, max).await
    }
    async fn get_object_versioned(
        &self,
        key: &str,
        max: u64,
    ) -> Result<synapse_backup::VersionedObject, synapse_backup::S3Error> {
        self.inner.get_object_versioned(key, max).await
    }
    async fn put_object(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        metadata: &HashMap<String, String>,
    ) -> Result<(), synapse_backup::S3Error> {
        self.inner
            .put_object(key, body, content_type, metadata)
            .await
    }
    async fn put_object_if_none_match(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<Conditional, synapse_backup::S3Error> {
        self.inner
            .put_object_if_none_match(key, body, content_type)
            .await
    }
    async fn put_object_if_match(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        etag: &str,
    ) -> Result<Conditional, synapse_backup::S3Error> {
        self.inner
            .put_object_if_match(key, body, content_type, etag)
            .await
    }
    async fn delete_object(&self, key: &str) -> Result<(), synapse_backup::S3Error> {
        self.inner.delete_object(key).await
    }
    async fn delete_object_if_match(
        &self,
        key: &str,
        etag: &str,
    ) -> Result<Conditional, synapse_backup::S3Error> {
        self.inner.delete_object_if_match(key, etag).await
    }
    async fn list_multipart_uploads(
        &self,
        key_prefix: &str,
    ) -> Result<Vec<synapse_backup::MultipartUpload>, synapse_backup::S3Error> {
        self.inner.list_multipart_uploads(key_prefix).await
    }
    async fn abort_multipart_upload(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<(), synapse_backup::S3Error> {
        self.inner.abort_multipart_upload(key, upload_id).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_whose_lock_was_lost_deletes_nothing() {
    let (_server, client) = s3s(ServerOptions::default()).await;
    let id = incomplete_backup(&client).await;
    let store = LosesTheLock {
        inner: client.clone(),
        armed: Arc::new(std::sync::atomic::AtomicBool::new(true)),
    };
    let result = delete_backup_with(&store, &id, &fast()).await;
    match &result {
        Err(BackupError::LockLost { reason, .. }) => {
            assert!(
                reason.contains("deleting") && reason.contains(id.as_str()),
                "{reason}"
            );
        }
        other => panic!("before: deleted anyway: {other:?}"),
    }
    assert_eq!(
        list_backups(&client).await.unwrap().len(),
        1,
        "the backup is still there"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_whose_lock_was_lost_writes_no_manifest() {
    let env = env::Env::new(&synapse_tree::TreeSpec::default()).await;
    let container = faulty::Faulty::new(synapse_backup::LocalContainer::new());
    let client = S3Client::new(&env.params).unwrap();
    // The upload finishes; then the lock is lost before the manifest is written.
    let (uploaded, go_on) = container.pause_after_pipeline();
    let options = synapse_backup::BackupOptions::default().lock(fast());
    let create = synapse_backup::create_backup_with(
        &container,
        &env.params,
        env::PASSPHRASE,
        &env.layout,
        &options,
    );
    let thief = async {
        uploaded.await.unwrap();
        take_the_lock_away(&client).await;
        go_on.send(()).unwrap();
    };
    let (result, ()) = tokio::join!(create, thief);
    match &result {
        Err(e @ BackupError::LockLost { reason, .. }) => {
            assert!(reason.contains("the manifest write was not done"), "{e}");
        }
        other => panic!("before: the manifest was written anyway: {other:?}"),
    }
    let complete = list_backups(&client)
        .await
        .unwrap()
        .into_iter()
        .filter(|b| b.status == BackupStatus::Complete)
        .count();
    assert_eq!(complete, 0, "no backup came to exist");
}

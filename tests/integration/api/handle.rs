//! The `Backups` handle as a charm's unit test uses it: `MockContainer` and
//! `MemoryStore`, no server.

use std::collections::HashMap;
use std::time::Duration;

use synapse_backup::testing::MemoryStore;
use synapse_backup::{
    BackupError, BackupId, BackupStatus, Backups, CancelToken, ConfigError, ContainerError, Layout,
    ListedKind, MockContainer, ObjectStore, PruneAction, PruneReason, RetentionPolicy,
    S3Parameters, VerifyOptions,
};

const PATH: &str = "synapse/backups";

/// Parameters of a bucket nobody serves: any request to it fails to connect.
fn unreachable_bucket() -> S3Parameters {
    let data = HashMap::from(
        [
            ("access-key", "AKIDEXAMPLE"),
            ("secret-key", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            ("bucket", "synapse-backups"),
            ("endpoint", "http://127.0.0.1:1"),
            ("path", PATH),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    S3Parameters::from_relation_data(&data).unwrap()
}

/// The handle over `store` with a workload that runs nothing (catalog operations only).
fn over_store(store: MemoryStore) -> Backups<MockContainer> {
    Backups::with_store(
        MockContainer::new(),
        unreachable_bucket(),
        Layout::default(),
        store,
    )
    .unwrap()
}

/// A workload with no `homeserver.yaml`: reading it fails as a missing file does (by a
/// pull, or by an exec as the workload user).
fn workload_without_config() -> MockContainer {
    let mut mock = MockContainer::new();
    mock.expect_pull().returning(|path| {
        Err(ContainerError::NotFound {
            path: path.to_string(),
        })
    });
    mock.expect_exec().returning(|argv, _| {
        Err(ContainerError::ExitedNonZero {
            command: argv[0].clone(),
            exit_code: 1,
            stderr: "cat: /data/homeserver.yaml: No such file or directory".into(),
        })
    });
    mock
}

fn is_missing_config(e: &BackupError) -> bool {
    matches!(e, BackupError::Config(ConfigError::Parse { what, .. }) if what.ends_with("homeserver.yaml"))
}

/// A create on a workload without `homeserver.yaml` says so, before it sends anything
/// to the bucket: not "connection refused" from a lock probe.
#[tokio::test]
async fn create_without_homeserver_yaml_names_the_file_before_any_bucket_request() {
    let mock = workload_without_config();
    let e = synapse_backup::create_backup(&mock, &unreachable_bucket(), "a passphrase")
        .await
        .unwrap_err();
    assert!(is_missing_config(&e), "{e}");
    assert!(e.to_string().contains("homeserver.yaml"), "{e}");

    let backups = Backups::new(
        workload_without_config(),
        unreachable_bucket(),
        Layout::default(),
    )
    .unwrap();
    let e = backups
        .create("a passphrase", &Default::default())
        .await
        .unwrap_err();
    assert!(is_missing_config(&e), "{e}");
    let e = backups
        .restore("a passphrase", &BackupId::generate(), &Default::default())
        .await
        .unwrap_err();
    assert!(is_missing_config(&e), "{e}");
}

/// A passphrase gpg would truncate is refused before anything runs.
#[tokio::test]
async fn create_refuses_an_unusable_passphrase_first() {
    let backups = Backups::new(
        MockContainer::new(),
        unreachable_bucket(),
        Layout::default(),
    )
    .unwrap();
    let e = backups
        .create("two\nlines", &Default::default())
        .await
        .unwrap_err();
    assert!(matches!(e, BackupError::InvalidPassphrase(_)), "{e}");
}

/// A verify whose token is cancelled returns `Cancelled` without running anything.
#[tokio::test]
async fn a_cancelled_verify_runs_nothing() {
    let backups = over_store(MemoryStore::new(PATH));
    let cancel = CancelToken::new();
    cancel.cancel();
    let e = backups
        .verify(
            "a passphrase",
            &BackupId::generate(),
            &VerifyOptions::default().cancel(cancel),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, BackupError::Cancelled), "{e}");
}

async fn put_complete(store: &MemoryStore, id: &BackupId) {
    let tag = HashMap::from([("created-by".to_string(), "synapse-backup/test".to_string())]);
    let key = store.object_key(id.as_str());
    store
        .put_object(&key, b"data".to_vec(), "application/octet-stream", &tag)
        .await
        .unwrap();
    store
        .put_object(
            &format!("{key}.manifest.json"),
            b"{}".to_vec(),
            "application/json",
            &tag,
        )
        .await
        .unwrap();
}

/// list, status, prune_plan, prune and delete through the handle over a `MemoryStore`
/// whose clock the test moves: ages are the store's (the server's) time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_through_the_handle_over_a_memory_store() {
    let store = MemoryStore::new(PATH);
    let mut ids = Vec::new();
    for _ in 0..4 {
        let id = BackupId::from_time(store.now());
        put_complete(&store, &id).await;
        ids.push(id);
        store.advance(Duration::from_secs(10 * 86_400));
    }
    let backups = over_store(store.clone());
    let listed: Vec<_> = backups
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.id)
        .collect();
    let newest_first: Vec<_> = ids.iter().rev().cloned().collect();
    assert_eq!(listed, newest_first);
    assert_eq!(
        backups.status(&ids[0]).await.unwrap(),
        Some(BackupStatus::Complete)
    );

    let before = store.keys();
    let plan = backups
        .prune_plan(&RetentionPolicy::default().older_than_days(Some(25)))
        .await
        .unwrap();
    assert_eq!(store.keys(), before, "a plan changes nothing");
    let going: Vec<_> = plan.to_delete().map(|b| b.backup.id.clone()).collect();
    assert_eq!(going, [ids[1].clone(), ids[0].clone()]);
    let newest = plan.get(&ids[3]).unwrap();
    assert_eq!(newest.action, PruneAction::Keep);
    assert!(newest.reasons.contains(&PruneReason::NewestComplete));
    let json = serde_json::to_value(&plan).unwrap();
    assert_eq!(json["backups"][3]["action"], "delete");

    let report = backups.prune(&plan).await.unwrap();
    assert_eq!(report.deleted.len(), 2);
    let left: Vec<_> = backups
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(left, [ids[3].clone(), ids[2].clone()]);

    backups.delete(&ids[2]).await.unwrap();
    assert_eq!(backups.status(&ids[2]).await.unwrap(), None);
    assert!(
        store.keys().iter().all(|k| !k.contains(".synapse-backup.")),
        "no lock, probe or clock object left: {:?}",
        store.keys()
    );
}

/// A chain through the handle: `list` gives each backup's kind from the index objects'
/// names, `describe` a backup's older packs and total size, `delete` of the base is
/// refused and `delete_with_dependents` deletes the chain newest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_through_the_handle_lists_kinds_and_deletes_with_dependents() {
    let store = MemoryStore::new(PATH);
    let mut ids: Vec<BackupId> = Vec::new();
    for _ in 0..3 {
        let id = BackupId::from_time(store.now());
        put_complete(&store, &id).await;
        let index = synapse_backup::index_suffix(ids.last());
        store
            .put_object(
                &store.object_key(&format!("{id}{index}")),
                b"{}\n".to_vec(),
                "application/x-ndjson",
                &HashMap::new(),
            )
            .await
            .unwrap();
        ids.push(id);
        store.advance(Duration::from_secs(86_400));
    }
    let backups = over_store(store.clone());
    let kinds: Vec<ListedKind> = backups
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            ListedKind::Incremental {
                base: ids[1].clone()
            },
            ListedKind::Incremental {
                base: ids[0].clone()
            },
            ListedKind::Full,
        ]
    );
    let chain = backups.describe(&ids[2]).await.unwrap();
    let packs: Vec<_> = chain.packs.iter().map(|p| p.id.clone()).collect();
    assert_eq!(packs, ids[..2]);
    assert_eq!((chain.total_size, chain.broken_at), (12, None));

    let refused = backups.delete(&ids[0]).await.unwrap_err();
    assert!(
        matches!(&refused, BackupError::NeededByOthers { dependents, .. }
            if *dependents == [ids[2].to_string(), ids[1].to_string()]),
        "{refused}"
    );
    let deleted = backups.delete_with_dependents(&ids[0]).await.unwrap();
    assert_eq!(deleted, [ids[2].clone(), ids[1].clone(), ids[0].clone()]);
    assert!(backups.list().await.unwrap().is_empty());
    assert!(store.keys().is_empty(), "{:?}", store.keys());
}

/// A plan made before a newer backup arrived deletes nothing that plan keeps, and a
/// prune never deletes a backup the bucket no longer plans to delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_deletes_only_what_both_its_plan_and_the_bucket_now_allow() {
    let store = MemoryStore::new(PATH);
    let old = BackupId::from_time(store.now());
    put_complete(&store, &old).await;
    store.advance(Duration::from_secs(86_400));
    let mid = BackupId::from_time(store.now());
    put_complete(&store, &mid).await;
    let backups = over_store(store.clone());
    let plan = backups
        .prune_plan(&RetentionPolicy::default().keep_last(Some(1)))
        .await
        .unwrap();
    assert_eq!(
        plan.to_delete()
            .map(|b| b.backup.id.clone())
            .collect::<Vec<_>>(),
        std::slice::from_ref(&old)
    );
    // Meanwhile a new backup arrives: under the lock, `mid` is beyond keep_last too, but
    // the plan the caller inspected kept it.
    store.advance(Duration::from_secs(3600));
    let new = BackupId::from_time(store.now());
    put_complete(&store, &new).await;
    let report = backups.prune(&plan).await.unwrap();
    assert_eq!(
        report
            .deleted
            .iter()
            .map(|b| b.id.clone())
            .collect::<Vec<_>>(),
        [old]
    );
    let left: Vec<_> = backups
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(left, [new, mid]);
}

/// Every report serializes (for an action's results and the CLI's `--json`).
#[test]
fn every_report_is_serialize() {
    fn serialize<T: serde::Serialize>() {}
    serialize::<synapse_backup::BackupReport>();
    serialize::<synapse_backup::VerifyReport>();
    serialize::<synapse_backup::RestoreReport>();
    serialize::<synapse_backup::ExtractReport>();
    serialize::<synapse_backup::PruneReport>();
    serialize::<synapse_backup::PrunePlan>();
}

/// A forwarding wrapper: the whole implementation of `Container` a charm needs, with
/// the re-exported attribute (no `async-trait` dependency of its own).
struct Logged<C>(C);

#[synapse_backup::async_trait]
impl<C: synapse_backup::Container> synapse_backup::Container for Logged<C> {
    async fn exec(
        &self,
        command: &[String],
        options: synapse_backup::ExecOptions,
    ) -> Result<synapse_backup::ExecOutput, ContainerError> {
        self.0.exec(command, options).await
    }
    async fn push(
        &self,
        path: &str,
        content: &[u8],
        options: synapse_backup::PushOptions,
    ) -> Result<(), ContainerError> {
        self.0.push(path, content, options).await
    }
    async fn pull(&self, path: &str) -> Result<Vec<u8>, ContainerError> {
        self.0.pull(path).await
    }
    async fn list_files(
        &self,
        path: &str,
        options: synapse_backup::ListOptions,
    ) -> Result<Vec<synapse_backup::FileInfo>, ContainerError> {
        self.0.list_files(path, options).await
    }
    async fn remove_path(&self, path: &str, recursive: bool) -> Result<(), ContainerError> {
        self.0.remove_path(path, recursive).await
    }
    async fn make_dir(
        &self,
        path: &str,
        options: synapse_backup::MakeDirOptions,
    ) -> Result<(), ContainerError> {
        self.0.make_dir(path, options).await
    }
    async fn exists(&self, path: &str) -> Result<bool, ContainerError> {
        self.0.exists(path).await
    }
    async fn start(&self, services: &[String]) -> Result<(), ContainerError> {
        self.0.start(services).await
    }
    async fn stop(&self, services: &[String]) -> Result<(), ContainerError> {
        self.0.stop(services).await
    }
    async fn is_running(&self, service: &str) -> Result<bool, ContainerError> {
        self.0.is_running(service).await
    }
}

#[tokio::test]
async fn a_forwarding_container_works_with_the_reexported_attribute() {
    let backups = Backups::new(
        Logged(workload_without_config()),
        unreachable_bucket(),
        Layout::default(),
    )
    .unwrap();
    let e = backups
        .create("a passphrase", &Default::default())
        .await
        .unwrap_err();
    assert!(is_missing_config(&e), "{e}");
}

const HOMESERVER_YAML: &str = "server_name: example.test\nmedia_store_path: /data/media_store\n\
    database:\n  name: sqlite3\n  args:\n    database: /data/homeserver.db\n";

/// A workload whose `homeserver.yaml` reads (through `workdir.sh read`, as the workload
/// user) and where every other command fails: an operation that gets past its bucket
/// requests stops at the first thing it asks of the workload.
fn workload_with_config() -> MockContainer {
    let mut mock = MockContainer::new();
    mock.expect_exists().returning(|_| Ok(false));
    mock.expect_list_files().returning(|_, _| Ok(Vec::new()));
    mock.expect_exec().returning(|argv, _| {
        if argv.get(4).map(String::as_str) == Some("read")
            && argv.get(5).is_some_and(|p| p.ends_with("homeserver.yaml"))
        {
            return Ok(synapse_backup::ExecOutput {
                exit_code: 0,
                stdout: HOMESERVER_YAML.as_bytes().to_vec(),
                stderr: Vec::new(),
            });
        }
        Err(ContainerError::ExitedNonZero {
            command: argv[0].clone(),
            exit_code: 97,
            stderr: "the workload is a mock".into(),
        })
    });
    mock
}

/// Restore, verify and extract through a handle over a `MemoryStore` send their bucket
/// requests (the lock, the HEADs, the manifest) to the store: the parameters' endpoint
/// has no server, so a request to it would fail with an S3 error. Before, they made
/// their own `S3Client`, and restore failed with "connection refused" on its lock.
#[tokio::test]
async fn restore_verify_and_extract_ask_only_the_handles_store() {
    let store = MemoryStore::new(PATH);
    let id = BackupId::from_time(store.now());
    synapse_backup::testing::put_backup(&store, &id, BackupStatus::Complete, b"ciphertext")
        .await
        .unwrap();
    let backups = Backups::with_store(
        workload_with_config(),
        unreachable_bucket(),
        Layout::default(),
        store.clone(),
    )
    .unwrap();

    // restore's decision path: preconditions, the lock, the backup located in the store;
    // then it needs the workload (its work dir), which the mock refuses.
    let e = backups
        .restore("a passphrase", &id, &Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            BackupError::Container(ContainerError::ExitedNonZero { exit_code: 97, .. })
        ),
        "{e:?}"
    );
    assert!(
        store.keys().iter().all(|k| !k.contains(".synapse-backup.")),
        "the lock is released: {:?}",
        store.keys()
    );

    // verify and extract locate the backup in the store, then need the workload.
    let e = backups
        .verify("a passphrase", &id, &VerifyOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(&e, BackupError::Container(_)), "{e:?}");
    let target = synapse_backup::ExtractTarget::new("/tmp/extracted");
    let e = backups
        .extract("a passphrase", &id, &target, &Default::default())
        .await
        .unwrap_err();
    assert!(matches!(&e, BackupError::Container(_)), "{e:?}");

    // A backup the store does not have: NotFound naming the id, from each operation.
    let missing = BackupId::from_time(store.now() - chrono::Duration::days(1));
    let named =
        |e: &BackupError| matches!(e, BackupError::NotFound { id } if *id == missing.to_string());
    let e = backups
        .restore("a passphrase", &missing, &Default::default())
        .await
        .unwrap_err();
    assert!(named(&e), "{e:?}");
    assert!(e.to_string().contains(missing.as_str()), "{e}");
    let e = backups
        .verify("a passphrase", &missing, &VerifyOptions::default())
        .await
        .unwrap_err();
    assert!(named(&e), "{e:?}");
    let e = backups
        .extract("a passphrase", &missing, &target, &Default::default())
        .await
        .unwrap_err();
    assert!(named(&e), "{e:?}");
    assert_eq!(backups.status(&missing).await.unwrap(), None);
    assert!(store.keys().iter().all(|k| !k.contains(".synapse-backup.")));
}

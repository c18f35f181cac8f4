//! A charm action's create through `Backups::with_store` over a `MemoryStore`: every
//! bucket request of the run (the passphrase check's listing, the lock, the HEADs, the
//! clean-up) goes to the store, so a unit test needs no S3 server. The workload is real
//! (bash, tar, gpg); its upload goes either to an endpoint nothing listens on (the real
//! aws CLI) or, through a stand-in aws CLI, into the store as the real upload would.

use crate::support::synapse_tree;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use synapse_backup::testing::MemoryStore;
use synapse_backup::{
    BackupError, BackupStatus, Backups, Container, ContainerError, CreateOptions, Layout,
    LocalContainer, ObjectStore, S3Parameters, Stage,
};
use synapse_tree::{SynapseTree, TreeSpec};

const PATH: &str = "synapse/backups";

/// Fails (never skips) with an install hint when the aws CLI is missing.
fn aws() -> String {
    let out = Command::new("bash")
        .args(["-c", "command -v aws"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "aws is not on PATH: run the tests through ./scripts/test (or `source scripts/tools.sh`), which installs the aws CLI, or `pip install awscli`"
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Parameters of a bucket whose endpoint refuses every connection.
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

fn layout_for(root: &Path) -> Layout {
    Layout::default()
        .root(root.to_string_lossy().into_owned())
        .user(None)
        .group(None)
        .service(None)
        .bash("bash")
        .aws(aws())
}

/// A create whose pipeline fails at the upload takes and releases its lock in the
/// handle's store and leaves no manifest, no data object and no lock there; the error
/// names the upload stage (not a refused connection of a request the run itself made).
#[tokio::test]
async fn a_create_failing_at_its_upload_leaves_nothing_in_the_handles_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let _tree = SynapseTree::create(&root, &TreeSpec::default());
    let store = MemoryStore::new(PATH);
    let backups = Backups::with_store(
        LocalContainer::new(),
        unreachable_bucket(),
        layout_for(&root),
        store.clone(),
    )
    .unwrap();
    let e = backups
        .create("correct horse battery staple", &CreateOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            BackupError::StageFailed {
                stage: Stage::Upload,
                ..
            }
        ),
        "{e}"
    );
    assert!(store.keys().is_empty(), "{:?}", store.keys());
    assert!(
        store.list_objects().await.unwrap().is_empty(),
        "the store holds objects after a failed create"
    );
    assert!(
        store.list_multipart_uploads(PATH).await.unwrap().is_empty(),
        "a multipart upload was left"
    );
}

/// The workload on this host, whose (stand-in) aws CLI's upload lands in `store` when
/// the exec that ran it returns, as the real one lands in the bucket.
struct UploadsToStore {
    inner: LocalContainer,
    dir: PathBuf,
    store: MemoryStore,
}

impl UploadsToStore {
    async fn deliver(&self) {
        let body_file = self.dir.join("upload.body");
        let Ok(body) = std::fs::read(&body_file) else {
            return;
        };
        let url = std::fs::read_to_string(self.dir.join("upload.url")).unwrap();
        let meta = std::fs::read_to_string(self.dir.join("upload.meta")).unwrap();
        let key = url
            .strip_prefix("s3://synapse-backups/")
            .unwrap_or_else(|| panic!("upload to {url:?}"));
        let metadata: HashMap<String, String> = serde_json::from_str(&meta).unwrap();
        self.store
            .put_object(key, body, "application/octet-stream", &metadata)
            .await
            .unwrap();
        std::fs::remove_file(body_file).unwrap();
    }
}

#[synapse_backup::async_trait]
impl Container for UploadsToStore {
    async fn exec(
        &self,
        command: &[String],
        options: synapse_backup::ExecOptions,
    ) -> Result<synapse_backup::ExecOutput, ContainerError> {
        let result = self.inner.exec(command, options).await;
        self.deliver().await;
        result
    }
    async fn push(
        &self,
        path: &str,
        content: &[u8],
        options: synapse_backup::PushOptions,
    ) -> Result<(), ContainerError> {
        self.inner.push(path, content, options).await
    }
    async fn pull(&self, path: &str) -> Result<Vec<u8>, ContainerError> {
        self.inner.pull(path).await
    }
    async fn list_files(
        &self,
        path: &str,
        options: synapse_backup::ListOptions,
    ) -> Result<Vec<synapse_backup::FileInfo>, ContainerError> {
        self.inner.list_files(path, options).await
    }
    async fn remove_path(&self, path: &str, recursive: bool) -> Result<(), ContainerError> {
        self.inner.remove_path(path, recursive).await
    }
    async fn make_dir(
        &self,
        path: &str,
        options: synapse_backup::MakeDirOptions,
    ) -> Result<(), ContainerError> {
        self.inner.make_dir(path, options).await
    }
    async fn exists(&self, path: &str) -> Result<bool, ContainerError> {
        self.inner.exists(path).await
    }
    async fn start(&self, services: &[String]) -> Result<(), ContainerError> {
        self.inner.start(services).await
    }
    async fn stop(&self, services: &[String]) -> Result<(), ContainerError> {
        self.inner.stop(services).await
    }
    async fn is_running(&self, service: &str) -> Result<bool, ContainerError> {
        self.inner.is_running(service).await
    }
}

/// A create whose upload lands in the handle's store lists there as complete, with its
/// manifest, and leaves no lock; nothing listens at the parameters' endpoint.
#[tokio::test]
async fn a_create_into_the_handles_store_lists_as_complete() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let _tree = SynapseTree::create(&root, &TreeSpec::default());
    let tools = dir.path().join("tools");
    std::fs::create_dir(&tools).unwrap();
    let fake_aws = tools.join("aws");
    std::fs::write(
        &fake_aws,
        include_str!("../../support/scripts/fake_aws_upload.sh"),
    )
    .unwrap();
    std::fs::set_permissions(&fake_aws, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = MemoryStore::new(PATH);
    let workload = UploadsToStore {
        inner: LocalContainer::new(),
        dir: tools.clone(),
        store: store.clone(),
    };
    let layout = layout_for(&root).aws(fake_aws.to_string_lossy().into_owned());
    let backups =
        Backups::with_store(workload, unreachable_bucket(), layout, store.clone()).unwrap();
    let report = backups
        .create("correct horse battery staple", &CreateOptions::default())
        .await
        .unwrap();
    let listed = backups.list().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, report.id);
    assert_eq!(listed[0].status, BackupStatus::Complete);
    let manifest = backups.read_manifest(&report.id).await.unwrap();
    assert_eq!(manifest.ciphertext_bytes, report.manifest.ciphertext_bytes);
    assert!(
        store.keys().iter().all(|k| !k.contains(".synapse-backup.")),
        "a lock was left: {:?}",
        store.keys()
    );
}

/// Parameters whose endpoint nothing serves, for the fake workload's tests (any request
/// to them fails to connect).
fn fake_bucket() -> S3Parameters {
    unreachable_bucket()
}

/// The crate's scripted workload: a create runs with no tool and no server, its upload
/// lands in the store with the pipeline's checksum and length, and it lists as complete
/// with what the fake archived; no lock and no work dir are left.
#[tokio::test]
async fn a_create_on_the_fake_workload_lists_as_complete() {
    use synapse_backup::testing::{FAKE_CIPHERTEXT_HEADER, FakeWorkload};
    let store = MemoryStore::new(PATH);
    let backups = Backups::with_store(
        FakeWorkload::synapse(store.clone()),
        fake_bucket(),
        Layout::default(),
        store.clone(),
    )
    .unwrap();
    let report = backups
        .create("correct horse battery staple", &CreateOptions::default())
        .await
        .unwrap();
    let listed = backups.list().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (&listed[0].id, listed[0].status),
        (&report.id, BackupStatus::Complete)
    );
    let manifest = backups.read_manifest(&report.id).await.unwrap();
    let mut files: Vec<_> = manifest
        .files
        .iter()
        .filter(|f| f.kind == synapse_backup::EntryKind::File)
        .map(|f| String::from_utf8_lossy(f.path.as_bytes()).into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "data/example.test.signing.key",
            "data/homeserver.db",
            "data/media_store/local_content/ab/cd/efghijklmnop",
        ]
    );
    let key = store.object_key(report.id.as_str());
    let object = store.get_object(&key, 1 << 20).await.unwrap();
    assert!(object.starts_with(FAKE_CIPHERTEXT_HEADER));
    assert_eq!(manifest.ciphertext_bytes, object.len() as u64);
    assert_eq!(
        backups
            .store()
            .head_object(&key)
            .await
            .unwrap()
            .metadata
            .get("created-by")
            .map(|v| v.starts_with("synapse-backup/")),
        Some(true),
        "the upload carries the pipeline's metadata"
    );
    assert!(store.keys().iter().all(|k| !k.contains(".synapse-backup.")));
    let workload = backups.container();
    assert_eq!(workload.scripts_run(), ["prepare", "backup"]);
    assert!(
        workload
            .paths()
            .iter()
            .all(|p| !p.contains(".synapse-backup-")),
        "a work dir was left: {:?}",
        workload.paths()
    );
}

/// A pipeline failing at any stage leaves no manifest, no data object and no lock, and
/// the error names the stage; the next create (its passphrase check skipped: the fake
/// reads no backup back) succeeds.
#[tokio::test]
async fn a_failing_pipeline_on_the_fake_workload_leaves_no_manifest_and_no_lock() {
    use synapse_backup::testing::FakeWorkload;
    let store = MemoryStore::new(PATH);
    let backups = Backups::with_store(
        FakeWorkload::synapse(store.clone()),
        fake_bucket(),
        Layout::default(),
        store.clone(),
    )
    .unwrap();
    for stage in [Stage::Tar, Stage::Gpg, Stage::Check, Stage::Upload] {
        backups.container().fail_at(Some(stage));
        let e = backups
            .create("correct horse battery staple", &CreateOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, BackupError::StageFailed { stage: s, .. } if *s == stage),
            "{stage:?}: {e}"
        );
        assert!(store.keys().is_empty(), "{stage:?}: {:?}", store.keys());
        assert!(backups.list().await.unwrap().is_empty());
    }
    backups.container().fail_at(None);
    backups
        .create("correct horse battery staple", &CreateOptions::default())
        .await
        .unwrap();
    assert_eq!(
        backups.list().await.unwrap()[0].status,
        BackupStatus::Complete
    );
}

/// restore's decision path on the fake workload: a missing backup is `NotFound` naming
/// it; an existing one passes the local checks, the lock and the bucket's answers and
/// stops at its download, releasing the lock.
#[tokio::test]
async fn restore_on_the_fake_workload_stops_at_its_download() {
    use synapse_backup::testing::FakeWorkload;
    let store = MemoryStore::new(PATH);
    let backups = Backups::with_store(
        FakeWorkload::synapse(store.clone()),
        fake_bucket(),
        Layout::default(),
        store.clone(),
    )
    .unwrap();
    let id = backups
        .create("correct horse battery staple", &CreateOptions::default())
        .await
        .unwrap()
        .id;
    let missing = synapse_backup::BackupId::from_time(store.now() - chrono::Duration::days(1));
    let e = backups
        .restore(
            "correct horse battery staple",
            &missing,
            &Default::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, BackupError::NotFound { id } if *id == missing.to_string()),
        "{e}"
    );
    let e = backups
        .restore("correct horse battery staple", &id, &Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            BackupError::StageFailed {
                stage: Stage::Download,
                ..
            }
        ),
        "{e}"
    );
    assert!(store.keys().iter().all(|k| !k.contains(".synapse-backup.")));
    assert_eq!(
        backups.container().scripts_run(),
        ["prepare", "backup", "fetch"],
        "the restore stopped at its download: nothing was swapped"
    );
    assert!(
        backups
            .container()
            .paths()
            .iter()
            .all(|p| !p.contains(".synapse-backup-")),
        "a work dir was left: {:?}",
        backups.container().paths()
    );
    assert!(backups.container().is_running("synapse").await.unwrap());
}

//! A charm action's create through `Backups::with_store` over a `MemoryStore`: every
//! bucket request of the run (the passphrase check's listing, the lock, the HEADs, the
//! clean-up) goes to the store, so a unit test needs no S3 server. The workload is real
//! (bash, tar, gpg); its upload goes either to an endpoint nothing listens on (the real
//! aws CLI) or, through a stand-in aws CLI, into the store as the real upload would.

#[path = "support/synapse_tree.rs"]
mod synapse_tree;

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
        include_str!("support/scripts/fake_aws_upload.sh"),
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

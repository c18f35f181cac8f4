//! A charm action's create through `Backups::with_store` over a `MemoryStore`: every
//! bucket request of the run (the passphrase check's listing, the lock, the HEADs, the
//! clean-up) goes to the store, so a unit test needs no S3 server. The workload is real
//! (bash, tar, gpg, the aws CLI); its upload goes to an endpoint nothing listens on.

#[path = "support/synapse_tree.rs"]
mod synapse_tree;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use synapse_backup::testing::MemoryStore;
use synapse_backup::{
    BackupError, Backups, CreateOptions, Layout, LocalContainer, ObjectStore, S3Parameters, Stage,
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
        store.clone(),
        unreachable_bucket(),
        layout_for(&root),
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

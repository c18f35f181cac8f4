//! Server-side encryption and session tokens through the whole backup life cycle:
//! create (the aws CLI's upload, the SDK's manifest write), list (the catalog's HEADs),
//! verify and restore (the aws CLI's download), against the s3s test server whose
//! backend refuses a HEAD or GET without the PUT's SSE-C key (`support/sse_c.rs`).

use crate::support::{env, synapse_tree};

use std::fs;

use env::{Env, PASSPHRASE};
use synapse_backup::{
    BackupStatus, LocalContainer, RestoreOptions, S3Client, list_backups, restore_backup_with,
    verify_backup_with,
};
use synapse_tree::{TreeSpec, walk};

const CUSTOMER_KEY: &str = "kbdHqFF4TiFej05J2TfqXDRc4QcyvesAQYmfnQvOosY=";
const TOKEN: &str = "pipeline-session-token";

#[tokio::test(flavor = "multi_thread")]
async fn sse_c_backups_are_created_listed_verified_and_restored_with_the_key_only() {
    // Over 5 MiB of media: the upload is a multipart upload.
    let spec = TreeSpec {
        media_bytes: 7 << 20,
        ..TreeSpec::default()
    };
    let mut env = Env::new(&spec).await;
    env.params = env.params_with(&[
        (
            "attributes",
            &format!(
                "Cache-Control=no-store;X-Amz-Server-Side-Encryption-Customer-Key={CUSTOMER_KEY}"
            ),
        ),
        ("session-token", TOKEN),
    ]);
    let c = LocalContainer::new();
    let before = env.tree.backed_up_files();
    let id = env.create(&c).await.unwrap().id;

    let client = S3Client::new(&env.params).unwrap();
    let list = list_backups(&client).await.unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].status, BackupStatus::Complete, "{list:?}");
    verify_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &id,
        &env.layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap();

    // Every object request carried the customer key and the session token: the aws
    // CLI's upload (multipart) and download, the SDK's manifest PUT, HEADs and GETs.
    let seen = env.server.sse().seen();
    for operation in [
        "CreateMultipartUpload",
        "UploadPart",
        "PutObject",
        "HeadObject",
        "GetObject",
    ] {
        assert!(
            seen.iter().any(|r| r.operation == operation),
            "no {operation}: {seen:?}"
        );
    }
    for request in &seen {
        if request.operation == "DeleteObject" {
            continue;
        }
        assert!(
            request.headers.contains(&(
                "x-amz-server-side-encryption-customer-key".into(),
                CUSTOMER_KEY.into()
            )),
            "{request:?}"
        );
        assert!(
            request
                .headers
                .contains(&("x-amz-security-token".into(), TOKEN.into())),
            "{request:?}"
        );
    }

    // Without the key nothing can be read: verify fails.
    let without = env.params_with(&[]);
    let e = verify_backup_with(
        &c,
        &without,
        PASSPHRASE,
        &id,
        &env.layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(!e.to_string().contains(CUSTOMER_KEY), "{e}");

    // Restore with the key, after changing the live media.
    let media = walk(&env.tree.media.join("local_content"))[0].clone();
    fs::write(&media, b"changed").unwrap();
    restore_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &id,
        &env.layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(env.tree.backed_up_files(), before, "restored byte for byte");
    assert!(
        env.work_dirs_left().is_empty(),
        "work dirs (and the key file in them) left: {:?}",
        env.work_dirs_left()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_kms_headers_are_sent_on_writes_and_never_on_reads() {
    let mut env = Env::new(&TreeSpec::default()).await;
    env.params = env.params_with(&[(
            "attributes",
            r#"["X-Amz-Server-Side-Encryption=aws:kms", "X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id=alias/synapse"]"#,
        )],
    );
    let c = LocalContainer::new();
    let id = env.create(&c).await.unwrap().id;
    verify_backup_with(
        &c,
        &env.params,
        PASSPHRASE,
        &id,
        &env.layout,
        &RestoreOptions::default(),
    )
    .await
    .unwrap();
    let seen = env.server.sse().seen();
    let writes: Vec<_> = seen
        .iter()
        .filter(|r| matches!(r.operation, "PutObject" | "CreateMultipartUpload"))
        .collect();
    // The data object (aws CLI) and the manifest (SDK).
    assert!(writes.len() >= 2, "{seen:?}");
    for request in writes {
        assert!(
            request
                .headers
                .contains(&("x-amz-server-side-encryption".into(), "aws:kms".into())),
            "{request:?}"
        );
        assert!(
            request.headers.contains(&(
                "x-amz-server-side-encryption-aws-kms-key-id".into(),
                "alias/synapse".into()
            )),
            "{request:?}"
        );
    }
    let reads: Vec<_> = seen
        .iter()
        .filter(|r| matches!(r.operation, "HeadObject" | "GetObject"))
        .collect();
    assert!(!reads.is_empty());
    for request in reads {
        assert!(request.headers.is_empty(), "{request:?}");
    }
}

//! Retention: 12 backups with faked ages, policy combinations and dry runs, against a
//! real S3 server.

#[path = "support/env.rs"]
mod env;
#[path = "support/s3_server.rs"]
mod s3_server;
#[path = "support/synapse_tree.rs"]
mod synapse_tree;

use std::collections::HashMap;

use chrono::{Duration, Utc};
use env::Env;
use synapse_backup::{
    BackupId, BackupStatus, LocalContainer, RetentionPolicy, S3Client, S3Parameters, list_backups,
    prune_backups,
};
use synapse_tree::TreeSpec;

/// One real backup (newest) and 11 fabricated ones aged 10, 20, … days: complete ones
/// (data tagged as ours + manifest), one legacy (untagged, no manifest) and one
/// incomplete (tagged, no manifest).
async fn twelve_backups(env: &Env) -> (S3Client, Vec<BackupId>) {
    let c = LocalContainer::new();
    let report = env.create(&c).await.unwrap();
    let client = S3Client::new(&env.params).unwrap();
    let ours = HashMap::from([("created-by".to_string(), "synapse-backup/test".to_string())]);
    let mut ids = vec![report.id.clone()];
    for i in 1..12i64 {
        let when = Utc::now() - Duration::days(i * 10);
        let id = BackupId::from_time(when);
        let key = client.object_key(id.as_str());
        let tagged = if i == 5 { HashMap::new() } else { ours.clone() };
        client
            .put_object(&key, b"data".to_vec(), "application/octet-stream", &tagged)
            .await
            .unwrap();
        if i != 5 && i != 7 {
            let mut m = report.manifest.clone();
            m.backup_id = id.clone();
            m.created = when;
            client
                .put_object(
                    &format!("{key}.manifest.json"),
                    m.to_json(),
                    "application/json",
                    &ours,
                )
                .await
                .unwrap();
        }
        ids.push(id);
    }
    (client, ids)
}

fn ages(list: &[synapse_backup::BackupInfo]) -> Vec<i64> {
    list.iter()
        .map(|b| (Utc::now() - b.id.created()).num_days())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_policies_and_dry_run() {
    let env = Env::new(&TreeSpec {
        media_files: 2,
        media_bytes: 1024,
        ..TreeSpec::default()
    })
    .await;
    let (client, _) = twelve_backups(&env).await;
    let all = list_backups(&client).await.unwrap();
    assert_eq!(all.len(), 12);
    assert_eq!(
        ages(&all),
        [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110]
    );
    assert_eq!(all[5].status, BackupStatus::Legacy);
    assert_eq!(all[7].status, BackupStatus::Incomplete);

    // Dry run: reports, deletes nothing.
    let dry = RetentionPolicy {
        older_than_days: Some(35),
        dry_run: true,
        ..RetentionPolicy::default()
    };
    let report = prune_backups(&client, &dry).await.unwrap();
    assert_eq!(ages(&report.deleted), [40, 50, 60, 70, 80, 90, 100, 110]);
    assert!(report.dry_run);
    assert_eq!(list_backups(&client).await.unwrap().len(), 12);

    // keep_last protects the newest N restorable backups even when old.
    let p = RetentionPolicy {
        older_than_days: Some(35),
        keep_last: Some(6),
        ..RetentionPolicy::default()
    };
    let report = prune_backups(&client, &p).await.unwrap();
    // Restorable, newest first: 0 10 20 30 40 50(legacy) 60 80 90 100 110; the first 6
    // are kept; the incomplete one (70 days) is past the grace period and goes.
    assert_eq!(ages(&report.deleted), [60, 70, 80, 90, 100, 110]);
    assert_eq!(
        ages(&list_backups(&client).await.unwrap()),
        [0, 10, 20, 30, 40, 50]
    );

    // The relation's delete-older-than-days; the newest complete backup always stays.
    let mut data = env.server.relation_data(&env.bucket);
    data.insert("path".into(), "synapse/backups".into());
    data.insert("delete-older-than-days".into(), "1".into());
    let params = S3Parameters::from_relation_data(&data).unwrap();
    let p = RetentionPolicy::from_parameters(&params);
    assert_eq!(p.older_than_days, Some(1));
    prune_backups(&client, &p).await.unwrap();
    let left = list_backups(&client).await.unwrap();
    assert_eq!(ages(&left), [0]);
    assert_eq!(left[0].status, BackupStatus::Complete);
    let p = RetentionPolicy {
        older_than_days: Some(1),
        keep_last: Some(0),
        ..RetentionPolicy::default()
    };
    prune_backups(&client, &p).await.unwrap();
    assert_eq!(
        list_backups(&client).await.unwrap().len(),
        1,
        "the newest complete backup is never deleted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_pages_through_thousands_and_ignores_other_keys() {
    let env = Env::new(&TreeSpec {
        media_files: 1,
        media_bytes: 16,
        ..TreeSpec::default()
    })
    .await;
    let client = S3Client::new(&env.params).unwrap();
    let ours = HashMap::from([("created-by".to_string(), "synapse-backup/test".to_string())]);
    let start = Utc::now() - Duration::days(400);
    let mut tasks = Vec::new();
    for i in 0..1100i64 {
        let client = client.clone();
        let ours = ours.clone();
        tasks.push(tokio::spawn(async move {
            let id = BackupId::from_time(start + Duration::minutes(i));
            let key = client.object_key(id.as_str());
            client
                .put_object(&key, vec![1], "application/octet-stream", &ours)
                .await
                .unwrap();
            client
                .put_object(
                    &format!("{key}.manifest.json"),
                    b"{}".to_vec(),
                    "application/json",
                    &ours,
                )
                .await
                .unwrap();
        }));
        if tasks.len() >= 32 {
            for t in tasks.drain(..) {
                t.await.unwrap();
            }
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    for other in [
        "notes.txt",
        "backup-nope",
        "sub/backup-20260101000000000000",
    ] {
        client
            .put_object(
                &client.object_key(other),
                vec![0],
                "text/plain",
                &HashMap::new(),
            )
            .await
            .unwrap();
    }
    let list = list_backups(&client).await.unwrap();
    assert_eq!(list.len(), 1100);
    assert!(list.iter().all(|b| b.status == BackupStatus::Complete));
    assert!(list.windows(2).all(|w| w[0].id > w[1].id), "newest first");
}

/// Three backups made by the Python charm (untagged data, no manifest), all older than
/// delete-older-than-days: prune keeps the newest, whatever the policy.
#[tokio::test(flavor = "multi_thread")]
async fn prune_on_a_legacy_only_bucket_keeps_the_newest() {
    let env = Env::new(&TreeSpec {
        media_files: 1,
        media_bytes: 16,
        ..TreeSpec::default()
    })
    .await;
    let client = S3Client::new(&env.params).unwrap();
    let mut ids = Vec::new();
    for days in [40i64, 50, 60] {
        let id = BackupId::from_time(Utc::now() - Duration::days(days));
        client
            .put_object(
                &client.object_key(id.as_str()),
                b"gpg data".to_vec(),
                "application/octet-stream",
                &HashMap::new(),
            )
            .await
            .unwrap();
        ids.push(id);
    }
    let all = list_backups(&client).await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|b| b.status == BackupStatus::Legacy));

    let mut data = env.server.relation_data(&env.bucket);
    data.insert("path".into(), "synapse/backups".into());
    data.insert("delete-older-than-days".into(), "30".into());
    let params = S3Parameters::from_relation_data(&data).unwrap();
    let mut policy = RetentionPolicy::from_parameters(&params);
    // The dry run and the report name the backup kept by the rule.
    policy.dry_run = true;
    let dry = prune_backups(&client, &policy).await.unwrap();
    assert_eq!(dry.protected, vec![ids[0].clone()]);
    assert_eq!(dry.deleted.len(), 2);
    assert_eq!(list_backups(&client).await.unwrap().len(), 3);
    policy.dry_run = false;
    for keep_last in [None, Some(0)] {
        policy.keep_last = keep_last;
        let report = prune_backups(&client, &policy).await.unwrap();
        assert_eq!(report.protected, vec![ids[0].clone()]);
        assert!(report.kept.contains(&ids[0]));
        let left = list_backups(&client).await.unwrap();
        assert_eq!(
            left.iter().map(|b| b.id.clone()).collect::<Vec<_>>(),
            vec![ids[0].clone()],
            "the newest restorable backup must survive ({keep_last:?})"
        );
    }
}

//! Retention: 12 backups with faked ages, policy combinations and dry runs, against a
//! real S3 server. Ages are the server's: the fabricated objects' `LastModified` (file
//! times in the s3s-fs root) are set back, as a server would have stamped them.

use crate::support::{env, synapse_tree};

use std::collections::HashMap;
use std::time::SystemTime;

use chrono::{Duration, Utc};
use env::Env;
use synapse_backup::{
    BackupId, BackupStatus, LocalContainer, RetentionPolicy, S3Client, S3Parameters, list_backups,
    prune_backups,
};
use synapse_tree::TreeSpec;

/// Sets the server's `LastModified` of `key` (a file in the s3s-fs root) to `when`.
fn stamp(env: &Env, key: &str, when: chrono::DateTime<Utc>) {
    let file = std::fs::File::options()
        .write(true)
        .open(env.bucket_dir().join(key))
        .unwrap();
    file.set_modified(SystemTime::from(when)).unwrap();
}

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
        stamp(env, &key, when);
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
            stamp(env, &format!("{key}.manifest.json"), when);
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
    assert!(
        list.windows(2)
            .all(|w| w[0].last_modified >= w[1].last_modified),
        "newest first by the server's time"
    );
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
        let when = Utc::now() - Duration::days(days);
        let id = BackupId::from_time(when);
        client
            .put_object(
                &client.object_key(id.as_str()),
                b"gpg data".to_vec(),
                "application/octet-stream",
                &HashMap::new(),
            )
            .await
            .unwrap();
        stamp(&env, &client.object_key(id.as_str()), when);
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

/// A complete backup whose id and manifest name `named`, stored by the server at
/// `stored`: what a host with a wrong clock uploads.
async fn fabricate(
    env: &Env,
    client: &S3Client,
    template: &synapse_backup::Manifest,
    named: chrono::DateTime<Utc>,
    stored: chrono::DateTime<Utc>,
) -> BackupId {
    let ours = HashMap::from([("created-by".to_string(), "synapse-backup/test".to_string())]);
    let id = BackupId::from_time(named);
    let key = client.object_key(id.as_str());
    client
        .put_object(&key, b"data".to_vec(), "application/octet-stream", &ours)
        .await
        .unwrap();
    let mut m = template.clone();
    m.backup_id = id.clone();
    m.created = named;
    let manifest_key = format!("{key}.manifest.json");
    client
        .put_object(&manifest_key, m.to_json(), "application/json", &ours)
        .await
        .unwrap();
    stamp(env, &key, stored);
    stamp(env, &manifest_key, stored);
    id
}

/// A backup made yesterday by a host whose clock was a year ahead names a time in the
/// future: it must not list as the newest, and `keep_last 1` keeps today's real backup
/// and deletes it. (Ordered by id, it listed first and the prune deleted the real
/// newest backup.)
#[tokio::test(flavor = "multi_thread")]
async fn a_backup_named_a_year_ahead_does_not_become_the_newest() {
    let env = Env::new(&TreeSpec {
        media_files: 1,
        media_bytes: 16,
        ..TreeSpec::default()
    })
    .await;
    let real = env.create(&LocalContainer::new()).await.unwrap();
    let client = S3Client::new(&env.params).unwrap();
    let yesterday = Utc::now() - Duration::days(1);
    let skewed = fabricate(
        &env,
        &client,
        &real.manifest,
        yesterday + Duration::days(365),
        yesterday,
    )
    .await;
    let list = list_backups(&client).await.unwrap();
    assert_eq!(list[0].id, real.id, "newest by the server's time");
    assert!(list[1].id_time_disagrees(), "{:?}", list[1]);
    assert!(!list[0].id_time_disagrees());

    let policy = RetentionPolicy {
        keep_last: Some(1),
        ..RetentionPolicy::default()
    };
    let report = prune_backups(&client, &policy).await.unwrap();
    let deleted: Vec<_> = report.deleted.iter().map(|b| b.id.clone()).collect();
    assert_eq!(deleted, std::slice::from_ref(&skewed));
    assert!(
        report
            .plan
            .warnings
            .iter()
            .any(|w| w.contains(skewed.as_str())),
        "the disagreement is reported: {:?}",
        report.plan.warnings
    );
    let left: Vec<_> = list_backups(&client)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(left, [real.id]);
}

/// Backups stored today by a host whose clock was 100 days late name old times: an
/// age limit of 30 days keeps them all, for the server stored them today. (Aged by
/// their ids, all but the protected newest went.)
#[tokio::test(flavor = "multi_thread")]
async fn backups_are_aged_by_the_server_time_not_the_time_in_their_id() {
    let env = Env::new(&TreeSpec {
        media_files: 1,
        media_bytes: 16,
        ..TreeSpec::default()
    })
    .await;
    let real = env.create(&LocalContainer::new()).await.unwrap();
    let client = S3Client::new(&env.params).unwrap();
    let now = Utc::now();
    let mut late = Vec::new();
    for hours in [2i64, 3, 4] {
        let stored = now - Duration::hours(hours);
        late.push(
            fabricate(
                &env,
                &client,
                &real.manifest,
                stored - Duration::days(100),
                stored,
            )
            .await,
        );
    }
    let policy = RetentionPolicy {
        older_than_days: Some(30),
        ..RetentionPolicy::default()
    };
    let report = prune_backups(&client, &policy).await.unwrap();
    assert!(report.deleted.is_empty(), "{:?}", report.deleted);
    assert_eq!(list_backups(&client).await.unwrap().len(), 4);
    assert_eq!(report.plan.warnings.len(), 3, "{:?}", report.plan.warnings);
}

//! A create refuses a passphrase that does not open the newest backup (unless the change
//! is intended), and a prune given a passphrase protects the newest backup it opens:
//! real bash, gpg, tar, the aws CLI and an S3 server.

#[cfg(feature = "cli")]
mod cli;

use crate::support::{env, synapse_tree};

use env::{Env, PASSPHRASE};
use synapse_backup::{
    BackupError, BackupOptions, Backups, LocalContainer, PruneAction, PruneReason, RetentionPolicy,
    S3Client, list_backups,
};
use synapse_tree::TreeSpec;

async fn small_env() -> Env {
    Env::new(&TreeSpec {
        media_files: 1,
        media_bytes: 16,
        ..TreeSpec::default()
    })
    .await
}

fn handle(env: &Env) -> Backups<LocalContainer> {
    Backups::new(
        LocalContainer::new(),
        env.params.clone(),
        env.layout.clone(),
    )
    .unwrap()
}

/// A mistyped passphrase is refused before anything is uploaded; the same passphrase
/// passes; a new one passes only when said to be intended, and then it is the one
/// later creates are checked against. (Before, the mistyped create exited 0 and made
/// a backup nobody could restore with the real passphrase.)
#[tokio::test(flavor = "multi_thread")]
async fn create_refuses_a_passphrase_that_does_not_open_the_newest_backup() {
    let env = small_env().await;
    let backups = handle(&env);
    let first = backups
        .create(PASSPHRASE, &BackupOptions::default())
        .await
        .expect("the first backup sets the passphrase");

    let e = backups
        .create("correct horse battery stapel", &BackupOptions::default())
        .await
        .unwrap_err();
    match &e {
        BackupError::PassphraseMismatch { id } => assert_eq!(id, first.id.as_str()),
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("--new-passphrase"), "{e}");
    let client = S3Client::new(&env.params).unwrap();
    assert_eq!(
        list_backups(&client).await.unwrap().len(),
        1,
        "nothing uploaded"
    );

    backups
        .create(PASSPHRASE, &BackupOptions::default())
        .await
        .expect("the right passphrase");

    let rotated = backups
        .create(
            "a new passphrase",
            &BackupOptions::default().new_passphrase(true),
        )
        .await
        .expect("an intended change");
    backups
        .create("a new passphrase", &BackupOptions::default())
        .await
        .expect("later creates check against the new passphrase");
    let e = backups
        .create(PASSPHRASE, &BackupOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, BackupError::PassphraseMismatch { id } if id != rotated.id.as_str()),
        "{e}"
    );
    assert_eq!(list_backups(&client).await.unwrap().len(), 4);
}

/// A prune given a passphrase keeps the newest backup it opens, even when the policy
/// would delete it; without one, the same plan deletes it. A passphrase never makes a
/// prune delete anything.
#[tokio::test(flavor = "multi_thread")]
async fn a_prune_with_a_passphrase_keeps_the_newest_backup_it_opens() {
    let env = small_env().await;
    let backups = handle(&env);
    let old = backups
        .create(PASSPHRASE, &BackupOptions::default())
        .await
        .unwrap();
    // A backup made with another passphrase on purpose, now the newest.
    let other = backups
        .create(
            "another passphrase",
            &BackupOptions::default().new_passphrase(true),
        )
        .await
        .unwrap();
    let policy = RetentionPolicy::default().keep_last(Some(1));

    let plain = backups.prune_plan(&policy).await.unwrap();
    assert_eq!(plain.get(&old.id).unwrap().action, PruneAction::Delete);
    let with = backups
        .prune_plan_opening(&policy, PASSPHRASE)
        .await
        .unwrap();
    let kept = with.get(&old.id).unwrap();
    assert_eq!(kept.action, PruneAction::Keep);
    assert!(
        kept.reasons.contains(&PruneReason::OpensWithPassphrase),
        "{kept:?}"
    );
    assert_eq!(with.get(&other.id).unwrap().action, PruneAction::Keep);

    let wrong = backups
        .prune_plan_opening(&policy, "no backup opens with this")
        .await
        .unwrap();
    assert_eq!(wrong, plain_with_same_clock(&plain, &wrong));

    let report = backups.prune(&with).await.unwrap();
    assert!(report.deleted.is_empty(), "{:?}", report.deleted);
    assert_eq!(backups.list().await.unwrap().len(), 2);
}

/// `plain` with `other`'s clock reading (the plans were made a moment apart).
fn plain_with_same_clock(
    plain: &synapse_backup::PrunePlan,
    other: &synapse_backup::PrunePlan,
) -> synapse_backup::PrunePlan {
    let mut p = plain.clone();
    p.now = other.now;
    for (b, o) in p.backups.iter_mut().zip(&other.backups) {
        b.age_seconds = o.age_seconds;
    }
    p
}

/// Cancelling a create while its passphrase check runs stops the check at once: its
/// process group is killed, its work dir is gone, and nothing is uploaded. (Before, the
/// check ran on until its own five-minute limit: a Ctrl-C there was not obeyed.)
#[tokio::test(flavor = "multi_thread")]
async fn cancel_during_the_passphrase_check_stops_it_and_cleans_up() {
    use std::time::Duration;

    let env = small_env().await;
    handle(&env)
        .create(PASSPHRASE, &BackupOptions::default())
        .await
        .expect("the first backup");
    // A gpg that, asked to decrypt (only the check does), records its work dir and pid,
    // then hangs.
    let seen = env.dir.path().join("check-seen");
    let layout = env.gpg_on_decrypt(
        &env.layout,
        "hanging-gpg",
        &format!(
            "echo \"$$ $SB_WORK\" >'{seen}.tmp'; mv '{seen}.tmp' '{seen}'; exec sleep 600",
            seen = seen.display()
        ),
    );
    let backups = Backups::new(LocalContainer::new(), env.params.clone(), layout).unwrap();

    let options = BackupOptions::default();
    let cancel = options.cancel.clone();
    let watcher = env::cancel_when_exists(&seen, cancel);
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        backups.create(PASSPHRASE, &options),
    )
    .await
    .expect("the create stopped when cancelled, not at the check's own time limit");
    watcher.await.unwrap();
    assert!(matches!(result, Err(BackupError::Cancelled)), "{result:?}");

    let seen = std::fs::read_to_string(&seen).unwrap();
    let (pid, work) = seen.trim().split_once(' ').unwrap();
    // Gone, or a zombie left to a parent that is gone too.
    let running = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit(") ")
                .next()
                .is_some_and(|s| !s.starts_with('Z'))
        })
    };
    for _ in 0..100 {
        if !running() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!running(), "the check's process {pid} was killed");
    assert!(
        !std::path::Path::new(work).exists(),
        "the check's work dir {work} was removed"
    );
    let client = S3Client::new(&env.params).unwrap();
    assert_eq!(
        list_backups(&client).await.unwrap().len(),
        1,
        "nothing uploaded"
    );
}

//! `extract_backup_with`: restore's fetch and checks into a directory of the
//! operator's choice, no swap. The target must be safe for what lands in it (the
//! signing key, the database), and a failed run leaves no dir it made.

use crate::support::{env, synapse_tree};

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use env::{Env, PASSPHRASE};
use synapse_backup::{BackupError, BackupId, LocalContainer, RestoreOptions};
use synapse_tree::TreeSpec;

async fn extract_into(
    env: &Env,
    c: &LocalContainer,
    id: &BackupId,
    passphrase: &str,
    dir: &Path,
) -> Result<synapse_backup::ExtractReport, BackupError> {
    synapse_backup::extract_backup_with(
        c,
        &env.params,
        passphrase,
        id,
        &env.layout,
        &synapse_backup::ExtractTarget::new(dir.to_string_lossy().into_owned()),
        &RestoreOptions::default(),
    )
    .await
}

fn refused_target(e: &BackupError) -> bool {
    matches!(e, BackupError::Config(c) if c.fields() == vec!["target"])
}

/// An extraction never places the signing key and the database where another local
/// user reads them: a target that user made (an empty 0777 dir), a root-owned one
/// others may write to, or one under a dir of theirs is refused, and nothing is put
/// in it.
#[tokio::test(flavor = "multi_thread")]
async fn an_extraction_refuses_a_target_another_user_owns_or_may_write() {
    let env = Env::new(&TreeSpec {
        media_files: 4,
        ..TreeSpec::default()
    })
    .await;
    let c = LocalContainer::new();
    let id = env.create(&c).await.unwrap().id;
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();

    let theirs = env.dir.path().join("made-by-nobody");
    fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    fs::set_permissions(&theirs, fs::Permissions::from_mode(0o777)).unwrap();
    let e = extract_into(&env, &c, &id, PASSPHRASE, &theirs)
        .await
        .unwrap_err();
    assert!(refused_target(&e), "{e}");
    assert!(e.to_string().contains("65534"), "{e}");
    assert_eq!(fs::read_dir(&theirs).unwrap().count(), 0);

    let open = env.dir.path().join("root-but-open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let e = extract_into(&env, &c, &id, PASSPHRASE, &open)
        .await
        .unwrap_err();
    assert!(refused_target(&e), "{e}");
    assert!(e.to_string().contains("writable by other users"), "{e}");
    assert_eq!(fs::read_dir(&open).unwrap().count(), 0);

    // Under a dir of theirs (they could move the target away and read it).
    let home = env.dir.path().join("nobody-home");
    fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let below = home.join("restore/here");
    let e = extract_into(&env, &c, &id, PASSPHRASE, &below)
        .await
        .unwrap_err();
    assert!(refused_target(&e), "{e}");
    assert!(!home.join("restore").exists());

    // A private dir of root's is fine.
    let mine = env.dir.path().join("mine/extracted");
    extract_into(&env, &c, &id, PASSPHRASE, &mine)
        .await
        .unwrap();
    assert!(mine.join("data/homeserver.db").exists());
}

/// A failed extraction (a wrong passphrase) leaves no empty dir it made behind; a dir
/// that existed before stays.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_extraction_removes_the_target_dirs_it_made() {
    let env = Env::new(&TreeSpec {
        media_files: 4,
        ..TreeSpec::default()
    })
    .await;
    let c = LocalContainer::new();
    let id = env.create(&c).await.unwrap().id;
    let made = env.dir.path().join("new");
    let e = extract_into(&env, &c, &id, "not the passphrase", &made.join("deeper"))
        .await
        .unwrap_err();
    assert!(matches!(e, BackupError::WrongPassphrase { .. }), "{e}");
    assert!(!made.exists(), "the dirs the run made are removed");

    let existing = env.dir.path().join("existing");
    fs::create_dir(&existing).unwrap();
    let e = extract_into(&env, &c, &id, "not the passphrase", &existing)
        .await
        .unwrap_err();
    assert!(matches!(e, BackupError::WrongPassphrase { .. }), "{e}");
    assert!(existing.is_dir(), "a dir that was there stays");
    assert_eq!(fs::read_dir(&existing).unwrap().count(), 0);
}

//! The free-space reserve: a restore never takes the last free space of the volume the
//! live homeserver writes to (`RestoreOptions::space_reserve_mib`).

use super::{backup, data_dir_on_tmpfs, leave_free, restore_err};
use crate::support::{env, synapse_tree};

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use env::{Env, PASSPHRASE, sh};
use synapse_backup::{
    BackupError, BackupId, LocalContainer, RestoreOptions, restore_backup_with, verify_backup_with,
};
use synapse_tree::{TreeSpec, files_under};

const MIB: u64 = 1 << 20;

/// The free bytes of the file system of `path`, as its user may use them.
fn free(path: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(path).unwrap();
    st.blocks_available() * st.fragment_size()
}

/// The least free space seen on `path`'s file system while it runs: sampled every
/// millisecond until dropped, read with [`Watch::least`].
struct Watch {
    stop: Arc<AtomicBool>,
    least: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn new(path: PathBuf) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let least = Arc::new(AtomicU64::new(u64::MAX));
        let (s, l) = (stop.clone(), least.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                // (Gone once a failed test has unmounted it.)
                if let Ok(st) = nix::sys::statvfs::statvfs(&path) {
                    l.fetch_min(
                        st.blocks_available() * st.fragment_size(),
                        Ordering::Relaxed,
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        Watch {
            stop,
            least,
            thread: Some(thread),
        }
    }

    fn least(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.least.load(Ordering::Relaxed)
    }
}

/// A legacy backup (the Python charm's `tar | gpg --symmetric`, gpg's default zlib)
/// whose 64 MiB media file is all zeros: the object is some 100 KiB, so the space check
/// before staging, which can only count the object for a backup without a manifest,
/// passes on a 48 MiB volume, and staging then grows past it. Before, it filled the
/// volume the live homeserver writes to ("no space left", free space 0 until the stage
/// was removed); now tar is stopped with most of the reserve (8 MiB) still free, the
/// restore says so, and live data and the volume are as they were.
#[tokio::test(flavor = "multi_thread")]
async fn a_legacy_backup_that_expands_stops_at_the_reserve() {
    let env = Env::new(&TreeSpec {
        media_files: 4,
        media_bytes: 1 << 20,
        ..TreeSpec::default()
    })
    .await;
    let c = LocalContainer::new();
    // The legacy backup's tree, apart from the live one: the live files and 40 MiB.
    let src = env.dir.path().join("legacy");
    let media = src.join("data/media_store/local_content/ab/cd");
    fs::create_dir_all(&media).unwrap();
    for name in ["example.test.signing.key", "homeserver.db"] {
        fs::copy(env.tree.data.join(name), src.join("data").join(name)).unwrap();
    }
    fs::write(media.join("efghijklmnop"), vec![0u8; 64 << 20]).unwrap();
    let id = BackupId::generate();
    let pass = env.dir.path().join("legacy-pass");
    fs::write(&pass, PASSPHRASE).unwrap();
    sh(
        r#"cd "$1"
           tar -c data | gpg --batch --no-symkey-cache --pinentry-mode loopback --passphrase-file "$2" --symmetric 2>/dev/null |
             aws s3 cp --only-show-errors --endpoint-url "$ENDPOINT" - "s3://$3/$4""#,
        &env,
        &[
            &src.to_string_lossy(),
            &pass.to_string_lossy(),
            &env.bucket,
            &format!("synapse/backups/{id}"),
        ],
    );
    let _unmount = data_dir_on_tmpfs(&env, "48m");
    let before = files_under(&env.tree.data);
    let free_before = free(&env.tree.data);
    assert!(free_before > 40 * MIB, "{free_before}");
    let watch = Watch::new(env.tree.data.clone());
    let e = restore_err(&env, &c, &id, 8).await;
    let least = watch.least();
    assert!(
        least >= 4 * MIB,
        "staging took the volume down to {least} bytes free, past the 8 MiB reserve: {e}"
    );
    assert!(
        matches!(&e, BackupError::SpaceReserve { reserve, available, needed, path }
            if *reserve == 8 * MIB && *available > 40 * MIB && *needed > *available - *reserve
                && path.ends_with("/data")),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("kept free for the live homeserver"),
        "{e}"
    );
    assert_eq!(files_under(&env.tree.data), before, "live data untouched");
    assert!(
        env.work_dirs_left().is_empty(),
        "{:?}",
        env.work_dirs_left()
    );
    assert!(
        free(&env.tree.data) + MIB >= free_before,
        "what was staged is removed"
    );
}

/// A backup (with its manifest) whose staging fits the volume but would leave less
/// than the reserve free is refused before anything is staged, with what it needs, what
/// is free and the reserve; before, it was restored and left the volume nearly full.
/// `space_reserve_mib(0)` restores it (no reserve), as does the default's 5 % of this
/// small volume.
#[tokio::test(flavor = "multi_thread")]
async fn a_restore_that_would_leave_less_than_the_reserve_is_refused_before_staging() {
    let env = Env::new(&TreeSpec {
        media_files: 16,
        media_bytes: 8 << 20,
        ..TreeSpec::default()
    })
    .await;
    let c = LocalContainer::new();
    let id = backup(&env, &c).await;
    let _unmount = data_dir_on_tmpfs(&env, "24m");
    let before = files_under(&env.tree.data);
    let free_before = free(&env.tree.data);
    let restore = |options: RestoreOptions| {
        let (env, c, id) = (&env, &c, &id);
        async move { restore_backup_with(c, &env.params, PASSPHRASE, id, &env.layout, &options).await }
    };
    let e = restore(RestoreOptions::default().space_reserve_mib(8))
        .await
        .unwrap_err();
    match &e {
        BackupError::SpaceReserve {
            path,
            needed,
            available,
            reserve,
        } => {
            assert!(path.ends_with("/data"), "{path}");
            assert_eq!(*reserve, 8 * MIB);
            assert!(*needed > 8 * MIB && *needed + *reserve > *available, "{e}");
            assert!(*needed <= *available, "it fits without the reserve: {e}");
            assert!(available.abs_diff(free_before) < MIB, "{e}");
        }
        other => panic!("not the reserve: {other:?}"),
    }
    assert_eq!(files_under(&env.tree.data), before, "live data untouched");
    assert!(
        env.work_dirs_left().is_empty(),
        "{:?}",
        env.work_dirs_left()
    );

    restore(RestoreOptions::default()).await.unwrap();
    restore(RestoreOptions::default().space_reserve_mib(0))
        .await
        .unwrap();
    assert!(
        env.work_dirs_left().is_empty(),
        "{:?}",
        env.work_dirs_left()
    );
}

/// Verify promises what restore will do: where the live tree is, it checks that the
/// restore's staging fits with the reserve still free (and stages the database alone
/// for its integrity check with the reserve free too). Before, a verify passed on a
/// volume where the restore would then be refused.
#[tokio::test(flavor = "multi_thread")]
async fn verify_counts_the_reserve_as_the_restore_will() {
    let env = Env::new(&TreeSpec {
        media_files: 2,
        db_rows: 4000,
        ..TreeSpec::default()
    })
    .await;
    let c = LocalContainer::new();
    let id = backup(&env, &c).await;
    let client = synapse_backup::S3Client::new(&env.params).unwrap();
    let plaintext = synapse_backup::read_manifest(&client, &id)
        .await
        .unwrap()
        .plaintext_bytes;
    let db = fs::metadata(env.tree.data.join("homeserver.db"))
        .unwrap()
        .len();
    // The live files, verify's staged database, the restore's staging (and an eighth)
    // and 2 MiB over: the volume resized once the live files are on it.
    let _unmount = data_dir_on_tmpfs(&env, "64m");
    leave_free(&env, db + plaintext + plaintext / 8 + (2 << 20));
    let options = |reserve: u32| RestoreOptions::default().space_reserve_mib(reserve);
    let verify = |options: RestoreOptions| {
        let (env, c, id) = (&env, &c, &id);
        async move { verify_backup_with(c, &env.params, PASSPHRASE, id, &env.layout, &options).await }
    };
    let e = verify(options(8)).await.unwrap_err();
    assert!(
        matches!(&e, BackupError::SpaceReserve { needed, reserve, available, .. }
            if *reserve == 8 * MIB && *needed >= plaintext && *needed <= *available),
        "{e:?}"
    );
    // The restore it promised would fail the same way.
    let r = restore_backup_with(&c, &env.params, PASSPHRASE, &id, &env.layout, &options(8))
        .await
        .unwrap_err();
    assert!(matches!(r, BackupError::SpaceReserve { .. }), "{r:?}");
    assert!(
        env.work_dirs_left().is_empty(),
        "{:?}",
        env.work_dirs_left()
    );
    verify(options(0)).await.unwrap();
    verify(RestoreOptions::default()).await.unwrap();
}

/// A media store of small files takes several times its bytes on disk (a 4 KiB block
/// for each file, one for each directory): the space check before staging counts the
/// manifest's entries in whole blocks. Before, it counted the archive's bytes (no less
/// than the object's size), which fitted here, staged, and filled the volume the live
/// homeserver writes to (0 bytes free, no reserve asked for) before tar failed; now the
/// restore is refused before anything is staged, naming what staging needs.
#[tokio::test(flavor = "multi_thread")]
async fn small_files_are_counted_in_whole_blocks_before_staging() {
    const FILES: u64 = 6000;
    let env = Env::new(&TreeSpec {
        media_files: FILES as usize,
        media_bytes: FILES * 200,
        ..TreeSpec::default()
    })
    .await;
    let c = LocalContainer::new();
    let id = backup(&env, &c).await;
    let client = synapse_backup::S3Client::new(&env.params).unwrap();
    let manifest = synapse_backup::read_manifest(&client, &id).await.unwrap();
    let bytes = manifest.plaintext_bytes.max(manifest.ciphertext_bytes);
    // The live files, then room for what the old rule asked (the bytes and an eighth)
    // and 4 MiB over, far less than staging the files takes.
    let _unmount = data_dir_on_tmpfs(&env, "256m");
    leave_free(&env, bytes + bytes / 8 + 4 * MIB);
    let before = files_under(&env.tree.data);
    let free_before = free(&env.tree.data);
    assert!(
        free_before < FILES * 4096,
        "{free_before} free: the files' blocks must not fit"
    );
    let watch = Watch::new(env.tree.data.clone());
    let e = restore_err(&env, &c, &id, 0).await;
    let least = watch.least();
    assert!(
        matches!(&e, BackupError::InsufficientSpace { needed, available, path }
            if *needed >= FILES * 4096 && available.abs_diff(free_before) < MIB
                && Path::new(path) == env.tree.data),
        "{e:?}"
    );
    assert!(
        least + MIB >= free_before,
        "staging took the volume down to {least} bytes free before it was refused: {e}"
    );
    assert_eq!(files_under(&env.tree.data), before, "live data untouched");
    assert!(
        env.work_dirs_left().is_empty(),
        "{:?}",
        env.work_dirs_left()
    );
}

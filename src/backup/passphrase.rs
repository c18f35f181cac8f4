//! What `create` checks before it takes the lock: the local preconditions (the
//! passphrase, the layout, the workload's `homeserver.yaml` and its database kind), then
//! that the passphrase opens the newest backup, so a mistyped passphrase never makes
//! backups that nobody can restore.
//!
//! The newest complete backup (or, on a bucket holding only legacy backups, the newest
//! of those) is the reference: its head is read (a ranged `GET` in the workload, see
//! `scripts/passcheck.sh`) and decrypted as far as it goes; the inner manifest is the
//! archive's first member, so a few KiB say whether the passphrase opens it. A change of
//! passphrase is made on purpose with [`BackupOptions::new_passphrase`]: the backup it
//! makes becomes the newest, so later creates check against the new passphrase.

use std::time::Duration;

use super::catalog::{self, BackupInfo, BackupStatus};
use super::decryption::{Untrusted, check_status};
use super::layout::{HomeserverConfig, Layout};
use super::manifest::{INNER_MANIFEST_MEMBER, InnerManifest};
use super::plan::{self, BackupId, BackupOptions, ScriptCall, WorkDir};
use super::run::Run;
use super::scripts::{PASSCHECK, WorkFile};
use super::work::{self, Outputs, WorkPlace};
use crate::container::Container;
use crate::error::{BackupError, ContainerError, Stage};
use crate::s3::S3Parameters;

/// How much of the object's head is read: the encryption packets and the inner
/// manifest fit many times over.
const HEAD_BYTES: u64 = 1024 * 1024;

/// The check gives up after this long (a head of 1 MiB).
const TIMEOUT: Duration = Duration::from_secs(300);

/// The local preconditions of an operation on the live tree: a passphrase gpg can read,
/// a valid layout, and a readable `homeserver.yaml` whose database kind is known. No
/// request goes to the bucket.
///
/// # Errors
/// [`BackupError::InvalidPassphrase`], [`BackupError::Config`] naming the layout field
/// or the `homeserver.yaml` path and what is wrong with it.
pub(crate) async fn local_preconditions<C: Container + ?Sized>(
    container: &C,
    layout: &Layout,
    passphrase: &str,
) -> Result<HomeserverConfig, BackupError> {
    plan::check_passphrase(passphrase)?;
    layout.validate()?;
    Ok(work::read_homeserver_config(container, layout).await?)
}

/// Everything `create` checks before it takes the lock: the local preconditions first
/// (so that a missing `homeserver.yaml` is reported as such, never as an error of the
/// bucket), then that the passphrase opens the newest backup.
///
/// # Errors
/// As [`local_preconditions`]; [`BackupError::PassphraseMismatch`] when gpg says the
/// passphrase does not open the newest backup. A check that cannot be made (the
/// listing or the download fails, the head is damaged) warns and lets the create run:
/// only a definite "wrong passphrase" refuses.
pub(crate) async fn before_create<C: Container + ?Sized>(
    run: &Run<'_, C>,
    options: &BackupOptions,
) -> Result<(), BackupError> {
    local_preconditions(run.container, run.layout, run.passphrase).await?;
    if options.new_passphrase {
        tracing::warn!("a new passphrase, as asked: later creates check against this backup");
        return Ok(());
    }
    let cancel = &options.cancel;
    let listed = tokio::select! {
        listed = catalog::list_backups(&run.client) => listed,
        () = cancel.cancelled() => return Err(BackupError::Cancelled),
    };
    let backups = match listed {
        Ok(backups) => backups,
        Err(e) => {
            tracing::warn!(error = %e, "could not list the bucket to check the passphrase; creating anyway");
            return Ok(());
        }
    };
    let newest = backups
        .iter()
        .find(|b| b.status == BackupStatus::Complete)
        .or_else(|| backups.iter().find(|b| b.status == BackupStatus::Legacy));
    let Some(newest) = newest else {
        tracing::warn!("an empty bucket: this first backup sets the passphrase for later creates");
        return Ok(());
    };
    let legacy = newest.status == BackupStatus::Legacy;
    let judged = match opens(run, &newest.id, &newest.key, legacy, cancel).await {
        Ok(judged) => judged,
        Err(BackupError::Cancelled) => return Err(BackupError::Cancelled),
        Err(e) => Opens::Unknown(e.to_string()),
    };
    match judged {
        Opens::Yes => Ok(()),
        Opens::No => Err(BackupError::PassphraseMismatch {
            id: newest.id.to_string(),
        }),
        Opens::Unknown(why) => {
            tracing::warn!(backup_id = %newest.id, why, "could not tell whether the passphrase opens the newest backup; creating anyway");
            Ok(())
        }
    }
}

/// How many restorable backups, newest first, [`newest_opening`] tries.
const MAX_TRIES: usize = 10;

/// The newest restorable backup of `backups` that the run's passphrase opens (trying
/// the ten newest restorable ones), for a prune that protects it. A failed or
/// inconclusive check protects nothing more: a prune never deletes on a passphrase
/// judgement.
///
/// # Errors
/// [`BackupError::Container`] when the work dir cannot be made.
pub(crate) async fn newest_opening<C: Container + ?Sized>(
    run: &Run<'_, C>,
    backups: &[BackupInfo],
) -> Result<Option<BackupId>, BackupError> {
    let mut ordered = backups.to_vec();
    crate::backup::prune_plan::order_by_server_time(&mut ordered);
    for b in ordered
        .iter()
        .filter(|b| matches!(b.status, BackupStatus::Complete | BackupStatus::Legacy))
        .take(MAX_TRIES)
    {
        let legacy = b.status == BackupStatus::Legacy;
        match opens(run, &b.id, &b.key, legacy, &plan::CancelToken::new()).await {
            Ok(Opens::Yes) => return Ok(Some(b.id.clone())),
            Ok(_) => {}
            Err(e @ BackupError::Container(_)) => return Err(e),
            Err(e) => {
                tracing::warn!(backup_id = %b.id, error = %e, "could not check the passphrase against it")
            }
        }
    }
    Ok(None)
}

/// What the head of a backup says about a passphrase.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Opens {
    /// gpg decrypted it (and, for a backup of ours, its inner manifest names it).
    Yes,
    /// gpg says the passphrase is wrong.
    No,
    /// Neither (a damaged object, a backup copied under another id): why.
    Unknown(String),
}

/// The inner manifest at the head of backup `id` (an incremental create's base), as
/// far as a cut stream tells it: decrypted with the passphrase and naming `id`. (Its
/// integrity check is at the end of the stream: a restore of the chain checks it.)
///
/// # Errors
/// Why it cannot be read, in words.
pub(crate) async fn read_inner<C: Container + ?Sized>(
    run: &Run<'_, C>,
    id: &BackupId,
    key: &str,
) -> Result<InnerManifest, String> {
    read_inner_in(run, id, key, WorkPlace::Temp).await
}

/// [`read_inner`] with the check's work dir made inside `within`: a create's own work
/// dir. Create's cancel drops the whole stage around this call, this check's exec and
/// work dir guard with it; the create removes its own dir on every path, so a dropped
/// check leaves nothing behind (no SSE-C key file in the temp dir).
///
/// # Errors
/// As [`read_inner`].
pub(crate) async fn read_inner_within<C: Container + ?Sized>(
    run: &Run<'_, C>,
    id: &BackupId,
    key: &str,
    within: &WorkDir,
) -> Result<InnerManifest, String> {
    read_inner_in(run, id, key, WorkPlace::Under(&within.dir)).await
}

async fn read_inner_in<C: Container + ?Sized>(
    run: &Run<'_, C>,
    id: &BackupId,
    key: &str,
    place: WorkPlace<'_>,
) -> Result<InnerManifest, String> {
    let never = plan::CancelToken::new();
    let read = read_head(run, key, &never, place)
        .await
        .map_err(|e| e.to_string())?;
    match read.judge(id, false) {
        Opens::Yes => InnerManifest::from_json(&read.head).map_err(|e| e.to_string()),
        Opens::No => Err("the passphrase does not open it".into()),
        Opens::Unknown(why) => Err(why),
    }
}

/// Runs the check in the workload and judges its outputs.
async fn opens<C: Container + ?Sized>(
    run: &Run<'_, C>,
    id: &BackupId,
    key: &str,
    legacy: bool,
    cancel: &plan::CancelToken,
) -> Result<Opens, BackupError> {
    // In the workload's temp dir: a prune may run where no Synapse tree is.
    Ok(read_head(run, key, cancel, WorkPlace::Temp)
        .await?
        .judge(id, legacy))
}

/// Runs `passcheck.sh` on `key`, in a work dir made in `place`: gpg's status lines and
/// the first member's head.
async fn read_head<C: Container + ?Sized>(
    run: &Run<'_, C>,
    key: &str,
    cancel: &plan::CancelToken,
    place: WorkPlace<'_>,
) -> Result<HeadRead, BackupError> {
    // The head is read here, whatever the transfer (an aws CLI start in the workload
    // would cost more than the whole check), and follows the passphrase.
    let head = run.client.get_object_range(key, 0, HEAD_BYTES).await?;
    let guard = run
        .work_dir_in(place, "verify", &BackupOptions::default())
        .await?;
    let work = guard.dir().clone();
    let call = passcheck_call(run.layout, run.params, &work);
    let mut options =
        work::pipeline_options(run.layout, &call, &work, Some(TIMEOUT), run.passphrase);
    options
        .stdin
        .get_or_insert_with(Vec::new)
        .extend_from_slice(&head);
    drop(head);
    // Dropping the exec kills the check's process group; the dir goes as on any path.
    let outcome = tokio::select! {
        outcome = run.container.exec(&call.argv, options) => outcome,
        () = cancel.cancelled() => {
            guard.finish().await;
            return Err(BackupError::Cancelled);
        }
    };
    // gpg and tar fail at the cut end of the stream, but the script made both files.
    let outputs = Outputs::new(run.container, run.layout, &work);
    let read = match outcome {
        Ok(_) => Ok(read_judged(&outputs).await),
        Err(e) => Err(e),
    };
    guard.finish().await;
    match read {
        Ok(read) => Ok(read?),
        // The head came from the library: the script fails only around gpg's input
        // (gpg's and tar's own failures are judged from their outputs).
        Err(ContainerError::ExitedNonZero {
            exit_code, stderr, ..
        }) => Err(BackupError::StageFailed {
            stage: Stage::Gpg,
            exit_code,
            stderr,
        }),
        Err(e) => Err(e.into()),
    }
}

/// What `passcheck.sh` left: gpg's status lines, the head of the first member, and
/// whether tar found the stream compressed (zstd's, which the workload lacks: with
/// zstd the script undoes it).
#[derive(Debug, Clone, PartialEq, Eq)]
struct HeadRead {
    status: Vec<u8>,
    head: Vec<u8>,
    compressed: bool,
}

impl HeadRead {
    /// [`judge`], saying so when the head could not be read because the backup is
    /// compressed with zstd and the workload has none. Pure.
    fn judge(&self, id: &BackupId, legacy: bool) -> Opens {
        match judge(&self.status, &self.head, id, legacy) {
            Opens::Unknown(_) if self.compressed => Opens::Unknown(
                "it is compressed with zstd, which the workload lacks (install zstd, or \
                 give its path: Layout::zstd, --zstd)"
                    .into(),
            ),
            other => other,
        }
    }
}

/// What [`judge`] reads: gpg's status lines, the head of the first member, and, when
/// tar gave no head, GNU tar's word that the stream is compressed (`Archive is
/// compressed. Use --zstd option`, C locale): one read more only then.
async fn read_judged<C: Container + ?Sized>(
    outputs: &Outputs<'_, C>,
) -> Result<HeadRead, ContainerError> {
    let status = outputs.read(WorkFile::GpgStatus).await?;
    let head = outputs.read(WorkFile::Head).await?;
    let compressed = head.is_empty()
        && outputs
            .read_if_written(WorkFile::TarErr)
            .await?
            .is_some_and(|e| {
                String::from_utf8_lossy(&e).contains("Archive is compressed. Use --zstd")
            });
    Ok(HeadRead {
        status,
        head,
        compressed,
    })
}

/// The call: `passcheck.sh`, the object's head on its standard input after the
/// passphrase; no S3 credential or aws CLI in its environment.
fn passcheck_call(layout: &Layout, params: &S3Parameters, work: &WorkDir) -> ScriptCall {
    let mut env = plan::script_env(layout, params, work);
    env.retain(|k, _| k.starts_with("SB_") && k != "SB_AWS");
    env.insert("SB_MEMBER".into(), INNER_MANIFEST_MEMBER.into());
    let argv = vec![
        layout.bash.clone(),
        "-c".into(),
        PASSCHECK.into(),
        "bash".into(),
    ];
    ScriptCall { argv, env }
}

/// Judges gpg's status lines and the first member's head of a cut stream. Pure.
fn judge(status: &[u8], head: &[u8], id: &BackupId, legacy: bool) -> Opens {
    if check_status(status) == Err(Untrusted::BadPassphrase) {
        return Opens::No;
    }
    let text = String::from_utf8_lossy(status);
    let keywords: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("[GNUPG:] "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let begin = keywords.iter().position(|k| *k == "BEGIN_DECRYPTION");
    let plaintext = keywords.iter().position(|k| *k == "PLAINTEXT");
    match (begin, plaintext) {
        (Some(b), Some(p)) if b < p => {}
        _ => {
            return Opens::Unknown(
                "gpg decrypted nothing of its head (not a symmetric gpg stream?)".into(),
            );
        }
    }
    if legacy {
        return Opens::Yes;
    }
    match InnerManifest::from_json(head) {
        Ok(inner) if &inner.backup_id == id => Opens::Yes,
        Ok(inner) => Opens::Unknown(format!(
            "its inner manifest names {}, not {id}",
            inner.backup_id
        )),
        Err(e) => Opens::Unknown(format!("its inner manifest could not be read: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENED: &str = "[GNUPG:] NEED_PASSPHRASE_SYM 9 3 2\n[GNUPG:] BEGIN_DECRYPTION\n[GNUPG:] DECRYPTION_INFO 2 9 0\n[GNUPG:] PLAINTEXT 62 0 \n[GNUPG:] ERROR proc_pkt.plaintext 89_UNEXPECTED_EOF\n";
    const WRONG: &str = "[GNUPG:] NEED_PASSPHRASE_SYM 9 3 2\n[GNUPG:] BEGIN_DECRYPTION\n[GNUPG:] ERROR symkey_decrypt.maybe_error 11_BAD_PASSPHRASE\n[GNUPG:] DECRYPTION_FAILED\n[GNUPG:] END_DECRYPTION\n";

    fn inner(id: &BackupId) -> Vec<u8> {
        use crate::backup::manifest::{DatabaseSnapshot, MANIFEST_FORMAT, ManifestLayout};
        InnerManifest {
            format: MANIFEST_FORMAT,
            backup_id: id.clone(),
            created: chrono::Utc::now(),
            created_by: "synapse-backup/test".into(),
            layout: ManifestLayout {
                config_dir: "/data".into(),
                data_dir: "/data".into(),
                media_store_path: "/data/media_store".into(),
                members: vec!["data".into()],
            },
            database: DatabaseSnapshot::Sqlite,
            nonce: "00".into(),
            chain: None,
        }
        .to_json()
    }

    #[test]
    fn a_cut_stream_that_decrypts_to_the_inner_manifest_opens() {
        let id = BackupId::generate();
        let head = inner(&id);
        assert_eq!(judge(OPENED.as_bytes(), &head, &id, false), Opens::Yes);
        assert_eq!(judge(OPENED.as_bytes(), b"", &id, true), Opens::Yes);
        assert!(matches!(
            judge(
                OPENED.as_bytes(),
                &inner(&BackupId::from_time(
                    chrono::Utc::now() - chrono::Duration::days(1)
                )),
                &id,
                false
            ),
            Opens::Unknown(_)
        ));
        assert!(matches!(
            judge(OPENED.as_bytes(), b"", &id, false),
            Opens::Unknown(_)
        ));
    }

    #[test]
    fn a_head_tar_found_compressed_says_zstd_is_missing_and_changes_no_verdict() {
        let id = BackupId::generate();
        let read = |status: &str, head: Vec<u8>| HeadRead {
            status: status.as_bytes().to_vec(),
            head,
            compressed: true,
        };
        assert!(matches!(
            read(OPENED, Vec::new()).judge(&id, false),
            Opens::Unknown(why) if why.contains("zstd") && why.contains("--zstd")
        ));
        assert_eq!(read(OPENED, inner(&id)).judge(&id, false), Opens::Yes);
        assert_eq!(read(WRONG, Vec::new()).judge(&id, false), Opens::No);
        assert_eq!(read(OPENED, Vec::new()).judge(&id, true), Opens::Yes);
    }

    #[test]
    fn a_wrong_passphrase_is_told_and_nothing_else_is_taken_for_one() {
        let id = BackupId::generate();
        assert_eq!(judge(WRONG.as_bytes(), b"", &id, false), Opens::No);
        assert_eq!(judge(WRONG.as_bytes(), b"", &id, true), Opens::No);
        let plain = "[GNUPG:] PLAINTEXT 62 0 \n";
        assert!(matches!(
            judge(plain.as_bytes(), b"", &id, true),
            Opens::Unknown(_)
        ));
        assert!(matches!(judge(b"", b"", &id, true), Opens::Unknown(_)));
    }

    /// The call holds no secret and no S3 access: the library reads the head.
    #[test]
    fn the_call_has_no_secret_and_no_s3_access() {
        let layout = Layout::default();
        let work = WorkDir::at("/data/.synapse-backup-verify.x");
        let data: std::collections::HashMap<String, String> = [
            ("access-key", "AKIDEXAMPLE"),
            ("secret-key", "s3cr3t-value"),
            ("bucket", "bkt"),
            ("endpoint", "http://127.0.0.1:9"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
        let params = S3Parameters::from_relation_data(&data).unwrap();
        let call = passcheck_call(&layout, &params, &work);
        assert_eq!(call.argv.len(), 4, "{:?}", call.argv);
        for (k, v) in &call.env {
            assert!(k.starts_with("SB_"), "{k}");
            assert!(!v.contains("s3cr3t") && !v.contains("AKIDEXAMPLE"), "{k}");
        }
        assert!(!call.env.contains_key("SB_AWS"));
        assert_eq!(call.env["SB_MEMBER"], INNER_MANIFEST_MEMBER);
    }
}

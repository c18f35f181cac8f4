//! Ctrl-C and `SIGTERM`. Without handling, the process would die with its pipeline
//! still running in its own process group and its private work dir (which holds the
//! passphrase file) left on disk.
//!
//! - `create` and `verify` are cancellable: the operation is dropped (which kills the
//!   pipeline's process group), then the work dirs it made are removed and, for
//!   `create`, a partial backup is deleted.
//! - `restore` is shielded: signals are ignored until it finishes, because stopping it
//!   half-way through the swap is what its rollback exists to avoid.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;

use synapse_backup::{BackupId, BackupStatus, Layout, S3Client, backup_status, delete_backup};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// The prefix of the library's private work dirs under the layout's work base.
const WORK_DIR_PREFIX: &str = ".synapse-backup-";

/// `SIGINT` and `SIGTERM`, watched from the moment this is made (so the default
/// action, dying, no longer applies).
struct Signals {
    interrupt: Option<Signal>,
    terminate: Option<Signal>,
}

impl Signals {
    fn watch() -> Signals {
        Signals {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
        }
    }

    /// The number of the next `SIGINT` or `SIGTERM`.
    async fn next(&mut self) -> i32 {
        async fn recv(stream: &mut Option<Signal>) {
            match stream {
                Some(stream) => {
                    stream.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            () = recv(&mut self.interrupt) => 2,
            () = recv(&mut self.terminate) => 15,
        }
    }
}

/// Runs `work` until it finishes (`Ok`) or a signal arrives (`Err(signal number)`),
/// in which case `work` is dropped.
pub async fn cancellable<F: Future>(work: F) -> Result<F::Output, i32> {
    let mut signals = Signals::watch();
    tokio::select! {
        out = work => Ok(out),
        signal = signals.next() => Err(signal),
    }
}

/// Runs `work` to the end whatever signals arrive, saying so on stderr when one does.
pub async fn shielded<F: Future>(work: F, what: &str) -> F::Output {
    let mut signals = Signals::watch();
    let what = what.to_string();
    let watcher = tokio::spawn(async move {
        loop {
            signals.next().await;
            crate::output::warn(&format!(
                "interrupt ignored: {what} cannot be stopped half-way safely; it finishes or rolls back by itself"
            ));
        }
    });
    let out = work.await;
    watcher.abort();
    out
}

/// The library's work dirs now present under the layout's work base.
pub fn work_dirs(layout: &Layout) -> BTreeSet<PathBuf> {
    let base = layout.host_path(layout.work_base());
    std::fs::read_dir(base)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(WORK_DIR_PREFIX))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// After an interrupted run: removes the work dirs that appeared since `before` and,
/// when `client` is given (an interrupted `create`), deletes the incomplete backups
/// they belonged to. Returns what it did, for the error message.
pub async fn clean_up(
    layout: &Layout,
    before: &BTreeSet<PathBuf>,
    client: Option<&S3Client>,
) -> String {
    let mut done = Vec::new();
    for dir in work_dirs(layout).difference(before) {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match std::fs::remove_dir_all(dir) {
            Ok(()) => done.push(format!("removed the work dir {}", dir.display())),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove the work dir")
            }
        }
        let Some(client) = client else { continue };
        let Some(Ok(id)) = name
            .strip_prefix(WORK_DIR_PREFIX)
            .map(str::parse::<BackupId>)
        else {
            continue;
        };
        // Only what never completed: a backup whose manifest landed is kept.
        if let Ok(Some(BackupStatus::Incomplete)) = backup_status(client, &id).await
            && delete_backup(client, &id).await.is_ok()
        {
            done.push(format!("deleted the partial backup {id}"));
        }
        if let Ok(n @ 1..) = client
            .abort_multipart_uploads(&client.object_key(id.as_str()))
            .await
        {
            done.push(format!("aborted {n} multipart upload(s)"));
        }
    }
    if done.is_empty() {
        "nothing was left to clean up".into()
    } else {
        done.join(", ")
    }
}

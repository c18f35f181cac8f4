//! `SIGINT` (Ctrl-C), `SIGTERM` and `SIGHUP` (a closed terminal or SSH session). Without
//! handling, the process would die with its pipeline still running in its own process
//! group, its private work dir (the database snapshot) left on disk, and a partial
//! upload going on.
//!
//! All three are handled the same way:
//! - `create` is cancelled through its [`CancelToken`]: the library kills the
//!   pipeline's process group, removes this run's own work dir (by its exact path) and
//!   deletes this run's partial upload, then returns.
//! - `verify` is dropped (which kills its pipeline), then the work dirs this very
//!   process made are removed (known by their owner record, never by a name pattern or
//!   by when they appeared: another run's dirs are never touched).
//! - `restore` is shielded: signals are ignored until it finishes, because stopping it
//!   half-way through the swap is what its rollback exists to avoid.

use std::future::Future;

use synapse_backup::{CancelToken, Container, Layout, remove_abandoned_work_dirs};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// `SIGINT`, `SIGTERM` and `SIGHUP`, watched from the moment this is made (so the
/// default action, dying, no longer applies).
struct Signals {
    interrupt: Option<Signal>,
    terminate: Option<Signal>,
    hangup: Option<Signal>,
}

impl Signals {
    fn watch() -> Signals {
        Signals {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
            hangup: signal(SignalKind::hangup()).ok(),
        }
    }

    /// The number of the next `SIGINT`, `SIGTERM` or `SIGHUP`.
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
            () = recv(&mut self.hangup) => 1,
        }
    }
}

/// Runs `work`, which stops by itself once `token` is cancelled; the first signal
/// cancels `token` and `work` is then awaited to the end of its own clean-up. Returns
/// the output and the signal that arrived, if any.
pub async fn cancel_on_signal<F: Future>(work: F, token: &CancelToken) -> (F::Output, Option<i32>) {
    let mut signals = Signals::watch();
    tokio::pin!(work);
    let received = tokio::select! {
        out = &mut work => return (out, None),
        signal = signals.next() => signal,
    };
    // The command's failure says what was stopped and cleaned up: one message.
    token.cancel();
    (work.await, Some(received))
}

/// Runs `work` until it finishes (`Ok`) or a signal arrives (`Err(signal number)`), in
/// which case `work` is dropped. For operations that run nothing in the workload.
pub async fn cancellable<F: Future>(work: F) -> Result<F::Output, i32> {
    let mut signals = Signals::watch();
    tokio::select! {
        out = work => Ok(out),
        signal = signals.next() => Err(signal),
    }
}

/// Runs `work` until it finishes (`Ok`) or a signal arrives (`Err(signal number)`), in
/// which case `work` is dropped (killing its pipeline) and the work dirs this process
/// made are removed.
pub async fn cancellable_in_workload<F: Future, C: Container + ?Sized>(
    work: F,
    container: &C,
    layout: &Layout,
) -> Result<F::Output, (i32, String)> {
    let mut signals = Signals::watch();
    let signal = tokio::select! {
        out = work => return Ok(out),
        signal = signals.next() => signal,
    };
    let removed = remove_abandoned_work_dirs(container, layout).await;
    let done = if removed.is_empty() {
        "nothing was left to clean up".to_string()
    } else {
        removed
            .iter()
            .map(|d| format!("removed the work dir {d}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err((signal, done))
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

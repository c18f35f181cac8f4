//! `unlock`: the backup lock of an operation known to be gone.

use std::io::{self, IsTerminal};

use serde::Serialize;
use synapse_backup::BackupLock;

use crate::cli::GlobalArgs;
use crate::failure::{Failure, Kind};
use crate::output::{self, confirm, emit, emit_json};
use crate::target::Target;

/// `unlock --json`: whether a lock was held and removed, and whose.
#[derive(Serialize)]
struct Unlocked<'a> {
    removed: bool,
    held: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    holder: Option<&'a str>,
}

/// `unlock`: removes a held lock after confirmation.
pub(crate) async fn unlock(global: &GlobalArgs, yes: bool) -> Result<(), Failure> {
    let target = Target::load(global)?;
    target.check_bucket().await?;
    let info = match BackupLock::inspect(&target.client)
        .await
        .map_err(|e| target.failure(e, false))?
    {
        Some(info) if !info.released => info,
        _ => {
            if global.json {
                emit_json(&Unlocked {
                    removed: false,
                    held: false,
                    holder: None,
                });
            } else {
                emit(&format!(
                    "no backup lock is held in {}\n",
                    target.describe()
                ));
            }
            return Ok(());
        }
    };
    let held = format!(
        "the backup lock {} is held by {} since {}, last written {} (server time)",
        info.key,
        info.holder(),
        output::rfc3339(info.since),
        output::rfc3339(info.last_modified)
    );
    if !yes {
        if !(io::stdin().is_terminal() && io::stderr().is_terminal()) {
            return Err(Failure::usage(format!(
                "{held}; pass --yes to remove it (there is no terminal to ask on)"
            )));
        }
        let question = format!(
            "{held}.\nRemove it only if that operation is no longer running: a create, \
             restore, delete or prune could then run at the same time.\nType yes to continue: "
        );
        if !confirm(&question) {
            return Err(Failure::new(
                Kind::Declined,
                "unlock cancelled at the prompt; the lock was left in place",
            ));
        }
    }
    if BackupLock::force_release(&target.client, &info)
        .await
        .map_err(|e| target.failure(e, false))?
    {
        if global.json {
            emit_json(&Unlocked {
                removed: true,
                held: true,
                holder: Some(&info.holder()),
            });
        } else {
            emit(&format!(
                "removed the backup lock held by {}\n",
                info.holder()
            ));
        }
        Ok(())
    } else {
        Err(Failure::failed(
            "the lock changed while unlocking (refreshed or taken by another operation); nothing was removed",
        ))
    }
}

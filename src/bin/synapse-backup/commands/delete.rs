//! `delete`: one backup, manifest first; with `--with-dependents`, the backups whose
//! chains need it too, newest first.

use serde::Serialize;
use synapse_backup::{BackupError, BackupId, delete_backup_with, delete_backup_with_dependents};

use crate::cli::{GlobalArgs, IdArg};
use crate::failure::{Failure, Kind};
use crate::interrupt;
use crate::output::{self, emit, emit_json};
use crate::target::{Target, lock_options};

/// `delete --json`.
#[derive(Serialize)]
struct Deleted<'a> {
    deleted: &'a BackupId,
    /// The dependents deleted before it, newest first (empty without
    /// `--with-dependents`).
    dependents: &'a [BackupId],
}

/// `delete ID`: the manifest, then the data, under the lock; with `with_dependents`,
/// every backup whose chain needs it first, newest first, each printed as it goes.
pub(crate) async fn delete(
    global: &GlobalArgs,
    id: &IdArg,
    with_dependents: bool,
) -> Result<(), Failure> {
    let target = Target::load(global)?;
    target.check_bucket().await?;
    let id = &target.resolve(id).await?;
    let lock = lock_options(global);
    let json = global.json;
    let where_ = target.describe();
    let run = output::with_spinner(
        format!("deleting {id}"),
        interrupt::cancellable(async {
            if with_dependents {
                let mut report = |deleted: &BackupId| {
                    if !json && deleted != id {
                        emit(&format!("deleted {deleted} (it needed {id})\n"));
                    }
                };
                delete_backup_with_dependents(&target.client, id, &lock, &mut report).await
            } else {
                delete_backup_with(&target.client, id, &lock)
                    .await
                    .map(|()| vec![id.clone()])
            }
        }),
    )
    .await;
    let deleted = run
        .map_err(|signal| {
            let message = if with_dependents {
                "interrupted: the delete was stopped (the backups printed as deleted are \
                 gone, newest first: no chain was left broken)"
            } else {
                "interrupted: the delete was stopped"
            };
            Failure::new(Kind::Interrupted(signal), message)
        })?
        .map_err(|e| match e {
            BackupError::NeededByOthers { id, dependents } => Failure::failed(format!(
                "backup {id} is needed by {} (incremental backups built on it): delete \
                 those first (newest first), or all of them with `delete {id} \
                 --with-dependents`",
                dependents.join(", ")
            )),
            e => target.failure(e, false),
        })?;
    let dependents = deleted.split_last().map_or(&[][..], |(_, rest)| rest);
    if json {
        emit_json(&Deleted {
            deleted: id,
            dependents,
        });
    } else {
        emit(&format!("deleted {id} from {where_}\n"));
    }
    Ok(())
}

//! `delete`: one backup, manifest first.

use serde::Serialize;
use synapse_backup::{BackupId, delete_backup_with};

use crate::cli::{GlobalArgs, IdArg};
use crate::failure::{Failure, Kind};
use crate::interrupt;
use crate::output::{self, emit, emit_json};
use crate::target::{Target, lock_options};

/// `delete --json`.
#[derive(Serialize)]
struct Deleted<'a> {
    deleted: &'a BackupId,
}

/// `delete ID`: the manifest, then the data, under the lock.
pub(crate) async fn delete(global: &GlobalArgs, id: &IdArg) -> Result<(), Failure> {
    let target = Target::load(global)?;
    target.check_bucket().await?;
    let id = &target.resolve(id).await?;
    let lock = lock_options(global);
    let run = output::with_spinner(
        format!("deleting {id}"),
        interrupt::cancellable(delete_backup_with(&target.client, id, &lock)),
    )
    .await;
    run.map_err(|signal| {
        Failure::new(
            Kind::Interrupted(signal),
            "interrupted: the delete was stopped",
        )
    })?
    .map_err(|e| target.failure(e, false))?;
    if global.json {
        emit_json(&Deleted { deleted: id });
    } else {
        emit(&format!("deleted {id} from {}\n", target.describe()));
    }
    Ok(())
}

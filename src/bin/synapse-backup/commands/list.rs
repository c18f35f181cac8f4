//! `list`: the backups, newest first.

use synapse_backup::list_backups;

use crate::cli::GlobalArgs;
use crate::failure::Failure;
use crate::output::{self, emit, emit_json};
use crate::target::Target;

/// `list`: a table, or with `--json` the library's [`BackupInfo`](synapse_backup::BackupInfo)s.
pub(crate) async fn list(global: &GlobalArgs) -> Result<(), Failure> {
    let target = Target::load(global)?;
    let backups = output::with_spinner(
        format!("listing {}", target.describe()),
        list_backups(&target.client),
    )
    .await
    .map_err(|e| target.failure(e, true))?;
    if global.json {
        emit_json(&backups);
    } else if backups.is_empty() {
        emit(&format!("no backups in {}\n", target.describe()));
    } else {
        emit(&output::backups_table(&backups));
    }
    for b in backups.iter().filter(|b| b.id_time_disagrees()) {
        output::warn(&format!(
            "{}: its id says {} but the server stored it at {} (a wrong clock on the host that made it); backups are ordered and aged by the server's time",
            b.id,
            output::rfc3339(b.id.created()),
            output::rfc3339(b.last_modified)
        ));
    }
    Ok(())
}

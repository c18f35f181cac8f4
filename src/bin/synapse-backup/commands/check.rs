//! `check`: the bucket exists and the credentials can use it (and, given, the passphrase and the Pebble daemon).

use serde::Serialize;
use synapse_backup::{Container, PebbleContainer};

use crate::cli::GlobalArgs;
use crate::config::{self, ENV_PASSPHRASE};
use crate::failure::Failure;
use crate::output::{self, emit, emit_json};
use crate::target::{Target, passphrase};
use crate::workload::workload_failure;

/// `check --json`: where the backups go.
#[derive(Serialize)]
struct Checked<'a> {
    ok: bool,
    bucket: &'a str,
    path: &'a str,
    endpoint: Option<&'a str>,
    region: &'a str,
}

/// `check`: one small listing of the bucket, after the configuration is read.
pub(crate) async fn check(global: &GlobalArgs) -> Result<(), Failure> {
    let target = Target::load(global)?;
    // A passphrase given is checked too, so `check` catches every config mistake.
    let has_passphrase = global.passphrase_file.is_some()
        || std::env::var_os(ENV_PASSPHRASE).is_some_and(|v| !v.is_empty());
    if has_passphrase {
        passphrase(global)?;
    }
    // With --pebble, the daemon must answer too (a wrong socket fails here, not in create).
    if let Some(socket) = &global.pebble {
        let layout = config::workload_layout(&global.layout).map_err(Failure::usage)?;
        PebbleContainer::new(socket.clone())
            .exists(&layout.root)
            .await
            .map_err(|e| workload_failure(socket, &e))?;
    }
    output::with_spinner(
        format!("checking {}", target.describe()),
        target.check_bucket(),
    )
    .await?;
    if global.json {
        emit_json(&Checked {
            ok: true,
            bucket: target.client.bucket(),
            path: target.client.prefix(),
            endpoint: target.params.endpoint(),
            region: target.client.region(),
        });
    } else {
        emit(&format!("ok: {} is usable\n", target.describe()));
    }
    Ok(())
}

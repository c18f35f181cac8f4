//! What a Kubernetes charm's backup actions look like: `create-backup`, `restore-backup`
//! and `list`, on the `synapse` workload container reached through the Pebble socket
//! Juju mounts into the charm container, with the [`Backups`] handle. Copy the three
//! action functions into the charm; the `main` here stands in for the charm framework
//! (hook tools such as `relation-get`, `secret-get` and `action-set` are the
//! framework's, not this crate's).
//!
//! ```text
//! cargo run --example charm_action --features pebble -- create-backup
//! cargo run --example charm_action --features pebble -- restore-backup ID
//! cargo run --example charm_action --features pebble -- list
//! ```
//!
//! `PEBBLE_SOCKET` overrides the socket (default
//! `/charm/containers/synapse/pebble.socket`); `S3_ENDPOINT`, `S3_BUCKET`,
//! `S3_ACCESS_KEY` and `S3_SECRET_KEY` stand in for the s3 relation's data and its
//! secret, `SYNAPSE_BACKUP_PASSPHRASE` for the passphrase a charm reads from a Juju
//! secret. Without the socket, it prints its usage and exits 2.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;

use synapse_backup::{
    BackupId, Backups, Container, CreateOptions, Layout, PebbleContainer, RestoreOptions,
    S3Parameters,
};

/// The socket Juju mounts for the workload container named `synapse` in `metadata.yaml`.
const SOCKET: &str = "/charm/containers/synapse/pebble.socket";

const USAGE: &str = "usage: charm_action create-backup | restore-backup ID | list \
    (PEBBLE_SOCKET names the workload's Pebble socket, default /charm/containers/synapse/pebble.socket)";

type ActionResult<T> = Result<T, Box<dyn std::error::Error>>;

/// The handle on the workload and the bucket: `relation_data` is the s3 relation's
/// application databag (interface v1, as s3-integrator 2 sends it), `credentials` the
/// content of the Juju secret its `secret-extra` names.
fn backups<C: Container>(
    workload: C,
    relation_data: &HashMap<String, String>,
    credentials: &HashMap<String, String>,
) -> ActionResult<Backups<C>> {
    // Every bad field is listed in the error: report it with `action-fail`.
    let params = S3Parameters::from_relation_data_with_secret(relation_data, credentials)?;
    // `Layout::default()` is the Synapse rock's layout (`/data`, user `synapse`, the
    // Pebble service `synapse`, the aws CLI at `/aws/dist/aws`).
    Ok(Backups::new(workload, params, Layout::default())?)
}

/// `create-backup`: the new backup's id (for `action-set`).
async fn create_backup_action<C: Container>(
    backups: &Backups<C>,
    passphrase: &str,
) -> ActionResult<BackupId> {
    Ok(backups
        .create(passphrase, &CreateOptions::default())
        .await?
        .id)
}

/// `restore-backup`: downloads and checks the backup, then stops Synapse through Pebble
/// only for the swap, and starts it again.
async fn restore_backup_action<C: Container>(
    backups: &Backups<C>,
    passphrase: &str,
    id: &str,
) -> ActionResult<()> {
    backups
        .restore(passphrase, &id.parse()?, &RestoreOptions::default())
        .await?;
    Ok(())
}

/// `list`: one line per backup, newest first (for `action-set`).
async fn list_action<C: Container>(backups: &Backups<C>) -> ActionResult<Vec<String>> {
    Ok(backups
        .list()
        .await?
        .iter()
        .map(|b| format!("{} {} {} bytes", b.id, b.status, b.size))
        .collect())
}

/// The stand-in for the relation's databag and secret.
fn relation_data() -> (HashMap<String, String>, HashMap<String, String>) {
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let data = HashMap::from([
        ("bucket".to_string(), var("S3_BUCKET", "synapse-backups")),
        (
            "endpoint".to_string(),
            var("S3_ENDPOINT", "http://127.0.0.1:9000"),
        ),
        ("region".to_string(), "us-east-1".to_string()),
        ("path".to_string(), "/synapse".to_string()),
        ("s3-uri-style".to_string(), "path".to_string()),
        ("lib-version".to_string(), "1.0".to_string()),
        (
            "secret-extra".to_string(),
            "secret:s3-credentials".to_string(),
        ),
    ]);
    let credentials = HashMap::from([
        ("access-key".to_string(), var("S3_ACCESS_KEY", "")),
        ("secret-key".to_string(), var("S3_SECRET_KEY", "")),
    ]);
    (data, credentials)
}

async fn run(action: &str, id: Option<&str>, socket: &str) -> ActionResult<()> {
    let (data, credentials) = relation_data();
    let backups = backups(PebbleContainer::new(socket), &data, &credentials)?;
    let passphrase = || {
        std::env::var("SYNAPSE_BACKUP_PASSPHRASE")
            .map_err(|_| "set SYNAPSE_BACKUP_PASSPHRASE (a charm reads it from a Juju secret)")
    };
    match (action, id) {
        ("create-backup", None) => {
            let id = create_backup_action(&backups, &passphrase()?).await?;
            println!("backup-id: {id}");
        }
        ("restore-backup", Some(id)) => {
            restore_backup_action(&backups, &passphrase()?, id).await?;
            println!("restored: {id}");
        }
        ("list", None) => {
            for line in list_action(&backups).await? {
                println!("{line}");
            }
        }
        _ => return Err(USAGE.into()),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let socket = std::env::var("PEBBLE_SOCKET").unwrap_or_else(|_| SOCKET.to_string());
    let Some(action) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if !Path::new(&socket).exists() {
        eprintln!("no Pebble socket at {socket}: run this in a charm container\n{USAGE}");
        return ExitCode::from(2);
    }
    match run(action, args.get(1).map(String::as_str), &socket).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

//! What every command needs: the S3 parameters and client, the passphrase, the lock
//! options and the workload to run in.

use std::path::PathBuf;

use synapse_backup::{
    BackupError, BackupId, BackupStatus, Container, Layout, LocalContainer, LockMode, LockOptions,
    PebbleContainer, S3Client, S3Parameters, SystemdServices, list_backups,
};

use crate::cli::{GlobalArgs, IdArg};
use crate::config::{self, Passphrase};
use crate::diagnose::{self, S3Problem};
use crate::failure::{Failure, Kind};

/// What every command needs: the parameters, a client and where the backups are.
pub(crate) struct Target {
    pub(crate) params: S3Parameters,
    pub(crate) client: S3Client,
    pub(crate) s3_file: PathBuf,
}

impl Target {
    pub(crate) fn load(global: &GlobalArgs) -> Result<Target, Failure> {
        let s3_file = global.s3.clone().unwrap_or_default();
        let params = config::load_s3_parameters(&s3_file)
            .map_err(Failure::usage)?
            .with_request_timeout(std::time::Duration::from_secs(global.s3_timeout));
        let client = S3Client::new(&params)
            .map_err(|e| Failure::usage(format!("{}: {e}", s3_file.display())))?;
        Ok(Target {
            params,
            client,
            s3_file,
        })
    }

    /// `s3://bucket/prefix at endpoint` (no secret).
    pub(crate) fn describe(&self) -> String {
        let prefix = self.client.prefix();
        let location = if prefix.is_empty() {
            format!("s3://{}", self.client.bucket())
        } else {
            format!("s3://{}/{prefix}", self.client.bucket())
        };
        match self.params.endpoint() {
            Some(endpoint) => format!("{location} at {endpoint}"),
            None => format!("{location} in {}", self.client.region()),
        }
    }

    /// The failure for `error`: the common S3 mistakes named with their fix (see
    /// [`diagnose`]), anything else as it is. `listing` says the failed request listed
    /// the bucket.
    pub(crate) fn failure(&self, error: BackupError, listing: bool) -> Failure {
        let problem = match &error {
            BackupError::S3(e) => diagnose::classify(e, listing),
            _ => None,
        };
        match problem {
            Some(problem) => self.s3_failure(&problem),
            None => error.into(),
        }
    }

    pub(crate) fn s3_failure(&self, problem: &S3Problem) -> Failure {
        let file = self.s3_file.display().to_string();
        let cx = diagnose::Context {
            bucket: self.client.bucket(),
            endpoint: self.params.endpoint(),
            region: self.client.region(),
            s3_file: &file,
        };
        Failure::new(Kind::S3(problem.kind()), problem.message(&cx))
    }

    /// Checks that the bucket exists and these credentials can list it (one small
    /// listing), before anything else is done.
    pub(crate) async fn check_bucket(&self) -> Result<(), Failure> {
        let probe = self.client.object_key(".synapse-backup-check");
        self.client
            .list_objects_with_prefix(&probe)
            .await
            .map(drop)
            .map_err(|e| self.failure(e.into(), true))
    }

    /// The backup `id` names: itself, or for `latest` the newest complete backup.
    pub(crate) async fn resolve(&self, id: &IdArg) -> Result<BackupId, Failure> {
        match id {
            IdArg::Id(id) => Ok(id.clone()),
            IdArg::Latest => {
                let backups = list_backups(&self.client)
                    .await
                    .map_err(|e| self.failure(e, true))?;
                backups
                    .into_iter()
                    .find(|b| b.status == BackupStatus::Complete)
                    .map(|b| b.id)
                    .ok_or_else(|| {
                        Failure::new(
                            Kind::NotFound,
                            format!(
                                "no complete backup in {}, so `latest` names none",
                                self.describe()
                            ),
                        )
                    })
            }
        }
    }
}

/// The download options the global flags give verify, restore and extract: the
/// download's cap, the pipeline's priority, the transfer, the workload's ranges and
/// the library's.
pub(crate) fn restore_options(global: &GlobalArgs) -> synapse_backup::RestoreOptions {
    let mut options = synapse_backup::RestoreOptions::default()
        .max_bandwidth(global.limit_download)
        .priority(global.priority)
        .transfer(global.transfer);
    options.space_reserve_mib = global.space_reserve_mib;
    if let Some((in_flight, mib)) = global.aws_ranges {
        options = options
            .download_concurrency(in_flight)
            .download_chunk_mib(mib);
    }
    match global.library_ranges {
        Some((in_flight, mib)) => options
            .library_ranges_in_flight(in_flight)
            .library_range_mib(mib),
        None => options,
    }
}

/// How create, restore, delete and prune take the backup lock.
pub(crate) fn lock_options(global: &GlobalArgs) -> LockOptions {
    let mode = if global.no_lock {
        LockMode::Off
    } else {
        LockMode::Required
    };
    LockOptions::new()
        .mode(mode)
        .ttl(std::time::Duration::from_secs(global.lock_ttl))
        .wait(std::time::Duration::from_secs(global.lock_wait))
}

pub(crate) fn passphrase(global: &GlobalArgs) -> Result<Passphrase, Failure> {
    config::load_passphrase(global.passphrase_file.as_deref()).map_err(Failure::usage)
}

/// The workload: with `--pebble`, the Pebble daemon's workload (and `--service` a Pebble
/// service); otherwise this host, and with `--service` its systemd units.
pub(crate) fn container(global: &GlobalArgs, layout: &Layout) -> Box<dyn Container> {
    if let Some(socket) = &global.pebble {
        Box::new(PebbleContainer::new(socket.clone()))
    } else if layout.service.is_some() {
        Box::new(LocalContainer::with_services(SystemdServices::new()))
    } else {
        Box::new(LocalContainer::new())
    }
}

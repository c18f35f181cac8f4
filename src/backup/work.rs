//! The private work dir of one run (passphrase, aws config, GnuPG home, CA bundle,
//! snapshot, staging) and how its scripts run: shared by create, verify and restore.

use std::time::Duration;

use crate::backup::layout::{HomeserverConfig, Layout};
use crate::backup::plan::{self, BackupOptions, ScriptCall, WorkDir};
use crate::container::{Container, ExecOptions, MakeDirOptions, PushOptions};
use crate::error::{ConfigError, ContainerError};
use crate::s3::S3Parameters;

/// Options for a file only the workload user may read (mode 0600).
pub(crate) fn private_file(layout: &Layout) -> PushOptions {
    PushOptions {
        make_dirs: false,
        permissions: Some(0o600),
        user: layout.user.clone(),
        group: layout.group.clone(),
    }
}

fn private_dir(layout: &Layout) -> MakeDirOptions {
    MakeDirOptions {
        make_parents: false,
        permissions: Some(0o700),
        user: layout.user.clone(),
        group: layout.group.clone(),
    }
}

/// Creates the work dir (mode 0700, owned by the workload user). It must not exist:
/// a run never reuses or removes a dir it did not make.
pub(crate) async fn make_work_dir<C: Container + ?Sized>(
    container: &C,
    layout: &Layout,
    work: &WorkDir,
) -> Result<(), ContainerError> {
    container.make_dir(&work.dir, private_dir(layout)).await
}

/// Puts the passphrase, the aws CLI config, the CA bundle and a GnuPG home in the work
/// dir. The caller removes the work dir whatever happens.
pub(crate) async fn fill_work_dir<C: Container + ?Sized>(
    container: &C,
    params: &S3Parameters,
    passphrase: &str,
    layout: &Layout,
    work: &WorkDir,
    options: &BackupOptions,
) -> Result<(), ContainerError> {
    container
        .make_dir(&work.file("gnupg"), private_dir(layout))
        .await?;
    container
        .push(
            &work.file("passphrase"),
            passphrase.as_bytes(),
            private_file(layout),
        )
        .await?;
    let config = plan::aws_config_file(params, options);
    container
        .push(
            &work.file("aws-config"),
            config.as_bytes(),
            private_file(layout),
        )
        .await?;
    if let Some(bundle) = plan::ca_bundle(params) {
        container
            .push(
                &work.file("ca-bundle.pem"),
                bundle.as_bytes(),
                private_file(layout),
            )
            .await?;
    }
    Ok(())
}

/// Removes the work dir, logging (not failing) when it cannot.
pub(crate) async fn remove_work_dir<C: Container + ?Sized>(container: &C, work: &WorkDir) {
    if let Err(e) = container.remove_path(&work.dir, true).await {
        tracing::warn!(dir = %work.dir, error = %e, "could not remove the work dir");
    }
}

/// How a script of the plan runs: as the workload user, in the work dir.
pub(crate) fn exec_options(
    layout: &Layout,
    call: &ScriptCall,
    work: &WorkDir,
    timeout: Option<Duration>,
) -> ExecOptions {
    ExecOptions {
        environment: call.env.clone(),
        working_dir: Some(work.dir.clone()),
        user: layout.user.clone(),
        group: layout.group.clone(),
        timeout,
        stdin: None,
    }
}

/// A small text file a script wrote, trimmed; `None` when it cannot be read.
pub(crate) async fn read_text<C: Container + ?Sized>(container: &C, path: &str) -> Option<String> {
    container
        .pull(path)
        .await
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
}

/// Reads and parses the workload's `homeserver.yaml`.
pub(crate) async fn read_homeserver_config<C: Container + ?Sized>(
    container: &C,
    layout: &Layout,
) -> Result<HomeserverConfig, ConfigError> {
    let path = layout.homeserver_config_path();
    let unreadable = |message: String| ConfigError::Parse {
        what: path.clone(),
        message,
    };
    let bytes = container
        .pull(&layout.host_path(&path))
        .await
        .map_err(|e| unreadable(format!("cannot read it: {e}")))?;
    let yaml = String::from_utf8(bytes).map_err(|_| unreadable("not valid UTF-8".into()))?;
    HomeserverConfig::parse(&yaml, &path, layout)
}

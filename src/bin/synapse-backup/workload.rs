//! The layout the commands run with: checked, with its tools resolved and, as root
//! without `--user`, the data dir's owner to run as (on this host, or in the
//! `--pebble` workload).

use std::path::Path;

use synapse_backup::{Container, ContainerError, ExecOptions, Layout, PebbleContainer, Transfer};

use crate::cli::GlobalArgs;
use crate::config;
use crate::failure::Failure;

/// The layout with its tools resolved, for the commands that run pipelines over a
/// Synapse tree (create, restore): its config and data dirs must exist. The aws CLI is
/// needed only with `--transfer workload`.
pub(crate) async fn pipeline_layout(global: &GlobalArgs) -> Result<Layout, Failure> {
    let Some(socket) = &global.pebble else {
        let mut layout = config::layout(&global.layout).map_err(Failure::usage)?;
        check_tree(&layout)?;
        let aws = global.transfer == Transfer::Workload;
        config::resolve_tools(&mut layout, aws).map_err(Failure::usage)?;
        return Ok(layout);
    };
    let layout = config::workload_layout(&global.layout).map_err(Failure::usage)?;
    let workload = PebbleContainer::new(socket.clone());
    check_workload_tree(&workload, &layout, socket).await?;
    workload_owner(&workload, layout, socket).await
}

/// The layout with its tools resolved, for the commands that touch no live data
/// (verify, restore --target): without a Synapse tree under --root, their work dir is
/// made in the temp dir.
pub(crate) async fn reader_layout(global: &GlobalArgs) -> Result<Layout, Failure> {
    let Some(socket) = &global.pebble else {
        let mut layout = config::layout(&global.layout).map_err(Failure::usage)?;
        let aws = global.transfer == Transfer::Workload;
        config::resolve_tools(&mut layout, aws).map_err(Failure::usage)?;
        return Ok(layout);
    };
    let layout = config::workload_layout(&global.layout).map_err(Failure::usage)?;
    let workload = PebbleContainer::new(socket.clone());
    workload_owner(&workload, layout, socket).await
}

/// Fails, naming --root, --data-dir and --config-dir, when the config or data dir is
/// missing.
pub(crate) fn check_tree(layout: &Layout) -> Result<(), Failure> {
    for (field, dir) in [
        ("config_dir", &layout.config_dir),
        ("data_dir", &layout.data_dir),
    ] {
        let flag = config::flag(field);
        let full = Path::new(&layout.root).join(dir.trim_start_matches('/'));
        if !full.is_dir() {
            return Err(Failure::usage(format!(
                "no Synapse tree here: {flag} {dir} does not exist under --root {} ({} is missing); \
                 pass --root DIR where the tree is (e.g. a mounted volume), or --data-dir / \
                 --config-dir where this one keeps its files",
                layout.root,
                full.display()
            )));
        }
    }
    Ok(())
}

/// A workload path under the layout's root.
pub(crate) fn in_root(layout: &Layout, dir: &str) -> String {
    format!(
        "{}/{}",
        layout.root.trim_end_matches('/'),
        dir.trim_start_matches('/')
    )
}

/// A container error on the `--pebble` workload: a failure naming the socket.
pub(crate) fn workload_failure(socket: &Path, error: &ContainerError) -> Failure {
    let shown = socket.display().to_string();
    let message = error.to_string();
    if message.contains(&shown) {
        Failure::failed(message)
    } else {
        Failure::failed(format!("the Pebble workload at {shown}: {message}"))
    }
}

/// [`check_tree`] in the Pebble workload: the config and data dirs must exist there.
pub(crate) async fn check_workload_tree(
    workload: &PebbleContainer,
    layout: &Layout,
    socket: &Path,
) -> Result<(), Failure> {
    for (field, dir) in [
        ("config_dir", &layout.config_dir),
        ("data_dir", &layout.data_dir),
    ] {
        let full = in_root(layout, dir);
        let found = workload
            .exists(&full)
            .await
            .map_err(|e| workload_failure(socket, &e))?;
        if !found {
            let flag = config::flag(field);
            return Err(Failure::usage(format!(
                "no Synapse tree in the Pebble workload at {}: {flag} {dir} does not exist under \
                 --root {} ({full} is missing); pass --data-dir / --config-dir where it keeps \
                 its files",
                socket.display(),
                layout.root,
            )));
        }
    }
    Ok(())
}

/// The layout with, when `--user` is not given, the owner and group of the data dir in
/// the workload (read there with `stat`, never from this host's file system), as
/// [`config::layout`] does for a local tree: a data dir owned by root, or missing, keeps
/// the daemon's user. An owner with no name in the workload's passwd is run as by its
/// numeric ids (`Layout::user_id`/`group_id`).
pub(crate) async fn workload_owner(
    workload: &PebbleContainer,
    layout: Layout,
    socket: &Path,
) -> Result<Layout, Failure> {
    if layout.user.is_some() || layout.user_id.is_some() {
        return Ok(layout);
    }
    let data = in_root(&layout, &layout.data_dir);
    if !workload
        .exists(&data)
        .await
        .map_err(|e| workload_failure(socket, &e))?
    {
        return Ok(layout);
    }
    // `stat` without -L: a link at the data dir is reported as itself, never followed.
    let argv: Vec<String> = ["stat", "-c", "%u:%g:%U:%G", "--", &data]
        .iter()
        .map(ToString::to_string)
        .collect();
    let options = ExecOptions {
        working_dir: Some("/".into()),
        timeout: Some(std::time::Duration::from_secs(60)),
        ..ExecOptions::default()
    };
    let out = workload
        .exec(&argv, options)
        .await
        .map_err(|e| workload_failure(socket, &e))?;
    let text = out.stdout_text();
    let owner = parse_owner(text.trim()).ok_or_else(|| {
        Failure::failed(format!(
            "the Pebble workload at {}: cannot read the owner of {data} from `stat` \
             (it printed {:?}); pass --user and --group",
            socket.display(),
            text.trim()
        ))
    })?;
    if owner.uid == 0 {
        return Ok(layout);
    }
    let Some(user) = owner.user else {
        tracing::info!(uid = owner.uid, gid = owner.gid, dir = %data, "running the pipelines as the owner of the data dir in the workload (a uid with no name)");
        return Ok(layout
            .user(None)
            .group(None)
            .user_id(Some(owner.uid))
            .group_id(Some(owner.gid)));
    };
    let group = layout.group.clone().or(owner.group);
    tracing::info!(user, group = ?group, dir = %data, "running the pipelines as the owner of the data dir in the workload");
    Ok(layout.user(Some(user)).group(group))
}

/// The data dir's owner as `stat -c %u:%g:%U:%G` prints it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Owner {
    uid: u32,
    gid: u32,
    user: Option<String>,
    group: Option<String>,
}

/// Parses `uid:gid:user:group`; `UNKNOWN` (stat's word for an id without a name) is
/// no name.
pub(crate) fn parse_owner(text: &str) -> Option<Owner> {
    let mut fields = text.split(':');
    let uid = fields.next()?.parse().ok()?;
    let gid = fields.next()?.parse().ok()?;
    let name = |field: &str| (!field.is_empty() && field != "UNKNOWN").then(|| field.to_string());
    let user = name(fields.next()?);
    let group = name(fields.next()?);
    fields.next().is_none().then_some(Owner {
        uid,
        gid,
        user,
        group,
    })
}

#[cfg(test)]
mod tests {
    use super::{Owner, parse_owner};

    #[test]
    fn the_workload_owner_is_read_from_stat_with_unknown_names_as_none() {
        assert_eq!(
            parse_owner("65534:65534:nobody:nogroup"),
            Some(Owner {
                uid: 65534,
                gid: 65534,
                user: Some("nobody".into()),
                group: Some("nogroup".into()),
            })
        );
        assert_eq!(
            parse_owner("1234:5678:UNKNOWN:UNKNOWN"),
            Some(Owner {
                uid: 1234,
                gid: 5678,
                user: None,
                group: None,
            })
        );
        for bad in ["", "x:1:a:b", "1:x:a:b", "1:2:a:b:c", "1:2"] {
            assert_eq!(parse_owner(bad), None, "{bad:?}");
        }
    }
}

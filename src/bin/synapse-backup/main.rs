//! `synapse-backup`: back up and restore a Matrix Synapse homeserver to S3-compatible
//! storage from the command line. It drives [`LocalContainer`](synapse_backup::LocalContainer)
//! (this host, or a tree elsewhere with `--root`), or with `--pebble SOCKET` a
//! Pebble-managed workload through [`PebbleContainer`](synapse_backup::PebbleContainer),
//! with the same code a charm uses. Run `synapse-backup --help` for the flags,
//! environment variables and exit codes.
//!
//! `main` parses the command line and hands it to the subcommand's module under
//! [`commands`]; [`output`] holds what they share for printing.

mod cli;
mod commands;
mod config;
mod diagnose;
mod failure;
mod interrupt;
mod output;
mod target;
mod workload;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command};
use crate::failure::{Failure, usage_exit};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_exit(e),
    };
    if cli.global.s3.is_none() {
        return usage_exit(Cli::command().error(
            clap::error::ErrorKind::MissingRequiredArgument,
            "the following required argument was not provided: --s3 <FILE>\n\n\
             It is a YAML or JSON file with the s3-integrator keys (bucket, endpoint or region, …).",
        ));
    }
    output::init(cli.global.verbose, cli.global.quiet, cli.global.json);
    let json = cli.global.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return Failure::failed(format!("cannot start the async runtime: {e}")).report(json);
        }
    };
    let result = runtime.block_on(run(cli));
    drop(runtime);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(json),
    }
}

/// Runs the subcommand.
async fn run(cli: Cli) -> Result<(), Failure> {
    let global = &cli.global;
    match cli.command {
        Command::Check => commands::check::check(global).await,
        Command::Create {
            snapshot_timeout,
            new_passphrase,
            incremental,
            compression,
        } => {
            let options = commands::create::CreateFlags {
                snapshot_timeout: (snapshot_timeout > 0).then_some(snapshot_timeout),
                new_passphrase,
                incremental,
                compression,
            };
            commands::create::create(global, &options).await
        }
        Command::List => commands::list::list(global).await,
        Command::Ls { id } => commands::ls::ls(global, &id).await,
        Command::Verify {
            id: Some(id),
            temp_work_dir,
            ..
        } => commands::verify::verify(global, &id, temp_work_dir).await,
        Command::Verify {
            id: None,
            temp_work_dir,
            jobs,
            ..
        } => commands::verify::verify_all(global, temp_work_dir, usize::from(jobs)).await,
        Command::Restore {
            id,
            target: Some(dir),
            include,
            keep_one_time_keys,
            ..
        } => commands::restore::extract(global, &id, &dir, include, keep_one_time_keys).await,
        Command::Restore {
            id,
            yes,
            keep_one_time_keys,
            ..
        } => commands::restore::restore(global, &id, yes, keep_one_time_keys).await,
        Command::Delete {
            id,
            with_dependents,
        } => commands::delete::delete(global, &id, with_dependents).await,
        Command::Unlock { yes } => commands::unlock::unlock(global, yes).await,
        Command::Prune {
            keep_at_least,
            older_than_days,
            dry_run,
        } => commands::prune::prune(global, keep_at_least, older_than_days, dry_run).await,
    }
}

//! Shared set-up for the CLI tests (`cli/operator.rs`, `cli/commands.rs`, …): a
//! synthetic Synapse tree, an in-process S3 server, a good s3 file and passphrase file,
//! and the binary with a clean environment.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::cargo::cargo_bin_cmd;
use serde_json::Value;

use super::s3_server::{ServerOptions, TestS3Server};
use super::synapse_tree::{SynapseTree, TreeSpec};

pub const BUCKET: &str = "synapse-backups";
pub const PREFIX: &str = "synapse/backups";
pub const PASSPHRASE: &str = "correct horse battery staple";

/// The variables the CLI reads, removed so the caller's environment cannot leak in.
pub const CLI_VARS: [&str; 8] = [
    "AWS_SESSION_TOKEN",
    "SYNAPSE_BACKUP_ROOT",
    "SYNAPSE_BACKUP_S3",
    "SYNAPSE_BACKUP_PASSPHRASE",
    "SYNAPSE_BACKUP_PASSPHRASE_FILE",
    "SYNAPSE_BACKUP_ACCESS_KEY",
    "SYNAPSE_BACKUP_SECRET_KEY",
    "RUST_LOG",
];

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub tree: SynapseTree,
    pub server: TestS3Server,
    pub s3_file: PathBuf,
    pub passphrase_file: PathBuf,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture::with_spec(&TreeSpec::default())
    }

    pub fn with_spec(spec: &TreeSpec) -> Fixture {
        super::env::aws();
        let dir = tempfile::tempdir().unwrap();
        let tree = SynapseTree::create(&dir.path().join("root"), spec);
        let server = TestS3Server::start_blocking(ServerOptions::default());
        server.create_bucket(BUCKET);
        let passphrase_file = dir.path().join("passphrase");
        fs::write(&passphrase_file, format!("{PASSPHRASE}\n")).unwrap();
        // Private, as the CLI asks of a passphrase file (else it warns).
        fs::set_permissions(
            &passphrase_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let mut f = Fixture {
            dir,
            tree,
            server,
            s3_file: PathBuf::new(),
            passphrase_file,
        };
        f.s3_file = f.s3_with("s3.yaml", |text| text);
        f
    }

    /// An s3 file like the good one, changed by `edit`.
    pub fn s3_with(&self, name: &str, edit: impl FnOnce(String) -> String) -> PathBuf {
        let text = format!(
            "access-key: {}\nsecret-key: {}\nbucket: {BUCKET}\nendpoint: {}\n\
             region: us-east-1\ns3-uri-style: path\npath: /{PREFIX}/\n",
            self.server.access_key, self.server.secret_key, self.server.endpoint
        );
        let path = self.dir.path().join(name);
        fs::write(&path, edit(text)).unwrap();
        path
    }

    /// The binary with a clean environment and no flags.
    pub fn bare(&self) -> assert_cmd::Command {
        let mut cmd = cargo_bin_cmd!("synapse-backup");
        for var in CLI_VARS {
            cmd.env_remove(var);
        }
        // A file without keys falls back to the AWS chain: never ask 169.254.169.254.
        cmd.env("AWS_EC2_METADATA_DISABLED", "true");
        cmd
    }

    /// The binary with `--root ROOT`, `--s3 S3` and `--passphrase-file`.
    pub fn with(&self, root: &Path, s3: &Path) -> assert_cmd::Command {
        let mut cmd = self.bare();
        cmd.arg("--root")
            .arg(root)
            .arg("--s3")
            .arg(s3)
            .arg("--passphrase-file")
            .arg(&self.passphrase_file);
        cmd
    }

    /// The binary on the tree, with the s3 file `s3`.
    pub fn with_s3(&self, s3: &Path) -> assert_cmd::Command {
        self.with(&self.tree.root, s3)
    }

    /// The binary on `root`, with the good s3 file.
    pub fn at(&self, root: &Path) -> assert_cmd::Command {
        self.with(root, &self.s3_file)
    }

    pub fn cmd(&self) -> assert_cmd::Command {
        self.at(&self.tree.root)
    }

    pub fn ok(&self, args: &[&str]) -> Output {
        expect(0, &mut self.cmd(), args)
    }

    /// A new backup's id.
    pub fn create(&self) -> String {
        stdout(&self.ok(&["create"])).trim().to_string()
    }

    /// The stored object of `key` under the prefix.
    pub fn object(&self, key: &str) -> PathBuf {
        self.server.object_path(BUCKET, &format!("{PREFIX}/{key}"))
    }

    pub fn assert_no_secrets(&self, out: &Output) {
        let text = format!("{}{}", stdout(out), stderr(out));
        for secret in [
            self.server.access_key.as_str(),
            self.server.secret_key.as_str(),
            PASSPHRASE,
        ] {
            assert!(!text.contains(secret), "a secret was printed:\n{text}");
        }
    }
}

/// Runs `cmd args`, asserting its exit code.
pub fn expect(code: i32, cmd: &mut assert_cmd::Command, args: &[&str]) -> Output {
    let out = cmd.args(args).output().expect("run synapse-backup");
    assert_eq!(
        out.status.code(),
        Some(code),
        "synapse-backup {args:?}\nstdout: {}\nstderr: {}",
        stdout(&out),
        stderr(&out)
    );
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", stdout(out)))
}

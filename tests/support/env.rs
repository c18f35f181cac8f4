//! Shared set-up for the backup integration tests: a synthetic Synapse tree in a temp
//! dir, an in-process S3 server, parameters, a layout rooted at the tree, and the real
//! tools found on PATH (the test command puts the aws CLI there).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use synapse_backup::{
    BackupError, BackupId, Container, Layout, RestoreOptions, S3Parameters, Stage,
    restore_backup_with,
};

use super::s3_server::TestS3Server;
use super::synapse_tree::{SynapseTree, TreeSpec, files_under, walk};

/// Fails (never skips) with an install hint when a tool is missing.
pub fn require_tool(tool: &str, hint: &str) -> PathBuf {
    let out = Command::new("bash")
        .arg("-c")
        .arg("command -v \"$1\"")
        .arg("bash")
        .arg(tool)
        .output()
        .unwrap();
    assert!(out.status.success(), "{tool} is not on PATH: {hint}");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The aws CLI on PATH.
pub fn aws() -> PathBuf {
    require_tool(
        "aws",
        "run the tests through ./scripts/test, which installs the aws CLI into a virtualenv, or `pip install awscli`",
    )
}

/// A tree, a server with a bucket, parameters and a layout.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub tree: SynapseTree,
    pub server: TestS3Server,
    pub params: S3Parameters,
    pub layout: Layout,
    pub bucket: String,
}

pub const PASSPHRASE: &str = "correct horse battery staple";

impl Env {
    pub async fn new(spec: &TreeSpec) -> Env {
        Self::with_path(spec, "synapse/backups").await
    }

    pub async fn with_path(spec: &TreeSpec, path: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let tree = SynapseTree::create(&root, spec);
        let server = TestS3Server::start().await;
        let bucket = "synapse-backups".to_string();
        server.create_bucket(&bucket);
        let mut data = server.relation_data(&bucket);
        data.insert("path".into(), path.into());
        let params = S3Parameters::from_relation_data(&data).unwrap();
        let layout = layout_for(&root);
        Env {
            dir,
            tree,
            server,
            params,
            layout,
            bucket,
        }
    }

    /// A backup of the tree with the default options.
    pub async fn create<C: synapse_backup::Container>(
        &self,
        container: &C,
    ) -> Result<synapse_backup::BackupReport, synapse_backup::BackupError> {
        synapse_backup::create_backup_with(
            container,
            &self.params,
            PASSPHRASE,
            &self.layout,
            &synapse_backup::BackupOptions::default(),
        )
        .await
    }

    /// Downloads (plain aws CLI), decrypts (plain gpg), with `zstd` decompresses (plain
    /// `zstd -d`) and extracts (plain tar) the object `key` into a new dir.
    pub fn manual_restore(&self, key: &str, zstd: bool) -> PathBuf {
        let out = self.dir.path().join(format!(
            "manual-{}{}",
            key.replace('/', "_"),
            if zstd { "-zstd" } else { "" }
        ));
        std::fs::create_dir_all(&out).unwrap();
        let pass = self.dir.path().join("pass");
        std::fs::write(&pass, PASSPHRASE).unwrap();
        let unpack = if zstd { "zstd -d" } else { "cat" };
        sh(
            r#"aws s3 cp --only-show-errors --endpoint-url "$ENDPOINT" "s3://$1/$2" - |
               gpg --batch --no-tty --pinentry-mode loopback --passphrase-file "$3" --decrypt 2>/dev/null |
               $5 | tar -x -C "$4""#,
            self,
            &[
                &self.bucket,
                key,
                &pass.to_string_lossy(),
                &out.to_string_lossy(),
                unpack,
            ],
        );
        out
    }

    /// The s3s-fs directory of the bucket (objects are files there).
    pub fn bucket_dir(&self) -> PathBuf {
        self.server.root.join(&self.bucket)
    }

    /// The s3s-fs file of the object `key`.
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.bucket_dir().join(key)
    }

    /// Every object file in the bucket (s3s-fs's own metadata left out).
    pub fn objects_in_bucket(&self) -> Vec<PathBuf> {
        walk(&self.bucket_dir())
            .into_iter()
            .filter(|p| !p.to_string_lossy().contains(".s3s"))
            .collect()
    }

    /// The work dirs (`.synapse-backup-*`) left in the data dir, by name.
    pub fn work_dirs_left(&self) -> Vec<String> {
        std::fs::read_dir(&self.tree.data)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".synapse-backup-"))
            .collect()
    }

    /// The environment's relation data (with its `path`) and `extra` keys, parsed.
    pub fn params_with(&self, extra: &[(&str, &str)]) -> S3Parameters {
        let mut data = self.server.relation_data(&self.bucket);
        data.insert("path".into(), "synapse/backups".into());
        for (k, v) in extra {
            data.insert(k.to_string(), v.to_string());
        }
        S3Parameters::from_relation_data(&data).unwrap()
    }

    /// The CLI's `--s3` file (`s3.yaml`) and `--passphrase-file` (`passphrase`, 0600)
    /// for this environment, written into its temp dir.
    pub fn cli_files(&self) -> (PathBuf, PathBuf) {
        let s3 = self.dir.path().join("s3.yaml");
        std::fs::write(
            &s3,
            format!(
                "access-key: {}\nsecret-key: {}\nbucket: {}\nendpoint: {}\nregion: us-east-1\n\
                 s3-uri-style: path\npath: synapse/backups\n",
                self.server.access_key, self.server.secret_key, self.bucket, self.server.endpoint
            ),
        )
        .unwrap();
        let pass = self.dir.path().join("passphrase");
        std::fs::write(&pass, format!("{PASSPHRASE}\n")).unwrap();
        std::fs::set_permissions(&pass, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        (s3, pass)
    }

    /// A restore of `id` that must fail: returns its error after asserting that the
    /// live data is exactly as it was and that no work dir is left.
    pub async fn assert_restore_fails<C: Container + ?Sized>(
        &self,
        c: &C,
        id: &BackupId,
        passphrase: &str,
        layout: &Layout,
        options: &RestoreOptions,
    ) -> BackupError {
        let before = files_under(&self.tree.data);
        let e = restore_backup_with(c, &self.params, passphrase, id, layout, options)
            .await
            .unwrap_err();
        assert_eq!(
            files_under(&self.tree.data),
            before,
            "live data changed by a failed restore ({e})"
        );
        assert!(
            self.work_dirs_left().is_empty(),
            "{:?}",
            self.work_dirs_left()
        );
        e
    }

    /// `layout` with its gpg a wrapper script `name` in the test's dir: at each
    /// `--decrypt` call it first runs the bash lines `on_decrypt` (`$SB_WORK` is the
    /// run's work dir, `$$` the wrapper's pid, which an `exec` there keeps), then runs
    /// the real gpg with the same arguments.
    pub fn gpg_on_decrypt(&self, layout: &Layout, name: &str, on_decrypt: &str) -> Layout {
        let gpg = self.executable(
            name,
            &format!(
                "#!/bin/bash\nfor a in \"$@\"; do if [ \"$a\" = --decrypt ]; then\n{on_decrypt}\nfi; done\nexec gpg \"$@\"\n"
            ),
        );
        layout.clone().gpg(gpg)
    }

    /// Writes `text` to the executable file `name` in the test's dir (a wrapper that
    /// stands in for one of the workload's tools); gives its path.
    pub fn executable(&self, name: &str, text: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.to_string_lossy().into_owned()
    }

    /// Makes a create's tar fail part-way through: the pipeline runs as `nobody`, who
    /// can read the whole tree but one file, `local_content/zz-unreadable` (it sorts
    /// last, so tar has read everything else by then); the database is removed, so
    /// the pipeline is tar alone. Returns that file and `layout` run as `nobody`.
    pub fn make_tar_fail_on_its_last_file(&self, layout: &Layout) -> (PathBuf, Layout) {
        std::fs::remove_file(self.tree.data.join("homeserver.db")).unwrap();
        sh(
            "chmod -R a+rX \"$1\" && chmod 0755 \"$2\" && chown nobody:nogroup \"$1/data\"",
            self,
            &[
                &self.tree.root.to_string_lossy(),
                &self.dir.path().to_string_lossy(),
            ],
        );
        let unreadable = self.tree.media.join("local_content/zz-unreadable");
        std::fs::write(&unreadable, "no").unwrap();
        std::fs::set_permissions(
            &unreadable,
            std::os::unix::fs::PermissionsExt::from_mode(0o000),
        )
        .unwrap();
        let layout = layout
            .clone()
            .user(Some("nobody".into()))
            .group(Some("nogroup".into()));
        (unreadable, layout)
    }

    /// A tmpfs of `size` (`4m`) mounted at `<root>/<name>` until the guard drops.
    pub fn small_tmpfs(&self, name: &str, size: &str) -> Unmount {
        let small = self.tree.root.join(name);
        std::fs::create_dir_all(&small).unwrap();
        mount_tmpfs(&small, size)
    }
}

/// Unmounts its path when dropped.
pub struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Mounts a tmpfs of `size` at the existing dir `at` until the guard drops (as root).
pub fn mount_tmpfs(at: &Path, size: &str) -> Unmount {
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(at)
        .status()
        .expect("mount (util-linux) is needed");
    assert!(
        mounted.success(),
        "this test mounts a small tmpfs and must run as root"
    );
    Unmount(at.to_path_buf())
}

/// A layout rooted at `root` that runs as the current user with the tools on PATH.
pub fn layout_for(root: &Path) -> Layout {
    Layout::default()
        .root(root.to_string_lossy().into_owned())
        .user(None)
        .group(None)
        .service(None)
        .bash("bash")
        .aws(aws().to_string_lossy().into_owned())
}

/// Runs a shell pipeline with S3 credentials in the environment; returns stdout bytes.
pub fn sh(script: &str, env: &Env, args: &[&str]) -> Vec<u8> {
    let gnupg = env.dir.path().join("gnupg-test");
    std::fs::create_dir_all(&gnupg).unwrap();
    let mut perms = std::fs::metadata(&gnupg).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o700);
    std::fs::set_permissions(&gnupg, perms).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .arg("bash")
        .args(args)
        .env("AWS_ACCESS_KEY_ID", &env.server.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &env.server.secret_key)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", &env.server.endpoint)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("GNUPGHOME", &gnupg)
        .env("ENDPOINT", &env.server.endpoint)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "shell failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Asserts that `e` is tar's failure to read a file (see
/// [`Env::make_tar_fail_on_its_last_file`]).
pub fn assert_tar_was_denied(e: &BackupError) {
    match e {
        BackupError::StageFailed {
            stage: Stage::Tar,
            stderr,
            ..
        } => assert!(stderr.contains("Permission denied"), "{stderr}"),
        other => panic!("expected a tar failure, got {other}"),
    }
}

/// Cancels `cancel` as soon as the file `seen` exists (a fake tool writes it when it
/// starts hanging), polling every 50 ms.
pub fn cancel_when_exists(
    seen: &Path,
    cancel: synapse_backup::CancelToken,
) -> tokio::task::JoinHandle<()> {
    let seen = seen.to_path_buf();
    tokio::spawn(async move {
        while !seen.exists() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        cancel.cancel();
    })
}

//! Credentials besides static keys: with an `--s3` file that holds no keys, the CLI uses
//! the standard AWS chain for both the SDK client and the real aws CLI of the pipeline
//! (keys from the environment, a profile in the user's config file, a profile in the
//! shared credentials file), the per-run config file keeps the user's profiles, static
//! keys keep instance metadata off, and relation data never falls back to the chain.
//!
//! Every test runs with `AWS_EC2_METADATA_DISABLED=true` and a private `HOME`, so
//! nothing is asked of 169.254.169.254 and no file of the machine's user is read: the
//! only network is the in-process S3 server on 127.0.0.1.

use crate::support::{env, s3_server, synapse_tree};

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::process::Output;

use assert_cmd::cargo::cargo_bin_cmd;
use s3_server::{ServerOptions, TestS3Server};
use serde::Deserialize as _;
use synapse_backup::testing::internals::{self as plan, WorkDir};
use synapse_backup::{AmbientCredentials, CredentialSource};
use synapse_backup::{BackupOptions, Layout, S3Parameters};
use synapse_tree::{SynapseTree, TreeSpec};

const BUCKET: &str = "synapse-backups";
const PASSPHRASE: &str = "correct horse battery staple";

/// Everything the CLI or the AWS tools would read from the caller's environment.
const CLEARED: [&str; 27] = [
    "SYNAPSE_BACKUP_ROOT",
    "SYNAPSE_BACKUP_S3",
    "SYNAPSE_BACKUP_PASSPHRASE",
    "SYNAPSE_BACKUP_PASSPHRASE_FILE",
    "SYNAPSE_BACKUP_ACCESS_KEY",
    "SYNAPSE_BACKUP_SECRET_KEY",
    "RUST_LOG",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_CA_BUNDLE",
    "AWS_SDK_LOAD_CONFIG",
];

/// A tree, a server with a bucket, an `--s3` file WITHOUT keys, a passphrase file and
/// an empty private `HOME`.
struct Fixture {
    dir: tempfile::TempDir,
    tree: SynapseTree,
    server: TestS3Server,
    s3_file: PathBuf,
    passphrase_file: PathBuf,
    home: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        env::aws();
        let dir = tempfile::tempdir().unwrap();
        let tree = SynapseTree::create(&dir.path().join("root"), &TreeSpec::default());
        let server = TestS3Server::start_blocking(ServerOptions::default());
        server.create_bucket(BUCKET);
        let s3_file = dir.path().join("s3.yaml");
        fs::write(
            &s3_file,
            format!(
                "bucket: {BUCKET}\nendpoint: {}\nregion: us-east-1\ns3-uri-style: path\n\
                 path: synapse/backups\n",
                server.endpoint
            ),
        )
        .unwrap();
        let passphrase_file = dir.path().join("passphrase");
        fs::write(&passphrase_file, format!("{PASSPHRASE}\n")).unwrap();
        let home = dir.path().join("home");
        fs::create_dir(&home).unwrap();
        Fixture {
            dir,
            tree,
            server,
            s3_file,
            passphrase_file,
            home,
        }
    }

    /// The binary with the standard flags, a clean environment, the private `HOME`
    /// and instance metadata off, plus `vars`.
    fn cmd(&self, vars: &[(&str, String)]) -> assert_cmd::Command {
        let mut cmd = cargo_bin_cmd!("synapse-backup");
        for var in CLEARED {
            cmd.env_remove(var);
        }
        cmd.env("HOME", &self.home)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .arg("--root")
            .arg(&self.tree.root)
            .arg("--s3")
            .arg(&self.s3_file)
            .arg("--passphrase-file")
            .arg(&self.passphrase_file);
        for (name, value) in vars {
            cmd.env(name, value);
        }
        cmd
    }

    fn run(&self, code: i32, vars: &[(&str, String)], args: &[&str]) -> Output {
        let out = self.cmd(vars).args(args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "synapse-backup {args:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !all.contains(&self.server.secret_key) && !all.contains(PASSPHRASE),
            "a secret was printed:\n{all}"
        );
        out
    }

    /// `create`, then `verify` and `list` of the new backup, all with `vars`: the
    /// backup was uploaded and read back by the pipeline's aws CLI, and listed by the
    /// SDK client, with the credentials the chain found.
    fn round_trip(&self, vars: &[(&str, String)]) {
        let out = self.run(0, vars, &["create"]);
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            id.parse::<synapse_backup::BackupId>().is_ok(),
            "create printed {id:?}"
        );
        self.run(0, vars, &["verify", &id]);
        let out = self.run(0, vars, &["list", "--json"]);
        let listed = String::from_utf8_lossy(&out.stdout);
        assert!(listed.contains(&id), "{listed}");
        assert!(
            !synapse_tree::walk(&self.server.root.join(BUCKET)).is_empty(),
            "nothing in the bucket"
        );
    }
}

/// Old code: exit 2, "access-key is required … put access-key and secret-key in the
/// file, or set SYNAPSE_BACKUP_ACCESS_KEY and SYNAPSE_BACKUP_SECRET_KEY".
#[test]
fn keys_from_the_aws_environment_serve_the_sdk_and_the_pipeline() {
    let f = Fixture::new();
    f.round_trip(&[
        ("AWS_ACCESS_KEY_ID", f.server.access_key.clone()),
        ("AWS_SECRET_ACCESS_KEY", f.server.secret_key.clone()),
    ]);
}

/// The keys are only in a profile of the user's config file, which the per-run config
/// file would hide if it replaced it: the pipeline's aws CLI must still find them.
/// Old code: exit 2, access-key is required.
#[test]
fn a_profile_in_the_users_config_file_is_not_hidden_by_the_per_run_config() {
    let f = Fixture::new();
    let config = f.dir.path().join("aws-config");
    fs::write(
        &config,
        format!(
            "[default]\nregion = eu-west-1\n\n[profile backups]\n\
             aws_access_key_id = {}\naws_secret_access_key = {}\n\
             s3 =\n  addressing_style = virtual\n  max_concurrent_requests = 1\n",
            f.server.access_key, f.server.secret_key
        ),
    )
    .unwrap();
    f.round_trip(&[
        ("AWS_CONFIG_FILE", config.display().to_string()),
        ("AWS_PROFILE", "backups".into()),
    ]);
    // The wrong profile has no keys: nothing else gave the pipeline any.
    let out = f.run(
        2,
        &[
            ("AWS_CONFIG_FILE", config.display().to_string()),
            ("AWS_PROFILE", "default".into()),
        ],
        &["list"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AWS credential chain"), "{err}");
}

/// Old code: exit 2, access-key is required.
#[test]
fn a_profile_in_the_shared_credentials_file_with_aws_profile() {
    let f = Fixture::new();
    let credentials = f.dir.path().join("aws-credentials");
    fs::write(
        &credentials,
        format!(
            "[backups]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            f.server.access_key, f.server.secret_key
        ),
    )
    .unwrap();
    f.round_trip(&[
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            credentials.display().to_string(),
        ),
        ("AWS_PROFILE", "backups".into()),
    ]);
}

/// The default files in `HOME` count too (the CLI's `HOME`, given to the pipeline as
/// an absolute path since it may run with another one). Old code: exit 2.
#[test]
fn the_default_credentials_file_in_home_is_found() {
    let f = Fixture::new();
    fs::create_dir(f.home.join(".aws")).unwrap();
    fs::write(
        f.home.join(".aws/credentials"),
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            f.server.access_key, f.server.secret_key
        ),
    )
    .unwrap();
    f.round_trip(&[]);
}

/// Old code: exit 2 too, but the message named only the file and the SYNAPSE_BACKUP_
/// variables, not the AWS chain.
#[test]
fn no_keys_anywhere_is_a_usage_error_naming_every_way_to_give_them() {
    let f = Fixture::new();
    let out = f.run(2, &[], &["list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "s3.yaml",
        "access-key",
        "SYNAPSE_BACKUP_ACCESS_KEY",
        "SYNAPSE_BACKUP_SECRET_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_PROFILE",
    ] {
        assert!(err.contains(needle), "{needle} not in {err}");
    }
}

fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Static keys: the pipeline gets them and `AWS_EC2_METADATA_DISABLED=true`. The AWS
/// chain: no key from us and no `AWS_EC2_METADATA_DISABLED` (unless the caller had
/// it), the chain's variables, and a per-run config file with the user's profiles and
/// no key of ours. Old code: no ambient source at all (does not compile: there is no
/// `AmbientCredentials`).
#[test]
fn static_keys_disable_instance_metadata_and_the_chain_leaves_it_on() {
    let layout = Layout::default();
    let work = WorkDir::at("/srv/synapse/.synapse-backup-x");
    let options = BackupOptions::default();

    let fixed = S3Parameters::builder("AKIDSTATIC", "static-secret", BUCKET)
        .endpoint("http://127.0.0.1:9000")
        .build()
        .unwrap();
    let env = plan::script_env(&layout, &fixed, &work);
    assert_eq!(env["AWS_EC2_METADATA_DISABLED"], "true");
    assert_eq!(env["AWS_ACCESS_KEY_ID"], "AKIDSTATIC");
    assert_eq!(env["AWS_CONFIG_FILE"], work.file("aws-config"));
    assert_eq!(
        env["AWS_SHARED_CREDENTIALS_FILE"],
        work.file("aws-credentials")
    );
    let config = plan::aws_config_file(&fixed, &options).unwrap();
    assert!(
        !config.contains("AKIDSTATIC") && !config.contains("static-secret"),
        "{config}"
    );

    let user_config = "[profile ops]\nrole_arn = arn:aws:iam::123456789012:role/backup\n\
                       web_identity_token_file = /var/run/token\n";
    let ambient = AmbientCredentials::new(
        [
            ("AWS_ACCESS_KEY_ID", "AKIDAMBIENT"),
            ("AWS_SECRET_ACCESS_KEY", "ambient-secret"),
            ("AWS_PROFILE", "ops"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/home/op/.aws/credentials"),
            ("AWS_REGION", "eu-west-3"),
        ],
        Some(user_config.into()),
    )
    .unwrap();
    let chain = S3Parameters::ambient_builder(BUCKET, ambient)
        .endpoint("http://127.0.0.1:9000")
        .s3_uri_style("path")
        .build()
        .unwrap();
    assert!(matches!(
        chain.credential_source(),
        CredentialSource::Ambient(a) if a.profile() == "ops"
    ));
    let env = plan::script_env(&layout, &chain, &work);
    assert!(!env.contains_key("AWS_EC2_METADATA_DISABLED"), "{env:?}");
    // The chain's own variables, so the aws CLI resolves and refreshes by itself.
    assert_eq!(env["AWS_ACCESS_KEY_ID"], "AKIDAMBIENT");
    assert_eq!(env["AWS_PROFILE"], "ops");
    assert_eq!(
        env["AWS_SHARED_CREDENTIALS_FILE"],
        "/home/op/.aws/credentials"
    );
    assert_eq!(env["AWS_CONFIG_FILE"], work.file("aws-config"));
    assert_eq!(env["AWS_DEFAULT_REGION"], "us-east-1");
    assert!(!env.contains_key("AWS_REGION"));
    let config = plan::aws_config_file(&chain, &options).unwrap();
    assert!(config.starts_with(user_config), "{config}");
    assert!(
        config.contains("[profile ops]\n") && config.contains("  addressing_style = path\n"),
        "{config}"
    );
    assert!(
        !config.contains("AKIDAMBIENT") && !config.contains("ambient-secret"),
        "{config}"
    );
    // The chain instance metadata setting is the caller's.
    let off = AmbientCredentials::new([("AWS_EC2_METADATA_DISABLED", "true")], None).unwrap();
    let off = S3Parameters::ambient_builder(BUCKET, off)
        .region("eu-west-1")
        .build()
        .unwrap();
    assert_eq!(
        plan::script_env(&layout, &off, &work)["AWS_EC2_METADATA_DISABLED"],
        "true"
    );
    // Debug and Display name the source, never a value of the chain.
    let shown = format!("{chain:?} {chain}");
    assert!(
        !shown.contains("AKIDAMBIENT") && !shown.contains("ambient-secret"),
        "{shown}"
    );
    assert!(shown.contains("AWS chain"), "{shown}");
}

/// Relation data without keys is still an error naming them; the chain is only for a
/// caller that opts in, and only when no key at all is given. On the old code these
/// errors were the same (this guards that the opt-in does not leak into relation
/// data), but `deserialize_with_ambient_credentials` did not exist.
#[test]
fn relation_data_without_keys_still_names_the_missing_fields() {
    let base = [
        ("bucket", BUCKET),
        ("endpoint", "http://127.0.0.1:9000"),
        ("region", "us-east-1"),
    ];
    let err = S3Parameters::from_relation_data(&params(&base)).unwrap_err();
    assert_eq!(err.fields(), ["access-key", "secret-key"], "{err}");
    let with_secret = S3Parameters::from_relation_data_with_secret(
        &params(&base),
        &params(&[("session-token", "t")]),
    )
    .unwrap_err();
    assert!(
        with_secret.fields().contains(&"access-key"),
        "{with_secret}"
    );
    let document = serde_json::json!({"bucket": BUCKET, "region": "us-east-1"});
    let err = S3Parameters::deserialize(&document)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("access-key") && err.contains("secret-key"),
        "{err}"
    );

    let ambient = || AmbientCredentials::new([("AWS_PROFILE", "p")], None).unwrap();
    let ok = S3Parameters::deserialize_with_ambient_credentials(&document, ambient()).unwrap();
    assert!(matches!(
        ok.credential_source(),
        CredentialSource::Ambient(_)
    ));
    assert_eq!(ok.access_key(), "");
    // One key given: not the chain, and the other key is named.
    let half = serde_json::json!({"bucket": BUCKET, "region": "us-east-1", "access-key": "AK"});
    let err = S3Parameters::deserialize_with_ambient_credentials(&half, ambient())
        .unwrap_err()
        .to_string();
    assert!(err.contains("secret-key"), "{err}");
    // A session token without keys is not the chain's either.
    let token = serde_json::json!({"bucket": BUCKET, "region": "us-east-1", "session-token": "t"});
    let err = S3Parameters::deserialize_with_ambient_credentials(&token, ambient())
        .unwrap_err()
        .to_string();
    assert!(err.contains("access-key"), "{err}");
    // A v1 databag still wants its secret.
    let v1 = serde_json::json!({"bucket": BUCKET, "region": "us-east-1", "secret-extra": "secret://x/y"});
    let err = S3Parameters::deserialize_with_ambient_credentials(&v1, ambient())
        .unwrap_err()
        .to_string();
    assert!(err.contains("secret-extra"), "{err}");
}

/// The per-run config file, read by the aws CLI's own botocore (the interpreter of the
/// `aws` on PATH): the selected profile has our s3 settings and keeps the user's
/// others, the profile it sources from is as the user wrote it, and no other profile
/// (nor its secrets) is there. Old code: no ambient source
/// (does not compile); the old per-run file held only `[default]`, so botocore found
/// no `ops` profile at all.
#[test]
fn botocore_reads_the_users_profiles_and_our_s3_settings() {
    let aws = env::aws();
    let script = fs::read_to_string(&aws).unwrap();
    let python = script
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("#!"))
        .expect("the aws CLI is a python script")
        .trim()
        .to_string();
    let user = "[default]\nregion = eu-west-1\n\n[profile base]\naws_access_key_id = AKIDBASE\n\
                [profile ops]\nrole_arn = arn:aws:iam::123456789012:role/backup\n\
                source_profile = base\ns3 =\n  addressing_style = virtual\n  \
                use_accelerate_endpoint = true\n\
                [profile other]\naws_access_key_id = AKIDOTHER\naws_secret_access_key = OTHERSECRET\n";
    let ambient = AmbientCredentials::new([("AWS_PROFILE", "ops")], Some(user.into())).unwrap();
    let chain = S3Parameters::ambient_builder(BUCKET, ambient)
        .endpoint("http://127.0.0.1:9000")
        .s3_uri_style("path")
        .build()
        .unwrap();
    let options = BackupOptions::default()
        .upload_concurrency(3)
        .part_size_mib(16);
    let text = plan::aws_config_file(&chain, &options).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("aws-config");
    fs::write(&file, &text).unwrap();
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(
            "import json, botocore.session\n\
             s = botocore.session.Session()\n\
             p = s.full_config['profiles']\n\
             print(json.dumps({'ops': p['ops'], 'base': p['base'], 'others': sorted(set(p) - {'ops', 'base'})}, sort_keys=True))",
        )
        .env("AWS_CONFIG_FILE", &file)
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("none"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        seen,
        serde_json::json!({
            "ops": {
                "role_arn": "arn:aws:iam::123456789012:role/backup",
                "source_profile": "base",
                "s3": {
                    "addressing_style": "path",
                    "max_concurrent_requests": "3",
                    "multipart_chunksize": "16MB",
                    "multipart_threshold": "16MB",
                    "use_accelerate_endpoint": "true",
                },
            },
            "base": {"aws_access_key_id": "AKIDBASE"},
            // Only what `ops` leads to reaches the workload user: not `default`, not
            // `other` and its secret (before: every profile of the caller's file).
            "others": [],
        }),
        "{text}"
    );
    assert!(
        !text.contains("OTHERSECRET") && !text.contains("eu-west-1"),
        "{text}"
    );
}

/// Run as root, the pipeline runs as the data dir's owner (`nobody` here), whose `HOME`
/// is not the caller's: it still finds the caller's profile (its config file, readable
/// by root only, reaches it as the per-run copy in its private work dir) and the
/// caller's `~/.aws/credentials` (given as an absolute path). Old code: exit 2,
/// access-key is required.
#[test]
fn as_root_the_pipeline_user_finds_the_callers_profile() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    assert!(nix::unistd::geteuid().is_root(), "run the tests as root");
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg(
            "chmod -R a+rX \"$1\" && chmod 0755 \"$2\" \"$3\" && \
             chown -R nobody:nogroup \"$1/data\"",
        )
        .arg("bash")
        .arg(&f.tree.root)
        .arg(f.dir.path())
        .arg(&f.home)
        .status()
        .unwrap();
    assert!(status.success());
    let aws_dir = f.home.join(".aws");
    fs::create_dir(&aws_dir).unwrap();
    fs::set_permissions(&aws_dir, fs::Permissions::from_mode(0o755)).unwrap();
    let config = aws_dir.join("config");
    fs::write(&config, "[profile backups]\nregion = eu-west-1\n").unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
    let credentials = aws_dir.join("credentials");
    fs::write(
        &credentials,
        format!(
            "[backups]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            f.server.access_key, f.server.secret_key
        ),
    )
    .unwrap();
    fs::set_permissions(&credentials, fs::Permissions::from_mode(0o644)).unwrap();
    f.round_trip(&[("AWS_PROFILE", "backups".into())]);
    let leftovers: Vec<_> = fs::read_dir(&f.tree.data)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".synapse-backup-")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

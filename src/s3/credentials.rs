//! Where the S3 credentials come from ([`CredentialSource`]): the static keys of the
//! relation (or of the command line's `--s3` file), or, only when a caller opts in, the
//! standard AWS chain ([`AmbientCredentials`]: environment, shared config and
//! credentials files with their profiles, web identity, container and instance
//! metadata credentials).
//!
//! With the chain, neither the SDK client nor the aws CLI of the pipeline is handed a
//! snapshot of credentials: each resolves (and refreshes) them itself. What the aws
//! CLI needs for that is captured once, from the process that opted in:
//! - the chain's environment variables (`CHAIN_VARS`), passed to the pipeline's
//!   environment, never to argv;
//! - the shared config file's text (`AWS_CONFIG_FILE`, else `~/.aws/config`), which
//!   the pipeline's per-run config file repeats with its own `s3` transfer settings
//!   added to the selected profile (see [`crate::s3::aws_cli::config_file`]), so the
//!   per-run file does not hide the user's profiles;
//! - the shared credentials file's absolute path (`AWS_SHARED_CREDENTIALS_FILE`, else
//!   `~/.aws/credentials` of this process's `HOME`), since the pipeline may run as
//!   another user with another `HOME`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{ConfigError, FieldProblem};

/// The environment variables of the AWS credential chain that the pipeline's aws CLI
/// is given, when set, in ambient mode. `AWS_CONFIG_FILE` is not among them: the
/// per-run config file replaces it (holding the same profiles). Variables naming a
/// region or an endpoint are not either: the s3 parameters set those.
pub const CHAIN_VARS: [&str; 18] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
    "AWS_METADATA_SERVICE_TIMEOUT",
    "AWS_METADATA_SERVICE_NUM_ATTEMPTS",
    "AWS_STS_REGIONAL_ENDPOINTS",
];

/// The profile used when `AWS_PROFILE` is not set.
pub const DEFAULT_PROFILE: &str = "default";

/// Where the credentials of [`S3Parameters`](crate::S3Parameters) come from.
/// `Debug` never shows a secret.
#[derive(Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialSource<'a> {
    /// Static keys, from the relation or the file (with a session token for temporary
    /// ones).
    Static {
        /// The access key id.
        access_key: &'a str,
        /// The secret access key.
        secret_key: &'a str,
        /// The session token, if any.
        session_token: Option<&'a str>,
    },
    /// The standard AWS chain (only when the caller opted in).
    Ambient(&'a AmbientCredentials),
}

impl fmt::Debug for CredentialSource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialSource::Static { session_token, .. } => f
                .debug_struct("Static")
                .field("access_key", &format_args!("******"))
                .field("secret_key", &format_args!("******"))
                .field("session_token", &session_token.map(|_| "******"))
                .finish(),
            CredentialSource::Ambient(ambient) => f.debug_tuple("Ambient").field(ambient).finish(),
        }
    }
}

/// The standard AWS credential chain, as the process that opted into it sees it: the
/// chain's environment variables, the selected profile and the shared config file's
/// text. `Debug` shows variable names and the profile, never a value of the
/// environment or the config file.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct AmbientCredentials {
    env: BTreeMap<String, String>,
    profile: String,
    config: Option<String>,
}

impl fmt::Debug for AmbientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmbientCredentials")
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("profile", &self.profile)
            .field(
                "config",
                &self.config.as_ref().map(|c| format!("{} bytes", c.len())),
            )
            .finish()
    }
}

impl AmbientCredentials {
    /// The chain as this process sees it: the set, non-empty AWS chain variables, the shared
    /// credentials file made absolute (`AWS_SHARED_CREDENTIALS_FILE`, else
    /// `$HOME/.aws/credentials` when it exists; the pipeline may run with another
    /// `HOME` and runs in its work dir), the token files made absolute, and the text of
    /// the shared config
    /// file (`AWS_CONFIG_FILE`, else `$HOME/.aws/config`), if it exists. A leading `~/`
    /// in either variable is `$HOME`, as the AWS tools read it.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the variable that is not UTF-8, the profile name
    /// that cannot be written to a config file, or the config file that exists but
    /// cannot be read.
    pub fn from_process_env() -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let mut vars = BTreeMap::new();
        let names = CHAIN_VARS.iter().chain(["AWS_CONFIG_FILE", "HOME"].iter());
        for name in names {
            match std::env::var_os(name) {
                None => {}
                Some(v) if v.is_empty() => {}
                Some(v) => match v.into_string() {
                    Ok(v) => {
                        vars.insert(name.to_string(), v);
                    }
                    Err(_) => problems.push(FieldProblem {
                        field: name.to_string(),
                        message: "is not valid UTF-8".into(),
                    }),
                },
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid { problems });
        }
        let home = vars.remove("HOME").map(PathBuf::from);
        let expand = |value: &str| match (value.strip_prefix("~/"), &home) {
            (Some(rest), Some(home)) => home.join(rest),
            _ => PathBuf::from(value),
        };
        let config_path = match vars.remove("AWS_CONFIG_FILE") {
            Some(path) => Some(expand(&path)),
            None => home.as_ref().map(|h| h.join(".aws/config")),
        };
        let credentials_path = match vars.get("AWS_SHARED_CREDENTIALS_FILE") {
            Some(path) => Some(expand(path)),
            None => home
                .as_ref()
                .map(|h| h.join(".aws/credentials"))
                .filter(|p| p.exists()),
        };
        if let Some(path) = credentials_path {
            let path = std::path::absolute(&path).unwrap_or(path);
            vars.insert(
                "AWS_SHARED_CREDENTIALS_FILE".into(),
                path.to_string_lossy().into_owned(),
            );
        }
        // The pipeline runs in its work dir: relative paths would point there.
        for name in [
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        ] {
            if let Some(path) = vars.get_mut(name)
                && let Ok(absolute) = std::path::absolute(&*path)
            {
                *path = absolute.to_string_lossy().into_owned();
            }
        }
        let config = match config_path {
            Some(path) => read_config(&path)?,
            None => None,
        };
        Self::new(vars, config)
    }

    /// The chain from explicit values: the environment variables (only AWS chain variables
    /// are kept; the profile is `AWS_PROFILE`, else `default`) and the shared config
    /// file's text, if any. Nothing is read.
    ///
    /// ```
    /// use synapse_backup::AmbientCredentials;
    ///
    /// let ambient = AmbientCredentials::new(
    ///     [("AWS_PROFILE", "backups"), ("AWS_REGION", "eu-west-1")],
    ///     Some("[profile backups]\nrole_arn = arn:aws:iam::123456789012:role/b\n".into()),
    /// )?;
    /// assert_eq!(ambient.profile(), "backups");
    /// assert!(!ambient.env().contains_key("AWS_REGION"));
    /// # Ok::<(), synapse_backup::ConfigError>(())
    /// ```
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `AWS_PROFILE` when the profile name cannot be a
    /// config file section (blanks, quotes, brackets or control characters), or a
    /// variable whose value holds a NUL byte.
    pub fn new<I, K, V>(env: I, config: Option<String>) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let env: BTreeMap<String, String> = env
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(k, v)| CHAIN_VARS.contains(&k.as_str()) && !v.is_empty())
            .collect();
        let mut problems = Vec::new();
        for (name, value) in &env {
            if value.contains('\0') {
                problems.push(FieldProblem {
                    field: name.clone(),
                    message: "contains a NUL byte".into(),
                });
            }
        }
        let profile = env
            .get("AWS_PROFILE")
            .cloned()
            .unwrap_or_else(|| DEFAULT_PROFILE.to_string());
        if !profile
            .chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && !matches!(c, '[' | ']' | '"' | '\''))
        {
            problems.push(FieldProblem {
                field: "AWS_PROFILE".into(),
                message:
                    "must be a profile name without blanks, quotes, brackets or control characters"
                        .into(),
            });
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid { problems });
        }
        Ok(AmbientCredentials {
            env,
            profile,
            config,
        })
    }

    /// The chain's variables the pipeline's aws CLI is given (secrets among them: pass
    /// them in the environment only).
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// The selected profile: `AWS_PROFILE`, else `default`.
    pub fn profile(&self) -> &str {
        &self.profile
    }

    /// The shared config file's text, if there was one.
    pub fn config(&self) -> Option<&str> {
        self.config.as_deref()
    }
}

fn read_config(path: &Path) -> Result<Option<String>, ConfigError> {
    let problem = |message: String| ConfigError::field("AWS_CONFIG_FILE", message);
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| problem(format!("{} is not valid UTF-8", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(problem(format!("cannot read {}: {e}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_chain_variables_are_kept_and_debug_shows_no_value() {
        let ambient = AmbientCredentials::new(
            [
                ("AWS_ACCESS_KEY_ID", "AKIDAMBIENT"),
                ("AWS_SECRET_ACCESS_KEY", "ambient-secret"),
                ("AWS_CONFIG_FILE", "/elsewhere"),
                ("AWS_DEFAULT_REGION", "eu-west-1"),
                ("AWS_ROLE_ARN", ""),
            ],
            Some("[default]\naws_secret_access_key = in-config\n".into()),
        )
        .unwrap();
        assert_eq!(
            ambient.env().keys().collect::<Vec<_>>(),
            ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
        );
        assert_eq!(ambient.profile(), "default");
        let debug = format!("{ambient:?}");
        for secret in ["AKIDAMBIENT", "ambient-secret", "in-config"] {
            assert!(!debug.contains(secret), "{debug}");
        }
    }

    #[test]
    fn profile_names_that_cannot_be_a_section_are_refused() {
        for bad in ["a b", "x]", "[x", "a\nb", "\"q\""] {
            let err = AmbientCredentials::new([("AWS_PROFILE", bad)], None).unwrap_err();
            assert_eq!(err.fields(), ["AWS_PROFILE"], "{bad:?}");
        }
        let ok = AmbientCredentials::new([("AWS_PROFILE", "team-backups.prod")], None).unwrap();
        assert_eq!(ok.profile(), "team-backups.prod");
    }
}

//! What the aws CLI (v1, run by the backup pipeline inside the workload) needs from
//! [`S3Parameters`]: its credential environment ([`credential_env`]), its server-side
//! encryption arguments ([`sse_args`], with the SSE-C key in a file:
//! [`customer_key_file`]) and a per-run config file ([`config_file`]) whose every value
//! is checked against the config file's syntax. Pure functions: no I/O.
//!
//! With static keys the aws CLI gets them in its environment and nothing else: no
//! profile, no instance metadata. With the AWS chain
//! ([`CredentialSource::Ambient`]) it gets no key from us: it resolves (and refreshes,
//! during an upload of hours) its own credentials from the chain's variables and the
//! user's profiles, which the per-run config file repeats (see [`config_file`]).
//!
//! ```
//! use synapse_backup::S3Parameters;
//! use synapse_backup::testing::internals::{self as aws_cli, Transfer, TransferSettings};
//!
//! let params = S3Parameters::builder("AKIDEXAMPLE", "secret", "synapse-backups")
//!     .region("eu-west-1")
//!     .session_token("FwoGZXIvYXdzEXAMPLE")
//!     .attributes([(
//!         "X-Amz-Server-Side-Encryption-Customer-Key",
//!         "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
//!     )])
//!     .build()?;
//! let env = aws_cli::credential_env(&params);
//! assert_eq!(env["AWS_SESSION_TOKEN"], "FwoGZXIvYXdzEXAMPLE");
//! // SSE-C on downloads too; the key itself never in argv.
//! let args = aws_cli::sse_args(&params, Transfer::Download, "/work/sse-c.key");
//! assert_eq!(args, ["--sse-c", "AES256", "--sse-c-key", "fileb:///work/sse-c.key"]);
//! assert_eq!(aws_cli::customer_key_file(&params).map(|k| k.len()), Some(32));
//! let config = aws_cli::config_file(&params, &TransferSettings::new(4, 8))?;
//! assert!(config.starts_with("[default]\nregion = eu-west-1\n"));
//! # Ok::<(), synapse_backup::ConfigError>(())
//! ```

use std::collections::BTreeMap;

use super::credentials::{CredentialSource, DEFAULT_PROFILE};
use super::parameters::{AddressingStyle, S3Parameters};
use super::sse::{AES256, ServerSideEncryption};
use crate::error::{ConfigError, FieldProblem};

/// The region the aws CLI is given when the relation names only an endpoint.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Which way an aws CLI transfer goes: S3 wants SSE-S3 and SSE-KMS headers on uploads
/// only, SSE-C headers on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// `aws s3 cp - s3://…` (PutObject or a multipart upload).
    Upload,
    /// `aws s3 cp s3://… -` (HeadObject, GetObject).
    Download,
}

/// The region the aws CLI uses: the relation's, else [`DEFAULT_REGION`].
pub fn region(params: &S3Parameters) -> &str {
    params.region().unwrap_or(DEFAULT_REGION)
}

/// The credential environment of the aws CLI. Secrets: pass it in the environment,
/// never in argv.
///
/// - Static keys: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`
///   (temporary credentials only) and `AWS_EC2_METADATA_DISABLED=true` (static keys
///   need no instance metadata; it also saves a slow probe off EC2).
/// - The AWS chain: the chain's variables as captured
///   ([`AmbientCredentials::env`](super::AmbientCredentials::env): keys from the
///   environment, `AWS_PROFILE`, the absolute `AWS_SHARED_CREDENTIALS_FILE`, web
///   identity and container variables, …), so the aws CLI resolves and refreshes the
///   credentials itself. `AWS_EC2_METADATA_DISABLED` only when the caller had it.
pub fn credential_env(params: &S3Parameters) -> BTreeMap<String, String> {
    match params.credential_source() {
        CredentialSource::Ambient(ambient) => ambient.env().clone(),
        CredentialSource::Static {
            access_key,
            secret_key,
            session_token,
        } => {
            let mut env = BTreeMap::new();
            env.insert("AWS_ACCESS_KEY_ID".into(), access_key.into());
            env.insert("AWS_SECRET_ACCESS_KEY".into(), secret_key.into());
            if let Some(token) = session_token {
                env.insert("AWS_SESSION_TOKEN".into(), token.into());
            }
            env.insert("AWS_EC2_METADATA_DISABLED".into(), "true".into());
            env
        }
    }
}

/// The aws CLI's server-side encryption arguments for one `aws s3 cp`:
/// - SSE-S3: `--sse AES256` on uploads;
/// - SSE-KMS: `--sse aws:kms` (or `aws:kms:dsse`) and `--sse-kms-key-id ID` on uploads;
/// - SSE-C: `--sse-c AES256 --sse-c-key fileb://<customer_key_path>` on uploads and
///   downloads. The file must hold the raw 32 bytes of [`customer_key_file`] (aws CLI v1
///   reads `fileb://` as bytes and sends their base64 and MD5); write it 0600 in the
///   run's private work dir, as the workload user.
///
/// Empty when the relation asks for no encryption.
pub fn sse_args(params: &S3Parameters, transfer: Transfer, customer_key_path: &str) -> Vec<String> {
    let mut args = Vec::new();
    match (params.server_side_encryption(), transfer) {
        (None, _) => {}
        (Some(ServerSideEncryption::CustomerKey(_)), _) => {
            args.extend([
                "--sse-c".to_string(),
                AES256.to_string(),
                "--sse-c-key".to_string(),
                format!("fileb://{customer_key_path}"),
            ]);
        }
        (Some(_), Transfer::Download) => {}
        (Some(sse), Transfer::Upload) => {
            if let Some(algorithm) = sse.algorithm() {
                args.extend(["--sse".to_string(), algorithm.to_string()]);
            }
            if let ServerSideEncryption::Kms {
                key_id: Some(id), ..
            } = sse
            {
                args.extend(["--sse-kms-key-id".to_string(), id.clone()]);
            }
        }
    }
    args
}

/// The content of the SSE-C key file for `--sse-c-key fileb://FILE`: the raw 32 bytes
/// of the customer key, when the relation asks for SSE-C.
pub fn customer_key_file(params: &S3Parameters) -> Option<&[u8; 32]> {
    params
        .server_side_encryption()
        .and_then(ServerSideEncryption::customer_key)
        .map(|key| key.bytes())
}

/// Transfer settings for the aws CLI config file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransferSettings {
    /// `max_concurrent_requests` (at least 1).
    pub max_concurrent_requests: u32,
    /// `multipart_chunksize` and `multipart_threshold`, in MiB (at least 5, S3's
    /// minimum part size).
    pub part_size_mib: u32,
    /// `max_bandwidth`, if limited.
    pub max_bandwidth: Option<crate::Bandwidth>,
}

impl TransferSettings {
    /// Settings with `max_concurrent_requests` and the part size in MiB; no bandwidth
    /// limit.
    pub fn new(max_concurrent_requests: u32, part_size_mib: u32) -> Self {
        TransferSettings {
            max_concurrent_requests,
            part_size_mib,
            max_bandwidth: None,
        }
    }

    /// Limits the bandwidth to `cap`.
    #[cfg(test)]
    pub fn max_bandwidth(mut self, cap: crate::Bandwidth) -> Self {
        self.max_bandwidth = Some(cap);
        self
    }
}

/// The per-run aws CLI config file (`AWS_CONFIG_FILE`; the replacement for
/// `aws configure set`): the region, the addressing style and the transfer settings
/// (the `s3` section) in the `[default]` profile.
///
/// With the AWS chain ([`CredentialSource::Ambient`]) it is what the selected profile
/// needs of the user's shared config file (as captured): its own section and, by
/// their names, the sections it leads to (`source_profile`, again from there,
/// `sso_session` and `services`), so `role_arn`, `web_identity_token_file`,
/// `credential_process`, … keep working; no other profile reaches the workload user
/// (another profile's keys stay with the caller). The `s3`
/// transfer settings are set in the selected profile: added to its `s3` section (the
/// user's other `s3` settings kept) or as a new `s3` section, or in a new profile
/// section when the file has none for it. The region comes from
/// `AWS_DEFAULT_REGION`, which the aws CLI prefers to the file's.
///
/// Every value is checked against the config file's syntax (one line, no control
/// characters, no leading or trailing blanks, nothing the INI parser reads as a
/// section, comment or continuation), so relation data can never add sections or
/// options, whatever validation it went through before.
///
/// ```
/// use synapse_backup::S3Parameters;
/// use synapse_backup::AmbientCredentials;
/// use synapse_backup::testing::internals::{self as aws_cli, TransferSettings};
///
/// let user = "[profile backups]\nrole_arn = arn:aws:iam::123456789012:role/b\n\
///             source_profile = base\ns3 =\n  addressing_style = virtual\n  \
///             use_accelerate_endpoint = true\n[profile base]\nregion = eu-west-1\n";
/// let ambient = AmbientCredentials::new([("AWS_PROFILE", "backups")], Some(user.into()))?;
/// let params = S3Parameters::ambient_builder("synapse-backups", ambient)
///     .endpoint("http://127.0.0.1:9000")
///     .s3_uri_style("path")
///     .build()?;
/// let config = aws_cli::config_file(&params, &TransferSettings::new(4, 8))?;
/// assert!(config.contains("source_profile = base\ns3 =\n  addressing_style = path\n"));
/// assert!(config.contains("  use_accelerate_endpoint = true\n[profile base]\n"));
/// assert!(!config.contains("addressing_style = virtual"));
/// # Ok::<(), synapse_backup::ConfigError>(())
/// ```
///
/// # Errors
/// [`ConfigError::Invalid`] naming the field whose value cannot be written safely.
pub fn config_file(
    params: &S3Parameters,
    settings: &TransferSettings,
) -> Result<String, ConfigError> {
    let style = match params.addressing_style() {
        AddressingStyle::Path => "path",
        AddressingStyle::Virtual => "virtual",
    };
    let region = region(params);
    let mut problems = Vec::new();
    if let Err(why) = config_value(region) {
        problems.push(FieldProblem {
            field: "region".into(),
            message: format!("cannot be written to the aws CLI config file: {why}"),
        });
    }
    if !problems.is_empty() {
        return Err(ConfigError::Invalid { problems });
    }
    let part = settings.part_size_mib.max(5);
    let mut s3 = vec![
        ("addressing_style", style.to_string()),
        (
            "max_concurrent_requests",
            settings.max_concurrent_requests.max(1).to_string(),
        ),
        ("multipart_chunksize", format!("{part}MB")),
        ("multipart_threshold", format!("{part}MB")),
    ];
    if let Some(limit) = settings.max_bandwidth {
        s3.push(("max_bandwidth", limit.aws_value()));
    }
    match params.credential_source() {
        CredentialSource::Ambient(ambient) => Ok(merge_profile_config(
            &needed_sections(ambient.config().unwrap_or(""), ambient.profile()),
            ambient.profile(),
            region,
            &s3,
        )),
        CredentialSource::Static { .. } => {
            let mut config = format!("[default]\nregion = {region}\n");
            push_s3_section(&mut config, "", &s3);
            Ok(config)
        }
    }
}

/// What a section header defines: a profile, an sso-session or a services block.
type SectionId = (&'static str, String);

/// A section of a config file: what it defines, its text, and what it refers to.
type Section = (Option<SectionId>, String, Vec<SectionId>);

/// What a section header defines, if it is a profile, an sso-session or a services block.
fn section_id(header: &str) -> Option<SectionId> {
    if let Some(name) = section_profile(header) {
        return Some(("profile", name.to_string()));
    }
    let header = header.trim();
    for kind in ["sso-session", "services"] {
        if let Some(rest) = header.strip_prefix(kind)
            && rest.starts_with(char::is_whitespace)
        {
            return Some((kind, rest.trim().to_string()));
        }
    }
    None
}

/// The sections of the config file `user`, each with the references its
/// `source_profile`, `sso_session` and `services` options make. Lines before the first
/// section are left out. Lines are classified as in [`merge_profile_config`].
fn split_sections(user: &str) -> Vec<Section> {
    let mut sections: Vec<Section> = Vec::new();
    let mut in_option = false;
    let mut indent_level = 0;
    for line in user.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let stripped = body.trim();
        let blank = stripped.is_empty() || stripped.starts_with(['#', ';']);
        let indent = body.len() - body.trim_start().len();
        if blank || (in_option && indent > indent_level) {
            if let Some(section) = sections.last_mut() {
                section.1.push_str(line);
            }
            continue;
        }
        indent_level = indent;
        if let Some(header) = stripped
            .strip_prefix('[')
            .and_then(|h| h.rfind(']').map(|end| &h[..end]))
        {
            sections.push((section_id(header), line.to_string(), Vec::new()));
            in_option = false;
            continue;
        }
        in_option = true;
        let Some(section) = sections.last_mut() else {
            continue;
        };
        section.1.push_str(line);
        if let Some((name, value)) = stripped.split_once(['=', ':']) {
            let kind = match name.trim().to_ascii_lowercase().as_str() {
                "source_profile" => "profile",
                "sso_session" => "sso-session",
                "services" => "services",
                _ => continue,
            };
            section.2.push((kind, value.trim().to_string()));
        }
    }
    sections
}

/// What of the config file `user` the profile `profile` needs, in the file's order:
/// its sections, then (transitively) those its `source_profile`, `sso_session` and
/// `services` options name. Lines before the first section and every other section
/// are left out.
fn needed_sections(user: &str, profile: &str) -> String {
    let sections = split_sections(user);
    let mut needed: Vec<SectionId> = vec![("profile", profile.to_string())];
    let mut next = 0;
    while next < needed.len() {
        let wanted = needed[next].clone();
        next += 1;
        for (id, _, references) in &sections {
            if id.as_ref() == Some(&wanted) {
                for reference in references {
                    if !needed.contains(reference) {
                        needed.push(reference.clone());
                    }
                }
            }
        }
    }
    let mut out = String::new();
    for (id, text, _) in &sections {
        if id.as_ref().is_some_and(|id| needed.contains(id)) {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(text);
        }
    }
    out
}

/// Appends `s3 =` and its nested settings, the option indented by `indent`.
fn push_s3_section(config: &mut String, indent: &str, s3: &[(&str, String)]) {
    config.push_str(indent);
    config.push_str("s3 =\n");
    for (key, value) in s3 {
        config.push_str(&format!("{indent}  {key} = {value}\n"));
    }
}

/// The profile a config file section header (between the brackets) defines, as
/// botocore reads them: `default`, or `profile NAME` (NAME possibly quoted).
fn section_profile(header: &str) -> Option<&str> {
    let header = header.trim();
    if header == DEFAULT_PROFILE {
        return Some(header);
    }
    let rest = header.strip_prefix("profile")?;
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let name = rest.trim();
    let name = ['"', '\'']
        .iter()
        .find_map(|q| name.strip_prefix(*q).and_then(|n| n.strip_suffix(*q)))
        .unwrap_or(name);
    (!name.is_empty() && !name.contains(char::is_whitespace)).then_some(name)
}

/// The user's config file `user` with the `s3` settings set in `profile`'s sections.
/// Lines are classified as Python's configparser (which botocore uses) reads them:
/// comment and blank lines are transparent, a line indented deeper than the current
/// option continues it, `[…]` starts a section, anything else is an option (its name
/// before the first `=` or `:`, lower-cased).
fn merge_profile_config(user: &str, profile: &str, region: &str, s3: &[(&str, String)]) -> String {
    let ours = |line: &str| {
        let key = line.trim().split('=').next().unwrap_or("").trim();
        s3.iter().any(|(k, _)| k.eq_ignore_ascii_case(key))
    };
    let mut out = String::with_capacity(user.len() + 256);
    let ensure_newline = |out: &mut String| {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
    };
    let mut found = false;
    let mut in_target = false;
    let mut target_has_s3 = false;
    let mut in_option = false;
    let mut in_s3 = false;
    let mut indent_level = 0;
    for line in user.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let stripped = body.trim();
        if stripped.is_empty() || stripped.starts_with(['#', ';']) {
            out.push_str(line);
            continue;
        }
        let indent = body.len() - body.trim_start().len();
        if in_option && indent > indent_level {
            // A continuation line; in the target's `s3`, ours replace the same keys.
            if !(in_s3 && ours(stripped)) {
                out.push_str(line);
            }
            continue;
        }
        indent_level = indent;
        if let Some(header) = stripped
            .strip_prefix('[')
            .and_then(|h| h.rfind(']').map(|end| &h[..end]))
        {
            if in_target && !target_has_s3 {
                ensure_newline(&mut out);
                push_s3_section(&mut out, "", s3);
            }
            in_target = section_profile(header) == Some(profile);
            found |= in_target;
            target_has_s3 = false;
            in_option = false;
            in_s3 = false;
            out.push_str(line);
            continue;
        }
        let name = stripped
            .split(['=', ':'])
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        in_option = true;
        in_s3 = in_target && name == "s3";
        if in_s3 {
            target_has_s3 = true;
            ensure_newline(&mut out);
            push_s3_section(&mut out, &body[..indent], s3);
        } else {
            out.push_str(line);
        }
    }
    if in_target && !target_has_s3 {
        ensure_newline(&mut out);
        push_s3_section(&mut out, "", s3);
    }
    if !found {
        ensure_newline(&mut out);
        if profile == DEFAULT_PROFILE {
            out.push_str("[default]\n");
        } else {
            out.push_str(&format!("[profile {profile}]\n"));
        }
        out.push_str(&format!("region = {region}\n"));
        push_s3_section(&mut out, "", s3);
    }
    out
}

/// Whether `value` can be the value of an option in the aws CLI's config file (an INI
/// file read by Python's configparser, without interpolation): one line, not empty,
/// no control characters, no leading or trailing blanks (they would be stripped or
/// start a continuation), not starting with a comment or section character.
fn config_value(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        Err("it is empty")
    } else if value.chars().any(char::is_control) {
        Err("it contains control characters (a line break would add lines)")
    } else if value.trim() != value {
        Err("it has leading or trailing blanks")
    } else if value.starts_with(['[', '#', ';']) {
        Err("it starts with a section or comment character")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    fn params(attributes: &[(&str, &str)]) -> S3Parameters {
        S3Parameters::builder("AKID", "secret-value", "bucket-one")
            .endpoint("http://127.0.0.1:9000")
            .s3_uri_style("path")
            .attributes(attributes.iter().copied())
            .build()
            .unwrap()
    }

    #[test]
    fn sse_s3_and_kms_go_on_uploads_only() {
        let p = params(&[("X-Amz-Server-Side-Encryption", "AES256")]);
        assert_eq!(sse_args(&p, Transfer::Upload, "k"), ["--sse", "AES256"]);
        assert!(sse_args(&p, Transfer::Download, "k").is_empty());
        let p = params(&[
            ("X-Amz-Server-Side-Encryption", "aws:kms"),
            ("X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id", "alias/b"),
        ]);
        assert_eq!(
            sse_args(&p, Transfer::Upload, "k"),
            ["--sse", "aws:kms", "--sse-kms-key-id", "alias/b"]
        );
        assert!(sse_args(&p, Transfer::Download, "k").is_empty());
        assert_eq!(customer_key_file(&p), None);
        assert!(sse_args(&params(&[]), Transfer::Upload, "k").is_empty());
    }

    #[test]
    fn sse_c_goes_everywhere_with_the_key_in_a_file() {
        let p = params(&[("X-Amz-Server-Side-Encryption-Customer-Key", KEY)]);
        for transfer in [Transfer::Upload, Transfer::Download] {
            let args = sse_args(&p, transfer, "/w/k");
            assert_eq!(args, ["--sse-c", "AES256", "--sse-c-key", "fileb:///w/k"]);
            assert!(!args.concat().contains(KEY));
        }
        assert_eq!(
            customer_key_file(&p),
            Some(b"0123456789abcdef0123456789abcdef")
        );
    }

    #[test]
    fn credentials_are_environment_only_with_the_token_when_given() {
        let env = credential_env(&params(&[]));
        assert_eq!(env["AWS_ACCESS_KEY_ID"], "AKID");
        assert_eq!(env["AWS_SECRET_ACCESS_KEY"], "secret-value");
        assert_eq!(env["AWS_EC2_METADATA_DISABLED"], "true");
        assert!(!env.contains_key("AWS_SESSION_TOKEN"));
        let p = S3Parameters::builder("AKID", "s", "bucket-one")
            .region("eu-west-1")
            .session_token("tok")
            .build()
            .unwrap();
        assert_eq!(credential_env(&p)["AWS_SESSION_TOKEN"], "tok");
    }

    const S3: &str = "s3 =\n  addressing_style = path\n  max_concurrent_requests = 8\n  multipart_chunksize = 64MB\n  multipart_threshold = 64MB\n";

    fn merged(user: &str, profile: &str) -> String {
        let s3 = [
            ("addressing_style", "path".to_string()),
            ("max_concurrent_requests", "8".to_string()),
            ("multipart_chunksize", "64MB".to_string()),
            ("multipart_threshold", "64MB".to_string()),
        ];
        merge_profile_config(user, profile, "us-east-1", &s3)
    }

    #[test]
    fn the_users_profiles_are_kept_with_our_s3_settings_in_the_selected_one() {
        // No file: our own section, as with static keys.
        assert_eq!(
            merged("", "default"),
            format!("[default]\nregion = us-east-1\n{S3}")
        );
        assert_eq!(
            merged("[default]\nregion = eu-west-1", "ops"),
            format!("[default]\nregion = eu-west-1\n[profile ops]\nregion = us-east-1\n{S3}")
        );
        // The section exists without s3: ours at its end, before the next section.
        let user = "# mine\n[profile ops]\nrole_arn = arn:x\n  ; note\nsource_profile = base\n\n[profile base]\ns3 =\n  addressing_style = virtual\n";
        assert_eq!(
            merged(user, "ops"),
            format!(
                "# mine\n[profile ops]\nrole_arn = arn:x\n  ; note\nsource_profile = base\n\n{S3}[profile base]\ns3 =\n  addressing_style = virtual\n"
            )
        );
        // The section has s3: ours replace the same keys, the user's others stay.
        let user = "[profile \"ops\"]\nS3 =\n    addressing_style = virtual\n    use_accelerate_endpoint = true\n    max_concurrent_requests = 99\nregion = eu-west-1\n";
        assert_eq!(
            merged(user, "ops"),
            format!(
                "[profile \"ops\"]\n{S3}    use_accelerate_endpoint = true\nregion = eu-west-1\n"
            )
        );
        // `[profile default]` is the default profile too; `[ops]` is no profile in the
        // config file; `[profilex]` neither.
        let user = "[ops]\nregion = a\n[profilex]\nregion = b\n[profile default]\nregion = c";
        assert_eq!(
            merged(user, "default"),
            format!(
                "[ops]\nregion = a\n[profilex]\nregion = b\n[profile default]\nregion = c\n{S3}"
            )
        );
        // Indented options stay options; a deeper line continues them.
        let user = "[default]\n  region = a\n    more\n";
        assert_eq!(merged(user, "default"), format!("{user}{S3}"));
    }

    #[test]
    fn only_the_selected_profile_and_what_it_leads_to_reach_the_workload() {
        let user = "# root's notes\n[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = DEFAULTSECRET\n\
                    [profile other]\naws_secret_access_key = OTHERSECRET\n\
                    [profile ops]\nrole_arn = arn:x\nsource_profile = base\nsso_session = corp\nservices = local\n\
                    [profile base]\nsource_profile = root-keys\n  ; a note\n\
                    [profile root-keys]\ncredential_process = /usr/bin/keys\n\
                    [sso-session corp]\nsso_region = eu-west-1\n[sso-session elsewhere]\nsso_region = x\n\
                    [services local]\ns3 =\n  endpoint_url = http://127.0.0.1:9000\n[services unused]\ns3 =\n  endpoint_url = http://x\n";
        let kept = needed_sections(user, "ops");
        assert_eq!(
            kept,
            "[profile ops]\nrole_arn = arn:x\nsource_profile = base\nsso_session = corp\nservices = local\n\
             [profile base]\nsource_profile = root-keys\n  ; a note\n\
             [profile root-keys]\ncredential_process = /usr/bin/keys\n\
             [sso-session corp]\nsso_region = eu-west-1\n\
             [services local]\ns3 =\n  endpoint_url = http://127.0.0.1:9000\n"
        );
        let ambient = crate::s3::credentials::AmbientCredentials::new(
            [("AWS_PROFILE", "ops")],
            Some(user.into()),
        )
        .unwrap();
        let params = S3Parameters::ambient_builder("bucket-one", ambient)
            .endpoint("http://127.0.0.1:9000")
            .build()
            .unwrap();
        let text = config_file(&params, &TransferSettings::new(4, 8)).unwrap();
        assert!(
            text.starts_with("[profile ops]\nrole_arn = arn:x\n"),
            "{text}"
        );
        for secret in [
            "OTHERSECRET",
            "DEFAULTSECRET",
            "root's notes",
            "elsewhere",
            "unused",
        ] {
            assert!(!text.contains(secret), "{secret}: {text}");
        }
        // The default profile: `[default]` or `[profile default]`, nothing else.
        assert_eq!(
            needed_sections(user, "default"),
            "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = DEFAULTSECRET\n"
        );
        // A cycle of source profiles ends.
        let cycle = "[profile a]\nsource_profile = b\n[profile b]\nsource_profile = a\n";
        assert_eq!(needed_sections(cycle, "a"), cycle);
        assert_eq!(needed_sections("", "a"), "");
    }

    #[test]
    fn config_file_text_and_value_checks() {
        let text = config_file(&params(&[]), &TransferSettings::new(8, 64)).unwrap();
        assert_eq!(
            text,
            "[default]\nregion = us-east-1\ns3 =\n  addressing_style = path\n  max_concurrent_requests = 8\n  multipart_chunksize = 64MB\n  multipart_threshold = 64MB\n"
        );
        let capped = config_file(
            &params(&[]),
            &TransferSettings::new(0, 1).max_bandwidth(crate::Bandwidth::kib(500)),
        )
        .unwrap();
        assert!(
            capped.contains("max_concurrent_requests = 1\n")
                && capped.contains("multipart_chunksize = 5MB\n")
                && capped.contains("max_bandwidth = 500KB/s\n"),
            "{capped}"
        );
        for bad in ["", "a\nb", "a\r", " a", "a ", "[x]", "#x", ";x", "a\u{0}"] {
            assert!(config_value(bad).is_err(), "{bad:?}");
        }
        for ok in ["us-east-1", "fr-par", "a=b"] {
            assert!(config_value(ok).is_ok(), "{ok:?}");
        }
    }
}

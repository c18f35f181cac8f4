//! Why a command failed: its kind (the exit code, and the `kind` of a `--json` error)
//! and its message, and how it is reported.

use std::process::ExitCode;

use serde::Serialize;
use synapse_backup::{BackupError, ContainerError, S3Error};

use crate::output::emit_json;

/// Why the command failed: its kind (named in `--json` errors, and the exit code) and
/// the message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) kind: Kind,
    pub(crate) message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Bad usage or configuration: exit 2, nothing was changed.
    Usage,
    /// The operation failed: exit 1.
    Failed,
    /// The operation failed and its output (e.g. `verify --all`'s results) already says
    /// how: exit 1, and no JSON error object after that output.
    Reported,
    /// The backup does not exist: exit 1.
    NotFound,
    /// A common S3 mistake (missing bucket, unreachable endpoint, …): exit 1.
    S3(&'static str),
    /// Another operation holds the backup lock: exit 3, nothing was changed.
    Locked,
    /// The operator answered no at the prompt: exit 4, nothing was changed.
    Declined,
    /// Stopped by this signal (after cleaning up): exit 128 + signal.
    Interrupted(i32),
}

impl Failure {
    pub(crate) fn new(kind: Kind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn usage(message: impl Into<String>) -> Failure {
        Failure::new(Kind::Usage, message)
    }

    pub(crate) fn failed(message: impl Into<String>) -> Failure {
        Failure::new(Kind::Failed, message)
    }

    pub(crate) fn code(&self) -> u8 {
        match self.kind {
            Kind::Usage => 2,
            Kind::Failed | Kind::Reported | Kind::NotFound | Kind::S3(_) => 1,
            Kind::Locked => 3,
            Kind::Declined => 4,
            Kind::Interrupted(signal) => u8::try_from(128 + signal).unwrap_or(1),
        }
    }

    /// The kind named in `--json` errors.
    pub(crate) fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Usage => "usage",
            Kind::Failed | Kind::Reported => "failed",
            Kind::NotFound => "not-found",
            Kind::S3(kind) => kind,
            Kind::Locked => "locked",
            Kind::Declined => "declined",
            Kind::Interrupted(_) => "interrupted",
        }
    }

    /// Prints the failure (stderr, and with `--json` a JSON object on stdout) and
    /// gives the exit code.
    pub(crate) fn report(&self, json: bool) -> ExitCode {
        eprintln!("error: {}", self.message);
        if json && self.kind != Kind::Reported {
            emit_json(&ErrorJson {
                error: ErrorBody {
                    kind: self.kind_name(),
                    message: &self.message,
                    exit_code: self.code(),
                },
            });
        }
        ExitCode::from(self.code())
    }
}

/// A failure with `--json`: `{"error": {"kind", "message", "exit_code"}}`.
#[derive(Serialize)]
struct ErrorJson<'a> {
    error: ErrorBody<'a>,
}

/// The inside of [`ErrorJson`].
#[derive(Serialize)]
struct ErrorBody<'a> {
    kind: &'static str,
    message: &'a str,
    exit_code: u8,
}

impl From<BackupError> for Failure {
    fn from(error: BackupError) -> Self {
        let kind = match &error {
            BackupError::LockHeld { .. } => Kind::Locked,
            BackupError::NotFound { .. } => Kind::NotFound,
            BackupError::Config(_)
            | BackupError::InvalidPassphrase(_)
            | BackupError::PassphraseMismatch { .. }
            | BackupError::NothingToBackUp { .. }
            | BackupError::Container(ContainerError::UnknownUser { .. })
            | BackupError::S3(S3Error::Client(_))
            | BackupError::LockUnsupported { .. }
            | BackupError::TargetNotEmpty { .. } => Kind::Usage,
            _ => Kind::Failed,
        };
        Failure::new(kind, error.to_string())
    }
}

/// Whether `--json` is among the arguments, for errors found before they are parsed.
pub(crate) fn json_requested() -> bool {
    std::env::args_os()
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

/// A command-line error (exit 2): clap's own text, or with `--json` a JSON error.
pub(crate) fn usage_exit(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let informational = matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if informational || !json_requested() {
        error.exit();
    }
    Failure::usage(usage_message(&error.render().to_string())).report(true)
}

/// clap's error as one line: its first line, and its tips (`a similar argument exists:
/// '--dry-run'`) after it; not the usage and `--help` lines.
fn usage_message(text: &str) -> String {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut message = lines
        .next()
        .unwrap_or("bad usage")
        .trim_start_matches("error: ")
        .to_string();
    for tip in lines.filter(|l| l.starts_with("tip: ")) {
        message.push_str("; ");
        message.push_str(tip);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::usage_message;

    #[test]
    fn a_usage_error_keeps_clap_s_tips() {
        let text = "error: unexpected argument '--dry-rn' found\n\n  tip: a similar argument exists: '--dry-run'\n\nUsage: synapse-backup prune --dry-run\n\nFor more information, try '--help'.\n";
        assert_eq!(
            usage_message(text),
            "unexpected argument '--dry-rn' found; tip: a similar argument exists: '--dry-run'"
        );
        assert_eq!(usage_message(""), "bad usage");
    }
}

//! What gpg's `--status-file` says about a decryption, read strictly. Pure: no I/O.
//!
//! `gpg --decrypt` also prints data that was never encrypted (a literal data packet, as
//! `gpg --store` makes, needs no passphrase) and exits 0, so its exit code alone does
//! not say the data came from the passphrase holder. Only the status lines do: the one
//! and only `PLAINTEXT` must come after `BEGIN_DECRYPTION`, and be followed by
//! `DECRYPTION_OKAY`, `GOODMDC` (the modification detection code, gpg 2.2's integrity
//! check) and `END_DECRYPTION`, with no `ERROR`, `FAILURE`, `DECRYPTION_FAILED` or
//! `BADMDC` anywhere and no public-key packet (`ENC_TO`): our backups are symmetric.

use std::fmt;

/// Why a decryption is not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Untrusted {
    /// No `BEGIN_DECRYPTION` before the data: it was not encrypted at all.
    NotEncrypted,
    /// The stream does not start as an encrypted message, and gpg never saw it
    /// ([`crate::backup::packets`]; why, in words).
    NotAMessage(String),
    /// The data was encrypted to a public key, not with the passphrase.
    PublicKey,
    /// gpg reported the passphrase as wrong.
    BadPassphrase,
    /// gpg reported an error or a failed decryption (the status line).
    Failed(String),
    /// More than one plaintext (e.g. a literal packet before the encrypted one).
    ExtraPlaintext,
    /// A required line is missing or out of order (its keyword).
    Missing(&'static str),
    /// The data has no integrity protection (no `GOODMDC`).
    NoIntegrity,
}

impl fmt::Display for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Untrusted::NotEncrypted => f.write_str(
                "it is not encrypted with the passphrase (gpg found plain OpenPGP data)",
            ),
            Untrusted::NotAMessage(why) => {
                write!(f, "it is not encrypted with the passphrase: {why}")
            }
            Untrusted::PublicKey => f.write_str(
                "it is encrypted to a public key, not with the passphrase (not a backup of ours)",
            ),
            Untrusted::BadPassphrase => f.write_str("gpg says the passphrase is wrong"),
            Untrusted::Failed(line) => write!(f, "gpg reported {line:?}"),
            Untrusted::ExtraPlaintext => {
                f.write_str("it holds more than one plaintext (data outside the encrypted packet)")
            }
            Untrusted::Missing(keyword) => {
                write!(f, "gpg's status has no {keyword} where one is required")
            }
            Untrusted::NoIntegrity => f.write_str(
                "it has no integrity protection (no modification detection code): refused",
            ),
        }
    }
}

/// The keywords, in the order a trusted decryption reports them.
const ORDER: [&str; 5] = [
    "BEGIN_DECRYPTION",
    "PLAINTEXT",
    "DECRYPTION_OKAY",
    "GOODMDC",
    "END_DECRYPTION",
];

/// gpg error codes that say the passphrase is wrong: `GPG_ERR_BAD_PASSPHRASE` (11,
/// which gpg reports for a symmetric decryption as `ERROR symkey_decrypt.maybe_error
/// 11_BAD_PASSPHRASE`) and `GPG_ERR_BAD_KEY` (19, "Bad session key": the key the
/// passphrase derives opened nothing). A corrupted stream gives `BADMDC` or
/// `DECRYPTION_FAILED` instead (a flipped byte in the packet that holds the salt looks
/// like a wrong passphrase: gpg cannot tell them apart either).
const PASSPHRASE_CODES: [u32; 2] = [11, 19];

/// The gpg error code of an `ERROR <location> <code>` status line (`rest` is the line
/// after `[GNUPG:] `): the code's leading digits, whose low 16 bits are the error code
/// (the bits above name its source), with or without the `_NAME` gpg may append.
fn error_code(rest: &str) -> Option<u32> {
    let code = rest.split(' ').nth(2)?;
    let digits = code.split('_').next()?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u32>().ok().map(|n| n & 0xffff)
}

/// Checks gpg's status output (the `[GNUPG:] KEYWORD args` lines) of one
/// `gpg --decrypt` run that exited 0.
///
/// # Errors
/// The first reason the decryption is not trusted.
pub fn check_status(status: &[u8]) -> Result<(), Untrusted> {
    let text = String::from_utf8_lossy(status);
    let mut seen: Vec<&str> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("[GNUPG:] ") else {
            continue;
        };
        let keyword = rest.split(' ').next().unwrap_or("");
        match keyword {
            "ENC_TO" | "NO_SECKEY" | "PUBKEY_ENC_FAILED" => return Err(Untrusted::PublicKey),
            "ERROR" if error_code(rest).is_some_and(|c| PASSPHRASE_CODES.contains(&c)) => {
                return Err(Untrusted::BadPassphrase);
            }
            "BAD_PASSPHRASE" => return Err(Untrusted::BadPassphrase),
            "ERROR" | "FAILURE" | "DECRYPTION_FAILED" | "BADMDC" => {
                return Err(Untrusted::Failed(rest.to_string()));
            }
            _ => {}
        }
        if ORDER.contains(&keyword) {
            seen.push(keyword);
        }
    }
    let first_plaintext = seen.iter().position(|k| *k == "PLAINTEXT");
    let begin = seen.iter().position(|k| *k == "BEGIN_DECRYPTION");
    match (begin, first_plaintext) {
        (_, None) => return Err(Untrusted::Missing("PLAINTEXT")),
        (None, Some(_)) => return Err(Untrusted::NotEncrypted),
        (Some(b), Some(p)) if p < b => return Err(Untrusted::ExtraPlaintext),
        _ => {}
    }
    if seen.iter().filter(|k| **k == "PLAINTEXT").count() > 1 {
        return Err(Untrusted::ExtraPlaintext);
    }
    if !seen.contains(&"GOODMDC") {
        return Err(Untrusted::NoIntegrity);
    }
    // Exactly the five, once each, in order.
    if seen != ORDER {
        let missing = ORDER
            .iter()
            .zip(seen.iter().map(Some).chain(std::iter::repeat(None)))
            .find(|(want, got)| got.is_none_or(|g| g != *want))
            .map_or("END_DECRYPTION", |(want, _)| *want);
        return Err(Untrusted::Missing(missing));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "[GNUPG:] NEED_PASSPHRASE_SYM 9 3 2\n[GNUPG:] BEGIN_DECRYPTION\n\
[GNUPG:] DECRYPTION_INFO 2 9 0\n[GNUPG:] PLAINTEXT 62 1796035501 a.tar\n\
[GNUPG:] PLAINTEXT_LENGTH 10240\n[GNUPG:] DECRYPTION_OKAY\n[GNUPG:] GOODMDC\n\
[GNUPG:] END_DECRYPTION\n";

    #[test]
    fn a_symmetric_decryption_with_mdc_is_trusted() {
        assert_eq!(check_status(GOOD.as_bytes()), Ok(()));
        // Unknown lines and other text around are ignored.
        let noisy = format!("gpg: note\n[GNUPG:] KEY_CONSIDERED x\n{GOOD}[GNUPG:] NEWSIG\n");
        assert_eq!(check_status(noisy.as_bytes()), Ok(()));
    }

    #[test]
    fn a_literal_packet_is_not_encrypted() {
        let store = "[GNUPG:] PLAINTEXT 62 1796035501 a.tar\n[GNUPG:] PLAINTEXT_LENGTH 10240\n";
        assert_eq!(check_status(store.as_bytes()), Err(Untrusted::NotEncrypted));
        // A literal packet before a real encrypted one.
        let both = format!("[GNUPG:] PLAINTEXT 62 1 a.tar\n{GOOD}");
        assert_eq!(
            check_status(both.as_bytes()),
            Err(Untrusted::ExtraPlaintext)
        );
        let twice = GOOD.replace(
            "[GNUPG:] DECRYPTION_OKAY",
            "[GNUPG:] PLAINTEXT 62 1 b\n[GNUPG:] DECRYPTION_OKAY",
        );
        assert_eq!(
            check_status(twice.as_bytes()),
            Err(Untrusted::ExtraPlaintext)
        );
        assert_eq!(check_status(b""), Err(Untrusted::Missing("PLAINTEXT")));
    }

    #[test]
    fn failures_errors_and_missing_mdc_are_refused() {
        let no_mdc = "[GNUPG:] BEGIN_DECRYPTION\n[GNUPG:] DECRYPTION_INFO 0 3 0\n\
[GNUPG:] PLAINTEXT 62 1 a.tar\n[GNUPG:] ERROR nomdc_with_legacy_cipher 152\n\
[GNUPG:] DECRYPTION_FAILED\n[GNUPG:] END_DECRYPTION\n";
        assert!(matches!(
            check_status(no_mdc.as_bytes()),
            Err(Untrusted::Failed(l)) if l.contains("nomdc")
        ));
        let ignored_mdc = GOOD.replace("[GNUPG:] GOODMDC\n", "");
        assert_eq!(
            check_status(ignored_mdc.as_bytes()),
            Err(Untrusted::NoIntegrity)
        );
        let bad = "[GNUPG:] BEGIN_DECRYPTION\n[GNUPG:] ERROR symkey_decrypt.maybe_error 11_BAD_PASSPHRASE\n\
[GNUPG:] DECRYPTION_FAILED\n[GNUPG:] END_DECRYPTION\n";
        assert_eq!(check_status(bad.as_bytes()), Err(Untrusted::BadPassphrase));
        let pk = "[GNUPG:] ENC_TO BCFFDD144D209B8E 1 0\n[GNUPG:] NO_SECKEY BCFFDD144D209B8E\n\
[GNUPG:] BEGIN_DECRYPTION\n[GNUPG:] DECRYPTION_FAILED\n[GNUPG:] END_DECRYPTION\n";
        assert_eq!(check_status(pk.as_bytes()), Err(Untrusted::PublicKey));
        let badmdc = GOOD.replace("GOODMDC", "BADMDC");
        assert!(matches!(
            check_status(badmdc.as_bytes()),
            Err(Untrusted::Failed(_))
        ));
        let failure = format!("{GOOD}[GNUPG:] FAILURE decrypt 1\n");
        assert!(matches!(
            check_status(failure.as_bytes()),
            Err(Untrusted::Failed(_))
        ));
    }

    /// `gpg --decrypt --batch --status-file` of gpg 2.2.40 on an object made with
    /// `gpg --symmetric --cipher-algo AES256 --compress-algo none`, captured.
    mod captured {
        pub const WRONG_PASSPHRASE: &str = "[GNUPG:] NEED_PASSPHRASE_SYM 9 3 2\n\
[GNUPG:] BEGIN_DECRYPTION\n[GNUPG:] DECRYPTION_INFO 2 9 0\n\
[GNUPG:] ERROR symkey_decrypt.maybe_error 11_BAD_PASSPHRASE\n\
[GNUPG:] DECRYPTION_FAILED\n[GNUPG:] END_DECRYPTION\n";
        /// A byte flipped in the middle: the MDC does not match.
        pub const FLIPPED: &str = "[GNUPG:] NEED_PASSPHRASE_SYM 9 3 2\n\
[GNUPG:] BEGIN_DECRYPTION\n[GNUPG:] DECRYPTION_INFO 2 9 0\n\
[GNUPG:] PLAINTEXT 62 1796050119 big\n[GNUPG:] PLAINTEXT_LENGTH 300000\n\
[GNUPG:] BADMDC\n[GNUPG:] DECRYPTION_FAILED\n[GNUPG:] END_DECRYPTION\n";
        /// Cut in half.
        pub const TRUNCATED: &str = "[GNUPG:] NEED_PASSPHRASE_SYM 9 3 2\n\
[GNUPG:] BEGIN_DECRYPTION\n[GNUPG:] DECRYPTION_INFO 2 9 0\n\
[GNUPG:] PLAINTEXT 62 1796050119 big\n[GNUPG:] PLAINTEXT_LENGTH 300000\n\
[GNUPG:] DECRYPTION_FAILED\n[GNUPG:] END_DECRYPTION\n";
    }

    #[test]
    fn a_wrong_passphrase_is_told_from_corruption_by_status_lines_alone() {
        assert_eq!(
            check_status(captured::WRONG_PASSPHRASE.as_bytes()),
            Err(Untrusted::BadPassphrase)
        );
        assert_eq!(
            check_status(captured::FLIPPED.as_bytes()),
            Err(Untrusted::Failed("BADMDC".into()))
        );
        assert_eq!(
            check_status(captured::TRUNCATED.as_bytes()),
            Err(Untrusted::Failed("DECRYPTION_FAILED".into()))
        );
        // The error code is read as a number (gpg's code in its low 16 bits, its source
        // above), with or without the name gpg appends: 11 is GPG_ERR_BAD_PASSPHRASE,
        // 19 GPG_ERR_BAD_KEY ("Bad session key": the passphrase's key opened nothing).
        for code in ["11", "11_BAD_PASSPHRASE", "33554443", "19", "33554451"] {
            let status = captured::WRONG_PASSPHRASE.replace("11_BAD_PASSPHRASE", code);
            assert_eq!(
                check_status(status.as_bytes()),
                Err(Untrusted::BadPassphrase),
                "{code}"
            );
        }
        // Not the words: another code is a failure whatever the text around it says.
        for line in [
            "ERROR symkey_decrypt.maybe_error 58_Bad_session_key",
            "ERROR BAD_PASSPHRASE 58",
            "ERROR decrypt Bad session key",
            "ERROR symkey_decrypt.maybe_error",
        ] {
            let status = captured::WRONG_PASSPHRASE
                .replace("ERROR symkey_decrypt.maybe_error 11_BAD_PASSPHRASE", line);
            assert_eq!(
                check_status(status.as_bytes()),
                Err(Untrusted::Failed(line.into())),
                "{line}"
            );
        }
    }

    #[test]
    fn order_and_count_matter() {
        let no_end = GOOD.replace("[GNUPG:] END_DECRYPTION\n", "");
        assert_eq!(
            check_status(no_end.as_bytes()),
            Err(Untrusted::Missing("END_DECRYPTION"))
        );
        let no_okay = GOOD.replace("[GNUPG:] DECRYPTION_OKAY\n", "");
        assert_eq!(
            check_status(no_okay.as_bytes()),
            Err(Untrusted::Missing("DECRYPTION_OKAY"))
        );
        let swapped = GOOD.replace("[GNUPG:] GOODMDC\n", "").replace(
            "[GNUPG:] DECRYPTION_OKAY",
            "[GNUPG:] GOODMDC\n[GNUPG:] DECRYPTION_OKAY",
        );
        assert_eq!(
            check_status(swapped.as_bytes()),
            Err(Untrusted::Missing("DECRYPTION_OKAY"))
        );
        let two_begins = format!("[GNUPG:] BEGIN_DECRYPTION\n{GOOD}");
        assert!(check_status(two_begins.as_bytes()).is_err());
    }
}

//! Is a stream an encrypted OpenPGP message before gpg sees it? Pure: no I/O.
//!
//! `gpg --decrypt` prints data that was never encrypted (a literal data packet, or a
//! compressed packet holding one) as readily as what it decrypts; gpg's status lines
//! say so ([`crate::backup::decryption`]) only once the data has gone through the
//! pipeline. A compressed packet expands without bound (bzip2: 50 MB of one byte fits
//! in 3 KB), so an object planted in the bucket by someone without the passphrase
//! could fill the staging volume — the live data's — before the verdict. The stream's
//! first packets are therefore judged first: every backup `gpg --symmetric` makes (the
//! charm's and ours) starts with one or more symmetric-key encrypted session key
//! packets (tag 3) followed by the encrypted data (tag 18, or tag 20 for gpg's OCB
//! mode), and gpg stops at a session key the passphrase does not open. Nothing that
//! starts otherwise reaches gpg. The same rule runs in `hash.py` (the workload's
//! checksum stage) and, where the workload has no python3, in `fetch.sh`: a test holds
//! the three to the same cases.

/// At most this many bytes of a stream are read to judge it.
pub(crate) const HEAD_MAX: usize = 4096;

/// At most this many session key packets may lead the encrypted data.
const SESSION_KEYS_MAX: usize = 16;

/// What the start of a stream says so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Head {
    /// Session key packets, then the encrypted data: gpg may have it.
    Encrypted,
    /// Too few bytes yet to tell.
    NeedMore,
    /// Not an encrypted message (why, in words naming what was found).
    Refused(String),
}

/// The name of an OpenPGP packet tag (RFC 9580, section 5).
fn tag_name(tag: u8) -> &'static str {
    match tag {
        1 => "a public-key encrypted session key",
        2 => "a signature",
        3 => "a symmetric-key encrypted session key",
        4 => "a one-pass signature",
        5 | 7 => "a secret key",
        6 | 14 => "a public key",
        8 => "a compressed data packet",
        9 => "symmetrically encrypted data without integrity protection",
        10 => "a marker packet",
        11 => "a literal data packet",
        12 => "a trust packet",
        13 => "a user id",
        17 => "a user attribute",
        18 => "symmetrically encrypted and integrity protected data",
        19 => "a modification detection code",
        20 => "AEAD encrypted data",
        21 => "a padding packet",
        _ => "an unknown packet",
    }
}

/// One packet header: its tag, the header's length, and the body's length (`None`
/// when it is not given up front: a partial or indeterminate length).
struct Header {
    tag: u8,
    header: usize,
    body: Option<usize>,
}

/// The packet header at the start of `b`: `Ok(None)` when `b` ends inside it,
/// `Err` when its first byte is no packet header at all.
fn header(b: &[u8]) -> Result<Option<Header>, String> {
    let Some(&ctb) = b.first() else {
        return Ok(None);
    };
    if ctb & 0x80 == 0 {
        return Err(format!(
            "its byte {ctb:#04x} is no OpenPGP packet header (not binary OpenPGP data)"
        ));
    }
    // A big-endian length of `n` bytes from byte `from`.
    let be = |from: usize, n: usize| -> Option<usize> {
        let bytes = b.get(from..from + n)?;
        Some(bytes.iter().fold(0usize, |a, &x| (a << 8) | usize::from(x)))
    };
    let parsed = if ctb & 0x40 == 0 {
        // The old format: the tag in bits 5-2, the length's size in bits 1-0.
        let tag = (ctb >> 2) & 0x0f;
        match ctb & 3 {
            3 => Some((1, None)),
            n => {
                let size = 1usize << n;
                be(1, size).map(|len| (1 + size, Some(len)))
            }
        }
        .map(|(header, body)| Header { tag, header, body })
    } else {
        let tag = ctb & 0x3f;
        match b.get(1) {
            None => None,
            Some(&o) if o < 192 => Some((2, Some(usize::from(o)))),
            Some(&o) if o < 224 => b.get(2).map(|&o2| {
                (
                    3,
                    Some(((usize::from(o) - 192) << 8) + usize::from(o2) + 192),
                )
            }),
            Some(255) => be(2, 4).map(|len| (6, Some(len))),
            Some(_) => Some((2, None)),
        }
        .map(|(header, body)| Header { tag, header, body })
    };
    Ok(parsed)
}

/// Judges the first bytes of a stream (`head`, all of it when `ended`): only one or
/// more symmetric-key encrypted session keys followed by encrypted data pass.
pub(crate) fn judge(head: &[u8], ended: bool) -> Head {
    let need_more = || {
        if ended {
            Head::Refused(format!(
                "it ends after {} bytes, before its first packets are whole",
                head.len()
            ))
        } else if head.len() >= HEAD_MAX {
            Head::Refused(format!(
                "its first {HEAD_MAX} bytes hold no encrypted data packet"
            ))
        } else {
            Head::NeedMore
        }
    };
    let mut at = 0;
    let mut keys = 0;
    loop {
        let h = match header(head.get(at..).unwrap_or_default()) {
            Err(why) if at == 0 => return Head::Refused(why),
            Err(why) => return Head::Refused(format!("at byte {at}, {why}")),
            Ok(None) => return need_more(),
            Ok(Some(h)) => h,
        };
        match h.tag {
            3 if keys < SESSION_KEYS_MAX => {
                let Some(body) = h.body else {
                    return Head::Refused(
                        "its session key packet has no definite length".to_string(),
                    );
                };
                at = at.saturating_add(h.header).saturating_add(body);
                keys += 1;
                if at >= HEAD_MAX {
                    return Head::Refused(format!(
                        "its session key packets run past its first {HEAD_MAX} bytes"
                    ));
                }
            }
            18 | 20 if keys > 0 => return Head::Encrypted,
            3 => {
                return Head::Refused(format!(
                    "it starts with more than {SESSION_KEYS_MAX} session key packets"
                ));
            }
            tag if keys == 0 => {
                return Head::Refused(format!(
                    "its first packet is {} (tag {tag}), where an encrypted backup starts \
                     with a symmetric-key encrypted session key (tag 3)",
                    tag_name(tag)
                ));
            }
            tag => {
                return Head::Refused(format!(
                    "its session key is followed by {} (tag {tag}), not by encrypted data \
                     (tag 18)",
                    tag_name(tag)
                ));
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The start of `gpg --symmetric`'s output (gpg 2.2.40): a v4 session key packet
    /// (old format, 13 bytes) and a partial-length tag 18 packet.
    pub(crate) const GPG_HEAD: [u8; 20] = [
        0x8c, 0x0d, 0x04, 0x09, 0x03, 0x02, 0x52, 0xae, 0xd0, 0xf7, 0x05, 0x06, 0x43, 0x39, 0xff,
        0xd2, 0xed, 0x01, 0xa1, 0xf1,
    ];

    /// Cases every implementation of the rule must judge alike: (bytes, ended,
    /// encrypted?). `None`: more bytes are needed.
    pub(crate) fn cases() -> Vec<(Vec<u8>, bool, Option<bool>)> {
        let mut v = vec![
            (GPG_HEAD.to_vec(), false, Some(true)),
            (GPG_HEAD.to_vec(), true, Some(true)),
            (GPG_HEAD[..15].to_vec(), false, None),
            (GPG_HEAD[..15].to_vec(), true, Some(false)),
            (GPG_HEAD[..1].to_vec(), false, None),
            (vec![], false, None),
            (vec![], true, Some(false)),
            // `gpg --store`: a literal packet (old format, tag 11).
            (vec![0xac, 0x10, b'b', 0x00], false, Some(false)),
            // A compressed packet (old format, indeterminate length, tag 8).
            (vec![0xa3, 0x03, 0x78, 0x9c], false, Some(false)),
            // The session key, then a compressed packet instead of encrypted data.
            (
                [&GPG_HEAD[..15], &[0xa3, 0x02]].concat(),
                false,
                Some(false),
            ),
            // New-format session key (tag 3, one-byte length), then tag 20.
            (
                [&[0xc3, 0x02, 0x05, 0x09][..], &[0xd4, 0xe0]].concat(),
                false,
                Some(true),
            ),
            // New-format two-byte length (192 + 0 = 192 bytes of body) then tag 18.
            (
                [&[0xc3, 0xc0, 0x00][..], &[0u8; 192], &[0xd2, 0x05]].concat(),
                false,
                Some(true),
            ),
            // Two session keys, then encrypted data.
            (
                [&GPG_HEAD[..15], &GPG_HEAD[..15], &[0xd2, 0xed]].concat(),
                false,
                Some(true),
            ),
            // Armored text.
            (
                b"-----BEGIN PGP MESSAGE-----\n".to_vec(),
                false,
                Some(false),
            ),
            // A public-key session key (tag 1).
            (vec![0x84, 0x02, 0x03, 0x00], false, Some(false)),
            // Encrypted data with no session key before it.
            (vec![0xd2, 0xe0, 0x00], false, Some(false)),
            // A session key of indeterminate length.
            (vec![0x8f, 0x04, 0x09], false, Some(false)),
        ];
        // Seventeen session keys.
        v.push((GPG_HEAD[..15].repeat(17), false, Some(false)));
        // A session key claiming a body longer than the head ever read.
        v.push((
            [&[0xc3, 0xff, 0x00, 0x01, 0x00, 0x00][..], &[0u8; HEAD_MAX]].concat(),
            false,
            Some(false),
        ));
        v
    }

    #[test]
    fn the_cases_are_judged_as_listed() {
        for (bytes, ended, want) in cases() {
            let got = judge(&bytes, ended);
            let got = match got {
                Head::Encrypted => Some(true),
                Head::NeedMore => None,
                Head::Refused(_) => Some(false),
            };
            assert_eq!(got, want, "{bytes:02x?} (ended: {ended})");
        }
    }

    #[test]
    fn refusals_name_what_was_found() {
        let Head::Refused(why) = judge(&[0xa3, 0x03], false) else {
            panic!("compressed data passed");
        };
        assert!(why.contains("a compressed data packet (tag 8)"), "{why}");
        let Head::Refused(why) = judge(&[&GPG_HEAD[..15], &[0xac, 0x02][..]].concat(), false)
        else {
            panic!("literal data after a session key passed");
        };
        assert!(
            why.contains("followed by a literal data packet (tag 11)"),
            "{why}"
        );
        let Head::Refused(why) = judge(b"-----BEGIN", false) else {
            panic!("armor passed");
        };
        assert!(why.contains("0x2d"), "{why}");
    }

    /// Runs a gate of the workload's on `bytes` (all of the stream): its exit status,
    /// stdout and stderr.
    fn run_gate(argv: &[&str], bytes: &[u8]) -> (i32, Vec<u8>, String) {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        std::fs::File::create(&input)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        let out = std::process::Command::new(argv[0])
            .args(&argv[1..])
            .env("w", dir.path())
            .current_dir(dir.path())
            .stdin(std::fs::File::open(&input).unwrap())
            .output()
            .unwrap_or_else(|e| panic!("{}: {e} (apt-get install -y bash python3)", argv[0]));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code().unwrap_or(-1), out.stdout, stderr)
    }

    /// `hash.py`'s gate (python3) and `common.sh`'s `openpgp_gate` (bash, where the
    /// workload has no python3) judge every case as [`judge`] does, with its words,
    /// and pass what they accept through unchanged.
    #[test]
    fn the_workload_gates_judge_the_cases_alike() {
        let hash_py = crate::backup::scripts::HASH_PY;
        let common = include_str!("scripts/common.sh");
        let bash_gate = format!("{common}\nset -euo pipefail\nopenpgp_gate");
        for (bytes, _, _) in cases() {
            let want = judge(&bytes, true);
            let python = ["python3", "-I", "-c", hash_py, "sha", "len", "", "gate"];
            let bash = ["bash", "-c", bash_gate.as_str()];
            for argv in [&python[..], &bash[..]] {
                let (code, out, err) = run_gate(argv, &bytes);
                match &want {
                    Head::Encrypted => {
                        assert_eq!(
                            (code, &out),
                            (0, &bytes),
                            "{}: {bytes:02x?}: {err}",
                            argv[0]
                        );
                    }
                    Head::Refused(why) => {
                        let ended = judge(&bytes, false) == Head::NeedMore;
                        let want = if ended { 4 } else { 3 };
                        assert_eq!(code, want, "{}: {bytes:02x?}: {err}", argv[0]);
                        assert!(out.is_empty(), "{}: {bytes:02x?}", argv[0]);
                        assert_eq!(err.trim_end(), why, "{}: {bytes:02x?}", argv[0]);
                    }
                    Head::NeedMore => panic!("a whole stream needs no more"),
                }
            }
        }
    }

    #[test]
    fn any_bytes_are_judged_without_a_panic() {
        // Every two-byte prefix, and each followed by a run of one byte.
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                for ended in [false, true] {
                    let _ = judge(&[a, b], ended);
                    let _ = judge(&[a, b, 0xff, 0xff, 0xff, 0xff, 0xff], ended);
                }
            }
        }
    }
}

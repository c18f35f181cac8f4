//! [`Bandwidth`]: a cap on a pipeline's upload or download, in the unit the aws CLI's
//! `max_bandwidth` can express (whole KiB/s).

use std::fmt;
use std::str::FromStr;

use crate::error::ConfigError;

/// A cap on the upload (create) or the download (verify, restore, extract), given to
/// the aws CLI in the workload as its `max_bandwidth`, so that a backup does not
/// saturate the workload's network.
///
/// The aws CLI counts in whole KiB/s (`1K` = 1024 bytes/s), so that is the unit here:
/// [`Bandwidth::kib`], [`Bandwidth::mib`], or text (`500K`, `10M`, `1G`, `10MiB/s`;
/// a bare number is MiB/s).
///
/// ```
/// use synapse_backup::Bandwidth;
///
/// let cap: Bandwidth = "500K".parse()?;
/// assert_eq!(cap, Bandwidth::kib(500));
/// assert_eq!(cap.bytes_per_second(), 512_000);
/// assert_eq!("40".parse::<Bandwidth>()?, Bandwidth::mib(40));
/// assert_eq!(Bandwidth::mib(40).to_string(), "40 MiB/s");
/// assert!("0".parse::<Bandwidth>().is_err());
/// # Ok::<(), synapse_backup::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(into = "u64")]
pub struct Bandwidth {
    /// KiB per second, at least 1.
    kib: u64,
}

impl From<Bandwidth> for u64 {
    /// Bytes per second.
    fn from(cap: Bandwidth) -> u64 {
        cap.bytes_per_second()
    }
}

/// The field [`Bandwidth`]'s errors name.
const FIELD: &str = "bandwidth";

/// The forms [`Bandwidth`]'s text takes, for error messages.
const FORMS: &str = "a number of MiB/s, or with a unit: 500K, 10M, 1G, 10MiB/s";

fn invalid(text: &str, problem: impl fmt::Display) -> ConfigError {
    ConfigError::field(FIELD, format!("{text:?}: {problem}"))
}

impl Bandwidth {
    /// `n` KiB/s (1024 bytes each); 0 is taken as 1, the smallest cap.
    pub const fn kib(n: u32) -> Self {
        Self {
            kib: if n == 0 { 1 } else { n as u64 },
        }
    }

    /// `n` MiB/s; 0 is taken as 1 KiB/s, the smallest cap.
    pub const fn mib(n: u32) -> Self {
        Self {
            kib: if n == 0 { 1 } else { n as u64 * 1024 },
        }
    }

    /// The cap in bytes per second.
    pub const fn bytes_per_second(&self) -> u64 {
        self.kib * 1024
    }

    /// The aws CLI's `max_bandwidth` value: `NMB/s` when whole MiB/s, else `NKB/s`.
    pub(crate) fn aws_value(&self) -> String {
        if self.kib.is_multiple_of(1024) {
            format!("{}MB/s", self.kib / 1024)
        } else {
            format!("{}KB/s", self.kib)
        }
    }
}

impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kib.is_multiple_of(1024) {
            write!(f, "{} MiB/s", self.kib / 1024)
        } else {
            write!(f, "{} KiB/s", self.kib)
        }
    }
}

impl FromStr for Bandwidth {
    type Err = ConfigError;

    /// A whole number with an optional unit, any case: `K`/`KB`/`KiB`, `M`/`MB`/`MiB`
    /// (also a bare number), `G`/`GB`/`GiB`, or `B` (bytes, a multiple of 1024), each
    /// optionally followed by `/s`. Binary, as the aws CLI counts.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let lower = text.trim().to_ascii_lowercase();
        let unit_part = lower.strip_suffix("/s").unwrap_or(&lower);
        let digits_end = unit_part
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(unit_part.len());
        let (number, unit) = unit_part.split_at(digits_end);
        let value: u64 = number
            .parse()
            .map_err(|_| invalid(text, format_args!("not a rate ({FORMS})")))?;
        let scale: u64 = match unit {
            "" if lower.ends_with("/s") => {
                return Err(invalid(text, format_args!("the unit is missing ({FORMS})")));
            }
            "" | "m" | "mb" | "mib" => 1 << 20,
            "k" | "kb" | "kib" => 1 << 10,
            "g" | "gb" | "gib" => 1 << 30,
            "b" => 1,
            _ => {
                return Err(invalid(
                    text,
                    format_args!("unknown unit {unit:?} ({FORMS})"),
                ));
            }
        };
        let bytes = value
            .checked_mul(scale)
            .ok_or_else(|| invalid(text, "too large"))?;
        if bytes == 0 {
            return Err(invalid(text, "must be more than 0 (no cap is no value)"));
        }
        if !bytes.is_multiple_of(1024) {
            return Err(invalid(
                text,
                format_args!(
                    "{bytes} bytes/s is not a whole number of KiB/s, which is what the aws CLI is given"
                ),
            ));
        }
        Ok(Self { kib: bytes / 1024 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_units_in_any_case_and_a_bare_number_is_mib() {
        for (text, cap) in [
            ("10", Bandwidth::mib(10)),
            ("10M", Bandwidth::mib(10)),
            ("10m", Bandwidth::mib(10)),
            ("10MiB/s", Bandwidth::mib(10)),
            ("10mb/s", Bandwidth::mib(10)),
            ("1G", Bandwidth::mib(1024)),
            ("2048K", Bandwidth::mib(2)),
            ("500K", Bandwidth::kib(500)),
            ("500kib/s", Bandwidth::kib(500)),
            ("1048576B", Bandwidth::mib(1)),
            ("1024b", Bandwidth::kib(1)),
        ] {
            assert_eq!(text.parse::<Bandwidth>().unwrap(), cap, "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_rate_naming_the_value() {
        for bad in [
            "",
            "fast",
            "10X",
            "-1",
            "0",
            "0M",
            "1.5M",
            "M",
            "/s",
            "10/s",
            "1000B",
            "99999999999999999999G",
        ] {
            let err = bad.parse::<Bandwidth>().unwrap_err();
            assert_eq!(err.fields(), vec!["bandwidth"], "{bad:?}");
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        let err = "10X".parse::<Bandwidth>().unwrap_err().to_string();
        assert!(err.contains("unknown unit"), "{err}");
        let err = "1000B".parse::<Bandwidth>().unwrap_err().to_string();
        assert!(err.contains("whole number of KiB/s"), "{err}");
    }

    #[test]
    fn the_aws_cli_gets_whole_mib_or_kib() {
        assert_eq!(Bandwidth::mib(50).aws_value(), "50MB/s");
        assert_eq!(Bandwidth::kib(500).aws_value(), "500KB/s");
        assert_eq!(Bandwidth::kib(2048).aws_value(), "2MB/s");
        assert_eq!(Bandwidth::mib(0), Bandwidth::kib(1));
        assert_eq!(Bandwidth::kib(500).to_string(), "500 KiB/s");
    }
}

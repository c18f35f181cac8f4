//! Logs, progress and formatting. Logs and progress go to standard error; standard
//! output carries only results (a backup id, a table, JSON).

use std::future::Future;
use std::io::{self, IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use synapse_backup::{BackupInfo, BackupStatus};
use tracing_subscriber::EnvFilter;

/// The spinner on screen, if any: log lines are written around it.
static PROGRESS: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Standard error, written around the spinner so log lines do not tear it.
struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let bar = PROGRESS.lock().ok().and_then(|p| p.clone());
        match bar {
            Some(bar) => bar
                .suspend(|| io::stderr().write_all(buf))
                .map(|()| buf.len()),
            None => io::stderr().write_all(buf).map(|()| buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// Prints `warning: <text>` on standard error, around the spinner if one is shown.
pub fn warn(text: &str) {
    let _ = LogWriter.write_all(format!("warning: {text}\n").as_bytes());
}

/// Logs to standard error: `RUST_LOG` when set, else warnings, and with `-v` this
/// crate's progress (`-vv` debug, `-vvv` trace).
pub fn init_logging(verbose: u8) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::new(spec),
        _ => EnvFilter::new(match verbose {
            0 => "warn",
            1 => "warn,synapse_backup=info",
            2 => "info,synapse_backup=debug",
            _ => "debug,synapse_backup=trace",
        }),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogWriter)
        .with_ansi(io::stderr().is_terminal())
        .with_target(verbose >= 2);
    // Timestamps only when asked for detail: a plain run prints a few warnings at most.
    let _ = if verbose == 0 {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
}

/// Runs `work` with a spinner and the elapsed time on standard error when it is a
/// terminal; silently otherwise.
pub async fn with_spinner<F: Future>(message: impl Into<String>, work: F) -> F::Output {
    if !io::stderr().is_terminal() {
        return work.await;
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(message.into());
    bar.enable_steady_tick(Duration::from_millis(120));
    if let Ok(mut slot) = PROGRESS.lock() {
        *slot = Some(bar.clone());
    }
    let out = work.await;
    if let Ok(mut slot) = PROGRESS.lock() {
        *slot = None;
    }
    bar.finish_and_clear();
    out
}

/// Bytes in decimal units: `512 B`, `4.2 MB`, `1.1 GB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 999.95 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Seconds with one decimal: `1.3 s`.
pub fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

/// Throughput in decimal megabytes per second.
pub fn rate(bytes: u64, duration: Duration) -> String {
    let secs = duration.as_secs_f64().max(1e-3);
    format!("{:.1} MB/s", bytes as f64 / 1e6 / secs)
}

/// RFC 3339 in UTC with a `Z`: `2026-11-26T07:19:00Z`.
pub fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// One backup in `list --json`: a stable shape for scripts.
#[derive(Serialize)]
struct ListEntry<'a> {
    id: &'a str,
    status: BackupStatus,
    last_modified: String,
    size: u64,
    key: &'a str,
}

/// `list --json`: an array of `{id, status, last_modified, size, key}`, newest first.
pub fn backups_json(backups: &[BackupInfo]) -> String {
    let entries: Vec<ListEntry<'_>> = backups
        .iter()
        .map(|b| ListEntry {
            id: b.id.as_str(),
            status: b.status,
            last_modified: rfc3339(b.last_modified),
            size: b.size,
            key: &b.key,
        })
        .collect();
    serde_json::to_string_pretty(&entries).unwrap_or_else(|_| "[]".into())
}

/// `list`: a table with a header, newest first.
pub fn backups_table(backups: &[BackupInfo]) -> String {
    let rows: Vec<[String; 4]> = backups
        .iter()
        .map(|b| {
            [
                b.id.to_string(),
                b.status.to_string(),
                b.last_modified.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                size(b.size),
            ]
        })
        .collect();
    let header = ["ID", "STATUS", "LAST MODIFIED", "SIZE"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 4]| {
        format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}\n",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
        )
    };
    let mut out = line(header);
    for row in &rows {
        out.push_str(&line([&row[0], &row[1], &row[2], &row[3]]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_decimal_and_short() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(999), "999 B");
        assert_eq!(size(1000), "1.0 kB");
        assert_eq!(size(4_200_000), "4.2 MB");
        assert_eq!(size(999_999), "1.0 MB");
        assert_eq!(size(1_100_000_000), "1.1 GB");
    }

    #[test]
    fn rates_and_times() {
        assert_eq!(rate(10_000_000, Duration::from_secs(2)), "5.0 MB/s");
        assert_eq!(seconds(Duration::from_millis(1240)), "1.2 s");
    }
}

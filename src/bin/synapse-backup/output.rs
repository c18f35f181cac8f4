//! What the commands share for printing: logs, progress, informational lines and
//! formatting. Logs, progress and notes go to standard error; standard output carries
//! only results (a backup id, a table, JSON). `--quiet` silences the progress and the
//! informational lines; warnings and errors are always printed.

use std::future::Future;
use std::io::{self, BufRead, IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use synapse_backup::{BackupInfo, Progress, ProgressCallback};
use tracing_subscriber::EnvFilter;

/// `--quiet`: no progress and no informational lines.
static QUIET: AtomicBool = AtomicBool::new(false);

/// `--json`: progress as log lines, never a bar (standard output is the JSON).
static JSON: AtomicBool = AtomicBool::new(false);

/// The spinner or bar on screen, if any: log lines are written around it.
static PROGRESS: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// The tracing target of the progress lines logged when there is no bar (enabled at
/// `info` whatever the verbosity).
const PROGRESS_TARGET: &str = "progress";

/// Seconds between progress lines when standard error is not a terminal (or with
/// `--json`), unless [`ENV_PROGRESS_EVERY`] says otherwise.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// The environment variable that sets the seconds between progress lines (0: every
/// report, about one a second).
pub const ENV_PROGRESS_EVERY: &str = "SYNAPSE_BACKUP_PROGRESS_EVERY";

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

/// Prints `text` and a newline on standard error, around the spinner if one is shown,
/// unless `--quiet`: a note on what was done, not a result and not a warning.
pub fn info(text: &str) {
    if !QUIET.load(Ordering::Relaxed) {
        let _ = LogWriter.write_all(format!("{text}\n").as_bytes());
    }
}

/// Sets how the command prints (`--json`, `--quiet`) and starts the logs on standard
/// error: `RUST_LOG` when set, else warnings and the progress lines, and with `-v` this
/// crate's progress (`-vv` debug, `-vvv` trace); with `--quiet` warnings and errors only.
pub fn init(verbose: u8, quiet: bool, json: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
    JSON.store(json, Ordering::Relaxed);
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::new(spec),
        _ if quiet => EnvFilter::new("warn,aws_config=error"),
        _ => EnvFilter::new(match verbose {
            // aws_config warns with a debug dump when the credential chain's instance
            // metadata probe fails off EC2; the chain's own error says what is missing.
            0 => "warn,progress=info,aws_config=error",
            1 => "warn,synapse_backup=info,progress=info,aws_config=error",
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
    if QUIET.load(Ordering::Relaxed) || !io::stderr().is_terminal() {
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

/// How a long operation shows its progress on standard error: on a terminal (without
/// `--json`) a spinner until the pipeline reports, then a bar that fits 80 columns
/// (stage, bar, percentage, bytes done and total, rate, time left); otherwise a log
/// line every [`PROGRESS_EVERY`] (nothing on standard output); nothing with `--quiet`.
pub struct ProgressView {
    message: String,
    bar: Option<ProgressBar>,
    callback: ProgressCallback,
}

/// The bar's width in cells: the stage (10), the bar (22 with its brackets) and
/// [`bar_message`] (at most 44) fit 80 columns.
const BAR_TEMPLATE: &str = "{prefix:10} [{bar:20}] {msg}";

impl ProgressView {
    /// A view for an operation described by `message` (shown until the first report).
    pub fn new(message: impl Into<String>) -> Self {
        let message = message.into();
        if QUIET.load(Ordering::Relaxed) {
            return ProgressView {
                message,
                bar: None,
                callback: ProgressCallback::new(|_| {}),
            };
        }
        if JSON.load(Ordering::Relaxed) || !io::stderr().is_terminal() {
            let every = std::env::var(ENV_PROGRESS_EVERY)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .map_or(PROGRESS_EVERY, Duration::from_secs);
            let logger = Mutex::new(ProgressLog::new(every));
            let callback = ProgressCallback::new(move |p| {
                if let Some(line) = logger.lock().ok().and_then(|mut l| l.line(p)) {
                    tracing::info!(target: PROGRESS_TARGET, "{line}");
                }
            });
            return ProgressView {
                message,
                bar: None,
                callback,
            };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        let shown = bar.clone();
        let callback = ProgressCallback::new(move |p| draw(&shown, p));
        ProgressView {
            message,
            bar: Some(bar),
            callback,
        }
    }

    /// The callback to put in the operation's options.
    pub fn callback(&self) -> ProgressCallback {
        self.callback.clone()
    }

    /// Runs `work` with the view on screen, and clears it afterwards.
    pub async fn run<F: Future>(self, work: F) -> F::Output {
        let Some(bar) = self.bar else {
            return work.await;
        };
        bar.set_style(spinner_style());
        bar.set_message(self.message);
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
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {wide_msg} ({elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

/// Shows a report on the bar: the bar itself once the total is known.
fn draw(bar: &ProgressBar, p: &Progress) {
    bar.set_prefix(p.stage.verb());
    bar.set_message(bar_message(p));
    match p.bytes_total {
        Some(total) if total > 0 => {
            if bar.length().is_none() {
                bar.set_style(
                    ProgressStyle::with_template(BAR_TEMPLATE)
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("#>-"),
                );
            }
            bar.set_length(100);
            bar.set_position(u64::from(p.percent().unwrap_or(0)));
        }
        _ => {}
    }
}

/// The bar's text: `43% 1.2 GB/2.8 GB 120.0 MB/s 2m10s left`, or without a total
/// `1.2 GB 120.0 MB/s`; at most 44 characters.
pub fn bar_message(p: &Progress) -> String {
    let mut out = match (p.percent(), p.bytes_total) {
        (Some(pc), Some(total)) => format!("{pc:>3}% {}/{}", size(p.bytes_done), size(total)),
        _ => size(p.bytes_done),
    };
    if let Some(r) = p.bytes_per_second {
        // Whole bytes per second; out-of-range values saturate.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let whole = r.max(0.0).round() as u64;
        out.push_str(&format!(" {}/s", size(whole)));
    }
    if let Some(eta) = p.eta.filter(|_| !p.finished) {
        out.push_str(&format!(" {} left", short_duration(eta)));
    }
    out
}

/// A duration in at most six characters: `45s`, `2m10s`, `1h05m`, `>99h`.
pub fn short_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..360_000 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => ">99h".into(),
    }
}

/// Which reports become log lines: one every `every` of the operation's time (the
/// final report is left to the command's summary).
struct ProgressLog {
    every: Duration,
    next: Duration,
}

impl ProgressLog {
    fn new(every: Duration) -> Self {
        ProgressLog { every, next: every }
    }

    /// The line to log for `p`, if it is time for one.
    fn line(&mut self, p: &Progress) -> Option<String> {
        if p.finished || p.elapsed < self.next {
            return None;
        }
        if !self.every.is_zero() {
            while self.next <= p.elapsed {
                self.next += self.every;
            }
        }
        Some(p.to_string())
    }
}

/// Bytes in decimal units: `512 B`, `4.2 MB`, `1.1 GB` (the library's
/// [`human_bytes`](synapse_backup::human_bytes), as its progress lines print them).
pub fn size(bytes: u64) -> String {
    synapse_backup::human_bytes(bytes)
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

/// `list`: a table with a header, newest first; the last column is the kind (`full`,
/// `incremental on BASE`, `legacy`, `unknown`).
pub fn backups_table(backups: &[BackupInfo]) -> String {
    let rows: Vec<[String; 5]> = backups
        .iter()
        .map(|b| {
            [
                b.id.to_string(),
                b.status.to_string(),
                b.last_modified.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                size(b.size),
                b.kind.to_string(),
            ]
        })
        .collect();
    let header = ["ID", "STATUS", "LAST MODIFIED", "SIZE", "KIND"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    // The last column is not padded (no trailing spaces).
    let line = |cells: [&str; 5]| {
        format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {}\n",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
        )
    };
    let mut out = line(header);
    for row in &rows {
        out.push_str(&line([&row[0], &row[1], &row[2], &row[3], &row[4]]));
    }
    out
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
pub fn emit(text: &str) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Writes `value` (a library report, through its `Serialize`) as pretty JSON and a
/// newline to stdout.
pub fn emit_json<T: Serialize + ?Sized>(value: &T) {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into());
    emit(&format!("{text}\n"));
}

/// Asks on the terminal; only `yes` or `y` agrees.
pub fn confirm(question: &str) -> bool {
    eprint!("{question}");
    let _ = io::stderr().flush();
    let mut answer = String::new();
    if io::stdin().lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_ascii_lowercase().as_str(), "yes" | "y")
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

    fn report(done: u64, total: Option<u64>, secs: u64) -> Progress {
        let mut meter =
            synapse_backup::ProgressMeter::new(synapse_backup::ProgressStage::Backup, total);
        meter.sample(Duration::ZERO, 0);
        meter.sample(Duration::from_secs(secs), done)
    }

    #[test]
    fn the_bar_fits_80_columns_whatever_the_numbers() {
        // The widest stage, sizes, rate and time left there are.
        let wide = report(999_940_000_000, Some(999_950_000_000), 1);
        let slow = report(2_000_000, Some(999_950_000_000_000), 1);
        for p in [&wide, &slow] {
            let msg = bar_message(p);
            assert!(msg.chars().count() <= 44, "{msg:?}");
            // prefix (10) + " [" + bar (20) + "] " + message.
            assert!(10 + 2 + 20 + 2 + msg.chars().count() <= 80, "{msg:?}");
        }
        assert_eq!(
            bar_message(&report(1_200_000_000, Some(2_800_000_000), 10)),
            " 42% 1.2 GB/2.8 GB 120.0 MB/s 13s left"
        );
        assert_eq!(bar_message(&report(5_000_000, None, 1)), "5.0 MB 5.0 MB/s");
        assert!(
            bar_message(&slow).ends_with(">99h left"),
            "{}",
            bar_message(&slow)
        );
        assert_eq!(short_duration(Duration::from_secs(130)), "2m10s");
        assert_eq!(short_duration(Duration::from_secs(3900)), "1h05m");
    }

    #[test]
    fn log_lines_come_once_per_period_and_not_for_the_end() {
        let mut log = ProgressLog::new(Duration::from_secs(30));
        assert_eq!(log.line(&report(0, Some(10), 0)), None);
        assert_eq!(log.line(&report(1, Some(10), 29)), None);
        let line = log.line(&report(5, Some(10), 31)).unwrap();
        assert!(line.starts_with("backing up: 50% of 10 B"), "{line}");
        assert_eq!(log.line(&report(6, Some(10), 45)), None);
        // A long gap gives one line, not a burst.
        assert!(log.line(&report(7, Some(10), 200)).is_some());
        assert_eq!(log.line(&report(8, Some(10), 205)), None);
        let mut meter =
            synapse_backup::ProgressMeter::new(synapse_backup::ProgressStage::Backup, None);
        assert_eq!(log.line(&meter.finish(Duration::from_secs(900), 10)), None);
        // Every report with a period of 0.
        let mut all = ProgressLog::new(Duration::ZERO);
        assert!(all.line(&report(0, Some(10), 0)).is_some());
        assert!(all.line(&report(0, Some(10), 0)).is_some());
    }

    #[test]
    fn rates_and_times() {
        assert_eq!(rate(10_000_000, Duration::from_secs(2)), "5.0 MB/s");
        assert_eq!(seconds(Duration::from_millis(1240)), "1.2 s");
    }
}

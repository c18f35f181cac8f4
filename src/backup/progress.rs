//! Progress of create, verify and restore: what a charm puts in its action log or unit
//! status ("backing up: 43%, 120 MB/s, 2 min left") and the CLI draws as a bar.
//!
//! The pipeline's checksum stage (`hash.py`) counts the encrypted bytes that pass
//! through it and, every half second, replaces a `progress` file in the run's work dir
//! with the count. While the pipeline runs, the library reads that file every
//! [`ProgressCallback::interval`] (as the workload user, like every other work file,
//! through [`Container::exec`]) and calls the callback with a [`Progress`]: the stage,
//! the bytes done, the total when known, the rate and the time left. It works the same
//! through any [`Container`].
//!
//! What the count measures:
//! - create: the encrypted stream handed to the aws CLI, which buffers up to ten parts
//!   (10 × [`BackupOptions::part_size_mib`](crate::BackupOptions::part_size_mib)) ahead of
//!   what it has sent; the total is the size of the files to archive, so tar's headers
//!   can carry the count past it, and gpg's compression can keep it short of it (the
//!   percentage stays below 100 until the final event);
//! - verify and restore: the encrypted object as it is downloaded; the total is its size.
//!
//! Where the workload has no python3, the checksum stage is a `tee` to `sha256sum` and
//! `wc -c`, which count nothing along the way: progress then stays at 0 bytes until the
//! final event, at the end.
//!
//! The rate and the time left are pure functions of the samples ([`ProgressMeter`]).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::backup::layout::Layout;
use crate::backup::plan::WorkDir;
use crate::backup::scripts::WorkFile;
use crate::backup::work::{Outputs, parse_field};
use crate::container::{Container, ExecOptions, ExecOutput};
use crate::error::ContainerError;

/// The environment variable that tells the pipeline where to write its byte count.
pub(crate) const PROGRESS_ENV: &str = "SB_PROGRESS";

/// What is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProgressStage {
    /// create: archiving, encrypting and uploading.
    Backup,
    /// verify: downloading, decrypting and checking.
    Verify,
    /// restore: downloading, decrypting and staging (before the swap).
    Restore,
}

impl ProgressStage {
    /// A short present participle for status lines: `backing up`, `verifying`,
    /// `restoring`.
    pub fn verb(self) -> &'static str {
        match self {
            ProgressStage::Backup => "backing up",
            ProgressStage::Verify => "verifying",
            ProgressStage::Restore => "restoring",
        }
    }
}

impl fmt::Display for ProgressStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.verb())
    }
}

/// One progress report.
///
/// `Display` writes a status line: `backing up: 43%, 120.0 MB/s, 2 min left` (or the
/// bytes done when the total is unknown, and `done` with the size and time at the end).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Progress {
    /// What is running.
    pub stage: ProgressStage,
    /// Encrypted bytes through the pipeline so far.
    pub bytes_done: u64,
    /// The expected total, when known (an estimate for create: see the module docs).
    pub bytes_total: Option<u64>,
    /// Time since the pipeline started.
    pub elapsed: Duration,
    /// Recent throughput in bytes per second (over the last
    /// [`ProgressMeter::WINDOW`]); `None` before any time has passed.
    pub bytes_per_second: Option<f64>,
    /// Time left at the recent rate; `None` without a total, without a rate, before
    /// [`ProgressMeter::ETA_AFTER`] bytes (a pipeline starting up has no useful rate
    /// yet), or once the count has reached an estimated total before the end.
    pub eta: Option<Duration>,
    /// This is the final report: the pipeline finished successfully.
    pub finished: bool,
}

impl Progress {
    /// The share done, from 0.0 to 1.0: below 1.0 until [`finished`](Self::finished)
    /// (capped at 0.99), 1.0 at the end; `None` while the total is unknown or zero.
    pub fn fraction(&self) -> Option<f64> {
        if self.finished {
            return Some(1.0);
        }
        let total = self.bytes_total.filter(|t| *t > 0)?;
        Some((self.bytes_done as f64 / total as f64).clamp(0.0, 0.99))
    }

    /// [`fraction`](Self::fraction) as a whole percentage (rounded down, 100 only at
    /// the end).
    pub fn percent(&self) -> Option<u8> {
        if self.finished {
            return Some(100);
        }
        let total = self.bytes_total.filter(|t| *t > 0)?;
        let percent = u128::from(self.bytes_done) * 100 / u128::from(total);
        Some(u8::try_from(percent.min(99)).unwrap_or(99))
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.stage)?;
        if self.finished {
            write!(
                f,
                "done, {} in {}",
                human_bytes(self.bytes_done),
                human_duration(self.elapsed)
            )?;
            if let Some(rate) = self.bytes_per_second {
                write!(f, " ({})", human_rate(rate))?;
            }
            return Ok(());
        }
        match (self.percent(), self.bytes_total) {
            (Some(p), Some(total)) => write!(f, "{p}% of {}", human_bytes(total))?,
            _ => write!(f, "{}", human_bytes(self.bytes_done))?,
        }
        if let Some(rate) = self.bytes_per_second {
            write!(f, ", {}", human_rate(rate))?;
        }
        if let Some(eta) = self.eta {
            write!(f, ", {} left", human_duration(eta))?;
        }
        Ok(())
    }
}

/// Bytes in decimal units with one decimal, as progress lines and the command line
/// print them: `512 B`, `4.2 MB`, `1.1 GB`.
///
/// ```
/// assert_eq!(synapse_backup::human_bytes(999), "999 B");
/// assert_eq!(synapse_backup::human_bytes(4_200_000), "4.2 MB");
/// ```
pub fn human_bytes(bytes: u64) -> String {
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

/// A rate in decimal units per second: `120.0 MB/s`.
pub(crate) fn human_rate(bytes_per_second: f64) -> String {
    // Whole bytes are enough for a rate; out-of-range values saturate.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let whole = bytes_per_second.max(0.0).round() as u64;
    format!("{}/s", human_bytes(whole))
}

/// A duration for people: `45 s`, `2 min`, `1 h 5 min`, `more than 99 h` (minutes
/// rounded up past the first one, so `2 min left` is never an underestimate by a
/// minute).
pub(crate) fn human_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs < 60 {
        return format!("{secs} s");
    }
    let minutes = secs.div_ceil(60);
    if minutes < 60 {
        return format!("{minutes} min");
    }
    let (h, m) = (minutes / 60, minutes % 60);
    if h >= 100 {
        "more than 99 h".into()
    } else if m == 0 {
        format!("{h} h")
    } else {
        format!("{h} h {m} min")
    }
}

/// Turns byte counts sampled over time into [`Progress`] reports: pure (the caller
/// passes the time), so the rate and time-left rules are tested exactly.
///
/// The rate is measured over the samples of the last [`WINDOW`](Self::WINDOW) (over
/// the whole run until two samples are that far apart), so it follows a change of
/// speed within seconds without jumping at every sample. Counts never go backwards: a
/// smaller sample (which the pipeline never writes) counts as the last one.
#[derive(Debug, Clone)]
pub struct ProgressMeter {
    stage: ProgressStage,
    total: Option<u64>,
    samples: VecDeque<(Duration, u64)>,
    last: u64,
}

impl ProgressMeter {
    /// How far back the rate looks.
    pub const WINDOW: Duration = Duration::from_secs(10);
    /// The bytes done before a time left is estimated (1 MiB).
    pub const ETA_AFTER: u64 = 1 << 20;

    /// A meter for `stage` with the expected total, if known; its first sample is 0
    /// bytes at time zero.
    pub fn new(stage: ProgressStage, total: Option<u64>) -> Self {
        let mut samples = VecDeque::new();
        samples.push_back((Duration::ZERO, 0));
        ProgressMeter {
            stage,
            total,
            samples,
            last: 0,
        }
    }

    /// The report for `bytes` done at `elapsed` since the start.
    pub fn sample(&mut self, elapsed: Duration, bytes: u64) -> Progress {
        self.report(elapsed, bytes, false)
    }

    /// The final report: `bytes` done in all, at `elapsed`; the rate is the whole
    /// run's average.
    pub fn finish(&mut self, elapsed: Duration, bytes: u64) -> Progress {
        self.report(elapsed, bytes, true)
    }

    fn report(&mut self, elapsed: Duration, bytes: u64, finished: bool) -> Progress {
        let bytes = bytes.max(self.last);
        let elapsed = elapsed.max(self.samples.back().map_or(Duration::ZERO, |s| s.0));
        self.last = bytes;
        self.samples.push_back((elapsed, bytes));
        // Keep one sample at or before the window's start, so the window is full.
        while self.samples.len() > 2 && elapsed.saturating_sub(self.samples[1].0) >= Self::WINDOW {
            self.samples.pop_front();
        }
        let (t0, b0) = if finished {
            (Duration::ZERO, 0)
        } else {
            self.samples[0]
        };
        let span = elapsed.saturating_sub(t0).as_secs_f64();
        let rate = (span > 0.0).then(|| (bytes - b0) as f64 / span);
        let eta = match (self.total, rate) {
            (Some(total), Some(rate))
                if !finished && rate > 0.0 && total > bytes && bytes >= Self::ETA_AFTER =>
            {
                Duration::try_from_secs_f64((total - bytes) as f64 / rate).ok()
            }
            _ => None,
        };
        Progress {
            stage: self.stage,
            bytes_done: bytes,
            bytes_total: self.total,
            elapsed,
            bytes_per_second: rate,
            eta,
            finished,
        }
    }
}

/// Receives [`Progress`] reports while create, verify or restore runs: set it with
/// the `progress` setter of [`BackupOptions`](crate::BackupOptions) or
/// [`RestoreOptions`](crate::RestoreOptions).
///
/// The function is called on the task that drives the operation: once when the
/// pipeline starts (0 bytes), every [`interval`](Self::interval) while it runs (but
/// never more often than [`min_read_interval`](Self::min_read_interval): each report
/// reads the count with an exec in the workload, and through Pebble every exec is a
/// change, of which Pebble keeps a bounded number), and once at the end when it succeeded ([`Progress::finished`]). It should return
/// quickly (hand the report to a channel, set a status); a panic in it is caught and
/// logged, and the operation goes on without further reports.
///
/// Clones share the function; two callbacks are equal when they are clones of one
/// another with the same interval.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use synapse_backup::{BackupOptions, ProgressCallback};
///
/// let status = Arc::new(Mutex::new(String::new()));
/// let shown = Arc::clone(&status);
/// let options = BackupOptions::default()
///     .progress(Some(ProgressCallback::new(move |p| *shown.lock().unwrap() = p.to_string())));
/// assert!(options.progress.is_some());
/// ```
#[derive(Clone)]
pub struct ProgressCallback {
    function: Arc<dyn Fn(&Progress) + Send + Sync>,
    interval: Duration,
    min_read_interval: Duration,
    broken: Arc<AtomicBool>,
}

impl ProgressCallback {
    /// The default time between reports.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
    /// The shortest time between reports (each one reads a file in the workload).
    pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
    /// The default shortest time between two reads of the count in the workload.
    pub const DEFAULT_MIN_READ_INTERVAL: Duration = Duration::from_secs(5);

    /// Calls `function` with each report, every [`DEFAULT_INTERVAL`](Self::DEFAULT_INTERVAL).
    pub fn new(function: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        ProgressCallback {
            function: Arc::new(function),
            interval: Self::DEFAULT_INTERVAL,
            min_read_interval: Self::DEFAULT_MIN_READ_INTERVAL,
            broken: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Reports every `interval` instead (at least [`MIN_INTERVAL`](Self::MIN_INTERVAL)).
    #[must_use]
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Self::MIN_INTERVAL);
        self
    }

    /// The time between reports while a pipeline runs, as asked for.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Reads the count in the workload (an exec each time) at most once every
    /// `interval` (at least [`MIN_INTERVAL`](Self::MIN_INTERVAL); default
    /// [`DEFAULT_MIN_READ_INTERVAL`](Self::DEFAULT_MIN_READ_INTERVAL)), so reports come
    /// every `max(interval, min_read_interval)`. Lower it only for a workload where an
    /// exec is cheap (a local one), never for Pebble's, which keeps every exec as a
    /// change.
    #[must_use]
    pub fn with_min_read_interval(mut self, interval: Duration) -> Self {
        self.min_read_interval = interval.max(Self::MIN_INTERVAL);
        self
    }

    /// The shortest time between two reads of the count in the workload.
    pub fn min_read_interval(&self) -> Duration {
        self.min_read_interval
    }

    /// The time between reports (and reads) while a pipeline runs.
    fn poll_period(&self) -> Duration {
        self.interval.max(self.min_read_interval)
    }

    /// Calls the function with `progress`, unless an earlier call panicked.
    pub fn report(&self, progress: &Progress) {
        if self.broken.load(Ordering::Relaxed) {
            return;
        }
        let call = std::panic::AssertUnwindSafe(|| (self.function)(progress));
        if std::panic::catch_unwind(call).is_err() {
            self.broken.store(true, Ordering::Relaxed);
            tracing::warn!("the progress callback panicked: no further progress is reported");
        }
    }
}

impl fmt::Debug for ProgressCallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProgressCallback")
            .field("interval", &self.interval)
            .field("min_read_interval", &self.min_read_interval)
            .finish_non_exhaustive()
    }
}

impl PartialEq for ProgressCallback {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.function, &other.function)
            && self.interval == other.interval
            && self.min_read_interval == other.min_read_interval
    }
}

impl Eq for ProgressCallback {}

/// Reads a byte count the pipeline wrote (as the workload user); `None` while there
/// is none yet (or it cannot be read: progress is never worth failing a run for).
async fn read_count<C: Container + ?Sized>(
    outputs: &Outputs<'_, C>,
    file: WorkFile,
) -> Option<u64> {
    outputs
        .text_if_written(file)
        .await
        .ok()
        .flatten()
        .and_then(|t| parse_field(&t, 0))
}

/// Reads the pipeline's byte count (`count` when given, else its progress file) every
/// poll period and reports it; never returns.
async fn poll<C: Container + ?Sized>(
    outputs: &Outputs<'_, C>,
    count: Option<&AtomicU64>,
    callback: &ProgressCallback,
    meter: &mut ProgressMeter,
    started: Instant,
) -> Infallible {
    let period = callback.poll_period();
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::from_std(started) + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut bytes = 0;
    loop {
        ticker.tick().await;
        if let Some(count) = count {
            bytes = count.load(Ordering::Relaxed);
        } else if let Some(count) = read_count(outputs, WorkFile::Progress).await {
            bytes = count;
        }
        callback.report(&meter.sample(started.elapsed(), bytes));
    }
}

/// Runs a pipeline script (`backup.sh` or `fetch.sh`) with `options`, reporting its
/// progress to `callback` when there is one: the script is told where to write its
/// byte count (`SB_PROGRESS`, in the work dir), which is read every interval while it
/// runs; the final report, when it succeeds, carries the stream's length from the
/// work dir's `length` file. Without a callback it is a plain [`Container::exec`].
///
/// # Errors
/// The exec's error.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn exec_with_progress<C: Container + ?Sized>(
    container: &C,
    layout: &Layout,
    work: &WorkDir,
    argv: &[String],
    options: ExecOptions,
    callback: Option<&ProgressCallback>,
    stage: ProgressStage,
    total: Option<u64>,
) -> Result<ExecOutput, ContainerError> {
    let run = |options| container.exec(argv, options);
    run_with_progress(
        container, layout, work, options, callback, stage, total, None, run,
    )
    .await
}

/// As [`exec_with_progress`], with `run` starting the pipeline (given the options with
/// `SB_PROGRESS` set) and waiting for it: a streamed exec fed by the library, say.
/// With `count`, the byte count is read there (the library's, as it feeds the
/// pipeline) instead of the pipeline's progress and length files.
///
/// # Errors
/// `run`'s error.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_with_progress<C, T, E, F, Fut>(
    container: &C,
    layout: &Layout,
    work: &WorkDir,
    mut options: ExecOptions,
    callback: Option<&ProgressCallback>,
    stage: ProgressStage,
    total: Option<u64>,
    count: Option<&AtomicU64>,
    run: F,
) -> Result<T, E>
where
    C: Container + ?Sized,
    F: FnOnce(ExecOptions) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let Some(callback) = callback else {
        return run(options).await;
    };
    // The workload's checksum stage writes the running count; when the library moves
    // the stream (`count`), no such stage runs and the count is the library's own.
    if count.is_none() {
        options
            .environment
            .insert(PROGRESS_ENV.into(), work.path(WorkFile::Progress));
    }
    let outputs = Outputs::new(container, layout, work);
    let started = Instant::now();
    let mut meter = ProgressMeter::new(stage, total);
    callback.report(&meter.sample(Duration::ZERO, 0));
    let outcome = tokio::select! {
        outcome = run(options) => outcome,
        never = poll(&outputs, count, callback, &mut meter, started) => match never {},
    };
    if outcome.is_ok() {
        let length = match count {
            Some(count) => Some(count.load(Ordering::Relaxed)),
            None => match read_count(&outputs, WorkFile::Length).await {
                Some(n) => Some(n),
                None => read_count(&outputs, WorkFile::Progress).await,
            },
        };
        let bytes = length.unwrap_or(meter.last);
        callback.report(&meter.finish(started.elapsed(), bytes));
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    const MB: u64 = 1_000_000;

    #[test]
    fn rate_and_time_left_follow_the_samples() {
        let mut m = ProgressMeter::new(ProgressStage::Backup, Some(100 * MB));
        let start = m.sample(Duration::ZERO, 0);
        assert_eq!(start.bytes_per_second, None);
        assert_eq!(start.eta, None);
        assert_eq!(start.percent(), Some(0));

        let p = m.sample(secs(2), 20 * MB);
        assert_eq!(p.bytes_per_second, Some(10.0 * MB as f64));
        assert_eq!(p.eta, Some(secs(8)));
        assert_eq!(p.percent(), Some(20));
        assert_eq!(
            p.to_string(),
            "backing up: 20% of 100.0 MB, 10.0 MB/s, 8 s left"
        );

        // 10 s window: the rate follows a slow-down once the fast samples age out.
        m.sample(secs(4), 40 * MB);
        m.sample(secs(14), 50 * MB);
        let p = m.sample(secs(24), 60 * MB);
        assert_eq!(p.bytes_per_second, Some(1.0 * MB as f64));
        assert_eq!(p.eta, Some(secs(40)));
        assert_eq!(p.elapsed, secs(24));
        assert!(!p.finished);
        // No estimate from the first few bytes of a pipeline starting up.
        let mut m = ProgressMeter::new(ProgressStage::Backup, Some(100 * MB));
        let p = m.sample(secs(2), 15);
        assert_eq!((p.bytes_per_second, p.eta), (Some(7.5), None));
    }

    #[test]
    fn the_window_keeps_the_sample_at_its_start() {
        let mut m = ProgressMeter::new(ProgressStage::Verify, None);
        for t in 1..=30 {
            m.sample(secs(t), t * MB);
        }
        // Samples one second apart: the rate is measured over exactly 10 s.
        assert_eq!(m.samples.front().unwrap().0, secs(20));
        let p = m.sample(secs(31), 41 * MB);
        assert_eq!(p.bytes_per_second, Some(2.0 * MB as f64));
        assert_eq!(p.eta, None);
        assert_eq!(p.percent(), None);
        assert_eq!(p.to_string(), "verifying: 41.0 MB, 2.0 MB/s");
    }

    #[test]
    fn counts_never_go_backwards_and_a_stall_has_no_time_left() {
        let mut m = ProgressMeter::new(ProgressStage::Restore, Some(10 * MB));
        m.sample(secs(1), 5 * MB);
        let p = m.sample(secs(2), 3 * MB);
        assert_eq!(p.bytes_done, 5 * MB);
        // Nothing for the whole window: rate 0, no time left rather than infinity.
        m.sample(secs(12), 5 * MB);
        let p = m.sample(secs(13), 5 * MB);
        assert_eq!(p.bytes_per_second, Some(0.0));
        assert_eq!(p.eta, None);
        // Time never goes backwards either.
        assert_eq!(m.sample(secs(3), 5 * MB).elapsed, secs(13));
    }

    #[test]
    fn an_estimate_passed_stays_below_100_until_the_end() {
        let mut m = ProgressMeter::new(ProgressStage::Backup, Some(10 * MB));
        let p = m.sample(secs(1), 11 * MB);
        assert_eq!(p.percent(), Some(99));
        assert_eq!(p.eta, None);
        let end = m.finish(secs(4), 12 * MB);
        assert!(end.finished);
        assert_eq!(end.percent(), Some(100));
        assert_eq!(end.bytes_per_second, Some(3.0 * MB as f64));
        assert_eq!(end.eta, None);
        assert_eq!(
            end.to_string(),
            "backing up: done, 12.0 MB in 4 s (3.0 MB/s)"
        );
        // A zero total (an empty tree) has no percentage before the end.
        let mut empty = ProgressMeter::new(ProgressStage::Backup, Some(0));
        assert_eq!(empty.sample(secs(1), 0).percent(), None);
        let instant = ProgressMeter::new(ProgressStage::Backup, Some(0)).finish(Duration::ZERO, 0);
        assert_eq!(
            (instant.bytes_per_second, instant.percent()),
            (None, Some(100))
        );
        // Whole percentages are exact (no floating-point 28.999…).
        let mut m = ProgressMeter::new(ProgressStage::Backup, Some(100));
        assert_eq!(m.sample(secs(1), 29).percent(), Some(29));
    }

    #[test]
    fn huge_times_left_do_not_panic() {
        let mut m = ProgressMeter::new(ProgressStage::Backup, Some(u64::MAX));
        // 2 MiB in 1,000,000 s: about 9e18 s left, within a Duration.
        let p = m.sample(secs(1_000_000), 2 << 20);
        assert!(p.eta.is_some_and(|e| e > secs(1 << 60)), "{p:?}");
        assert!(p.to_string().ends_with(", more than 99 h left"), "{p}");
        // Under a byte a second: more than a Duration holds, so no estimate.
        let mut m = ProgressMeter::new(ProgressStage::Backup, Some(u64::MAX));
        assert_eq!(m.sample(secs(10_000_000), 1 << 20).eta, None);
    }

    #[test]
    fn people_read_the_units() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(4_200_000), "4.2 MB");
        assert_eq!(human_rate(120.4e6), "120.4 MB/s");
        assert_eq!(human_duration(secs(45)), "45 s");
        assert_eq!(human_duration(secs(61)), "2 min");
        assert_eq!(human_duration(secs(120)), "2 min");
        assert_eq!(human_duration(secs(3600)), "1 h");
        assert_eq!(human_duration(secs(3901)), "1 h 6 min");
        assert_eq!(human_duration(secs(99 * 3600 + 60)), "99 h 1 min");
        assert_eq!(human_duration(secs(100 * 3600)), "more than 99 h");
    }

    /// Through a mock workload: the pipeline is told where to write its count, every
    /// read of the count or the length is `workdir.sh read` as the workload user (never
    /// a `pull` by this process), and the final report carries the length; without a
    /// callback the exec is left alone and nothing is read.
    #[tokio::test]
    async fn counts_are_read_as_the_workload_user_and_the_end_carries_the_length() {
        use crate::container::MockContainer;
        let layout = Layout {
            root: "/r".into(),
            ..Layout::default()
        };
        let work = WorkDir::at("/r/data/.synapse-backup-backup-1.x");
        let argv = vec!["bash".to_string(), "-c".into(), "pipeline".into()];
        let mut c = MockContainer::new();
        c.expect_pull().never();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s2 = Arc::clone(&seen);
        c.expect_exec().returning(move |argv, options| {
            s2.lock().unwrap().push((argv.to_vec(), options.clone()));
            let stdout = if argv[2] == crate::backup::scripts::WORKDIR {
                assert_eq!(argv[4], "read");
                assert_eq!(argv[5], "/r/data/.synapse-backup-backup-1.x/length");
                b"4242\n".to_vec()
            } else {
                Vec::new()
            };
            Ok(ExecOutput {
                stdout,
                ..ExecOutput::default()
            })
        });
        let reports = Arc::new(std::sync::Mutex::new(Vec::new()));
        let r2 = Arc::clone(&reports);
        let callback = ProgressCallback::new(move |p| r2.lock().unwrap().push(p.clone()));
        exec_with_progress(
            &c,
            &layout,
            &work,
            &argv,
            ExecOptions::default(),
            Some(&callback),
            ProgressStage::Restore,
            Some(5000),
        )
        .await
        .unwrap();
        let execs = seen.lock().unwrap().clone();
        assert_eq!(execs.len(), 2, "{execs:?}");
        assert_eq!(execs[0].0, argv);
        assert_eq!(
            execs[0].1.environment[PROGRESS_ENV],
            "/r/data/.synapse-backup-backup-1.x/progress"
        );
        assert_eq!(execs[1].1.user.as_deref(), Some("synapse"));
        let reports = reports.lock().unwrap().clone();
        assert_eq!(reports.len(), 2, "{reports:?}");
        assert_eq!((reports[0].bytes_done, reports[0].finished), (0, false));
        assert_eq!((reports[1].bytes_done, reports[1].finished), (4242, true));
        assert!(reports.iter().all(|p| p.stage == ProgressStage::Restore));

        seen.lock().unwrap().clear();
        exec_with_progress(
            &c,
            &layout,
            &work,
            &argv,
            ExecOptions::default(),
            None,
            ProgressStage::Restore,
            None,
        )
        .await
        .unwrap();
        let execs = seen.lock().unwrap().clone();
        assert_eq!(execs.len(), 1);
        assert!(execs[0].1.environment.is_empty());
    }

    /// Polls the count through a mock workload for `run` and returns how many reads
    /// (execs) and reports it made.
    async fn polls_in(
        callback_interval: Duration,
        min_read: Option<Duration>,
        run: Duration,
    ) -> (usize, usize) {
        use crate::container::MockContainer;
        use std::sync::atomic::AtomicUsize;
        let layout = Layout {
            root: "/r".into(),
            ..Layout::default()
        };
        let reads = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&reads);
        let mut c = MockContainer::new();
        c.expect_exec().returning(move |argv, _| {
            assert_eq!(argv[2], crate::backup::scripts::WORKDIR);
            let n = counted.fetch_add(1, Ordering::SeqCst);
            Ok(ExecOutput {
                stdout: format!("{n}\n").into_bytes(),
                ..ExecOutput::default()
            })
        });
        let reports = Arc::new(AtomicUsize::new(0));
        let r2 = Arc::clone(&reports);
        let mut callback = ProgressCallback::new(move |_| {
            r2.fetch_add(1, Ordering::SeqCst);
        })
        .with_interval(callback_interval);
        if let Some(min_read) = min_read {
            callback = callback.with_min_read_interval(min_read);
        }
        let mut meter = ProgressMeter::new(ProgressStage::Backup, None);
        let polled = tokio::time::timeout(
            run,
            poll(
                &Outputs::new(&c, &layout, &WorkDir::at("/r/w")),
                None,
                &callback,
                &mut meter,
                Instant::now(),
            ),
        )
        .await;
        assert!(polled.is_err(), "the poll never ends by itself");
        (reads.load(Ordering::SeqCst), reports.load(Ordering::SeqCst))
    }

    /// A pipeline the library feeds reports the library's count: no file is read (the
    /// container has no exec to give), and the last report carries the count.
    #[tokio::test]
    async fn a_fed_pipelines_progress_is_the_librarys_count() {
        let c = crate::container::MockContainer::new();
        let layout = Layout::default();
        let work = WorkDir::at("/r/w");
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s2 = Arc::clone(&seen);
        let callback = ProgressCallback::new(move |p| s2.lock().unwrap().push(p.bytes_done))
            .with_interval(Duration::from_millis(10))
            .with_min_read_interval(Duration::from_millis(10));
        let count = AtomicU64::new(0);
        let run = |_| async {
            for n in 1..=5_u64 {
                count.store(n * 1000, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            Ok::<_, ContainerError>(())
        };
        run_with_progress(
            &c,
            &layout,
            &work,
            ExecOptions::default(),
            Some(&callback),
            ProgressStage::Restore,
            Some(5000),
            Some(&count),
            run,
        )
        .await
        .unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.last(), Some(&5000), "{seen:?}");
        assert!(seen.iter().any(|&b| b > 0 && b < 5000), "{seen:?}");
    }

    /// Each read of the count is an exec, and through Pebble every exec is a change (of
    /// which it keeps a bounded number): however short the report interval, the count
    /// is read at most once per minimum read interval (5 s by default, configurable).
    /// Counted over a run, an upper bound only (a slow machine reads less, never more).
    #[tokio::test]
    async fn progress_reads_are_throttled_to_the_minimum_read_interval() {
        assert_eq!(
            ProgressCallback::new(|_| {}).min_read_interval(),
            ProgressCallback::DEFAULT_MIN_READ_INTERVAL
        );
        assert_eq!(
            ProgressCallback::DEFAULT_MIN_READ_INTERVAL,
            Duration::from_secs(5)
        );
        // Asked for a report every 10 ms, for 1 s: without the throttle about 100 execs;
        // with the default one none (the first read would come at 5 s).
        let (reads, reports) =
            polls_in(Duration::from_millis(10), None, Duration::from_secs(1)).await;
        assert_eq!((reads, reports), (0, 0));
        // With it lowered to 100 ms: at most 10 in 1 s, and one report per read.
        let (reads, reports) = polls_in(
            Duration::from_millis(10),
            Some(Duration::from_millis(100)),
            Duration::from_secs(1),
        )
        .await;
        assert!(reads <= 10, "{reads} reads in 1 s, at most one per 100 ms");
        assert_eq!(reports, reads);
        // Never below MIN_INTERVAL.
        assert_eq!(
            ProgressCallback::new(|_| {})
                .with_min_read_interval(Duration::ZERO)
                .min_read_interval(),
            ProgressCallback::MIN_INTERVAL
        );
    }

    #[test]
    fn the_callback_is_debuggable_comparable_and_survives_a_panic() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = Arc::clone(&calls);
        let cb = ProgressCallback::new(move |_| {
            seen.fetch_add(1, Ordering::SeqCst);
            panic!("boom");
        })
        .with_interval(Duration::ZERO);
        assert_eq!(cb.interval(), ProgressCallback::MIN_INTERVAL);
        assert_eq!(cb.clone(), cb);
        assert_ne!(ProgressCallback::new(|_| {}), ProgressCallback::new(|_| {}));
        assert!(format!("{cb:?}").starts_with("ProgressCallback { interval: 10ms"));
        let p = ProgressMeter::new(ProgressStage::Backup, None).sample(secs(1), 1);
        cb.report(&p);
        cb.report(&p);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}

//! The backup lock: one object next to the backups (`<path>/.synapse-backup.lock`)
//! that serialises `create`, `restore`, `delete` and `prune` across units.
//!
//! - It is taken with a conditional write (`PUT` with `If-None-Match: *`), refreshed
//!   while the operation runs and released at the end with `If-Match` on its ETag: a
//!   `DELETE` with `If-Match` where the server honours that, else a `PUT` with
//!   `If-Match` that marks it `released` (a small object the next operation takes over
//!   with `If-Match`).
//! - It expires when the server's `LastModified` of the lock is older than the holder's
//!   time-to-live by the server's clock (read from an object written just before, and
//!   carried forward with the local monotonic clock), never by comparing local wall
//!   clocks. An expired lock is taken over with `If-Match` on its stale ETag, and the
//!   takeover is logged.
//! - Before the first write, [`BackupLock::acquire`] probes that the server honours
//!   conditional writes: a second `If-None-Match: *` PUT on an existing probe object
//!   (`<path>/.synapse-backup.lock-probe`, removed again) must fail with 412, as must an
//!   `If-Match` with a wrong ETag. A server that does not gets [`BackupError::LockUnsupported`],
//!   which names [`LockMode::Off`] (`--no-lock`) for single-unit deployments.
//!
//! The decisions (is it expired, take over or wait) are pure functions apart from the
//! requests, unit-tested below.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::{BackupError, S3Error};
use crate::s3::ObjectStore;
use crate::s3::client::Conditional;

/// The lock object's name under the backup path.
pub const LOCK_NAME: &str = ".synapse-backup.lock";
/// The probe object's name under the backup path (written to check conditional writes).
pub const PROBE_NAME: &str = ".synapse-backup.lock-probe";
/// What the lock's `LastModified` and the server clock may be off by (both are read with
/// one-second precision).
const CLOCK_SLACK: Duration = Duration::from_secs(2);
/// The format of the lock object.
const LOCK_FORMAT: u32 = 1;
const CONTENT_TYPE: &str = "application/json";
/// An ETag no object has (for probing).
const WRONG_ETAG: &str = "\"0000000000000000000000000000000f\"";
/// The longest time to live a lock has: a longer one, given in [`LockOptions`] or read
/// from a lock object in the bucket (where anyone with write access could put one), is
/// cut to this, so no lock outlives a day without refreshes.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest wait for a held lock ([`LockOptions::wait`] is cut to this).
pub const MAX_WAIT: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// The largest lock object read (a lock this crate writes is a few hundred bytes); a
/// larger one is not read past that: it is a lock of unknown holder (as any unreadable
/// lock object), which expires by the caller's time to live and is taken over with
/// `If-Match` on its ETag (from a `HEAD`).
pub const MAX_LOCK_BYTES: u64 = 64 * 1024;

/// Whether operations take the lock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockMode {
    /// Take the lock; fail closed when the server cannot make it safe.
    #[default]
    Required,
    /// No lock (`--no-lock`): for a single unit on a server without conditional writes.
    /// Prune then protects incomplete backups by their grace period alone.
    Off,
}

/// How the lock is taken. `Default`: required, 5 minutes to live (refreshed every
/// third of that), fail at once when held.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockOptions {
    /// Take the lock or not.
    pub mode: LockMode,
    /// How long the lock lives after its last refresh (by the server's clock).
    pub ttl: Duration,
    /// How long to wait for a lock held by another operation; zero fails at once with
    /// [`BackupError::LockHeld`].
    pub wait: Duration,
    /// How often to look again while waiting.
    pub poll: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            mode: LockMode::Required,
            ttl: Duration::from_secs(300),
            wait: Duration::ZERO,
            poll: Duration::from_secs(5),
        }
    }
}

impl LockOptions {
    /// The longest time to live: a day.
    pub const MAX_TTL: Duration = MAX_TTL;
    /// The longest wait: a week.
    pub const MAX_WAIT: Duration = MAX_WAIT;

    /// The defaults (see the type).
    pub fn new() -> Self {
        Self::default()
    }

    /// No lock ([`LockMode::Off`]).
    pub fn off() -> Self {
        Self::default().mode(LockMode::Off)
    }

    /// Sets the mode.
    #[must_use]
    pub fn mode(mut self, mode: LockMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the time to live (at least one second, at most [`Self::MAX_TTL`]).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.clamp(Duration::from_secs(1), MAX_TTL);
        self
    }

    /// Sets how long to wait for a held lock (at most [`Self::MAX_WAIT`]).
    #[must_use]
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait.min(MAX_WAIT);
        self
    }

    /// Sets how often to look again while waiting (at least 50 ms, at most
    /// [`Self::MAX_WAIT`]).
    #[must_use]
    pub fn poll(mut self, poll: Duration) -> Self {
        self.poll = poll.clamp(Duration::from_millis(50), MAX_WAIT);
        self
    }

    /// How often a held lock is refreshed: a third of its time to live.
    pub fn refresh_interval(&self) -> Duration {
        self.effective_ttl() / 3
    }

    /// The time to live as used: the field clamped as [`ttl`](Self::ttl) does (the
    /// fields are public, so they are clamped again where they are used).
    fn effective_ttl(&self) -> Duration {
        self.ttl.clamp(Duration::from_secs(1), MAX_TTL)
    }

    /// The wait as used (at most [`MAX_WAIT`]).
    fn effective_wait(&self) -> Duration {
        self.wait.min(MAX_WAIT)
    }

    /// The poll interval as used.
    fn effective_poll(&self) -> Duration {
        self.poll.clamp(Duration::from_millis(50), MAX_WAIT)
    }
}

/// Who holds the lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LockOwner {
    /// The Juju unit (`JUJU_UNIT_NAME`), else the host name.
    pub unit: String,
    /// The host name.
    pub host: String,
    /// The process id.
    pub pid: u32,
    /// The operation: `create`, `restore`, `delete` or `prune`.
    pub operation: String,
}

impl LockOwner {
    /// This process doing `operation`.
    pub fn current(operation: &str) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown-host".into());
        let unit = std::env::var("JUJU_UNIT_NAME")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| host.clone());
        LockOwner {
            unit,
            host,
            pid: std::process::id(),
            operation: operation.to_string(),
        }
    }

    /// An owner with the given fields.
    pub fn new(unit: &str, host: &str, pid: u32, operation: &str) -> Self {
        LockOwner {
            unit: unit.into(),
            host: host.into(),
            pid,
            operation: operation.into(),
        }
    }
}

impl fmt::Display for LockOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} on host {}, pid {})",
            self.unit, self.operation, self.host, self.pid
        )
    }
}

/// The lock object's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LockRecord {
    format: u32,
    owner: LockOwner,
    /// When it was taken, by the holder's clock (for people; expiry uses the server's).
    since: DateTime<Utc>,
    /// The holder's time to live, in seconds.
    ttl_seconds: u64,
    /// Unique per acquisition, so every write has a new ETag.
    token: String,
    /// How many times it was refreshed.
    refreshes: u64,
    /// Released: free for the next operation.
    released: bool,
}

impl LockRecord {
    fn new(owner: &LockOwner, ttl: Duration) -> Self {
        LockRecord {
            format: LOCK_FORMAT,
            owner: owner.clone(),
            since: Utc::now(),
            ttl_seconds: ttl.as_secs().clamp(1, MAX_TTL.as_secs()),
            token: unique_token(),
            refreshes: 0,
            released: false,
        }
    }

    fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

/// A token unique to this process and moment (not secret: it only makes ETags differ).
fn unique_token() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!("{:016x}{:08x}", hasher.finish(), std::process::id())
}

/// The lock as found in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockInfo {
    /// The lock object's full key.
    pub key: String,
    /// Who took it; `None` when the object cannot be read as a lock (it then expires by
    /// its `LastModified` and the caller's time to live).
    pub owner: Option<LockOwner>,
    /// When it was taken, by the holder's clock (its `LastModified` when unreadable).
    pub since: DateTime<Utc>,
    /// The server's `LastModified`: the last take or refresh.
    pub last_modified: DateTime<Utc>,
    /// The ETag, for `If-Match`.
    pub etag: String,
    /// The holder's time to live (`None` when unreadable).
    pub ttl: Option<Duration>,
    /// Released by its holder: free.
    pub released: bool,
    /// The holder's token (unique per acquisition).
    token: Option<String>,
}

impl LockInfo {
    /// Reads a lock object's body; anything unreadable is a held lock of unknown owner.
    fn parse(key: &str, body: &[u8], etag: String, last_modified: DateTime<Utc>) -> Self {
        match serde_json::from_slice::<LockRecord>(body) {
            Ok(record) => LockInfo {
                key: key.to_string(),
                owner: Some(record.owner),
                since: record.since,
                last_modified,
                etag,
                // Read from the bucket: any value, so clamped (no overflow later).
                ttl: Some(Duration::from_secs(
                    record.ttl_seconds.clamp(1, MAX_TTL.as_secs()),
                )),
                released: record.released,
                token: Some(record.token),
            },
            Err(_) => LockInfo {
                key: key.to_string(),
                owner: None,
                since: last_modified,
                last_modified,
                etag,
                ttl: None,
                released: false,
                token: None,
            },
        }
    }

    /// Who holds it, for messages.
    pub fn holder(&self) -> String {
        match &self.owner {
            Some(owner) => owner.to_string(),
            None => "an unknown holder (the lock object is not readable as a lock)".into(),
        }
    }

    /// How long after its last refresh it expires: its holder's time to live, else
    /// `fallback` (either at most [`LockOptions::MAX_TTL`]).
    pub fn ttl_or(&self, fallback: Duration) -> Duration {
        self.ttl.unwrap_or(fallback).min(MAX_TTL)
    }

    /// How long ago it was last written, by the server's clock `server_now`.
    pub fn age(&self, server_now: DateTime<Utc>) -> Duration {
        (server_now - self.last_modified)
            .to_std()
            .unwrap_or(Duration::ZERO)
    }

    /// Whether it has expired at `server_now` (the server's clock): not written for
    /// longer than its time to live (else `fallback_ttl`) plus a little slack.
    pub fn is_expired(&self, server_now: DateTime<Utc>, fallback_ttl: Duration) -> bool {
        self.age(server_now) > self.ttl_or(fallback_ttl).saturating_add(CLOCK_SLACK)
    }

    /// Whether an operation holds it now (neither released nor expired).
    pub fn is_live(&self, server_now: DateTime<Utc>, fallback_ttl: Duration) -> bool {
        !self.released && !self.is_expired(server_now, fallback_ttl)
    }
}

/// What to do about the lock as found. Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// No lock object: create it with `If-None-Match: *`.
    Create,
    /// Released or expired: overwrite it with `If-Match` on this ETag.
    TakeOver { etag: String, expired: bool },
    /// Held by a live operation.
    Held,
}

fn decide(found: Option<&LockInfo>, server_now: DateTime<Utc>, fallback_ttl: Duration) -> Step {
    match found {
        None => Step::Create,
        Some(info) if info.released => Step::TakeOver {
            etag: info.etag.clone(),
            expired: false,
        },
        Some(info) if info.is_expired(server_now, fallback_ttl) => Step::TakeOver {
            etag: info.etag.clone(),
            expired: true,
        },
        Some(_) => Step::Held,
    }
}

/// The server's clock: a time the server stamped, carried forward with the monotonic
/// clock.
#[derive(Debug, Clone, Copy)]
struct ServerClock {
    server: DateTime<Utc>,
    local: Instant,
}

impl ServerClock {
    fn now(&self) -> DateTime<Utc> {
        // The server's time may be anything a hostile server sends: no overflow.
        chrono::Duration::from_std(self.local.elapsed())
            .ok()
            .and_then(|elapsed| self.server.checked_add_signed(elapsed))
            .unwrap_or(self.server)
    }
}

/// The backup lock of one backup path.
#[derive(Debug, Clone, Copy)]
pub struct BackupLock;

impl BackupLock {
    /// The lock object's full key for `store`'s path.
    pub fn key(store: &(impl ObjectStore + ?Sized)) -> String {
        store.object_key(LOCK_NAME)
    }

    /// Takes the lock for `owner` as `options` say, probing first that the server
    /// honours conditional writes. With [`LockMode::Off`] nothing is sent and the guard
    /// holds nothing. The guard refreshes the lock in the background (on the current
    /// tokio runtime) until it is released with [`LockGuard::release`] or dropped.
    ///
    /// # Errors
    /// [`BackupError::LockHeld`] naming the holder when another live operation holds it
    /// (after waiting `options.wait`), [`BackupError::LockUnsupported`] when the server
    /// ignores conditional writes, [`BackupError::S3`] when a request fails.
    pub async fn acquire(
        store: &(impl ObjectStore + ?Sized),
        owner: &LockOwner,
        options: &LockOptions,
    ) -> Result<LockGuard, BackupError> {
        if options.mode == LockMode::Off {
            tracing::debug!("backup lock off");
            return Ok(LockGuard { held: None });
        }
        let probed = probe(store).await?;
        let clock = probed.clock;
        let key = Self::key(store);
        let ttl = options.effective_ttl();
        let start = Instant::now();
        let deadline = start.checked_add(options.effective_wait()).unwrap_or(start);
        let mut races = 0u32;
        loop {
            let found = read(store, &key).await?;
            let record = LockRecord::new(owner, ttl);
            let outcome = match decide(found.as_ref(), clock.now(), ttl) {
                Step::Create => {
                    store
                        .put_object_if_none_match(&key, record.to_json(), CONTENT_TYPE)
                        .await?
                }
                Step::TakeOver { etag, expired } => {
                    let outcome = store
                        .put_object_if_match(&key, record.to_json(), CONTENT_TYPE, &etag)
                        .await?;
                    if expired && matches!(outcome, Conditional::Done { .. }) {
                        let stale = found.as_ref().expect("a lock to take over");
                        tracing::warn!(
                            key,
                            holder = %stale.holder(),
                            since = %stale.since,
                            age_seconds = stale.age(clock.now()).as_secs(),
                            "took over an expired backup lock"
                        );
                    }
                    outcome
                }
                Step::Held => {
                    let info = found.expect("a held lock");
                    if Instant::now() >= deadline {
                        return Err(held_error(&info, clock.now(), ttl));
                    }
                    tracing::info!(key, holder = %info.holder(), since = %info.since, "waiting for the backup lock");
                    let left = deadline.saturating_duration_since(Instant::now());
                    tokio::time::sleep(options.effective_poll().min(left)).await;
                    continue;
                }
            };
            match outcome {
                Conditional::Done { etag } => {
                    let etag = match etag {
                        Some(etag) => etag,
                        None => match read(store, &key).await? {
                            Some(info) if info.owner.as_ref() == Some(owner) => info.etag,
                            _ => String::new(),
                        },
                    };
                    tracing::info!(key, owner = %owner, "backup lock taken");
                    return Ok(LockGuard::start(
                        store,
                        key,
                        record,
                        etag,
                        options,
                        probed.conditional_delete,
                    ));
                }
                // Another operation got there first: look again.
                Conditional::PreconditionFailed | Conditional::Missing => {
                    races += 1;
                    if races > 50 {
                        return Err(BackupError::LockLost {
                            key,
                            reason: "the lock kept changing while it was being taken".into(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(races.min(10)))).await;
                }
            }
        }
    }

    /// The lock as it is now, without taking it (`None` when there is no lock object).
    ///
    /// # Errors
    /// [`BackupError::S3`] when the request fails.
    pub async fn inspect(
        store: &(impl ObjectStore + ?Sized),
    ) -> Result<Option<LockInfo>, BackupError> {
        Ok(read(store, &Self::key(store)).await?)
    }

    /// Whether an operation holds the lock now (neither released nor expired), judged by
    /// the server's clock; for read-only callers that must not take it. Sends one
    /// conditional-write probe when a lock object exists.
    ///
    /// # Errors
    /// [`BackupError::S3`] when a request fails, [`BackupError::LockUnsupported`] as
    /// [`acquire`](Self::acquire).
    pub async fn live_holder(
        store: &(impl ObjectStore + ?Sized),
        fallback_ttl: Duration,
    ) -> Result<Option<LockInfo>, BackupError> {
        let Some(info) = Self::inspect(store).await? else {
            return Ok(None);
        };
        if info.released {
            return Ok(None);
        }
        let clock = probe(store).await?.clock;
        Ok(info.is_live(clock.now(), fallback_ttl).then_some(info))
    }

    /// Removes the lock `info` (as read by [`inspect`](Self::inspect)) whoever holds it,
    /// with `If-Match` on its ETag, so a lock refreshed or taken meanwhile is left alone:
    /// for an operator removing the lock of a process that is known to be gone. Returns
    /// `false` when the lock changed since `info` was read.
    ///
    /// # Errors
    /// [`BackupError::S3`] when the request fails.
    pub async fn force_release(
        store: &(impl ObjectStore + ?Sized),
        info: &LockInfo,
    ) -> Result<bool, BackupError> {
        let outcome = store.delete_object_if_match(&info.key, &info.etag).await?;
        let done = matches!(outcome, Conditional::Done { .. });
        if done {
            tracing::warn!(key = info.key, holder = %info.holder(), "backup lock removed by an operator");
        }
        Ok(done)
    }
}

fn held_error(info: &LockInfo, server_now: DateTime<Utc>, fallback_ttl: Duration) -> BackupError {
    let ttl = info.ttl_or(fallback_ttl);
    BackupError::LockHeld {
        key: info.key.clone(),
        holder: info.holder(),
        since: info.since,
        refreshed_seconds_ago: info.age(server_now).as_secs(),
        ttl_seconds: ttl.as_secs(),
    }
}

/// The lock object, or `None` when there is none.
async fn read(store: &(impl ObjectStore + ?Sized), key: &str) -> Result<Option<LockInfo>, S3Error> {
    match store.get_object_versioned(key, MAX_LOCK_BYTES).await {
        Ok(object) => Ok(Some(LockInfo::parse(
            key,
            &object.body,
            object.etag,
            object.last_modified,
        ))),
        Err(S3Error::NotFound { .. }) => Ok(None),
        // Not a lock this crate wrote, and not read whole: unreadable, with the ETag
        // and time a HEAD gives, so it expires and is taken over like any other.
        Err(S3Error::TooLarge { .. }) => match store.head_object(key).await {
            Ok(head) => Ok(Some(LockInfo::parse(
                key,
                b"",
                head.etag,
                head.last_modified,
            ))),
            Err(S3Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// What the probe found out about the server.
#[derive(Debug, Clone, Copy)]
struct Probe {
    clock: ServerClock,
    /// `DeleteObject` honours `If-Match` (else a release leaves a `released` marker).
    conditional_delete: bool,
}

/// What a failed conditional request of the probe means.
fn probe_error(key: &str, e: S3Error) -> BackupError {
    match e {
        S3Error::NotImplemented { operation } => BackupError::LockUnsupported {
            key: key.to_string(),
            detail: format!("{operation} with a condition is not implemented"),
        },
        other => BackupError::S3(other),
    }
}

/// A fresh probe object's body.
fn probe_body() -> Vec<u8> {
    format!("{{\"probe\":\"{}\"}}", unique_token()).into_bytes()
}

/// Writes the probe object (created with `If-None-Match: *`, or overwritten with
/// `If-Match` on its ETag); gives its ETag (`Some(None)`: the server named none),
/// `None` when neither write went through in 20 tries.
async fn write_probe(
    store: &(impl ObjectStore + ?Sized),
    key: &str,
) -> Result<Option<Option<String>>, BackupError> {
    let map = |e: S3Error| probe_error(key, e);
    let body = probe_body;
    let mut written: Option<Option<String>> = None;
    for _ in 0..20 {
        if let Conditional::Done { etag } = store
            .put_object_if_none_match(key, body(), CONTENT_TYPE)
            .await
            .map_err(map)?
        {
            written = Some(etag);
            break;
        }
        let Some(current) = read(store, key).await? else {
            continue;
        };
        match store
            .put_object_if_match(key, body(), CONTENT_TYPE, &current.etag)
            .await
            .map_err(map)?
        {
            Conditional::Done { etag } => {
                written = Some(etag);
                break;
            }
            // Another prober wrote meanwhile: try again.
            Conditional::PreconditionFailed | Conditional::Missing => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    Ok(written)
}

/// Checks that the server honours conditional writes and reads its clock: the probe
/// object is written (created with `If-None-Match: *`, or overwritten with `If-Match`
/// on its ETag), then a second `If-None-Match: *` and an `If-Match` with a wrong ETag
/// must both fail with 412. The probe's `LastModified` is the server's time. Last, a
/// `DELETE` with a wrong `If-Match` tells whether deletes honour conditions (a server
/// that ignores them just deletes the probe); otherwise the probe is deleted with
/// `If-Match` on its ETag.
async fn probe(store: &(impl ObjectStore + ?Sized)) -> Result<Probe, BackupError> {
    let key = store.object_key(PROBE_NAME);
    let unsupported = |detail: String| BackupError::LockUnsupported {
        key: key.clone(),
        detail,
    };
    let map = |e: S3Error| probe_error(&key, e);
    let body = probe_body;
    let Some(etag) = write_probe(store, &key).await? else {
        return Err(unsupported(
            "the probe object could not be written with If-None-Match or If-Match".into(),
        ));
    };
    let local = Instant::now();
    if store
        .put_object_if_none_match(&key, body(), CONTENT_TYPE)
        .await
        .map_err(map)?
        != Conditional::PreconditionFailed
    {
        return Err(unsupported(
            "a PUT with If-None-Match: * over an existing object succeeded instead of failing with 412".into(),
        ));
    }
    if store
        .put_object_if_match(&key, body(), CONTENT_TYPE, WRONG_ETAG)
        .await
        .map_err(map)?
        != Conditional::PreconditionFailed
    {
        return Err(unsupported(
            "a PUT with If-Match on a wrong ETag succeeded instead of failing with 412".into(),
        ));
    }
    let head = store.head_object(&key).await?;
    let clock = ServerClock {
        server: head.last_modified,
        local,
    };
    let conditional_delete = matches!(
        store.delete_object_if_match(&key, WRONG_ETAG).await,
        Ok(Conditional::PreconditionFailed)
    );
    if conditional_delete && let Some(etag) = etag {
        // Best effort: another prober may have rewritten it (and removes it itself).
        let _ = store.delete_object_if_match(&key, &etag).await;
    }
    Ok(Probe {
        clock,
        conditional_delete,
    })
}

/// A held lock (or, with [`LockMode::Off`], nothing). Refreshed in the background while
/// held; [`confirm`](Self::confirm) checks it is still held right before an
/// irreversible step; [`release`](Self::release) frees it, and dropping it without
/// releasing frees it too, before the drop returns (blocking briefly, on any tokio
/// runtime or none, through [`ObjectStore::independent_store`]), so a failed,
/// panicking or cancelled operation never leaves it behind; a killed process's lock
/// expires after its time to live.
#[derive(Debug)]
#[must_use = "the lock is released when the guard is dropped"]
pub struct LockGuard {
    held: Option<Held>,
}

#[derive(Debug)]
struct Held {
    store: Arc<dyn ObjectStore>,
    key: String,
    state: Arc<Mutex<HeldState>>,
    /// Held across each write of the lock (refresh, confirm), so they never race.
    writing: Arc<tokio::sync::Mutex<()>>,
    stop: watch::Sender<bool>,
    refresher: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Debug)]
struct HeldState {
    record: LockRecord,
    etag: String,
    /// Release by deleting with `If-Match` (else by writing a `released` marker).
    conditional_delete: bool,
    /// Why the lock is no longer ours, once it is not.
    lost: Option<String>,
}

impl LockGuard {
    fn start(
        store: &(impl ObjectStore + ?Sized),
        key: String,
        record: LockRecord,
        etag: String,
        options: &LockOptions,
        conditional_delete: bool,
    ) -> LockGuard {
        let state = Arc::new(Mutex::new(HeldState {
            record,
            etag,
            conditional_delete,
            lost: None,
        }));
        let (stop, stopped) = watch::channel(false);
        let store = store.clone_store();
        let writing = Arc::new(tokio::sync::Mutex::new(()));
        let refresher = tokio::spawn(refresh_loop(
            Arc::clone(&store),
            key.clone(),
            Arc::clone(&state),
            Arc::clone(&writing),
            stopped,
            options.refresh_interval(),
            options.effective_ttl(),
        ));
        LockGuard {
            held: Some(Held {
                store,
                key,
                state,
                writing,
                stop,
                refresher: Some(refresher),
            }),
        }
    }

    /// Confirms that the lock is still this operation's, right before an irreversible
    /// `step` (a swap, a manifest write, a deletion; the text names it in the error):
    /// the lock object is rewritten with `If-Match` on the ETag this guard last wrote,
    /// which fails when another operation took it over or it was removed (`unlock`).
    /// A lost lock is then given up for good. With [`LockMode::Off`] it does nothing.
    ///
    /// # Errors
    /// [`BackupError::LockLost`] naming the lock, why, and the step not taken: when the
    /// lock was lost (now or earlier) or could not be confirmed (a failed request).
    pub async fn confirm(&self, step: &str) -> Result<(), BackupError> {
        self.confirmer().confirm(step).await
    }

    /// A handle that confirms this lock ([`confirm`](Self::confirm)) from code that
    /// does not hold the guard (the operation run inside the lock).
    pub(crate) fn confirmer(&self) -> LockConfirmer {
        LockConfirmer {
            held: self.held.as_ref().map(|h| {
                (
                    Arc::clone(&h.store),
                    h.key.clone(),
                    Arc::clone(&h.state),
                    Arc::clone(&h.writing),
                )
            }),
        }
    }

    /// Whether a lock is held (false with [`LockMode::Off`]).
    pub fn is_held(&self) -> bool {
        self.held.is_some()
    }

    /// Why the lock was lost (taken over after refreshes failed for longer than its time
    /// to live), if it was.
    pub fn lost(&self) -> Option<String> {
        let held = self.held.as_ref()?;
        lock_state(&held.state).lost.clone()
    }

    /// Stops refreshing and frees the lock (`If-Match` on its ETag). A lock that was
    /// lost meanwhile is left to its new holder.
    ///
    /// # Errors
    /// [`BackupError::S3`] when the request fails (the lock then expires by itself).
    pub async fn release(mut self) -> Result<(), BackupError> {
        match self.held.take() {
            Some(held) => held.release().await,
            None => Ok(()),
        }
    }
}

impl LockGuard {
    /// [`release`](Self::release) at the end of an operation whose own result matters
    /// more: a failure to release is logged (the lock then expires by itself), as is a
    /// lock lost while the operation ran.
    pub async fn finish(self) {
        if let Some(reason) = self.lost() {
            tracing::error!(reason, "the backup lock was lost while the operation ran");
        }
        if let Err(e) = self.release().await {
            tracing::warn!(error = %e, "could not release the backup lock; it expires by itself");
        }
    }
}

impl Held {
    async fn release(mut self) -> Result<(), BackupError> {
        let _ = self.stop.send(true);
        if let Some(task) = self.refresher.take() {
            // The refresher finishes its request in flight, so the ETag is current.
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
        release_with(&*self.store, &self.key, &self.state).await
    }
}

async fn release_with(
    store: &(impl ObjectStore + ?Sized),
    key: &str,
    state: &Mutex<HeldState>,
) -> Result<(), BackupError> {
    let (body, mut etag, delete, token) = {
        let st = lock_state(state);
        if let Some(reason) = &st.lost {
            tracing::warn!(key, reason, "the backup lock was lost; not releasing it");
            return Ok(());
        }
        let mut record = st.record.clone();
        record.released = true;
        record.refreshes += 1;
        (
            record.to_json(),
            st.etag.clone(),
            st.conditional_delete,
            st.record.token.clone(),
        )
    };
    let mut outcome = Conditional::PreconditionFailed;
    for _ in 0..2 {
        outcome = if delete {
            store.delete_object_if_match(key, &etag).await?
        } else {
            store
                .put_object_if_match(key, body.clone(), CONTENT_TYPE, &etag)
                .await?
        };
        if outcome != Conditional::PreconditionFailed {
            break;
        }
        // A refresh cut short may have landed: still ours under a newer ETag?
        match still_ours(store, key, &token).await {
            Some(current) => etag = current,
            None => break,
        }
    }
    match outcome {
        Conditional::Done { .. } => tracing::info!(key, "backup lock released"),
        Conditional::PreconditionFailed | Conditional::Missing => tracing::warn!(
            key,
            "the backup lock changed before it was released; left to its new holder"
        ),
    }
    lock_state(state).lost = Some("released".into());
    Ok(())
}

/// Confirms a held lock from wherever the operation is (see [`LockGuard::confirm`]);
/// holds nothing with [`LockMode::Off`].
#[derive(Debug, Clone, Default)]
pub(crate) struct LockConfirmer {
    #[allow(clippy::type_complexity)]
    held: Option<(
        Arc<dyn ObjectStore>,
        String,
        Arc<Mutex<HeldState>>,
        Arc<tokio::sync::Mutex<()>>,
    )>,
}

impl LockConfirmer {
    /// As [`LockGuard::confirm`].
    ///
    /// # Errors
    /// As [`LockGuard::confirm`].
    pub(crate) async fn confirm(&self, step: &str) -> Result<(), BackupError> {
        let Some((store, key, state, writing)) = &self.held else {
            return Ok(());
        };
        let lost = |reason: String| BackupError::LockLost {
            key: key.clone(),
            reason: format!("{reason}; {step} was not done"),
        };
        let _writing = writing.lock().await;
        let (body, etag, token) = {
            let mut st = lock_state(state);
            if let Some(reason) = &st.lost {
                return Err(lost(reason.clone()));
            }
            st.record.refreshes += 1;
            (
                st.record.to_json(),
                st.etag.clone(),
                st.record.token.clone(),
            )
        };
        let outcome = store
            .put_object_if_match(key, body, CONTENT_TYPE, &etag)
            .await
            .map_err(|e| lost(format!("it could not be confirmed ({e})")))?;
        let current = match outcome {
            Conditional::Done { etag: Some(new) } => Some(new),
            // No ETag in the answer, or the condition failed: a write of ours whose
            // answer was lost may have landed, so only our token, not released, counts.
            Conditional::Done { etag: None }
            | Conditional::PreconditionFailed
            | Conditional::Missing => still_ours(&**store, key, &token).await,
        };
        match current {
            Some(etag) => {
                lock_state(state).etag = etag;
                tracing::debug!(key, step, "backup lock confirmed");
                Ok(())
            }
            None => {
                let reason = "another operation took the lock over, or it was removed (unlock)";
                tracing::error!(key, step, reason, "the backup lock was lost");
                lock_state(state).lost = Some(reason.to_string());
                Err(lost(reason.to_string()))
            }
        }
    }
}

/// The lock's current ETag when it is still ours (our token, not released): a write of
/// ours may have landed although its answer was lost.
async fn still_ours(store: &(impl ObjectStore + ?Sized), key: &str, token: &str) -> Option<String> {
    match read(store, key).await {
        Ok(Some(info)) if !info.released && info.token.as_deref() == Some(token) => Some(info.etag),
        _ => None,
    }
}

fn lock_state(state: &Mutex<HeldState>) -> std::sync::MutexGuard<'_, HeldState> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn refresh_loop(
    store: Arc<dyn ObjectStore>,
    key: String,
    state: Arc<Mutex<HeldState>>,
    writing: Arc<tokio::sync::Mutex<()>>,
    mut stopped: watch::Receiver<bool>,
    interval: Duration,
    ttl: Duration,
) {
    let mut last_ok = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stopped.changed() => return,
        }
        if *stopped.borrow() {
            return;
        }
        let _writing = writing.lock().await;
        let (body, etag) = {
            let mut st = lock_state(&state);
            if st.lost.is_some() {
                return;
            }
            st.record.refreshes += 1;
            (st.record.to_json(), st.etag.clone())
        };
        match store
            .put_object_if_match(&key, body, CONTENT_TYPE, &etag)
            .await
        {
            Ok(Conditional::Done { etag: Some(new) }) => {
                lock_state(&state).etag = new;
                last_ok = Instant::now();
                tracing::debug!(key, "backup lock refreshed");
            }
            Ok(Conditional::Done { etag: None }) => {
                match read(&*store, &key).await {
                    Ok(Some(info)) => lock_state(&state).etag = info.etag,
                    _ => tracing::warn!(key, "cannot read the refreshed backup lock"),
                }
                last_ok = Instant::now();
            }
            Ok(Conditional::PreconditionFailed | Conditional::Missing) => {
                // A refresh whose answer was lost may have landed: still ours?
                let token = lock_state(&state).record.token.clone();
                if let Some(current) = still_ours(&*store, &key, &token).await {
                    lock_state(&state).etag = current;
                    last_ok = Instant::now();
                    continue;
                }
                let reason = "another operation took the lock over".to_string();
                tracing::error!(key, reason, "the backup lock was lost");
                lock_state(&state).lost = Some(reason);
                return;
            }
            Err(e) => {
                tracing::warn!(key, error = %e, "could not refresh the backup lock");
                if last_ok.elapsed() > ttl {
                    let reason = format!("not refreshed for longer than its time to live: {e}");
                    tracing::error!(key, reason, "the backup lock was lost");
                    lock_state(&state).lost = Some(reason);
                    return;
                }
            }
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let Some(mut held) = self.held.take() else {
            return;
        };
        let _ = held.stop.send(true);
        if let Some(task) = held.refresher.take() {
            task.abort();
        }
        // Dropped without `release` (a failure path, a panic, a cancelled future): free
        // the lock now, before the drop returns, on a thread of its own with its own
        // runtime and a store that shares no connection with this runtime's (whose
        // tasks may never run again: a panic on a current-thread runtime, as
        // `#[tokio::test]` uses, unwinds out of `block_on` and drops the runtime).
        let store = held.store.independent_store();
        let key = held.key.clone();
        let state = Arc::clone(&held.state);
        let work = move || {
            let (tx, rx) = std::sync::mpsc::channel();
            let spawned = std::thread::Builder::new()
                .name("backup-lock-release".into())
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
                    if let Ok(runtime) = runtime {
                        let result = runtime.block_on(async {
                            tokio::time::timeout(
                                RELEASE_ON_DROP_TIMEOUT,
                                release_with(&*store, &key, &state),
                            )
                            .await
                        });
                        let _ = tx.send(result.is_ok_and(|r| r.is_ok()));
                    }
                });
            let released = spawned.is_ok()
                && rx
                    .recv_timeout(RELEASE_ON_DROP_TIMEOUT + Duration::from_secs(5))
                    .unwrap_or(false);
            if !released {
                tracing::warn!("could not release the backup lock; it expires by itself");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(work);
            }
            // A current-thread runtime (or none): block this thread until the release
            // is done; the release needs nothing from this runtime.
            _ => work(),
        }
    }
}

/// How long a guard dropped without release waits for the lock's release.
const RELEASE_ON_DROP_TIMEOUT: Duration = Duration::from_secs(20);

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn info(age_secs: i64, ttl: Option<u64>, released: bool) -> (LockInfo, DateTime<Utc>) {
        let now = Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap();
        let last = now - chrono::Duration::seconds(age_secs);
        let record = LockRecord {
            format: 1,
            owner: LockOwner::new("synapse/0", "host-a", 42, "create"),
            since: last - chrono::Duration::seconds(100),
            ttl_seconds: ttl.unwrap_or(0),
            token: "t".into(),
            refreshes: 3,
            released,
        };
        let body = if ttl.is_some() {
            record.to_json()
        } else {
            b"not json".to_vec()
        };
        (
            LockInfo::parse("p/.synapse-backup.lock", &body, "\"e1\"".into(), last),
            now,
        )
    }

    #[test]
    fn no_lock_is_created() {
        let now = Utc::now();
        assert_eq!(decide(None, now, Duration::from_secs(60)), Step::Create);
    }

    #[test]
    fn a_live_lock_is_held_and_an_expired_one_taken_over() {
        let ttl = Duration::from_secs(600);
        let (live, now) = info(30, Some(60), false);
        assert_eq!(decide(Some(&live), now, ttl), Step::Held);
        assert!(live.is_live(now, ttl));
        // Within the slack: still held.
        let (edge, now) = info(61, Some(60), false);
        assert_eq!(decide(Some(&edge), now, ttl), Step::Held);
        // The holder's ttl decides, not the caller's.
        let (old, now) = info(90, Some(60), false);
        assert_eq!(
            decide(Some(&old), now, ttl),
            Step::TakeOver {
                etag: "\"e1\"".into(),
                expired: true
            }
        );
        assert!(!old.is_live(now, ttl));
    }

    #[test]
    fn a_released_lock_is_taken_over_without_waiting() {
        let (released, now) = info(0, Some(600), true);
        assert_eq!(
            decide(Some(&released), now, Duration::from_secs(600)),
            Step::TakeOver {
                etag: "\"e1\"".into(),
                expired: false
            }
        );
        assert!(!released.is_live(now, Duration::from_secs(600)));
    }

    #[test]
    fn an_unreadable_lock_expires_by_the_callers_ttl() {
        let (garbage, now) = info(100, None, false);
        assert_eq!(garbage.owner, None);
        assert!(garbage.holder().contains("unknown"));
        assert_eq!(garbage.since, garbage.last_modified);
        assert_eq!(
            decide(Some(&garbage), now, Duration::from_secs(300)),
            Step::Held
        );
        assert!(matches!(
            decide(Some(&garbage), now, Duration::from_secs(10)),
            Step::TakeOver { expired: true, .. }
        ));
    }

    #[test]
    fn a_lock_from_the_future_is_live() {
        // The server's LastModified after the probe's: age zero, not negative.
        let (future, now) = info(-30, Some(60), false);
        assert_eq!(future.age(now), Duration::ZERO);
        assert_eq!(
            decide(Some(&future), now, Duration::from_secs(60)),
            Step::Held
        );
    }

    #[test]
    fn the_held_error_names_holder_and_since() {
        let (live, now) = info(30, Some(60), false);
        let e = held_error(&live, now, Duration::from_secs(600));
        let text = e.to_string();
        assert!(
            text.contains("synapse/0") && text.contains("create"),
            "{text}"
        );
        assert!(text.contains("pid 42") && text.contains("host-a"), "{text}");
        assert!(text.contains("2026-11-30T11:57:50Z"), "{text}");
        assert!(text.contains("unlock"), "{text}");
        match e {
            BackupError::LockHeld {
                refreshed_seconds_ago,
                ttl_seconds,
                ..
            } => {
                assert_eq!(refreshed_seconds_ago, 30);
                assert_eq!(ttl_seconds, 60);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn records_round_trip_and_tokens_differ() {
        let owner = LockOwner::new("u", "h", 1, "prune");
        let a = LockRecord::new(&owner, Duration::from_millis(10));
        let b = LockRecord::new(&owner, Duration::from_secs(10));
        assert_ne!(a.token, b.token);
        assert_eq!(a.ttl_seconds, 1, "at least a second");
        let parsed: LockRecord = serde_json::from_slice(&a.to_json()).unwrap();
        assert_eq!(parsed, a);
        assert_eq!(owner.to_string(), "u (prune on host h, pid 1)");
    }

    #[test]
    fn options_clamp_and_refresh_at_a_third() {
        let o = LockOptions::new()
            .ttl(Duration::from_millis(1))
            .poll(Duration::ZERO)
            .wait(Duration::from_secs(3));
        assert_eq!(o.ttl, Duration::from_secs(1));
        assert_eq!(o.poll, Duration::from_millis(50));
        assert_eq!(
            LockOptions::default().refresh_interval(),
            Duration::from_secs(100)
        );
        assert_eq!(LockOptions::off().mode, LockMode::Off);
    }

    #[test]
    fn the_server_clock_moves_with_the_monotonic_clock() {
        let start = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap();
        let clock = ServerClock {
            server: start,
            local: Instant::now() - Duration::from_secs(5),
        };
        let now = clock.now();
        assert!(now >= start + chrono::Duration::seconds(5));
        assert!(now < start + chrono::Duration::seconds(60));
    }
}

/// The lock over [`MemoryStore`](crate::s3::MemoryStore): expiry by the store's clock,
/// without sleeping.
#[cfg(test)]
mod store_tests {
    use super::*;
    use crate::s3::MemoryStore;

    fn owner(unit: &str) -> LockOwner {
        LockOwner::new(unit, "test-host", 4242, "create")
    }

    fn minute() -> LockOptions {
        LockOptions::new().ttl(Duration::from_secs(60))
    }

    async fn holder(store: &MemoryStore) -> Option<LockOwner> {
        BackupLock::inspect(store)
            .await
            .unwrap()
            .filter(|i| !i.released)
            .and_then(|i| i.owner)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_live_lock_is_held_until_released() {
        let store = MemoryStore::new("synapse/backups");
        let a = BackupLock::acquire(&store, &owner("synapse/0"), &minute())
            .await
            .unwrap();
        assert!(a.is_held());
        assert_eq!(holder(&store).await, Some(owner("synapse/0")));
        // Within its time to live by the store's clock: still held.
        store.advance(Duration::from_secs(50));
        let refused = BackupLock::acquire(&store, &owner("synapse/1"), &minute()).await;
        match refused {
            Err(BackupError::LockHeld { holder, .. }) => {
                assert!(holder.contains("synapse/0"), "{holder}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            BackupLock::live_holder(&store, Duration::from_secs(60))
                .await
                .unwrap()
                .is_some()
        );
        a.release().await.unwrap();
        assert_eq!(holder(&store).await, None);
        let b = BackupLock::acquire(&store, &owner("synapse/1"), &minute())
            .await
            .unwrap();
        assert_eq!(holder(&store).await, Some(owner("synapse/1")));
        b.release().await.unwrap();
        assert_eq!(
            store.keys(),
            Vec::<String>::new(),
            "lock and probe are removed"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_expired_lock_is_taken_over_and_its_old_guard_leaves_it_alone() {
        let store = MemoryStore::new("synapse/backups");
        let stale = BackupLock::acquire(&store, &owner("synapse/0"), &minute())
            .await
            .unwrap();
        // Not refreshed for two minutes by the server's clock (a stuck or dead holder).
        store.advance(Duration::from_secs(120));
        assert!(
            BackupLock::live_holder(&store, Duration::from_secs(60))
                .await
                .unwrap()
                .is_none()
        );
        let fresh = BackupLock::acquire(&store, &owner("synapse/1"), &minute())
            .await
            .unwrap();
        assert_eq!(holder(&store).await, Some(owner("synapse/1")));
        // The old holder's release fails its If-Match and leaves the new lock in place.
        stale.release().await.unwrap();
        assert_eq!(holder(&store).await, Some(owner("synapse/1")));
        fresh.release().await.unwrap();
        assert_eq!(holder(&store).await, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_conditional_writes_the_lock_fails_closed() {
        let store = MemoryStore::new("synapse/backups");
        store.set_conditional_writes(false);
        let refused = BackupLock::acquire(&store, &owner("synapse/0"), &minute()).await;
        assert!(
            matches!(refused, Err(BackupError::LockUnsupported { .. })),
            "{refused:?}"
        );
        assert!(
            !store.keys().contains(&BackupLock::key(&store)),
            "no lock written: {:?}",
            store.keys()
        );
        let refused = crate::prune_backups(&store, &crate::RetentionPolicy::default()).await;
        assert!(
            matches!(refused, Err(BackupError::LockUnsupported { .. })),
            "{refused:?}"
        );
        let off = BackupLock::acquire(&store, &owner("synapse/0"), &LockOptions::off())
            .await
            .unwrap();
        assert!(!off.is_held());
        crate::prune_backups_with(
            &store,
            &crate::RetentionPolicy::default(),
            &LockOptions::off(),
        )
        .await
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_oversized_lock_object_is_an_unknown_holder_taken_over_once_expired() {
        use std::collections::HashMap;
        let store = MemoryStore::new("synapse/backups");
        let key = BackupLock::key(&store);
        let huge = vec![b'x'; usize::try_from(MAX_LOCK_BYTES).unwrap() + 1];
        store
            .put_object(&key, huge, CONTENT_TYPE, &HashMap::new())
            .await
            .unwrap();
        let info = BackupLock::inspect(&store).await.unwrap().unwrap();
        assert_eq!(info.owner, None);
        assert!(matches!(
            BackupLock::acquire(&store, &owner("synapse/0"), &minute()).await,
            Err(BackupError::LockHeld { .. })
        ));
        store.advance(Duration::from_secs(120));
        let guard = BackupLock::acquire(&store, &owner("synapse/0"), &minute())
            .await
            .unwrap();
        assert_eq!(holder(&store).await, Some(owner("synapse/0")));
        guard.release().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_guard_frees_the_lock() {
        let store = MemoryStore::new("");
        let guard = BackupLock::acquire(&store, &owner("synapse/0"), &minute())
            .await
            .unwrap();
        drop(guard);
        assert_eq!(holder(&store).await, None);
        let again = BackupLock::acquire(&store, &owner("synapse/1"), &minute())
            .await
            .unwrap();
        again.release().await.unwrap();
    }
}

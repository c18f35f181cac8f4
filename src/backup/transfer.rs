//! [`Transfer`]: where the bytes of a backup move between the bucket and the workload,
//! and the library side of [`Transfer::Library`]'s downloads: ranged GETs, a few in
//! flight, written in order into the workload pipeline's standard input (its uploads
//! are in `upload.rs`).

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::backup::incremental::hex;
use crate::error::{ConfigError, S3Error};
use crate::s3::{ObjectStore, RangeBody};

/// Where a create uploads the backup, and a verify, restore or extract downloads it.
///
/// Whichever is chosen, the workload runs the same `tar | gpg --symmetric` or
/// `gpg --decrypt | tar` pipeline with the same checks (the ciphertext's SHA-256
/// and length against the manifest, the uploaded object's size, gpg's status, the
/// inner manifest, the member rules, the database's integrity check, the staged swap):
/// only where the ciphertext goes to or comes from differs, and who sums it (the
/// workload's checksum stage when its aws CLI moves the stream; the library, of what
/// it uploads or writes, when the library moves it).
///
/// Its text form (CLI `--transfer`) is `workload` or `library`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transfer {
    /// The workload uploads and downloads with the aws CLI (the default): the bytes
    /// never cross the container boundary (but for the first MiB of an object whose
    /// passphrase or chain is checked ahead, which the library reads and hands to the
    /// workload's gpg), but the workload needs the aws CLI and gets
    /// the S3 credentials, its config and the SSE-C key (in its environment and private
    /// work dir, for the run).
    #[default]
    Workload,
    /// The library transfers: a create reads the ciphertext from the workload's
    /// pipeline (its standard output, through
    /// [`Container::exec_streaming`](crate::Container::exec_streaming)) and uploads it
    /// as a multipart upload
    /// ([`BackupOptions::library_part_mib`](crate::BackupOptions::library_part_mib) MiB
    /// parts, [`library_parts_in_flight`](crate::BackupOptions::library_parts_in_flight)
    /// at once: by default [`LIBRARY_PART_MIB`] and [`LIBRARY_PARTS_IN_FLIGHT`]); a read
    /// downloads with ranged GETs
    /// ([`RestoreOptions::library_range_mib`](crate::RestoreOptions::library_range_mib)
    /// MiB each,
    /// [`library_ranges_in_flight`](crate::RestoreOptions::library_ranges_in_flight) in
    /// flight: by default chosen per object, [`READ_AHEAD_RANGE_MIB`] read ahead
    /// [`LIBRARY_RANGES_IN_FLIGHT`] at once or [`LIBRARY_RANGE_MIB`] streamed; ranges of
    /// up to [`READ_AHEAD_MAX_MIB`] are read ahead) and streams the ciphertext into the
    /// workload's pipeline. No S3 credential, config or SSE-C key enters the workload,
    /// which needs no aws CLI; in exchange the ciphertext crosses the container
    /// boundary (for Pebble, over its exec websocket), this process holds the parts in
    /// flight, and the container must implement `exec_streaming`.
    Library,
}

/// The default size of each part of [`Transfer::Library`]'s upload, in MiB
/// ([`BackupOptions::library_part_mib`](crate::BackupOptions::library_part_mib)): 5,
/// S3's smallest (larger for a backup that would need more than 8,000 parts: S3 allows
/// 10,000). Measured (README, "The transfer in the library (measured)").
pub const LIBRARY_PART_MIB: u32 = 5;

/// The default number of parts of [`Transfer::Library`]'s upload uploaded at once
/// ([`BackupOptions::library_parts_in_flight`](crate::BackupOptions::library_parts_in_flight)):
/// the memory it holds is at most this many parts and the one being read, 25 MiB at
/// the defaults.
pub const LIBRARY_PARTS_IN_FLIGHT: u32 = 4;

/// The size of the ranged GETs of [`Transfer::Library`], in MiB, where a range costs
/// the server a read of the whole object (moto): 1024, so a backup of up to 1 GiB is
/// one streamed GET there, as the workload's download
/// ([`AWS_STREAMED_CHUNK_MIB`](crate::AWS_STREAMED_CHUNK_MIB) there). By default the
/// library chooses it or [`READ_AHEAD_RANGE_MIB`] per object, by the first range's
/// timing ([`RestoreOptions::library_range_mib`](crate::RestoreOptions::library_range_mib)
/// `None`). A range this large is streamed, not read ahead ([`READ_AHEAD_MAX_MIB`]): it
/// sizes the requests, not the memory, each range's body written into the pipeline as
/// it arrives, a few hundred KiB at a time, 2 ranges in flight (the next one requested
/// ahead, its body not read until its turn). Measured in the README ("Reading ahead in
/// small ranges").
pub const LIBRARY_RANGE_MIB: u64 = 1024;

/// The size of the ranged GETs of [`Transfer::Library`], in MiB, where a range costs the
/// server no more than its bytes (AWS S3, MinIO, Ceph, s3s-fs): 4, read ahead,
/// [`LIBRARY_RANGES_IN_FLIGHT`] at once. An object's download starts as one streamed
/// GET of up to [`LIBRARY_RANGE_MIB`], whose first 16 MiB are timed: when their first
/// byte came later than 20 ms and than a quarter of the time they then took (one 4 MiB
/// range's; a server that read the whole object to serve the range), the same stream
/// goes on, and the rest goes in [`LIBRARY_RANGE_MIB`] ranges; else the stream is
/// dropped and the rest read ahead.
/// Many small ranges beat a few large ones for the same memory: on s3s-fs 12 × 4 MiB
/// restored a chain 11 % faster than 3 × 16 MiB (the server spent less CPU per byte
/// with more requests in flight), and faster through an added round trip too; measured
/// in the README ("Reading ahead in small ranges").
pub const READ_AHEAD_RANGE_MIB: u64 = 4;

/// The default number of ranged GETs of [`Transfer::Library`] in flight at once
/// ([`RestoreOptions::library_ranges_in_flight`](crate::RestoreOptions::library_ranges_in_flight)):
/// 12. Ranges of at most [`READ_AHEAD_MAX_MIB`] in flight download side by side, so
/// this process holds up to one more than this many ranges (52 MiB with
/// [`READ_AHEAD_RANGE_MIB`]); a larger range in flight is requested ahead but its body
/// waits in the connection and the server until its turn.
pub const LIBRARY_RANGES_IN_FLIGHT: usize = 12;

/// How much of an object [`Ranges::Auto`] reads as the start of one streamed GET, timed
/// ([`ranges_cost_much`]), before it chooses its ranges: 16 MiB, long enough that a
/// server far away takes longer for the body than for its first byte.
const PROBE_MIB: u64 = 16;

/// How many [`READ_AHEAD_RANGE_MIB`] ranges the probe's [`PROBE_MIB`] hold: its body's
/// time divided by this is one range's ([`ranges_cost_much`]).
const PROBE_RANGES: u32 = {
    assert!(
        PROBE_MIB.is_multiple_of(READ_AHEAD_RANGE_MIB) && PROBE_MIB / READ_AHEAD_RANGE_MIB <= 64
    );
    (PROBE_MIB / READ_AHEAD_RANGE_MIB) as u32
};

/// The most ranged GETs of [`Transfer::Library`] in flight at once: 64. A larger
/// [`RestoreOptions::library_ranges_in_flight`](crate::RestoreOptions::library_ranges_in_flight)
/// counts as this many.
pub const LIBRARY_RANGES_IN_FLIGHT_MAX: usize = 64;

impl fmt::Display for Transfer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transfer::Workload => "workload",
            Transfer::Library => "library",
        })
    }
}

impl FromStr for Transfer {
    type Err = ConfigError;

    /// `workload` or `library` (any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "workload" => Ok(Transfer::Workload),
            "library" => Ok(Transfer::Library),
            _ => Err(ConfigError::field(
                "transfer",
                format!("{s:?} is not a transfer: use `workload` or `library`"),
            )),
        }
    }
}

/// The SHA-256 (lower-case hex) and length of a stream the library moved, summed and
/// counted as it uploaded or wrote it (so the workload need not sum it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) sha256: String,
    pub(crate) length: u64,
}

/// How a library download ended.
#[derive(Debug)]
pub(crate) enum Fed {
    /// Every byte was written, summed as it was.
    All(Tally),
    /// The pipeline stopped reading (it failed, or was killed) after this many bytes:
    /// its own outcome tells why.
    Stopped(u64),
}

impl Fed {
    /// The bytes written.
    pub(crate) fn bytes(&self) -> u64 {
        match self {
            Fed::All(Tally { length: n, .. }) | Fed::Stopped(n) => *n,
        }
    }
}

/// The least [`feed`] writes into its sink at once (but for an object's last bytes):
/// 256 KiB, which it may hold beside the chunk being read.
const FEED_WRITE: usize = 256 << 10;

/// The largest range [`Transfer::Library`]'s download reads ahead into memory, in MiB:
/// 64. A range of at most this size
/// ([`RestoreOptions::library_range_mib`](crate::RestoreOptions::library_range_mib)) is
/// read whole by its own task as soon as it is requested, so the ranges in flight
/// download side by side (the memory held is up to one more than
/// [`library_ranges_in_flight`](crate::RestoreOptions::library_ranges_in_flight)
/// ranges: the last one written is summed as the next arrives); a larger one is
/// streamed in its turn and its body waits in the connection until then.
pub const READ_AHEAD_MAX_MIB: u64 = 64;

/// The most bytes [`feed`] writes into its sink at once from a range read ahead: 1 MiB
/// (a pipe, or Pebble's websocket, takes it in pieces anyway).
const READ_AHEAD_WRITE: usize = 1 << 20;

/// How [`feed`] sizes its ranged GETs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ranges {
    /// Ranges of this many bytes, this many in flight.
    Fixed { range: u64, in_flight: usize },
    /// Chosen by the first range's timing ([`auto_start`], [`ranges_cost_much`]):
    /// [`READ_AHEAD_RANGE_MIB`] ranges read ahead, this many in flight, where a range
    /// costs the server no more than its bytes; else [`LIBRARY_RANGE_MIB`] ranges,
    /// streamed.
    Auto { in_flight: usize },
}

/// The least time to a range's first byte that [`ranges_cost_much`] counts as the
/// server's own cost for the range: 20 ms (s3s-fs on loopback answers in about 1 ms,
/// moto in 22 to 26 ms for a 40 MB object, 55 to 75 ms for 120 MB, 450 ms for 1 GB).
const COSTLY_FIRST_BYTE: Duration = Duration::from_millis(20);

/// Whether the server made the first range of an object cost more than its bytes: its
/// first byte came later than [`COSTLY_FIRST_BYTE`] and than one
/// [`READ_AHEAD_RANGE_MIB`] range's body would take at the rate its first
/// [`PROBE_MIB`] then came (a quarter of their time). moto reads the whole object for
/// every ranged GET (half a CPU-second per range of a 1 GiB object, 70 ms of 120 MB
/// while the chain's other packs are read beside it), so there one streamed GET is the
/// only good choice; a server that seeks (AWS S3, MinIO, Ceph, s3s-fs) answers in a
/// round trip, and one far away takes longer still for a range's body than for its
/// first byte. A fast server far away taken for a costly one is read as one stream at
/// the rate its body came: faster than a range per first byte (4 MiB in 40 ms is
/// 100 MiB/s).
fn ranges_cost_much(first_byte: Duration, body: Duration) -> bool {
    first_byte > COSTLY_FIRST_BYTE.max(body / PROBE_RANGES)
}

/// Writes the first `size` bytes of the object `key` into `sink`, in order, read with
/// ranged GETs as `ranges` says.
///
/// A range of at most [`READ_AHEAD_MAX_MIB`] is read ahead: its task downloads it
/// whole into memory as soon as it is requested, so the ranges in flight download side
/// by side while the one before them is written (a server that serves one stream on
/// one core, s3s-fs, then uses both, and this process reads each body in large pieces);
/// the memory held is up to one more range than are in flight. A larger range is
/// written as it arrives ([`ObjectStore::get_object_range_stream`]), its small chunks
/// gathered into writes of [`FEED_WRITE`]; the ranges after it are requested ahead
/// (each on a task of its own, so that its request goes out while the one before is
/// written) but their bodies are not read until their turn: the connection and the
/// server hold them, not this process. A short range (the object shrank) ends the
/// stream early: the pipeline's checks then see a truncated object, as they would with
/// the aws CLI.
///
/// With [`Ranges::Auto`] the download starts as one streamed GET whose first
/// [`PROBE_MIB`] are timed, and goes on as [`ranges_cost_much`] says
/// ([`auto_start`]).
///
/// # Errors
/// The first GET (request or body) that fails.
pub(crate) async fn feed(
    store: &dyn ObjectStore,
    key: &str,
    size: u64,
    ranges: Ranges,
    sink: &mut (impl AsyncWrite + Unpin + ?Sized),
    count: &AtomicU64,
) -> Result<Fed, S3Error> {
    let plan = Plan {
        ranges,
        read_ahead_max: READ_AHEAD_MAX_MIB << 20,
        costly: ranges_cost_much,
    };
    feed_with(store, key, size, plan, sink, count).await
}

/// The settings of one [`feed_with`].
#[derive(Clone, Copy)]
struct Plan {
    ranges: Ranges,
    /// Ranges of at most this many bytes are read ahead.
    read_ahead_max: u64,
    /// [`ranges_cost_much`], or a test's stand-in.
    costly: fn(Duration, Duration) -> bool,
}

/// [`feed`] as `plan` says.
async fn feed_with(
    store: &dyn ObjectStore,
    key: &str,
    size: u64,
    plan: Plan,
    sink: &mut (impl AsyncWrite + Unpin + ?Sized),
    count: &AtomicU64,
) -> Result<Fed, S3Error> {
    let sum = Summer::new();
    let mut written = 0_u64;
    let start = match plan.ranges {
        Ranges::Fixed { range, in_flight } => Start::Rest {
            range: range.max(1),
            in_flight,
        },
        Ranges::Auto { in_flight } => {
            let how = (in_flight, plan.costly);
            auto_start(store, key, size, how, sink, &sum, &mut written, count).await?
        }
    };
    let (range, in_flight) = match start {
        Start::Rest { range, in_flight } => (range, in_flight),
        Start::Stopped => return Ok(Fed::Stopped(written)),
        Start::Ended => return Ok(Fed::All(sum.tally(written).await)),
    };
    let read_ahead = range <= plan.read_ahead_max;
    let store = store.clone_store();
    let start = written;
    let mut ranges = (0..(size - start).div_ceil(range)).map(|i| {
        let offset = start + i * range;
        (offset, range.min(size - offset))
    });
    let mut requests = Requests::default();
    loop {
        while requests.0.len() < in_flight.max(1) {
            let Some((offset, length)) = ranges.next() else {
                break;
            };
            let request = request(store.clone(), key, (offset, length), read_ahead);
            requests.0.push_back((length, request));
        }
        let Some((length, request)) = requests.0.pop_front() else {
            break;
        };
        let mut body = match request.await {
            Ok(Ok(Range::Streaming(body))) => body,
            Ok(Ok(Range::Read(bytes))) => {
                let got = bytes.len() as u64;
                if !put_read(sink, &sum, bytes, &mut written, count).await {
                    return Ok(Fed::Stopped(written));
                }
                if got < length {
                    break;
                }
                continue;
            }
            Ok(Err(e)) => return Err(e),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        let Some((got, _)) =
            put_streamed(sink, &sum, &mut body, u64::MAX, &mut written, count).await?
        else {
            return Ok(Fed::Stopped(written));
        };
        if got < length {
            break;
        }
    }
    Ok(Fed::All(sum.tally(written).await))
}

/// How [`auto_start`] left a feed.
enum Start {
    /// The rest (from what was written) in ranges of `range` bytes, `in_flight` at once.
    Rest { range: u64, in_flight: usize },
    /// The sink stopped taking bytes.
    Stopped,
    /// Everything was written (or the object ended early: it shrank).
    Ended,
}

/// [`Ranges::Auto`]'s start: requests the object's first [`LIBRARY_RANGE_MIB`] (or all
/// of it, when smaller) as one streamed GET, as where ranges cost much, and writes its
/// first [`PROBE_MIB`] timed: the time to its first byte and the time those
/// bytes then took. Where `costly` (with `in_flight`: [`ranges_cost_much`]) says the
/// server made the range cost much (moto read the whole object to serve it), the same
/// stream is written on, and the rest goes in [`LIBRARY_RANGE_MIB`] streamed ranges:
/// no request more than before the choice existed. Else the stream is dropped (its
/// connection closed) and the rest is read ahead in [`READ_AHEAD_RANGE_MIB`] ranges,
/// `in_flight` at once. An object no larger than [`PROBE_MIB`] is one request.
#[allow(clippy::too_many_arguments)] // a feed's state, shared with feed_with
async fn auto_start(
    store: &dyn ObjectStore,
    key: &str,
    size: u64,
    (in_flight, costly): (usize, fn(Duration, Duration) -> bool),
    sink: &mut (impl AsyncWrite + Unpin + ?Sized),
    sum: &Summer,
    written: &mut u64,
    count: &AtomicU64,
) -> Result<Start, S3Error> {
    let first = PROBE_MIB << 20;
    if size <= first {
        return Ok(Start::Rest {
            range: first,
            in_flight: 1,
        });
    }
    let streamed = (LIBRARY_RANGE_MIB << 20).min(size);
    let started = Instant::now();
    let mut body = store.get_object_range_stream(key, 0, streamed).await?;
    let first_byte = started.elapsed();
    let Some((got, rest)) = put_streamed(sink, sum, &mut body, first, written, count).await? else {
        return Ok(Start::Stopped);
    };
    let body_time = started.elapsed().saturating_sub(first_byte);
    if got < first {
        // The object shrank: nothing more to read.
        return Ok(Start::Ended);
    }
    let costly = costly(first_byte, body_time);
    tracing::debug!(
        key,
        first_byte_ms = first_byte.as_millis(),
        body_ms = body_time.as_millis(),
        costly,
        "the first range of the library's download was timed"
    );
    if !costly {
        drop(body);
        return Ok(Start::Rest {
            range: READ_AHEAD_RANGE_MIB << 20,
            in_flight,
        });
    }
    let mut got = got;
    if let Some(rest) = rest {
        got += rest.len() as u64;
        if !put(sink, sum, rest, written, count).await {
            return Ok(Start::Stopped);
        }
    }
    let Some((more, _)) = put_streamed(sink, sum, &mut body, u64::MAX, written, count).await?
    else {
        return Ok(Start::Stopped);
    };
    if got + more < streamed || streamed == size {
        return Ok(Start::Ended);
    }
    Ok(Start::Rest {
        range: LIBRARY_RANGE_MIB << 20,
        in_flight: STREAMED_IN_FLIGHT,
    })
}

/// Writes a streamed range's `body` into `sink` as it arrives, as [`put`] does, up to
/// `limit` bytes: gives the bytes it wrote and what it had read past `limit` (the rest
/// of the chunk that crossed it), or `None` when the sink stopped taking bytes.
async fn put_streamed(
    sink: &mut (impl AsyncWrite + Unpin + ?Sized),
    sum: &Summer,
    body: &mut RangeBody,
    limit: u64,
    written: &mut u64,
    count: &AtomicU64,
) -> Result<Option<(u64, Option<bytes::Bytes>)>, S3Error> {
    let mut pending = bytes::BytesMut::new();
    let mut got = 0_u64;
    let mut past = None;
    while got < limit {
        let Some(chunk) = body.next().await else {
            break;
        };
        let mut chunk = chunk?;
        if chunk.len() as u64 > limit - got {
            past = Some(chunk.split_off(usize::try_from(limit - got).unwrap_or(usize::MAX)));
        }
        got += chunk.len() as u64;
        // A body arrives in whatever pieces the connection gives (4 KiB each from some
        // servers): gathered into pieces of at least FEED_WRITE bytes, so neither the
        // pipeline (a pipe, or Pebble's websocket) nor the summing thread is woken for
        // each one.
        let piece = if pending.is_empty() && chunk.len() >= FEED_WRITE {
            chunk
        } else {
            if pending.is_empty() {
                // One allocation per piece (the last piece's is with the summer).
                pending.reserve(FEED_WRITE + chunk.len());
            }
            pending.extend_from_slice(&chunk);
            if pending.len() < FEED_WRITE {
                continue;
            }
            pending.split().freeze()
        };
        if !put(sink, sum, piece, written, count).await {
            return Ok(None);
        }
    }
    if !pending.is_empty() && !put(sink, sum, pending.split().freeze(), written, count).await {
        return Ok(None);
    }
    Ok(Some((got, past)))
}

/// How many [`LIBRARY_RANGE_MIB`] ranges are in flight where [`Ranges::Auto`] found
/// ranges costly: the one being written and the next, requested ahead.
const STREAMED_IN_FLIGHT: usize = 2;

/// A requested range: read whole (read ahead), or its body still to be read.
enum Range {
    Read(bytes::Bytes),
    Streaming(RangeBody),
}

/// Requests the range `(offset, length)` of `key` on a task of its own, which reads
/// it whole when `read_ahead` says so.
fn request(
    store: Arc<dyn ObjectStore>,
    key: &str,
    (offset, length): (u64, u64),
    read_ahead: bool,
) -> JoinHandle<Result<Range, S3Error>> {
    let key = key.to_string();
    tokio::spawn(async move {
        let body = store.get_object_range_stream(&key, offset, length).await?;
        if read_ahead {
            read_whole(body, length).await.map(Range::Read)
        } else {
            Ok(Range::Streaming(body))
        }
    })
}

/// Writes a range read ahead into `sink` in pieces of [`READ_AHEAD_WRITE`], as
/// [`put`] does; `false` when the sink stopped taking bytes.
async fn put_read(
    sink: &mut (impl AsyncWrite + Unpin + ?Sized),
    sum: &Summer,
    mut bytes: bytes::Bytes,
    written: &mut u64,
    count: &AtomicU64,
) -> bool {
    while !bytes.is_empty() {
        let piece = bytes.split_to(bytes.len().min(READ_AHEAD_WRITE));
        if !put(sink, sum, piece, written, count).await {
            return false;
        }
    }
    true
}

/// Reads `body` (of `length` bytes, fewer when the object shrank) into one buffer.
async fn read_whole(mut body: RangeBody, length: u64) -> Result<bytes::Bytes, S3Error> {
    let mut buffer = bytes::BytesMut::with_capacity(usize::try_from(length).unwrap_or(0));
    while let Some(chunk) = body.next().await {
        buffer.extend_from_slice(&chunk?);
    }
    Ok(buffer.freeze())
}

/// Writes `piece` into `sink`, sums it (on `sum`'s thread, beside the write) and counts
/// it in `written` and `count`; `false` when the sink stopped taking bytes (then the
/// feed ends and its sum is dropped).
async fn put(
    sink: &mut (impl AsyncWrite + Unpin + ?Sized),
    sum: &Summer,
    piece: bytes::Bytes,
    written: &mut u64,
    count: &AtomicU64,
) -> bool {
    sum.add(piece.clone()).await;
    if sink.write_all(&piece).await.is_err() {
        return false;
    }
    *written += piece.len() as u64;
    count.store(*written, Ordering::Relaxed);
    true
}

/// How many pieces (of [`FEED_WRITE`] or more) [`Summer`] holds before the feed waits
/// for it.
const SUM_QUEUE: usize = 4;

/// The SHA-256 of a feed's bytes, summed on a blocking thread of its own beside the
/// writes: summed in the feed's loop, 1 GiB took as long as moto takes to serve it,
/// and the feed (one task) was the restore's slowest stage. Dropped, it stops.
struct Summer {
    chunks: tokio::sync::mpsc::Sender<bytes::Bytes>,
    task: JoinHandle<String>,
}

impl Summer {
    fn new() -> Self {
        let (chunks, mut queue) = tokio::sync::mpsc::channel::<bytes::Bytes>(SUM_QUEUE);
        let task = tokio::task::spawn_blocking(move || {
            let mut sum = Sha256::new();
            while let Some(chunk) = queue.blocking_recv() {
                sum.update(&chunk);
            }
            hex(&sum.finalize())
        });
        Summer { chunks, task }
    }

    async fn add(&self, chunk: bytes::Bytes) {
        // The receiver lives until the sender is dropped: a send cannot fail.
        let _ = self.chunks.send(chunk).await;
    }

    /// The tally of the `length` bytes summed.
    async fn tally(self, length: u64) -> Tally {
        Tally {
            sha256: self.finish().await,
            length,
        }
    }

    async fn finish(self) -> String {
        let Summer { chunks, task } = self;
        // The sender dropped, the thread sums what is queued and ends.
        drop(chunks);
        match task.await {
            Ok(sum) => sum,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// The ranged GETs requested ahead, in order, with their lengths: aborted when the
/// feed ends early (an error, a pipeline that stopped reading).
#[derive(Default)]
struct Requests(VecDeque<(u64, JoinHandle<Result<Range, S3Error>>)>);

impl Drop for Requests {
    fn drop(&mut self) {
        for (_, request) in &self.0 {
            request.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::s3::MemoryStore;

    #[test]
    fn text_form_round_trips_and_refuses_others() {
        for t in [Transfer::Workload, Transfer::Library] {
            assert_eq!(t.to_string().parse::<Transfer>().unwrap(), t);
        }
        assert_eq!(" Library ".parse::<Transfer>().unwrap(), Transfer::Library);
        let e = "aws".parse::<Transfer>().unwrap_err().to_string();
        assert!(e.contains("transfer") && e.contains("\"aws\""), "{e}");
        assert_eq!(Transfer::default(), Transfer::Workload);
    }

    fn sha256(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    fn ranges(range: u64, in_flight: usize) -> Ranges {
        Ranges::Fixed { range, in_flight }
    }

    /// Fixed ranges, read ahead when no larger than `read_ahead_max`.
    fn fixed(range: u64, in_flight: usize, read_ahead_max: u64) -> Plan {
        Plan {
            ranges: ranges(range, in_flight),
            read_ahead_max,
            costly: |_, _| unreachable!("fixed ranges are not timed"),
        }
    }

    async fn store_with(body: &[u8]) -> MemoryStore {
        let store = MemoryStore::new("");
        store
            .put_object("o", body.to_vec(), "x", &HashMap::new())
            .await
            .unwrap();
        store
    }

    #[tokio::test]
    async fn ranges_arrive_in_order_whatever_the_range_size() {
        let body: Vec<u8> = (0..10_000_u32).map(|i| (i * 7 % 251) as u8).collect();
        let store = store_with(&body).await;
        let cases = [(1, 1), (999, 3), (4096, 4), (10_000, 2), (50_000, 4)];
        // Read ahead (every range here is small) and streamed.
        for ((range, in_flight), read_ahead_max) in
            cases.into_iter().flat_map(|c| [(c, u64::MAX), (c, 0)])
        {
            let mut out = Vec::new();
            let count = AtomicU64::new(0);
            let plan = fixed(range, in_flight, read_ahead_max);
            let fed = feed_with(&store, "o", 10_000, plan, &mut out, &count)
                .await
                .unwrap();
            assert!(
                matches!(&fed, Fed::All(Tally { length: 10_000, sha256: sum }) if *sum == sha256(&body)),
                "{fed:?}"
            );
            assert_eq!(count.load(Ordering::Relaxed), 10_000);
            assert!(out == body, "range {range}: bytes differ");
        }
    }

    #[tokio::test]
    async fn a_shrunk_object_ends_early_and_a_missing_one_is_an_error() {
        let store = store_with(&[7; 100]).await;
        let mut out = Vec::new();
        let count = AtomicU64::new(0);
        let fed = feed(&store, "o", 250, ranges(64, 2), &mut out, &count)
            .await
            .unwrap();
        assert!(
            matches!(&fed, Fed::All(Tally { length: 100, sha256: sum }) if *sum == sha256(&[7; 100])),
            "{fed:?}"
        );
        assert_eq!(out.len(), 100);
        let result = feed(&store, "missing", 10, ranges(4, 2), &mut out, &count).await;
        assert!(
            matches!(result, Err(S3Error::NotFound { .. })),
            "{result:?}"
        );
    }

    /// A sink that records the size of every write it is given.
    #[derive(Default)]
    struct Writes(Vec<usize>, Vec<u8>);

    impl AsyncWrite for Writes {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.0.push(buf.len());
            self.1.extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// The store's body comes in chunks of 1,000 bytes: the pipeline gets writes of at
    /// least `FEED_WRITE` bytes (the last of each range excepted), not one per chunk,
    /// from a streamed range; a range read ahead is written in pieces of
    /// `READ_AHEAD_WRITE`.
    #[tokio::test]
    async fn small_chunks_are_gathered_into_large_writes() {
        let size = 2 * READ_AHEAD_WRITE + 12_345;
        let body: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
        let store = store_with(&body).await;
        for (read_ahead_max, writes, least) in [(0, 9, FEED_WRITE), (u64::MAX, 3, READ_AHEAD_WRITE)]
        {
            let mut sink = Writes::default();
            let count = AtomicU64::new(0);
            let plan = fixed(size as u64, 2, read_ahead_max);
            let fed = feed_with(&store, "o", size as u64, plan, &mut sink, &count)
                .await
                .unwrap();
            assert!(
                matches!(&fed, Fed::All(t) if t.length == size as u64),
                "{fed:?}"
            );
            assert!(sink.1 == body, "bytes differ");
            assert_eq!(sink.0.len(), writes, "{:?}", sink.0);
            let (last, full) = sink.0.split_last().unwrap();
            assert!(
                full.iter().all(|&n| n >= least) && *last > 0,
                "{:?}",
                sink.0
            );
        }
    }

    /// Ranges of up to READ_AHEAD_MAX_MIB are downloaded side by side: while the
    /// pipeline has not yet taken the first range, the ranges in flight after it are
    /// already read whole from the store (streamed, they would wait in the connection).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_ranges_in_flight_are_read_ahead_while_the_first_is_written() {
        let body: Vec<u8> = (0..10_000_u32).map(|i| (i * 13 % 249) as u8).collect();
        let store = store_with(&body).await;
        let (mut writer, mut reader) = tokio::io::duplex(16);
        let count = AtomicU64::new(0);
        let observer = store.clone();
        let check = async move {
            // The pipeline takes nothing until four ranges of 1,000 bytes are read.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while observer.range_bytes_served() < 4_000 && std::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            let ahead = observer.range_bytes_served();
            let mut out = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut out)
                .await
                .unwrap();
            (ahead, out)
        };
        let feeding = async {
            let fed = feed(&store, "o", 10_000, ranges(1_000, 4), &mut writer, &count).await;
            drop(writer);
            fed
        };
        let (fed, (ahead, out)) = tokio::join!(feeding, check);
        assert_eq!(
            ahead, 4_000,
            "bytes read from the store before the first write"
        );
        assert!(
            matches!(fed, Ok(Fed::All(Tally { length: 10_000, .. }))),
            "{fed:?}"
        );
        assert!(out == body, "bytes differ");
    }

    #[tokio::test]
    async fn a_closed_pipeline_stops_the_feed() {
        let store = store_with(&[1; 1000]).await;
        let (mut writer, reader) = tokio::io::duplex(16);
        drop(reader);
        let count = AtomicU64::new(0);
        let fed = feed(&store, "o", 1000, ranges(100, 2), &mut writer, &count)
            .await
            .unwrap();
        assert!(matches!(fed, Fed::Stopped(0)), "{fed:?}");
    }

    #[test]
    fn a_range_costs_much_when_its_first_byte_is_late_for_its_body() {
        let ms = Duration::from_millis;
        // moto on loopback (measured): half a second to read a 1 GiB object for a
        // range, 55 ms for 110 MB and 24 ms for 40 MB, each range's 16 MiB in 6 to 14 ms.
        assert!(ranges_cost_much(ms(450), ms(14)));
        assert!(ranges_cost_much(ms(55), ms(10)));
        assert!(ranges_cost_much(ms(24), ms(6)));
        assert!(ranges_cost_much(ms(120), ms(50)));
        // moto, a 120 MB database pack read beside a chain's 1 GB base: its first byte
        // in 72 ms, its 16 MiB slowed to 170 ms by the other pack's stream.
        assert!(ranges_cost_much(ms(72), ms(170)));
        // s3s-fs (1 ms, then 100 ms for 16 MiB), AWS S3 nearby and far away: a round
        // trip, then the body, a quarter of which is one 4 MiB range.
        assert!(!ranges_cost_much(ms(1), ms(100)));
        assert!(!ranges_cost_much(ms(30), ms(150)));
        assert!(!ranges_cost_much(ms(90), ms(400)));
        // Under 20 ms the first byte is never counted as the server's cost.
        assert!(!ranges_cost_much(ms(19), ms(1)));
    }

    /// `Ranges::Auto` requests the object as one streamed GET (up to 1 GiB) and times
    /// its first 16 MiB: where they cost little it drops the stream and reads the rest
    /// ahead in 4 MiB ranges, where they cost much it goes on with the same stream (no
    /// other request); the bytes written are the object's either way, an object no
    /// larger than 16 MiB is one request, and one that shrank ends where it ends.
    #[tokio::test]
    async fn auto_ranges_follow_the_first_range_timing() {
        let mib = 1_u64 << 20;
        let size = 40 * mib + 123;
        let body: Vec<u8> = (0..size).map(|i| (i % 241) as u8).collect();
        type Costly = fn(Duration, Duration) -> bool;
        // Not costly: the stream's first 16 MiB, then 4 MiB ranges and the last 123 bytes.
        let mut read_ahead = vec![(0, size)];
        read_ahead.extend((16..40).step_by(4).map(|m| (m * mib, 4 * mib)));
        read_ahead.push((40 * mib, 123));
        let costs: [(Costly, Vec<(u64, u64)>); 2] =
            [(|_, _| false, read_ahead), (|_, _| true, vec![(0, size)])];
        for (costly, expected) in costs {
            let store = store_with(&body).await;
            let mut out = Vec::new();
            let count = AtomicU64::new(0);
            let plan = Plan {
                ranges: Ranges::Auto { in_flight: 3 },
                read_ahead_max: READ_AHEAD_MAX_MIB << 20,
                costly,
            };
            let fed = feed_with(&store, "o", size, plan, &mut out, &count)
                .await
                .unwrap();
            assert!(
                matches!(&fed, Fed::All(Tally { length, sha256: sum }) if *length == size && *sum == sha256(&body)),
                "{fed:?}"
            );
            assert!(out == body, "bytes differ");
            assert_eq!(store.ranges_requested(), expected);
        }

        // A small object is one request; an object that shrank below its first range
        // ends with what it gave.
        for (stored, claimed, requested) in [(1000, 1000, (0, 1000)), (10 << 20, size, (0, size))] {
            let store = store_with(&body[..stored]).await;
            let count = AtomicU64::new(0);
            let fed = feed(
                &store,
                "o",
                claimed,
                Ranges::Auto { in_flight: 3 },
                &mut Vec::new(),
                &count,
            )
            .await
            .unwrap();
            assert!(
                matches!(&fed, Fed::All(Tally { length, .. }) if *length == stored as u64),
                "{fed:?}"
            );
            assert_eq!(store.ranges_requested(), vec![requested]);
        }
    }
}

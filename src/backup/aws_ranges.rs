//! How the workload's aws CLI sizes its download of one object when
//! [`RestoreOptions::download_chunk_mib`](crate::RestoreOptions::download_chunk_mib) is
//! `None` (the default): chosen per object by a probe from this process, a HEAD and a
//! tiny ranged GET of the object, timed ([`probe`], [`judge`]).
//!
//! A server that seeks (AWS S3, MinIO, Ceph, s3s-fs) answers the ranged GET in about
//! the HEAD's time, and there [`AWS_RANGED_CONCURRENCY`] ranges of
//! [`AWS_RANGED_CHUNK_MIB`] in flight download faster than one GET (on s3s-fs a whole
//! restore 1.5 times faster); a server that reads the whole object to serve a range
//! (moto) answers it late, and there one streamed GET ([`AWS_STREAMED_CHUNK_MIB`]) is the
//! only good choice, as it is when the probe cannot tell.

use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::s3::ObjectStore;

/// The size of the workload aws CLI's ranged GETs, in MiB, where the server serves a
/// range for no more than its bytes (the probe's answer; AWS S3, MinIO, Ceph, s3s-fs):
/// 8, [`AWS_RANGED_CONCURRENCY`] in flight. Measured (README, "Download settings"): a
/// restore of 1 GB from s3s-fs to a target dir took 6.5 s against 10.2 s as one GET, for
/// some 15 MB more in the aws CLI; 4 in flight were no faster end to end and held twice
/// the memory.
pub const AWS_RANGED_CHUNK_MIB: u32 = 8;

/// How many [`AWS_RANGED_CHUNK_MIB`] ranges the workload's aws CLI has in flight where
/// the probe chose them: 2 (unless
/// [`RestoreOptions::download_concurrency`](crate::RestoreOptions::download_concurrency)
/// says otherwise).
pub const AWS_RANGED_CONCURRENCY: u32 = 2;

/// The size of the workload aws CLI's ranged GETs, in MiB, where a range costs the
/// server a read of the whole object (moto), or where the probe could not tell: 1024,
/// so a backup of up to 1 GiB is one streamed GET, one at a time. Measured on moto
/// (README, Benchmark): a 1 GiB object in 4.1 s as one GET, 20.4 s in 2 × 64 MiB ranges.
pub const AWS_STREAMED_CHUNK_MIB: u32 = 1024;

/// The least size of an object the probe is made for: larger than two
/// [`AWS_RANGED_CHUNK_MIB`] ranges. A smaller one is one streamed GET (two ranges would
/// gain next to nothing).
pub(crate) const PROBED_ABOVE: u64 = 2 * ((AWS_RANGED_CHUNK_MIB as u64) << 20);

/// The least size of an object [`probe_target`] probes in the stead of a larger one of
/// the same run: 64 MiB (moto answers a range of it in 35 to 40 ms, later than
/// [`LEAST_PATIENCE`]; a smaller one could pass for a seeking server's answer).
const PROBE_TARGET_LEAST: u64 = 64 << 20;

/// Which of a run's `objects` (key and size) to probe for all of its downloads: the
/// smallest of at least [`PROBE_TARGET_LEAST`], so a server that reads the whole object
/// for a range (moto) reads as little as can tell (the base of a chain is the largest
/// pack; its database pack is often a tenth of it). `None` when none is that large: each
/// download then probes its own object. Pure.
pub(crate) fn probe_target<'a>(
    objects: impl Iterator<Item = (&'a str, u64)>,
) -> Option<(&'a str, u64)> {
    objects
        .filter(|(_, size)| *size >= PROBE_TARGET_LEAST)
        .min_by_key(|(_, size)| *size)
}

/// The bytes the probe's ranged GET asks for.
const PROBE_BYTES: u64 = 4096;

/// The least wait for the probe's ranged GET that [`judge`] allows: 20 ms (moto answers
/// a range of a 64 MiB object in 35 to 40 ms, of 512 MiB in 280 ms; s3s-fs on loopback in
/// 1 to 3 ms).
const LEAST_PATIENCE: Duration = Duration::from_millis(20);

/// How many HEADs' time [`judge`] allows the ranged GET: 4 (a HEAD and a GET of 4 KiB
/// cost a seeking server the same round trip; moto answers a HEAD in 2 to 3 ms whatever
/// the object's size).
const HEADS: u32 = 4;

/// How many HEADs the probe times, keeping the fastest: 2.
const HEAD_SAMPLES: u32 = 2;

/// What the probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probed {
    /// The ranged GET came back in [`patience`]'s time: the server seeks.
    Seeks,
    /// It did not: the server reads the object to serve a range, or the probe could not
    /// tell (a request failed: the download itself will say why).
    Streamed,
}

/// How long the probe waits for its ranged GET's answer, the HEAD before it having
/// taken `head`: [`HEADS`] times that, and at least [`LEAST_PATIENCE`]. Pure.
pub(crate) fn patience(head: Duration) -> Duration {
    LEAST_PATIENCE.max(head.saturating_mul(HEADS))
}

/// The probe's verdict from the HEAD's time and the ranged GET's (`None`: it did not
/// answer within [`patience`], or failed). Pure.
pub(crate) fn judge(head: Duration, ranged: Option<Duration>) -> Probed {
    match ranged {
        Some(ranged) if ranged <= patience(head) => Probed::Seeks,
        _ => Probed::Streamed,
    }
}

/// Probes how the server serves a range of `key` (of `size` bytes): [`Probed::Streamed`]
/// without a request for an object no larger than [`PROBED_ABOVE`]; else
/// [`HEAD_SAMPLES`] HEADs, timed (the fastest counts), then a GET of its first
/// [`PROBE_BYTES`], given [`patience`] to answer (a late one is
/// dropped: moto then reads the object once more in the background, about half a
/// CPU-second per GB, while the workload's aws CLI starts).
pub(crate) async fn probe(store: &dyn ObjectStore, key: &str, size: u64) -> Probed {
    if size <= PROBED_ABOVE {
        return Probed::Streamed;
    }
    // The faster of two HEADs: one delayed by a busy machine would stretch the patience
    // until a server that reads the whole object passed as one that seeks (whose
    // misjudgement costs far more than the other way round).
    let mut head = Duration::MAX;
    for _ in 0..HEAD_SAMPLES {
        let started = Instant::now();
        if let Err(e) = store.head_object(key).await {
            tracing::debug!(key, error = %e, "the download's probe could not HEAD the object");
            return Probed::Streamed;
        }
        head = head.min(started.elapsed());
    }
    let started = Instant::now();
    let ranged = async {
        let mut body = store.get_object_range_stream(key, 0, PROBE_BYTES).await?;
        while let Some(chunk) = body.next().await {
            chunk?;
        }
        Ok::<_, crate::error::S3Error>(())
    };
    let ranged = match tokio::time::timeout(patience(head), ranged).await {
        Ok(Ok(())) => Some(started.elapsed()),
        Ok(Err(e)) => {
            tracing::debug!(key, error = %e, "the download's probe could not GET a range");
            None
        }
        Err(_) => None,
    };
    let probed = judge(head, ranged);
    tracing::debug!(
        key,
        head_ms = head.as_secs_f64() * 1e3,
        ranged_ms = ranged.map(|d| d.as_secs_f64() * 1e3),
        ?probed,
        "the workload download's ranges were probed"
    );
    probed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_range_answered_in_a_few_heads_time_means_the_server_seeks() {
        // s3s-fs on loopback: both in a few ms.
        assert_eq!(judge(ms(2), Some(ms(3))), Probed::Seeks);
        // A far server: the GET costs the HEAD's round trip.
        assert_eq!(judge(ms(80), Some(ms(95))), Probed::Seeks);
        assert_eq!(judge(ms(80), Some(ms(320))), Probed::Seeks);
        // Within the least patience, whatever the HEAD.
        assert_eq!(judge(ms(1), Some(ms(20))), Probed::Seeks);
    }

    #[test]
    fn a_late_or_missing_answer_means_one_streamed_get() {
        // moto: a 64 MiB object's range in 38 ms after a 2 ms HEAD.
        assert_eq!(judge(ms(2), Some(ms(38))), Probed::Streamed);
        assert_eq!(judge(ms(80), Some(ms(321))), Probed::Streamed);
        assert_eq!(judge(ms(2), None), Probed::Streamed);
    }

    #[test]
    fn the_probe_target_is_the_smallest_object_of_64_mib_or_more() {
        let mib = |n: u64| n << 20;
        let objects = [("base", mib(1000)), ("db", mib(120)), ("own", mib(10))];
        assert_eq!(probe_target(objects.into_iter()), Some(("db", mib(120))));
        let objects = [("base", mib(1000)), ("db", mib(63)), ("own", mib(64))];
        assert_eq!(probe_target(objects.into_iter()), Some(("own", mib(64))));
        assert_eq!(probe_target([("small", mib(63))].into_iter()), None);
        assert_eq!(probe_target(std::iter::empty()), None);
    }

    #[test]
    fn patience_is_four_heads_and_at_least_20_ms() {
        assert_eq!(patience(Duration::ZERO), ms(20));
        assert_eq!(patience(ms(4)), ms(20));
        assert_eq!(patience(ms(10)), ms(40));
        assert_eq!(patience(Duration::MAX), Duration::MAX);
    }

    #[tokio::test]
    async fn a_small_object_is_not_probed_and_a_missing_one_streams() {
        let store = crate::s3::MemoryStore::new("");
        // No request for an object of two ranges or less: nothing there to answer.
        assert_eq!(probe(&store, "none", PROBED_ABOVE).await, Probed::Streamed);
        assert_eq!(
            probe(&store, "none", PROBED_ABOVE + 1).await,
            Probed::Streamed
        );
    }

    #[tokio::test]
    async fn an_object_in_memory_answers_in_time() {
        use crate::s3::ObjectStore as _;
        let store = crate::s3::MemoryStore::new("");
        let size = PROBED_ABOVE + 1;
        let body = vec![7u8; usize::try_from(size).unwrap()];
        store
            .put_object("big", body, "application/octet-stream", &Default::default())
            .await
            .unwrap();
        // The store answers at once; a stalled test thread (a busy machine) could make
        // one probe late, three in a row would not.
        let mut probed = Vec::new();
        for _ in 0..3 {
            probed.push(probe(&store, "big", size).await);
            if probed.last() == Some(&Probed::Seeks) {
                break;
            }
        }
        assert_eq!(probed.last(), Some(&Probed::Seeks), "{probed:?}");
    }
}

//! A TCP proxy on 127.0.0.1 that adds a fixed round-trip time to everything it
//! forwards, for measuring what a real network's latency costs where `tc netem` is not
//! available (the bench's `latency` and `catalog` sections; tests/integration/delay_proxy.rs
//! tests it).
//!
//! Each direction of each connection is a timestamped queue: a chunk read at time `t`
//! is written at `t + rtt / 2`, so the delay is paid once per round trip, not once per
//! read, and a long stream keeps its throughput (up to [`QUEUE_CHUNKS`] chunks in flight
//! per direction, ≈ 16 MiB, then the reader waits: backpressure). A new connection's
//! first bytes also wait out one more round trip, the cost of TCP's handshake. What it
//! does not model: loss, bandwidth limits, TCP's congestion window over the delayed path
//! (the kernel only sees loopback).
#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Chunks queued per direction before the reader waits.
pub const QUEUE_CHUNKS: usize = 256;
/// The largest chunk read at once.
const CHUNK: usize = 64 << 10;

/// A running proxy; stops (its runtime and every connection) when dropped.
pub struct DelayProxy {
    /// Where clients connect: `127.0.0.1:<port>`.
    pub addr: SocketAddr,
    /// The added round-trip time.
    pub rtt: Duration,
    /// Connections accepted and bytes forwarded (both directions) so far.
    counters: Arc<[AtomicU64; 2]>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl DelayProxy {
    /// Starts a proxy to `upstream` on a runtime of its own (one worker thread), so it
    /// runs whatever the caller's runtime does.
    pub fn start(upstream: SocketAddr, rtt: Duration) -> io::Result<DelayProxy> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("delay-proxy")
            .enable_all()
            .build()?;
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let counters = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let counted = Arc::clone(&counters);
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let accepted = Instant::now();
                counted[0].fetch_add(1, Ordering::SeqCst);
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        connect(client, server, rtt, accepted, &counted).await;
                    }
                });
            }
        });
        Ok(DelayProxy {
            addr,
            rtt,
            counters,
            runtime: Some(runtime),
        })
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.counters[0].load(Ordering::SeqCst)
    }

    /// Bytes forwarded so far, both directions.
    pub fn bytes(&self) -> u64 {
        self.counters[1].load(Ordering::SeqCst)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Forwards both directions until both are closed; the client's first bytes are not
/// delivered before one round trip after the connection was accepted (the handshake).
async fn connect(
    client: TcpStream,
    server: TcpStream,
    rtt: Duration,
    accepted: Instant,
    counters: &[AtomicU64; 2],
) {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let one_way = rtt / 2;
    tokio::join!(
        delayed(
            client_read,
            server_write,
            one_way,
            accepted + rtt,
            &counters[1]
        ),
        delayed(server_read, client_write, one_way, accepted, &counters[1]),
    );
}

/// One direction: a reader stamps each chunk with its delivery time (`one_way` after it
/// was read, never before `not_before`), a writer delivers the chunks in order at their
/// times; end of stream is forwarded (as a shutdown) the same way.
async fn delayed(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    one_way: Duration,
    not_before: Instant,
    forwarded: &AtomicU64,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE_CHUNKS);
    let reader = async move {
        loop {
            let mut chunk = vec![0u8; CHUNK];
            let n = from.read(&mut chunk).await.unwrap_or(0);
            chunk.truncate(n);
            let due = Instant::now().max(not_before) + one_way;
            // An empty chunk is the end of the stream.
            if tx.send((due, chunk)).await.is_err() || n == 0 {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if chunk.is_empty() {
                let _ = to.shutdown().await;
                return;
            }
            // Counted before it is written: a reader that has every byte sees them all
            // counted (counting after the write raced the reader's check).
            forwarded.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(reader, writer);
}

//! The bench's delay proxy (tests/support/delay_proxy.rs): it adds its round-trip time
//! to every exchange, and a long stream through it keeps its throughput (the delay is
//! paid once per round trip, not per chunk read).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::support::delay_proxy::DelayProxy;

/// An echo server on 127.0.0.1 (one thread per connection, until the client closes).
fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 256 << 10];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// One exchange of `message` through `stream`, timed.
fn exchange(stream: &mut TcpStream, message: &[u8]) -> Duration {
    let started = Instant::now();
    stream.write_all(message).unwrap();
    let mut back = vec![0u8; message.len()];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(back, message);
    started.elapsed()
}

#[test]
fn each_exchange_through_the_proxy_takes_its_round_trip_and_the_first_one_more() {
    let rtt = Duration::from_millis(60);
    let proxy = DelayProxy::start(echo_server(), rtt).unwrap();
    let mut stream = TcpStream::connect(proxy.addr).unwrap();
    stream.set_nodelay(true).unwrap();
    // The first exchange pays the handshake's round trip too.
    let first = exchange(&mut stream, b"hello");
    assert!(
        first >= 2 * rtt,
        "first exchange took {first:?}, under 2 x {rtt:?}"
    );
    for _ in 0..5 {
        let took = exchange(&mut stream, b"ping");
        assert!(
            took >= rtt,
            "an exchange took {took:?}, under the {rtt:?} round trip"
        );
    }
}

#[test]
fn a_long_stream_through_the_proxy_keeps_its_throughput() {
    // Paying 10 ms per 64 KiB read would cap this at 6.5 MB/s; the queue pays the delay
    // once per round trip.
    let rtt = Duration::from_millis(20);
    let proxy = DelayProxy::start(echo_server(), rtt).unwrap();
    let stream = TcpStream::connect(proxy.addr).unwrap();
    let mut reader = stream.try_clone().unwrap();
    let total = 64usize << 20;
    let started = Instant::now();
    let sender = std::thread::spawn(move || {
        let mut stream = stream;
        let chunk: Vec<u8> = (0..1 << 16).map(|i| (i % 251) as u8).collect();
        for _ in 0..total / chunk.len() {
            stream.write_all(&chunk).unwrap();
        }
        stream.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    let mut position = 0usize;
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        for (i, b) in buf[..n].iter().enumerate() {
            assert_eq!(
                *b,
                ((position + i) % (1 << 16) % 251) as u8,
                "byte {}",
                position + i
            );
        }
        position += n;
        received += n;
    }
    sender.join().unwrap();
    let took = started.elapsed();
    assert_eq!(received, total, "the echo lost bytes");
    assert_eq!(proxy.connections(), 1);
    assert_eq!(
        proxy.bytes(),
        2 * total as u64,
        "both directions are counted"
    );
    let rate = total as f64 / took.as_secs_f64() / 1e6;
    assert!(
        rate > 20.0,
        "64 MiB echoed through a {rtt:?} proxy in {took:?}: {rate:.1} MB/s"
    );
    assert!(
        took >= rtt,
        "the stream took {took:?}, under one round trip"
    );
}

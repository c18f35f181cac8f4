//! The bench's delay proxy (tests/support/delay_proxy.rs): it adds its round-trip time
//! to every exchange, and a long stream goes through it whole, in order and counted.
//! Its throughput (the delay paid once per round trip, not per chunk read) is measured
//! by the bench's `latency` section, not asserted here: a timed upper bound would fail
//! on a loaded machine.

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
    // Timed from before the connect: the proxy counts the handshake's round trip from
    // its accept, which may come before anything this thread does after connecting.
    let connecting = Instant::now();
    let mut stream = TcpStream::connect(proxy.addr).unwrap();
    stream.set_nodelay(true).unwrap();
    // The first exchange pays the handshake's round trip too.
    let first = connecting.elapsed() + exchange(&mut stream, b"hello");
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
fn a_long_stream_through_the_proxy_arrives_whole_in_order_and_counted() {
    let rtt = Duration::from_millis(200);
    let proxy = DelayProxy::start(echo_server(), rtt).unwrap();
    let total = 32usize << 20;
    let sent: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
    // Timed from before the connect (the handshake's round trip counts from the
    // proxy's accept; building the data after connecting once hid part of it).
    let started = Instant::now();
    let stream = TcpStream::connect(proxy.addr).unwrap();
    let mut reader = stream.try_clone().unwrap();
    let sender = std::thread::spawn({
        let sent = sent.clone();
        move || {
            let mut stream = stream;
            stream.write_all(&sent).unwrap();
            stream.shutdown(std::net::Shutdown::Write).unwrap();
        }
    });
    let mut received = Vec::with_capacity(total);
    reader.read_to_end(&mut received).unwrap();
    let took = started.elapsed();
    sender.join().unwrap();
    assert!(received == sent, "the echo changed or lost bytes");
    assert_eq!(proxy.connections(), 1);
    assert_eq!(
        proxy.bytes(),
        2 * total as u64,
        "both directions are counted"
    );
    assert!(
        took >= 2 * rtt,
        "the stream took {took:?}, under the handshake's and its own round trip"
    );
}

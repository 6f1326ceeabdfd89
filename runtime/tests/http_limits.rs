//! runtime::http against real sockets: a client that connects and sends nothing is dropped
//! after the header-read timeout, connections over the cap are closed at once and counted,
//! and the port keeps answering real requests throughout.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use runtime::http::{Limits, serve};
use tokio_util::sync::CancellationToken;

/// Reads until the server closes the connection; true when it did within `limit`.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {} // hyper may answer 408 before closing
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true, // reset
        }
    }
}

fn get_ok(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_dropped_and_the_cap_holds() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let refused = prometheus::IntCounter::new("refused", "refused").unwrap();
    let router =
        Router::new().route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>| async move {
                peer.ip().to_string()
            }),
        );
    let limits = Limits {
        max_connections: 3,
        header_read_timeout: Duration::from_millis(500),
        refused: Some(refused.clone()),
    };
    let cancel = CancellationToken::new();
    let server = tokio::spawn(serve(listener, router, limits, cancel.clone()));

    tokio::task::spawn_blocking(move || {
        // The handler sees the peer's address.
        assert!(get_ok(port).ends_with("127.0.0.1"), "ConnectInfo reaches the handler");

        // Three silent connections fill the cap; a fourth is closed at once and counted.
        let mut silent: Vec<TcpStream> =
            (0..3).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(100));
        let mut over = TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert!(closed_within(&mut over, Duration::from_millis(300)), "the cap did not hold");
        assert_eq!(refused.get(), 1);

        // The silent ones are dropped after the header-read timeout, which frees the port.
        let t = Instant::now();
        for s in &mut silent {
            assert!(closed_within(s, Duration::from_secs(3)), "a silent client was kept");
        }
        assert!(t.elapsed() < Duration::from_secs(3));
        // A client that trickles its headers is dropped too.
        let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
        slow.write_all(b"GET /peer HTTP/1.1\r\n").unwrap();
        assert!(closed_within(&mut slow, Duration::from_secs(3)), "a slow client was kept");
        assert!(get_ok(port).contains("200 OK"), "the port answers again");
    })
    .await
    .unwrap();

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(7), server).await.unwrap().unwrap().unwrap();
}

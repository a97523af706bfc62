//! The request-head deadline of the server's own listener: silent and slow clients are
//! closed, counted, and do not hold the node's descriptors; a prompt upgrade still works.

use std::time::{Duration, Instant};

use crosswire::ServerConfig;
use crosswire_testkit::{spawn_server, wait_until, RawClient, TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection; returns how long that took.
async fn closed_after(mut stream: TcpStream, started: Instant) -> Duration {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(TIMEOUT, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the server kept a silent connection open for {TIMEOUT:?}"),
        }
    }
}

#[tokio::test]
async fn silent_and_slow_clients_are_closed_after_the_handshake_timeout() {
    let timeout = Duration::from_millis(300);
    let (server, addr) =
        spawn_server(ServerConfig::default().with_handshake_timeout(timeout)).await;
    let started = Instant::now();
    let silent = TcpStream::connect(addr).await.unwrap();
    let mut slow = TcpStream::connect(addr).await.unwrap();
    // Half a request head, then nothing (slowloris).
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgr")
        .await
        .unwrap();
    let (silent_after, slow_after) =
        tokio::join!(closed_after(silent, started), closed_after(slow, started));
    for after in [silent_after, slow_after] {
        assert!(
            after >= timeout,
            "closed after {after:?}, before the timeout"
        );
    }
    assert!(wait_until(TIMEOUT, || server.stats().handshake_timeouts == 2).await);
    // A client that upgrades promptly is unaffected, and stays past the deadline.
    let mut client = RawClient::connect(addr, "/").await.unwrap();
    tokio::time::sleep(timeout * 2).await;
    client
        .sync("")
        .await
        .expect("an upgraded socket was closed by the head deadline");
    assert_eq!(server.connection_count(), 1);
}

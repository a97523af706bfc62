//! Life cycle: protocol ping sweep, background sockets, graceful shutdown, slow clients.

use std::time::{Duration, Instant};

use crosswire::system::{Close, ServerClosed};
use crosswire::{close_code, Ack, Payload, ServerConfig, SlowClientPolicy, Socket};
use crosswire_testkit::{
    install_relay, recv_within, spawn_server, wait_until, RawClient, RawOptions, TIMEOUT,
};
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_sweep_terminates_a_client_that_does_not_pong() {
    let interval = Duration::from_millis(150);
    let (server, addr) =
        spawn_server(ServerConfig::default().with_server_ping_interval(interval)).await;
    install_relay(&server);
    let (tx, mut closes) = mpsc::unbounded_channel();
    server.on_system(move |close: Close, socket: Socket| {
        let _ = tx.send((socket.conn_id(), close.code));
    });
    let mut ponger = RawClient::connect_bound(addr, "ponger").await.unwrap();
    let silent_options = RawOptions {
        auto_pong: false,
        ..RawOptions::default()
    };
    let mut silent = RawClient::connect_with(addr, "/?id=silent", silent_options)
        .await
        .unwrap();
    silent.sync("").await.unwrap();
    let silent_conn = server.socket("silent").unwrap().conn_id();
    // Dropped without a close handshake, after one unanswered ping.
    assert!(silent.expect_eof(TIMEOUT).await, "silent client terminated");
    assert!(silent.pings_received() >= 1);
    let (conn, _) = recv_within(&mut closes, TIMEOUT).await.unwrap();
    assert_eq!(conn, silent_conn);
    assert_eq!(server.stats().ping_timeouts, 1);
    // The client that answers survives sweep after sweep.
    let pings = ponger.pings_received();
    assert!(wait_until(TIMEOUT, || ponger.pings_received() >= pings + 3).await);
    ponger.sync("").await.unwrap();
    assert_eq!(server.connection_count(), 1);
    assert_eq!(server.stats().ping_timeouts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_sockets_close_after_the_configured_time() {
    let after = Duration::from_millis(200);
    let (server, addr) =
        spawn_server(ServerConfig::default().with_enter_background_close_time(after)).await;
    install_relay(&server);
    server.on("background", |socket: Socket, payload: Payload| {
        let on: bool = payload.parse().unwrap_or(false);
        socket.set_background(on);
        Ack(socket.is_background())
    });
    let set = |on: bool| format!(r#"{{"event":"background","payload":{on}}}"#);

    let mut leaving = RawClient::connect_bound(addr, "leaving").await.unwrap();
    let mut back = RawClient::connect_bound(addr, "back").await.unwrap();
    let mut twice = RawClient::connect_bound(addr, "twice").await.unwrap();
    let start = Instant::now();
    leaving.send_text(&set(true)).await.unwrap();
    back.send_text(&set(true)).await.unwrap();
    back.send_text(&set(false)).await.unwrap();
    // Back in foreground, then in background again: only the second timer counts.
    twice.send_text(&set(true)).await.unwrap();
    twice.send_text(&set(false)).await.unwrap();
    twice.send_text(&set(true)).await.unwrap();
    back.sync("").await.unwrap();
    twice.sync("").await.unwrap();
    assert!(!server.socket("back").unwrap().is_background());

    assert_eq!(
        leaving.expect_close(TIMEOUT).await,
        Some((1000, "background timeout".to_string()))
    );
    assert!(start.elapsed() >= after);
    assert_eq!(twice.expect_close(TIMEOUT).await.map(|c| c.0), Some(1000));
    // The foreground socket stays: wait well past the close time, then talk to it.
    tokio::time::sleep(after * 3).await;
    back.sync("").await.unwrap();
    assert!(server.socket("back").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_closes_every_socket_with_1001_and_refuses_new_ones() {
    let close_timeout = Duration::from_secs(1);
    let (server, addr) =
        spawn_server(ServerConfig::default().with_close_timeout(close_timeout)).await;
    install_relay(&server);
    let (tx, mut closed) = mpsc::unbounded_channel();
    server.on_system(move |_: ServerClosed| {
        let _ = tx.send(());
    });
    let mut clients = Vec::new();
    for id in ["a", "b", "c"] {
        clients.push(RawClient::connect_bound(addr, id).await.unwrap());
    }
    // One client that never reads (and so never answers the close): dropped at the timeout.
    let stalled_options = RawOptions {
        reading: false,
        ..RawOptions::default()
    };
    let mut stalled = RawClient::connect_with(addr, "/?id=stalled", stalled_options)
        .await
        .unwrap();
    assert!(wait_until(TIMEOUT, || server.connection_count() == 4).await);

    let start = Instant::now();
    server.shutdown().await;
    let took = start.elapsed();
    assert!(
        took < close_timeout + Duration::from_millis(500),
        "shutdown took {took:?}"
    );
    // Sockets still open at the timeout are terminated as shutdown returns; their tasks
    // finish (and leave the registry) right after.
    assert!(wait_until(TIMEOUT, || server.connection_count() == 0).await);
    assert_eq!(recv_within(&mut closed, TIMEOUT).await, Some(()));
    for client in &mut clients {
        assert_eq!(
            client.expect_close(TIMEOUT).await.map(|c| c.0),
            Some(close_code::GOING_AWAY)
        );
        assert!(client.expect_eof(TIMEOUT).await);
    }
    stalled.resume_reading();
    assert!(stalled.expect_eof(TIMEOUT).await);
    assert!(
        RawClient::connect(addr, "/?id=late").await.is_err(),
        "no connection after shutdown"
    );
    assert!(server.is_shutting_down());
    // A second shutdown is a no-op.
    server.shutdown().await;
}

/// Sends `chunk` to everyone until `done` holds, letting `fast` read each one; returns how
/// many were sent.
async fn fill_until(
    server: &crosswire::Server,
    fast: &mut RawClient,
    chunk: &str,
    done: impl Fn(&crosswire::Server) -> bool,
) -> usize {
    for sent in 1..=4000 {
        server.to_all().emit("fill", chunk).unwrap();
        let got = fast
            .recv_text(TIMEOUT)
            .await
            .expect("the fast client reads");
        assert_eq!(
            got.len(),
            chunk.len() + r#"{"event":"fill","payload":""}"#.len()
        );
        if done(server) {
            return sent;
        }
    }
    panic!("the slow client's queue never filled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_is_disconnected_while_others_keep_receiving() {
    let config = ServerConfig::default()
        .with_max_queue_bytes(64 << 10)
        .with_slow_client_policy(SlowClientPolicy::Disconnect);
    let (server, addr) = spawn_server(config).await;
    install_relay(&server);
    let (tx, mut closes) = mpsc::unbounded_channel();
    server.on_system(move |close: Close, socket: Socket| {
        let _ = tx.send((socket.id(), close.code));
    });
    let mut fast = RawClient::connect_bound(addr, "fast").await.unwrap();
    let slow_options = RawOptions {
        reading: false,
        recv_buffer: Some(4096),
        ..RawOptions::default()
    };
    let mut slow = RawClient::connect_with(addr, "/?id=slow", slow_options)
        .await
        .unwrap();
    assert!(wait_until(TIMEOUT, || server.socket("slow").is_some()).await);
    let chunk = "s".repeat(16 << 10);
    fill_until(&server, &mut fast, &chunk, |s| {
        s.stats().slow_disconnects == 1
    })
    .await;
    let (id, code) = recv_within(&mut closes, TIMEOUT).await.unwrap();
    // The close event still names the id the socket had.
    assert_eq!(id.as_deref(), Some("slow"));
    assert_eq!(code, close_code::SEND_QUEUE_FULL);
    assert!(server.socket("slow").is_none());
    // The fast client goes on as before.
    server.to("fast").emit("after", &1).unwrap();
    assert_eq!(
        fast.recv_text(TIMEOUT).await.as_deref(),
        Some(r#"{"event":"after","payload":1}"#)
    );
    assert_eq!(server.connection_count(), 1);
    slow.resume_reading();
    assert!(slow.expect_eof(TIMEOUT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_newest_keeps_a_slow_client_and_counts_drops() {
    let config = ServerConfig::default()
        .with_max_queue_bytes(64 << 10)
        .with_slow_client_policy(SlowClientPolicy::DropNewest);
    let (server, addr) = spawn_server(config).await;
    install_relay(&server);
    let mut fast = RawClient::connect_bound(addr, "fast").await.unwrap();
    let slow_options = RawOptions {
        reading: false,
        recv_buffer: Some(4096),
        ..RawOptions::default()
    };
    let mut slow = RawClient::connect_with(addr, "/?id=slow", slow_options)
        .await
        .unwrap();
    assert!(wait_until(TIMEOUT, || server.socket("slow").is_some()).await);
    let chunk = "d".repeat(16 << 10);
    let sent = fill_until(&server, &mut fast, &chunk, |s| {
        s.stats().dropped_messages > 0
    })
    .await;
    let stats = server.stats();
    assert_eq!(stats.slow_disconnects, 0);
    assert_eq!(stats.connections, 2);
    assert!(!server.socket("slow").unwrap().is_closed());
    // Once it reads again it gets what was queued (not the dropped ones) and works.
    slow.resume_reading();
    let mut received = 0;
    while let Some(text) = slow.recv_text(TIMEOUT).await {
        if text.is_empty() {
            break;
        }
        received += 1;
        if received == 1 {
            // Ask for the heartbeat echo: it comes after everything queued.
            slow.send_text("").await.unwrap();
        }
    }
    assert!(received > 0 && received < sent, "{received} of {sent}");
    slow.sync("").await.unwrap();
}

//! Limits under abuse, each with a real client over loopback: the `Origin` allowlist (403),
//! the maximum of connections (503, slot freed on close), the unbound timeout (1008) and the
//! per-connection rate limit (drop with an error event, or close with 1008).

use std::time::Duration;

use crosswire::system::{Connection, SocketError};
use crosswire::{
    close_code, Ack, Payload, RateLimit, RateLimitPolicy, Server, ServerConfig, Socket,
};
use crosswire_testkit::{
    install_relay, spawn_server, wait_until, ConnectError, RawClient, RawOptions, TIMEOUT,
};
use serde_json::json;

fn with_headers(headers: &'static [(&'static str, &'static str)]) -> RawOptions {
    RawOptions {
        headers,
        ..RawOptions::default()
    }
}

fn refused_with(result: Result<RawClient, ConnectError>) -> Option<u16> {
    match result {
        Err(ConnectError::Http(status)) => Some(status),
        _ => None,
    }
}

#[tokio::test]
async fn an_origin_outside_the_allowlist_is_refused_before_the_upgrade() {
    let config = ServerConfig::default()
        .with_allowed_origins(["https://app.example.com", "https://*.example.org"]);
    let (server, addr) = spawn_server(config).await;
    let evil = RawClient::connect_with(
        addr,
        "/",
        with_headers(&[("Origin", "https://evil.example")]),
    );
    assert_eq!(refused_with(evil.await), Some(403));
    let mut kept = Vec::new();
    for origin in ["https://app.example.com", "https://chat.example.org"] {
        let headers: &'static [(&'static str, &'static str)] = match origin {
            "https://app.example.com" => &[("Origin", "https://app.example.com")],
            _ => &[("Origin", "https://chat.example.org")],
        };
        let client = RawClient::connect_with(addr, "/", with_headers(headers)).await;
        kept.push(client.unwrap_or_else(|e| panic!("{origin} refused: {e}")));
    }
    // Not a browser: no Origin header at all.
    kept.push(
        RawClient::connect(addr, "/")
            .await
            .expect("no Origin refused"),
    );
    assert_eq!(server.stats().refused_origin, 1);
    assert!(wait_until(TIMEOUT, || server.connection_count() == 3).await);
}

#[tokio::test]
async fn past_the_maximum_upgrades_get_503_until_a_slot_is_freed() {
    let (server, addr) = spawn_server(ServerConfig::default().with_max_connections(2)).await;
    install_relay(&server);
    let first = RawClient::connect_bound(addr, "a").await.unwrap();
    let _second = RawClient::connect_bound(addr, "b").await.unwrap();
    assert_eq!(
        refused_with(RawClient::connect(addr, "/?id=c").await),
        Some(503)
    );
    assert_eq!(
        refused_with(RawClient::connect(addr, "/?id=c").await),
        Some(503)
    );
    assert_eq!(server.stats().refused_capacity, 2);
    // A closed connection gives its slot back.
    first.send_close(1000, "bye").await.unwrap();
    assert!(wait_until(TIMEOUT, || server.connection_count() == 1).await);
    let mut third = None;
    for _ in 0..50 {
        if let Ok(client) = RawClient::connect_bound(addr, "c").await {
            third = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(third.is_some(), "the freed slot was not given back");
}

#[tokio::test]
async fn a_socket_never_bound_is_closed_after_the_unbound_timeout() {
    let config = ServerConfig::default().with_unbound_timeout(Some(Duration::from_millis(300)));
    let (server, addr) = spawn_server(config).await;
    // Binds from `?id=` when there is one, and leaves other sockets unbound.
    server.on_system(|_: Connection, server: Server, socket: Socket| {
        if let Some(id) = socket.query("id") {
            server.bind(id, &socket);
        }
    });
    let started = std::time::Instant::now();
    let mut anonymous = RawClient::connect(addr, "/").await.unwrap();
    let mut bound = RawClient::connect_bound(addr, "someone").await.unwrap();
    let close = anonymous.expect_close(TIMEOUT).await;
    assert_eq!(
        close,
        Some((
            close_code::POLICY_VIOLATION,
            "not bound in time".to_string()
        ))
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(server.stats().unbound_timeouts, 1);
    // The bound socket stays: it still answers well after the timeout.
    tokio::time::sleep(Duration::from_millis(500)).await;
    bound.sync("").await.expect("the bound socket was closed");
}

/// A server whose `echo` answers with its payload, counting `error` events.
async fn echo_server(
    limit: RateLimit,
) -> (
    Server,
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (server, addr) = spawn_server(ServerConfig::default().with_rate_limit(limit)).await;
    server.on("echo", |payload: Payload| Ack(payload));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    server.on_system(move |error: SocketError| {
        let _ = tx.send(error.error);
    });
    (server, addr, rx)
}

#[tokio::test]
async fn messages_over_the_rate_limit_are_dropped_with_an_error_event() {
    // 5 at once, then 1 per second: of 20 sent back to back, about 5 are answered.
    let (server, addr, mut errors) = echo_server(RateLimit::new(1.0, 5)).await;
    let mut client = RawClient::connect(addr, "/").await.unwrap();
    for n in 0..20 {
        let frame = json!({"event": "echo", "payload": n, "callbackId": n.to_string()});
        client.send_json(&frame).await.unwrap();
    }
    let mut answered = Vec::new();
    while let Some(reply) = client.recv_json(Duration::from_millis(500)).await {
        answered.push(reply["callbackId"].as_str().unwrap_or_default().to_string());
    }
    assert!((5..=6).contains(&answered.len()), "answered {answered:?}");
    assert_eq!(answered[..5], ["0", "1", "2", "3", "4"]);
    let limited = server.stats().rate_limited;
    assert_eq!(limited as usize, 20 - answered.len());
    let first_error = errors.recv().await.unwrap();
    assert!(first_error.contains("rate limit"), "{first_error}");
    // The connection stays, and is served again once the bucket refilled.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    client
        .send_json(&json!({"event": "echo", "payload": "again", "callbackId": "x"}))
        .await
        .unwrap();
    let reply = client
        .recv_json(TIMEOUT)
        .await
        .expect("no answer after refill");
    assert_eq!(reply, json!({"callbackId": "x", "payload": "again"}));
}

#[tokio::test]
async fn the_byte_limit_counts_message_sizes() {
    // Plenty of messages, but 300 bytes at once: two 120-byte messages pass, a third not.
    let limit = RateLimit::new(1000.0, 1000).with_bytes(1.0, 300);
    let (server, addr, _errors) = echo_server(limit).await;
    let mut client = RawClient::connect(addr, "/").await.unwrap();
    let padding = "x".repeat(64);
    for n in 0..3 {
        let frame = json!({"event": "echo", "payload": padding, "callbackId": n.to_string()});
        assert!(frame.to_string().len() > 100 && frame.to_string().len() < 150);
        client.send_json(&frame).await.unwrap();
    }
    let mut answered = 0;
    while client.recv_json(Duration::from_millis(500)).await.is_some() {
        answered += 1;
    }
    assert_eq!(answered, 2);
    assert_eq!(server.stats().rate_limited, 1);
}

#[tokio::test]
async fn the_close_policy_closes_with_1008() {
    let limit = RateLimit::new(1.0, 3).with_policy(RateLimitPolicy::Close);
    let (server, addr, _errors) = echo_server(limit).await;
    let mut client = RawClient::connect(addr, "/").await.unwrap();
    for n in 0..10 {
        let frame = json!({"event": "echo", "payload": n});
        if client.send_json(&frame).await.is_err() {
            break;
        }
    }
    let close = client.expect_close(TIMEOUT).await;
    assert_eq!(
        close,
        Some((
            close_code::POLICY_VIOLATION,
            "rate limit exceeded".to_string()
        ))
    );
    assert_eq!(server.stats().rate_limited, 1);
    assert!(wait_until(TIMEOUT, || server.connection_count() == 0).await);
}

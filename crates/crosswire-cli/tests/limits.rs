//! `crosswire serve`'s limit flags: the origin allowlist, the maximum of connections and the
//! rate limit, against the real binary.

mod common;

use common::Relay;
use crosswire_testkit::{ConnectError, RawClient, RawOptions, TIMEOUT};
use serde_json::json;

fn status(result: Result<RawClient, ConnectError>) -> Option<u16> {
    match result {
        Err(ConnectError::Http(status)) => Some(status),
        Ok(_) => Some(101),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_enforces_origin_and_connection_limits() {
    let relay = Relay::start(&[
        "--allowed-origin",
        "https://ok.example",
        "--max-connections",
        "1",
    ])
    .await;
    let foreign = RawOptions {
        headers: &[("Origin", "https://evil.example")],
        ..RawOptions::default()
    };
    let refused = RawClient::connect_with(relay.addr, "/?id=x", foreign).await;
    assert_eq!(status(refused), Some(403));
    let _held = RawClient::connect_bound(relay.addr, "a")
        .await
        .expect("first connection");
    let second = RawClient::connect(relay.addr, "/?id=b").await;
    assert_eq!(status(second), Some(503));
    let (code, health) = relay.healthz().await;
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["stats"]["refused_origin"], json!(1), "{health}");
    assert_eq!(health["stats"]["refused_capacity"], json!(1), "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_closes_a_flooding_client_with_the_close_policy() {
    let relay = Relay::start(&[
        "--rate-limit",
        "2",
        "--rate-burst",
        "4",
        "--rate-limit-close",
    ])
    .await;
    let mut client = RawClient::connect_bound(relay.addr, "flood")
        .await
        .expect("connect");
    for n in 0..20 {
        if client
            .send_json(&json!({"event": "echo", "payload": n}))
            .await
            .is_err()
        {
            break;
        }
    }
    let close = client.expect_close(TIMEOUT).await;
    assert_eq!(close, Some((1008, "rate limit exceeded".to_string())));
    let (_, health) = relay.healthz().await;
    assert_eq!(health["stats"]["rate_limited"], json!(1), "{health}");
    // Others are not affected.
    let mut calm = RawClient::connect_bound(relay.addr, "calm")
        .await
        .expect("connect");
    calm.sync("").await.expect("calm client served");
}

/// CPU ticks (user + system, 1/100 s) the process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading /proc stat");
    // The fields after the command name (which is in parentheses and may hold spaces).
    let after = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_file_limit_the_accept_loop_backs_off_logs_once_and_recovers() {
    // A node allowed 48 descriptors, whose silent connections are closed after 1 s.
    let relay = Relay::start_limited(48, &["--handshake-timeout", "1"]).await;
    let mut silent = Vec::new();
    for _ in 0..80 {
        silent.push(
            tokio::net::TcpStream::connect(relay.addr)
                .await
                .expect("connect"),
        );
    }
    relay
        .wait_log("the accept error", |l| {
            l.contains("accepting connections fails")
        })
        .await;
    // At the limit, the loop backs off instead of spinning on EMFILE.
    let before = cpu_ticks(relay.pid());
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let used = cpu_ticks(relay.pid()) - before;
    assert!(
        used < 25,
        "{used} ticks in 0.5 s at the file limit: the accept loop spins"
    );
    // Logged once for the burst, not once per attempt.
    let logged = relay
        .lines()
        .iter()
        .filter(|l| l.contains("accepting connections fails"))
        .count();
    assert_eq!(logged, 1, "the accept error was logged {logged} times");
    // The silent ones time out (or are dropped here); then a real client is served.
    drop(silent);
    let mut client = None;
    for _ in 0..100 {
        if let Ok(c) = RawClient::connect_bound(relay.addr, "real").await {
            client = Some(c);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut client = client.expect("no client served after the burst");
    client.sync("").await.expect("served");
    let (_, health) = relay.healthz().await;
    assert!(
        health["stats"]["accept_errors"].as_u64() > Some(0),
        "{health}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_negotiates_permessage_deflate_when_asked() {
    let offer = RawOptions {
        headers: &[(
            "Sec-WebSocket-Extensions",
            "permessage-deflate; client_max_window_bits",
        )],
        ..RawOptions::default()
    };
    // Off by default: the offer is declined.
    let plain = Relay::start(&[]).await;
    let c = RawClient::connect_with(plain.addr, "/?id=a", offer)
        .await
        .expect("connect");
    assert_eq!(c.extensions(), None);

    let relay = Relay::start(&["--permessage-deflate", "--deflate-min-size", "64"]).await;
    let mut c = RawClient::connect_with(relay.addr, "/?id=a", offer)
        .await
        .expect("connect");
    c.sync("").await.expect("heartbeat echo");
    assert!(c
        .extensions()
        .is_some_and(|e| e.starts_with("permessage-deflate")));
    let data = "crosswire ".repeat(50);
    let request = json!({"event": "echo", "payload": data, "callbackId": "1"}).to_string();
    c.send_raw(&crosswire_testkit::compressed_client_frame(
        crosswire::protocol::ws::OpCode::Text,
        request.as_bytes(),
    ))
    .await
    .unwrap();
    let reply = c.recv_json(TIMEOUT).await.expect("echo reply");
    assert_eq!(reply["payload"], json!(data));
    assert_eq!(c.compressed_received(), 1);
    let (_, health) = relay.healthz().await;
    assert_eq!(health["stats"]["deflate_connections"], json!(1), "{health}");
    assert_eq!(health["stats"]["compressed_messages"], json!(1), "{health}");
}

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

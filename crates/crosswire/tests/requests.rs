//! Server → client requests (`Socket::request`, the `ackId` extension).

use std::time::Duration;

use crosswire::{RequestError, ServerConfig};
use crosswire_client::{Client, ClientConfig, EmitOptions};
use crosswire_testkit::{install_relay, spawn_server, wait_until, RawClient, TIMEOUT};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crosswire_client_answers_a_server_request() {
    let (server, addr) = spawn_server(ServerConfig::default()).await;
    install_relay(&server);
    let client =
        Client::connect(ClientConfig::new(format!("ws://{addr}/")).with_param("id", "c")).unwrap();
    client.on_request("whoami", |payload| async move {
        let asked: serde_json::Value = payload.parse().unwrap_or_default();
        json!({"name": "Sam", "asked": asked})
    });
    client.wait_open(TIMEOUT).await.unwrap();
    assert!(wait_until(TIMEOUT, || server.socket("c").is_some()).await);
    let socket = server.socket("c").unwrap();
    let answer = socket
        .request("whoami", &json!({"q": 1}), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(answer.get(), r#"{"asked":{"q":1},"name":"Sam"}"#);
    // Concurrent requests on one socket are matched to their own answers.
    client.on_request_sync("double", |payload| payload.parse::<i64>().unwrap_or(0) * 2);
    let requests = (0..20).map(|n| {
        let socket = socket.clone();
        async move { socket.request("double", &n, TIMEOUT).await }
    });
    let answers = futures_util::future::join_all(requests).await;
    for (n, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.unwrap().get(), (n * 2).to_string());
    }
    // The client's own requests still work alongside.
    let response = client
        .request("echo", &json!([1, 2]), EmitOptions::new())
        .await;
    assert_eq!(
        response.data().map(|p| p.get().to_string()),
        Some("[1,2]".into())
    );
    client.manual_close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_client_sees_an_event_and_the_request_times_out() {
    let (server, addr) = spawn_server(ServerConfig::default()).await;
    install_relay(&server);
    let mut raw = RawClient::connect_bound(addr, "old").await.unwrap();
    let socket = server.socket("old").unwrap();
    let request = tokio::spawn(async move {
        socket
            .request("ask", &json!({"q": "?"}), Duration::from_millis(300))
            .await
    });
    let frame = raw.recv_json(TIMEOUT).await.unwrap();
    assert_eq!(frame["event"], "ask");
    assert_eq!(frame["payload"], json!({"q": "?"}));
    assert!(frame["ackId"].is_string(), "{frame}");
    let result = request.await.unwrap();
    assert!(
        matches!(result, Err(RequestError::Timeout(d)) if d == Duration::from_millis(300)),
        "{result:?}"
    );
    // A late answer to a forgotten request is ignored; the connection keeps working.
    raw.send_json(&json!({"ackId": frame["ackId"], "payload": 1}))
        .await
        .unwrap();
    raw.sync("").await.unwrap();
    assert_eq!(server.stats().malformed_frames, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_ack_frame_resolves_the_request() {
    let (server, addr) = spawn_server(ServerConfig::default()).await;
    install_relay(&server);
    let mut raw = RawClient::connect_bound(addr, "r").await.unwrap();
    let socket = server.socket("r").unwrap();
    let request = tokio::spawn(async move { socket.request("ask", &1, TIMEOUT).await });
    let frame = raw.recv_json(TIMEOUT).await.unwrap();
    // An answer with someone else's ack id does not resolve it.
    raw.send_json(&json!({"ackId": "999999", "payload": "wrong"}))
        .await
        .unwrap();
    raw.send_json(&json!({"ackId": frame["ackId"], "payload": {"ok": 1}}))
        .await
        .unwrap();
    let answer = request.await.unwrap().unwrap();
    assert_eq!(answer.get(), r#"{"ok":1}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_before_the_answer_fails_the_request() {
    let (server, addr) = spawn_server(ServerConfig::default()).await;
    install_relay(&server);
    let mut raw = RawClient::connect_bound(addr, "gone").await.unwrap();
    let socket = server.socket("gone").unwrap();
    let waiting = socket.clone();
    let request = tokio::spawn(async move { waiting.request("ask", &1, TIMEOUT).await });
    assert!(raw.recv_json(TIMEOUT).await.is_some());
    raw.send_close(4001, "bye").await.unwrap();
    let result = tokio::time::timeout(TIMEOUT, request)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(result, Err(RequestError::Closed)), "{result:?}");
    // A request on a closed socket fails at once.
    assert!(wait_until(TIMEOUT, || socket.is_closed()).await);
    let result = socket.request("ask", &1, TIMEOUT).await;
    assert!(
        matches!(
            result,
            Err(RequestError::Send(_)) | Err(RequestError::Closed)
        ),
        "{result:?}"
    );
}

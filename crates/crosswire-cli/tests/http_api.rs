//! The HTTP API of `crosswire serve`: `POST /api/emit` (bearer token, every target kind, clear
//! 4xx errors) and `GET /healthz`, on the WebSocket port.

mod common;

use std::time::Duration;

use common::{Raw, Relay};
use crosswire_testkit::http_get;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends an HTTP/1.1 POST and returns the status and body.
async fn post(port: u16, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&response);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    // Bodies are small and sent in one piece (no chunked framing for fixed JSON bodies).
    let json = serde_json::from_str(body.trim()).unwrap_or(Value::Null);
    (status, json)
}

#[tokio::test]
async fn emit_reaches_each_target_kind() {
    let relay = Relay::start_with(&[], &[("CROSSWIRE_API_TOKEN", "s3cret")]).await;
    let port = relay.port();
    let mut a = Raw::connect(&relay, "a").await;
    let mut b = Raw::connect(&relay, "b").await;
    assert_eq!(
        a.request("join", json!({"room": "lobby"})).await,
        json!({"ok": true})
    );
    // Round trips make sure both are bound before the API targets them.
    assert_eq!(b.request("echo", json!(0)).await, json!(0));

    let (status, body) = post(
        port,
        "/api/emit",
        Some("s3cret"),
        r#"{"room":"lobby","event":"news","data":{"n":1}}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"], json!(true));
    assert_eq!(
        a.recv_json().await,
        json!({"event": "news", "payload": {"n": 1}})
    );

    let (status, _) = post(
        port,
        "/api/emit",
        Some("s3cret"),
        r#"{"id":"b","event":"dm","data":"hi"}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(b.recv_json().await, json!({"event": "dm", "payload": "hi"}));

    let (status, _) = post(
        port,
        "/api/emit",
        Some("s3cret"),
        r#"{"ids":["a","b"],"event":"few","data":2}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(a.recv_json().await, json!({"event": "few", "payload": 2}));
    assert_eq!(b.recv_json().await, json!({"event": "few", "payload": 2}));

    let (status, _) = post(
        port,
        "/api/emit",
        Some("s3cret"),
        r#"{"all":true,"event":"all","data":null}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        a.recv_json().await,
        json!({"event": "all", "payload": null})
    );
    assert_eq!(
        b.recv_json().await,
        json!({"event": "all", "payload": null})
    );

    // Nothing else arrived: b was not in the room.
    b.expect_nothing_more(&mut a).await;
}

#[tokio::test]
async fn bad_token_bad_body_and_api_off() {
    let relay = Relay::start_with(&[], &[("CROSSWIRE_API_TOKEN", "s3cret")]).await;
    let port = relay.port();
    let body = r#"{"all":true,"event":"x","data":1}"#;
    let (status, json) = post(port, "/api/emit", None, body).await;
    assert_eq!(status, 401);
    assert!(json["error"]
        .as_str()
        .unwrap_or("")
        .contains("Authorization"));
    let (status, _) = post(port, "/api/emit", Some("wrong"), body).await;
    assert_eq!(status, 401);
    for (bad, why) in [
        ("not json", "invalid body"),
        (r#"{"event":"x","data":1}"#, "exactly one target"),
        (r#"{"room":"r","id":"a","event":"x"}"#, "exactly one target"),
        (
            r#"{"all":true,"event":"","data":1}"#,
            "event must not be empty",
        ),
        (r#"{"all":true,"data":1}"#, "invalid body"),
        (r#"{"all":true,"event":"x","bogus":1}"#, "invalid body"),
    ] {
        let (status, json) = post(port, "/api/emit", Some("s3cret"), bad).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(json["ok"], json!(false));
        let error = json["error"].as_str().unwrap_or("");
        assert!(error.contains(why), "{bad}: {error}");
    }

    // No token configured: the API is off.
    let off = Relay::start(&[]).await;
    let (status, json) = post(off.port(), "/api/emit", Some("s3cret"), body).await;
    assert_eq!(status, 404);
    assert!(json["error"].as_str().unwrap_or("").contains("off"));
}

#[tokio::test]
async fn healthz_reports_the_node() {
    let relay = Relay::start(&["--name", "edge-7"]).await;
    let mut a = Raw::connect(&relay, "a").await;
    assert_eq!(a.request("echo", json!(1)).await, json!(1));
    let addr = format!("127.0.0.1:{}", relay.port()).parse().expect("addr");
    let (status, body) = http_get(addr, "/healthz").await.expect("get");
    assert_eq!(status, 200);
    let json: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["node"], json!("edge-7"));
    assert_eq!(json["connections"], json!(1));
    assert_eq!(json["nodes"], json!(["edge-7"]));
    assert_eq!(json["broker"], Value::Null);
    // A plain GET elsewhere is not an upgrade.
    let (status, _) = http_get(addr, "/nothing-here").await.expect("get");
    assert_eq!(status, 404);
}

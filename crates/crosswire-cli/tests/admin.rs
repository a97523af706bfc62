//! The admin dashboard of `crosswire serve`: off without a token (`/admin` 404, `/admin/ws`
//! refused), 401 on the upgrade with a wrong or missing token, and with the right one an
//! admin socket that gets `admin:overview` pushes and answers `admin:inspect` and
//! `admin:disconnect` for an application socket, never mixing with the application's sockets.

mod common;

use std::time::{Duration, Instant};

use common::{Raw, Relay};
use crosswire_testkit::{http_get, ConnectError, RawClient};
use serde_json::{json, Value};

/// The next reply to `callback_id` on an admin socket, skipping the overview pushes.
async fn reply(admin: &mut RawClient, callback_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = admin
            .recv_json(left)
            .await
            .unwrap_or_else(|| panic!("no reply to {callback_id}"));
        if got["callbackId"] == json!(callback_id) {
            return got["payload"].clone();
        }
        assert_eq!(got["event"], json!("admin:overview"), "unexpected {got}");
    }
}

/// Sends `event` with `payload` on an admin socket and waits for its reply.
async fn ask(admin: &mut RawClient, event: &str, payload: Value, callback_id: &str) -> Value {
    admin
        .send_json(&json!({"event": event, "payload": payload, "callbackId": callback_id}))
        .await
        .expect("send");
    reply(admin, callback_id).await
}

#[tokio::test]
async fn off_without_a_token() {
    let relay = Relay::start(&[]).await;
    let (status, body) = http_get(relay.addr, "/admin").await.expect("GET /admin");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("admin dashboard is off"), "{body}");
    assert!(body.contains("--admin-token"), "{body}");
    // The admin socket is refused, with or without a token, and no socket of the
    // application opens instead.
    for target in ["/admin/ws", "/admin/ws?token=anything"] {
        match RawClient::connect(relay.addr, target).await {
            Err(ConnectError::Http(404)) => {}
            Err(e) => panic!("{target}: expected 404, got {e}"),
            Ok(_) => panic!("{target}: upgraded without an admin token configured"),
        }
    }
    let (_, health) = relay.healthz().await;
    assert_eq!(health["connections"], json!(0));
    // The demo page and the application's sockets are unaffected.
    assert_eq!(http_get(relay.addr, "/").await.expect("GET /").0, 200);
    let mut c = Raw::connect(&relay, "plain").await;
    assert_eq!(c.request("echo", json!(1)).await, json!(1));
}

#[tokio::test]
async fn wrong_or_missing_token_is_refused_before_the_upgrade() {
    let relay = Relay::start(&["--admin-token", "s3cret"]).await;
    let (status, page) = http_get(relay.addr, "/admin").await.expect("GET /admin");
    assert_eq!(status, 200);
    assert!(page.contains("<title>crosswire admin</title>"), "{page}");
    for target in [
        "/admin/ws",
        "/admin/ws?token=wrong",
        "/admin/ws?token=s3cre",
        "/admin/ws?token=s3cret2",
    ] {
        match RawClient::connect(relay.addr, target).await {
            Err(ConnectError::Http(401)) => {}
            Err(e) => panic!("{target}: expected 401, got {e}"),
            Ok(_) => panic!("{target}: upgraded with a wrong token"),
        }
    }
    let (_, health) = relay.healthz().await;
    assert_eq!(health["connections"], json!(0));
}

#[tokio::test]
async fn the_admin_socket_sees_inspects_and_disconnects_the_cluster() {
    let relay =
        Relay::start_with(&["--name", "solo"], &[("CROSSWIRE_ADMIN_TOKEN", "s3cret")]).await;
    let mut alice = Raw::connect(&relay, "alice").await;
    assert_eq!(
        alice.request("join", json!({"room": "lobby"})).await,
        json!({"ok": true})
    );
    assert_eq!(alice.request("echo", json!("hi")).await, json!("hi"));

    let mut admin = RawClient::connect(relay.addr, "/admin/ws?token=s3cret")
        .await
        .expect("admin socket with the right token");

    // A push comes without asking: one node, alice its only connection (the admin socket is
    // not one of the application's).
    let deadline = Instant::now() + Duration::from_secs(5);
    let pushed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = admin.recv_json(left).await.expect("an admin:overview push");
        if got["event"] == json!("admin:overview") {
            break got["payload"].clone();
        }
    };
    let nodes = pushed.as_array().expect("an array of node summaries");
    assert_eq!(nodes.len(), 1, "{pushed}");
    assert_eq!(nodes[0]["node"], json!("solo"));
    assert_eq!(nodes[0]["stats"]["connections"], json!(1), "{pushed}");
    assert!(nodes[0]["stats"]["traffic"]["messages_in"].as_u64() >= Some(2));
    assert!(nodes[0]["at_ms"].as_u64() > Some(0));
    assert_eq!(
        nodes[0]["rooms"],
        json!([{"room": {"namespace": "relay", "id": "lobby"}, "size": 1}])
    );

    // Asked for, the overview is the same shape.
    let asked = ask(&mut admin, "admin:overview", Value::Null, "1").await;
    assert_eq!(asked[0]["node"], json!("solo"));
    assert_eq!(
        ask(&mut admin, "admin:hello", Value::Null, "2").await,
        json!({"node": "solo"})
    );

    // A bound id: its node, rooms and counters.
    let found = ask(&mut admin, "admin:inspect", json!({"id": "alice"}), "3").await;
    assert_eq!(found["node"], json!("solo"), "{found}");
    assert_eq!(
        found["rooms"],
        json!([{"namespace": "relay", "id": "lobby"}])
    );
    assert_eq!(found["socket"]["id"], json!("alice"));
    assert!(found["socket"]["traffic"]["messages_in"].as_u64() >= Some(2));
    assert!(found["socket"]["connected_at_ms"].as_u64() > Some(0));
    assert_eq!(
        ask(&mut admin, "admin:inspect", json!({"id": "nobody"}), "4").await,
        Value::Null
    );
    // An admin socket cannot reach the relay's events: its events are the dashboard's.
    admin
        .send_json(&json!({"event": "echo", "payload": 1, "callbackId": "5"}))
        .await
        .expect("send");
    let quiet = Instant::now() + Duration::from_millis(1500);
    while let Some(got) = admin
        .recv_json(quiet.saturating_duration_since(Instant::now()))
        .await
    {
        assert_ne!(
            got,
            json!({"callbackId": "5", "payload": 1}),
            "relay echo on an admin socket"
        );
    }

    // Disconnect: alice's socket closes with 4000.
    assert_eq!(
        ask(&mut admin, "admin:disconnect", json!({"id": "alice"}), "6").await,
        json!(true)
    );
    let reason = alice.expect_close(4000).await;
    assert_eq!(reason, "disconnected by an operator");
    assert_eq!(
        ask(&mut admin, "admin:disconnect", json!({"id": "alice"}), "7").await,
        json!(false)
    );
}

//! Runs the single-server examples for real, on free ports, and checks what they print and
//! answer: `server` with the `client` binary, `auth` and `axum_mount` with a raw client.

#[path = "../../support/process.rs"]
mod process;

use std::net::SocketAddr;
use std::time::Duration;

use crosswire_testkit::{http_get, ConnectError, RawClient};
use process::{Proc, WAIT};
use serde_json::{json, Value};

/// Sends request `event` with `payload` and returns the answer's payload.
async fn request(client: &mut RawClient, event: &str, payload: Value) -> Value {
    let frame = json!({"event": event, "payload": payload, "callbackId": "1"});
    client.send_json(&frame).await.expect("sent");
    let answer = client.recv_json(WAIT).await.expect("an answer");
    assert_eq!(answer["callbackId"], "1", "{answer}");
    answer["payload"].clone()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("tokio runtime")
}

#[test]
fn server_and_client() {
    let server = Proc::spawn(
        "server",
        env!("CARGO_BIN_EXE_server"),
        &["--port", "0", "--broadcast-every", "1", "--room-every", "1"],
    );
    let port = server.listening_addr().port().to_string();
    let client = Proc::spawn(
        "client",
        env!("CARGO_BIN_EXE_client"),
        &["--port", &port, "--id", "7"],
    );

    client.wait_line(&["connected"]);
    client.wait_line(&["say answered", "I am a callback for your say event"]);
    client.wait_line(&["joinRoom answered", "JoinRoom successfully"]);
    // The periodic sends: to the room the client joined, and to everyone.
    client.wait_line(&["roomSay", "This is a message sent to the test room"]);
    client.wait_line(&["serverSay", "I'm sending this message to everyone"]);

    server.wait_line(&["client connected", r#""id": "7""#, r#""name": "Sam""#]);
    server.wait_line(&[
        "server: say",
        r#"id=Some("7")"#,
        "msg=I am a client with ID: 7",
    ]);
    drop(client);
    server.wait_line(&["client disconnected", r#"id=Some("7")"#]);
}

#[test]
fn auth_checks_the_token_before_the_upgrade() {
    let auth = Proc::spawn("auth", env!("CARGO_BIN_EXE_auth"), &["--port", "0"]);
    let addr = auth.listening_addr();
    runtime().block_on(async {
        for target in ["/ws?token=wrong", "/ws"] {
            match RawClient::connect(addr, target).await {
                Err(ConnectError::Http(401)) => {}
                other => panic!("{target}: expected HTTP 401, got {other:?}"),
            }
        }
        let mut client = RawClient::connect(addr, "/ws?token=secret-7")
            .await
            .expect("connects with a valid token");
        // Answered from the `User` that `WsUpgrade` put into the socket's extensions.
        let user = request(&mut client, "whoami", Value::Null).await;
        assert_eq!(user, json!({"id": "7", "name": "user 7"}));
    });
    auth.wait_lines(2, &["upgrade refused: invalid token"]);
    // Bound to the user's id before the connection event.
    auth.wait_line(&[
        "authenticated user connected",
        r#"id=Some("7")"#,
        "name=user 7",
    ]);
}

async fn stats(addr: SocketAddr) -> Value {
    let (status, body) = http_get(addr, "/stats").await.expect("GET /stats");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn axum_mount_serves_http_and_websocket_on_one_port() {
    let app = Proc::spawn(
        "axum_mount",
        env!("CARGO_BIN_EXE_axum_mount"),
        &["--port", "0"],
    );
    let addr = app.listening_addr();
    runtime().block_on(async {
        assert_eq!(stats(addr).await["connections"], 0);
        let mut client = RawClient::connect(addr, "/ws?id=1")
            .await
            .expect("connects");
        let payload = json!({"hello": "world", "n": [1, 2]});
        assert_eq!(request(&mut client, "echo", payload.clone()).await, payload);
        let stats = stats(addr).await;
        assert_eq!(stats["connections"], 1, "{stats}");
        assert_eq!(stats["bound_ids"], 1, "{stats}");
        drop(client);
        // The connection is gone soon after the client is.
        let deadline = tokio::time::Instant::now() + WAIT;
        while self::stats(addr).await["connections"] != 0 {
            assert!(tokio::time::Instant::now() < deadline, "still connected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

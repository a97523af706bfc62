//! Wire compatibility with seed clients: hand-written frames in, exact frames out.

use std::time::Duration;

use crosswire::system::{ClientPing, Close, Connection};
use crosswire::{Ack, Payload, Server, ServerConfig, Socket};
use crosswire_testkit::{install_relay, recv_within, spawn_server, RawClient, TIMEOUT};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// A server with the seed README's `say` handler: replies with the payload it got.
async fn say_server(config: ServerConfig) -> (Server, std::net::SocketAddr) {
    let (server, addr) = spawn_server(config).await;
    install_relay(&server);
    server.on("say", |payload: Payload| Ack(payload));
    (server, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_with_callback_id_gets_exactly_the_seed_reply() {
    let (_server, addr) = say_server(ServerConfig::default()).await;
    let mut c = RawClient::connect(addr, "/?id=1").await.unwrap();
    c.send_text(r#"{"event":"say","payload":{"msg":"hi","n":[1,2.5,null]},"callbackId":"17"}"#)
        .await
        .unwrap();
    assert_eq!(
        c.recv_text(TIMEOUT).await.as_deref(),
        Some(r#"{"callbackId":"17","payload":{"msg":"hi","n":[1,2.5,null]}}"#)
    );
    // Field order does not matter to the server; a missing payload is null.
    c.send_text(r#"{"callbackId":"18","event":"say"}"#)
        .await
        .unwrap();
    assert_eq!(
        c.recv_text(TIMEOUT).await.as_deref(),
        Some(r#"{"callbackId":"18","payload":null}"#)
    );
    // A callbackId that needs escaping comes back escaped, as valid JSON.
    c.send_text(r#"{"event":"say","payload":"x","callbackId":"a\"b\\c\u00e9"}"#)
        .await
        .unwrap();
    let reply = c.recv_json(TIMEOUT).await.unwrap();
    assert_eq!(reply, json!({"callbackId": "a\"b\\cé", "payload": "x"}));
    // 64 characters (not bytes) is the longest callbackId accepted.
    let id64 = "é".repeat(64);
    c.send_text(&format!(
        r#"{{"event":"say","payload":1,"callbackId":"{id64}"}}"#
    ))
    .await
    .unwrap();
    assert_eq!(
        c.recv_json(TIMEOUT).await.unwrap(),
        json!({"callbackId": id64, "payload": 1})
    );
    // Without a callbackId nothing is sent back.
    c.send_text(r#"{"event":"say","payload":1}"#).await.unwrap();
    assert_eq!(c.drain_until_heartbeat("").await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_events_are_exactly_event_and_payload() {
    let (server, addr) = say_server(ServerConfig::default()).await;
    let mut c = RawClient::connect_bound(addr, "7").await.unwrap();
    server.to("7").emit("x", &json!({"a": 1})).unwrap();
    assert_eq!(
        c.recv_text(TIMEOUT).await.as_deref(),
        Some(r#"{"event":"x","payload":{"a":1}}"#)
    );
    let raw = serde_json::value::RawValue::from_string(r#"{"z": [true]}"#.to_string()).unwrap();
    server.to("7").emit_raw("x", &raw).unwrap();
    assert_eq!(
        c.recv_text(TIMEOUT).await.as_deref(),
        Some(r#"{"event":"x","payload":{"z": [true]}}"#)
    );
    server
        .socket("7")
        .unwrap()
        .emit("ünïcode \"name\"", "text")
        .unwrap();
    assert_eq!(
        c.recv_json(TIMEOUT).await.unwrap(),
        json!({"event": "ünïcode \"name\"", "payload": "text"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_heartbeat_is_the_empty_string_and_raises_client_ping() {
    let (server, addr) = say_server(ServerConfig::default()).await;
    let (tx, mut pings) = mpsc::unbounded_channel();
    server.on_system(move |_: ClientPing, socket: Socket| {
        let _ = tx.send(socket.id());
    });
    let mut c = RawClient::connect(addr, "/?id=hb").await.unwrap();
    c.send_text("").await.unwrap();
    assert_eq!(c.recv_text(TIMEOUT).await.as_deref(), Some(""));
    assert_eq!(
        recv_within(&mut pings, TIMEOUT).await,
        Some(Some("hb".into()))
    );
    // A heartbeat is not an event: nothing counted as malformed.
    assert_eq!(server.stats().malformed_frames, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_heartbeat_string() {
    let (server, addr) = say_server(ServerConfig::default().with_heartbeat_message("ping")).await;
    let (tx, mut pings) = mpsc::unbounded_channel();
    server.on_system(move |_: ClientPing| {
        let _ = tx.send(());
    });
    let mut c = RawClient::connect(addr, "/?id=1").await.unwrap();
    c.send_text("ping").await.unwrap();
    assert_eq!(c.recv_text(TIMEOUT).await.as_deref(), Some("ping"));
    assert_eq!(recv_within(&mut pings, TIMEOUT).await, Some(()));
    // The empty string is no heartbeat now: it is a malformed frame, not echoed.
    c.send_text("").await.unwrap();
    assert_eq!(c.drain_until_heartbeat("ping").await, Vec::<String>::new());
    assert_eq!(server.stats().malformed_frames, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_and_query_parameters_reach_the_socket() {
    let (server, addr) = spawn_server(ServerConfig::default()).await;
    let (tx, mut params) = mpsc::unbounded_channel();
    server.on_system(move |_: Connection, socket: Socket| {
        let p = socket.params();
        let _ = tx.send((
            p.path().to_string(),
            p.get("id").map(str::to_string),
            p.get("name").map(str::to_string),
        ));
    });
    let _c = RawClient::connect(addr, "/game/hall?id=16&name=Sam%20B&id=99")
        .await
        .unwrap();
    assert_eq!(
        recv_within(&mut params, TIMEOUT).await,
        Some((
            "game/hall".to_string(),
            Some("16".to_string()),
            Some("Sam B".to_string())
        ))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_codes_travel_both_ways() {
    let (server, addr) = say_server(ServerConfig::default()).await;
    let (tx, mut closes) = mpsc::unbounded_channel();
    server.on_system(move |Close { code, reason, .. }: Close, socket: Socket| {
        let _ = tx.send((socket.id(), code, reason));
    });
    // Client closes on purpose (seed manualClose): 4001 is reported, the id is unbound.
    let mut a = RawClient::connect_bound(addr, "a").await.unwrap();
    a.send_close(4001, "bye").await.unwrap();
    assert_eq!(a.expect_close(TIMEOUT).await.map(|c| c.0), Some(4001));
    let (_, code, reason) = recv_within(&mut closes, TIMEOUT).await.unwrap();
    assert_eq!((code, reason.as_str()), (4001, "bye"));
    assert!(server.socket("a").is_none());
    // The application closes with its own code (forced logout).
    let mut b = RawClient::connect_bound(addr, "b").await.unwrap();
    server.socket("b").unwrap().close(4010, "forced logout");
    assert_eq!(
        b.expect_close(TIMEOUT).await,
        Some((4010, "forced logout".to_string()))
    );
    let (_, code, _) = recv_within(&mut closes, TIMEOUT).await.unwrap();
    assert_eq!(code, 4010);
    // A dropped TCP connection is 1006.
    let c = RawClient::connect_bound(addr, "c").await.unwrap();
    drop(c);
    let (_, code, _) = recv_within(&mut closes, TIMEOUT).await.unwrap();
    assert_eq!(code, 1006);
}

/// The same exchange through an independent WebSocket implementation (tungstenite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tungstenite_client_interoperates() {
    let (server, addr) = say_server(ServerConfig::default()).await;
    let (mut ws, response) = tokio_tungstenite::connect_async(format!("ws://{addr}/chat?id=t"))
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    ws.send(Message::text(
        r#"{"event":"say","payload":[1,"two"],"callbackId":"1"}"#,
    ))
    .await
    .unwrap();
    let next = tokio::time::timeout(TIMEOUT, ws.next()).await.unwrap();
    assert_eq!(
        next.unwrap().unwrap(),
        Message::text(r#"{"callbackId":"1","payload":[1,"two"]}"#)
    );
    // Bound by then: the reply came after the connection's setup.
    let big = "x".repeat(200_000);
    server.to("t").emit("big", &big).unwrap();
    let next = tokio::time::timeout(TIMEOUT, ws.next()).await.unwrap();
    let text = next.unwrap().unwrap().into_text().unwrap();
    assert_eq!(
        text.len(),
        big.len() + r#"{"event":"big","payload":""}"#.len()
    );
    ws.send(Message::Ping(b"p".to_vec().into())).await.unwrap();
    let next = tokio::time::timeout(TIMEOUT, ws.next()).await.unwrap();
    assert_eq!(next.unwrap().unwrap(), Message::Pong(b"p".to_vec().into()));
    ws.close(None).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(m) = ws.next().await {
            if m.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(end.is_ok(), "server must finish the close handshake");
}

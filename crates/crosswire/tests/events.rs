//! The events API: on / once / off by handle and tag, async and typed handlers, system events.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crosswire::system::{Close, Connection, Pong, RawMessage, SocketError};
use crosswire::{Ack, Data, On, Server, ServerConfig, Socket};
use crosswire_testkit::{recv_within, spawn_server, RawClient, TIMEOUT};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

fn event(name: &str, id: &str) -> String {
    format!(r#"{{"event":"{name}","payload":null,"callbackId":"{id}"}}"#)
}

/// Sends `name` asking for a reply; returns the reply payload, or `None` when the event
/// had no handler (no reply came before the heartbeat echo).
async fn call(client: &mut RawClient, name: &str) -> Option<serde_json::Value> {
    client.send_text(&event(name, "c")).await.unwrap();
    let got = client.drain_until_heartbeat("").await;
    assert!(got.len() <= 1, "one reply at most: {got:?}");
    got.first().map(|t| {
        let v: serde_json::Value = serde_json::from_str(t).unwrap();
        v["payload"].clone()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_once_off_by_handle_and_tag() {
    let (server, addr) = spawn_server(ServerConfig::default()).await;
    let mut c = RawClient::connect(addr, "/").await.unwrap();
    let reply_with = |value: &'static str| move || Ack(value);

    let handle = server.on("a", reply_with("a"));
    assert_eq!(call(&mut c, "a").await, Some(json!("a")));
    assert!(server.off(handle));
    assert!(!server.off(handle), "removing twice reports false");
    assert_eq!(call(&mut c, "a").await, None);
    assert_eq!(server.stats().unknown_events, 1);

    server.on(On::once("b"), reply_with("once"));
    assert_eq!(call(&mut c, "b").await, Some(json!("once")));
    assert_eq!(call(&mut c, "b").await, None);

    // Every handler of an event runs; only the first one registered gets the reply.
    let untagged = server.on("c", reply_with("c"));
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    server.tagged("room-7").on("c", move || {
        seen.fetch_add(1, Ordering::SeqCst);
    });
    server.tagged("room-7").on("d", reply_with("d"));
    server.tagged("room-7").on_system(|_: Close| {});
    assert_eq!(call(&mut c, "c").await, Some(json!("c")));
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert_eq!(call(&mut c, "d").await, Some(json!("d")));
    assert_eq!(server.off_tag("room-7"), 3);
    assert_eq!(server.off_tag("room-7"), 0);
    assert_eq!(call(&mut c, "d").await, None);
    assert_eq!(call(&mut c, "c").await, Some(json!("c")));
    assert_eq!(count.load(Ordering::SeqCst), 1, "tagged handler removed");
    assert!(server.off(untagged));

    server.on("e", reply_with("e1"));
    server.on("e", reply_with("e2"));
    // Each event is answered once, by its first handler (`call` checks there is one reply).
    assert_eq!(call(&mut c, "e").await, Some(json!("e1")));
    assert_eq!(server.off_event("e"), 2);
    assert_eq!(call(&mut c, "e").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_may_register_and_remove_handlers() {
    let (server, addr) = spawn_server(ServerConfig::default()).await;
    let mut c = RawClient::connect(addr, "/").await.unwrap();
    server.on("install", |server: Server| {
        server.on("installed", || Ack("yes"));
        server.off_event("install");
        Ack("done")
    });
    assert_eq!(call(&mut c, "install").await, Some(json!("done")));
    assert_eq!(call(&mut c, "install").await, None);
    assert_eq!(call(&mut c, "installed").await, Some(json!("yes")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_handler_replies_later_without_blocking_the_connection() {
    let (server, addr) = spawn_server(ServerConfig::default()).await;
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    server.on("slow", move |socket: Socket, Data(n): Data<u32>| {
        let mut release = release_rx.clone();
        async move {
            // Waits for the test to let it go: the sync handler below answers first.
            let _ = release.wait_for(|go| *go).await;
            Ack(json!({"slow": n, "socket": socket.conn_id()}))
        }
    });
    server.on("fast", || Ack("fast"));
    let mut c = RawClient::connect(addr, "/").await.unwrap();
    c.send_text(r#"{"event":"slow","payload":5,"callbackId":"s"}"#)
        .await
        .unwrap();
    c.send_text(r#"{"event":"fast","callbackId":"f"}"#)
        .await
        .unwrap();
    assert_eq!(
        c.recv_text(TIMEOUT).await.as_deref(),
        Some(r#"{"callbackId":"f","payload":"fast"}"#)
    );
    release_tx.send(true).unwrap();
    let reply = c.recv_json(TIMEOUT).await.unwrap();
    assert_eq!(reply["callbackId"], "s");
    assert_eq!(reply["payload"]["slow"], 5);
}

#[derive(Deserialize)]
struct Move {
    x: i32,
    y: i32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_handler_rejects_a_bad_payload_with_an_error_reply() {
    let (server, addr) = spawn_server(ServerConfig::default()).await;
    server.on("move", |Data(m): Data<Move>| Ack(json!({"sum": m.x + m.y})));
    let (tx, mut errors) = mpsc::unbounded_channel();
    server.on_system(move |SocketError { error, .. }: SocketError| {
        let _ = tx.send(error);
    });
    let mut c = RawClient::connect(addr, "/").await.unwrap();
    c.send_text(r#"{"event":"move","payload":{"x":2,"y":3},"callbackId":"1"}"#)
        .await
        .unwrap();
    assert_eq!(
        c.recv_text(TIMEOUT).await.as_deref(),
        Some(r#"{"callbackId":"1","payload":{"sum":5}}"#)
    );
    c.send_text(r#"{"event":"move","payload":{"x":"two"},"callbackId":"2"}"#)
        .await
        .unwrap();
    let reply = c.recv_json(TIMEOUT).await.unwrap();
    assert_eq!(reply["callbackId"], "2");
    let error = reply["payload"]["error"].as_str().unwrap();
    assert!(error.starts_with("invalid payload"), "{error}");
    assert_eq!(reply["payload"]["code"], "invalid_payload");
    assert_eq!(
        recv_within(&mut errors, TIMEOUT).await.as_deref(),
        Some(error)
    );
    // Without a callbackId the error is only reported, not sent.
    c.send_text(r#"{"event":"move","payload":7}"#)
        .await
        .unwrap();
    assert_eq!(c.drain_until_heartbeat("").await, Vec::<String>::new());
    assert!(recv_within(&mut errors, TIMEOUT).await.is_some());
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    recv_within(rx, TIMEOUT).await.expect("a system event")
}

#[derive(Debug, PartialEq)]
enum Seen {
    Connection(Option<String>),
    Message(String),
    Error,
    Pong,
    Close(u16, String),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_events_fire_with_their_details() {
    let (server, addr) = spawn_server(ServerConfig::default()).await;
    let (tx, mut seen) = mpsc::unbounded_channel();
    let t = tx.clone();
    server.on_system(move |_: Connection, server: Server, socket: Socket| {
        let id = socket.params().get("id").map(str::to_string);
        if let Some(id) = &id {
            server.bind(id, &socket);
        }
        let _ = t.send(Seen::Connection(id));
    });
    let t = tx.clone();
    server.on_system(move |RawMessage { text, .. }: RawMessage| {
        let _ = t.send(Seen::Message(text));
    });
    let t = tx.clone();
    server.on_system(move |_: SocketError| {
        let _ = t.send(Seen::Error);
    });
    let t = tx.clone();
    server.on_system(move |_: Pong| {
        let _ = t.send(Seen::Pong);
    });
    let t = tx.clone();
    server.on_system(move |Close { code, reason, .. }: Close| {
        let _ = t.send(Seen::Close(code, reason));
    });
    let c = RawClient::connect(addr, "/?id=s1").await.unwrap();
    assert_eq!(next(&mut seen).await, Seen::Connection(Some("s1".into())));
    c.send_text(r#"{"event":"nothing"}"#).await.unwrap();
    assert_eq!(
        next(&mut seen).await,
        Seen::Message(r#"{"event":"nothing"}"#.into())
    );
    c.send_text("oops").await.unwrap();
    assert_eq!(next(&mut seen).await, Seen::Message("oops".into()));
    assert_eq!(next(&mut seen).await, Seen::Error);
    c.send_pong(b"").await.unwrap();
    assert_eq!(next(&mut seen).await, Seen::Pong);
    c.send_close(4001, "manual close").await.unwrap();
    assert_eq!(
        next(&mut seen).await,
        Seen::Close(4001, "manual close".into())
    );
    assert!(server.socket("s1").is_none());
    assert!(
        tokio::time::timeout(Duration::from_millis(50), seen.recv())
            .await
            .is_err(),
        "no further events"
    );
}

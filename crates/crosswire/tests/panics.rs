//! A panicking handler never leaks: it is caught and counted, the socket it ran for is
//! closed with 1011 and cleaned up (id unbound, rooms left), and the broker's receive loop
//! survives panics in server-to-server and custom-channel handlers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crosswire::system::{Close, Connection};
use crosswire::{
    close_code, Ack, MemoryHub, Room, Server, ServerConfig, ServerEmitOptions, Socket,
};
use crosswire_testkit::{install_relay, serve_on_free_port, wait_until, RawClient, TIMEOUT};
use serde_json::json;

const ROOM: &str = "lobby";

fn room() -> Room {
    Room::new(crosswire_testkit::RELAY_NAMESPACE, ROOM)
}

/// A relay node with a client `id` connected and in the lobby.
async fn node_with_client(server: &Server, id: &str) -> RawClient {
    let addr = serve_on_free_port(server).await;
    let mut client = RawClient::connect_bound(addr, id).await.expect("connect");
    client
        .send_json(&json!({"event": "join", "payload": {"room": ROOM}, "callbackId": "j"}))
        .await
        .expect("send");
    assert!(client.recv_json(TIMEOUT).await.is_some(), "join answered");
    assert!(server.is_joined(&room(), id));
    client
}

/// The client is closed with 1011, and nothing of it is left on the server.
async fn assert_closed_and_cleaned(server: &Server, client: &mut RawClient, id: &str) {
    let (code, _) = client.expect_close(TIMEOUT).await.expect("closed");
    assert_eq!(code, close_code::INTERNAL_ERROR);
    assert!(
        wait_until(TIMEOUT, || server.connection_count() == 0).await,
        "connection removed"
    );
    assert!(server.socket(id).is_none(), "id unbound");
    assert_eq!(server.room_size(&room()), 0, "room left");
    assert_eq!(server.stats().bound_ids, 0);
    assert_eq!(server.stats().handler_panics, 1);
}

#[tokio::test]
async fn a_panicking_sync_handler_closes_its_socket_and_cleans_up() {
    let server = Server::new(ServerConfig::default()).expect("server");
    install_relay(&server);
    fn boom(_: Socket) {
        panic!("sync boom");
    }
    server.on("boom", boom);
    let mut client = node_with_client(&server, "alice").await;
    client
        .send_json(&json!({"event": "boom", "payload": null}))
        .await
        .expect("send");
    assert_closed_and_cleaned(&server, &mut client, "alice").await;
}

#[tokio::test]
async fn a_panicking_async_handler_closes_its_socket_and_cleans_up() {
    let server = Server::new(ServerConfig::default()).expect("server");
    install_relay(&server);
    async fn boom(_: Socket) {
        tokio::task::yield_now().await;
        panic!("async boom");
    }
    server.on("boom", boom);
    let mut client = node_with_client(&server, "alice").await;
    client
        .send_json(&json!({"event": "boom", "payload": null, "callbackId": "1"}))
        .await
        .expect("send");
    assert_closed_and_cleaned(&server, &mut client, "alice").await;
}

#[tokio::test]
async fn a_panicking_system_handler_closes_the_socket_it_was_about() {
    let server = Server::new(ServerConfig::default()).expect("server");
    install_relay(&server);
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&connections);
    server.on_system(move |_: Connection, socket: Socket| {
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("connection handler of {:?}", socket.id());
        }
    });
    // A panicking close handler is caught too: the node goes on.
    fn close_boom(_: Close) {
        panic!("close boom");
    }
    server.on_system(close_boom);
    let addr = serve_on_free_port(&server).await;
    // Not `connect_bound`: the socket is closed before it could echo a heartbeat.
    let mut first = RawClient::connect(addr, "/?id=alice")
        .await
        .expect("connect");
    let (code, _) = first.expect_close(TIMEOUT).await.expect("closed");
    assert_eq!(code, close_code::INTERNAL_ERROR);
    assert!(wait_until(TIMEOUT, || server.connection_count() == 0).await);
    assert!(server.socket("alice").is_none());
    // Two panics: the connection handler's, then the close handler's.
    assert!(wait_until(TIMEOUT, || server.stats().handler_panics == 2).await);

    // The next connection is served normally.
    let mut second = RawClient::connect_bound(addr, "bob")
        .await
        .expect("connect");
    second
        .send_json(&json!({"event": "echo", "payload": 7, "callbackId": "e"}))
        .await
        .expect("send");
    assert_eq!(
        second.recv_json(TIMEOUT).await,
        Some(json!({"callbackId": "e", "payload": 7}))
    );
    assert!(server.socket("bob").is_some());
}

/// Two nodes on one hub: `b`'s server-event handlers panic on their first call, sync and
/// async; its custom-channel handler panics on its first message. Every later message is
/// still handled, so the receive loop survived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_receive_loop_survives_handler_panics() {
    let hub = MemoryHub::new();
    let node = |name: &str| {
        Server::builder(ServerConfig::default().with_node_name(name))
            .broker(Arc::new(hub.broker()))
            .build()
            .expect("node")
    };
    let (a, b) = (node("a"), node("b"));
    assert!(wait_until(Duration::from_secs(10), || a.nodes() == ["a", "b"]).await);

    let sync_calls = Arc::new(AtomicUsize::new(0));
    let calls = Arc::clone(&sync_calls);
    b.on_server("sync", move || {
        if calls.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("server event boom");
        }
        Ack("fine")
    });
    let async_calls = Arc::new(AtomicUsize::new(0));
    let calls = Arc::clone(&async_calls);
    b.on_server("async", move || {
        let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            if first {
                panic!("async server event boom");
            }
            Ack("fine")
        }
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    b.on_channel_message(move |_, payload| {
        if &payload[..] == b"boom" {
            panic!("channel boom");
        }
        let _ = tx.send(payload.clone());
    });
    assert!(b.subscribe_channel("custom"));

    let ask = |event: &'static str| {
        let a = a.clone();
        async move {
            let options = ServerEmitOptions::new()
                .to(["b"])
                .with_timeout(Duration::from_millis(500));
            a.request_server(event, &(), options)
                .expect("sent")
                .collect()
                .await
        }
    };
    for event in ["sync", "async"] {
        let first = ask(event).await;
        assert!(!first.success, "{event}: the panicking call did not answer");
        let second = ask(event).await;
        assert!(second.success, "{event}: answered after the panic");
        assert_eq!(second.responses["b"].get(), r#""fine""#);
    }
    // The subscription reaches the hub through b's ordered queue; publish until it lands.
    assert!(
        wait_until(TIMEOUT, || {
            a.publish_raw("custom", Bytes::from_static(b"boom"));
            b.stats().handler_panics >= 3
        })
        .await
    );
    assert!(a.publish_raw("custom", Bytes::from_static(b"after")));
    let got = tokio::time::timeout(TIMEOUT, async {
        loop {
            match rx.recv().await {
                Some(p) if &p[..] == b"after" => return true,
                Some(_) => continue,
                None => return false,
            }
        }
    })
    .await;
    assert_eq!(got, Ok(true), "the channel handler runs after its panic");
    assert_eq!(sync_calls.load(Ordering::SeqCst), 2);
    assert_eq!(async_calls.load(Ordering::SeqCst), 2);
}

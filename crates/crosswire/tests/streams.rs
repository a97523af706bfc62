//! WebSockets over a stream that is not plain TCP — here a Unix socket served by
//! `axum::serve` — go through the socket's own task: events, replies, room delivery with TCP
//! clients of the same node, large messages written in parts, and both close directions.

use std::future::IntoFuture;

use crosswire::system::Close;
use crosswire::{Room, Server, ServerConfig, Socket};
use crosswire_testkit::{install_relay, serve_on_free_port, wait_until, RawClient, TIMEOUT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{UnixListener, UnixStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<UnixStream>;

async fn connect(path: &std::path::Path, id: &str) -> Ws {
    let stream = UnixStream::connect(path).await.expect("unix connect");
    let url = format!("ws://localhost/?id={id}");
    let (ws, response) =
        tokio::time::timeout(TIMEOUT, tokio_tungstenite::client_async(url, stream))
            .await
            .expect("handshake in time")
            .expect("handshake");
    assert_eq!(response.status(), 101);
    ws
}

async fn next_text(ws: &mut Ws) -> String {
    loop {
        let message = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("a message in time")
            .expect("stream open")
            .expect("no protocol error");
        match message {
            Message::Text(text) => return text.to_string(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn request(ws: &mut Ws, event: &str, payload: Value, id: &str) -> Value {
    let frame = json!({"event": event, "payload": payload, "callbackId": id});
    ws.send(Message::text(frame.to_string())).await.unwrap();
    let reply: Value = serde_json::from_str(&next_text(ws).await).unwrap();
    assert_eq!(reply["callbackId"], json!(id), "{reply}");
    reply["payload"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_carries_events_rooms_large_messages_and_closes() {
    let dir = tempfile_dir();
    let path = dir.join("ws.sock");
    let server = Server::new(ServerConfig::default()).unwrap();
    install_relay(&server);
    let (closes_tx, mut closes) = tokio::sync::mpsc::unbounded_channel();
    server.on_system(move |close: Close, socket: Socket| {
        let _ = closes_tx.send((socket.id(), close.code));
    });
    let listener = UnixListener::bind(&path).unwrap();
    tokio::spawn(axum::serve(listener, server.router()).into_future());
    let tcp_addr = serve_on_free_port(&server).await;

    let mut unix = connect(&path, "unix").await;
    assert_eq!(
        request(&mut unix, "echo", json!({"n": 1}), "1").await,
        json!({"n": 1})
    );
    assert!(
        server.socket("unix").is_some(),
        "bound over the Unix socket"
    );

    // Room delivery between a Unix-socket client and a TCP client.
    let mut tcp = RawClient::connect_bound(tcp_addr, "tcp").await.unwrap();
    server.join(&Room::new("relay", "r"), "unix");
    server.join(&Room::new("relay", "r"), "tcp");
    let room_msg = json!({"room": "r", "data": "hello"});
    tcp.send_json(&json!({"event": "room", "payload": room_msg}))
        .await
        .unwrap();
    let got: Value = serde_json::from_str(&next_text(&mut unix).await).unwrap();
    assert_eq!(got, json!({"event": "msg", "payload": "hello"}));
    // The sender is in the room too.
    let own = tcp.recv_json(TIMEOUT).await.unwrap();
    assert_eq!(own, json!({"event": "msg", "payload": "hello"}));
    let to_tcp = json!({"room": "r", "data": "back"});
    unix.send(Message::text(
        json!({"event": "room", "payload": to_tcp}).to_string(),
    ))
    .await
    .unwrap();
    let got = tcp.recv_json(TIMEOUT).await.unwrap();
    assert_eq!(got, json!({"event": "msg", "payload": "back"}));
    let own: Value = serde_json::from_str(&next_text(&mut unix).await).unwrap();
    assert_eq!(own, json!({"event": "msg", "payload": "back"}));

    // A message larger than any socket buffer goes out in many writes, whole.
    let big = "x".repeat(4 << 20);
    assert_eq!(
        request(&mut unix, "echo", json!(big), "big").await,
        json!(big)
    );

    // The server closes: the client gets the code.
    server.socket("unix").unwrap().close(4010, "bye");
    let close = loop {
        match tokio::time::timeout(TIMEOUT, unix.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.map(|f| u16::from(f.code)), Some(4010));
    // Polling on lets the client send its answer to the close.
    while let Ok(Some(_)) = tokio::time::timeout(TIMEOUT, unix.next()).await {}
    let (who, code) = tokio::time::timeout(TIMEOUT, closes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((who.as_deref(), code), (Some("unix"), 4010));

    // The client closes: the server reports the client's code and cleans up.
    let mut second = connect(&path, "second").await;
    assert_eq!(request(&mut second, "echo", json!(2), "2").await, json!(2));
    second
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "done".into(),
        }))
        .await
        .unwrap();
    let (who, code) = tokio::time::timeout(TIMEOUT, closes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((who.as_deref(), code), (Some("second"), 1000));
    assert!(wait_until(TIMEOUT, || server.connection_count() == 1).await);
    assert!(server.socket("second").is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh directory for the socket file.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "crosswire-streams-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

//! permessage-deflate (RFC 7692) with real clients over loopback: negotiated only when on and
//! offered, a broadcast compressed once for every recipient that negotiated it, compressed
//! client messages inflated, and bad compressed input closing the connection with a clear
//! code and a counter.

use std::time::Duration;

use crosswire::{MemoryHub, PerMessageDeflate, Server, ServerConfig};
use crosswire_protocol::ws::OpCode;
use crosswire_testkit::{
    compressed_client_frame, install_relay, spawn_server, wait_until, RawClient, RawOptions,
    TIMEOUT,
};
use serde_json::{json, Value};

/// What browsers send.
const BROWSER_OFFER: &[(&str, &str)] = &[(
    "Sec-WebSocket-Extensions",
    "permessage-deflate; client_max_window_bits",
)];

fn deflate_config() -> ServerConfig {
    ServerConfig::default().with_permessage_deflate(PerMessageDeflate::new())
}

async fn connect(addr: std::net::SocketAddr, id: &str, offer: bool) -> RawClient {
    let options = RawOptions {
        headers: if offer { BROWSER_OFFER } else { &[] },
        ..RawOptions::default()
    };
    let mut client = RawClient::connect_with(addr, &format!("/?id={id}"), options)
        .await
        .expect("connect");
    client.sync("").await.expect("heartbeat echo");
    client
}

/// A payload that compresses well, as JSON does.
fn big_data() -> Value {
    let items: Vec<Value> = (0..40)
        .map(|i| json!({"id": i, "name": format!("player-{i}"), "score": i * 10, "online": true}))
        .collect();
    json!(items)
}

#[tokio::test]
async fn negotiated_only_when_enabled_and_offered() {
    let (server, addr) = spawn_server(deflate_config()).await;
    install_relay(&server);
    let offered = connect(addr, "a", true).await;
    assert_eq!(
        offered.extensions(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    assert!(server.socket("a").unwrap().is_compressed());
    let plain = connect(addr, "b", false).await;
    assert_eq!(plain.extensions(), None);
    assert!(!server.socket("b").unwrap().is_compressed());
    assert_eq!(server.stats().deflate_connections, 1);

    let (off, off_addr) = spawn_server(ServerConfig::default()).await;
    install_relay(&off);
    let declined = connect(off_addr, "c", true).await;
    assert_eq!(declined.extensions(), None, "off by default");
    assert!(!off.socket("c").unwrap().is_compressed());
    drop((offered, plain, declined));
}

#[tokio::test]
async fn a_broadcast_is_compressed_once_for_all_its_recipients() {
    let (server, addr) = spawn_server(deflate_config()).await;
    install_relay(&server);
    let mut clients = Vec::new();
    for i in 0..6 {
        // Four offer deflate, two do not.
        let mut c = connect(addr, &format!("u{i}"), i < 4).await;
        c.send_text(r#"{"event":"join","payload":{"room":"r"},"callbackId":"j"}"#)
            .await
            .unwrap();
        assert!(c.recv_text(TIMEOUT).await.unwrap().contains(r#""ok":true"#));
        clients.push(c);
    }
    let before = server.stats();
    let data = big_data();
    let expected = json!({"event": "msg", "payload": data}).to_string();
    assert!(expected.len() > 1000);
    let delivered = server
        .to_room(crosswire::Room::new(
            crosswire_testkit::RELAY_NAMESPACE,
            "r",
        ))
        .emit("msg", &data)
        .unwrap();
    assert_eq!(delivered, 6);
    for (i, c) in clients.iter_mut().enumerate() {
        let text = c.recv_text(TIMEOUT).await.expect("broadcast");
        assert_eq!(text, expected, "client {i}");
        let compressed = if i < 4 { 1 } else { 0 };
        assert_eq!(c.compressed_received(), compressed, "client {i}");
    }
    let after = server.stats();
    assert_eq!(
        after.compressed_messages - before.compressed_messages,
        1,
        "compressed once, shared by the four"
    );
    let (plain, packed) = (
        after.compressed_bytes_in - before.compressed_bytes_in,
        after.compressed_bytes_out - before.compressed_bytes_out,
    );
    assert!(packed * 3 < plain, "{plain} bytes became {packed}");
}

#[tokio::test]
async fn compressed_client_messages_are_inflated_and_small_replies_go_plain() {
    let (server, addr) = spawn_server(deflate_config()).await;
    install_relay(&server);
    let mut c = connect(addr, "a", true).await;
    let small = r#"{"event":"echo","payload":"hi","callbackId":"1"}"#;
    c.send_raw(&compressed_client_frame(OpCode::Text, small.as_bytes()))
        .await
        .unwrap();
    assert_eq!(
        c.recv_text(TIMEOUT).await.as_deref(),
        Some(r#"{"callbackId":"1","payload":"hi"}"#)
    );
    assert_eq!(c.compressed_received(), 0, "under the minimum size: plain");
    // A large echo: inflated on the way in, compressed on the way out.
    let big = json!({"event": "echo", "payload": big_data(), "callbackId": "2"}).to_string();
    c.send_raw(&compressed_client_frame(OpCode::Text, big.as_bytes()))
        .await
        .unwrap();
    let reply: Value = serde_json::from_str(&c.recv_text(TIMEOUT).await.unwrap()).unwrap();
    assert_eq!(reply["payload"], big_data());
    assert_eq!(c.compressed_received(), 1);
    // Plain messages still work on a compressed connection.
    c.send_text(r#"{"event":"echo","payload":3,"callbackId":"3"}"#)
        .await
        .unwrap();
    assert_eq!(
        c.recv_text(TIMEOUT).await.as_deref(),
        Some(r#"{"callbackId":"3","payload":3}"#)
    );
}

/// Sends `frame` on a fresh compressed connection and returns the close code the server
/// answers with.
async fn close_code_for(server_config: ServerConfig, frame: Vec<u8>, offer: bool) -> u16 {
    let (server, addr) = spawn_server(server_config).await;
    install_relay(&server);
    let mut c = connect(addr, "a", offer).await;
    c.send_raw(&frame).await.unwrap();
    let (code, _) = c.expect_close(TIMEOUT).await.expect("close frame");
    assert!(
        wait_until(TIMEOUT, || server.stats().protocol_errors == 1).await,
        "counted as a protocol error"
    );
    code
}

#[tokio::test]
async fn bad_compressed_input_closes_with_a_clear_code() {
    // Not DEFLATE data.
    let mut garbage = crosswire_testkit::client_frame(OpCode::Text, &[0xff, 0xfe, 0xfd]);
    garbage[0] |= 0x40;
    assert_eq!(close_code_for(deflate_config(), garbage, true).await, 1007);
    // A small frame that inflates past the maximum message size: 1009, and the server never
    // holds more than the limit.
    let bomb = compressed_client_frame(OpCode::Binary, &vec![0u8; 4 << 20]);
    assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
    let small_max = deflate_config().with_max_message_size(256 << 10);
    assert_eq!(close_code_for(small_max, bomb, true).await, 1009);
    // RSV1 on a connection that did not negotiate the extension.
    let compressed = compressed_client_frame(OpCode::Text, b"{}");
    assert_eq!(
        close_code_for(deflate_config(), compressed, false).await,
        1002
    );
}

#[tokio::test]
async fn each_node_compresses_what_it_delivers_from_another() {
    let hub = MemoryHub::new();
    let node = |name: &str| {
        Server::builder(deflate_config().with_node_name(name))
            .broker(std::sync::Arc::new(hub.broker()))
            .build()
            .unwrap()
    };
    let (a, b) = (node("a"), node("b"));
    install_relay(&b);
    let addr = crosswire_testkit::serve_on_free_port(&b).await;
    crosswire_testkit::cluster_suite::wait_nodes(&[&a, &b], &["a", "b"]).await;
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(connect(addr, &format!("u{i}"), true).await);
    }
    let data = big_data();
    a.to_all().emit("msg", &data).unwrap();
    for c in &mut clients {
        let text = c.recv_text(TIMEOUT).await.expect("delivery from node a");
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap()["payload"],
            data
        );
        assert_eq!(c.compressed_received(), 1);
    }
    assert!(
        wait_until(Duration::from_secs(1), || b.stats().compressed_messages
            == 1)
        .await,
        "node b compressed once for its three sockets: {:?}",
        b.stats()
    );
    assert_eq!(a.stats().compressed_messages, 0, "node a has no sockets");
}

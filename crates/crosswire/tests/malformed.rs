//! Malformed input never harms the server or other sockets.
//!
//! Every case runs next to a bystander socket that must keep getting replies; where the
//! protocol lets the connection live on, the same connection must keep working too.

use std::net::SocketAddr;

use crosswire::protocol::ws::OpCode;
use crosswire::system::SocketError;
use crosswire::{Ack, Data, Payload, Server, ServerConfig, Socket, Stats};
use crosswire_testkit::{
    client_frame, client_frame_with, install_relay, recv_within, spawn_server, RawClient, TIMEOUT,
};
use tokio::sync::mpsc;

/// After a protocol error the server discards what the client still sends (its close reply
/// included) and drops the connection after the close timeout; keep that short here.
const LINGER: std::time::Duration = std::time::Duration::from_millis(200);

async fn relay(config: ServerConfig) -> (Server, SocketAddr) {
    let (server, addr) = spawn_server(config).await;
    install_relay(&server);
    // Replies with the length of the payload's JSON text.
    server.on("size", |payload: Payload| Ack(payload.as_str().len()));
    (server, addr)
}

/// One echo round trip with a fresh callback id.
async fn assert_echo(client: &mut RawClient, n: u32) {
    client
        .send_text(&format!(
            r#"{{"event":"echo","payload":{n},"callbackId":"e{n}"}}"#
        ))
        .await
        .unwrap();
    assert_eq!(
        client.recv_text(TIMEOUT).await,
        Some(format!(r#"{{"callbackId":"e{n}","payload":{n}}}"#)),
        "echo {n} must be answered"
    );
}

fn deeply_nested(depth: usize) -> String {
    format!(
        r#"{{"event":"echo","payload":{}{},"callbackId":"deep"}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    )
}

/// Frames the server drops (counted as malformed) while the connection stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_frames_leave_the_connection_and_others_working() {
    let (server, addr) = relay(ServerConfig::default()).await;
    let (tx, mut errors) = mpsc::unbounded_channel();
    server.on_system(
        move |SocketError { error, .. }: SocketError, socket: Socket| {
            let _ = tx.send((socket.id(), error));
        },
    );
    let mut bad = RawClient::connect_bound(addr, "bad").await.unwrap();
    let mut bystander = RawClient::connect_bound(addr, "ok").await.unwrap();
    let long_id = "x".repeat(65);
    let cases: Vec<(&str, String)> = vec![
        ("not JSON", "hello".into()),
        ("truncated JSON", r#"{"event":"echo","payload":"#.into()),
        ("JSON but not an object", "[1,2,3]".into()),
        ("JSON string", r#""echo""#.into()),
        ("no event", r#"{"payload":1,"callbackId":"1"}"#.into()),
        (
            "event is a number",
            r#"{"event":5,"payload":1,"callbackId":"1"}"#.into(),
        ),
        ("event is null", r#"{"event":null,"callbackId":"1"}"#.into()),
        (
            "callbackId is a number",
            r#"{"event":"echo","payload":1,"callbackId":17}"#.into(),
        ),
        (
            "callbackId of 65 chars",
            format!(r#"{{"event":"echo","payload":1,"callbackId":"{long_id}"}}"#),
        ),
        (
            "empty callbackId",
            r#"{"event":"echo","payload":1,"callbackId":""}"#.into(),
        ),
    ];
    for (n, (name, text)) in cases.iter().enumerate() {
        let before = server.stats();
        bad.send_text(text).await.unwrap();
        // Nothing comes back for the bad frame: the next text is the echo's reply.
        assert_echo(&mut bad, n as u32).await;
        let after = server.stats();
        assert_eq!(
            after.malformed_frames,
            before.malformed_frames + 1,
            "{name} must be counted as malformed"
        );
        let (who, _) = recv_within(&mut errors, TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("{name}: error system event"));
        assert_eq!(who.as_deref(), Some("bad"), "{name}");
        assert_echo(&mut bystander, n as u32).await;
    }
    // A binary frame that is not UTF-8 is dropped and counted.
    let before = server.stats().malformed_frames;
    bad.send_binary(&[0, 159, 146, 150]).await.unwrap();
    assert_echo(&mut bad, 100).await;
    assert_eq!(server.stats().malformed_frames, before + 1);
    let stats = server.stats();
    assert_eq!(stats.connections, 2);
    assert_eq!(stats.protocol_errors, 0);
}

/// Deep nesting is valid JSON: the raw payload passes through untouched (no recursion), and
/// a handler that parses it hits serde_json's depth limit instead of the stack's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_payload_neither_crashes_nor_stalls() {
    let (server, addr) = relay(ServerConfig::default()).await;
    server.on("parse", |_: Data<serde_json::Value>| Ack("parsed"));
    let mut c = RawClient::connect_bound(addr, "c").await.unwrap();
    let mut bystander = RawClient::connect_bound(addr, "ok").await.unwrap();
    for depth in [100, 100_000] {
        c.send_text(&deeply_nested(depth)).await.unwrap();
        let expected = format!(
            r#"{{"callbackId":"deep","payload":{}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let reply = c
            .recv_text(TIMEOUT)
            .await
            .expect("echo of a nested payload");
        assert!(reply == expected, "depth {depth}: echo differs");
        let parse = deeply_nested(depth).replace(r#""echo""#, r#""parse""#);
        c.send_text(&parse).await.unwrap();
        let reply = c.recv_json(TIMEOUT).await.unwrap();
        if depth == 100 {
            assert_eq!(reply["payload"], "parsed");
        } else {
            let error = reply["payload"]["error"].as_str().unwrap_or_default();
            assert!(error.contains("recursion limit"), "depth {depth}: {error}");
        }
        assert_echo(&mut bystander, depth as u32).await;
    }
    assert_eq!(server.stats().connections, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_event_gets_no_reply_and_is_counted() {
    let (server, addr) = relay(ServerConfig::default()).await;
    let mut c = RawClient::connect_bound(addr, "c").await.unwrap();
    c.send_text(r#"{"event":"nobody-listens","payload":{},"callbackId":"9"}"#)
        .await
        .unwrap();
    assert_echo(&mut c, 1).await;
    let stats = server.stats();
    assert_eq!(stats.unknown_events, 1);
    assert_eq!(stats.malformed_frames, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_closes_only_that_socket_with_1009() {
    let config = ServerConfig::default()
        .with_max_message_size(1024)
        .with_close_timeout(LINGER);
    let (server, addr) = relay(config).await;
    let mut big = RawClient::connect_bound(addr, "big").await.unwrap();
    let mut bystander = RawClient::connect_bound(addr, "ok").await.unwrap();
    // Exactly at the limit is fine.
    let at_limit = format!(r#"{{"event":"size","payload":"{}","callbackId":"1"}}"#, {
        let overhead = r#"{"event":"size","payload":"","callbackId":"1"}"#.len();
        "a".repeat(1024 - overhead)
    });
    assert_eq!(at_limit.len(), 1024);
    big.send_text(&at_limit).await.unwrap();
    assert!(big.recv_text(TIMEOUT).await.is_some());
    let over = format!(r#"{{"event":"size","payload":"{}"}}"#, "a".repeat(2000));
    big.send_text(&over).await.unwrap();
    let close = big.expect_close(TIMEOUT).await;
    assert_eq!(close.map(|c| c.0), Some(1009));
    assert!(big.expect_eof(TIMEOUT).await);
    assert_echo(&mut bystander, 1).await;
    let stats = server.stats();
    assert_eq!(stats.protocol_errors, 1);
    assert!(crosswire_testkit::wait_until(TIMEOUT, || server.connection_count() == 1).await);
    // A fragmented message over the limit is refused the same way.
    let mut frag = RawClient::connect_bound(addr, "frag").await.unwrap();
    let part = vec![b'a'; 600];
    frag.send_raw(&client_frame_with(false, OpCode::Text, &part, true))
        .await
        .unwrap();
    frag.send_raw(&client_frame_with(true, OpCode::Continuation, &part, true))
        .await
        .unwrap();
    assert_eq!(frag.expect_close(TIMEOUT).await.map(|c| c.0), Some(1009));
    assert_echo(&mut bystander, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_mib_message_under_the_default_limit_is_handled() {
    let (_server, addr) = relay(ServerConfig::default()).await;
    let mut c = RawClient::connect_bound(addr, "c").await.unwrap();
    let mut bystander = RawClient::connect_bound(addr, "ok").await.unwrap();
    let data = "b".repeat(4 << 20);
    c.send_text(&format!(
        r#"{{"event":"size","payload":"{data}","callbackId":"big"}}"#
    ))
    .await
    .unwrap();
    assert_eq!(
        c.recv_text(TIMEOUT).await,
        Some(format!(
            r#"{{"callbackId":"big","payload":{}}}"#,
            data.len() + 2
        ))
    );
    assert_echo(&mut c, 1).await;
    assert_echo(&mut bystander, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmented_messages_and_interleaved_pings_are_assembled() {
    let (_server, addr) = relay(ServerConfig::default()).await;
    let mut c = RawClient::connect_bound(addr, "c").await.unwrap();
    let text = r#"{"event":"echo","payload":"fragmented","callbackId":"f"}"#;
    let (a, rest) = text.as_bytes().split_at(10);
    let (b, d) = rest.split_at(20);
    let mut wire = client_frame_with(false, OpCode::Text, a, true);
    wire.extend(client_frame_with(false, OpCode::Continuation, b, true));
    wire.extend(client_frame(OpCode::Ping, b"mid"));
    wire.extend(client_frame_with(true, OpCode::Continuation, d, true));
    // One byte at a time: the decoder must cope with every split.
    for byte in wire {
        c.send_raw(&[byte]).await.unwrap();
    }
    assert_eq!(
        c.recv_text(TIMEOUT).await.as_deref(),
        Some(r#"{"callbackId":"f","payload":"fragmented"}"#)
    );
}

/// Breaking RFC 6455 closes that connection with the right code and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_close_with_their_code() {
    let (server, addr) = relay(ServerConfig::default().with_close_timeout(LINGER)).await;
    let mut bystander = RawClient::connect_bound(addr, "ok").await.unwrap();
    let mut reserved = client_frame(OpCode::Text, b"x");
    reserved[0] |= 0x40;
    let mut unknown_opcode = client_frame(OpCode::Text, b"x");
    unknown_opcode[0] = (unknown_opcode[0] & 0xF0) | 0x3;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "unmasked frame",
            client_frame_with(true, OpCode::Text, br#"{"event":"echo"}"#, false),
            1002,
        ),
        ("reserved bits", reserved, 1002),
        ("unknown opcode", unknown_opcode, 1002),
        (
            "fragmented ping",
            client_frame_with(false, OpCode::Ping, b"", true),
            1002,
        ),
        (
            "ping over 125 bytes",
            client_frame(OpCode::Ping, &[0u8; 126]),
            1002,
        ),
        (
            "continuation without a message",
            client_frame(OpCode::Continuation, b"x"),
            1002,
        ),
        (
            "text that is not UTF-8",
            client_frame(OpCode::Text, &[0xff, 0xfe, b'a']),
            1007,
        ),
        (
            // Refused at the fragment that makes it invalid, the last one never sent
            // (Autobahn 6.4.1).
            "a fragment that makes the text not UTF-8",
            [
                client_frame_with(false, OpCode::Text, "κόσμε".as_bytes(), true),
                client_frame_with(false, OpCode::Continuation, &[0xf4, 0x90, 0x80], true),
            ]
            .concat(),
            1007,
        ),
    ];
    for (n, (name, frame, code)) in cases.into_iter().enumerate() {
        let before: Stats = server.stats();
        let mut c = RawClient::connect_bound(addr, &format!("v{n}"))
            .await
            .unwrap();
        c.send_raw(&frame).await.unwrap();
        assert_eq!(
            c.expect_close(TIMEOUT).await.map(|c| c.0),
            Some(code),
            "{name}"
        );
        assert!(c.expect_eof(TIMEOUT).await, "{name}: connection must end");
        assert_eq!(
            server.stats().protocol_errors,
            before.protocol_errors + 1,
            "{name}"
        );
        assert_echo(&mut bystander, n as u32).await;
    }
    assert!(crosswire_testkit::wait_until(TIMEOUT, || server.connection_count() == 1).await);
    assert_eq!(server.stats().bound_ids, 1);
}

/// A reply bigger than the send queue bound, to a client that reads: with an empty queue
/// the frame must still go out (the bound is about backlog, not message size).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_larger_than_the_queue_bound_reaches_a_reading_client() {
    let (server, addr) = relay(ServerConfig::default().with_max_queue_bytes(64 << 10)).await;
    let mut c = RawClient::connect_bound(addr, "c").await.unwrap();
    let data = "e".repeat(256 << 10);
    c.send_text(&format!(
        r#"{{"event":"echo","payload":"{data}","callbackId":"big"}}"#
    ))
    .await
    .unwrap();
    let reply = c.recv_text(TIMEOUT).await;
    assert_eq!(
        reply.map(|r| r.len()),
        Some(r#"{"callbackId":"big","payload":""}"#.len() + data.len())
    );
    assert_eq!(server.stats().slow_disconnects, 0);
}

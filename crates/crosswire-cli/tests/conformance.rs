//! Outside conformance run of the relay contract (SPEC §1, §4) against the real
//! `crosswire serve` binary, with raw WebSocket clients sending exact JSON.
//!
//! "Exactly the right sockets" is checked with sentinels: after the expected deliveries, a
//! probe sends each socket a unique `to` message (once every earlier send was acknowledged),
//! and that sentinel must be the very next frame, so any extra delivery fails the test.

mod common;

use std::time::Duration;

use common::{Incoming, Raw, Relay, STEP};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const OK: fn() -> Value = || json!({"ok": true});

#[tokio::test]
async fn heartbeat_and_echo_are_exact() {
    let relay = Relay::start(&[]).await;
    let mut a = Raw::connect(&relay, "a").await;

    // Application heartbeat: "" comes back as "".
    for _ in 0..3 {
        a.send_text("").await;
        assert_eq!(a.recv_text().await, "");
    }

    // Echo replies with exactly {"callbackId", "payload"} and the same payload, whatever it is.
    for payload in [
        json!(null),
        json!(0),
        json!(-12.5e-3),
        json!(true),
        json!(""),
        json!("text with \"quotes\", \\ backslash, \u{e9}t\u{e9} and \u{1f600}"),
        json!([]),
        json!({}),
        json!({"nested": {"list": [1, "two", null, {"x": [[]]}]}, "n": 18446744073709551615u64}),
    ] {
        assert_eq!(a.request("echo", payload.clone()).await, payload);
    }

    // The raw text of the echoed payload survives byte for byte (no re-serialisation).
    a.send_text(r#"{"event":"echo","payload":{"b" : 1,"a":[1.50, 2e3]},"callbackId":"raw"}"#)
        .await;
    let text = a.recv_text().await;
    assert!(
        text.contains(r#"{"b" : 1,"a":[1.50, 2e3]}"#),
        "payload re-serialised: {text}"
    );

    // A callbackId of exactly 64 characters is valid.
    let id64 = "x".repeat(64);
    a.send_json(&json!({"event": "echo", "payload": 7, "callbackId": id64}))
        .await;
    assert_eq!(
        a.recv_json().await,
        json!({"callbackId": id64, "payload": 7})
    );

    // Echo without a callbackId is not answered: the next frame is the sentinel.
    a.send_json(&json!({"event": "echo", "payload": "no reply wanted"}))
        .await;
    a.expect_nothing_more_self().await;
}

#[tokio::test]
async fn join_leave_and_room_delivery() {
    let relay = Relay::start(&[]).await;
    let mut a = Raw::connect(&relay, "a").await;
    let mut b = Raw::connect(&relay, "b").await;
    let mut c = Raw::connect(&relay, "c").await;
    let mut d = Raw::connect(&relay, "d").await;
    let mut probe = Raw::connect(&relay, "probe").await;

    assert_eq!(a.request("join", json!({"room": "r1"})).await, OK());
    assert_eq!(b.request("join", json!({"room": "r1"})).await, OK());
    assert_eq!(c.request("join", json!({"room": "r2"})).await, OK());
    // Joining twice is harmless and still answers ok.
    assert_eq!(b.request("join", json!({"room": "r1"})).await, OK());

    // room r1 from a (a member): a and b get it once; c and d nothing.
    let data = json!({"to": "r1", "n": 1});
    assert_eq!(
        a.request("room", json!({"room": "r1", "data": data})).await,
        OK()
    );
    a.expect_msg(&data).await;
    b.expect_msg(&data).await;
    for s in [&mut a, &mut b, &mut c, &mut d] {
        s.expect_nothing_more(&mut probe).await;
    }

    // room r2 from d (not a member): only c.
    let data = json!(["to r2"]);
    assert_eq!(
        d.request("room", json!({"room": "r2", "data": data})).await,
        OK()
    );
    c.expect_msg(&data).await;
    for s in [&mut a, &mut b, &mut c, &mut d] {
        s.expect_nothing_more(&mut probe).await;
    }

    // Without a callbackId the room send still happens, silently.
    let data = json!("silent");
    d.send_json(&json!({"event": "room", "payload": {"room": "r1", "data": data}}))
        .await;
    a.expect_msg(&data).await;
    b.expect_msg(&data).await;
    for s in [&mut a, &mut b, &mut c] {
        s.expect_nothing_more(&mut probe).await;
    }
    d.expect_nothing_more(&mut probe).await;

    // b leaves r1: only a gets r1 traffic. Leaving a room one is not in is ok too.
    assert_eq!(b.request("leave", json!({"room": "r1"})).await, OK());
    assert_eq!(b.request("leave", json!({"room": "nowhere"})).await, OK());
    let data = json!({"after": "leave"});
    assert_eq!(
        b.request("room", json!({"room": "r1", "data": data})).await,
        OK()
    );
    a.expect_msg(&data).await;
    for s in [&mut a, &mut b, &mut c, &mut d] {
        s.expect_nothing_more(&mut probe).await;
    }

    // An empty or unknown room delivers nothing.
    assert_eq!(
        a.request("room", json!({"room": "empty", "data": 1})).await,
        OK()
    );
    for s in [&mut a, &mut b, &mut c, &mut d] {
        s.expect_nothing_more(&mut probe).await;
    }

    // A socket that disconnects leaves its rooms: c closes, r2 delivers to nobody, and a new
    // socket with c's id is not in r2.
    c.close(1000).await;
    let mut c2 = Raw::connect(&relay, "c").await;
    assert_eq!(
        a.request("room", json!({"room": "r2", "data": "gone"}))
            .await,
        OK()
    );
    for s in [&mut a, &mut b, &mut c2, &mut d] {
        s.expect_nothing_more(&mut probe).await;
    }
    probe.expect_nothing_more_self().await;
}

#[tokio::test]
async fn all_to_and_ids_reach_exactly_their_targets() {
    let relay = Relay::start(&[]).await;
    let mut a = Raw::connect(&relay, "a").await;
    let mut b = Raw::connect(&relay, "b").await;
    let mut c = Raw::connect(&relay, "c").await;
    let mut d = Raw::connect(&relay, "d").await;
    let mut probe = Raw::connect(&relay, "probe").await;

    // all: every socket once, the sender and the probe included.
    let data = json!({"all": 1});
    assert_eq!(a.request("all", json!({"data": data})).await, OK());
    for s in [&mut a, &mut b, &mut c, &mut d, &mut probe] {
        s.expect_msg(&data).await;
    }
    for s in [&mut a, &mut b, &mut c, &mut d] {
        s.expect_nothing_more(&mut probe).await;
    }
    probe.expect_nothing_more_self().await;

    // to: only the target; to oneself works.
    let data = json!("for c");
    assert_eq!(
        a.request("to", json!({"id": "c", "data": data})).await,
        OK()
    );
    c.expect_msg(&data).await;
    let data = json!("for me");
    assert_eq!(
        b.request("to", json!({"id": "b", "data": data})).await,
        OK()
    );
    b.expect_msg(&data).await;
    for s in [&mut a, &mut b, &mut c, &mut d] {
        s.expect_nothing_more(&mut probe).await;
    }

    // to an unknown id: ok, nothing delivered anywhere.
    assert_eq!(
        a.request("to", json!({"id": "nobody", "data": 1})).await,
        OK()
    );
    for s in [&mut a, &mut b, &mut c, &mut d] {
        s.expect_nothing_more(&mut probe).await;
    }

    // ids: each listed client that exists, once; unknown ids are skipped.
    let data = json!({"ids": true});
    assert_eq!(
        d.request("ids", json!({"ids": ["b", "nobody", "c"], "data": data}))
            .await,
        OK()
    );
    b.expect_msg(&data).await;
    c.expect_msg(&data).await;
    for s in [&mut a, &mut b, &mut c, &mut d] {
        s.expect_nothing_more(&mut probe).await;
    }

    // ids with an empty list: nothing.
    assert_eq!(d.request("ids", json!({"ids": [], "data": 0})).await, OK());
    for s in [&mut a, &mut b, &mut c, &mut d] {
        s.expect_nothing_more(&mut probe).await;
    }
    probe.expect_nothing_more_self().await;
}

#[tokio::test]
async fn connection_without_id_is_closed_with_4011() {
    let relay = Relay::start(&[]).await;
    for (name, url) in [
        ("no query", format!("ws://{}/", relay.addr)),
        ("other params", relay.url("name=Sam&token=t")),
        ("empty id", relay.url("id=")),
    ] {
        let mut raw = Raw::connect_url(&url, name).await;
        raw.expect_close(4011).await;
    }
    // The server is still serving.
    let mut a = Raw::connect(&relay, "a").await;
    a.send_text("").await;
    assert_eq!(a.recv_text().await, "");
}

#[tokio::test]
async fn malformed_frames_are_survived() {
    let relay = Relay::start(&[]).await;
    let mut bad = Raw::connect(&relay, "bad").await;
    let mut other = Raw::connect(&relay, "other").await;
    let mut probe = Raw::connect(&relay, "probe").await;
    assert_eq!(other.request("join", json!({"room": "r"})).await, OK());

    let long_id = "y".repeat(65);
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_event = format!(r#"{{"event":{deep},"payload":1,"callbackId":"deep"}}"#);
    let deep_id = format!(r#"{{"event":"echo","payload":1,"callbackId":{deep}}}"#);
    let unclosed_deep = "{\"a\":".repeat(200_000);
    let text_frames: Vec<String> = vec![
        "not json".into(),
        "{".into(),
        "null".into(),
        "42".into(),
        r#""a string""#.into(),
        "[1,2,3]".into(),
        "{}".into(),
        r#"{"payload":1}"#.into(),
        r#"{"event":5,"payload":1}"#.into(),
        r#"{"event":null}"#.into(),
        r#"{"event":["echo"],"payload":1,"callbackId":"arr"}"#.into(),
        r#"{"event":"echo","payload":1,"callbackId":5}"#.into(),
        r#"{"event":"echo","payload":1,"callbackId":{"id":"x"}}"#.into(),
        format!(r#"{{"event":"echo","payload":1,"callbackId":"{long_id}"}}"#),
        r#"{"event":"echo","payload":1,"callbackId":"c1""#.into(),
        r#"{"event":"echo","payload":1,"callbackId":"c1"} trailing"#.into(),
        "\u{0}\u{1}\u{2}".into(),
        " ".into(),
        deep,
        deep_event,
        deep_id,
        unclosed_deep,
        // Unknown events, with and without a callbackId: ignored.
        r#"{"event":"no-such-event","payload":1,"callbackId":"unknown"}"#.into(),
        r#"{"event":"no-such-event"}"#.into(),
    ];
    for text in &text_frames {
        bad.send_text(text.clone()).await;
    }
    // A binary frame that is not UTF-8 is dropped (one carrying UTF-8 is handled like text,
    // as the seed does: checked below).
    bad.try_send(Message::binary(vec![0u8, 159, 146, 150]))
        .await
        .expect("sending a binary frame");

    // The socket still answers echo. Anything it received meanwhile may only be error
    // events (SPEC §1 allows answering malformed frames with one), never a reply to an
    // invalid frame.
    let reply = bad.request("echo", json!({"still": "alive"})).await;
    assert_eq!(reply, json!({"still": "alive"}));
    while let Some(incoming) = bad.recv_within(Duration::ZERO).await {
        let Incoming::Text(text) = &incoming else {
            panic!("unexpected {incoming:?} after malformed frames");
        };
        let value: Value = serde_json::from_str(text).expect("server frames are JSON");
        assert!(
            value.get("event").is_some() && value.get("callbackId").is_none(),
            "only error events may answer malformed frames, got {text}"
        );
    }
    bad.send_text("").await;
    assert_eq!(bad.recv_text().await, "");

    // A binary frame carrying UTF-8 text is processed like a text frame.
    bad.try_send(Message::binary(
        br#"{"event":"echo","payload":1,"callbackId":"bin"}"#.to_vec(),
    ))
    .await
    .expect("sending a binary frame");
    assert_eq!(bad.wait_reply("bin").await, json!(1));

    // Relay events with payloads of the wrong shape answer {"ok": false, "error"} and send
    // nothing.
    for (event, payload) in [
        ("join", json!(5)),
        ("join", json!({"room": 5})),
        ("leave", json!(null)),
        ("room", json!({"room": "r"})),
        ("room", json!({"data": 1})),
        ("all", json!({})),
        ("all", json!("data")),
        ("to", json!({"data": 1})),
        ("to", json!({"id": 7, "data": 1})),
        ("ids", json!({"ids": "other", "data": 1})),
        ("ids", json!({"ids": [1, 2], "data": 1})),
    ] {
        let reply = bad.request(event, payload.clone()).await;
        assert_eq!(
            reply.get("ok"),
            Some(&json!(false)),
            "{event} {payload}: {reply}"
        );
        assert!(
            reply.get("error").is_some_and(Value::is_string),
            "{event} {payload}: {reply}"
        );
    }
    for s in [&mut bad, &mut other] {
        s.expect_nothing_more(&mut probe).await;
    }

    // Other sockets were not affected, and the room still works.
    assert_eq!(other.request("echo", json!("fine")).await, json!("fine"));
    assert_eq!(
        probe
            .request("room", json!({"room": "r", "data": "r ok"}))
            .await,
        OK()
    );
    other.expect_msg(&json!("r ok")).await;
    other.expect_nothing_more(&mut probe).await;
    // And new connections are accepted.
    let mut late = Raw::connect(&relay, "late").await;
    late.expect_nothing_more(&mut probe).await;
}

/// Valid JSON nested millions of levels deep, in the payload and in unknown fields, is
/// survived (no stack overflow); a valid echo of it comes back byte for byte.
#[tokio::test]
async fn deeply_nested_json_is_survived() {
    let relay = Relay::start(&[]).await;
    let mut a = Raw::connect(&relay, "a").await;
    let mut other = Raw::connect(&relay, "other").await;

    let depth = 1_500_000; // 3 MB: the echo must fit the default 4 MiB send queue
    let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    a.send_text(format!(
        r#"{{"event":"no-such-event","payload":1,"extra":{deep}}}"#
    ))
    .await;
    a.send_text(format!(
        r#"{{"event":"echo","payload":{deep},"callbackId":"deep"}}"#
    ))
    .await;
    // The echo may be refused (ignored) or answered; if answered, exactly.
    let alive = a.request("echo", json!("after deep")).await;
    assert_eq!(alive, json!("after deep"));
    while let Some(incoming) = a.recv_within(Duration::ZERO).await {
        let Incoming::Text(text) = incoming else {
            panic!("unexpected {incoming:?}");
        };
        assert!(
            text.starts_with(r#"{"callbackId":"deep","payload":[[["#) && text.contains(&deep),
            "unexpected frame of {} bytes: {}...",
            text.len(),
            &text[..text.len().min(200)]
        );
    }
    assert_eq!(other.request("echo", json!(1)).await, json!(1));
    a.expect_nothing_more(&mut other).await;
}

#[tokio::test]
async fn four_mib_frame_under_the_default_limit() {
    four_mib_round_trip(&[]).await;
}

/// Same as [`four_mib_frame_under_the_default_limit`], with a send queue that can hold the
/// reply.
#[tokio::test]
async fn four_mib_frame_with_a_large_send_queue() {
    four_mib_round_trip(&["--max-queue-bytes", "33554432"]).await;
}

async fn four_mib_round_trip(args: &[&str]) {
    let relay = Relay::start(args).await;
    let mut a = Raw::connect(&relay, "a").await;
    let mut b = Raw::connect(&relay, "b").await;
    let big: String = (0..4 << 20)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let reply = a.request("echo", json!(big)).await;
    assert_eq!(reply.as_str().map(str::len), Some(big.len()));
    assert!(reply == json!(big), "4 MiB echo came back altered");

    // And relayed to another socket intact.
    assert_eq!(a.request("to", json!({"id": "b", "data": big})).await, OK());
    b.expect_msg(&json!(big)).await;
    b.expect_nothing_more(&mut a).await;
}

#[tokio::test]
async fn oversized_frame_closes_only_that_socket_with_1009() {
    let relay = Relay::start(&["--max-message-size", "1048576"]).await;
    let mut big_sender = Raw::connect(&relay, "big").await;
    let mut other = Raw::connect(&relay, "other").await;

    // Just under the limit is fine.
    let under = "u".repeat(1_000_000);
    assert_eq!(big_sender.request("echo", json!(under)).await, json!(under));

    let big = format!(
        r#"{{"event":"echo","payload":"{}","callbackId":"big"}}"#,
        "x".repeat(4 << 20)
    );
    // The server may stop reading as soon as it sees the frame is too big, so the write
    // itself may fail; what matters is what the socket receives.
    let sent = big_sender.try_send(Message::text(big)).await;
    match big_sender.recv().await {
        Incoming::Close(code, reason) => assert_eq!(code, 1009, "reason {reason:?}"),
        other => panic!("expected close 1009 (send result {sent:?}), got {other:?}"),
    }

    // The others are unaffected and the server keeps serving.
    assert_eq!(other.request("echo", json!("alive")).await, json!("alive"));
    other.send_text("").await;
    assert_eq!(other.recv_text().await, "");
    let mut fresh = Raw::connect(&relay, "fresh").await;
    assert_eq!(
        fresh.request("to", json!({"id": "other", "data": 1})).await,
        OK()
    );
    other.expect_msg(&json!(1)).await;
    // The id of the closed socket is free again.
    let mut again = Raw::connect(&relay, "big").await;
    assert_eq!(
        fresh.request("to", json!({"id": "big", "data": 2})).await,
        OK()
    );
    again.expect_msg(&json!(2)).await;
}

#[tokio::test]
async fn reconnected_id_receives_unicasts() {
    let relay = Relay::start(&[]).await;
    let mut sender = Raw::connect(&relay, "sender").await;

    // Close and reconnect with the same id.
    let first = Raw::connect(&relay, "x").await;
    first.close(1000).await;
    let mut second = Raw::connect(&relay, "x").await;
    assert_eq!(
        sender
            .request("to", json!({"id": "x", "data": "after reconnect"}))
            .await,
        OK()
    );
    second.expect_msg(&json!("after reconnect")).await;
    second.expect_nothing_more(&mut sender).await;
}

#[tokio::test]
async fn takeover_closes_the_first_socket_with_4012() {
    let relay = Relay::start(&[]).await;
    let mut sender = Raw::connect(&relay, "sender").await;

    let mut first = Raw::connect(&relay, "x").await;
    assert_eq!(first.request("join", json!({"room": "r"})).await, OK());

    // A second socket with the same id takes over while the first is open. The first is
    // not read yet, so its closing handshake is still unfinished on the server while the
    // second joins a room: the old socket's cleanup must not undo the new one's state.
    let mut second = Raw::connect(&relay, "x").await;
    assert_eq!(second.request("join", json!({"room": "r2"})).await, OK());
    assert_eq!(
        sender
            .request("to", json!({"id": "x", "data": "to the new one"}))
            .await,
        OK()
    );
    second.expect_msg(&json!("to the new one")).await;

    first.expect_close(4012).await;

    // After the first socket is completely gone, the id still reaches the second socket
    // (checked a few times, as the server finishes the old connection asynchronously).
    for n in 0..5 {
        assert_eq!(
            sender.request("to", json!({"id": "x", "data": n})).await,
            OK()
        );
        second.expect_msg(&json!(n)).await;
        assert_eq!(
            sender
                .request("room", json!({"room": "r2", "data": ["r2", n]}))
                .await,
            OK()
        );
        second.expect_msg(&json!(["r2", n])).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.expect_nothing_more(&mut sender).await;
}

#[tokio::test]
async fn sigterm_closes_every_client_with_1001_and_exits_0() {
    let mut relay = Relay::start(&[]).await;
    let mut clients = Vec::new();
    for n in 0..5 {
        let mut c = Raw::connect(&relay, &format!("c{n}")).await;
        assert_eq!(c.request("join", json!({"room": "r"})).await, OK());
        clients.push(c);
    }
    relay.signal("TERM");
    for c in &mut clients {
        c.expect_close(1001).await;
    }
    let status = relay.wait_exit(STEP).await;
    assert!(status.success(), "exit status {status}");
    // (The log reader thread may still be draining the pipe.)
    relay.wait_log("`stopped`", |l| l.contains("stopped")).await;
}

#[tokio::test]
async fn ids_are_percent_decoded_and_any_path_is_served() {
    let relay = Relay::start(&[]).await;
    let mut probe = Raw::connect(&relay, "probe").await;
    for (query_id, id) in [
        ("Sam%20Smith", "Sam Smith"),
        ("a%2Bb%26c%3Dd", "a+b&c=d"),
        ("%C3%A9t%C3%A9", "\u{e9}t\u{e9}"),
    ] {
        let mut raw = Raw::connect_url(&relay.url(&format!("id={query_id}&name=x")), id).await;
        // The server binds the id just after the upgrade: a round trip on the socket itself
        // makes sure that happened before someone else sends to it.
        assert_eq!(raw.request("echo", json!(0)).await, json!(0));
        assert_eq!(
            probe
                .request("to", json!({"id": id, "data": query_id}))
                .await,
            OK()
        );
        raw.expect_msg(&json!(query_id)).await;
        raw.expect_nothing_more(&mut probe).await;
    }
    // A path before the query (seed clients may use one to pick a route).
    let mut routed = Raw::connect_url(
        &format!("ws://{}/some/route?id=routed", relay.addr),
        "routed",
    )
    .await;
    assert_eq!(routed.request("echo", json!(1)).await, json!(1));
    routed.expect_nothing_more(&mut probe).await;
}

/// The protocol heartbeat (SPEC §1): with `--ping-interval 1`, a socket that never answers
/// WebSocket pings is terminated, while one that reads (and so answers) stays.
#[tokio::test]
async fn sockets_that_miss_protocol_pongs_are_terminated() {
    let relay = Relay::start_with(
        &["--ping-interval", "1"],
        &[("RUST_LOG", "info,crosswire::server=debug")],
    )
    .await;
    let started = std::time::Instant::now();
    let mut silent = Raw::connect(&relay, "silent").await;
    let mut live = Raw::connect(&relay, "live").await;
    // Keep `live` reading (tungstenite answers pings while reading) until the server has
    // dropped a socket and at least two ping rounds have passed.
    let deadline = started + STEP + STEP;
    loop {
        live.send_text("").await;
        assert_eq!(live.recv_text().await, "");
        let terminated = relay
            .lines()
            .iter()
            .any(|l| l.contains("no pong since the last ping"));
        if terminated && started.elapsed() > Duration::from_millis(2500) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no socket terminated for a missing pong:\n{}",
            relay.lines().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The silent socket is gone (it may still read the frames queued before the end).
    loop {
        match silent.recv().await {
            Incoming::Ended | Incoming::Error(_) | Incoming::Close(..) => break,
            Incoming::Text(_) | Incoming::Binary(_) => {}
        }
    }
    assert_eq!(live.request("echo", json!("alive")).await, json!("alive"));
    assert_eq!(
        relay
            .lines()
            .iter()
            .filter(|l| l.contains("no pong since the last ping"))
            .count(),
        1,
        "only the silent socket is terminated"
    );
    // Its id is free again.
    let mut again = Raw::connect(&relay, "silent").await;
    again.expect_nothing_more(&mut live).await;
}

/// Backpressure (SPEC §5): a client that stops reading is disconnected once its send queue
/// passes `--max-queue-bytes`, and the others keep being served.
#[tokio::test]
async fn a_stalled_reader_is_disconnected_and_others_are_served() {
    let relay = Relay::start_with(
        &["--max-queue-bytes", "1048576"],
        &[("RUST_LOG", "info,crosswire::socket=debug")],
    )
    .await;
    let mut stalled = Raw::connect(&relay, "stalled").await;
    let mut fast = Raw::connect(&relay, "fast").await;
    let mut sender = Raw::connect(&relay, "sender").await;
    let chunk = "z".repeat(64 << 10);
    let mut sent = 0usize;
    loop {
        assert_eq!(
            sender
                .request("to", json!({"id": "stalled", "data": chunk}))
                .await,
            OK()
        );
        sent += chunk.len();
        if relay
            .lines()
            .iter()
            .any(|l| l.contains("send queue full, disconnecting"))
        {
            break;
        }
        assert!(
            sent < 512 << 20,
            "stalled reader not disconnected after {sent} bytes:\n{}",
            relay.lines().join("\n")
        );
        // The others are not delayed meanwhile.
        if sent % (4 << 20) == 0 {
            assert_eq!(
                sender
                    .request("to", json!({"id": "fast", "data": sent}))
                    .await,
                OK()
            );
            fast.expect_msg(&json!(sent)).await;
        }
    }
    // The stalled socket gets what was already in flight, then the connection ends.
    loop {
        match stalled.recv().await {
            Incoming::Ended | Incoming::Error(_) | Incoming::Close(..) => break,
            Incoming::Text(_) | Incoming::Binary(_) => {}
        }
    }
    assert_eq!(fast.request("echo", json!("fine")).await, json!("fine"));
    fast.expect_nothing_more(&mut sender).await;
    let mut again = Raw::connect(&relay, "stalled").await;
    again.expect_nothing_more(&mut sender).await;
}

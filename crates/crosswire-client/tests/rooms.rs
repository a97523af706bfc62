//! Rooms with message recovery: `join`/`leave`, positions from positioned events, and the
//! rejoin after a reconnect, against the scripted server.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{config, dead_addr, next_event, next_open, ScriptServer, Seen};
use crosswire_client::{
    names, Client, ClientConfig, ClientEvent, ErrorCode, EventReceiver, Joined, Payload, Position,
    RejoinErrorInfo, RejoinInfo, RoomError,
};
use serde_json::{json, Value};

async fn open_client(
    server: &mut ScriptServer,
    tweak: impl FnOnce(ClientConfig) -> ClientConfig,
) -> Client {
    let client = Client::connect(tweak(config(&server.url()))).expect("valid config");
    client.wait_open(common::WAIT).await.expect("open");
    server.expect_connected().await;
    client
}

/// A `msg` event positioned in `stream`, with payload `{"n": n}`.
fn positioned(stream: &str, n: u64, offset: Value, epoch: &str) -> Value {
    json!({"event": "msg", "payload": {"n": n}, "stream": stream, "offset": offset, "epoch": epoch})
}

/// A history server's join reply.
fn joined_reply(room: &str, offset: u64, epoch: &str, recovered: bool) -> Value {
    json!({"ok": true, "stream": format!("relay/{room}"), "offset": offset, "epoch": epoch, "recovered": recovered})
}

fn joined(room: &str, offset: u64, epoch: &str, recovered: bool) -> Joined {
    Joined {
        recovered,
        stream: Some(format!("relay/{room}")),
        position: Some(Position::new(offset, epoch)),
    }
}

/// The next `msg` event with payload `{"n": n}`, as delivered on the event stream.
async fn msg(events: &mut EventReceiver, n: u64) -> Payload {
    next_event(events, &format!("msg {n}"), |e| match e {
        ClientEvent::Event { name, payload } if &**name == "msg" && payload.value()["n"] == n => {
            Some(payload.clone())
        }
        _ => None,
    })
    .await
}

async fn next_rejoin(events: &mut EventReceiver) -> RejoinInfo {
    next_event(events, "rejoin", |e| match e {
        ClientEvent::Rejoin(info) => Some(info.clone()),
        _ => None,
    })
    .await
}

async fn next_rejoin_error(events: &mut EventReceiver) -> RejoinErrorInfo {
    next_event(events, "rejoin-error", |e| match e {
        ClientEvent::RejoinError(info) => Some(info.clone()),
        _ => None,
    })
    .await
}

async fn join_frame(server: &mut ScriptServer, event: &str) -> Value {
    server.expect_frame(event, |v| v["event"] == event).await
}

#[tokio::test]
async fn join_sends_the_room_and_since_and_returns_the_reply() {
    let mut server = ScriptServer::start().await;
    server.answer("join", |payload| match payload["room"].as_str() {
        // A namespace without history.
        Some("plain") => json!({"ok": true}),
        Some(room) => joined_reply(room, 7, "e1", !payload["since"].is_null()),
        None => json!({"ok": false, "error": "no room"}),
    });
    let client = open_client(&mut server, |c| c).await;
    assert!(client.rooms().is_empty());

    let first = client.join("lobby").await.expect("joined");
    assert_eq!(first, joined("lobby", 7, "e1", false));
    let frame = join_frame(&mut server, "join").await;
    assert_eq!(frame["payload"], json!({"room": "lobby"}));
    assert!(frame["callbackId"].is_string());
    assert_eq!(client.rooms(), ["lobby"]);
    assert_eq!(client.position("lobby"), Some(Position::new(7, "e1")));

    // Joining again sends the position known as `since`.
    let again = client.join("lobby").await.expect("joined again");
    assert_eq!(again, joined("lobby", 7, "e1", true));
    let frame = join_frame(&mut server, "join").await;
    assert_eq!(
        frame["payload"],
        json!({"room": "lobby", "since": {"offset": 7, "epoch": "e1"}})
    );

    let plain = client.join("plain").await.expect("joined plain");
    assert_eq!(
        plain,
        Joined {
            recovered: false,
            stream: None,
            position: None
        }
    );
    let frame = join_frame(&mut server, "join").await;
    assert_eq!(frame["payload"], json!({"room": "plain"}));
    assert_eq!(client.rooms(), ["lobby", "plain"]);
    assert_eq!(client.position("plain"), None);
    assert_eq!(client.position("elsewhere"), None);
    client.manual_close();
}

#[tokio::test]
async fn positions_follow_positioned_events() {
    let mut server = ScriptServer::start().await;
    server.answer("join", |_| joined_reply("lobby", 7, "e1", false));
    let client = open_client(&mut server, |c| c).await;
    let handled = Arc::new(Mutex::new(Vec::new()));
    client.on("msg", {
        let handled = handled.clone();
        move |payload| {
            handled.lock().unwrap().push((
                payload.value()["n"].as_u64(),
                payload.stream().map(str::to_string),
                payload.position().cloned(),
            ));
        }
    });
    let mut events = client.events();
    client.join("lobby").await.expect("joined");
    let lobby = "relay/lobby";
    let at = |offset, epoch| Some(Position::new(offset, epoch));

    // A greater offset replaces the position.
    server.send_all(&positioned(lobby, 1, json!(8), "e1").to_string());
    let payload = msg(&mut events, 1).await;
    assert_eq!(payload.stream(), Some(lobby));
    assert_eq!(payload.position(), at(8, "e1").as_ref());
    assert_eq!(payload.value(), json!({"n": 1}));
    assert_eq!(client.position("lobby"), at(8, "e1"));

    // A smaller one does not (the event still carries its own).
    server.send_all(&positioned(lobby, 2, json!(5), "e1").to_string());
    assert_eq!(msg(&mut events, 2).await.position(), at(5, "e1").as_ref());
    assert_eq!(client.position("lobby"), at(8, "e1"));
    server.send_all(&positioned(lobby, 3, json!(8), "e1").to_string());
    msg(&mut events, 3).await;
    assert_eq!(client.position("lobby"), at(8, "e1"));

    // Another epoch replaces it, even with a smaller offset.
    server.send_all(&positioned(lobby, 4, json!(2), "e2").to_string());
    msg(&mut events, 4).await;
    assert_eq!(client.position("lobby"), at(2, "e2"));

    // Unpositioned or malformed positions: delivered as before, position untouched; another
    // stream's events do not move this room's position.
    server.send_all(r#"{"event":"msg","payload":{"n":5}}"#);
    assert_eq!(msg(&mut events, 5).await.position(), None);
    server.send_all(&positioned(lobby, 6, json!("9"), "e2").to_string());
    assert_eq!(msg(&mut events, 6).await.position(), None);
    server.send_all(&positioned("relay/other", 7, json!(100), "e2").to_string());
    assert_eq!(msg(&mut events, 7).await.stream(), Some("relay/other"));
    assert_eq!(client.position("lobby"), at(2, "e2"));

    assert_eq!(
        handled.lock().unwrap().as_slice(),
        &[
            (Some(1), Some(lobby.to_string()), at(8, "e1")),
            (Some(2), Some(lobby.to_string()), at(5, "e1")),
            (Some(3), Some(lobby.to_string()), at(8, "e1")),
            (Some(4), Some(lobby.to_string()), at(2, "e2")),
            (Some(5), None, None),
            (Some(6), None, None),
            (Some(7), Some("relay/other".to_string()), at(100, "e2")),
        ]
    );
    client.manual_close();
}

#[tokio::test]
async fn reconnect_rejoins_with_the_last_position_and_reports_rejoin() {
    let mut server = ScriptServer::start().await;
    // The stream's history: its epoch and last offset, changed by the test.
    let history = Arc::new(Mutex::new(("e1".to_string(), 7u64)));
    server.answer_after_events("join", {
        let history = history.clone();
        move |payload| {
            let (epoch, last) = history.lock().unwrap().clone();
            let since = &payload["since"];
            if since["epoch"] != epoch.as_str() {
                return (Vec::new(), joined_reply("lobby", last, &epoch, false));
            }
            // Replay what came after `since`, then reply.
            let from = since["offset"].as_u64().unwrap_or(0) + 1;
            let replay = (from..=last)
                .map(|offset| positioned("relay/lobby", offset, json!(offset), &epoch))
                .collect();
            (replay, joined_reply("lobby", last, &epoch, true))
        }
    });
    let client = open_client(&mut server, |c| c).await;
    let rejoined = Arc::new(Mutex::new(Vec::new()));
    client.on(names::REJOIN, {
        let rejoined = rejoined.clone();
        move |payload| rejoined.lock().unwrap().push(payload.value())
    });
    let mut events = client.events();
    assert_eq!(
        client.join("lobby").await.expect("joined"),
        joined("lobby", 7, "e1", false)
    );
    join_frame(&mut server, "join").await;
    for offset in 8..=9 {
        server.send_all(&positioned("relay/lobby", offset, json!(offset), "e1").to_string());
        msg(&mut events, offset).await;
    }
    assert_eq!(client.position("lobby"), Some(Position::new(9, "e1")));

    // Messages 10 and 11 go out while the client is away; the connection drops abruptly.
    *history.lock().unwrap() = ("e1".to_string(), 11);
    server.drop_connections();
    let close = next_event(&mut events, "close", |e| match e {
        ClientEvent::Close(info) => Some(info.code),
        _ => None,
    })
    .await;
    assert_eq!(close, 1006);
    next_open(&mut events).await;
    server.expect_connected().await;
    let frame = join_frame(&mut server, "join").await;
    assert_eq!(
        frame["payload"],
        json!({"room": "lobby", "since": {"offset": 9, "epoch": "e1"}})
    );
    // The replayed messages come first, then `rejoin`.
    let mut order = Vec::new();
    let rejoin = next_event(&mut events, "rejoin", |e| match e {
        ClientEvent::Event { payload, .. } => {
            order.push(payload.value());
            None
        }
        ClientEvent::Rejoin(info) => {
            order.push(e.payload().value());
            Some(info.clone())
        }
        _ => None,
    })
    .await;
    let expected = json!({"room": "lobby", "recovered": true, "stream": "relay/lobby", "offset": 11, "epoch": "e1"});
    assert_eq!(
        order,
        [json!({"n": 10}), json!({"n": 11}), expected.clone()]
    );
    assert_eq!(
        rejoin,
        RejoinInfo {
            room: "lobby".into(),
            recovered: true,
            stream: Some("relay/lobby".into()),
            offset: Some(11),
            epoch: Some("e1".into()),
        }
    );
    assert_eq!(rejoin.position(), Some(Position::new(11, "e1")));
    assert_eq!(client.position("lobby"), Some(Position::new(11, "e1")));
    assert_eq!(rejoined.lock().unwrap().as_slice(), &[expected]);

    // The history is lost meanwhile (a new epoch): not recovered, the position restarts.
    *history.lock().unwrap() = ("e2".to_string(), 3);
    server.drop_connections();
    next_open(&mut events).await;
    server.expect_connected().await;
    let frame = join_frame(&mut server, "join").await;
    assert_eq!(
        frame["payload"]["since"],
        json!({"offset": 11, "epoch": "e1"})
    );
    let rejoin = next_rejoin(&mut events).await;
    assert!(!rejoin.recovered);
    assert_eq!(rejoin.position(), Some(Position::new(3, "e2")));
    assert_eq!(client.position("lobby"), Some(Position::new(3, "e2")));
    assert_eq!(client.rooms(), ["lobby"]);
    client.manual_close();
}

#[tokio::test]
async fn rejoin_refused_or_unanswered_is_reported_as_rejoin_error() {
    let mut server = ScriptServer::start().await;
    server.answer("join", |payload| {
        if payload["since"].is_null() {
            joined_reply("lobby", 1, "e1", false)
        } else {
            json!({"ok": false, "error": "room closed"})
        }
    });
    let client = open_client(&mut server, |c| {
        c.with_callback_timeout(Duration::from_millis(300))
    })
    .await;
    let failures = Arc::new(Mutex::new(Vec::new()));
    client.on(names::REJOIN_ERROR, {
        let failures = failures.clone();
        move |payload| failures.lock().unwrap().push(payload.value())
    });
    let mut events = client.events();
    client.join("lobby").await.expect("joined");

    server.drop_connections();
    next_open(&mut events).await;
    let failure = next_rejoin_error(&mut events).await;
    assert_eq!(
        failure,
        RejoinErrorInfo {
            room: "lobby".into(),
            error: "refused: room closed".into(),
        }
    );
    assert_eq!(
        failures.lock().unwrap().as_slice(),
        &[json!({"room": "lobby", "error": "refused: room closed"})]
    );
    // Still joined on the client's side: the next reconnect tries again.
    assert_eq!(client.rooms(), ["lobby"]);

    server.set_reply_callbacks(false);
    server.drop_connections();
    next_open(&mut events).await;
    let failure = next_rejoin_error(&mut events).await;
    assert_eq!(failure.room, "lobby");
    assert!(
        failure.error.starts_with("CALLBACK_TIMEOUT"),
        "{}",
        failure.error
    );
    assert_eq!(client.rooms(), ["lobby"]);
    client.manual_close();
}

#[tokio::test]
async fn leave_forgets_the_room_and_its_position() {
    let mut server = ScriptServer::start().await;
    server.answer("join", |payload| {
        joined_reply(payload["room"].as_str().unwrap_or("?"), 4, "e1", false)
    });
    server.answer("leave", |payload| match payload["room"].as_str() {
        Some("stuck") => json!({"ok": false, "error": "not a member"}),
        _ => json!({"ok": true}),
    });
    let client = open_client(&mut server, |c| c).await;
    let mut events = client.events();
    for room in ["lobby", "other", "stuck"] {
        client.join(room).await.expect("joined");
    }
    assert_eq!(client.rooms(), ["lobby", "other", "stuck"]);

    client.leave("lobby").await.expect("left");
    let frame = server
        .expect_frame("leave", |v| v["event"] == "leave")
        .await;
    assert_eq!(frame["payload"], json!({"room": "lobby"}));
    assert!(frame["callbackId"].is_string());
    assert_eq!(client.rooms(), ["other", "stuck"]);
    assert_eq!(client.position("lobby"), None);
    assert_eq!(client.position("other"), Some(Position::new(4, "e1")));

    // A refused leave is an error, and the room is forgotten all the same.
    assert_eq!(
        client.leave("stuck").await,
        Err(RoomError::Refused("not a member".into()))
    );
    assert_eq!(client.rooms(), ["other"]);

    // After a reconnect only the room still joined is joined again.
    server.drop_connections();
    next_open(&mut events).await;
    server.expect_connected().await;
    assert_eq!(next_rejoin(&mut events).await.room, "other");
    client.emit("marker", &()).expect("open");
    let mut rejoined = Vec::new();
    server
        .expect("the marker", |seen| match seen {
            Seen::Frame(v) if v["event"] == "join" => {
                rejoined.push(v["payload"].clone());
                None
            }
            Seen::Frame(v) if v["event"] == "marker" => Some(()),
            _ => None,
        })
        .await;
    assert_eq!(
        rejoined,
        [json!({"room": "other", "since": {"offset": 4, "epoch": "e1"}})]
    );
    client.manual_close();
}

#[tokio::test]
async fn failed_joins_are_errors_and_join_nothing() {
    let mut server = ScriptServer::start().await;
    server.answer("join", |payload| match payload["room"].as_str() {
        Some("secret") => json!({"ok": false, "error": "no such room"}),
        _ => json!({"ok": false}),
    });
    let client = open_client(&mut server, |c| {
        c.with_callback_timeout(Duration::from_millis(200))
    })
    .await;
    assert_eq!(
        client.join("secret").await,
        Err(RoomError::Refused("no such room".into()))
    );
    assert_eq!(
        client.join("any").await,
        Err(RoomError::Refused("refused".into()))
    );

    // A server that does not know `join` (the default echo reply has no `ok`).
    server.behaviour.answers.lock().unwrap().clear();
    match client.join("lobby").await {
        Err(RoomError::Request(e)) => assert_eq!(e.code, ErrorCode::InvalidReply),
        other => panic!("{other:?}"),
    }
    // No reply at all.
    server.set_reply_callbacks(false);
    match client.join("lobby").await {
        Err(RoomError::Request(e)) => assert_eq!(e.code, ErrorCode::CallbackTimeout),
        other => panic!("{other:?}"),
    }
    assert!(client.rooms().is_empty());
    client.manual_close();

    // Not open.
    let addr = dead_addr().await;
    let client =
        Client::connect(config(&format!("ws://{addr}")).with_repeat_limit(Some(0))).unwrap();
    match client.join("lobby").await {
        Err(RoomError::Request(e)) => assert_eq!(e.code, ErrorCode::WsNotOpen),
        other => panic!("{other:?}"),
    }
    match client.leave("lobby").await {
        Err(RoomError::Request(e)) => assert_eq!(e.code, ErrorCode::WsNotOpen),
        other => panic!("{other:?}"),
    }
    assert!(client.rooms().is_empty());
    client.manual_close();
}

#[tokio::test]
async fn custom_event_names_for_joins_rejoins_and_leaves() {
    let mut server = ScriptServer::start().await;
    server.answer("subscribe", |_| joined_reply("lobby", 2, "e1", false));
    server.answer("unsubscribe", |_| json!({"ok": true}));
    let client = open_client(&mut server, |c| {
        c.with_join_events("subscribe", "unsubscribe")
    })
    .await;
    let mut events = client.events();
    client.join("lobby").await.expect("joined");
    assert_eq!(
        join_frame(&mut server, "subscribe").await["payload"],
        json!({"room": "lobby"})
    );

    server.drop_connections();
    next_open(&mut events).await;
    assert_eq!(
        join_frame(&mut server, "subscribe").await["payload"],
        json!({"room": "lobby", "since": {"offset": 2, "epoch": "e1"}})
    );
    assert_eq!(next_rejoin(&mut events).await.room, "lobby");

    client.leave("lobby").await.expect("left");
    assert_eq!(
        join_frame(&mut server, "unsubscribe").await["payload"],
        json!({"room": "lobby"})
    );
    assert!(client.rooms().is_empty());
    client.manual_close();
}

//! The Rust client (`crosswire-client`) against the real `crosswire serve` binary: requests
//! and replies, timeouts, the pending hook, the heartbeat against a frozen server (SIGSTOP),
//! the reconnect schedule against a killed and restarted server, the repeat limit and
//! manual close (SPEC §3).
//!
//! Server → client requests are not covered here: the relay never sends any (see the
//! library's own tests).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Raw, Relay, STEP};
use crosswire_client::{
    Client, ClientConfig, ClientEvent, CloseInfo, ConnectionState, EmitOptions, ErrorCode,
    EventReceiver, Payload, ReconnectInfo, WaitError,
};
use serde_json::{json, Value};

const MS: fn(u64) -> Duration = Duration::from_millis;

/// A client of `relay` with id `id`, heartbeat off unless the test turns it on.
fn config(relay: &Relay, id: &str) -> ClientConfig {
    ClientConfig::new(relay.base_url())
        .with_param("id", id)
        .with_ping_interval(Duration::ZERO)
}

/// Receives events until `f` picks one (skipping the others), at most `timeout`.
async fn wait_event_within<T>(
    events: &mut EventReceiver,
    what: &str,
    timeout: Duration,
    mut f: impl FnMut(&ClientEvent) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => {
                if let Some(found) = f(&event) {
                    return found;
                }
                seen.push(event);
            }
            Ok(None) => panic!("event stream ended while waiting for {what}; seen {seen:?}"),
            Err(_) => panic!("no {what} within {timeout:?}; seen {seen:?}"),
        }
    }
}

async fn wait_event<T>(
    events: &mut EventReceiver,
    what: &str,
    f: impl FnMut(&ClientEvent) -> Option<T>,
) -> T {
    wait_event_within(events, what, STEP, f).await
}

/// Waits for the next `reconnect` event; returns it and when it arrived.
async fn next_reconnect(events: &mut EventReceiver) -> (ReconnectInfo, Instant) {
    wait_event(events, "reconnect", |e| match e {
        ClientEvent::Reconnect(info) => Some((*info, Instant::now())),
        ClientEvent::Open => panic!("opened while the server is down"),
        _ => None,
    })
    .await
}

async fn wait_close(events: &mut EventReceiver) -> CloseInfo {
    wait_event(events, "close", |e| match e {
        ClientEvent::Close(info) => Some(info.clone()),
        _ => None,
    })
    .await
}

async fn wait_open(events: &mut EventReceiver) {
    wait_event(events, "open", |e| {
        matches!(e, ClientEvent::Open).then_some(())
    })
    .await;
}

/// Waits for an application event `name`; returns its payload.
async fn wait_app_event(events: &mut EventReceiver, name: &str) -> Value {
    wait_event(events, name, |e| match e {
        ClientEvent::Event { name: n, payload } if &**n == name => Some(payload.value()),
        _ => None,
    })
    .await
}

/// Checks that `id`'s client receives a unicast sent by a raw socket.
async fn check_unicast(
    relay: &Relay,
    client: &Client,
    events: &mut EventReceiver,
    id: &str,
    data: Value,
) {
    // The server binds the id just after the upgrade, so `open` alone does not mean others
    // can reach the client yet; a round trip on the client's own connection does.
    let echo = client.request("echo", &"bound?", EmitOptions::new()).await;
    assert!(echo.is_success(), "{echo:?}");
    let mut sender = Raw::connect(relay, &format!("sender-of-{id}")).await;
    assert_eq!(
        sender.request("to", json!({"id": id, "data": data})).await,
        json!({"ok": true})
    );
    assert_eq!(wait_app_event(events, "msg").await, data);
}

#[tokio::test]
async fn open_request_emit_and_server_events() {
    let relay = Relay::start(&[]).await;
    let client = Client::connect(config(&relay, "me").with_ping_interval(MS(100))).unwrap();
    let mut events = client.events();
    let from_handler = Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let seen = from_handler.clone();
    client.on("msg", move |payload| {
        seen.lock().unwrap().push(payload.value())
    });

    wait_open(&mut events).await;
    assert!(client.is_open());
    assert_eq!(client.state(), ConnectionState::Open);
    client.wait_open(STEP).await.unwrap();

    // request: {success: true, data} with the echoed payload.
    let payload = json!({"x": [1, 2, {"y": null}], "s": "\u{e9}"});
    let response = client.request("echo", &payload, EmitOptions::new()).await;
    assert_eq!(
        serde_json::to_value(&response).unwrap(),
        json!({"success": true, "data": payload})
    );
    let typed = client
        .request_as::<Vec<u32>, _>("echo", &[1u32, 2, 3], EmitOptions::new())
        .await;
    assert_eq!(typed.data(), Some(&vec![1, 2, 3]));

    // emit with a callback.
    let (tx, rx) = tokio::sync::oneshot::channel();
    client.emit_with_callback("echo", &json!("cb"), EmitOptions::new(), move |result| {
        let _ = tx.send(result);
    });
    let result = tokio::time::timeout(STEP, rx).await.unwrap().unwrap();
    assert_eq!(result.unwrap(), Payload::from_json(r#""cb""#).unwrap());

    // join / room: the relay's {"ok": true} and a server event.
    let joined = client
        .request("join", &json!({"room": "lobby"}), EmitOptions::new())
        .await;
    assert_eq!(joined.data().map(Payload::value), Some(json!({"ok": true})));
    let mut other = Raw::connect(&relay, "other").await;
    assert_eq!(
        other
            .request("room", json!({"room": "lobby", "data": {"hello": "lobby"}}))
            .await,
        json!({"ok": true})
    );
    assert_eq!(
        wait_app_event(&mut events, "msg").await,
        json!({"hello": "lobby"})
    );

    // emit without a callback: `to` oneself comes back as an event.
    client
        .emit("to", &json!({"id": "me", "data": "self"}))
        .unwrap();
    assert_eq!(wait_app_event(&mut events, "msg").await, json!("self"));
    assert_eq!(
        *from_handler.lock().unwrap(),
        [json!({"hello": "lobby"}), json!("self")]
    );

    // Heartbeat: "" is echoed; ping and pong events with a latency.
    wait_event(&mut events, "ping", |e| {
        matches!(e, ClientEvent::Ping).then_some(())
    })
    .await;
    let latency = wait_event(&mut events, "pong", |e| match e {
        ClientEvent::Pong { latency } => Some(*latency),
        _ => None,
    })
    .await;
    assert!(latency < STEP, "latency {latency:?}");
    assert!(client.is_open());
    client.manual_close();
}

#[tokio::test]
async fn unanswered_request_times_out() {
    let relay = Relay::start(&[]).await;
    let client = Client::connect(config(&relay, "me")).unwrap();
    client.wait_open(STEP).await.unwrap();

    // The relay ignores unknown events, so a request for one is never answered.
    let started = Instant::now();
    let response = client
        .request(
            "no-such-event",
            &json!(1),
            EmitOptions::new().with_callback_timeout(MS(300)),
        )
        .await;
    let elapsed = started.elapsed();
    assert_eq!(response.error_code(), Some(ErrorCode::CallbackTimeout));
    let value = serde_json::to_value(&response).unwrap();
    assert_eq!(value["success"], json!(false));
    assert_eq!(value["errorCode"], json!("CALLBACK_TIMEOUT"));
    assert!(value["error"].is_string());
    assert!(
        elapsed >= MS(300) && elapsed < STEP,
        "timed out after {elapsed:?}"
    );

    // The same through emit_with_callback, with the client's default timeout.
    let client2 = Client::connect(config(&relay, "me2").with_callback_timeout(MS(200))).unwrap();
    client2.wait_open(STEP).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    client2.emit_with_callback("no-such-event", &(), EmitOptions::new(), move |r| {
        let _ = tx.send(r);
    });
    let result = tokio::time::timeout(STEP, rx).await.unwrap().unwrap();
    assert_eq!(result.unwrap_err().code, ErrorCode::CallbackTimeout);

    // The connections are still fine.
    for c in [&client, &client2] {
        assert!(c.is_open());
        let echo = c.request("echo", &"ok", EmitOptions::new()).await;
        assert_eq!(echo.data().map(Payload::value), Some(json!("ok")));
    }
}

#[tokio::test]
async fn pending_hook_fires_while_the_server_is_frozen() {
    let relay = Relay::start(&[]).await;
    let client = Client::connect(config(&relay, "me")).unwrap();
    client.wait_open(STEP).await.unwrap();

    // A prompt reply: the hook (with a long pending timeout) never fires.
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let response = client
        .request(
            "echo",
            &1,
            EmitOptions::new()
                .with_pending_timeout(STEP)
                .on_pending(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                }),
        )
        .await;
    assert!(response.is_success());
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    // The server freezes: the hook fires once after the pending timeout, then the reply
    // comes when the server resumes.
    relay.freeze().await;
    let (pending_tx, mut pending_rx) = tokio::sync::mpsc::unbounded_channel();
    let counter = calls.clone();
    let request = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .request(
                    "echo",
                    &json!({"slow": true}),
                    EmitOptions::new()
                        .with_pending_timeout(MS(100))
                        .with_callback_timeout(STEP * 2)
                        .on_pending(move || {
                            counter.fetch_add(1, Ordering::SeqCst);
                            let _ = pending_tx.send(Instant::now());
                        }),
                )
                .await
        })
    };
    let started = Instant::now();
    let fired = match tokio::time::timeout(STEP, pending_rx.recv()).await {
        Ok(Some(fired)) => fired,
        Ok(None) => panic!(
            "request ended without the pending hook: {:?}",
            request.await
        ),
        Err(_) => panic!("pending hook did not fire within {STEP:?}"),
    };
    assert!(fired.duration_since(started) < STEP);
    relay.thaw();
    let response = tokio::time::timeout(STEP, request).await.unwrap().unwrap();
    assert_eq!(
        serde_json::to_value(&response).unwrap(),
        json!({"success": true, "data": {"slow": true}})
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "hook fired more than once");
}

#[tokio::test]
async fn reconnect_schedule_against_a_restarted_server() {
    let mut relay = Relay::start(&[]).await;
    let port = relay.port().to_string();
    let client = Client::connect(
        config(&relay, "me")
            .with_fast_reconnect_interval(MS(200))
            .with_fast_reconnect_threshold(2)
            .with_max_reconnect_interval(MS(1000))
            .with_connect_timeout(MS(1000)),
    )
    .unwrap();
    let mut events = client.events();
    wait_open(&mut events).await;
    check_unicast(&relay, &client, &mut events, "me", json!("before")).await;

    // The server dies without closing anything: error, close 1006, reconnect attempts.
    relay.kill();
    wait_event(&mut events, "error", |e| {
        matches!(e, ClientEvent::Error(_)).then_some(())
    })
    .await;
    assert_eq!(wait_close(&mut events).await.code, 1006);

    // Delays: attempts 1-2 wait the fast interval; then 2^(n-2) * 200 ms + jitter(0..200),
    // capped at 1 s.
    let mut schedule = Vec::new();
    for _ in 0..5 {
        schedule.push(next_reconnect(&mut events).await);
        assert!(client.reconnecting());
    }
    let repeats: Vec<u32> = schedule.iter().map(|(info, _)| info.repeat).collect();
    assert_eq!(repeats, [1, 2, 3, 4, 5]);
    let timeouts: Vec<u64> = schedule.iter().map(|(info, _)| info.timeout).collect();
    assert_eq!(timeouts[0], 200, "{timeouts:?}");
    assert_eq!(timeouts[1], 200, "{timeouts:?}");
    assert!((400..600).contains(&timeouts[2]), "{timeouts:?}");
    assert!((800..=1000).contains(&timeouts[3]), "{timeouts:?}");
    assert_eq!(timeouts[4], 1000, "{timeouts:?}");
    // Each attempt really waited its delay before failing and scheduling the next one.
    for pair in schedule.windows(2) {
        let ((info, at), (_, next_at)) = (pair[0], pair[1]);
        let gap = next_at.duration_since(at);
        assert!(
            gap + MS(100) >= MS(info.timeout) && gap < MS(info.timeout) + STEP,
            "attempt {} waited {gap:?}, scheduled {} ms",
            info.repeat,
            info.timeout
        );
    }

    // The server comes back on the same port: the next attempt opens, the count restarts
    // and unicasts arrive again.
    let relay = Relay::start(&["--port", &port]).await;
    wait_event(&mut events, "open", |e| match e {
        ClientEvent::Open => Some(()),
        ClientEvent::Reconnect(info) => {
            assert!(info.repeat >= 6, "count restarted before open: {info:?}");
            None
        }
        _ => None,
    })
    .await;
    assert!(client.is_open());
    assert!(!client.reconnecting());
    check_unicast(&relay, &client, &mut events, "me", json!("after restart")).await;
    let echo = client.request("echo", &"back", EmitOptions::new()).await;
    assert_eq!(echo.data().map(Payload::value), Some(json!("back")));

    // The attempt count restarted at the open.
    let mut relay = relay;
    relay.kill();
    let (info, _) = next_reconnect(&mut events).await;
    assert_eq!(
        info,
        ReconnectInfo {
            repeat: 1,
            timeout: 200
        }
    );
    client.manual_close();
}

#[tokio::test]
async fn heartbeat_timeout_on_a_frozen_server_then_reconnect() {
    let relay = Relay::start(&[]).await;
    let client = Client::connect(
        config(&relay, "me")
            .with_ping_interval(MS(200))
            .with_pong_timeout(MS(300))
            .with_fast_reconnect_interval(MS(200))
            .with_fast_reconnect_threshold(2)
            .with_max_reconnect_interval(MS(1000))
            .with_connect_timeout(MS(500)),
    )
    .unwrap();
    let mut events = client.events();
    wait_open(&mut events).await;
    // The heartbeat works.
    wait_event(&mut events, "pong", |e| {
        matches!(e, ClientEvent::Pong { .. }).then_some(())
    })
    .await;

    relay.freeze().await;
    let frozen = Instant::now();
    wait_event(&mut events, "pong-timeout", |e| match e {
        ClientEvent::PongTimeout => Some(()),
        ClientEvent::Pong { .. } if frozen.elapsed() > MS(300) => {
            panic!("pong from a frozen server")
        }
        _ => None,
    })
    .await;
    // Next ping at most 200 ms after the freeze, plus the 300 ms pong timeout.
    let detected = frozen.elapsed();
    assert!(
        detected >= MS(300) && detected < MS(2000),
        "pong timeout after {detected:?}"
    );
    let close = wait_close(&mut events).await;
    assert_eq!(
        close,
        CloseInfo {
            code: 4002,
            reason: "heartbeat timeout".into()
        }
    );
    // Reconnect attempts fail while the server is frozen (the handshake never completes).
    let (first, _) = next_reconnect(&mut events).await;
    assert_eq!(first.repeat, 1);
    wait_event(&mut events, "connect error", |e| {
        matches!(e, ClientEvent::Error(_)).then_some(())
    })
    .await;
    let (second, _) = next_reconnect(&mut events).await;
    assert_eq!(second.repeat, 2);
    assert!(!client.is_open());

    relay.thaw();
    wait_open(&mut events).await;
    assert!(client.is_open());
    // The new connection owns the id, even though the server only now processes the old
    // connection's end.
    check_unicast(&relay, &client, &mut events, "me", json!("after thaw")).await;
    wait_event(&mut events, "pong", |e| {
        matches!(e, ClientEvent::Pong { .. }).then_some(())
    })
    .await;
    check_unicast(&relay, &client, &mut events, "me", json!("still")).await;
    client.manual_close();
}

#[tokio::test]
async fn repeat_limit_stops_the_attempts() {
    // A port where nothing listens (yet).
    let mut down = Relay::start(&[]).await;
    let port = down.port().to_string();
    let url = down.base_url();
    down.kill();

    let client = Client::connect(
        ClientConfig::new(url)
            .with_param("id", "me")
            .with_ping_interval(Duration::ZERO)
            .with_fast_reconnect_interval(MS(100))
            .with_fast_reconnect_threshold(3)
            .with_repeat_limit(Some(3)),
    )
    .unwrap();
    let mut events = client.events();
    let mut repeats = Vec::new();
    let limit = wait_event(&mut events, "repeat-limit", |e| match e {
        ClientEvent::Reconnect(info) => {
            assert_eq!(info.timeout, 100);
            repeats.push(info.repeat);
            None
        }
        ClientEvent::RepeatLimit(limit) => Some(*limit),
        ClientEvent::Open => panic!("opened with nothing listening"),
        _ => None,
    })
    .await;
    assert_eq!(limit, 3);
    assert_eq!(repeats, [1, 2, 3]);
    assert_eq!(client.state(), ConnectionState::Closed);
    assert!(!client.reconnecting());

    // The server comes up; the client stays put (no attempt within a generous window).
    let relay = Relay::start(&["--port", &port]).await;
    if let Ok(Some(event)) = tokio::time::timeout(MS(800), events.recv()).await {
        panic!("event after the repeat limit: {event:?}");
    }
    assert_eq!(client.state(), ConnectionState::Closed);
    let response = client.request("echo", &1, EmitOptions::new()).await;
    assert_eq!(response.error_code(), Some(ErrorCode::WsNotOpen));

    // reconnect(true) starts over.
    client.reconnect(true);
    let (info, _) = next_reconnect(&mut events).await;
    assert_eq!(
        info,
        ReconnectInfo {
            repeat: 1,
            timeout: 100
        }
    );
    wait_open(&mut events).await;
    check_unicast(
        &relay,
        &client,
        &mut events,
        "me",
        json!("reconnected by hand"),
    )
    .await;
    client.manual_close();
}

#[tokio::test]
async fn manual_close_ends_everything() {
    let relay = Relay::start_with(&[], &[("RUST_LOG", "info,crosswire::connection=debug")]).await;
    let client = Client::connect(config(&relay, "me")).unwrap();
    let mut events = client.events();
    wait_open(&mut events).await;

    // A request that will never be answered is waiting when the client closes.
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .request(
                    "no-such-event",
                    &(),
                    EmitOptions::new().with_callback_timeout(STEP * 4),
                )
                .await
        })
    };
    // Let the request go out.
    let echo = client.request("echo", &1, EmitOptions::new()).await;
    assert!(echo.is_success());

    client.manual_close();
    let close = wait_close(&mut events).await;
    assert_eq!(close.code, 4001);
    // The event stream ends: the task is over, no reconnect can follow.
    let rest = tokio::time::timeout(STEP, async {
        let mut rest = Vec::new();
        while let Some(event) = events.recv().await {
            rest.push(event);
        }
        rest
    })
    .await
    .expect("event stream did not end after manual_close");
    assert!(rest.is_empty(), "events after the close: {rest:?}");
    assert_eq!(client.state(), ConnectionState::ManuallyClosed);
    assert!(!client.reconnecting());
    assert!(matches!(
        client.wait_open(MS(100)).await,
        Err(WaitError::Closed)
    ));
    assert!(client.emit("echo", &1).is_err());
    let response = client.request("echo", &1, EmitOptions::new()).await;
    assert_eq!(response.error_code(), Some(ErrorCode::WsNotOpen));
    let response = tokio::time::timeout(STEP, waiting).await.unwrap().unwrap();
    assert_eq!(response.error_code(), Some(ErrorCode::WsNotOpen));
    client.reconnect(true); // no effect after manual_close
    assert_eq!(client.state(), ConnectionState::ManuallyClosed);

    // The server saw close code 4001, and the id is free again.
    relay
        .wait_log("connection closed with code 4001", |l| {
            l.contains("connection closed") && l.contains("code=4001")
        })
        .await;
    let mut again = Raw::connect(&relay, "me").await;
    again.expect_nothing_more_self().await;
}

#[tokio::test]
async fn manual_close_while_reconnecting() {
    let mut relay = Relay::start(&[]).await;
    let client =
        Client::connect(config(&relay, "me").with_fast_reconnect_interval(MS(100))).unwrap();
    let mut events = client.events();
    wait_open(&mut events).await;
    relay.kill();
    let (info, _) = next_reconnect(&mut events).await;
    assert_eq!(info.repeat, 1);
    client.manual_close();
    let rest = tokio::time::timeout(STEP, async {
        let mut rest = Vec::new();
        while let Some(event) = events.recv().await {
            rest.push(event);
        }
        rest
    })
    .await
    .expect("event stream did not end after manual_close");
    assert!(
        rest.iter()
            .all(|e| matches!(e, ClientEvent::Error(_) | ClientEvent::Close(_))),
        "no reconnect after manual_close: {rest:?}"
    );
    assert!(!rest.iter().any(|e| matches!(e, ClientEvent::Reconnect(_))));
    assert_eq!(client.state(), ConnectionState::ManuallyClosed);
    assert!(!client.reconnecting());
}

#[tokio::test]
async fn server_shutdown_close_does_not_reconnect() {
    let relay = Relay::start(&[]).await;
    let client =
        Client::connect(config(&relay, "me").with_fast_reconnect_interval(MS(100))).unwrap();
    let mut events = client.events();
    wait_open(&mut events).await;
    relay.signal("TERM");
    let close = wait_close(&mut events).await;
    assert_eq!(close.code, 1001);
    assert_eq!(client.state(), ConnectionState::Closed);
    // A close from the server does not reconnect by itself: nothing within a window well
    // past the fast interval.
    if let Ok(Some(event)) = tokio::time::timeout(MS(600), events.recv()).await {
        panic!("event after a server close: {event:?}");
    }
    assert!(!client.reconnecting());
    client.manual_close();
}

/// Sends `room {"room", "data": n}` for `n` in `from..=to`, each acknowledged.
async fn send_to_room(sender: &mut Raw, room: &str, from: u64, to: u64) {
    for n in from..=to {
        let sent = sender
            .request("room", json!({"room": room, "data": n}))
            .await;
        assert_eq!(sent, json!({"ok": true}));
    }
}

/// Rooms and ids with history: the client joins, its node is killed with SIGKILL while
/// messages keep coming through another node (to its room and to its id), the node comes
/// back on the same port, and the client re-joins by itself with its last position and
/// reconnects with its id stream's: every message once and in order, `recovered: true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_room_is_recovered_after_the_node_is_killed() {
    let redis = common::redis();
    let urls = [redis.url()];
    let mut a = Relay::node("ra", &urls, &["--history"]).await;
    let b = Relay::node("rb", &urls, &["--history"]).await;
    for n in [&a, &b] {
        n.wait_cluster(&["ra", "rb"], 1).await;
    }
    let port = a.port().to_string();
    let client = Client::connect(config(&a, "rc").with_fast_reconnect_interval(MS(200))).unwrap();
    let mut events = client.events();
    wait_open(&mut events).await;
    let joined = client.join("news").await.expect("joined");
    assert!(!joined.recovered);
    assert_eq!(joined.stream.as_deref(), Some("relay/news"));
    let start = joined.position.expect("a position");
    let mut sender = Raw::connect(&b, "rs").await;
    send_to_room(&mut sender, "news", 1, 20).await;
    let mut got = Vec::new();
    while got.len() < 20 {
        got.push(wait_app_event(&mut events, "msg").await);
    }

    // And one message to the client's own id, so it knows where its id stream is.
    let sent = sender
        .request("to", json!({"id": "rc", "data": 1000}))
        .await;
    assert_eq!(sent, json!({"ok": true}));
    assert_eq!(wait_app_event(&mut events, "msg").await, json!(1000));

    a.kill();
    send_to_room(&mut sender, "news", 21, 40).await;
    for n in 1001..=1010 {
        let sent = sender.request("to", json!({"id": "rc", "data": n})).await;
        assert_eq!(sent, json!({"ok": true}));
    }
    let _a = Relay::node("ra", &urls, &["--history", "--port", &port]).await;
    let (mut rejoined, mut id_recovered) = (None, None);
    let mut direct = Vec::new();
    while got.len() < 40 || direct.len() < 10 || rejoined.is_none() || id_recovered.is_none() {
        wait_event_within(
            &mut events,
            "msg, rejoin or recovered",
            3 * STEP,
            |e| match e {
                ClientEvent::Event { name, payload } if &**name == "msg" => {
                    let v = payload.value();
                    if v.as_u64().is_some_and(|n| n > 1000) {
                        direct.push(v);
                    } else {
                        got.push(v);
                    }
                    Some(())
                }
                ClientEvent::Event { name, payload } if &**name == "recovered" => {
                    id_recovered = Some(payload.value());
                    Some(())
                }
                ClientEvent::Rejoin(info) => {
                    rejoined = Some(info.recovered);
                    Some(())
                }
                _ => None,
            },
        )
        .await;
    }
    assert_eq!(rejoined, Some(true));
    let report = id_recovered.expect("a report");
    assert_eq!(report["recovered"], json!(true), "{report}");
    assert_eq!(report["stream"], json!("@rc"));
    assert_eq!(got, (1..=40).map(|n| json!(n)).collect::<Vec<_>>());
    assert_eq!(direct, (1001..=1010).map(|n| json!(n)).collect::<Vec<_>>());
    let now = client.position("news").expect("a position");
    assert_eq!(now.epoch, start.epoch);
    assert_eq!(now.offset, start.offset + 40);
    client.manual_close();
}

//! The handler model through real WebSocket clients on loopback: extractor combinations
//! (sync and async, typed and raw payloads, every way of answering), rejections, state and
//! extensions, request headers and cookies, the forwarded client address, `On::once` under
//! concurrent events, and `to_all().except(..)` on one node and across two.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use crosswire::protocol::ws::OpCode;
use crosswire::system::{Connection, SocketError};
use crosswire::{
    Ack, Broker, Data, EventName, Extension, ExtractError, FromNode, HeaderRetention, MemoryBroker,
    MemoryHub, On, Payload, Reply, Server, ServerConfig, Socket, State, WsUpgrade,
};
use crosswire_testkit::{
    client_frame, install_relay, recv_within, serve_on_free_port, spawn_server, RawClient, TIMEOUT,
};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::Message;

// ----- helpers -----

/// A client event frame, with a `callbackId` when `callback` is given.
fn frame(event: &str, payload: &str, callback: Option<&str>) -> String {
    match callback {
        Some(cb) => format!(r#"{{"event":"{event}","payload":{payload},"callbackId":"{cb}"}}"#),
        None => format!(r#"{{"event":"{event}","payload":{payload}}}"#),
    }
}

/// Sends an event and returns every text the server sent back before the heartbeat echo.
/// Synchronous handlers (and rejections) answer on the connection's task before it reads
/// the heartbeat, so for them this is the complete answer.
async fn exchange(
    client: &mut RawClient,
    event: &str,
    payload: &str,
    callback: Option<&str>,
) -> Vec<String> {
    client
        .send_text(&frame(event, payload, callback))
        .await
        .unwrap();
    client.drain_until_heartbeat("").await
}

/// The exact reply frame `{"callbackId": cb, "payload": payload}`.
fn reply(cb: &str, payload: &str) -> String {
    format!(r#"{{"callbackId":"{cb}","payload":{payload}}}"#)
}

/// Checks `text` is an error answer to `cb` with `code`, and returns its message.
fn error_answer(text: &str, cb: &str, code: &str) -> String {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let object = v.as_object().expect("an object");
    assert_eq!(object.len(), 2, "callbackId and payload only: {text}");
    assert_eq!(v["callbackId"], cb, "{text}");
    let payload = v["payload"].as_object().expect("payload object");
    assert_eq!(payload.len(), 2, "error and code only: {text}");
    assert_eq!(v["payload"]["code"], code, "{text}");
    v["payload"]["error"]
        .as_str()
        .expect("error message")
        .to_string()
}

/// A counter shared with a handler.
fn counter() -> (Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let c = Arc::new(AtomicUsize::new(0));
    (Arc::clone(&c), c)
}

/// Errors raised as `system::SocketError`, with the connection they were about.
fn socket_errors(server: &Server) -> mpsc::UnboundedReceiver<(u64, String)> {
    let (tx, rx) = mpsc::unbounded_channel();
    server.on_system(
        move |SocketError { error, .. }: SocketError, socket: Socket| {
            let _ = tx.send((socket.conn_id(), error));
        },
    );
    rx
}

#[derive(Debug, Deserialize)]
struct Pair {
    x: i64,
    y: i64,
}

#[derive(Debug)]
struct DivByZero;

impl fmt::Display for DivByZero {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("division by zero")
    }
}

// ----- extractor combinations -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_and_async_handlers_with_typed_and_raw_payloads() {
    let (server, addr) = spawn_server(ServerConfig::default()).await;
    let (tx, mut sums) = mpsc::unbounded_channel();
    let t = tx.clone();
    server.on("sum", move |Data(p): Data<Pair>| {
        let _ = t.send(p.x + p.y);
        Ack(p.x + p.y)
    });
    let t = tx.clone();
    server.on("sum-async", move |Data(p): Data<Pair>| {
        let t = t.clone();
        async move {
            tokio::task::yield_now().await;
            let _ = t.send(p.x + p.y);
            Ack(p.x + p.y)
        }
    });
    server.on("raw", |payload: Payload| Ack(payload));
    server.on("raw-async", |payload: Payload| async move {
        tokio::task::yield_now().await;
        Ack(payload)
    });
    // Payload::parse on a raw payload, borrowing.
    server.on("raw-parse", |payload: Payload| {
        let words: Vec<&str> = payload.parse().unwrap_or_default();
        Ack(words.len())
    });
    let mut c = RawClient::connect(addr, "/").await.unwrap();

    // Sync, typed.
    assert_eq!(
        exchange(&mut c, "sum", r#"{"x":2,"y":3}"#, Some("1")).await,
        [reply("1", "5")]
    );
    assert_eq!(recv_within(&mut sums, TIMEOUT).await, Some(5));
    // Sync, raw: the payload comes back byte for byte (spacing, number forms, escapes).
    let raw = r#"{"b": [1, 2.50, null],  "a":"\u00e9"}"#;
    assert_eq!(
        exchange(&mut c, "raw", raw, Some("2")).await,
        [reply("2", raw)]
    );
    assert_eq!(
        exchange(&mut c, "raw-parse", r#"["a","b","c"]"#, Some("p")).await,
        [reply("p", "3")]
    );
    // Async, typed and raw: answered when the future is done.
    c.send_text(&frame("sum-async", r#"{"x":-4,"y":10}"#, Some("3")))
        .await
        .unwrap();
    assert_eq!(c.recv_text(TIMEOUT).await, Some(reply("3", "6")));
    assert_eq!(recv_within(&mut sums, TIMEOUT).await, Some(6));
    c.send_text(&frame("raw-async", raw, Some("4")))
        .await
        .unwrap();
    assert_eq!(c.recv_text(TIMEOUT).await, Some(reply("4", raw)));

    // Without a callbackId the handler runs and `Ack` answers nothing.
    assert!(exchange(&mut c, "sum", r#"{"x":1,"y":1}"#, None)
        .await
        .is_empty());
    assert_eq!(recv_within(&mut sums, TIMEOUT).await, Some(2));
    assert!(exchange(&mut c, "raw", "[]", None).await.is_empty());
    // The async handler runs too; the next frame is the answer to the next request.
    c.send_text(&frame("sum-async", r#"{"x":20,"y":1}"#, None))
        .await
        .unwrap();
    assert_eq!(recv_within(&mut sums, TIMEOUT).await, Some(21));
    c.send_text(&frame("sum-async", r#"{"x":0,"y":7}"#, Some("5")))
        .await
        .unwrap();
    assert_eq!(c.recv_text(TIMEOUT).await, Some(reply("5", "7")));
    assert_eq!(recv_within(&mut sums, TIMEOUT).await, Some(7));
    assert_eq!(c.drain_until_heartbeat("").await, Vec::<String>::new());
    assert_eq!(server.stats().rejected_events, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_and_required_replies() {
    let (server, addr) = spawn_server(ServerConfig::default()).await;
    let mut errors = socket_errors(&server);
    // Option<Reply>: called either way, with the reply only when one was asked for.
    let (tx, mut maybe) = mpsc::unbounded_channel();
    server.on(
        "maybe",
        move |reply: Option<Reply>, Data(v): Data<Value>| {
            let _ = tx.send(
                reply
                    .as_ref()
                    .and_then(|r| r.callback_id().map(str::to_string)),
            );
            if let Some(reply) = reply {
                let _ = reply.send(&json!({ "got": v }));
            }
        },
    );
    // Reply: required; the handler answers itself (its Result is the send's).
    let (must_calls, must_seen) = counter();
    server.on("must", move |reply: Reply, payload: Payload| {
        must_seen.fetch_add(1, Ordering::SeqCst);
        reply.send_raw(payload.raw())
    });
    // A Reply kept across an await, and one moved to another task.
    server.on("later", |reply: Reply, Data(n): Data<u64>| async move {
        tokio::task::yield_now().await;
        reply.send(&(n * 10))
    });
    server.on("elsewhere", |reply: Reply| {
        tokio::spawn(async move {
            let _ = reply.send("from a task");
        });
    });
    let mut c = RawClient::connect(addr, "/").await.unwrap();
    // Once the heartbeat is echoed the connection is registered.
    c.sync("").await.unwrap();
    let conn = server.sockets()[0].conn_id();

    assert_eq!(
        exchange(&mut c, "maybe", "[1]", Some("m1")).await,
        [reply("m1", r#"{"got":[1]}"#)]
    );
    assert_eq!(
        recv_within(&mut maybe, TIMEOUT).await,
        Some(Some("m1".to_string()))
    );
    assert!(exchange(&mut c, "maybe", "[2]", None).await.is_empty());
    assert_eq!(recv_within(&mut maybe, TIMEOUT).await, Some(None));

    assert_eq!(
        exchange(&mut c, "must", r#"{"k":"v"}"#, Some("r1")).await,
        [reply("r1", r#"{"k":"v"}"#)]
    );
    assert_eq!(must_calls.load(Ordering::SeqCst), 1);
    // Without a callbackId a required Reply rejects the event: not called, nothing sent,
    // counted and raised as a socket error.
    assert!(exchange(&mut c, "must", "1", None).await.is_empty());
    assert_eq!(must_calls.load(Ordering::SeqCst), 1, "handler not called");
    assert_eq!(server.stats().rejected_events, 1);
    assert_eq!(
        recv_within(&mut errors, TIMEOUT).await,
        Some((conn, ExtractError::NoReply.to_string()))
    );

    c.send_text(&frame("later", "4", Some("l"))).await.unwrap();
    assert_eq!(c.recv_text(TIMEOUT).await, Some(reply("l", "40")));
    c.send_text(&frame("elsewhere", "null", Some("e")))
        .await
        .unwrap();
    assert_eq!(
        c.recv_text(TIMEOUT).await,
        Some(reply("e", r#""from a task""#))
    );
    assert_eq!(server.stats().rejected_events, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_answer_ok_values_and_errors() {
    let (server, addr) = spawn_server(ServerConfig::default()).await;
    server.on(
        "div",
        |Data((a, b)): Data<(i64, i64)>| -> Result<Ack<i64>, String> {
            if b == 0 {
                Err("division by zero".to_string())
            } else {
                Ok(Ack(a / b))
            }
        },
    );
    server.on("div-async", |Data((a, b)): Data<(i64, i64)>| async move {
        tokio::task::yield_now().await;
        if b == 0 {
            return Err(DivByZero);
        }
        Ok(Ack(a / b))
    });
    // A handler that answered through its Reply and then failed: one answer, its own.
    server.on("sent-then-failed", |reply: Reply| -> Result<(), String> {
        reply.send("sent").map_err(|e| e.to_string())?;
        Err("failed after answering".to_string())
    });
    // Ok(()) answers nothing even when asked.
    server.on("ok-unit", || -> Result<(), String> { Ok(()) });
    let mut c = RawClient::connect(addr, "/").await.unwrap();

    assert_eq!(
        exchange(&mut c, "div", "[9,3]", Some("d1")).await,
        [reply("d1", "3")]
    );
    assert_eq!(
        exchange(&mut c, "div", "[9,0]", Some("d2")).await,
        [reply(
            "d2",
            r#"{"error":"division by zero","code":"handler_error"}"#
        )]
    );
    // An error without a callbackId is only logged.
    assert!(exchange(&mut c, "div", "[1,0]", None).await.is_empty());

    c.send_text(&frame("div-async", "[-8,2]", Some("a1")))
        .await
        .unwrap();
    assert_eq!(c.recv_text(TIMEOUT).await, Some(reply("a1", "-4")));
    c.send_text(&frame("div-async", "[1,0]", Some("a2")))
        .await
        .unwrap();
    assert_eq!(
        c.recv_text(TIMEOUT).await,
        Some(reply(
            "a2",
            r#"{"error":"division by zero","code":"handler_error"}"#
        ))
    );

    assert_eq!(
        exchange(&mut c, "sent-then-failed", "null", Some("s")).await,
        [reply("s", r#""sent""#)]
    );
    assert!(exchange(&mut c, "ok-unit", "null", Some("u"))
        .await
        .is_empty());
    // Handler errors are not rejections.
    assert_eq!(server.stats().rejected_events, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_extractors_in_one_handler() {
    let (server, addr) = spawn_server(ServerConfig::default().with_node_name("n1")).await;
    server.on(
        "everything",
        |name: EventName,
         server: Server,
         socket: Socket,
         Data(p): Data<Pair>,
         payload: Payload,
         node: Option<FromNode>,
         reply: Option<Reply>| {
            let answer = json!({
                "event": name.0,
                "node": server.node_name(),
                "conn": socket.conn_id(),
                "sum": p.x + p.y,
                "raw": payload.as_str(),
                "fromNode": node.map(|n| n.0),
            });
            if let Some(reply) = reply {
                let _ = reply.send(&answer);
            }
        },
    );
    let mut c = RawClient::connect(addr, "/").await.unwrap();
    let got = exchange(&mut c, "everything", r#"{"x":1, "y":2}"#, Some("x")).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let conn = server.sockets()[0].conn_id();
    assert_eq!(
        serde_json::from_str::<Value>(&got[0]).unwrap(),
        json!({"callbackId": "x", "payload": {
            "event": "everything",
            "node": "n1",
            "conn": conn,
            "sum": 3,
            "raw": r#"{"x":1, "y":2}"#,
            "fromNode": null,
        }})
    );
}

// ----- rejections -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_that_does_not_fit_is_rejected() {
    let (server, addr) = spawn_server(ServerConfig::default()).await;
    let mut errors = socket_errors(&server);
    let (calls, seen) = counter();
    server.on("move", move |Data(p): Data<Pair>| {
        seen.fetch_add(1, Ordering::SeqCst);
        Ack(p.x + p.y)
    });
    let (async_calls, seen) = counter();
    server.on("move-async", move |Data(p): Data<Pair>| {
        seen.fetch_add(1, Ordering::SeqCst);
        async move { Ack(p.x * p.y) }
    });
    // Taking the extraction result: the handler decides, nothing is rejected.
    server.on(
        "move-lenient",
        |data: Result<Data<Pair>, ExtractError>| match data {
            Ok(Data(p)) => Ack(json!({ "sum": p.x + p.y })),
            Err(e) => Ack(json!({ "mine": e.to_string() })),
        },
    );
    let mut c = RawClient::connect(addr, "/").await.unwrap();
    // Once the heartbeat is echoed the connection is registered.
    c.sync("").await.unwrap();
    let conn = server.sockets()[0].conn_id();

    let got = exchange(&mut c, "move", r#"{"x":"two"}"#, Some("1")).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let message = error_answer(&got[0], "1", "invalid_payload");
    assert!(message.starts_with("invalid payload: "), "{message}");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "handler not called");
    assert_eq!(server.stats().rejected_events, 1);
    assert_eq!(
        recv_within(&mut errors, TIMEOUT).await,
        Some((conn, message.clone()))
    );

    // An async handler is rejected the same way, before it is spawned.
    let got = exchange(&mut c, "move-async", r#"{"x":1}"#, Some("2")).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let message = error_answer(&got[0], "2", "invalid_payload");
    assert!(message.starts_with("invalid payload: "), "{message}");
    assert_eq!(async_calls.load(Ordering::SeqCst), 0);
    assert_eq!(server.stats().rejected_events, 2);
    assert_eq!(
        recv_within(&mut errors, TIMEOUT).await,
        Some((conn, message))
    );

    // Without a callbackId: nothing sent, still counted and raised.
    assert!(exchange(&mut c, "move", "7", None).await.is_empty());
    assert_eq!(server.stats().rejected_events, 3);
    let (who, message) = recv_within(&mut errors, TIMEOUT).await.expect("raised");
    assert_eq!(who, conn);
    assert!(message.starts_with("invalid payload: "), "{message}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    // A payload that fits is handled; nothing more is rejected.
    assert_eq!(
        exchange(&mut c, "move", r#"{"x":4,"y":5}"#, Some("3")).await,
        [reply("3", "9")]
    );
    c.send_text(&frame("move-async", r#"{"x":4,"y":5}"#, Some("4")))
        .await
        .unwrap();
    assert_eq!(c.recv_text(TIMEOUT).await, Some(reply("4", "20")));
    assert_eq!(
        (
            calls.load(Ordering::SeqCst),
            async_calls.load(Ordering::SeqCst)
        ),
        (1, 1)
    );

    let got = exchange(&mut c, "move-lenient", r#""nope""#, Some("5")).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let v: Value = serde_json::from_str(&got[0]).unwrap();
    assert!(
        v["payload"]["mine"]
            .as_str()
            .is_some_and(|m| m.starts_with("invalid payload: ")),
        "{v}"
    );
    assert_eq!(server.stats().rejected_events, 3);
    assert!(errors.try_recv().is_err(), "no further socket errors");
}

/// A handler whose `Reply` comes before a `Data<T>` that does not fit: the client asked for
/// an answer, so it must get the `invalid_payload` error whatever the argument order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_event_is_answered_whatever_the_argument_order() {
    let (server, addr) = spawn_server(ServerConfig::default()).await;
    server.on("data-first", |Data(p): Data<Pair>, reply: Reply| {
        reply.send(&(p.x + p.y))
    });
    server.on("reply-first", |reply: Reply, Data(p): Data<Pair>| {
        reply.send(&(p.x + p.y))
    });
    server.on(
        "optional-reply-first",
        |reply: Option<Reply>, Data(p): Data<Pair>| {
            if let Some(reply) = reply {
                let _ = reply.send(&(p.x + p.y));
            }
        },
    );
    let mut c = RawClient::connect(addr, "/").await.unwrap();
    let events = ["data-first", "reply-first", "optional-reply-first"];
    let mut unanswered = Vec::new();
    for (n, event) in events.into_iter().enumerate() {
        let cb = format!("c{n}");
        let got = exchange(&mut c, event, "[]", Some(cb.as_str())).await;
        // Rejected (handler not called) in every case.
        assert_eq!(server.stats().rejected_events, n as u64 + 1, "{event}");
        match got.as_slice() {
            [answer] => {
                let message = error_answer(answer, &cb, "invalid_payload");
                assert!(
                    message.starts_with("invalid payload: "),
                    "{event}: {message}"
                );
            }
            [] => unanswered.push(event),
            more => panic!("{event}: one answer at most, got {more:?}"),
        }
    }
    assert!(
        unanswered.is_empty(),
        "rejected without the error answer the client asked for: {unanswered:?}"
    );
}

// ----- state and extensions -----

#[derive(Clone)]
struct AppState {
    name: &'static str,
    hits: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct NotGiven;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_reaches_sync_async_and_system_handlers() {
    let app = AppState {
        name: "app",
        hits: Arc::new(AtomicUsize::new(0)),
    };
    let server = Server::builder(ServerConfig::default())
        .state(app.clone())
        .state(42u32)
        .build()
        .unwrap();
    let mut errors = socket_errors(&server);
    server.on(
        "state",
        |State(s): State<AppState>, State(n): State<u32>| {
            let hits = s.hits.fetch_add(1, Ordering::SeqCst) + 1;
            Ack(json!({ "name": s.name, "n": n, "hits": hits }))
        },
    );
    server.on("state-async", |State(s): State<AppState>| async move {
        tokio::task::yield_now().await;
        Ack(s.hits.fetch_add(1, Ordering::SeqCst) + 1)
    });
    let (not_given_calls, seen) = counter();
    server.on("no-state", move |State(_): State<NotGiven>| {
        seen.fetch_add(1, Ordering::SeqCst);
        Ack("unreachable")
    });
    let (tx, mut connected) = mpsc::unbounded_channel();
    server.on_system(move |_: Connection, State(s): State<AppState>| {
        let _ = tx.send(s.name);
    });
    let addr = serve_on_free_port(&server).await;
    let mut c = RawClient::connect(addr, "/").await.unwrap();
    assert_eq!(recv_within(&mut connected, TIMEOUT).await, Some("app"));
    let conn = server.sockets()[0].conn_id();

    assert_eq!(
        exchange(&mut c, "state", "null", Some("1")).await,
        [reply("1", r#"{"hits":1,"n":42,"name":"app"}"#)]
    );
    c.send_text(&frame("state-async", "null", Some("2")))
        .await
        .unwrap();
    assert_eq!(c.recv_text(TIMEOUT).await, Some(reply("2", "2")));
    // One value shared by every handler (and the application).
    assert_eq!(app.hits.load(Ordering::SeqCst), 2);

    let got = exchange(&mut c, "no-state", "null", Some("3")).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let message = error_answer(&got[0], "3", "unavailable");
    assert!(
        message.starts_with("no state of type") && message.contains("NotGiven"),
        "{message}"
    );
    assert_eq!(not_given_calls.load(Ordering::SeqCst), 0);
    assert_eq!(server.stats().rejected_events, 1);
    assert_eq!(
        recv_within(&mut errors, TIMEOUT).await,
        Some((conn, message))
    );
}

#[derive(Clone, Debug, PartialEq)]
struct User {
    name: String,
}

#[derive(Clone)]
struct Role(&'static str);

#[derive(Clone)]
struct Session(String);

/// The application's own upgrade route: a `user` query parameter is the "authentication";
/// what it learnt goes on the socket as extensions.
async fn app_upgrade(
    axum::extract::State(server): axum::extract::State<Server>,
    mut upgrade: WsUpgrade,
) -> Response {
    let Some(name) = upgrade.params(&server).get("user").map(str::to_string) else {
        return (http::StatusCode::UNAUTHORIZED, "user required").into_response();
    };
    upgrade.insert_extension(Role("member"));
    upgrade.with_extension(User { name }).accept(&server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extensions_from_the_upgrade_and_the_connection_handler_reach_handlers() {
    let server = Server::new(ServerConfig::default()).unwrap();
    let mut errors = socket_errors(&server);
    // The connection handler sees the upgrade's extensions, and adds its own.
    let (tx, mut connected) = mpsc::unbounded_channel();
    server.on_system(
        move |_: Connection, socket: Socket, user: Option<Extension<User>>| {
            let session = socket.query("s").unwrap_or("none").to_string();
            socket.insert_extension(Session(session));
            let _ = tx.send(user.map(|Extension(u)| u.name));
        },
    );
    let (whoami_calls, seen) = counter();
    server.on(
        "whoami",
        move |Extension(user): Extension<User>, Extension(session): Extension<Session>| {
            seen.fetch_add(1, Ordering::SeqCst);
            Ack(json!({ "user": user.name, "session": session.0 }))
        },
    );
    server.on("role", |role: Option<Extension<Role>>| {
        Ack(role.map(|Extension(r)| r.0))
    });
    server.on(
        "session",
        |Extension(session): Extension<Session>| async move { Ack(session.0) },
    );
    // An extension inserted by a handler reaches the handlers after it.
    server.on("login", |socket: Socket, Data(name): Data<String>| {
        Ack(socket.insert_extension(User { name }).map(|u| u.name))
    });
    let app = Router::new()
        .route("/app", get(app_upgrade))
        .route("/plain", server.ws_handler())
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });

    let mut ann = RawClient::connect(addr, "/app?user=ann&s=abc")
        .await
        .unwrap();
    assert_eq!(
        recv_within(&mut connected, TIMEOUT).await,
        Some(Some("ann".to_string()))
    );
    assert_eq!(
        exchange(&mut ann, "whoami", "null", Some("1")).await,
        [reply("1", r#"{"session":"abc","user":"ann"}"#)]
    );
    assert_eq!(
        exchange(&mut ann, "role", "null", Some("2")).await,
        [reply("2", r#""member""#)]
    );
    ann.send_text(&frame("session", "null", Some("3")))
        .await
        .unwrap();
    assert_eq!(ann.recv_text(TIMEOUT).await, Some(reply("3", r#""abc""#)));

    // A socket accepted without the upgrade's extensions: a handler that requires one is
    // rejected; the connection handler's extension is there.
    let mut plain = RawClient::connect(addr, "/plain?s=xyz").await.unwrap();
    assert_eq!(recv_within(&mut connected, TIMEOUT).await, Some(None));
    let plain_conn = server
        .sockets()
        .into_iter()
        .find(|s| s.query("s") == Some("xyz"))
        .expect("plain socket")
        .conn_id();
    let got = exchange(&mut plain, "whoami", "null", Some("4")).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let message = error_answer(&got[0], "4", "unavailable");
    assert!(
        message.starts_with("no socket extension of type") && message.contains("User"),
        "{message}"
    );
    assert_eq!(whoami_calls.load(Ordering::SeqCst), 1, "not called");
    assert_eq!(server.stats().rejected_events, 1);
    assert_eq!(
        recv_within(&mut errors, TIMEOUT).await,
        Some((plain_conn, message))
    );
    assert_eq!(
        exchange(&mut plain, "role", "null", Some("5")).await,
        [reply("5", "null")]
    );
    plain
        .send_text(&frame("session", "null", Some("6")))
        .await
        .unwrap();
    assert_eq!(plain.recv_text(TIMEOUT).await, Some(reply("6", r#""xyz""#)));
    // Inserted later, it is there for the next events.
    assert_eq!(
        exchange(&mut plain, "login", r#""bob""#, Some("7")).await,
        [reply("7", "null")]
    );
    assert_eq!(
        exchange(&mut plain, "whoami", "null", Some("8")).await,
        [reply("8", r#"{"session":"xyz","user":"bob"}"#)]
    );
    assert_eq!(server.stats().rejected_events, 1);
    // An unauthenticated upgrade never opens a socket.
    assert!(RawClient::connect(addr, "/app?s=1").await.is_err());
    assert_eq!(server.connection_count(), 2);
}

// ----- headers, cookies, addresses -----

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A tungstenite client (the raw client sends no custom headers) with extra request headers.
async fn connect_with_headers(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Ws {
    let mut request = format!("ws://{addr}{target}")
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        request.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let (ws, response) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake in time")
        .expect("handshake");
    assert_eq!(response.status(), 101);
    ws
}

/// Sends `event` with a callbackId and returns the answer's payload.
async fn ws_ask(ws: &mut Ws, event: &str) -> Value {
    let text = frame(event, "null", Some("q"));
    ws.send(Message::text(text)).await.unwrap();
    loop {
        match tokio::time::timeout(TIMEOUT, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                assert_eq!(v["callbackId"], "q", "{v}");
                return v["payload"].clone();
            }
            Ok(Some(Ok(_))) => continue,
            other => panic!("no answer to {event}: {other:?}"),
        }
    }
}

/// What a handler sees of the request headers.
fn header_view(socket: &Socket) -> Value {
    let headers = socket.headers();
    json!({
        "origin": socket.header("origin"),
        "userAgent": socket.header("User-Agent"),
        "session": socket.cookie("session"),
        "theme": socket.cookie("theme"),
        "missing": socket.cookie("missing"),
        "cookieHeader": headers.get("cookie").and_then(|v| v.to_str().ok()),
        "hasHost": headers.contains_key("host"),
        "count": headers.len(),
        "handshakeKey": socket.header("sec-websocket-key").is_some(),
    })
}

const BROWSER_HEADERS: &[(&str, &str)] = &[
    ("Cookie", "session=abc; theme=dark"),
    ("Origin", "https://app.example"),
    ("User-Agent", "handlers-test/1.0"),
];

/// A server whose connection handler and `headers` event report [`header_view`].
async fn header_server(
    config: ServerConfig,
) -> (Server, SocketAddr, mpsc::UnboundedReceiver<Value>) {
    let (server, addr) = spawn_server(config).await;
    let (tx, rx) = mpsc::unbounded_channel();
    server.on_system(move |_: Connection, socket: Socket| {
        let _ = tx.send(header_view(&socket));
    });
    server.on("headers", |socket: Socket| Ack(header_view(&socket)));
    (server, addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_and_cookies_reach_handlers() {
    let (_server, addr, mut connected) = header_server(ServerConfig::default()).await;
    let mut ws = connect_with_headers(addr, "/?id=h", BROWSER_HEADERS).await;
    let on_connect = recv_within(&mut connected, TIMEOUT)
        .await
        .expect("connection");
    let later = ws_ask(&mut ws, "headers").await;
    for view in [&on_connect, &later] {
        assert_eq!(view["origin"], "https://app.example", "{view}");
        assert_eq!(view["userAgent"], "handlers-test/1.0", "{view}");
        assert_eq!(view["session"], "abc", "{view}");
        assert_eq!(view["theme"], "dark", "{view}");
        assert_eq!(view["missing"], Value::Null, "{view}");
        assert_eq!(view["cookieHeader"], "session=abc; theme=dark", "{view}");
        assert_eq!(view["hasHost"], true, "{view}");
    }
    // The application's headers stay for the socket's life by default; the handshake's own
    // (Connection, Upgrade, Sec-WebSocket-Key, -Version, -Extensions) are dropped.
    assert_eq!(on_connect["handshakeKey"], true, "{on_connect}");
    assert_eq!(later["handshakeKey"], false, "{later}");
    assert!(later["count"].as_u64() < on_connect["count"].as_u64());
    assert_eq!(
        app_headers(&on_connect),
        app_headers(&later),
        "kept for the socket's life by default"
    );

    // A client that sent none of them.
    let mut raw = RawClient::connect(addr, "/").await.unwrap();
    let view = recv_within(&mut connected, TIMEOUT)
        .await
        .expect("connection");
    assert_eq!(
        (&view["origin"], &view["session"], &view["hasHost"]),
        (&Value::Null, &Value::Null, &json!(true)),
        "{view}"
    );
    let got = exchange(&mut raw, "headers", "null", Some("r")).await;
    let v: Value = serde_json::from_str(&got[0]).unwrap();
    assert_eq!(app_headers(&v["payload"]), app_headers(&view));
}

/// A [`header_view`] without what the handshake-header trimming changes.
fn app_headers(view: &Value) -> Value {
    let mut view = view.clone();
    if let Some(fields) = view.as_object_mut() {
        fields.remove("count");
        fields.remove("handshakeKey");
    }
    view
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_retention_drops_headers_after_the_connection_handler() {
    let config = ServerConfig::default().with_header_retention(HeaderRetention::None);
    let (_server, addr, mut connected) = header_server(config).await;
    let mut ws = connect_with_headers(addr, "/", BROWSER_HEADERS).await;
    let on_connect = recv_within(&mut connected, TIMEOUT)
        .await
        .expect("connection");
    assert_eq!(on_connect["origin"], "https://app.example", "{on_connect}");
    assert_eq!(on_connect["session"], "abc", "{on_connect}");
    assert_eq!(on_connect["userAgent"], "handlers-test/1.0", "{on_connect}");
    assert_eq!(
        ws_ask(&mut ws, "headers").await,
        json!({
            "origin": null, "userAgent": null, "session": null, "theme": null,
            "missing": null, "cookieHeader": null, "hasHost": false, "count": 0, "handshakeKey": false,
        })
    );

    // Only some names kept.
    let user_agent = http::HeaderName::from_static("user-agent");
    let config =
        ServerConfig::default().with_header_retention(HeaderRetention::Only(vec![user_agent]));
    let (_server, addr, mut connected) = header_server(config).await;
    let mut ws = connect_with_headers(addr, "/", BROWSER_HEADERS).await;
    let on_connect = recv_within(&mut connected, TIMEOUT)
        .await
        .expect("connection");
    assert_eq!(on_connect["session"], "abc", "{on_connect}");
    assert_eq!(
        ws_ask(&mut ws, "headers").await,
        json!({
            "origin": null, "userAgent": "handlers-test/1.0", "session": null, "theme": null,
            "missing": null, "cookieHeader": null, "hasHost": false, "count": 1, "handshakeKey": false,
        })
    );
}

/// `HeaderRetention` promises that connection handlers see every header. An `async`
/// connection handler runs after the upgrade was taken in; its body must see them too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_connection_handler_sees_the_headers_despite_retention() {
    let config = ServerConfig::default().with_header_retention(HeaderRetention::None);
    let (server, addr) = spawn_server(config).await;
    let (tx, mut seen) = mpsc::unbounded_channel();
    server.on_system(move |connection: Connection, socket: Socket| {
        let tx = tx.clone();
        // Read before the future: this part runs with the connection event.
        let _ = tx.send(("socket, before the future", socket.header("origin")));
        async move {
            tokio::task::yield_now().await;
            let origin = |h: &http::HeaderMap| {
                h.get("origin")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            // The socket dropped its headers by now; the event carries them all.
            let _ = tx.send(("socket, in the future", socket.header("origin")));
            let _ = tx.send(("event, in the future", origin(&connection.headers)));
        }
    });
    let _ws = connect_with_headers(addr, "/", BROWSER_HEADERS).await;
    let origin = Some("https://app.example".to_string());
    assert_eq!(
        recv_within(&mut seen, TIMEOUT).await,
        Some(("socket, before the future", origin.clone()))
    );
    assert_eq!(
        recv_within(&mut seen, TIMEOUT).await,
        Some(("socket, in the future", None))
    );
    assert_eq!(
        recv_within(&mut seen, TIMEOUT).await,
        Some(("event, in the future", origin))
    );
}

/// What a handler sees of the client's address.
async fn addr_server(config: ServerConfig) -> SocketAddr {
    let (server, addr) = spawn_server(config).await;
    server.on("addr", |socket: Socket| {
        Ack(json!({
            "client": socket.client_addr().map(|ip| ip.to_string()),
            "remote": socket.remote_addr().map(|a| a.ip().to_string()),
        }))
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_address_is_believed_from_trusted_proxies_only() {
    let loopback: [crosswire::IpNet; 1] = ["127.0.0.0/8".parse().unwrap()];
    let trusted = addr_server(ServerConfig::default().with_trusted_proxies(loopback)).await;
    let untrusted = addr_server(ServerConfig::default()).await;
    let xff = [("X-Forwarded-For", "203.0.113.7")];

    let mut ws = connect_with_headers(trusted, "/", &xff).await;
    assert_eq!(
        ws_ask(&mut ws, "addr").await,
        json!({"client": "203.0.113.7", "remote": "127.0.0.1"})
    );
    let mut ws = connect_with_headers(trusted, "/", &[("Forwarded", "for=198.51.100.2")]).await;
    assert_eq!(
        ws_ask(&mut ws, "addr").await,
        json!({"client": "198.51.100.2", "remote": "127.0.0.1"})
    );
    // A trusted peer without the header: the peer itself.
    let mut ws = connect_with_headers(trusted, "/", &[]).await;
    assert_eq!(
        ws_ask(&mut ws, "addr").await,
        json!({"client": "127.0.0.1", "remote": "127.0.0.1"})
    );
    // An untrusted peer: its header is its own claim, ignored.
    let mut ws = connect_with_headers(untrusted, "/", &xff).await;
    assert_eq!(
        ws_ask(&mut ws, "addr").await,
        json!({"client": "127.0.0.1", "remote": "127.0.0.1"})
    );
}

// ----- once -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_runs_once_for_two_events_in_one_write() {
    let (server, addr) = spawn_server(ServerConfig::default()).await;
    let (calls, seen) = counter();
    server.on(On::once("first"), move |Data(n): Data<u32>| {
        seen.fetch_add(1, Ordering::SeqCst);
        Ack(n)
    });
    let mut c = RawClient::connect(addr, "/").await.unwrap();
    let mut wire = client_frame(OpCode::Text, frame("first", "1", Some("a")).as_bytes());
    wire.extend(client_frame(
        OpCode::Text,
        frame("first", "2", Some("b")).as_bytes(),
    ));
    c.send_raw(&wire).await.unwrap();
    assert_eq!(c.drain_until_heartbeat("").await, [reply("a", "1")]);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        server.stats().unknown_events,
        1,
        "the second found no handler"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn once_runs_once_when_clients_race() {
    const CLIENTS: usize = 8;
    const ROUNDS: usize = 30;
    let (server, addr) = spawn_server(ServerConfig::default()).await;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(RawClient::connect(addr, "/").await.unwrap());
    }
    for round in 0..ROUNDS {
        let event = format!("race-{round}");
        // Each client sends its index; the handler reports the index it was called for.
        let (tx, mut winners) = mpsc::unbounded_channel();
        let sync = round % 2 == 0;
        if sync {
            server.on(On::once(event.as_str()), move |Data(n): Data<usize>| {
                let _ = tx.send(n);
                Ack(n)
            });
        } else {
            // Async: reported when called, answered when its future is done.
            server.on(On::once(event.as_str()), move |Data(n): Data<usize>| {
                let _ = tx.send(n);
                async move {
                    tokio::task::yield_now().await;
                    Ack(n)
                }
            });
        }
        let frames: Vec<String> = (0..CLIENTS)
            .map(|n| frame(&event, &n.to_string(), Some(&format!("r{round}"))))
            .collect();
        // Every client's event at the same moment.
        let sends = clients.iter().zip(&frames).map(|(c, f)| c.send_text(f));
        for sent in futures_util::future::join_all(sends).await {
            sent.unwrap();
        }
        // Each connection dispatched its event before echoing the heartbeat.
        let mut replies: Vec<Vec<String>> = Vec::new();
        for c in &mut clients {
            replies.push(c.drain_until_heartbeat("").await);
        }
        let winner = recv_within(&mut winners, TIMEOUT)
            .await
            .expect("called once");
        assert!(winners.try_recv().is_err(), "round {round}: called twice");
        let answer = reply(&format!("r{round}"), &winner.to_string());
        if !sync && replies[winner].is_empty() {
            replies[winner].push(clients[winner].recv_text(TIMEOUT).await.expect("answer"));
        }
        for (n, got) in replies.iter().enumerate() {
            let want = if n == winner {
                vec![answer.clone()]
            } else {
                vec![]
            };
            assert_eq!(got, &want, "round {round}, client {n}");
        }
    }
    // Every handler removed itself.
    for c in &mut clients {
        assert!(exchange(c, "race-0", "0", Some("late")).await.is_empty());
    }
}

// ----- to_all().except(..) -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_all_except_skips_the_listed_ids() {
    let (server, addr) = spawn_server(ServerConfig::default()).await;
    install_relay(&server);
    let mut clients = BTreeMap::new();
    for id in ["alice", "bob", "carol", "anon"] {
        clients.insert(id, RawClient::connect_bound(addr, id).await.unwrap());
    }
    // An unbound socket has no id to skip: "everyone" includes it.
    assert!(server.unbind("anon"));
    let msg = |n: u32| format!(r#"{{"event":"m","payload":{n}}}"#);
    let cases: [(&[&str], u32, &[&str]); 3] = [
        (&["alice"], 1, &["anon", "bob", "carol"]),
        (&["alice", "bob"], 2, &["anon", "carol"]),
        (&["nobody"], 3, &["alice", "anon", "bob", "carol"]),
    ];
    for (except, n, reached) in cases {
        let sent = server
            .to_all()
            .except(except.iter().copied())
            .emit("m", &n)
            .unwrap();
        assert_eq!(sent, reached.len(), "except {except:?}");
        for (id, client) in clients.iter_mut() {
            let want = if reached.contains(id) {
                vec![msg(n)]
            } else {
                vec![]
            };
            assert_eq!(
                client.drain_until_heartbeat("").await,
                want,
                "{id}, except {except:?}"
            );
        }
    }
}

struct Node {
    server: Server,
    addr: SocketAddr,
}

async fn cluster_node(hub: &MemoryHub, name: &str) -> Node {
    let broker = Arc::new(hub.broker());
    let server = Server::builder(ServerConfig::default().with_node_name(name))
        .broker(Arc::clone(&broker) as Arc<dyn Broker>)
        .build()
        .unwrap();
    install_relay(&server);
    let addr = serve_on_free_port(&server).await;
    let subscribed = |b: &MemoryBroker| b.subscriptions().iter().any(|c| c == "crosswire:ws:all");
    assert!(crosswire_testkit::wait_until(TIMEOUT, || subscribed(&broker)).await);
    Node { server, addr }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_all_except_skips_the_listed_ids_on_every_node() {
    let hub = MemoryHub::new();
    let a = cluster_node(&hub, "a").await;
    let b = cluster_node(&hub, "b").await;
    let mut clients = BTreeMap::new();
    for (id, node) in [("alice", &b), ("bob", &a), ("carol", &b), ("dave", &a)] {
        clients.insert(id, RawClient::connect_bound(node.addr, id).await.unwrap());
    }
    let msg = |n: u32| format!(r#"{{"event":"m","payload":{n}}}"#);
    /// A send from `from` to everyone but `except`: `local` deliveries on `from`, and the ids
    /// reached on every node.
    struct Case<'a> {
        from: &'a Node,
        except: &'a [&'a str],
        local: usize,
        reached: &'a [&'a str],
    }
    let cases = [
        // From a: alice is on b and skipped there.
        Case {
            from: &a,
            except: &["alice"],
            local: 2,
            reached: &["bob", "carol", "dave"],
        },
        // From b: one skipped id on each node.
        Case {
            from: &b,
            except: &["alice", "dave"],
            local: 1,
            reached: &["bob", "carol"],
        },
        // From a, skipping a local id only.
        Case {
            from: &a,
            except: &["bob"],
            local: 1,
            reached: &["alice", "carol", "dave"],
        },
    ];
    for (n, case) in (1u32..).zip(cases) {
        let Case {
            from,
            except,
            local,
            reached,
        } = case;
        let sent = from
            .server
            .to_all()
            .except(except.iter().copied())
            .emit("m", &n)
            .unwrap();
        assert_eq!(sent, local, "local deliveries, except {except:?}");
        // A barrier to everyone, behind the send on every path (one ordered publish queue,
        // order kept per receiving node).
        let barrier = format!(r#"{{"event":"barrier","payload":{n}}}"#);
        from.server.to_all().emit("barrier", &n).unwrap();
        for (id, client) in clients.iter_mut() {
            let got = client.recv_until(&barrier, TIMEOUT, id).await;
            let want = if reached.contains(id) {
                vec![msg(n)]
            } else {
                vec![]
            };
            assert_eq!(
                got,
                want,
                "{id}, except {except:?} from {}",
                from.server.node_name()
            );
        }
    }
}

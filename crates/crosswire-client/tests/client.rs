//! Events, handlers, emits, requests and heartbeats against a scripted loopback server.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{config, dead_addr, next_event, ScriptServer, WAIT};
use crosswire_client::{
    names, Client, ClientConfig, ClientEvent, CloseInfo, ConnectionState, EmitError, EmitOptions,
    ErrorCode, Payload,
};
use serde_json::{json, Value};
use tokio::sync::oneshot;

async fn open_client(
    server: &mut ScriptServer,
    tweak: impl FnOnce(ClientConfig) -> ClientConfig,
) -> Client {
    let client = Client::connect(tweak(config(&server.url()))).expect("valid config");
    client.wait_open(WAIT).await.expect("open");
    server.expect_connected().await;
    client
}

fn counter() -> (Arc<AtomicUsize>, impl Fn(&Payload) + Send + Sync + 'static) {
    let n = Arc::new(AtomicUsize::new(0));
    let m = n.clone();
    (n, move |_: &Payload| {
        m.fetch_add(1, Ordering::SeqCst);
    })
}

#[tokio::test]
async fn open_emit_and_server_close_without_reconnect() {
    let mut server = ScriptServer::start().await;
    let client = Client::connect(config(&server.url())).unwrap();
    let mut events = client.events();
    let (open_tx, open_rx) = oneshot::channel();
    let open_tx = std::sync::Mutex::new(Some(open_tx));
    client.once(names::OPEN, move |payload| {
        assert!(payload.is_null());
        if let Some(tx) = open_tx.lock().unwrap().take() {
            let _ = tx.send(());
        }
    });
    next_event(&mut events, "open", |e| {
        matches!(e, ClientEvent::Open).then_some(())
    })
    .await;
    open_rx.await.expect("open handler ran");
    assert!(client.is_open());
    server.expect_connected().await;

    client.emit("hello", &json!({"a": 1})).unwrap();
    let frame = server
        .expect_frame("hello", |v| v["event"] == "hello")
        .await;
    assert_eq!(frame, json!({"event": "hello", "payload": {"a": 1}}));

    let closes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = closes.clone();
    client.on(names::CLOSE, move |payload| {
        seen.lock()
            .unwrap()
            .push(payload.parse::<CloseInfo>().unwrap());
    });
    server.close_all(4010, "kicked");
    let close = next_event(&mut events, "close", |e| match e {
        ClientEvent::Close(info) => Some(info.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        close,
        CloseInfo {
            code: 4010,
            reason: "kicked".into()
        }
    );
    assert_eq!(closes.lock().unwrap().as_slice(), &[close]);
    // A close from the server is the application's decision: no reconnect of our own.
    assert_eq!(client.state(), ConnectionState::Closed);
    assert!(!client.reconnecting());
    assert!(matches!(client.emit("x", &1), Err(EmitError::NotOpen)));
    client.manual_close();
}

#[tokio::test]
async fn emit_with_callback_gets_the_reply() {
    let mut server = ScriptServer::start().await;
    let client = open_client(&mut server, |c| c).await;
    let (tx, rx) = oneshot::channel();
    client.emit_with_callback(
        "say",
        &json!({"msg": "hi"}),
        EmitOptions::new(),
        move |result| {
            let _ = tx.send(result);
        },
    );
    let frame = server.expect_frame("say", |v| v["event"] == "say").await;
    let id = frame["callbackId"].as_str().expect("callbackId");
    assert!((1..=64).contains(&id.len()));
    let reply = rx.await.unwrap().expect("reply");
    assert_eq!(
        reply.value(),
        json!({"event": "say", "echo": {"msg": "hi"}})
    );
    client.manual_close();
}

#[tokio::test]
async fn request_resolves_with_success_and_typed_data() {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Echo {
        event: String,
        echo: Value,
    }
    let mut server = ScriptServer::start().await;
    let client = open_client(&mut server, |c| c).await;

    let response = client
        .request("say", &json!([1, 2]), EmitOptions::new())
        .await;
    assert!(response.is_success(), "{response:?}");
    assert_eq!(
        serde_json::to_value(&response).unwrap(),
        json!({"success": true, "data": {"event": "say", "echo": [1, 2]}})
    );

    let typed = client
        .request_as::<Echo, _>("add", &5, EmitOptions::new())
        .await;
    assert_eq!(
        typed.into_result().unwrap(),
        Echo {
            event: "add".into(),
            echo: json!(5)
        }
    );
    let wrong = client
        .request_as::<u32, _>("add", &5, EmitOptions::new())
        .await;
    assert_eq!(wrong.error_code(), Some(ErrorCode::InvalidReply));

    // Concurrent requests each get their own reply.
    let (a, b) = tokio::join!(
        client.request("a", &1, EmitOptions::new()),
        client.request("b", &2, EmitOptions::new())
    );
    assert_eq!(a.data().unwrap().value()["echo"], 1);
    assert_eq!(b.data().unwrap().value()["echo"], 2);
    client.manual_close();
}

#[tokio::test]
async fn request_without_reply_times_out() {
    let mut server = ScriptServer::start().await;
    let client = open_client(&mut server, |c| {
        c.with_callback_timeout(Duration::from_millis(150))
    })
    .await;
    server.set_reply_callbacks(false);
    let started = tokio::time::Instant::now();
    let response = client.request("say", &"hi", EmitOptions::new()).await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(response.error_code(), Some(ErrorCode::CallbackTimeout));
    assert_eq!(
        serde_json::to_value(&response).unwrap()["errorCode"],
        "CALLBACK_TIMEOUT"
    );

    // The per-request timeout overrides the client's, and the callback form fails the same way.
    let (tx, rx) = oneshot::channel();
    client.emit_with_callback(
        "say",
        &"hi",
        EmitOptions::new().with_callback_timeout(Duration::from_millis(50)),
        move |result| {
            let _ = tx.send(result);
        },
    );
    let error = rx.await.unwrap().unwrap_err();
    assert_eq!(error.code, ErrorCode::CallbackTimeout);
    client.manual_close();
}

#[tokio::test]
async fn not_open_is_reported_not_thrown() {
    let addr = dead_addr().await;
    let client =
        Client::connect(config(&format!("ws://{addr}")).with_repeat_limit(Some(0))).unwrap();
    assert!(matches!(client.emit("x", &1), Err(EmitError::NotOpen)));
    let response = client.request("x", &1, EmitOptions::new()).await;
    assert_eq!(response.error_code(), Some(ErrorCode::WsNotOpen));
    assert_eq!(
        serde_json::to_value(&response).unwrap()["errorCode"],
        "WS_NOT_OPEN"
    );
    let (tx, rx) = oneshot::channel();
    client.emit_with_callback("x", &1, EmitOptions::new(), move |result| {
        let _ = tx.send(result);
    });
    assert_eq!(rx.await.unwrap().unwrap_err().code, ErrorCode::WsNotOpen);
    client.manual_close();
}

#[tokio::test]
async fn pending_hook_fires_for_a_slow_reply_only() {
    let mut server = ScriptServer::start().await;
    let client = open_client(&mut server, |c| c).await;
    let (pending, hook) = counter();
    let hook = Arc::new(hook);

    server.set_reply_delay(Duration::from_millis(300));
    let h = hook.clone();
    let options = EmitOptions::new()
        .with_pending_timeout(Duration::from_millis(50))
        .on_pending(move || h(&Payload::null()));
    let response = client.request("slow", &1, options).await;
    assert!(response.is_success(), "{response:?}");
    assert_eq!(pending.load(Ordering::SeqCst), 1);

    server.set_reply_delay(Duration::ZERO);
    let h = hook.clone();
    let options = EmitOptions::new()
        .with_pending_timeout(Duration::from_secs(3))
        .on_pending(move || h(&Payload::null()));
    assert!(client.request("fast", &1, options).await.is_success());
    assert_eq!(pending.load(Ordering::SeqCst), 1);
    client.manual_close();
}

#[tokio::test]
async fn heartbeat_reports_latency() {
    let mut server = ScriptServer::start().await;
    let client =
        Client::connect(config(&server.url()).with_ping_interval(Duration::from_millis(50)))
            .unwrap();
    let mut events = client.events();
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = latencies.clone();
    client.on(names::PONG, move |payload| {
        seen.lock().unwrap().push(payload.parse::<u64>().unwrap());
    });
    next_event(&mut events, "ping", |e| {
        matches!(e, ClientEvent::Ping).then_some(())
    })
    .await;
    server
        .expect("a heartbeat", |s| {
            matches!(s, common::Seen::Heartbeat).then_some(())
        })
        .await;
    let latency = next_event(&mut events, "pong", |e| match e {
        ClientEvent::Pong { latency } => Some(*latency),
        _ => None,
    })
    .await;
    assert!(latency < WAIT);
    assert_eq!(
        latencies.lock().unwrap().first(),
        Some(&(latency.as_millis() as u64))
    );
    client.manual_close();
}

#[tokio::test]
async fn set_ping_interval_immediate_sends_a_heartbeat_now() {
    let mut server = ScriptServer::start().await;
    let client = open_client(&mut server, |c| c).await;
    assert_eq!(client.ping_interval(), Duration::ZERO);
    let mut events = client.events();
    client.set_ping_interval(Duration::from_secs(60), true);
    assert_eq!(client.ping_interval(), Duration::from_secs(60));
    server
        .expect("a heartbeat", |s| {
            matches!(s, common::Seen::Heartbeat).then_some(())
        })
        .await;
    next_event(&mut events, "pong", |e| {
        matches!(e, ClientEvent::Pong { .. }).then_some(())
    })
    .await;
    client.manual_close();
}

#[tokio::test]
async fn pong_timeout_closes_with_4002_and_reconnects() {
    let mut server = ScriptServer::start().await;
    server.set_echo_heartbeat(false);
    let client = Client::connect(
        config(&server.url())
            .with_ping_interval(Duration::from_millis(50))
            .with_pong_timeout(Duration::from_millis(100)),
    )
    .unwrap();
    let mut events = client.events();
    server.expect_connected().await;
    next_event(&mut events, "pong-timeout", |e| {
        matches!(e, ClientEvent::PongTimeout).then_some(())
    })
    .await;
    server.set_echo_heartbeat(true);
    assert_eq!(server.expect_close().await.0, Some(4002));
    let close = next_event(&mut events, "close", |e| match e {
        ClientEvent::Close(info) => Some(info.code),
        _ => None,
    })
    .await;
    assert_eq!(close, 4002);
    let reconnect = next_event(&mut events, "reconnect", |e| match e {
        ClientEvent::Reconnect(info) => Some(*info),
        _ => None,
    })
    .await;
    assert_eq!(reconnect.repeat, 1);
    server.expect_connected().await;
    next_event(&mut events, "open", |e| {
        matches!(e, ClientEvent::Open).then_some(())
    })
    .await;
    client.manual_close();
}

#[tokio::test]
async fn answers_server_requests_with_their_ack_id() {
    let mut server = ScriptServer::start().await;
    let client = open_client(&mut server, |c| c).await;
    client.on_request("whoami", |payload: Payload| async move {
        tokio::task::yield_now().await;
        json!({"name": "Sam", "asked": payload.value()})
    });
    client.on_request_sync("add", |payload: Payload| {
        let numbers: Vec<i64> = payload.parse().unwrap_or_default();
        numbers.iter().sum::<i64>()
    });
    let (seen, handler) = counter();
    client.on("whoami", handler);

    server.send_all(r#"{"event":"whoami","payload":{"q":1},"ackId":"s1"}"#);
    let ack = server.expect_frame("ack s1", |v| v["ackId"] == "s1").await;
    assert_eq!(
        ack,
        json!({"ackId": "s1", "payload": {"name": "Sam", "asked": {"q": 1}}})
    );
    server.send_all(r#"{"event":"add","payload":[1,2,3],"ackId":"s2"}"#);
    let ack = server.expect_frame("ack s2", |v| v["ackId"] == "s2").await;
    assert_eq!(ack, json!({"ackId": "s2", "payload": 6}));
    // Plain handlers still see the request.
    assert_eq!(seen.load(Ordering::SeqCst), 1);

    assert!(client.off_request("add"));
    assert!(!client.off_request("add"));
    client.manual_close();
}

async fn done(events: &mut crosswire_client::EventReceiver, n: i64) {
    next_event(events, "done", move |e| match e {
        ClientEvent::Event { name, payload } if &**name == "done" && payload.value() == n => {
            Some(())
        }
        _ => None,
    })
    .await
}

#[tokio::test]
async fn on_once_off_and_tags() {
    let mut server = ScriptServer::start().await;
    let client = open_client(&mut server, |c| c).await;
    let mut events = client.events();
    let (always, h) = counter();
    client.on("news", h);
    let (first, h) = counter();
    client.once("news", h);
    let (tagged, h) = counter();
    client.on_tagged("screen", "news", h);
    let (tagged_other, h) = counter();
    client.once_tagged("screen", "other", h);
    let (removed, h) = counter();
    let id = client.on("news", h);
    assert!(client.off(id));
    assert!(!client.off(id));

    server.send_all(r#"{"event":"news","payload":{"title":"a"}}"#);
    server.send_all(r#"{"event":"news","payload":{"title":"b"}}"#);
    server.send_all(r#"{"event":"done","payload":1}"#);
    done(&mut events, 1).await;
    assert_eq!(always.load(Ordering::SeqCst), 2);
    assert_eq!(first.load(Ordering::SeqCst), 1);
    assert_eq!(tagged.load(Ordering::SeqCst), 2);
    assert_eq!(removed.load(Ordering::SeqCst), 0);

    assert_eq!(client.off_tag("screen"), 2);
    server.send_all(r#"{"event":"news","payload":null}"#);
    server.send_all(r#"{"event":"other","payload":null}"#);
    server.send_all(r#"{"event":"done","payload":2}"#);
    done(&mut events, 2).await;
    assert_eq!(always.load(Ordering::SeqCst), 3);
    assert_eq!(tagged.load(Ordering::SeqCst), 2);
    assert_eq!(tagged_other.load(Ordering::SeqCst), 0);
    assert_eq!(client.off_event("news"), 1);
    client.manual_close();
}

#[tokio::test]
async fn raw_messages_and_malformed_frames() {
    let mut server = ScriptServer::start().await;
    let client = open_client(&mut server, |c| c).await;
    let mut events = client.events();
    let (messages, h) = counter();
    client.on(names::MESSAGE, h);
    server.send_all("not json at all");
    server.send_all(r#"{"callbackId":"999","payload":1}"#); // reply to nothing
    server.send_all(r#"{"event":"ok","payload":1}"#);
    let raw = next_event(&mut events, "message", |e| match e {
        ClientEvent::Message(text) => Some(text.to_string()),
        _ => None,
    })
    .await;
    assert_eq!(raw, "not json at all");
    next_event(&mut events, "ok", |e| (e.name() == "ok").then_some(())).await;
    assert_eq!(messages.load(Ordering::SeqCst), 3);
    assert!(client.is_open());
    client.manual_close();
}

#[tokio::test]
async fn custom_params_go_into_the_query() {
    let mut server = ScriptServer::start().await;
    let client = Client::connect(
        config(&format!("{}/room?v=1", server.url()))
            .with_param("id", 7)
            .with_param("name", "Sam Smith"),
    )
    .unwrap();
    assert_eq!(
        server.expect_connected().await,
        "/room?v=1&id=7&name=Sam%20Smith"
    );
    assert!(client.url().ends_with("/room?v=1&id=7&name=Sam%20Smith"));
    client.manual_close();
}

#[tokio::test]
async fn manual_close_sends_4001_and_ends_everything() {
    let mut server = ScriptServer::start().await;
    let client = open_client(&mut server, |c| c).await;
    let mut events = client.events();
    server.set_reply_callbacks(false);
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move { client.request("never", &1, EmitOptions::new()).await })
    };
    server
        .expect_frame("never", |v| v["event"] == "never")
        .await;

    client.manual_close();
    assert_eq!(
        server.expect_close().await,
        (Some(4001), "manual close".to_string())
    );
    let close = next_event(&mut events, "close", |e| match e {
        ClientEvent::Close(info) => Some(info.code),
        _ => None,
    })
    .await;
    assert_eq!(close, 4001);
    // The event stream ends only when the background task has ended: no timer or reconnect
    // attempt can follow.
    assert!(tokio::time::timeout(WAIT, events.recv())
        .await
        .unwrap()
        .is_none());
    assert_eq!(client.state(), ConnectionState::ManuallyClosed);
    assert!(!client.reconnecting());
    assert_eq!(
        waiting.await.unwrap().error_code(),
        Some(ErrorCode::WsNotOpen)
    );
    client.reconnect(true);
    assert!(client.wait_open(Duration::from_millis(100)).await.is_err());
    assert!(matches!(client.emit("x", &1), Err(EmitError::NotOpen)));
    assert!(client.events().recv().await.is_none());
}

#[tokio::test]
async fn dropping_every_handle_closes_with_4001() {
    let mut server = ScriptServer::start().await;
    let client = open_client(&mut server, |c| c).await;
    let other = client.clone();
    drop(client);
    drop(other);
    assert_eq!(server.expect_close().await.0, Some(4001));
}

#[tokio::test]
async fn sending_works_from_a_plain_thread() {
    let mut server = ScriptServer::start().await;
    let client = open_client(&mut server, |c| c).await;
    let (tx, rx) = oneshot::channel();
    let from_thread = client.clone();
    std::thread::spawn(move || {
        from_thread.emit("plain", &1).unwrap();
        from_thread.emit_with_callback("threaded", &2, EmitOptions::new(), move |result| {
            let _ = tx.send(result);
        });
    })
    .join()
    .unwrap();
    server
        .expect_frame("plain", |v| v["event"] == "plain")
        .await;
    let reply = rx.await.unwrap().unwrap();
    assert_eq!(reply.value()["echo"], 2);
    client.manual_close();
}

//! `--protocol socketio` without the network: the bench's Socket.IO client against a minimal
//! Engine.IO v4 / Socket.IO v5 responder in this test (tokio-tungstenite), which defines the
//! relay's events (`join`, `room` → `msg`, `echo`) and pings every connection once it is
//! connected. Checks the handshake (endpoint, open packet, namespace connect, refusals),
//! that pings are answered, that acks are matched to their requests, and that the fan-out,
//! burst and echo scenarios, and the idle scenario's connect-and-verify, run unchanged over
//! it, every delivery and ack counted.

use crosswire_bench::common::{self, Settings};
use crosswire_bench::scenarios::{burst, echo, fanout};
use crosswire_bench::stamp::{echo_frame, parse_stamp, room_frame, stamped_data, Padding};
use crosswire_bench::ws::{self, ConnectOptions, Protocol};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

/// How the responder behaves.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// A Socket.IO server with the relay's events.
    Serve,
    /// Answers the namespace connect with a connect error (`44`).
    Refuse,
    /// Sends something other than the open packet.
    Garbage,
}

#[derive(Default)]
struct State {
    /// Request targets of the upgrades.
    targets: Mutex<Vec<String>>,
    /// Room name → its members' outgoing queues.
    rooms: Mutex<HashMap<String, Vec<mpsc::UnboundedSender<String>>>>,
    connected: AtomicU64,
    pongs: AtomicU64,
    /// Packets the responder could not make sense of.
    bad: Mutex<Vec<String>>,
}

struct Responder {
    url: String,
    state: Arc<State>,
}

async fn start(mode: Mode) -> Responder {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let state = Arc::new(State::default());
    let shared = state.clone();
    tokio::spawn(async move {
        let mut n = 0u64;
        while let Ok((tcp, _)) = listener.accept().await {
            n += 1;
            tokio::spawn(connection(tcp, n, mode, shared.clone()));
        }
    });
    Responder { url, state }
}

/// `42<id>?[…]` or `43<id>[…]` after its two-character type: the ack id and the arguments.
fn packet(rest: &str) -> Option<(Option<u64>, Vec<Value>)> {
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = (digits > 0).then(|| rest[..digits].parse().ok()).flatten();
    let args = serde_json::from_str(&rest[digits..]).ok()?;
    Some((id, args))
}

// tungstenite's upgrade callback returns its (large) error response by value.
#[allow(clippy::result_large_err)]
async fn connection(tcp: tokio::net::TcpStream, n: u64, mode: Mode, state: Arc<State>) {
    let mut target = String::new();
    let callback = |req: &Request, resp: Response| {
        target = req.uri().to_string();
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
        return;
    };
    state.targets.lock().unwrap().push(target);
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut text = Some(first);
            while let Some(t) = text {
                if sink.feed(Message::text(t)).await.is_err() {
                    return;
                }
                text = rx.try_recv().ok();
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    if mode == Mode::Garbage {
        let _ = tx.send("hello".into());
    } else {
        let _ = tx.send(format!(
            r#"0{{"sid":"eio{n}","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}}"#
        ));
    }
    while let Some(Ok(message)) = stream.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let text = text.as_str();
        if text == "40" {
            if mode == Mode::Refuse {
                let _ = tx.send(r#"44{"message":"Invalid namespace"}"#.into());
                continue;
            }
            let _ = tx.send(format!(r#"40{{"sid":"sio{n}"}}"#));
            state.connected.fetch_add(1, Ordering::Relaxed);
            // An Engine.IO ping, which the client must answer.
            let _ = tx.send("2".into());
        } else if text == "3" {
            state.pongs.fetch_add(1, Ordering::Relaxed);
        } else if let Some((ack, args)) = text.strip_prefix("42").and_then(packet) {
            let arg = args.get(1).cloned().unwrap_or(Value::Null);
            let reply = match args.first().and_then(Value::as_str) {
                Some("join") => {
                    let room = arg["room"].as_str().unwrap_or_default().to_string();
                    state
                        .rooms
                        .lock()
                        .unwrap()
                        .entry(room)
                        .or_default()
                        .push(tx.clone());
                    json!({"ok": true})
                }
                Some("room") => {
                    let room = arg["room"].as_str().unwrap_or_default();
                    let event = format!(r#"42["msg",{}]"#, arg["data"]);
                    if let Some(members) = state.rooms.lock().unwrap().get(room) {
                        for m in members {
                            let _ = m.send(event.clone());
                        }
                    }
                    json!({"ok": true})
                }
                Some("echo") => arg,
                _ => {
                    state.bad.lock().unwrap().push(text.to_string());
                    continue;
                }
            };
            if let Some(id) = ack {
                let _ = tx.send(format!("43{id}[{reply}]"));
            }
        } else {
            state.bad.lock().unwrap().push(text.to_string());
        }
    }
}

fn options() -> ConnectOptions {
    ConnectOptions {
        protocol: Protocol::SocketIo,
        ..ConnectOptions::default()
    }
}

fn settings(url: &str) -> Settings {
    Settings {
        url: url.to_string(),
        urls: Vec::new(),
        server_pids: Vec::new(),
        connect_concurrency: 16,
        run_id: common::new_run_id(),
        connect: options(),
        padding: Padding::X,
    }
}

/// Waits (a few seconds at most) until every connection that connected answered its ping.
async fn all_pings_answered(state: &State) -> (u64, u64) {
    for _ in 0..300 {
        let (c, p) = (
            state.connected.load(Ordering::Relaxed),
            state.pongs.load(Ordering::Relaxed),
        );
        if c == p {
            return (c, p);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (
        state.connected.load(Ordering::Relaxed),
        state.pongs.load(Ordering::Relaxed),
    )
}

#[tokio::test]
async fn handshake_pings_and_acks() {
    let r = start(Mode::Serve).await;
    let mut conn = ws::connect_with(&r.url, "c1", &options()).await.unwrap();
    let target = r.state.targets.lock().unwrap()[0].clone();
    assert_eq!(target, "/socket.io/?id=c1&EIO=4&transport=websocket");
    let sio = conn.socketio().expect("a Socket.IO connection");
    assert_eq!(sio.sid(), "sio1");
    assert_eq!(sio.open_packet().sid, "eio1");
    assert_eq!(sio.open_packet().ping_interval, 25_000);
    assert_eq!(sio.open_packet().ping_timeout, 20_000);

    // The join's ack comes back as the crosswire reply `ws::join` waits for; the ping sent
    // before it is answered on the way.
    ws::join(&mut conn, "room1").await.unwrap();
    ws::heartbeat(&mut conn).await.unwrap();
    assert_eq!(all_pings_answered(&r.state).await, (1, 1));

    // Echo acks are matched to their requests, in whatever order the ids go.
    let data = stamped_data(7, 1234, 40);
    conn.feed_text(echo_frame(&data, 7)).await.unwrap();
    let other = stamped_data(8, 5678, 40);
    conn.feed_text(echo_frame(&other, 8)).await.unwrap();
    conn.flush().await.unwrap();
    for (seq, sent) in [(7, 1234), (8, 5678)] {
        let Some(Ok(Message::Text(reply))) = conn.next().await else {
            panic!("no echo reply");
        };
        let v: Value = serde_json::from_str(reply.as_str()).unwrap();
        assert_eq!(v["callbackId"], seq.to_string());
        let stamp = parse_stamp(reply.as_str()).unwrap();
        assert_eq!((stamp.seq, stamp.sent_us), (seq, sent));
    }

    // A room message reaches the member as the `msg` event, its stamp intact.
    conn.send_text(room_frame("room1", &data)).await.unwrap();
    let Some(Ok(Message::Text(event))) = conn.next().await else {
        panic!("no room event");
    };
    assert_eq!(event.as_str(), format!(r#"42["msg","{data}"]"#));
    assert_eq!(parse_stamp(event.as_str()).unwrap().seq, 7);
    assert_eq!(conn.socketio().unwrap().outstanding_acks(), 0);

    // A frame that is not a crosswire event cannot be mapped.
    assert!(conn.feed_text("not json".into()).await.is_err());
    ws::close(conn).await;
    assert!(r.state.bad.lock().unwrap().is_empty());
}

#[tokio::test]
async fn refusals_are_errors() {
    let refuse = start(Mode::Refuse).await;
    let err = ws::connect_with(&refuse.url, "c", &options())
        .await
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("Invalid namespace"), "{err:#}");
    let garbage = start(Mode::Garbage).await;
    let err = ws::connect_with(&garbage.url, "c", &options())
        .await
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("open packet"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_run_over_socketio() {
    let r = start(Mode::Serve).await;
    let s = settings(&r.url);
    common::probe(&s).await.unwrap();

    let p = fanout::FanoutParams {
        receivers: 20,
        rate: 100.0,
        size: 100,
        duration: Duration::from_millis(600),
        drain_timeout: Duration::from_secs(5),
        room: format!("fan-{}", s.run_id),
    };
    let report = fanout::run(&s, &p).await.unwrap();
    let sent = report.results["sent"].as_u64().unwrap();
    assert!(sent >= 30, "{sent} messages sent");
    assert_eq!(report.results["delivered"].as_u64().unwrap(), sent * 20);
    assert_eq!(report.results["lost"], 0);
    assert_eq!(report.results["duplicates"], 0);
    assert_eq!(report.results["out_of_order"], 0);
    assert_eq!(report.results["disconnected"], 0);
    assert_eq!(report.results["send_error"], Value::Null);
    // `42["msg",…]` around the 100-byte data string, in a frame with a 2-byte header.
    assert_eq!(report.results["wire"]["read_per_op"].as_f64(), Some(112.0));

    let p = burst::BurstParams {
        messages: 300,
        receivers: 20,
        size: 100,
        timeout: Duration::from_secs(10),
        room: format!("burst-{}", s.run_id),
    };
    let report = burst::run(&s, &p).await.unwrap();
    assert_eq!(report.results["delivered"], 6000);
    assert_eq!(report.results["out_of_order"], 0);
    assert_eq!(report.results["send_error"], Value::Null);

    let p = echo::EchoParams {
        clients: 8,
        in_flight: 4,
        duration: Duration::from_millis(500),
        size: 32,
    };
    let report = echo::run(&s, &p).await.unwrap();
    assert!(report.results["acks"].as_u64().unwrap() > 100);
    assert_eq!(report.results["failed_clients"], 0);

    // The idle scenario's connections: connect, then a heartbeat round trip each.
    let conns = common::connect_many(&s, 40, "i", None, true).await;
    assert!(conns.iter().all(Result::is_ok));
    for c in conns.into_iter().flatten() {
        ws::close(c).await;
    }

    // The probe, 20 + 20 receivers and two publishers, 8 echo clients, 40 idle connections.
    let (connected, pongs) = all_pings_answered(&r.state).await;
    assert_eq!(connected, 1 + 40 + 2 + 8 + 40);
    assert_eq!(pongs, connected, "every connection answered its ping");
    assert!(r.state.bad.lock().unwrap().is_empty());
}

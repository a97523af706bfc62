//! A scripted WebSocket server for the client tests: echoes heartbeats, replies to
//! callbackIds (by echoing, or with a scripted answer per event, e.g. to `join`), sends events
//! and requests, closes with codes, drops its connections abruptly, can be stopped and
//! restarted on the same port, and reports everything it sees on a channel.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crosswire_client::{ClientConfig, ClientEvent, EventReceiver};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// Upper bound for anything the tests wait for; generous, never reached when things work.
pub const WAIT: Duration = Duration::from_secs(5);

/// What the server saw.
#[derive(Debug, Clone)]
pub enum Seen {
    /// A client connected; the request's path and query.
    Connected { path_and_query: String },
    /// The heartbeat text arrived.
    Heartbeat,
    /// A JSON frame arrived.
    Frame(Value),
    /// Another text frame arrived.
    Text(String),
    /// The client sent a close frame.
    Closed { code: Option<u16>, reason: String },
    /// The connection ended without a close frame.
    Dropped,
}

/// A scripted answer to a request: given its payload, the events to send first (e.g. the
/// messages a `join` replays) and the reply's payload.
pub type Answer = Arc<dyn Fn(&Value) -> (Vec<Value>, Value) + Send + Sync>;

/// Knobs, changeable while the server runs.
pub struct Behaviour {
    pub echo_heartbeat: AtomicBool,
    pub reply_callbacks: AtomicBool,
    pub reply_delay_ms: AtomicU64,
    /// Scripted answers by event name; other requests are answered with an echo.
    pub answers: Mutex<HashMap<String, Answer>>,
}

pub struct ScriptServer {
    pub addr: SocketAddr,
    pub behaviour: Arc<Behaviour>,
    seen: mpsc::UnboundedReceiver<Seen>,
    connections: Arc<Mutex<Vec<mpsc::UnboundedSender<Message>>>>,
    accept: JoinHandle<()>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl ScriptServer {
    /// Starts on a free loopback port.
    pub async fn start() -> Self {
        Self::start_at("127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts on `addr` (e.g. the port of a stopped server).
    pub async fn start_at(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let behaviour = Arc::new(Behaviour {
            echo_heartbeat: AtomicBool::new(true),
            reply_callbacks: AtomicBool::new(true),
            reply_delay_ms: AtomicU64::new(0),
            answers: Mutex::new(HashMap::new()),
        });
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let connections = Arc::new(Mutex::new(Vec::new()));
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let behaviour = behaviour.clone();
            let connections = connections.clone();
            let tasks = tasks.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (tx, rx) = mpsc::unbounded_channel();
                    connections.lock().unwrap().push(tx.clone());
                    let task =
                        tokio::spawn(serve(stream, behaviour.clone(), seen_tx.clone(), tx, rx));
                    tasks.lock().unwrap().push(task);
                }
            })
        };
        Self {
            addr,
            behaviour,
            seen,
            connections,
            accept,
            tasks,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Drops the listener and every connection without a close frame.
    pub fn stop(&self) {
        self.accept.abort();
        self.drop_connections();
    }

    /// Drops every connection without a close frame (as a crash or a network cut would),
    /// still accepting new ones.
    pub fn drop_connections(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
        self.connections.lock().unwrap().clear();
    }

    /// Answers requests named `event` with `answer(payload)` instead of the echo.
    pub fn answer(&self, event: &str, answer: impl Fn(&Value) -> Value + Send + Sync + 'static) {
        self.answer_after_events(event, move |payload| (Vec::new(), answer(payload)));
    }

    /// Answers requests named `event` by sending the events `answer(payload)` lists, then the
    /// reply it gives.
    pub fn answer_after_events(
        &self,
        event: &str,
        answer: impl Fn(&Value) -> (Vec<Value>, Value) + Send + Sync + 'static,
    ) {
        self.behaviour
            .answers
            .lock()
            .unwrap()
            .insert(event.to_string(), Arc::new(answer));
    }

    /// Sends a text frame to every connected client.
    pub fn send_all(&self, text: &str) {
        for tx in self.connections.lock().unwrap().iter() {
            let _ = tx.send(Message::text(text));
        }
    }

    /// Closes every connection with `code`.
    pub fn close_all(&self, code: u16, reason: &str) {
        for tx in self.connections.lock().unwrap().iter() {
            let _ = tx.send(Message::Close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            })));
        }
    }

    pub fn set_echo_heartbeat(&self, on: bool) {
        self.behaviour.echo_heartbeat.store(on, Ordering::SeqCst);
    }

    pub fn set_reply_callbacks(&self, on: bool) {
        self.behaviour.reply_callbacks.store(on, Ordering::SeqCst);
    }

    pub fn set_reply_delay(&self, delay: Duration) {
        self.behaviour
            .reply_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// The next thing seen that `pick` maps to `Some`, skipping the rest; panics after
    /// [`WAIT`].
    pub async fn expect<T>(&mut self, what: &str, mut pick: impl FnMut(&Seen) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.seen.recv()).await {
                Ok(Some(seen)) => {
                    if let Some(found) = pick(&seen) {
                        return found;
                    }
                }
                Ok(None) => panic!("server channel closed while waiting for {what}"),
                Err(_) => panic!("server did not see {what} within {WAIT:?}"),
            }
        }
    }

    pub async fn expect_connected(&mut self) -> String {
        self.expect("a connection", |s| match s {
            Seen::Connected { path_and_query } => Some(path_and_query.clone()),
            _ => None,
        })
        .await
    }

    pub async fn expect_frame(&mut self, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
        self.expect(what, |s| match s {
            Seen::Frame(v) if pick(v) => Some(v.clone()),
            _ => None,
        })
        .await
    }

    pub async fn expect_close(&mut self) -> (Option<u16>, String) {
        self.expect("a close frame", |s| match s {
            Seen::Closed { code, reason } => Some((*code, reason.clone())),
            _ => None,
        })
        .await
    }
}

impl Drop for ScriptServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(
    stream: TcpStream,
    behaviour: Arc<Behaviour>,
    seen: mpsc::UnboundedSender<Seen>,
    tx: mpsc::UnboundedSender<Message>,
    mut rx: mpsc::UnboundedReceiver<Message>,
) {
    let mut path_and_query = String::new();
    // The callback's error type is tungstenite's, large by its design.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        path_and_query = request
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default();
        Ok(response)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let _ = seen.send(Seen::Connected { path_and_query });
    loop {
        tokio::select! {
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let text = text.as_str();
                    if text.is_empty() {
                        let _ = seen.send(Seen::Heartbeat);
                        if behaviour.echo_heartbeat.load(Ordering::SeqCst) {
                            let _ = tx.send(Message::text(""));
                        }
                        continue;
                    }
                    let Ok(frame) = serde_json::from_str::<Value>(text) else {
                        let _ = seen.send(Seen::Text(text.to_string()));
                        continue;
                    };
                    if let Some(id) = frame.get("callbackId").and_then(Value::as_str) {
                        if behaviour.reply_callbacks.load(Ordering::SeqCst) {
                            let answer = frame["event"]
                                .as_str()
                                .and_then(|event| behaviour.answers.lock().unwrap().get(event).cloned());
                            let (before, payload) = match answer {
                                Some(answer) => answer(&frame["payload"]),
                                None => (
                                    Vec::new(),
                                    serde_json::json!({ "event": frame["event"], "echo": frame["payload"] }),
                                ),
                            };
                            let reply = serde_json::json!({ "callbackId": id, "payload": payload });
                            let delay = Duration::from_millis(behaviour.reply_delay_ms.load(Ordering::SeqCst));
                            let tx = tx.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(delay).await;
                                for event in before {
                                    let _ = tx.send(Message::text(event.to_string()));
                                }
                                let _ = tx.send(Message::text(reply.to_string()));
                            });
                        }
                    }
                    let _ = seen.send(Seen::Frame(frame));
                }
                Some(Ok(Message::Close(frame))) => {
                    let _ = seen.send(Seen::Closed {
                        code: frame.as_ref().map(|f| u16::from(f.code)),
                        reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                    });
                    // Let tungstenite answer the close and finish.
                    while let Some(Ok(_)) = ws.next().await {}
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    let _ = seen.send(Seen::Dropped);
                    return;
                }
            },
            Some(out) = rx.recv() => {
                if ws.send(out).await.is_err() {
                    let _ = seen.send(Seen::Dropped);
                    return;
                }
            }
        }
    }
}

/// A config with small intervals and the heartbeat off (tests that need it turn it on).
pub fn config(url: &str) -> ClientConfig {
    ClientConfig::new(url)
        .with_ping_interval(Duration::ZERO)
        .with_fast_reconnect_interval(Duration::from_millis(50))
        .with_max_reconnect_interval(Duration::from_millis(300))
        .with_connect_timeout(Duration::from_secs(2))
}

/// The next client event that `pick` maps to `Some`, skipping the rest; panics after [`WAIT`].
pub async fn next_event<T>(
    events: &mut EventReceiver,
    what: &str,
    mut pick: impl FnMut(&ClientEvent) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => {
                if let Some(found) = pick(&event) {
                    return found;
                }
            }
            Ok(None) => panic!("client event stream ended while waiting for {what}"),
            Err(_) => panic!("client did not report {what} within {WAIT:?}"),
        }
    }
}

/// Waits for the next `open`.
pub async fn next_open(events: &mut EventReceiver) {
    next_event(events, "open", |e| {
        matches!(e, ClientEvent::Open).then_some(())
    })
    .await
}

/// A loopback address nothing listens on.
pub async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

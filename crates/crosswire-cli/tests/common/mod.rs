//! Shared helpers of the end-to-end tests: the real `crosswire serve` process as a guard that
//! kills it on drop, and a raw seed-protocol WebSocket client speaking exact JSON.

#![allow(dead_code)] // each test file uses a different subset

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any expected thing may take before a test fails.
pub const STEP: Duration = Duration::from_secs(5);

/// Removes ANSI escape sequences (colours) from a log line.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // CSI: parameters and intermediates, then one final byte in '@'..='~'.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// A running `crosswire serve`; killed (SIGKILL) and reaped on drop.
pub struct Relay {
    child: Option<Child>,
    pub addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

fn collect_lines(source: impl Read + Send + 'static, lines: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(source).lines() {
            let Ok(line) = line else { break };
            let line = strip_ansi(&line);
            if std::env::var_os("CROSSWIRE_TEST_ECHO_LOGS").is_some() {
                eprintln!("[relay] {line}");
            }
            lines.lock().unwrap().push(line);
        }
    });
}

fn parse_ready_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("crosswire relay ready") {
        return None;
    }
    if line.starts_with('{') {
        // --log-format json
        let v: Value = serde_json::from_str(line).ok()?;
        return v["fields"]["addr"].as_str()?.parse().ok();
    }
    let rest = &line[line.find("addr=")? + "addr=".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

impl Relay {
    /// Starts `crosswire serve --port 0 <args>` and waits until it logs its address.
    pub async fn start(args: &[&str]) -> Relay {
        Self::start_with(args, &[]).await
    }

    /// Like [`start`](Self::start) with extra environment variables (e.g. `RUST_LOG`).
    pub async fn start_with(args: &[&str], env: &[(&str, &str)]) -> Relay {
        Self::spawn(Command::new(env!("CARGO_BIN_EXE_crosswire")), args, env).await
    }

    /// Like [`Relay::start`], with the process's open-file limit set to `nofile` (through
    /// util-linux's `prlimit`).
    pub async fn start_limited(nofile: u32, args: &[&str]) -> Relay {
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={nofile}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_crosswire"));
        Self::spawn(command, args, &[]).await
    }

    async fn spawn(mut command: Command, args: &[&str], env: &[(&str, &str)]) -> Relay {
        command.arg("serve");
        if !args.contains(&"--port") {
            command.args(["--port", "0"]);
        }
        command
            .args(args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG_STYLE", "never")
            .env_remove("CROSSWIRE_HOST")
            .env_remove("CROSSWIRE_PORT")
            .env_remove("CROSSWIRE_NAME")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawning crosswire serve");
        let lines = Arc::new(Mutex::new(Vec::new()));
        collect_lines(child.stdout.take().unwrap(), lines.clone());
        collect_lines(child.stderr.take().unwrap(), lines.clone());
        let mut relay = Relay {
            child: Some(child),
            addr: "0.0.0.0:0".parse().unwrap(),
            lines,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(addr) = relay.lines().iter().find_map(|l| parse_ready_addr(l)) {
                relay.addr = addr;
                return relay;
            }
            if let Some(status) = relay.child_mut().try_wait().unwrap() {
                panic!(
                    "crosswire serve exited with {status} before it was ready:\n{}",
                    relay.lines().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "crosswire serve not ready in time:\n{}",
                relay.lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("process already reaped")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("process already reaped").id()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Everything the process logged so far (stdout and stderr), colours removed.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until a log line satisfies `pred`; returns it.
    pub async fn wait_log(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| pred(l)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no log line {what} in time:\n{}",
                self.lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `ws://addr/?<query>`.
    pub fn url(&self, query: &str) -> String {
        format!("ws://{}/?{query}", self.addr)
    }

    /// `ws://addr` (no path, no query), for clients that add their own parameters.
    pub fn base_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Sends a signal with the `kill` command (the workspace forbids `unsafe`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Freezes the process (SIGSTOP): it stops answering anything. Returns once every
    /// thread of the process is stopped (SIGSTOP takes effect asynchronously).
    pub async fn freeze(&self) {
        self.signal("STOP");
        let deadline = Instant::now() + STEP;
        while !self.all_threads_stopped() {
            assert!(Instant::now() < deadline, "process did not stop");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Whether every thread is in state `T` (stopped), per `/proc/<pid>/task/*/stat`.
    fn all_threads_stopped(&self) -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return false;
        };
        tasks.flatten().all(|task| {
            std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
                // The state follows the command name, which is in parentheses.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    .is_some_and(|state| state == "T" || state == "t")
            })
        })
    }

    /// Resumes a frozen process (SIGCONT).
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    /// Waits for the process to exit, at most `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child_mut().try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "crosswire serve did not exit within {timeout:?}:\n{}",
                self.lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Kills the process at once (SIGKILL: no close frames) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a raw socket received.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Text(String),
    Binary(usize),
    /// A close frame: code (1005 when it had none) and reason.
    Close(u16, String),
    /// The stream ended without a close frame.
    Ended,
    /// A transport error (e.g. connection reset).
    Error(String),
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A raw seed-protocol client: exact JSON text frames, no heartbeat, no reconnect.
pub struct Raw {
    pub id: String,
    ws: Ws,
    /// Frames received while waiting for something else (e.g. a reply), in arrival order.
    backlog: VecDeque<Incoming>,
    next_callback: u64,
}

impl Raw {
    /// Connects to `relay` with `?id=<id>` and checks the connection is bound (a request
    /// round trip succeeds).
    pub async fn connect(relay: &Relay, id: &str) -> Raw {
        let mut raw = Raw::connect_url(&relay.url(&format!("id={id}")), id).await;
        let reply = raw.request("echo", json!("hello")).await;
        assert_eq!(reply, json!("hello"), "{id}: first echo");
        raw
    }

    /// Connects to `url` without any check.
    pub async fn connect_url(url: &str, id: &str) -> Raw {
        let (ws, _) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(url))
            .await
            .unwrap_or_else(|_| panic!("{id}: connect timed out"))
            .unwrap_or_else(|e| panic!("{id}: connect failed: {e}"));
        Raw {
            id: id.to_string(),
            ws,
            backlog: VecDeque::new(),
            next_callback: 0,
        }
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        let text: String = text.into();
        self.ws
            .send(Message::text(text))
            .await
            .unwrap_or_else(|e| panic!("{}: send failed: {e}", self.id));
    }

    /// Sends a message, returning the transport error if any (for frames the server may
    /// refuse by closing the connection).
    pub async fn try_send(&mut self, message: Message) -> Result<(), String> {
        self.ws.send(message).await.map_err(|e| e.to_string())
    }

    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(value.to_string()).await;
    }

    /// Next frame from the wire (protocol pings and pongs are skipped), or `None` after
    /// `timeout`.
    async fn next_wire(&mut self, timeout: Duration) -> Option<Incoming> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            return Some(match next {
                Some(Ok(Message::Text(text))) => Incoming::Text(text.to_string()),
                Some(Ok(Message::Binary(data))) => Incoming::Binary(data.len()),
                Some(Ok(Message::Close(frame))) => match frame {
                    Some(f) => Incoming::Close(u16::from(f.code), f.reason.to_string()),
                    None => Incoming::Close(1005, String::new()),
                },
                Some(Ok(_)) => continue, // ping / pong / raw frame
                Some(Err(e)) => Incoming::Error(e.to_string()),
                None => Incoming::Ended,
            });
        }
    }

    /// The next thing received (backlog first), or `None` after `timeout`.
    pub async fn recv_within(&mut self, timeout: Duration) -> Option<Incoming> {
        if let Some(first) = self.backlog.pop_front() {
            return Some(first);
        }
        self.next_wire(timeout).await
    }

    /// The next thing received; fails the test after [`STEP`].
    pub async fn recv(&mut self) -> Incoming {
        let id = self.id.clone();
        self.recv_within(STEP)
            .await
            .unwrap_or_else(|| panic!("{id}: nothing received within {STEP:?}"))
    }

    /// The next text frame; anything else fails the test.
    pub async fn recv_text(&mut self) -> String {
        match self.recv().await {
            Incoming::Text(text) => text,
            other => panic!("{}: expected a text frame, got {other:?}", self.id),
        }
    }

    /// The next text frame, parsed.
    pub async fn recv_json(&mut self) -> Value {
        let text = self.recv_text().await;
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {text}", self.id))
    }

    /// Sends `{"event", "payload", "callbackId"}` and waits for the reply with that id;
    /// frames arriving first are kept for later `recv`s. Returns the reply's payload, after
    /// checking the reply has exactly the keys `callbackId` and `payload`.
    pub async fn request(&mut self, event: &str, payload: Value) -> Value {
        self.next_callback += 1;
        let callback_id = format!("{}-{}", self.id, self.next_callback);
        self.send_json(&json!({"event": event, "payload": payload, "callbackId": callback_id}))
            .await;
        self.wait_reply(&callback_id).await
    }

    /// Waits for the reply with `callback_id`, keeping other frames in the backlog.
    pub async fn wait_reply(&mut self, callback_id: &str) -> Value {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(incoming) = self.next_wire(left).await else {
                panic!(
                    "{}: no reply to {callback_id} within {STEP:?}; backlog {:?}",
                    self.id, self.backlog
                );
            };
            if let Incoming::Text(text) = &incoming {
                if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) {
                    if map.get("callbackId") == Some(&json!(callback_id)) {
                        let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
                        keys.sort_unstable();
                        assert_eq!(keys, ["callbackId", "payload"], "reply shape: {text}");
                        return map["payload"].clone();
                    }
                }
            }
            assert!(
                !matches!(
                    incoming,
                    Incoming::Close(..) | Incoming::Ended | Incoming::Error(_)
                ),
                "{}: connection ended while waiting for {callback_id}: {incoming:?}",
                self.id
            );
            self.backlog.push_back(incoming);
        }
    }

    /// The next frame must be exactly `{"event": "msg", "payload": data}`.
    pub async fn expect_msg(&mut self, data: &Value) {
        let got = self.recv_json().await;
        assert_eq!(
            got,
            json!({"event": "msg", "payload": data}),
            "{}: expected msg {data}",
            self.id
        );
    }

    /// The next thing received must be a close frame with `code`; the stream then ends.
    pub async fn expect_close(&mut self, code: u16) -> String {
        match self.recv().await {
            Incoming::Close(got, reason) => {
                assert_eq!(got, code, "{}: close code (reason {reason:?})", self.id);
                // Finish the closing handshake: the stream ends.
                let deadline = Instant::now() + STEP;
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match self.next_wire(left).await {
                        Some(Incoming::Ended | Incoming::Error(_)) => break,
                        Some(Incoming::Close(..)) => {}
                        Some(other) => panic!("{}: {other:?} after close", self.id),
                        None => panic!("{}: stream did not end after close", self.id),
                    }
                }
                reason
            }
            other => panic!("{}: expected close {code}, got {other:?}", self.id),
        }
    }

    /// Asserts nothing more was delivered to this socket: `probe` sends it a unique
    /// sentinel with `to` (after every earlier send was acknowledged, so the sentinel is
    /// queued behind anything already due), and the sentinel must be the very next frame.
    pub async fn expect_nothing_more(&mut self, probe: &mut Raw) {
        let sentinel =
            json!({"sentinel": format!("{}->{}", probe.id, self.id), "n": probe.next_callback});
        let reply = probe
            .request("to", json!({"id": self.id, "data": sentinel}))
            .await;
        assert_eq!(reply, json!({"ok": true}));
        self.expect_msg(&sentinel).await;
    }

    /// Like [`expect_nothing_more`](Self::expect_nothing_more) for the probe itself.
    pub async fn expect_nothing_more_self(&mut self) {
        let sentinel = json!({"sentinel": format!("self {}", self.id), "n": self.next_callback});
        let reply = self
            .request("to", json!({"id": self.id, "data": sentinel}))
            .await;
        assert_eq!(reply, json!({"ok": true}));
        self.expect_msg(&sentinel).await;
    }

    /// Sends a close frame with `code` and waits for the server's answer.
    pub async fn close(mut self, code: u16) {
        use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        let _ = self
            .ws
            .close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: "bye".into(),
            }))
            .await;
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_wire(left).await {
                Some(Incoming::Ended | Incoming::Error(_)) => return,
                Some(_) => {}
                None => panic!("{}: server did not finish the close handshake", self.id),
            }
        }
    }
}

// ----- cluster mode (the redis_*.rs tests) -----

/// How long a cluster-wide condition (nodes discovering each other, a Redis node coming
/// back) may take before a test fails.
pub const CLUSTER_STEP: Duration = Duration::from_secs(15);

/// Panics unless `redis-server` is on `PATH`: the tests that need it fail rather than skip.
pub fn require_redis_server() {
    assert!(
        crosswire_testkit::RedisServer::available(),
        "redis-server is not on PATH: install it (scripts/test.sh does) — tests that need it fail rather than skip"
    );
}

/// A fresh `redis-server` on a free port. Panics when `redis-server` is not installed or does
/// not start, so the cluster tests fail rather than skip on machines without it.
pub fn redis() -> crosswire_testkit::RedisServer {
    require_redis_server();
    crosswire_testkit::RedisServer::start()
        .unwrap_or_else(|e| panic!("redis-server is on PATH but did not start: {e}"))
}

impl Relay {
    /// Starts `crosswire serve --name <name> --redis <url>… <extra>` (one cluster node).
    pub async fn node(name: &str, redis: &[String], extra: &[&str]) -> Relay {
        let mut args: Vec<&str> = vec!["--name", name];
        for url in redis {
            args.extend(["--redis", url.as_str()]);
        }
        args.extend_from_slice(extra);
        Relay::start(&args).await
    }

    /// `GET /healthz`: status and parsed body.
    pub async fn healthz(&self) -> (u16, Value) {
        let (status, body) = crosswire_testkit::http_get(self.addr, "/healthz")
            .await
            .unwrap_or_else(|e| panic!("GET /healthz on {}: {e}", self.addr));
        let body = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("/healthz body is not JSON ({e}): {body}"));
        (status, body)
    }

    /// `GET /metrics`, parsed: `name{labels}` → value.
    pub async fn metrics(&self) -> std::collections::BTreeMap<String, f64> {
        let (status, body) = crosswire_testkit::http_get(self.addr, "/metrics")
            .await
            .unwrap_or_else(|e| panic!("GET /metrics on {}: {e}", self.addr));
        assert_eq!(status, 200, "{body}");
        crosswire_testkit::parse_metrics(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    /// Polls `GET /healthz` until `pred(status, body)` holds; returns the body and how long
    /// it took. Fails the test after `timeout`.
    pub async fn wait_health(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(u16, &Value) -> bool,
    ) -> (Value, Duration) {
        let started = Instant::now();
        loop {
            let (status, body) = self.healthz().await;
            if pred(status, &body) {
                return (body, started.elapsed());
            }
            assert!(
                started.elapsed() < timeout,
                "{}: no {what} within {timeout:?}; last /healthz {status} {body}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until `/healthz` lists exactly `nodes` (sorted) and reports the broker healthy
    /// with `redis_nodes` healthy publishers and subscribers.
    /// Nodes `n1` and `n2` started with `first` and `second` (their broker flags), once each
    /// sees both.
    pub async fn pair(first: &[&str], second: &[&str]) -> (Relay, Relay) {
        let n1 = Relay::start(&[&["--name", "n1"], first].concat()).await;
        let n2 = Relay::start(&[&["--name", "n2"], second].concat()).await;
        for n in [&n1, &n2] {
            n.wait_health("both nodes", CLUSTER_STEP, |status, body| {
                status == 200 && body["nodes"] == json!(["n1", "n2"])
            })
            .await;
        }
        (n1, n2)
    }

    pub async fn wait_cluster(&self, nodes: &[&str], redis_nodes: u64) -> Value {
        let mut want: Vec<&str> = nodes.to_vec();
        want.sort_unstable();
        let want = json!(want);
        self.wait_health("formed cluster", CLUSTER_STEP, |status, body| {
            status == 200
                && body["nodes"] == want
                && body["broker"]["healthy"] == json!(true)
                && body["broker"]["healthy_publishers"] == json!(redis_nodes)
                && body["broker"]["healthy_subscribers"] == json!(redis_nodes)
        })
        .await
        .0
    }
}

impl Raw {
    /// The next frame, which must be event `msg`; returns its payload, or `None` after
    /// `timeout`.
    pub async fn recv_msg_within(&mut self, timeout: Duration) -> Option<Value> {
        let incoming = self.recv_within(timeout).await?;
        let Incoming::Text(text) = &incoming else {
            panic!("{}: expected a msg, got {incoming:?}", self.id);
        };
        let value: Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {text}", self.id));
        assert_eq!(value["event"], json!("msg"), "{}: {text}", self.id);
        Some(value["payload"].clone())
    }

    /// Moves the socket into a task that collects the payloads of `msg` events, with their
    /// arrival times, until one satisfies `last` (kept) or `timeout` passes.
    pub fn collect_until(
        mut self,
        timeout: Duration,
        last: impl Fn(&Value) -> bool + Send + 'static,
    ) -> tokio::task::JoinHandle<(Raw, Vec<(Instant, Value)>)> {
        tokio::spawn(async move {
            let deadline = Instant::now() + timeout;
            let mut got = Vec::new();
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let Some(payload) = self.recv_msg_within(left).await else {
                    eprintln!(
                        "{}: collector gave up after {timeout:?} with {} messages",
                        self.id,
                        got.len()
                    );
                    break;
                };
                let done = last(&payload);
                got.push((Instant::now(), payload));
                if done {
                    break;
                }
            }
            (self, got)
        })
    }
}

/// A client `s` on `from` reaches a client `m` on `to`: by room `r` (once its subscriptions
/// are live) and by id. Both clients, for more.
pub async fn room_and_id_across(from: &Relay, to: &Relay) -> (Raw, Raw) {
    let mut sender = Raw::connect(from, "s").await;
    let mut member = Raw::connect(to, "m").await;
    let joined = member.request("join", json!({"room": "r"})).await;
    assert_eq!(joined, json!({"ok": true}));
    sync_room(&mut sender, "r", &mut [&mut member]).await;
    let sent = sender
        .request("room", json!({"room": "r", "data": "to the room"}))
        .await;
    assert_eq!(sent, json!({"ok": true}));
    member.expect_msg(&json!("to the room")).await;
    let sent = sender
        .request("to", json!({"id": "m", "data": "to m"}))
        .await;
    assert_eq!(sent, json!({"ok": true}));
    member.expect_msg(&json!("to m")).await;
    (sender, member)
}

/// Waits until a room's subscription is live on every node that has a member: `sender`
/// sends `{"warm": k}` to the room until, in one round, every receiver gets warm-up `k`
/// (earlier warm-ups reaching some of them are read and dropped). A node subscribes to a
/// room's namespace on its first local join, asynchronously; this turns that into a
/// condition to wait for. Relies on one publisher's messages on one channel arriving in
/// order (one Redis node, or the channel-affine strategy), so nothing of the warm-up is left
/// in flight afterwards.
pub async fn sync_room(sender: &mut Raw, room: &str, receivers: &mut [&mut Raw]) {
    let deadline = Instant::now() + CLUSTER_STEP;
    for k in 0u64.. {
        assert!(
            Instant::now() < deadline,
            "room {room}: subscriptions not live within {CLUSTER_STEP:?}"
        );
        let reply = sender
            .request("room", json!({"room": room, "data": {"warm": k}}))
            .await;
        assert_eq!(reply, json!({"ok": true}));
        let mut all = true;
        for r in receivers.iter_mut() {
            let round_end = Instant::now() + Duration::from_millis(300);
            let mut got = false;
            loop {
                let left = round_end.saturating_duration_since(Instant::now());
                let Some(payload) = r.recv_msg_within(left).await else {
                    break;
                };
                let j = payload["warm"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{}: unexpected {payload} during warm-up", r.id));
                if j == k {
                    got = true;
                    break;
                }
            }
            all &= got;
        }
        if all {
            return;
        }
    }
}

// ----- behind a reverse proxy (nginx_proxy.rs) -----

/// The `nginx` binary: `nginx` on `PATH`, else Debian's `/usr/sbin/nginx` (not on an
/// unprivileged user's `PATH`).
pub fn nginx_binary() -> Option<std::path::PathBuf> {
    ["nginx", "/usr/sbin/nginx"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|bin| {
            Command::new(bin)
                .arg("-v")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// Panics unless `nginx` is installed, like [`require_redis_server`]; returns its path.
pub fn require_nginx() -> std::path::PathBuf {
    nginx_binary().unwrap_or_else(|| {
        panic!(
            "nginx is neither on PATH nor /usr/sbin/nginx: install it (scripts/test.sh does) — tests that need it fail rather than skip"
        )
    })
}

impl Raw {
    /// Connects to `url` from the local address `from` (any `127.x.y.z` is a loopback
    /// address on Linux, so a test can be a client other than `127.0.0.1`), adding the
    /// request headers `headers`; then checks the connection is bound, like
    /// [`connect`](Self::connect).
    pub async fn connect_from(
        url: &str,
        id: &str,
        from: std::net::IpAddr,
        headers: &[(&str, &str)],
    ) -> Raw {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
        let mut request = url.into_client_request().unwrap();
        for (name, value) in headers {
            request.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let uri = request.uri();
        let to = format!("{}:{}", uri.host().unwrap(), uri.port_u16().unwrap_or(80));
        let to: SocketAddr = to.parse().unwrap();
        let socket = match from {
            std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .unwrap();
        socket
            .bind(SocketAddr::new(from, 0))
            .unwrap_or_else(|e| panic!("{id}: binding {from}: {e}"));
        let connect = async {
            let stream = socket.connect(to).await?;
            tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
                .await
                .map_err(std::io::Error::other)
        };
        let (ws, _) = tokio::time::timeout(STEP, connect)
            .await
            .unwrap_or_else(|_| panic!("{id}: connect to {url} from {from} timed out"))
            .unwrap_or_else(|e| panic!("{id}: connect to {url} from {from} failed: {e}"));
        let mut raw = Raw {
            id: id.to_string(),
            ws,
            backlog: VecDeque::new(),
            next_callback: 0,
        };
        let reply = raw.request("echo", json!("hello")).await;
        assert_eq!(reply, json!("hello"), "{id}: first echo");
        raw
    }
}

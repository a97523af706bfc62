//! Test helpers for crosswire: a raw seed-protocol WebSocket client, servers on free ports, a
//! relay-like handler set, condition waits, `redis-server` and `nats-server` guards, and the
//! cluster scenarios every broker runs ([`mod@broker_suite`], [`broker_suite!`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use crosswire::ServerConfig;
//! use crosswire_testkit::{install_relay, spawn_server, RawClient};
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let (server, addr) = spawn_server(ServerConfig::default()).await;
//! install_relay(&server);
//! let mut client = RawClient::connect_bound(addr, "alice").await?;
//! client.send_text(r#"{"event":"echo","payload":1,"callbackId":"1"}"#).await?;
//! assert_eq!(
//!     client.recv_text(Duration::from_secs(5)).await.as_deref(),
//!     Some(r#"{"callbackId":"1","payload":1}"#)
//! );
//! # Ok(()) }
//! ```
//!
//! # How it works
//! [`RawClient`] speaks RFC 6455 over a plain `TcpStream` with the codec of
//! `crosswire_protocol::ws` (in the client role, so a masked or malformed server frame is an
//! error the test sees). Owning the socket lets a test do what a well-behaved library would
//! refuse to: send unmasked or oversized frames, not answer pings, or stop reading altogether
//! (the slow-client tests). One reader task per client decodes frames into a queue of
//! [`RawEvent`]s, answers pings unless told not to, and answers the server's close frame.
#![warn(missing_docs)]

pub mod broker_suite;
pub mod cluster_suite;
pub mod fixture;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use crosswire::system::Connection;
use crosswire::{Ack, Data, Payload, Room, Server, ServerConfig, Socket};
use crosswire_protocol::ws::{self, Decoded, Decoder, Message, OpCode, Role};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch, Mutex};

/// A generous default timeout for things that should happen at once on loopback.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Largest frame the raw client accepts from a server.
const CLIENT_MAX_MESSAGE: usize = 64 << 20;

/// The handshake key every raw client sends (its accept value is checked).
const HANDSHAKE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// What the raw client's reader saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawEvent {
    /// A complete text message.
    Text(String),
    /// A complete binary message.
    Binary(Vec<u8>),
    /// A ping from the server (already answered when auto-pong is on).
    Ping(Vec<u8>),
    /// A pong from the server.
    Pong(Vec<u8>),
    /// A close frame: code and reason, `None` when it carried no code.
    Close(Option<(u16, String)>),
    /// The server broke the protocol (as the client codec sees it).
    ProtocolError(String),
    /// The TCP connection ended.
    Eof,
}

/// How a [`RawClient`] behaves.
#[derive(Debug, Clone, Copy)]
pub struct RawOptions {
    /// Answer protocol pings with pongs. Default: on.
    pub auto_pong: bool,
    /// Read from the socket from the start. Off makes a client that never reads until
    /// [`RawClient::resume_reading`] (a slow client). Default: on.
    pub reading: bool,
    /// `SO_RCVBUF` of the client socket, to make a stalled client fill up sooner.
    /// Default: the system's.
    pub recv_buffer: Option<u32>,
    /// Extra request headers of the upgrade (`("Origin", "https://a.example")`).
    /// Default: none.
    pub headers: &'static [(&'static str, &'static str)],
}

impl Default for RawOptions {
    fn default() -> Self {
        Self {
            auto_pong: true,
            reading: true,
            recv_buffer: None,
            headers: &[],
        }
    }
}

/// Why [`RawClient::connect`] failed.
#[derive(Debug)]
pub enum ConnectError {
    /// TCP connect or I/O failed.
    Io(io::Error),
    /// The server answered the upgrade with this HTTP status instead of 101.
    Http(u16),
    /// The response was not a valid WebSocket handshake.
    BadHandshake(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "io: {e}"),
            Self::Http(status) => write!(f, "handshake refused with HTTP {status}"),
            Self::BadHandshake(why) => write!(f, "bad handshake: {why}"),
        }
    }
}

impl std::error::Error for ConnectError {}

impl From<io::Error> for ConnectError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// A raw seed-protocol client: exact text in, exact text out.
pub struct RawClient {
    writer: Arc<Mutex<OwnedWriteHalf>>,
    events: mpsc::UnboundedReceiver<RawEvent>,
    auto_pong: Arc<AtomicBool>,
    close_sent: Arc<AtomicBool>,
    pings: Arc<AtomicU64>,
    /// Messages received with RSV1 set (compressed).
    compressed: Arc<AtomicU64>,
    /// The server's `Sec-WebSocket-Extensions` answer.
    extensions: Option<String>,
    reading: watch::Sender<bool>,
    reader: tokio::task::JoinHandle<()>,
    /// An event taken out of the queue by a `recv_*` that did not want it (a close or the
    /// end of the connection), kept for `expect_close` / `expect_eof`.
    stashed: Option<RawEvent>,
}

impl std::fmt::Debug for RawClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawClient").finish_non_exhaustive()
    }
}

impl Drop for RawClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn next_mask() -> [u8; 4] {
    static NEXT: AtomicU32 = AtomicU32::new(0x9e37_79b9);
    let v = NEXT.fetch_add(0x6d2b_79f5, Ordering::Relaxed);
    v.to_le_bytes()
}

/// A masked client frame.
pub fn client_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    client_frame_with(true, opcode, payload, true)
}

/// A masked client frame compressed with permessage-deflate (RSV1 set, no context
/// takeover, as crosswire negotiates).
pub fn compressed_client_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let params = crosswire_protocol::deflate::Params::default();
    crosswire_protocol::deflate::encode_frame(opcode, payload, Some(next_mask()), params).to_vec()
}

/// A client frame with every knob: `fin`, and masked or not (unmasked breaks RFC 6455).
pub fn client_frame_with(fin: bool, opcode: OpCode, payload: &[u8], masked: bool) -> Vec<u8> {
    let mask = masked.then(next_mask);
    let mut header = [0u8; ws::MAX_HEADER_LEN];
    let n = ws::encode_header(&mut header, fin, opcode, payload.len(), mask);
    let mut out = Vec::with_capacity(n + payload.len());
    out.extend_from_slice(&header[..n]);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(m) = mask {
        ws::apply_mask(&mut out[start..], m);
    }
    out
}

impl RawClient {
    /// Connects to `ws://addr<target>` (`target` is the path and query, e.g. `/?id=7`).
    pub async fn connect(addr: SocketAddr, target: &str) -> Result<Self, ConnectError> {
        Self::connect_with(addr, target, RawOptions::default()).await
    }

    /// Connects with `?id=<id>` and waits for the heartbeat echo, so the connection is
    /// fully set up on the server (bound, when the server binds from `id`) on return.
    pub async fn connect_bound(addr: SocketAddr, id: &str) -> Result<Self, ConnectError> {
        let target = format!("/?id={}", urlencode(id));
        let mut client = Self::connect(addr, &target).await?;
        client.sync("").await?;
        Ok(client)
    }

    /// Connects with explicit [`RawOptions`].
    pub async fn connect_with(
        addr: SocketAddr,
        target: &str,
        options: RawOptions,
    ) -> Result<Self, ConnectError> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(size) = options.recv_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        let mut stream = tokio::time::timeout(TIMEOUT, socket.connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        let (leftover, head) = tokio::time::timeout(
            TIMEOUT,
            handshake(&mut stream, addr, target, options.headers),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"))??;
        let extensions = response_header(&head, "sec-websocket-extensions");
        let deflate = extensions
            .as_deref()
            .is_some_and(crosswire_protocol::deflate::accepted);
        let compressed = Arc::new(AtomicU64::new(0));
        let (read, write) = stream.into_split();
        let writer = Arc::new(Mutex::new(write));
        let (tx, events) = mpsc::unbounded_channel();
        let auto_pong = Arc::new(AtomicBool::new(options.auto_pong));
        let close_sent = Arc::new(AtomicBool::new(false));
        let pings = Arc::new(AtomicU64::new(0));
        let (reading, reading_rx) = watch::channel(options.reading);
        let reader = tokio::spawn(read_loop(
            read,
            leftover,
            Decoder::new(Role::Client, CLIENT_MAX_MESSAGE).with_deflate(deflate),
            Arc::clone(&writer),
            tx,
            Flags {
                auto_pong: Arc::clone(&auto_pong),
                close_sent: Arc::clone(&close_sent),
                pings: Arc::clone(&pings),
                compressed: Arc::clone(&compressed),
            },
            reading_rx,
        ));
        Ok(Self {
            writer,
            events,
            auto_pong,
            close_sent,
            pings,
            compressed,
            extensions,
            reading,
            reader,
            stashed: None,
        })
    }

    /// The server's `Sec-WebSocket-Extensions` answer (e.g. permessage-deflate's
    /// parameters), if it sent one.
    pub fn extensions(&self) -> Option<&str> {
        self.extensions.as_deref()
    }

    /// Messages received compressed (permessage-deflate, RSV1 set) so far.
    pub fn compressed_received(&self) -> u64 {
        self.compressed.load(Ordering::Acquire)
    }

    /// Sends a text frame holding exactly `text`.
    pub async fn send_text(&self, text: &str) -> io::Result<()> {
        self.send_raw(&client_frame(OpCode::Text, text.as_bytes()))
            .await
    }

    /// Sends a JSON value as a text frame.
    pub async fn send_json(&self, value: &Value) -> io::Result<()> {
        self.send_text(&value.to_string()).await
    }

    /// Sends a binary frame.
    pub async fn send_binary(&self, data: &[u8]) -> io::Result<()> {
        self.send_raw(&client_frame(OpCode::Binary, data)).await
    }

    /// Sends a protocol ping.
    pub async fn send_ping(&self, data: &[u8]) -> io::Result<()> {
        self.send_raw(&client_frame(OpCode::Ping, data)).await
    }

    /// Sends an unsolicited protocol pong.
    pub async fn send_pong(&self, data: &[u8]) -> io::Result<()> {
        self.send_raw(&client_frame(OpCode::Pong, data)).await
    }

    /// Sends a close frame with `code` and `reason`.
    pub async fn send_close(&self, code: u16, reason: &str) -> io::Result<()> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        self.close_sent.store(true, Ordering::Release);
        self.send_raw(&client_frame(OpCode::Close, &payload)).await
    }

    /// Writes bytes to the socket as they are (frames built by hand).
    pub async fn send_raw(&self, bytes: &[u8]) -> io::Result<()> {
        let mut w = self.writer.lock().await;
        w.write_all(bytes).await?;
        w.flush().await
    }

    /// Answers (or stops answering) protocol pings.
    pub fn set_auto_pong(&self, on: bool) {
        self.auto_pong.store(on, Ordering::Release);
    }

    /// Protocol pings received so far.
    pub fn pings_received(&self) -> u64 {
        self.pings.load(Ordering::Acquire)
    }

    /// Starts reading, for a client made with `reading: false`.
    pub fn resume_reading(&self) {
        let _ = self.reading.send(true);
    }

    /// The next event of any kind, or `None` after `timeout`.
    pub async fn recv_event(&mut self, timeout: Duration) -> Option<RawEvent> {
        if let Some(ev) = self.stashed.take() {
            return Some(ev);
        }
        match tokio::time::timeout(timeout, self.events.recv()).await {
            Ok(Some(ev)) => Some(ev),
            // The reader ended after Eof: stay at Eof.
            Ok(None) => Some(RawEvent::Eof),
            Err(_) => None,
        }
    }

    /// The next text message; pings, pongs and binary messages are skipped. `None` after
    /// `timeout` or when the connection closes first (the close stays available to
    /// [`RawClient::expect_close`]).
    pub async fn recv_text(&mut self, timeout: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_event(left).await? {
                RawEvent::Text(t) => return Some(t),
                ev @ (RawEvent::Close(_) | RawEvent::Eof | RawEvent::ProtocolError(_)) => {
                    self.stashed = Some(ev);
                    return None;
                }
                _ => {}
            }
        }
    }

    /// Every text message before `marker` (which is consumed), in order; panics, naming the
    /// client `who` and what it got, when `marker` does not come within `timeout` of each
    /// message.
    pub async fn recv_until(&mut self, marker: &str, timeout: Duration, who: &str) -> Vec<String> {
        let mut got = Vec::new();
        loop {
            let text = self
                .recv_text(timeout)
                .await
                .unwrap_or_else(|| panic!("{who}: no {marker}; got {got:?}"));
            if text == marker {
                return got;
            }
            got.push(text);
        }
    }

    /// The next text message parsed as JSON (panics if it is not JSON).
    pub async fn recv_json(&mut self, timeout: Duration) -> Option<Value> {
        let text = self.recv_text(timeout).await?;
        Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
    }

    /// Waits for the server's close frame, skipping messages; its code and reason, or `None`
    /// when the connection ended without one or nothing came within `timeout`.
    pub async fn expect_close(&mut self, timeout: Duration) -> Option<(u16, String)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_event(left).await? {
                RawEvent::Close(frame) => {
                    self.stashed = Some(RawEvent::Close(frame.clone()));
                    return Some(frame.unwrap_or((1005, String::new())));
                }
                RawEvent::Eof => {
                    self.stashed = Some(RawEvent::Eof);
                    return None;
                }
                _ => {}
            }
        }
    }

    /// Waits until the TCP connection has ended (with or without a close frame); whether it
    /// did within `timeout`.
    pub async fn expect_eof(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_event(left).await {
                None => return false,
                Some(RawEvent::Eof) => {
                    self.stashed = Some(RawEvent::Eof);
                    return true;
                }
                Some(_) => {}
            }
        }
    }

    /// Sends `heartbeat` and waits for its echo, skipping anything queued before it. Every
    /// frame the server queued for this client before the echo has then arrived, and the
    /// connection's setup (id binding) is done.
    pub async fn sync(&mut self, heartbeat: &str) -> Result<(), ConnectError> {
        self.send_text(heartbeat).await?;
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_text(left).await {
                Some(t) if t == heartbeat => return Ok(()),
                Some(_) => {}
                None => {
                    return Err(ConnectError::BadHandshake(format!(
                        "no heartbeat echo {heartbeat:?} (closed or timed out: {:?})",
                        self.stashed
                    )))
                }
            }
        }
    }

    /// Sends `heartbeat`, then returns every text message that arrived before its echo
    /// (panics when the echo does not come). The way to assert that nothing *else* reached
    /// this client: anything sent to it before the heartbeat is in the list.
    pub async fn drain_until_heartbeat(&mut self, heartbeat: &str) -> Vec<String> {
        self.send_text(heartbeat).await.expect("send heartbeat");
        let mut seen = Vec::new();
        loop {
            match self.recv_text(TIMEOUT).await {
                Some(t) if t == heartbeat => return seen,
                Some(t) => seen.push(t),
                None => panic!("no heartbeat echo; got {seen:?}, then {:?}", self.stashed),
            }
        }
    }
}

/// The value of header `name` (lowercase) in a response head.
fn response_header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Sends the upgrade request; returns what was read past the response head, and the head.
async fn handshake(
    stream: &mut TcpStream,
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<(BytesMut, String), ConnectError> {
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {HANDSHAKE_KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buf = BytesMut::with_capacity(1024);
    let end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() > 16 * 1024 {
            return Err(ConnectError::BadHandshake("response head too long".into()));
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(ConnectError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed during the handshake",
            )));
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ConnectError::BadHandshake(head.clone()))?;
    if status != 101 {
        return Err(ConnectError::Http(status));
    }
    let expected = ws::accept_key(HANDSHAKE_KEY.as_bytes());
    let accept_ok = head.lines().any(|line| {
        line.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == expected
        })
    });
    if !accept_ok {
        return Err(ConnectError::BadHandshake(format!(
            "wrong Sec-WebSocket-Accept: {head}"
        )));
    }
    let _ = buf.split_to(end);
    Ok((buf, head))
}

/// What the reader shares with its [`RawClient`].
struct Flags {
    auto_pong: Arc<AtomicBool>,
    close_sent: Arc<AtomicBool>,
    pings: Arc<AtomicU64>,
    compressed: Arc<AtomicU64>,
}

async fn read_loop(
    mut read: OwnedReadHalf,
    mut buf: BytesMut,
    mut decoder: Decoder,
    writer: Arc<Mutex<OwnedWriteHalf>>,
    tx: mpsc::UnboundedSender<RawEvent>,
    flags: Flags,
    mut reading: watch::Receiver<bool>,
) {
    let Flags {
        auto_pong,
        close_sent,
        pings,
        compressed,
    } = flags;
    if reading.wait_for(|on| *on).await.is_err() {
        return;
    }
    let mut rsv1 = false;
    loop {
        // Decode everything complete in the buffer.
        loop {
            let mut replies: Vec<Vec<u8>> = Vec::new();
            // RSV1 on a message's first frame: it is compressed.
            if !decoder.in_fragmented_message() {
                rsv1 = buf
                    .first()
                    .is_some_and(|b| b & crosswire_protocol::deflate::RSV1 != 0);
            }
            let (event, used) = match decoder.decode(&mut buf[..]) {
                Ok(Decoded::Message(message, used)) => {
                    if rsv1 {
                        compressed.fetch_add(1, Ordering::AcqRel);
                    }
                    let event = match message {
                        Message::Text(t) => RawEvent::Text(t.to_string()),
                        Message::Binary(b) => RawEvent::Binary(b.to_vec()),
                        Message::Ping(p) => {
                            pings.fetch_add(1, Ordering::AcqRel);
                            if auto_pong.load(Ordering::Acquire) {
                                replies.push(client_frame(OpCode::Pong, p));
                            }
                            RawEvent::Ping(p.to_vec())
                        }
                        Message::Pong(p) => RawEvent::Pong(p.to_vec()),
                        Message::Close(frame) => {
                            if !close_sent.swap(true, Ordering::AcqRel) {
                                let payload = frame
                                    .map(|f| f.code.to_be_bytes().to_vec())
                                    .unwrap_or_default();
                                replies.push(client_frame(OpCode::Close, &payload));
                            }
                            RawEvent::Close(frame.map(|f| (f.code, f.reason.to_string())))
                        }
                    };
                    (Some(event), used)
                }
                Ok(Decoded::Fragment(used)) => (None, used),
                Ok(Decoded::Incomplete { .. }) => break,
                Err(e) => {
                    let _ = tx.send(RawEvent::ProtocolError(e.to_string()));
                    let _ = tx.send(RawEvent::Eof);
                    return;
                }
            };
            let _ = buf.split_to(used);
            for reply in replies {
                let mut w = writer.lock().await;
                let _ = w.write_all(&reply).await;
            }
            if let Some(event) = event {
                let _ = tx.send(event);
            }
        }
        buf.reserve(64 * 1024);
        match read.read_buf(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = tx.send(RawEvent::Eof);
                return;
            }
            Ok(_) => {}
        }
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ----- servers -----

/// Creates a single node and serves it on `127.0.0.1:0`; returns it and its address.
/// Must run inside a tokio runtime.
pub async fn spawn_server(config: ServerConfig) -> (Server, SocketAddr) {
    let server = Server::new(config).expect("valid server config");
    let addr = server
        .listen("127.0.0.1:0")
        .await
        .expect("listen on 127.0.0.1:0");
    (server, addr)
}

/// Serves an already built server (e.g. a cluster node) on `127.0.0.1:0`.
pub async fn serve_on_free_port(server: &Server) -> SocketAddr {
    server
        .listen("127.0.0.1:0")
        .await
        .expect("listen on 127.0.0.1:0")
}

/// Namespace of the rooms [`install_relay`] joins.
pub const RELAY_NAMESPACE: &str = "relay";

/// Installs a relay-like handler set (the SPEC §4 contract, without the error replies):
/// binds every socket to its `?id=` (closes with 4011 without one); `join`/`leave`
/// `{"room"}` in namespace [`RELAY_NAMESPACE`]; `echo` replies with the payload; `room`
/// `{"room","data"}`, `all` `{"data"}`, `to` `{"id","data"}`, `ids` `{"ids","data"}` send
/// event `msg` with `data`. Every event replies `{"ok":true}` (or the echo) when asked.
pub fn install_relay(server: &Server) {
    server.on_system(
        |_: Connection, server: Server, socket: Socket| match socket.query("id") {
            Some(id) => server.bind(id, &socket),
            None => socket.close(4011, "no id"),
        },
    );
    fn ok() -> Ack<Value> {
        Ack(serde_json::json!({ "ok": true }))
    }
    fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
        v.get(key).unwrap_or(&Value::Null)
    }
    fn room(v: &Value) -> Option<Room> {
        field(v, "room")
            .as_str()
            .map(|room| Room::new(RELAY_NAMESPACE, room))
    }
    server.on("echo", |payload: Payload| Ack(payload));
    server.on(
        "join",
        |server: Server, socket: Socket, Data(v): Data<Value>| {
            if let (Some(room), Some(id)) = (room(&v), socket.id()) {
                server.join(&room, &id);
            }
            ok()
        },
    );
    server.on(
        "leave",
        |server: Server, socket: Socket, Data(v): Data<Value>| {
            if let (Some(room), Some(id)) = (room(&v), socket.id()) {
                server.leave(&room, &id);
            }
            ok()
        },
    );
    server.on("room", |server: Server, Data(v): Data<Value>| {
        if let Some(room) = room(&v) {
            let _ = server.to_room(room).emit("msg", field(&v, "data"));
        }
        ok()
    });
    server.on("all", |server: Server, Data(v): Data<Value>| {
        let _ = server.to_all().emit("msg", field(&v, "data"));
        ok()
    });
    server.on("to", |server: Server, Data(v): Data<Value>| {
        if let Some(id) = field(&v, "id").as_str() {
            let _ = server.to(id).emit("msg", field(&v, "data"));
        }
        ok()
    });
    server.on("ids", |server: Server, Data(v): Data<Value>| {
        let ids: Vec<String> = field(&v, "ids")
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let _ = server.to_ids(ids).emit("msg", field(&v, "data"));
        ok()
    });
}

/// Polls `condition` every few milliseconds until it holds; whether it did within
/// `timeout`. For state that changes asynchronously (a broker subscription, a cleanup after a
/// disconnect) and has no event to wait on.
pub async fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Receives from a channel a handler feeds, or `None` after `timeout`.
pub async fn recv_within<T>(rx: &mut mpsc::UnboundedReceiver<T>, timeout: Duration) -> Option<T> {
    tokio::time::timeout(timeout, rx.recv())
        .await
        .ok()
        .flatten()
}

/// Parses OpenMetrics text (what `GET /metrics` answers) into `name{labels}` → value,
/// e.g. `crosswire_connections` or `crosswire_closes_total{code="1000"}`; comment lines are
/// skipped. An error when the text does not end with `# EOF` or a sample has no number.
pub fn parse_metrics(text: &str) -> Result<std::collections::BTreeMap<String, f64>, String> {
    if !text.ends_with("# EOF\n") {
        return Err("not OpenMetrics text (no `# EOF` at the end)".to_string());
    }
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (key, value) = line
                .rsplit_once(' ')
                .ok_or_else(|| format!("sample line without a value: {line:?}"))?;
            let value: f64 = value
                .parse()
                .map_err(|e| format!("sample value of {line:?}: {e}"))?;
            Ok((key.to_string(), value))
        })
        .collect()
}

/// Sends a plain HTTP/1.1 GET and returns the status and body (`Connection: close`).
pub async fn http_get(addr: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut response))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "HTTP response timed out"))??;
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, text.clone()))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

// ----- redis -----

mod redis_cluster;
pub use redis_cluster::RedisCluster;

/// A `redis-server` process on a free port, killed on drop.
///
/// Started with `--save "" --appendonly no` (nothing written to disk). [`RedisServer::kill`]
/// and [`RedisServer::restart`] simulate a broker outage on the same port.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    /// Extra `redis-server` arguments (TLS), kept for restarts.
    args: Vec<String>,
    tls_port: Option<u16>,
    child: Option<Child>,
}

impl RedisServer {
    /// Whether `redis-server` is on `PATH`. Tests that need it fail (with a message) when not.
    pub fn available() -> bool {
        Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts a server on a free port and waits until it answers PING.
    pub fn start() -> io::Result<Self> {
        let port = free_port()?;
        let mut server = Self {
            port,
            args: Vec::new(),
            tls_port: None,
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    /// Starts a server that also listens for TLS on a second free port
    /// ([`RedisServer::tls_url`]), with the server certificate of `certs`, and requires
    /// client certificates signed by their authority (`tls-auth-clients yes`). The plain
    /// port stays open for the readiness check.
    pub fn start_tls(certs: &TestCerts) -> io::Result<Self> {
        let port = free_port()?;
        let tls_port = free_port()?;
        let file = |name: &str| certs.path(name).to_string_lossy().into_owned();
        let args = vec![
            "--tls-port".to_string(),
            tls_port.to_string(),
            "--tls-cert-file".to_string(),
            file(TestCerts::SERVER_CERT),
            "--tls-key-file".to_string(),
            file(TestCerts::SERVER_KEY),
            "--tls-ca-cert-file".to_string(),
            file(TestCerts::CA_CERT),
            "--tls-auth-clients".to_string(),
            "yes".to_string(),
        ];
        let mut server = Self {
            port,
            args,
            tls_port: Some(tls_port),
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    /// `rediss://127.0.0.1:<tls port>`, for a server made with [`RedisServer::start_tls`].
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port.map(|p| format!("rediss://127.0.0.1:{p}"))
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the process (an outage); [`RedisServer::restart`] brings it back on the same port.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the process if running and starts a fresh one on the same port.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.spawn()
    }

    fn spawn(&mut self) -> io::Result<()> {
        let (port, args) = (self.port, self.args.clone());
        let child = spawn_until_ready(
            || redis_command(port, &args),
            || ping(port).is_ok(),
            "redis-server did not answer PING within 10 s",
        )?;
        self.child = Some(child);
        Ok(())
    }

    /// Sends PING over a fresh connection; `Ok` when the answer is `+PONG`.
    pub fn ping(&self) -> io::Result<()> {
        ping(self.port)
    }
}

mod nats_cluster;
pub use nats_cluster::NatsCluster;

/// A `nats-server` process on a free loopback port, killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    port: u16,
    child: Option<Child>,
}

impl NatsServer {
    /// Whether `nats-server` is on `PATH` (Debian puts it in `/usr/sbin`).
    pub fn available() -> bool {
        Command::new(Self::binary())
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn binary() -> &'static str {
        if std::path::Path::new("/usr/sbin/nats-server").exists() {
            "/usr/sbin/nats-server"
        } else {
            "nats-server"
        }
    }

    /// Starts one on a free port and waits (at most 10 s) until it greets clients.
    pub fn start() -> io::Result<Self> {
        let mut server = Self {
            port: free_port()?,
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    /// Its URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn spawn(&mut self) -> io::Result<()> {
        let port = self.port;
        let command = || {
            let mut c = Command::new(Self::binary());
            c.args(["-a", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            c
        };
        let child = spawn_until_ready(
            command,
            || nats_greets(port),
            "nats-server did not greet within 10 s",
        )?;
        self.child = Some(child);
        Ok(())
    }
}

/// Starts `command` and waits (at most 10 s) until `ready`. Right after a kill the port may
/// still be held and a new process exit at once: it is started again until it stays up.
fn spawn_until_ready(
    command: impl Fn() -> Command,
    ready: impl Fn() -> bool,
    timeout_message: &str,
) -> io::Result<Child> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut child = command().spawn()?;
    loop {
        if ready() {
            return Ok(child);
        }
        let exited = matches!(child.try_wait(), Ok(Some(_)));
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                timeout_message.to_string(),
            ));
        }
        if exited {
            child = command().spawn()?;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a NATS server on `port` sends its `INFO` greeting.
fn nats_greets(port: u16) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 4];
    std::io::Read::read_exact(&mut stream, &mut buf).is_ok() && &buf == b"INFO"
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn redis_command(port: u16, args: &[String]) -> Command {
    let mut command = Command::new("redis-server");
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

fn ping(port: u16) -> io::Result<()> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.write_all(b"PING\r\n")?;
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf)?;
    if &buf == b"+PONG\r\n" {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "unexpected PING answer {:?}",
            String::from_utf8_lossy(&buf)
        )))
    }
}

/// A throw-away certificate authority with a server certificate (for `127.0.0.1` and
/// `localhost`) and a client certificate it signed, written as PEM files into a fresh
/// temporary directory that is removed on drop ([`TestCerts::generate`]) or into a given one
/// that is kept ([`TestCerts::generate_in`]): what a TLS `redis-server` or `crosswire serve`
/// and their clients need.
#[derive(Debug)]
pub struct TestCerts {
    dir: PathBuf,
    /// Whether the directory is removed on drop (it was made for these files).
    temporary: bool,
    /// The authority's certificate (PEM).
    pub ca_pem: String,
    /// The server certificate, for `127.0.0.1` and `localhost` (PEM).
    pub server_cert_pem: String,
    /// The server certificate's private key (PEM, PKCS#8).
    pub server_key_pem: String,
    /// A client certificate signed by the authority (PEM).
    pub client_cert_pem: String,
    /// The client certificate's private key (PEM, PKCS#8).
    pub client_key_pem: String,
}

impl TestCerts {
    /// File name of the authority's certificate.
    pub const CA_CERT: &'static str = "ca.pem";
    /// File name of the server certificate.
    pub const SERVER_CERT: &'static str = "server.pem";
    /// File name of the server key.
    pub const SERVER_KEY: &'static str = "server.key";
    /// File name of the client certificate.
    pub const CLIENT_CERT: &'static str = "client.pem";
    /// File name of the client key.
    pub const CLIENT_KEY: &'static str = "client.key";

    /// Generates the authority and both certificates (ECDSA P-256) and writes the files.
    pub fn generate() -> io::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "crosswire-certs-{}-{}",
            std::process::id(),
            CERT_DIRS.fetch_add(1, Ordering::Relaxed)
        ));
        let mut certs = Self::generate_in(dir)?;
        certs.temporary = true;
        Ok(certs)
    }

    /// Like [`TestCerts::generate`], writing the files into `dir` (created if missing), which
    /// is kept.
    pub fn generate_in(dir: PathBuf) -> io::Result<Self> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let err = |e: rcgen::Error| io::Error::other(e.to_string());
        let ca_key = KeyPair::generate().map_err(err)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca.distinguished_name
            .push(DnType::CommonName, "crosswire test authority");
        let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
        let issuer = Issuer::new(ca, &ca_key);
        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().map_err(err)?;
            let mut params = CertificateParams::new(names).map_err(err)?;
            params.extended_key_usages = vec![usage];
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            let cert = params.signed_by(&key, &issuer).map_err(err)?;
            Ok::<_, io::Error>((cert.pem(), key.serialize_pem()))
        };
        let (server_cert, server_key) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let (client_cert, client_key) = leaf(
            vec!["crosswire-client".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        std::fs::create_dir_all(&dir)?;
        let certs = Self {
            dir,
            temporary: false,
            ca_pem: ca_cert.pem(),
            server_cert_pem: server_cert,
            server_key_pem: server_key,
            client_cert_pem: client_cert,
            client_key_pem: client_key,
        };
        for (name, contents) in [
            (Self::CA_CERT, certs.ca_pem.as_str()),
            (Self::SERVER_CERT, certs.server_cert_pem.as_str()),
            (Self::SERVER_KEY, certs.server_key_pem.as_str()),
            (Self::CLIENT_CERT, certs.client_cert_pem.as_str()),
            (Self::CLIENT_KEY, certs.client_key_pem.as_str()),
        ] {
            std::fs::write(certs.path(name), contents)?;
        }
        Ok(certs)
    }

    /// The path of one of the files (see the constants).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for TestCerts {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

static CERT_DIRS: AtomicU64 = AtomicU64::new(0);

/// A port that was free a moment ago (bind to 0, read it, release it).
pub fn free_port() -> io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A `wss://` WebSocket over TLS, as [`connect_wss`] opens it.
pub type WssStream =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// Sends the relay's `echo` request over `ws` and returns the reply's payload (panics when
/// none comes within [`TIMEOUT`]).
pub async fn wss_echo(ws: &mut WssStream, payload: Value) -> Value {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let frame = serde_json::json!({"event": "echo", "payload": payload, "callbackId": "echo"});
    ws.send(Message::text(frame.to_string()))
        .await
        .expect("sending over wss");
    loop {
        match tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("reply in time")
        {
            Some(Ok(Message::Text(text))) => {
                let reply: Value = serde_json::from_str(&text).expect("a JSON reply");
                return reply["payload"].clone();
            }
            Some(Ok(_)) => continue,
            other => panic!("no reply over wss: {other:?}"),
        }
    }
}

/// Opens `wss://localhost<target>` on `addr`, trusting only the authority `ca_pem` (e.g.
/// [`TestCerts::ca_pem`]).
pub async fn connect_wss(addr: SocketAddr, ca_pem: &str, target: &str) -> io::Result<WssStream> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    let err = |e: &dyn std::fmt::Display| io::Error::other(e.to_string());
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(|e| err(&e))?).map_err(|e| err(&e))?;
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").map_err(|e| err(&e))?;
    let tls = tokio::time::timeout(TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    let url = format!("wss://localhost{target}");
    let (ws, _) = tokio_tungstenite::client_async(url, tls)
        .await
        .map_err(|e| err(&e))?;
    Ok(ws)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_server_starts_restarts_and_dies_with_its_guard() {
        assert!(
            RedisServer::available(),
            "redis-server is not on PATH: install it (scripts/test.sh does)"
        );
        let mut redis = RedisServer::start().expect("start redis-server");
        redis.ping().expect("PING after start");
        let port = redis.port();
        redis.kill();
        assert!(redis.ping().is_err(), "PING must fail after kill");
        redis.restart().expect("restart on the same port");
        assert_eq!(redis.port(), port);
        redis.ping().expect("PING after restart");
        drop(redis);
        assert!(ping(port).is_err(), "the process must die with its guard");
    }

    #[test]
    fn client_frames_decode_as_server_frames() {
        let mut frame = client_frame(OpCode::Text, b"hello");
        let mut decoder = Decoder::new(Role::Server, 1024);
        match decoder.decode(&mut frame).unwrap() {
            Decoded::Message(Message::Text(t), used) => {
                assert_eq!(t, "hello");
                assert_eq!(used, frame_len(5));
            }
            other => panic!("unexpected {other:?}"),
        }
        let mut unmasked = client_frame_with(true, OpCode::Text, b"x", false);
        assert!(decoder.decode(&mut unmasked).is_err());
    }

    fn frame_len(payload: usize) -> usize {
        2 + 4 + payload
    }

    #[test]
    fn urlencode_escapes_reserved_characters() {
        assert_eq!(urlencode("a b&c"), "a%20b%26c");
        assert_eq!(urlencode("id-7_x.y~"), "id-7_x.y~");
    }
}

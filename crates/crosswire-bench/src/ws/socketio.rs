//! The Socket.IO protocol mode (`--protocol socketio`): Socket.IO v5 over Engine.IO v4, on
//! the WebSocket transport only, so that the scenarios can drive a Socket.IO server (Socket.IO
//! itself, socketioxide, …) that defines the relay's events, unchanged.
//!
//! A connection is a plain [`Ws`] (tungstenite's, or the own client's) opened on
//! `/socket.io/?EIO=4&transport=websocket` (the URL's path when it has one other than `/`),
//! then:
//!
//! 1. the server sends the Engine.IO open packet `0{"sid",…,"pingInterval","pingTimeout"}`;
//! 2. the client connects to namespace `/` with `40`, the server answers `40{"sid"}` (or
//!    `44{"message"}`, an error).
//!
//! After that the connection translates between the crosswire frames the scenarios build and
//! read ([`crate::stamp`], [`super::heartbeat`], [`super::join`]) and Socket.IO packets:
//!
//! | crosswire (scenarios) | Socket.IO (wire) |
//! |---|---|
//! | `{"event":"E","payload":P}` sent | `42["E",P]` |
//! | `{"event":"E","payload":P,"callbackId":"C"}` sent | `42<n>["E",P]`, `n` a fresh ack id |
//! | `{"callbackId":"C","payload":R}` received | `43<n>[R]` (the ack of `n`) |
//! | heartbeat: empty text sent, empty text received | `42<n>["echo",""]`, its ack `43<n>[""]` |
//! | an event received | `42["msg",data]`, handed on as it is: the stamp inside is intact |
//!
//! Engine.IO pings (`2`) are answered with pongs (`3`) and not handed on; noops (`6`) and
//! pongs are skipped; `1` (close) and `41` (disconnect) end the connection; binary frames
//! (attachments, which the relay's events never carry) are skipped. Events are handed on
//! untranslated so that a delivery costs the load generator no more than with crosswire's
//! protocol: receivers only look for the stamp.

use super::{Ws, WsSink, WsStream};
use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// Which protocol the clients speak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    /// crosswire's own (JSON frames, `?id=`; see docs/PROTOCOL.md).
    #[default]
    Crosswire,
    /// Socket.IO v5 over Engine.IO v4, WebSocket transport only (this module).
    SocketIo,
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "crosswire" => Ok(Self::Crosswire),
            "socketio" | "socket.io" => Ok(Self::SocketIo),
            other => Err(format!(
                "unknown protocol {other:?} (expected crosswire or socketio)"
            )),
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Crosswire => "crosswire",
            Self::SocketIo => "socketio",
        })
    }
}

/// The event the heartbeat is mapped onto (with an ack, payload `""`).
pub const HEARTBEAT_EVENT: &str = "echo";

/// Largest open packet accepted.
const MAX_OPEN_PACKET: usize = 4096;

/// The Engine.IO endpoint for `url`: path `/socket.io/` unless the URL names another one,
/// query `EIO=4&transport=websocket` added to what it has (the client's `id` included).
pub fn endpoint(url: &url::Url) -> url::Url {
    let mut url = url.clone();
    if url.path().is_empty() || url.path() == "/" {
        url.set_path("/socket.io/");
    }
    url.query_pairs_mut()
        .append_pair("EIO", "4")
        .append_pair("transport", "websocket");
    url
}

/// What the server's Engine.IO open packet said.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenPacket {
    /// The Engine.IO session id.
    pub sid: String,
    /// How often the server pings, in milliseconds.
    #[serde(default)]
    pub ping_interval: u64,
    /// How long the server waits for a pong, in milliseconds.
    #[serde(default)]
    pub ping_timeout: u64,
    /// Largest message the server accepts, in bytes (0: not said).
    #[serde(default)]
    pub max_payload: u64,
}

/// Parses an Engine.IO open packet (`0{…}`).
pub fn parse_open(text: &str) -> Result<OpenPacket> {
    let Some(json) = text.strip_prefix('0') else {
        bail!(
            "expected the Engine.IO open packet (0{{…}}), got {:?}",
            cut(text)
        );
    };
    if json.len() > MAX_OPEN_PACKET {
        bail!("Engine.IO open packet longer than {MAX_OPEN_PACKET} bytes");
    }
    serde_json::from_str(json).with_context(|| format!("invalid open packet {:?}", cut(text)))
}

/// The start of `text`, for error messages.
fn cut(text: &str) -> &str {
    let mut end = text.len().min(120);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// What an awaited ack stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pending {
    /// A request with this callback id (its JSON text, quotes included).
    Reply(String),
    /// A heartbeat: the ack becomes an empty text.
    Heartbeat,
}

/// The acks a connection awaits, shared by its halves once split.
#[derive(Debug, Default)]
pub struct Acks {
    next: u64,
    pending: HashMap<u64, Pending>,
}

impl Acks {
    fn register(&mut self, pending: Pending) -> u64 {
        self.next += 1;
        self.pending.insert(self.next, pending);
        self.next
    }

    /// Acks still awaited.
    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }
}

type SharedAcks = Arc<Mutex<Acks>>;

fn lock(acks: &SharedAcks) -> MutexGuard<'_, Acks> {
    // A panic while holding the lock leaves the table as consistent as any other moment.
    acks.lock().unwrap_or_else(|e| e.into_inner())
}

/// A crosswire frame as the scenarios build it.
#[derive(Deserialize)]
struct Outgoing<'a> {
    #[serde(borrow)]
    event: &'a RawValue,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "callbackId")]
    callback_id: Option<&'a RawValue>,
}

/// The Socket.IO packet for crosswire frame `text` (registering the ack it asks for).
pub fn encode(text: &str, acks: &mut Acks) -> Result<String> {
    if text.is_empty() {
        let id = acks.register(Pending::Heartbeat);
        return Ok(format!(r#"42{id}["{HEARTBEAT_EVENT}",""]"#));
    }
    let frame: Outgoing<'_> = serde_json::from_str(text).map_err(|e| {
        anyhow!(
            "cannot send {:?} over Socket.IO (not a crosswire event frame: {e})",
            cut(text)
        )
    })?;
    let event = frame.event.get();
    if !event.starts_with('"') {
        bail!("event name of {:?} is not a string", cut(text));
    }
    let payload = frame.payload.map_or("null", RawValue::get);
    match frame.callback_id {
        None => Ok(format!("42[{event},{payload}]")),
        Some(cb) => {
            let cb = cb.get();
            if !cb.starts_with('"') {
                bail!("callbackId of {:?} is not a string", cut(text));
            }
            let id = acks.register(Pending::Reply(cb.to_string()));
            Ok(format!("42{id}[{event},{payload}]"))
        }
    }
}

/// What a received Socket.IO text frame means to the connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// Hand this text on to the scenario (an event as it came, or a translated ack).
    Text(String),
    /// Hand the frame on as it came (events: no copy).
    Pass,
    /// An Engine.IO ping: send this pong.
    Ping(String),
    /// The server ended the session (Engine.IO close, Socket.IO disconnect).
    Closed,
    /// Nothing for the scenario (pong, noop, an ack nobody awaits, …).
    Skip,
}

/// The first argument of an ack's argument list (`[R, …]`), `null` when there is none.
fn first_argument(list: &str) -> Result<&str> {
    let args: Vec<&RawValue> = serde_json::from_str(list)
        .map_err(|e| anyhow!("invalid ack arguments {:?}: {e}", cut(list)))?;
    Ok(args.first().map_or("null", |a| a.get()))
}

/// Interprets a received text frame; errors for a connect error (`44`) and malformed acks.
pub fn decode(text: &str, acks: &mut Acks) -> Result<Incoming> {
    let bytes = text.as_bytes();
    match bytes.first() {
        Some(b'2') => return Ok(Incoming::Ping(format!("3{}", &text[1..]))),
        Some(b'1') => return Ok(Incoming::Closed),
        Some(b'4') => {}
        _ => return Ok(Incoming::Skip),
    }
    match bytes.get(1) {
        Some(b'2') => Ok(Incoming::Pass),
        Some(b'3') => {
            let rest = &text[2..];
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                // `43/nsp,<id>[…]`: not the namespace the bench uses.
                return Ok(Incoming::Skip);
            }
            let id: u64 = rest[..digits]
                .parse()
                .map_err(|_| anyhow!("ack id out of range in {:?}", cut(text)))?;
            let Some(pending) = acks.pending.remove(&id) else {
                return Ok(Incoming::Skip);
            };
            let reply = first_argument(&rest[digits..])?;
            Ok(Incoming::Text(match pending {
                Pending::Heartbeat => String::new(),
                Pending::Reply(cb) => format!(r#"{{"callbackId":{cb},"payload":{reply}}}"#),
            }))
        }
        Some(b'1') => Ok(Incoming::Closed),
        Some(b'4') => bail!("the server refused the connection: {}", cut(&text[2..])),
        _ => Ok(Incoming::Skip),
    }
}

/// A Socket.IO connection over a plain [`Ws`].
#[derive(Debug)]
pub struct SocketIoWs {
    /// The WebSocket (never itself a Socket.IO one).
    pub(super) inner: Ws,
    acks: SharedAcks,
    /// A pong to send before the next read.
    pong_due: Option<String>,
    open: OpenPacket,
    /// The Socket.IO session id of namespace `/`.
    sid: String,
}

/// Reads the next text frame during the handshake, answering pings.
async fn handshake_text(ws: &mut Ws) -> Result<String> {
    loop {
        match ws.next_frame().await {
            Some(Ok(Message::Text(t))) if t.starts_with('2') => {
                ws.send_frame(format!("3{}", &t[1..])).await?;
            }
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Close(frame))) => {
                bail!("server closed the connection during the handshake: {frame:?}")
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.context("during the Socket.IO handshake")),
            None => bail!("server closed the connection during the Socket.IO handshake"),
        }
    }
}

/// Runs the Engine.IO and Socket.IO handshakes on `ws` (just upgraded): the open packet,
/// then the connect to namespace `/`.
pub async fn handshake(mut ws: Ws) -> Result<SocketIoWs> {
    let open = parse_open(&handshake_text(&mut ws).await?)?;
    ws.send_frame("40".to_string())
        .await
        .context("sending the Socket.IO connect")?;
    let sid = loop {
        let text = handshake_text(&mut ws).await?;
        if let Some(json) = text.strip_prefix("40") {
            #[derive(Deserialize)]
            struct Connected {
                sid: String,
            }
            let c: Connected = serde_json::from_str(json)
                .with_context(|| format!("invalid connect answer {:?}", cut(&text)))?;
            break c.sid;
        }
        if let Some(error) = text.strip_prefix("44") {
            bail!("the server refused the connect: {}", cut(error));
        }
        // Anything else (a noop, an event of another namespace) is not the answer.
    };
    Ok(SocketIoWs {
        inner: ws,
        acks: SharedAcks::default(),
        pong_due: None,
        open,
        sid,
    })
}

impl SocketIoWs {
    /// What the server's open packet said.
    pub fn open_packet(&self) -> &OpenPacket {
        &self.open
    }

    /// The Socket.IO session id of namespace `/`.
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// Acks still awaited.
    pub fn outstanding_acks(&self) -> usize {
        lock(&self.acks).outstanding()
    }

    /// The next message for the scenario (see the module documentation); pings are
    /// answered; `None` once the connection ended.
    pub async fn next(&mut self) -> Option<Result<Message>> {
        loop {
            if let Some(pong) = self.pong_due.take() {
                if let Err(e) = self.inner.feed_frame(pong).await {
                    return Some(Err(e));
                }
                if let Err(e) = self.inner.flush_frames().await {
                    return Some(Err(e));
                }
            }
            match translate(self.inner.next_frame().await?, &self.acks) {
                Step::Out(out) => return out,
                Step::Ping(pong) => self.pong_due = Some(pong),
                Step::Skip => {}
            }
        }
    }

    /// Queues crosswire frame `text` as its Socket.IO packet, without flushing.
    pub async fn feed_text(&mut self, text: String) -> Result<()> {
        let packet = encode(&text, &mut lock(&self.acks))?;
        self.inner.feed_frame(packet).await
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<()> {
        self.inner.flush_frames().await
    }

    /// Splits into a sending and a receiving half sharing the awaited acks; pings the
    /// receiving half sees are answered by the sending half (at its next write).
    pub fn split(self) -> (SocketIoSink, SocketIoStream) {
        let (sink, stream) = self.inner.split();
        let (tx, rx) = mpsc::unbounded_channel();
        if let Some(pong) = self.pong_due {
            let _ = tx.send(pong);
        }
        (
            SocketIoSink {
                inner: sink,
                acks: self.acks.clone(),
                pongs: rx,
            },
            SocketIoStream {
                inner: stream,
                acks: self.acks,
                pongs: tx,
            },
        )
    }
}

/// The sending half of a split [`SocketIoWs`].
#[derive(Debug)]
pub struct SocketIoSink {
    pub(super) inner: WsSink,
    acks: SharedAcks,
    pongs: mpsc::UnboundedReceiver<String>,
}

impl SocketIoSink {
    async fn feed_pongs(&mut self) -> Result<()> {
        while let Ok(pong) = self.pongs.try_recv() {
            self.inner.feed_frame(pong).await?;
        }
        Ok(())
    }

    /// Queues crosswire frame `text` as its Socket.IO packet (after any pong due).
    pub async fn feed_text(&mut self, text: String) -> Result<()> {
        self.feed_pongs().await?;
        let packet = encode(&text, &mut lock(&self.acks))?;
        self.inner.feed_frame(packet).await
    }

    /// Writes everything queued (and any pong due).
    pub async fn flush(&mut self) -> Result<()> {
        self.feed_pongs().await?;
        self.inner.flush_frames().await
    }

    /// Sends any pong still due, then a close frame.
    pub async fn close(&mut self) {
        if self.flush().await.is_ok() {
            self.inner.close_frame().await;
        }
    }
}

/// The receiving half of a split [`SocketIoWs`].
#[derive(Debug)]
pub struct SocketIoStream {
    pub(super) inner: WsStream,
    acks: SharedAcks,
    pongs: mpsc::UnboundedSender<String>,
}

impl SocketIoStream {
    /// The next message for the scenario; pings go to the sending half to be answered.
    pub async fn next(&mut self) -> Option<Result<Message>> {
        loop {
            match translate(self.inner.next_frame().await?, &self.acks) {
                Step::Out(out) => return out,
                Step::Ping(pong) => {
                    let _ = self.pongs.send(pong);
                }
                Step::Skip => {}
            }
        }
    }
}

/// What a WebSocket message read from a Socket.IO connection means for the scenario.
enum Step {
    /// Hand this on (`None`: the session ended).
    Out(Option<Result<Message>>),
    /// An Engine.IO ping: send this pong.
    Ping(String),
    /// Nothing for the scenario.
    Skip,
}

/// Decodes one message read from the WebSocket (of both the whole connection and its
/// reading half).
fn translate(read: Result<Message>, acks: &SharedAcks) -> Step {
    let message = match read {
        Ok(Message::Text(t)) => t,
        Ok(Message::Close(f)) => return Step::Out(Some(Ok(Message::Close(f)))),
        Ok(_) => return Step::Skip,
        Err(e) => return Step::Out(Some(Err(e))),
    };
    match decode(message.as_str(), &mut lock(acks)) {
        Ok(Incoming::Pass) => Step::Out(Some(Ok(Message::Text(message)))),
        Ok(Incoming::Text(t)) => Step::Out(Some(Ok(Message::text(t)))),
        Ok(Incoming::Ping(pong)) => Step::Ping(pong),
        Ok(Incoming::Closed) => Step::Out(None),
        Ok(Incoming::Skip) => Step::Skip,
        Err(e) => Step::Out(Some(Err(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stamp::{echo_frame, join_frame, parse_stamp, room_frame, stamped_data};

    #[test]
    fn protocols_parse() {
        assert_eq!("crosswire".parse(), Ok(Protocol::Crosswire));
        assert_eq!("socketio".parse(), Ok(Protocol::SocketIo));
        assert!("sockjs".parse::<Protocol>().is_err());
        assert_eq!(Protocol::default(), Protocol::Crosswire);
        assert_eq!(Protocol::SocketIo.to_string(), "socketio");
    }

    #[test]
    fn endpoints_keep_the_query() {
        let url = url::Url::parse("ws://127.0.0.1:9000/?id=a").unwrap();
        assert_eq!(
            endpoint(&url).as_str(),
            "ws://127.0.0.1:9000/socket.io/?id=a&EIO=4&transport=websocket"
        );
        let url = url::Url::parse("ws://h:1/custom/?id=b").unwrap();
        assert_eq!(
            endpoint(&url).as_str(),
            "ws://h:1/custom/?id=b&EIO=4&transport=websocket"
        );
    }

    #[test]
    fn open_packets_parse() {
        let open = parse_open(
            r#"0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#,
        )
        .unwrap();
        assert_eq!(open.sid, "abc");
        assert_eq!((open.ping_interval, open.ping_timeout), (25_000, 20_000));
        assert_eq!(open.max_payload, 1_000_000);
        assert!(parse_open("40").is_err());
        assert!(parse_open("0{}").is_err(), "no sid");
        assert!(parse_open("0not json").is_err());
    }

    #[test]
    fn frames_are_encoded_with_ack_ids() {
        let mut acks = Acks::default();
        let data = stamped_data(5, 77, 40);
        assert_eq!(
            encode(&room_frame("r1", &data), &mut acks).unwrap(),
            format!(r#"42["room",{{"room":"r1","data":"{data}"}}]"#)
        );
        assert_eq!(acks.outstanding(), 0, "no ack asked");
        assert_eq!(
            encode(&join_frame("r1", "join"), &mut acks).unwrap(),
            r#"421["join",{"room":"r1"}]"#
        );
        assert_eq!(
            encode(&echo_frame(&data, 9), &mut acks).unwrap(),
            format!(r#"422["echo","{data}"]"#)
        );
        assert_eq!(encode("", &mut acks).unwrap(), r#"423["echo",""]"#);
        assert_eq!(
            encode(r#"{"event":"whoami"}"#, &mut acks).unwrap(),
            r#"42["whoami",null]"#
        );
        assert_eq!(acks.outstanding(), 3);
        assert!(encode("ping", &mut acks).is_err());
        assert!(encode(r#"{"event":1}"#, &mut acks).is_err());
        assert!(encode(r#"{"event":"e","callbackId":7}"#, &mut acks).is_err());
    }

    #[test]
    fn acks_become_crosswire_replies() {
        let mut acks = Acks::default();
        encode(&join_frame("r", "join"), &mut acks).unwrap();
        encode("", &mut acks).unwrap();
        let data = stamped_data(3, 900, 32);
        encode(&echo_frame(&data, 3), &mut acks).unwrap();
        assert_eq!(
            decode(r#"431[{"ok":true}]"#, &mut acks).unwrap(),
            Incoming::Text(r#"{"callbackId":"join","payload":{"ok":true}}"#.into())
        );
        assert_eq!(
            decode(r#"432[""]"#, &mut acks).unwrap(),
            Incoming::Text(String::new())
        );
        let Incoming::Text(reply) = decode(&format!(r#"433["{data}"]"#), &mut acks).unwrap() else {
            panic!("echo ack not translated");
        };
        assert_eq!(
            parse_stamp(&reply).map(|s| (s.seq, s.sent_us)),
            Some((3, 900))
        );
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(v["callbackId"], "3");
        assert_eq!(acks.outstanding(), 0);
        // Answered twice, or never asked: nothing for the scenario.
        assert_eq!(decode("431[1]", &mut acks).unwrap(), Incoming::Skip);
        encode(&join_frame("r", "join"), &mut acks).unwrap();
        assert_eq!(
            decode("434[]", &mut acks).unwrap(),
            Incoming::Text(r#"{"callbackId":"join","payload":null}"#.into())
        );
        encode(&join_frame("r", "join"), &mut acks).unwrap();
        assert!(decode("435[oops", &mut acks).is_err());
        assert!(decode("4399999999999999999999999[1]", &mut acks).is_err());
    }

    #[test]
    fn engine_io_packets_are_handled() {
        let mut acks = Acks::default();
        assert_eq!(decode("2", &mut acks).unwrap(), Incoming::Ping("3".into()));
        assert_eq!(
            decode("2probe", &mut acks).unwrap(),
            Incoming::Ping("3probe".into())
        );
        assert_eq!(decode("3", &mut acks).unwrap(), Incoming::Skip);
        assert_eq!(decode("6", &mut acks).unwrap(), Incoming::Skip);
        assert_eq!(decode("1", &mut acks).unwrap(), Incoming::Closed);
        assert_eq!(decode("41", &mut acks).unwrap(), Incoming::Closed);
        assert_eq!(
            decode(r#"42["msg","cwb1:1:2;x"]"#, &mut acks).unwrap(),
            Incoming::Pass
        );
        assert!(decode(r#"44{"message":"no"}"#, &mut acks).is_err());
        assert_eq!(decode("", &mut acks).unwrap(), Incoming::Skip);
        assert_eq!(decode("é", &mut acks).unwrap(), Incoming::Skip);
    }
}

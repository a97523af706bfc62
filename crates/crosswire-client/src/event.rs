//! What a client reports: payloads, the built-in events and the event stream.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::broadcast;

use crate::position::{Position, RejoinErrorInfo, RejoinInfo};

/// Names of the built-in events, for [`Client::on`](crate::Client::on) and friends.
///
/// Handlers receive each event's data as a [`Payload`]; its JSON shape is given below.
pub mod names {
    /// The connection opened. Payload: `null`.
    pub const OPEN: &str = "open";
    /// The connection closed. Payload: `{"code": u16, "reason": string}` ([`CloseInfo`](crate::CloseInfo)).
    pub const CLOSE: &str = "close";
    /// Connecting failed or the connection broke; a reconnect follows. Payload: the error
    /// message (string).
    pub const ERROR: &str = "error";
    /// Any text frame other than the heartbeat echo, before it is parsed. Payload: the raw
    /// text (string).
    pub const MESSAGE: &str = "message";
    /// A heartbeat was sent. Payload: `null`.
    pub const PING: &str = "ping";
    /// The heartbeat came back. Payload: the round trip in milliseconds (number).
    pub const PONG: &str = "pong";
    /// A reconnect attempt is scheduled. Payload: `{"repeat": u32, "timeout": ms}`
    /// ([`ReconnectInfo`](crate::ReconnectInfo)).
    pub const RECONNECT: &str = "reconnect";
    /// The repeat limit was reached; no more attempts. Payload: the limit (number).
    pub const REPEAT_LIMIT: &str = "repeat-limit";
    /// The heartbeat was not echoed in time; the connection is closed with 4002 and
    /// re-established. Payload: `null`.
    pub const PONG_TIMEOUT: &str = "pong-timeout";
    /// After a reconnect, a room joined with [`Client::join`](crate::Client::join) was
    /// joined again. Payload: `{"room", "recovered", "stream", "offset", "epoch"}`
    /// ([`RejoinInfo`](crate::RejoinInfo)); with `recovered: false`, reload the room's state.
    pub const REJOIN: &str = "rejoin";
    /// After a reconnect, joining a room again failed. Payload: `{"room", "error"}`
    /// ([`RejoinErrorInfo`](crate::RejoinErrorInfo)).
    pub const REJOIN_ERROR: &str = "rejoin-error";
}

/// Close code a client sends when closed on purpose ([`Client::manual_close`](crate::Client::manual_close)).
pub const CLOSE_MANUAL: u16 = 4001;
/// Close code a client sends when the heartbeat was not answered in time.
pub const CLOSE_HEARTBEAT_TIMEOUT: u16 = 4002;
/// Close code reported when the connection broke without a close frame (RFC 6455).
pub const CLOSE_ABNORMAL: u16 = 1006;

/// The JSON data of an event or reply, kept as raw text until someone parses it.
///
/// Cheap to clone (a reference count). The payload of an event a server with history
/// positioned also tells where it sits in its stream ([`stream`](Self::stream),
/// [`position`](Self::position)); equality compares the JSON text only.
///
/// ```
/// use crosswire_client::Payload;
///
/// #[derive(serde::Deserialize)]
/// struct Say { msg: String }
///
/// let payload = Payload::from_json(r#"{"msg":"hi"}"#).unwrap();
/// assert_eq!(payload.parse::<Say>().unwrap().msg, "hi");
/// assert_eq!(payload.get(), r#"{"msg":"hi"}"#);
/// ```
#[derive(Clone)]
pub struct Payload {
    raw: Arc<RawValue>,
    /// Where the event sits in its stream, for a positioned event.
    mark: Option<Arc<Mark>>,
}

/// A positioned event's stream and position.
#[derive(Debug)]
struct Mark {
    stream: Box<str>,
    position: Position,
}

impl Payload {
    fn new(raw: Arc<RawValue>) -> Self {
        Self { raw, mark: None }
    }

    /// Wraps JSON text, checking that it is valid JSON.
    pub fn from_json(json: impl Into<String>) -> Result<Self, serde_json::Error> {
        Ok(Self::new(Arc::from(RawValue::from_string(json.into())?)))
    }

    /// Serialises `value` into a payload.
    pub fn from_value<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Self::new(Arc::from(serde_json::value::to_raw_value(
            value,
        )?)))
    }

    /// The JSON `null` payload.
    pub fn null() -> Self {
        Self::new(Arc::from(RawValue::NULL.to_owned()))
    }

    pub(crate) fn from_raw(raw: &RawValue) -> Self {
        Self::new(Arc::from(raw.to_owned()))
    }

    /// Attaches the position of the event this is the payload of.
    pub(crate) fn with_position(mut self, stream: &str, offset: u64, epoch: &str) -> Self {
        self.mark = Some(Arc::new(Mark {
            stream: stream.into(),
            position: Position::new(offset, epoch),
        }));
        self
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.raw.get()
    }

    /// The payload as raw JSON.
    pub fn raw(&self) -> &RawValue {
        &self.raw
    }

    /// Deserialises the payload into `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.raw.get())
    }

    /// The stream of the event this is the payload of, when the server positioned it (a
    /// room of a namespace with history, see [`Client::join`](crate::Client::join)).
    pub fn stream(&self) -> Option<&str> {
        self.mark.as_deref().map(|mark| &*mark.stream)
    }

    /// The event's position in its [`stream`](Self::stream), when the server positioned it.
    ///
    /// ```no_run
    /// # fn demo(client: crosswire_client::Client) {
    /// client.on("msg", |payload| {
    ///     if let (Some(stream), Some(at)) = (payload.stream(), payload.position()) {
    ///         tracing::info!(stream, offset = at.offset, epoch = %at.epoch, "message");
    ///     }
    /// });
    /// # }
    /// ```
    pub fn position(&self) -> Option<&Position> {
        self.mark.as_deref().map(|mark| &mark.position)
    }

    /// The payload as a [`serde_json::Value`] (`Null` if it does not parse, which cannot
    /// happen for payloads the client built or received).
    pub fn value(&self) -> serde_json::Value {
        self.parse().unwrap_or(serde_json::Value::Null)
    }

    /// Whether the payload is JSON `null`.
    pub fn is_null(&self) -> bool {
        self.get().trim() == "null"
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.mark {
            None => write!(f, "Payload({})", self.get()),
            Some(mark) => write!(
                f,
                "Payload({} @ {} {}/{})",
                self.get(),
                mark.stream,
                mark.position.offset,
                mark.position.epoch
            ),
        }
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(serializer)
    }
}

/// Data of the `close` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseInfo {
    /// Close code: 4001 manual close, 4002 heartbeat timeout, 1006 connection lost without a
    /// close frame, 4010 and up the application's, below 4000 RFC 6455.
    pub code: u16,
    /// Close reason, possibly empty.
    pub reason: String,
}

/// Data of the `reconnect` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconnectInfo {
    /// Attempt number, from 1; restarts after every successful open.
    pub repeat: u32,
    /// Delay before this attempt, in milliseconds.
    pub timeout: u64,
}

/// Everything a client reports, as one Rust enum; see [`Client::events`](crate::Client::events).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClientEvent {
    /// `open`: the connection is open.
    Open,
    /// `close`: the connection closed.
    Close(CloseInfo),
    /// `error`: connecting failed or the connection broke; a reconnect follows.
    Error(String),
    /// `message`: a text frame other than the heartbeat echo, unparsed.
    Message(Arc<str>),
    /// `ping`: a heartbeat was sent.
    Ping,
    /// `pong`: the heartbeat came back after `latency`.
    Pong {
        /// Round trip of the heartbeat.
        latency: Duration,
    },
    /// `reconnect`: an attempt is scheduled.
    Reconnect(ReconnectInfo),
    /// `repeat-limit`: the limit was reached; the client stops trying.
    RepeatLimit(u32),
    /// `pong-timeout`: the heartbeat was not answered in time.
    PongTimeout,
    /// `rejoin`: after a reconnect, a joined room was joined again.
    Rejoin(RejoinInfo),
    /// `rejoin-error`: after a reconnect, joining a room again failed.
    RejoinError(RejoinErrorInfo),
    /// An application event from the server.
    Event {
        /// Event name.
        name: Arc<str>,
        /// Event data.
        payload: Payload,
    },
}

impl ClientEvent {
    /// The event's name, as handlers are registered under it.
    pub fn name(&self) -> &str {
        match self {
            ClientEvent::Open => names::OPEN,
            ClientEvent::Close(_) => names::CLOSE,
            ClientEvent::Error(_) => names::ERROR,
            ClientEvent::Message(_) => names::MESSAGE,
            ClientEvent::Ping => names::PING,
            ClientEvent::Pong { .. } => names::PONG,
            ClientEvent::Reconnect(_) => names::RECONNECT,
            ClientEvent::RepeatLimit(_) => names::REPEAT_LIMIT,
            ClientEvent::PongTimeout => names::PONG_TIMEOUT,
            ClientEvent::Rejoin(_) => names::REJOIN,
            ClientEvent::RejoinError(_) => names::REJOIN_ERROR,
            ClientEvent::Event { name, .. } => name,
        }
    }

    /// The data handlers receive for this event (see [`names`]).
    pub fn payload(&self) -> Payload {
        let built = match self {
            ClientEvent::Open | ClientEvent::Ping | ClientEvent::PongTimeout => {
                return Payload::null()
            }
            ClientEvent::Close(info) => Payload::from_value(info),
            ClientEvent::Error(message) => Payload::from_value(message),
            ClientEvent::Message(text) => Payload::from_value(&**text),
            ClientEvent::Pong { latency } => {
                Payload::from_value(&u64::try_from(latency.as_millis()).unwrap_or(u64::MAX))
            }
            ClientEvent::Reconnect(info) => Payload::from_value(info),
            ClientEvent::RepeatLimit(limit) => Payload::from_value(limit),
            ClientEvent::Rejoin(info) => Payload::from_value(info),
            ClientEvent::RejoinError(info) => Payload::from_value(info),
            ClientEvent::Event { payload, .. } => return payload.clone(),
        };
        // Serialising these plain values into memory cannot fail.
        built.unwrap_or_else(|_| Payload::null())
    }
}

/// Receives every [`ClientEvent`] from the moment it was created; see
/// [`Client::events`](crate::Client::events).
///
/// Backed by a bounded broadcast channel (1024 events): a receiver that falls further behind
/// skips the oldest events (logged at `warn`) rather than slowing the client down.
#[derive(Debug)]
pub struct EventReceiver {
    pub(crate) rx: broadcast::Receiver<ClientEvent>,
}

impl EventReceiver {
    /// The next event; `None` once the client is gone (manually closed and every handle
    /// dropped).
    pub async fn recv(&mut self) -> Option<ClientEvent> {
        loop {
            match self.rx.recv().await {
                Ok(event) => return Some(event),
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    tracing::warn!(skipped, "event receiver lagged; events skipped");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The receiver as a [`Stream`].
    pub fn into_stream(self) -> impl Stream<Item = ClientEvent> + Send + Unpin + 'static {
        Box::pin(futures_util::stream::unfold(
            self,
            |mut receiver| async move { receiver.recv().await.map(|event| (event, receiver)) },
        ))
    }
}

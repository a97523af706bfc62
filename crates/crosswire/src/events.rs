//! Event handlers: `on`, `once`, `off` by handle or by tag.
//!
//! Each event keeps its handlers in an `Arc<[_]>` replaced on every change (copy on write):
//! dispatching clones one `Arc` under a short read lock and calls the handlers with no lock
//! held, so a handler may register or remove handlers itself.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::error::SendError;
use crate::server::Server;
use crate::socket::Socket;
use crosswire_protocol::frame;

/// Identifies one registered handler, for [`Server::off`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandlerId(pub(crate) u64);

/// A client event's payload: raw JSON text, parsed only when asked.
#[derive(Debug, Clone, Copy)]
pub struct Payload<'a>(pub(crate) &'a RawValue);

impl<'a> Payload<'a> {
    /// The raw JSON.
    pub fn raw(&self) -> &'a RawValue {
        self.0
    }

    /// The JSON text.
    pub fn as_str(&self) -> &'a str {
        self.0.get()
    }

    /// Deserialises into `T`.
    pub fn parse<T: serde::Deserialize<'a>>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }

    /// Deserialises into an owned `T`.
    pub fn parse_owned<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }

    /// An owned copy, for moving into a task.
    pub fn to_owned(&self) -> Box<RawValue> {
        self.0.to_owned()
    }
}

/// Answers a client event that carried a `callbackId`. Consumed by sending.
#[derive(Debug)]
pub struct Reply {
    socket: Socket,
    callback_id: Box<str>,
}

impl Reply {
    pub(crate) fn new(socket: Socket, callback_id: &str) -> Self {
        Self {
            socket,
            callback_id: callback_id.into(),
        }
    }

    /// The client's callback id.
    pub fn callback_id(&self) -> &str {
        &self.callback_id
    }

    /// Sends the reply `{"callbackId": …, "payload": <payload>}`.
    pub fn send<T: Serialize + ?Sized>(self, payload: &T) -> Result<(), SendError> {
        let frame =
            frame::encode_reply(&self.callback_id, payload).map_err(|_| SendError::Encode)?;
        self.socket.send_frame(frame)
    }

    /// Sends a reply whose payload is already JSON text.
    pub fn send_raw(self, payload: &RawValue) -> Result<(), SendError> {
        self.send(payload)
    }
}

/// What an event handler receives: the socket, the payload, and a [`Reply`] when the client
/// asked for one.
pub struct Event<'a> {
    /// The server (to send to rooms, ids, …).
    pub server: &'a Server,
    /// The socket the event came from.
    pub socket: &'a Socket,
    /// The payload.
    pub payload: Payload<'a>,
    /// Present when the client sent a `callbackId`.
    pub reply: Option<Reply>,
}

/// An owned [`Event`], for asynchronous handlers.
pub struct OwnedEvent {
    /// The server.
    pub server: Server,
    /// The socket the event came from.
    pub socket: Socket,
    /// The payload.
    pub payload: Box<RawValue>,
    /// Present when the client sent a `callbackId`.
    pub reply: Option<Reply>,
}

impl OwnedEvent {
    /// Deserialises the payload.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.payload.get())
    }
}

pub(crate) type EventHandler = dyn Fn(Event<'_>) + Send + Sync;

/// Wraps an async handler into a sync one that spawns it.
pub(crate) fn spawning<F, Fut>(handler: F) -> Arc<EventHandler>
where
    F: Fn(OwnedEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move |ev: Event<'_>| {
        let owned = OwnedEvent {
            server: ev.server.clone(),
            socket: ev.socket.clone(),
            payload: ev.payload.to_owned(),
            reply: ev.reply,
        };
        tokio::spawn(handler(owned));
    })
}

pub(crate) struct Entry<F: ?Sized> {
    pub(crate) id: HandlerId,
    tag: Option<Arc<str>>,
    once: bool,
    pub(crate) handler: Arc<F>,
}

impl<F: ?Sized> Clone for Entry<F> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            tag: self.tag.clone(),
            once: self.once,
            handler: Arc::clone(&self.handler),
        }
    }
}

/// Handler lists by name; each list is replaced, never mutated, on change.
type HandlerMap<F> = HashMap<Box<str>, Arc<[Entry<F>]>>;

/// Handlers of one kind, keyed by a name (event name; `""` for system events).
pub(crate) struct Listeners<F: ?Sized> {
    map: RwLock<HandlerMap<F>>,
}

impl<F: ?Sized> Default for Listeners<F> {
    fn default() -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
        }
    }
}

static NEXT_HANDLER: AtomicU64 = AtomicU64::new(1);

impl<F: ?Sized> Listeners<F> {
    pub(crate) fn add(
        &self,
        name: &str,
        handler: Arc<F>,
        tag: Option<&str>,
        once: bool,
    ) -> HandlerId {
        let id = HandlerId(NEXT_HANDLER.fetch_add(1, Ordering::Relaxed));
        let entry = Entry {
            id,
            tag: tag.map(Arc::from),
            once,
            handler,
        };
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let list = map
            .entry(name.into())
            .or_insert_with(|| Arc::from(Vec::new()));
        let mut v: Vec<Entry<F>> = list.iter().cloned().collect();
        v.push(entry);
        *list = Arc::from(v);
        id
    }

    /// The handlers for `name`, with `once` handlers removed from the registry.
    pub(crate) fn take(&self, name: &str) -> Option<Arc<[Entry<F>]>> {
        let list = {
            let map = self.map.read().unwrap_or_else(|p| p.into_inner());
            Arc::clone(map.get(name)?)
        };
        if list.iter().any(|e| e.once) {
            let once: Vec<HandlerId> = list.iter().filter(|e| e.once).map(|e| e.id).collect();
            self.remove_where(|e| once.contains(&e.id));
        }
        Some(list)
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.get(name).is_some_and(|l| !l.is_empty())
    }

    pub(crate) fn remove_where(&self, pred: impl Fn(&Entry<F>) -> bool) -> usize {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let mut removed = 0;
        map.retain(|_, list| {
            if list.iter().any(&pred) {
                let v: Vec<Entry<F>> = list.iter().filter(|e| !pred(e)).cloned().collect();
                removed += list.len() - v.len();
                *list = Arc::from(v);
            }
            !list.is_empty()
        });
        removed
    }

    pub(crate) fn remove_id(&self, id: HandlerId) -> usize {
        self.remove_where(|e| e.id == id)
    }

    pub(crate) fn remove_tag(&self, tag: &str) -> usize {
        self.remove_where(|e| e.tag.as_deref() == Some(tag))
    }

    pub(crate) fn remove_name(&self, name: &str) -> usize {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        map.remove(name).map_or(0, |l| l.len())
    }
}

/// A system event of the server, for [`Server::on_system`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SystemEvent {
    /// A client connected (after the upgrade).
    Connection(Socket),
    /// A client disconnected, with the close code and reason (1006 and empty when the
    /// connection dropped without a close frame).
    Close {
        /// The socket.
        socket: Socket,
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// A client broke the protocol or sent a frame that was dropped.
    Error {
        /// The socket.
        socket: Socket,
        /// What was wrong.
        error: String,
    },
    /// A client answered the protocol ping.
    Pong(Socket),
    /// Every text message as received, before dispatch.
    Message {
        /// The socket.
        socket: Socket,
        /// The raw text.
        text: String,
    },
    /// A client sent the application heartbeat.
    ClientPing(Socket),
    /// The server hit an error not tied to one socket (accept failure, broker error).
    ServerError(String),
    /// The server is listening on this address.
    Listening(std::net::SocketAddr),
    /// The server finished shutting down.
    ServerClosed,
    /// A node joined the cluster (node discovery).
    NodeJoined(String),
    /// A node left the cluster or stopped announcing itself.
    NodeLeft(String),
}

/// Which [`SystemEvent`] a handler is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SystemEventKind {
    /// [`SystemEvent::Connection`]
    Connection,
    /// [`SystemEvent::Close`]
    Close,
    /// [`SystemEvent::Error`]
    Error,
    /// [`SystemEvent::Pong`]
    Pong,
    /// [`SystemEvent::Message`]
    Message,
    /// [`SystemEvent::ClientPing`]
    ClientPing,
    /// [`SystemEvent::ServerError`]
    ServerError,
    /// [`SystemEvent::Listening`]
    Listening,
    /// [`SystemEvent::ServerClosed`]
    ServerClosed,
    /// [`SystemEvent::NodeJoined`]
    NodeJoined,
    /// [`SystemEvent::NodeLeft`]
    NodeLeft,
}

impl SystemEventKind {
    pub(crate) fn key(self) -> &'static str {
        match self {
            Self::Connection => "connection",
            Self::Close => "close",
            Self::Error => "error",
            Self::Pong => "pong",
            Self::Message => "message",
            Self::ClientPing => "client-ping",
            Self::ServerError => "server-error",
            Self::Listening => "listening",
            Self::ServerClosed => "server-closed",
            Self::NodeJoined => "node-joined",
            Self::NodeLeft => "node-left",
        }
    }
}

impl SystemEvent {
    /// The kind of this event.
    pub fn kind(&self) -> SystemEventKind {
        match self {
            Self::Connection(_) => SystemEventKind::Connection,
            Self::Close { .. } => SystemEventKind::Close,
            Self::Error { .. } => SystemEventKind::Error,
            Self::Pong(_) => SystemEventKind::Pong,
            Self::Message { .. } => SystemEventKind::Message,
            Self::ClientPing(_) => SystemEventKind::ClientPing,
            Self::ServerError(_) => SystemEventKind::ServerError,
            Self::Listening(_) => SystemEventKind::Listening,
            Self::ServerClosed => SystemEventKind::ServerClosed,
            Self::NodeJoined(_) => SystemEventKind::NodeJoined,
            Self::NodeLeft(_) => SystemEventKind::NodeLeft,
        }
    }
}

pub(crate) type SystemHandler = dyn Fn(&SystemEvent) + Send + Sync;

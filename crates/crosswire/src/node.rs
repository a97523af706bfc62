//! The node: its shared state, the [`Server`] handle to it, and the [`Context`] a handler
//! runs in.
//!
//! Only what every layer above needs lives here: the node's parts (registry, handler tables,
//! cluster, counters) and the reads of the registry. Behaviour is added by the layers that
//! own it — sending (`emit`), rooms (`rooms`), handlers (`handler`), server-to-server events
//! (`server_events`), connections (`connection`, `upgrade`) and the facade (`server`) — each
//! in its own `impl Server` block.

use std::any::Any;
use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use bytes::Bytes;
use crosswire_core::Histogram;
use serde_json::value::RawValue;
use tokio::sync::Notify;

use crate::ack::Acks;
use crate::cluster::Cluster;
use crate::config::ServerConfig;
use crate::events::Listeners;
use crate::limits::Admission;
use crate::registry::Registry;
use crate::requests::Requests;
use crate::socket::{Socket, SocketHost};
use crate::stats::Counters;
use crate::sync;

/// A handler with its type erased, as the handler tables store it.
pub(crate) type ErasedHandler = dyn Fn(Context<'_>) + Send + Sync;

/// Handler tables of one kind, by name.
pub(crate) type Handlers = Listeners<ErasedHandler>;

/// The handler of custom-channel messages.
pub(crate) type ChannelHandler = Arc<dyn Fn(&str, &Bytes) + Send + Sync>;

pub(crate) struct ServerInner {
    pub(crate) config: ServerConfig,
    pub(crate) registry: RwLock<Registry>,
    /// Client event handlers, by event name.
    pub(crate) events: Handlers,
    /// System event handlers, by [`crate::system::SystemEvent::NAME`].
    pub(crate) system: Handlers,
    /// Server-to-server event handlers, by event name.
    pub(crate) server_events: Handlers,
    pub(crate) acks: Acks,
    pub(crate) stats: Counters,
    /// Application state for [`crate::State`], given once to the builder.
    pub(crate) state: http::Extensions,
    pub(crate) heartbeat_frame: Bytes,
    pub(crate) ping_frame: Bytes,
    pub(crate) next_conn: AtomicU64,
    pub(crate) cluster: Option<Cluster>,
    pub(crate) requests: Arc<Requests>,
    pub(crate) channel_handler: RwLock<Option<ChannelHandler>>,
    pub(crate) shutting_down: AtomicBool,
    /// Signalled when shutdown starts (stops the listeners and the sweep).
    pub(crate) shutdown: Notify,
    /// Signalled whenever a connection is removed.
    pub(crate) conn_removed: Notify,
    pub(crate) preset: HashSet<String>,
    /// History and pending recoveries of the rooms that keep history.
    pub(crate) history: crate::streams::History,
    /// Connections held or being upgraded, against the maximum.
    pub(crate) admission: Arc<Admission>,
    /// When the node was built, in milliseconds since the Unix epoch.
    pub(crate) started_at_ms: u64,
}

/// A crosswire node: WebSocket connections, ids, rooms and events. Cheap to clone.
///
/// Create it inside a tokio runtime with [`Server::new`] (a single node) or
/// [`Server::builder`] (a broker for a cluster, application state).
#[derive(Clone)]
pub struct Server {
    pub(crate) inner: Arc<ServerInner>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("node", &self.inner.config.node_name)
            .finish_non_exhaustive()
    }
}
impl ServerInner {
    pub(crate) fn read_registry(&self) -> RwLockReadGuard<'_, Registry> {
        sync::read(&self.registry)
    }

    pub(crate) fn write_registry(&self) -> RwLockWriteGuard<'_, Registry> {
        sync::write(&self.registry)
    }
}

impl SocketHost for ServerInner {
    fn node_counters(&self) -> &Counters {
        &self.stats
    }

    fn acks(&self) -> &Acks {
        &self.acks
    }

    fn background_close_time(&self) -> Duration {
        self.config.enter_background_close_time
    }
}

impl Server {
    /// This node's name.
    pub fn node_name(&self) -> &str {
        &self.inner.config.node_name
    }

    /// The configuration this node runs with.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// Whether shutdown has started.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Acquire)
    }

    /// The local socket bound to `id`.
    pub fn socket(&self, id: &str) -> Option<Socket> {
        self.read_registry().get(id).map(|s| Socket {
            shared: Arc::clone(s),
        })
    }

    /// Every local socket.
    pub fn sockets(&self) -> Vec<Socket> {
        self.read_registry()
            .conns
            .values()
            .map(|s| Socket {
                shared: Arc::clone(s),
            })
            .collect()
    }

    /// Number of local connections.
    pub fn connection_count(&self) -> usize {
        self.read_registry().conns.len()
    }

    pub(crate) fn read_registry(&self) -> RwLockReadGuard<'_, Registry> {
        self.inner.read_registry()
    }

    pub(crate) fn write_registry(&self) -> RwLockWriteGuard<'_, Registry> {
        self.inner.write_registry()
    }
}

/// Where a handler runs: a client event, a server-to-server event or a system event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Client,
    Server,
    System,
}

/// Everything an extractor can read about the event being handled.
///
/// Handlers never see it; custom extractors ([`crate::handler::FromContext`]) read it through
/// its methods.
pub struct Context<'a> {
    pub(crate) server: &'a Server,
    pub(crate) source: Source,
    pub(crate) event: &'a str,
    pub(crate) payload: &'a RawValue,
    pub(crate) socket: Option<&'a Socket>,
    pub(crate) origin: Option<&'a str>,
    pub(crate) system: Option<&'a (dyn Any + Send + Sync)>,
    /// Who waits for an answer, as the frame said.
    pub(crate) reply: ReplyTo<'a>,
    /// An extractor took the answer slot (as a [`Reply`]), or it was answered.
    pub(crate) taken: bool,
    /// The owned answer slot of a spawned handler that finished.
    pub(crate) owned: Option<Reply>,
    /// Where the handler's run is timed, if its table is timed.
    pub(crate) timer: Option<&'a Arc<Histogram>>,
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("event", &self.event)
            .field("socket", &self.socket)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// Who is waiting for an answer, borrowed from the frame.
#[derive(Clone, Copy)]
pub(crate) enum ReplyTo<'a> {
    None,
    Client {
        socket: &'a Socket,
        callback_id: &'a str,
    },
    Server {
        node: &'a str,
        request: u64,
    },
}

impl<'a> Context<'a> {
    /// A client event from `socket`.
    pub(crate) fn client(
        server: &'a Server,
        socket: &'a Socket,
        event: &'a str,
        payload: &'a RawValue,
        callback_id: Option<&'a str>,
    ) -> Self {
        Self {
            server,
            source: Source::Client,
            event,
            payload,
            socket: Some(socket),
            origin: None,
            system: None,
            reply: match callback_id {
                Some(callback_id) => ReplyTo::Client {
                    socket,
                    callback_id,
                },
                None => ReplyTo::None,
            },
            taken: false,
            owned: None,
            timer: None,
        }
    }

    /// A server-to-server event from node `origin`.
    pub(crate) fn server_event(
        server: &'a Server,
        origin: &'a str,
        event: &'a str,
        payload: &'a RawValue,
        request: Option<u64>,
    ) -> Self {
        Self {
            server,
            source: Source::Server,
            event,
            payload,
            socket: None,
            origin: Some(origin),
            system: None,
            reply: match request {
                Some(request) => ReplyTo::Server {
                    node: origin,
                    request,
                },
                None => ReplyTo::None,
            },
            taken: false,
            owned: None,
            timer: None,
        }
    }

    /// A system event, about `socket` when it concerns one.
    pub(crate) fn system(
        server: &'a Server,
        event: &'a str,
        value: &'a (dyn Any + Send + Sync),
        socket: Option<&'a Socket>,
    ) -> Self {
        Self {
            server,
            source: Source::System,
            event,
            payload: RawValue::NULL,
            socket,
            origin: None,
            system: Some(value),
            reply: ReplyTo::None,
            taken: false,
            owned: None,
            timer: None,
        }
    }

    /// The same event for a further handler: every field but the reply, which only the first
    /// handler of an event gets (each event is answered once).
    pub(crate) fn without_reply(&self) -> Context<'a> {
        Context {
            server: self.server,
            source: self.source,
            event: self.event,
            payload: self.payload,
            socket: self.socket,
            origin: self.origin,
            system: self.system,
            reply: ReplyTo::None,
            taken: false,
            owned: None,
            timer: None,
        }
    }

    /// This node.
    pub fn server(&self) -> &Server {
        self.server
    }

    /// The event's name (for a system event, its kind, e.g. `close`).
    pub fn event(&self) -> &str {
        self.event
    }

    /// The payload as JSON text (`null` for system events).
    pub fn payload(&self) -> &RawValue {
        self.payload
    }

    /// The socket the event came from or is about.
    pub fn socket(&self) -> Option<&Socket> {
        self.socket
    }

    /// The node that sent a server-to-server event.
    pub fn origin(&self) -> Option<&str> {
        self.origin
    }

    /// Whether someone waits for an answer that no handler has taken yet.
    pub fn wants_reply(&self) -> bool {
        self.owned.is_some() || (!self.taken && !matches!(self.reply, ReplyTo::None))
    }
}

/// Answers a client's request (an event with a `callbackId`) or a server-to-server request.
/// Take it as a handler argument (`Option<Reply>` when the request may not want one) to
/// answer later or from elsewhere; a handler that only answers at its end returns the answer
/// instead ([`crate::Ack`], `Result`). Consumed by sending.
#[derive(Debug)]
pub struct Reply(pub(crate) ReplyKind);

#[derive(Debug)]
pub(crate) enum ReplyKind {
    Client {
        socket: Socket,
        callback_id: Box<str>,
    },
    Server {
        server: std::sync::Weak<ServerInner>,
        to: Arc<str>,
        request: u64,
    },
}

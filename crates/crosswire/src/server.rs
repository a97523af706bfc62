//! The [`Server`] handle: handlers, ids, rooms, sending, and the node's life cycle.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::cluster::{Cluster, Outgoing};
use crate::config::ServerConfig;
use crate::error::{ConfigError, EmitError, ServeError};
use crate::events::{
    spawning, Event, EventHandler, HandlerId, Listeners, OwnedEvent, SystemEvent, SystemEventKind,
    SystemHandler,
};
use crate::registry::{Match, NamespaceChange, Registry};
use crate::socket::{lock, Batch, Socket, SocketShared};
use crosswire_core::{Broker, BrokerHealth};
use crosswire_protocol::envelope::Target;
use crosswire_protocol::{frame, ws};

/// The handler of custom-channel messages.
type ChannelHandler = Arc<dyn Fn(&str, &Bytes) + Send + Sync>;

/// Node-wide counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections_total: AtomicU64,
    pub(crate) malformed_frames: AtomicU64,
    pub(crate) unknown_events: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
    pub(crate) dropped_messages: AtomicU64,
    pub(crate) slow_disconnects: AtomicU64,
    pub(crate) ping_timeouts: AtomicU64,
    pub(crate) broker_dropped: AtomicU64,
}

/// A snapshot of a node's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Sockets connected now.
    pub connections: usize,
    /// Sockets bound to an id now.
    pub bound_ids: usize,
    /// Connections accepted since start.
    pub connections_total: u64,
    /// Frames dropped as malformed (not JSON, no event, wrong types, bad callbackId, binary).
    pub malformed_frames: u64,
    /// Events with no handler.
    pub unknown_events: u64,
    /// Connections closed for breaking RFC 6455 (including oversized messages).
    pub protocol_errors: u64,
    /// Messages not queued because a socket's queue was full.
    pub dropped_messages: u64,
    /// Sockets disconnected because their queue was full.
    pub slow_disconnects: u64,
    /// Sockets terminated for missing a protocol pong.
    pub ping_timeouts: u64,
    /// Broker messages not published because the publish queue was full.
    pub broker_dropped: u64,
    /// Envelopes received from other nodes and handled.
    pub envelopes_received: u64,
    /// Envelopes received twice (e.g. through two Redis nodes) and dropped.
    pub envelopes_duplicate: u64,
    /// Client-bound deliveries received from other nodes.
    pub remote_deliveries: u64,
}

/// Where the answer to one server → client request goes.
type AckSender = oneshot::Sender<Box<RawValue>>;

/// Pending server → client requests, keyed by (connection, ack number).
#[derive(Default)]
pub(crate) struct Acks {
    next: AtomicU64,
    pending: Mutex<HashMap<(u64, u64), AckSender>>,
}

impl Acks {
    pub(crate) fn register(&self, conn: u64) -> (u64, oneshot::Receiver<Box<RawValue>>) {
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert((conn, n), tx);
        (n, rx)
    }

    pub(crate) fn resolve(&self, conn: u64, n: u64, payload: Box<RawValue>) {
        if let Some(tx) = lock(&self.pending).remove(&(conn, n)) {
            let _ = tx.send(payload);
        }
    }

    pub(crate) fn forget(&self, conn: u64, n: u64) {
        lock(&self.pending).remove(&(conn, n));
    }

    /// Fails every request of a closed connection (their senders are dropped).
    fn drop_conn(&self, conn: u64) {
        let mut pending = lock(&self.pending);
        if !pending.is_empty() {
            pending.retain(|(c, _), _| *c != conn);
        }
    }
}

pub(crate) struct ServerInner {
    pub(crate) config: ServerConfig,
    registry: RwLock<Registry>,
    pub(crate) events: Listeners<EventHandler>,
    pub(crate) system: Listeners<SystemHandler>,
    pub(crate) acks: Acks,
    pub(crate) stats: Counters,
    pub(crate) heartbeat_frame: Bytes,
    ping_frame: Bytes,
    next_conn: AtomicU64,
    pub(crate) cluster: Option<Cluster>,
    pub(crate) server_events: Listeners<crate::server_events::ServerHandler>,
    requests: crate::server_events::Requests,
    channel_handler: RwLock<Option<ChannelHandler>>,
    shutting_down: AtomicBool,
    /// Signalled when shutdown starts (stops the listeners and the sweep).
    pub(crate) shutdown: Notify,
    /// Signalled whenever a connection is removed.
    conn_removed: Notify,
    preset: HashSet<String>,
}

/// A crosswire node: WebSocket connections, ids, rooms and events. Cheap to clone.
///
/// Create it inside a tokio runtime with [`Server::new`] (single node) or
/// [`Server::with_broker`] (one node of a cluster).
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

impl Server {
    /// A single node with no broker. Must be called inside a tokio runtime.
    pub fn new(config: ServerConfig) -> Result<Self, ConfigError> {
        Self::build(config, None)
    }

    /// A node of a cluster, reaching the other nodes through `broker`. Must be called inside
    /// a tokio runtime.
    pub fn with_broker(config: ServerConfig, broker: Arc<dyn Broker>) -> Result<Self, ConfigError> {
        Self::build(config, Some(broker))
    }

    fn build(config: ServerConfig, broker: Option<Arc<dyn Broker>>) -> Result<Self, ConfigError> {
        config.validate()?;
        let heartbeat_frame =
            ws::server_frame(ws::OpCode::Text, config.heartbeat_message.as_bytes());
        let preset: HashSet<String> = config.preset_namespaces.iter().cloned().collect();
        let (cluster, outgoing_rx) = match broker {
            Some(broker) => {
                let (cluster, rx) = Cluster::new(&config, broker);
                (Some(cluster), Some(rx))
            }
            None => (None, None),
        };
        let inner = Arc::new(ServerInner {
            config,
            registry: RwLock::new(Registry::default()),
            events: Listeners::default(),
            system: Listeners::default(),
            acks: Acks::default(),
            stats: Counters::default(),
            heartbeat_frame,
            ping_frame: crate::socket::ping_frame(),
            next_conn: AtomicU64::new(0),
            cluster,
            server_events: Listeners::default(),
            requests: Default::default(),
            channel_handler: RwLock::new(None),
            shutting_down: AtomicBool::new(false),
            shutdown: Notify::new(),
            conn_removed: Notify::new(),
            preset,
        });
        let server = Server { inner };
        server.install_queries();
        server.spawn_ping_sweep();
        if let Some(rx) = outgoing_rx {
            crate::cluster::start(&server, rx);
        }
        Ok(server)
    }

    /// This node's name.
    pub fn node_name(&self) -> &str {
        &self.inner.config.node_name
    }

    /// The configuration this node runs with.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    // ----- handlers -----

    /// Handles client event `event`. The handler runs on the connection's task: keep it short
    /// and non-blocking, or use [`Server::on_async`].
    pub fn on<F>(&self, event: &str, handler: F) -> HandlerId
    where
        F: Fn(Event<'_>) + Send + Sync + 'static,
    {
        self.inner.events.add(event, Arc::new(handler), None, false)
    }

    /// Like [`Server::on`], with a tag for [`Server::off_tag`].
    pub fn on_tagged<F>(&self, tag: &str, event: &str, handler: F) -> HandlerId
    where
        F: Fn(Event<'_>) + Send + Sync + 'static,
    {
        self.inner
            .events
            .add(event, Arc::new(handler), Some(tag), false)
    }

    /// Handles the next occurrence of `event` only.
    pub fn once<F>(&self, event: &str, handler: F) -> HandlerId
    where
        F: Fn(Event<'_>) + Send + Sync + 'static,
    {
        self.inner.events.add(event, Arc::new(handler), None, true)
    }

    /// Handles `event` with an async function, spawned as a task per event.
    pub fn on_async<F, Fut>(&self, event: &str, handler: F) -> HandlerId
    where
        F: Fn(OwnedEvent) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.inner.events.add(event, spawning(handler), None, false)
    }

    /// Handles `event` with a typed payload. A payload that does not deserialise into `T`
    /// is dropped and reported as a socket `error` system event (and a reply, if asked, is
    /// `{"error": "<message>"}`).
    pub fn on_typed<T, F>(&self, event: &str, handler: F) -> HandlerId
    where
        T: serde::de::DeserializeOwned,
        F: Fn(&Server, &Socket, T, Option<crate::Reply>) + Send + Sync + 'static,
    {
        self.on(event, move |ev: Event<'_>| {
            match ev.payload.parse_owned::<T>() {
                Ok(value) => handler(ev.server, ev.socket, value, ev.reply),
                Err(e) => {
                    let message = format!("invalid payload: {e}");
                    if let Some(reply) = ev.reply {
                        let _ = reply.send(&serde_json::json!({ "error": message }));
                    }
                    ev.server.emit_system(&SystemEvent::Error {
                        socket: ev.socket.clone(),
                        error: message,
                    });
                }
            }
        })
    }

    /// Removes one handler (client event or system event). Returns whether it existed.
    pub fn off(&self, id: HandlerId) -> bool {
        self.inner.events.remove_id(id)
            + self.inner.system.remove_id(id)
            + self.inner.server_events.remove_id(id)
            > 0
    }

    /// Removes every handler registered with `tag`. Returns how many.
    pub fn off_tag(&self, tag: &str) -> usize {
        self.inner.events.remove_tag(tag)
            + self.inner.system.remove_tag(tag)
            + self.inner.server_events.remove_tag(tag)
    }

    /// Removes every handler of client event `event`. Returns how many.
    pub fn off_event(&self, event: &str) -> usize {
        self.inner.events.remove_name(event)
    }

    /// Handles a system event (connection, close, error, pong, message, client-ping, server
    /// error, listening, server closed).
    pub fn on_system<F>(&self, kind: SystemEventKind, handler: F) -> HandlerId
    where
        F: Fn(&SystemEvent) + Send + Sync + 'static,
    {
        self.inner
            .system
            .add(kind.key(), Arc::new(handler), None, false)
    }

    /// Like [`Server::on_system`], with a tag for [`Server::off_tag`].
    pub fn on_system_tagged<F>(&self, tag: &str, kind: SystemEventKind, handler: F) -> HandlerId
    where
        F: Fn(&SystemEvent) + Send + Sync + 'static,
    {
        self.inner
            .system
            .add(kind.key(), Arc::new(handler), Some(tag), false)
    }

    /// Runs `handler` for every new connection (the place to authenticate from the query
    /// parameters and [`Server::bind`] an id, when that was not done before the upgrade).
    pub fn on_connection<F>(&self, handler: F) -> HandlerId
    where
        F: Fn(&Server, &Socket) + Send + Sync + 'static,
    {
        let server = Arc::downgrade(&self.inner);
        self.on_system(SystemEventKind::Connection, move |ev| {
            if let (SystemEvent::Connection(socket), Some(inner)) = (ev, server.upgrade()) {
                handler(&Server { inner }, socket);
            }
        })
    }

    /// Runs `handler` when a socket closes, with the close code and reason. The id binding
    /// and room memberships are already cleaned up.
    pub fn on_close<F>(&self, handler: F) -> HandlerId
    where
        F: Fn(&Socket, u16, &str) + Send + Sync + 'static,
    {
        self.on_system(SystemEventKind::Close, move |ev| {
            if let SystemEvent::Close {
                socket,
                code,
                reason,
            } = ev
            {
                handler(socket, *code, reason);
            }
        })
    }

    pub(crate) fn emit_system(&self, event: &SystemEvent) {
        if let Some(list) = self.inner.system.take(event.kind().key()) {
            for entry in list.iter() {
                (entry.handler)(event);
            }
        }
    }

    // ----- ids -----

    /// Binds `id` (unique across the cluster) to `socket`. A socket already bound to `id` —
    /// on this node or another — is closed with the takeover code (default 4012).
    pub fn bind(&self, id: &str, socket: &Socket) {
        let id: Arc<str> = Arc::from(id);
        let previous = self.write_registry().bind(Arc::clone(&id), &socket.shared);
        if let Some(old) = previous {
            tracing::debug!(id = %id, "id taken over by a new connection");
            old.request_close(
                self.inner.config.takeover_close_code,
                "taken over by a new connection",
            );
        }
        if let Some(cluster) = &self.inner.cluster {
            cluster.announce_takeover(&self.inner.stats, &id);
        }
    }

    /// Removes the binding of `id` (its rooms are left as they are). Returns whether it
    /// was bound on this node.
    pub fn unbind(&self, id: &str) -> bool {
        let unbound = self.unbind_quiet(id);
        if unbound {
            if let Some(cluster) = &self.inner.cluster {
                cluster.announce_gone(&self.inner.stats, id);
            }
        }
        unbound
    }

    /// Unbinds without telling the other nodes (the id moved to one of them).
    pub(crate) fn unbind_quiet(&self, id: &str) -> bool {
        self.write_registry().unbind(id, None).is_some()
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

    /// Counters of this node.
    pub fn stats(&self) -> Stats {
        let reg = self.read_registry();
        let c = &self.inner.stats;
        let cluster_count = |counter: fn(&Cluster) -> &AtomicU64| {
            self.inner
                .cluster
                .as_ref()
                .map_or(0, |cluster| counter(cluster).load(Ordering::Relaxed))
        };
        Stats {
            connections: reg.conns.len(),
            bound_ids: reg.ids.len(),
            connections_total: c.connections_total.load(Ordering::Relaxed),
            malformed_frames: c.malformed_frames.load(Ordering::Relaxed),
            unknown_events: c.unknown_events.load(Ordering::Relaxed),
            protocol_errors: c.protocol_errors.load(Ordering::Relaxed),
            dropped_messages: c.dropped_messages.load(Ordering::Relaxed),
            slow_disconnects: c.slow_disconnects.load(Ordering::Relaxed),
            ping_timeouts: c.ping_timeouts.load(Ordering::Relaxed),
            broker_dropped: c.broker_dropped.load(Ordering::Relaxed),
            envelopes_received: cluster_count(|c| &c.received),
            envelopes_duplicate: cluster_count(|c| &c.duplicates),
            remote_deliveries: cluster_count(|c| &c.deliveries),
        }
    }

    /// Health of the broker, `None` on a single node.
    pub fn broker_health(&self) -> Option<BrokerHealth> {
        self.inner.cluster.as_ref().map(|c| c.broker.health())
    }

    // ----- custom channels -----

    /// Subscribes this node to a custom broker channel; its messages go to the handler set
    /// with [`Server::on_channel_message`]. Names starting with crosswire's own prefixes are
    /// refused. Returns false on a single node (no broker) or for a reserved name.
    pub fn subscribe_channel(&self, channel: &str) -> bool {
        match &self.inner.cluster {
            Some(cluster) if !cluster.is_reserved(channel) => {
                cluster.queue(&self.inner.stats, Outgoing::Subscribe(channel.to_string()));
                true
            }
            _ => false,
        }
    }

    /// Unsubscribes a custom channel.
    pub fn unsubscribe_channel(&self, channel: &str) -> bool {
        match &self.inner.cluster {
            Some(cluster) if !cluster.is_reserved(channel) => {
                cluster.queue(
                    &self.inner.stats,
                    Outgoing::Unsubscribe(channel.to_string()),
                );
                true
            }
            _ => false,
        }
    }

    /// Publishes raw bytes on a custom channel (no envelope; any subscriber, crosswire or
    /// not, receives them as they are).
    pub fn publish_raw(&self, channel: &str, payload: impl Into<Bytes>) -> bool {
        match &self.inner.cluster {
            Some(cluster) if !cluster.is_reserved(channel) => {
                cluster.queue(
                    &self.inner.stats,
                    Outgoing::Publish(Arc::from(channel), payload.into()),
                );
                true
            }
            _ => false,
        }
    }

    /// Sets the one handler of messages on custom channels (replacing any previous one).
    pub fn on_channel_message<F>(&self, handler: F)
    where
        F: Fn(&str, &Bytes) + Send + Sync + 'static,
    {
        *self
            .inner
            .channel_handler
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(handler));
    }

    pub(crate) fn emit_channel_message(&self, message: &crosswire_core::BrokerMessage) {
        let handler = self
            .inner
            .channel_handler
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(handler) = handler {
            handler(&message.channel, &message.payload);
        }
    }

    // ----- rooms -----

    /// Adds `id` to room `room` of `namespace`.
    pub fn join(&self, namespace: &str, room: &str, id: &str) {
        let change = self.write_registry().join(namespace, room, id);
        self.namespace_changed(change);
    }

    /// Removes `id` from a room.
    pub fn leave(&self, namespace: &str, room: &str, id: &str) {
        let change = self.write_registry().leave(namespace, room, id);
        self.namespace_changed(change);
    }

    /// Removes `id` from every room.
    pub fn leave_all(&self, id: &str) {
        let changes = self.write_registry().leave_all(id);
        for change in changes {
            self.namespace_changed(change);
        }
    }

    /// Removes a room on this node and, in a cluster, on every node.
    pub fn remove_room(&self, namespace: &str, room: &str) {
        self.remove_room_local(namespace, room);
        if let Some(cluster) = &self.inner.cluster {
            cluster.publish_remove_room(&self.inner.stats, namespace, room);
        }
    }

    pub(crate) fn remove_room_local(&self, namespace: &str, room: &str) {
        let change = self.write_registry().remove_room(namespace, room);
        self.namespace_changed(change);
    }

    fn namespace_changed(&self, change: NamespaceChange) {
        let Some(cluster) = &self.inner.cluster else {
            return;
        };
        match change {
            NamespaceChange::None => {}
            NamespaceChange::Added(ns) => {
                if !self.inner.preset.contains(&*ns) {
                    cluster.subscribe_namespace(&self.inner.stats, &ns);
                }
            }
            NamespaceChange::Removed(ns) => {
                if self.inner.config.auto_unsubscribe && !self.inner.preset.contains(&*ns) {
                    cluster.unsubscribe_namespace(&self.inner.stats, &ns);
                }
            }
        }
    }

    /// Local members of a room.
    pub fn room_members(&self, namespace: &str, room: &str) -> Vec<String> {
        self.read_registry()
            .room_members(namespace, room)
            .map(|m| m.iter().map(|id| id.to_string()).collect())
            .unwrap_or_default()
    }

    /// Number of local members of a room.
    pub fn room_size(&self, namespace: &str, room: &str) -> usize {
        self.read_registry()
            .room_members(namespace, room)
            .map_or(0, |m| m.len())
    }

    /// Distinct local ids in every room of the namespaces matching `namespace`.
    pub fn namespace_members(&self, namespace: &str, matching: Match) -> Vec<String> {
        self.read_registry()
            .namespace_members(namespace, matching)
            .into_iter()
            .map(|id| id.to_string())
            .collect()
    }

    /// Number of distinct local ids in the namespaces matching `namespace`.
    pub fn namespace_size(&self, namespace: &str, matching: Match) -> usize {
        self.read_registry()
            .namespace_members(namespace, matching)
            .len()
    }

    /// Room ids (with their namespace) in the namespaces matching `namespace`.
    pub fn rooms(&self, namespace: &str, matching: Match) -> Vec<(String, String)> {
        self.read_registry()
            .rooms_matching(namespace, matching, "", Match::Prefix)
            .into_iter()
            .map(|(n, r, _)| (n.to_string(), r.to_string()))
            .collect()
    }

    /// Number of rooms in the namespaces matching `namespace`.
    pub fn room_count(&self, namespace: &str, matching: Match) -> usize {
        self.read_registry()
            .rooms_matching(namespace, matching, "", Match::Prefix)
            .len()
    }

    /// Rooms matching `room` (exact or prefix) in the namespaces matching `namespace`, with
    /// their local member counts.
    pub fn find_rooms(
        &self,
        namespace: &str,
        ns_matching: Match,
        room: &str,
        room_matching: Match,
    ) -> Vec<(String, String, usize)> {
        self.read_registry()
            .rooms_matching(namespace, ns_matching, room, room_matching)
            .into_iter()
            .map(|(n, r, c)| (n.to_string(), r.to_string(), c))
            .collect()
    }

    /// The rooms `id` joined, as (namespace, room), optionally only in namespaces starting
    /// with `namespace_prefix`.
    pub fn rooms_of(&self, id: &str, namespace_prefix: Option<&str>) -> Vec<(String, String)> {
        self.read_registry()
            .rooms_of(id)
            .iter()
            .filter(|(n, _)| namespace_prefix.is_none_or(|p| n.starts_with(p)))
            .map(|(n, r)| (n.to_string(), r.to_string()))
            .collect()
    }

    /// Whether `id` is in a room.
    pub fn is_joined(&self, namespace: &str, room: &str, id: &str) -> bool {
        self.read_registry()
            .room_members(namespace, room)
            .is_some_and(|m| m.contains(id))
    }

    // ----- sending -----

    /// Sends to the socket bound to `id`, wherever it is connected.
    pub fn to(&self, id: impl Into<String>) -> Emit<'_> {
        self.emit_to(Target::Id(id.into()))
    }

    /// Sends to the sockets bound to each of `ids`.
    /// An id listed twice is sent to once.
    pub fn to_ids<I, S>(&self, ids: I) -> Emit<'_>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut seen = HashSet::new();
        let ids: Vec<String> = ids
            .into_iter()
            .map(Into::into)
            .filter(|id| seen.insert(id.clone()))
            .collect();
        self.emit_to(Target::Ids(ids))
    }

    /// Sends to every member of a room.
    pub fn to_room(&self, namespace: impl Into<String>, room: impl Into<String>) -> Emit<'_> {
        self.emit_to(Target::Room {
            namespace: namespace.into(),
            room: room.into(),
            except: Vec::new(),
            destroy: false,
        })
    }

    /// Sends to every socket.
    pub fn to_all(&self) -> Emit<'_> {
        self.emit_to(Target::All)
    }

    fn emit_to(&self, target: Target) -> Emit<'_> {
        Emit {
            server: self,
            target,
            local: false,
        }
    }

    /// Delivers a frame to the local sockets named by `target`; returns how many got it.
    pub(crate) fn deliver_local(&self, target: &Target, frame: &Bytes) -> usize {
        let mut delivered = 0;
        let mut destroy: Option<(&str, &str)> = None;
        {
            let reg = self.read_registry();
            let mut send = |s: &Arc<SocketShared>| {
                if s.enqueue_in_batch(frame.clone()).is_ok() {
                    delivered += 1;
                }
            };
            match target {
                Target::All => reg.conns.values().for_each(&mut send),
                Target::Id(id) => reg.get(id).into_iter().for_each(&mut send),
                Target::Ids(ids) => {
                    for id in ids {
                        if let Some(s) = reg.get(id) {
                            send(s);
                        }
                    }
                }
                Target::Room {
                    namespace,
                    room,
                    except,
                    destroy: d,
                } => {
                    if let Some(members) = reg.room_members(namespace, room) {
                        for id in members {
                            if except.iter().any(|e| **e == **id) {
                                continue;
                            }
                            if let Some(s) = reg.get(id) {
                                send(s);
                            }
                        }
                    }
                    if *d {
                        destroy = Some((namespace, room));
                    }
                }
            }
        }
        if let Some((namespace, room)) = destroy {
            self.remove_room_local(namespace, room);
        }
        delivered
    }

    // ----- life cycle -----

    pub(crate) fn read_registry(&self) -> RwLockReadGuard<'_, Registry> {
        self.inner.read_registry()
    }

    fn write_registry(&self) -> RwLockWriteGuard<'_, Registry> {
        self.inner
            .registry
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Whether shutdown has started.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Acquire)
    }

    /// Takes a freshly upgraded connection in. Used by the upgrade paths.
    pub(crate) fn adopt(
        &self,
        stream: tokio::net::TcpStream,
        leftover: bytes::BytesMut,
        params: crate::RequestParams,
        setup: impl FnOnce(&Server, &Socket) + Send + 'static,
    ) {
        if self.is_shutting_down() {
            return;
        }
        let _ = stream.set_nodelay(true);
        let conn_id = self.inner.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
        let remote = stream.peer_addr().ok();
        let shared = Arc::new(SocketShared::new(
            conn_id,
            stream,
            params,
            remote,
            Arc::downgrade(&self.inner),
            self.inner.config.max_queue_bytes,
            self.inner.config.slow_client_policy,
        ));
        self.write_registry().insert_conn(Arc::clone(&shared));
        self.inner
            .stats
            .connections_total
            .fetch_add(1, Ordering::Relaxed);
        let socket = Socket { shared };
        // Bind and announce before the connection task starts, so the socket is reachable by
        // its id as early as possible after the 101 response.
        {
            let _batch = Batch::begin();
            setup(self, &socket);
            self.emit_system(&SystemEvent::Connection(socket.clone()));
        }
        let server = self.clone();
        tokio::spawn(crate::connection::run(server, socket, leftover));
    }

    fn spawn_ping_sweep(&self) {
        let interval = self.inner.config.server_ping_interval;
        if interval.is_zero() {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                // No strong reference while waiting: dropping every handle drops the server.
                tick.tick().await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                if inner.shutting_down.load(Ordering::Acquire) {
                    return;
                }
                let sockets: Vec<Arc<SocketShared>> =
                    inner.read_registry().conns.values().cloned().collect();
                let _batch = Batch::begin();
                for s in sockets {
                    if s.awaiting_pong.swap(true, Ordering::AcqRel) {
                        tracing::debug!(
                            conn = s.conn_id,
                            "no pong since the last ping, terminating"
                        );
                        inner.stats.ping_timeouts.fetch_add(1, Ordering::Relaxed);
                        s.request_terminate();
                    } else {
                        let _ = s.enqueue_in_batch(inner.ping_frame.clone());
                    }
                }
            }
        });
    }

    /// Graceful shutdown: stops accepting, closes every socket with 1001, and waits up to
    /// the close timeout for them to finish before dropping the rest. Emits
    /// [`SystemEvent::ServerClosed`].
    pub async fn shutdown(&self) {
        if self.inner.shutting_down.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::info!(node = %self.node_name(), "shutting down");
        self.inner.shutdown.notify_waiters();
        for socket in self.sockets() {
            socket.close(crate::close_code::GOING_AWAY, "server shutting down");
        }
        self.wait_for_no_connections(self.inner.config.close_timeout)
            .await;
        for socket in self.sockets() {
            socket.terminate();
        }
        // Terminated sockets finish at once; wait (bounded) so that every `close` event fires
        // before `ServerClosed`.
        self.wait_for_no_connections(Duration::from_secs(1)).await;
        crate::cluster::leave(self).await;
        self.emit_system(&SystemEvent::ServerClosed);
    }

    /// Waits until every connection is gone, or `timeout`.
    async fn wait_for_no_connections(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let removed = self.inner.conn_removed.notified();
            if self.connection_count() == 0
                || tokio::time::timeout_at(deadline, removed).await.is_err()
            {
                return;
            }
        }
    }

    /// Serves WebSocket upgrades on every path of `listener` until [`Server::shutdown`].
    /// Returns once the listener stops.
    pub async fn serve(&self, listener: tokio::net::TcpListener) -> Result<(), ServeError> {
        self.serve_router(listener, self.router()).await
    }

    /// Serves an axum `router` (which should route WebSocket upgrades to this server, e.g.
    /// with [`Server::ws_handler`]) on `listener`, stopping with [`Server::shutdown`].
    pub async fn serve_router(
        &self,
        listener: tokio::net::TcpListener,
        router: axum::Router,
    ) -> Result<(), ServeError> {
        let addr = listener.local_addr()?;
        self.emit_system(&SystemEvent::Listening(addr));
        tracing::info!(%addr, node = %self.node_name(), "listening");
        let inner = Arc::clone(&self.inner);
        let shutdown = async move {
            let notified = inner.shutdown.notified();
            tokio::pin!(notified);
            // Registered before the flag is checked, so a shutdown in between is not missed.
            notified.as_mut().enable();
            if !inner.shutting_down.load(Ordering::Acquire) {
                notified.await;
            }
        };
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    }

    /// Binds `addr` and serves in a background task; returns the bound address (useful with
    /// port 0).
    pub async fn listen(
        &self,
        addr: impl tokio::net::ToSocketAddrs,
    ) -> Result<SocketAddr, ServeError> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let server = self.clone();
        tokio::spawn(async move {
            if let Err(e) = server.serve(listener).await {
                server.emit_system(&SystemEvent::ServerError(e.to_string()));
            }
        });
        Ok(local)
    }
}

impl ServerInner {
    pub(crate) fn read_registry(&self) -> RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn requests(&self) -> &crate::server_events::Requests {
        &self.requests
    }

    pub(crate) fn remove_socket(self: &Arc<Self>, socket: &Socket) {
        let (changes, unbound) = self
            .registry
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove_conn(&socket.shared);
        if let (Some(id), Some(cluster)) = (unbound, &self.cluster) {
            cluster.announce_gone(&self.stats, &id);
        }
        self.acks.drop_conn(socket.shared.conn_id);
        let server = Server {
            inner: Arc::clone(self),
        };
        for change in changes {
            server.namespace_changed(change);
        }
        self.conn_removed.notify_waiters();
    }
}

/// A send in preparation: choose options, then [`Emit::emit`].
#[must_use = "nothing is sent until .emit() is called"]
pub struct Emit<'a> {
    server: &'a Server,
    target: Target,
    local: bool,
}

impl Emit<'_> {
    /// Skips these ids (room sends only).
    pub fn except<I, S>(mut self, ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        if let Target::Room { except, .. } = &mut self.target {
            except.extend(ids.into_iter().map(Into::into));
        }
        self
    }

    /// Removes the room after sending (room sends only).
    pub fn destroy(mut self) -> Self {
        if let Target::Room { destroy, .. } = &mut self.target {
            *destroy = true;
        }
        self
    }

    /// Delivers to this node's sockets only.
    pub fn local(mut self) -> Self {
        self.local = true;
        self
    }

    /// Sends event `event` with a serialisable payload. The frame is encoded once and shared
    /// by every recipient, local or remote. Returns how many local sockets got it.
    pub fn emit<T: Serialize + ?Sized>(self, event: &str, payload: &T) -> Result<usize, EmitError> {
        let frame = frame::encode_event(event, payload)?;
        self.send_frame(frame)
    }

    /// Sends event `event` with a payload that is already JSON text (never re-parsed).
    pub fn emit_raw(self, event: &str, payload: &RawValue) -> Result<usize, EmitError> {
        self.send_frame(frame::encode_event_raw(event, payload))
    }

    /// Sends a complete, pre-encoded WebSocket frame.
    pub fn send_frame(self, frame: Bytes) -> Result<usize, EmitError> {
        if self.server.is_shutting_down() {
            return Err(EmitError::ShutDown);
        }
        let batch = Batch::begin();
        let delivered = self.server.deliver_local(&self.target, &frame);
        if !self.local {
            if let Some(cluster) = &self.server.inner.cluster {
                let fully_local = match &self.target {
                    Target::Id(_) => delivered == 1,
                    _ => false,
                };
                if !fully_local {
                    cluster.publish_delivery(&self.server.inner.stats, self.target, frame);
                }
            }
        }
        drop(batch);
        Ok(delivered)
    }
}

/// Used by the cluster module to queue an outgoing broker operation.
pub(crate) fn queue_outgoing(tx: &mpsc::Sender<Outgoing>, stats: &Counters, op: Outgoing) {
    if tx.try_send(op).is_err() {
        stats.broker_dropped.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("broker publish queue full or closed; message dropped");
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Server>();
    is::<Socket>();
    let _ = Duration::ZERO;
}

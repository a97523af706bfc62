//! The facade: building a [`Server`], registering handlers, custom channels, counters, and
//! the node's life cycle (serving, the ping sweep, shutdown). It composes the layers below
//! and is the node's [`Host`] for the cluster layer.
//!
//! The node's state lives in `node`; sending in `emit`, ids and rooms in `rooms`,
//! server-to-server events in `server_events`, accepting connections in `upgrade`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::ack::Acks;
use crate::cluster::{Claim, Cluster, Host, Outgoing};
use crate::config::ServerConfig;
use crate::error::{ConfigError, ServeError};
use crate::events::{HandlerId, On};
use crate::handler::{erase, handler_panicked, Handler};
use crate::limits::Admission;
use crate::node::{Server, ServerInner};
use crate::registry::{Membership, Registry};
use crate::socket::{Batch, Socket, SocketShared};
use crate::stats::{Counters, Stats};
use crate::sync;
use crate::system::{self, SystemEvent};
use crate::tls::Tls;
use crosswire_core::Position;
use crosswire_core::{Broker, BrokerHealth, BrokerMessage};
use crosswire_protocol::envelope::Target;
use crosswire_protocol::ws;

/// Builds a [`Server`]: its configuration, an optional broker, application state.
///
/// ```
/// use std::sync::Arc;
/// use crosswire::{MemoryHub, Server, ServerConfig};
///
/// #[derive(Clone)]
/// struct Db;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), crosswire::ConfigError> {
/// let hub = MemoryHub::new();
/// let server = Server::builder(ServerConfig::default().with_node_name("a"))
///     .broker(Arc::new(hub.broker()))
///     .state(Db)
///     .build()?;
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until .build() is called"]
pub struct ServerBuilder {
    config: ServerConfig,
    broker: Option<Arc<dyn Broker>>,
    state: http::Extensions,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("config", &self.config)
            .field("broker", &self.broker.is_some())
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// Makes the node one of a cluster, reaching the other nodes through `broker`.
    /// Default: none (a single node).
    pub fn broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Application state that handlers take as [`crate::handler::State<S>`]; one value per type (a
    /// second call with the same type replaces the first). Cloned per event: use an `Arc`
    /// or a handle.
    pub fn state<S: Clone + Send + Sync + 'static>(mut self, state: S) -> Self {
        self.state.insert(state);
        self
    }

    /// Validates the configuration and starts the node's background tasks. Must be called
    /// inside a tokio runtime.
    pub fn build(self) -> Result<Server, ConfigError> {
        let mut config = self.config;
        if self.broker.is_some() && !config.name_given {
            config.node_name = generated_node_name();
            tracing::info!(node = %config.node_name, "no node name given: using a generated one");
        }
        config.validate()?;
        let wants_history = !config.history.is_empty() || config.id_history.is_some();
        if wants_history && self.broker.as_ref().is_some_and(|b| !b.supports_history()) {
            return Err(ConfigError::HistoryUnsupported);
        }
        if wants_history
            && self
                .broker
                .as_ref()
                .is_some_and(|b| b.history_needs_room_channels())
            && (config.id_history.is_some() || !config.room_channels)
        {
            return Err(ConfigError::HistoryNeedsRoomChannels);
        }
        let heartbeat_frame =
            ws::server_frame(ws::OpCode::Text, config.heartbeat_message.as_bytes());
        // Every node tracking a namespace's presence hears its joins and leaves.
        for namespace in config.presence.clone() {
            if !config.preset_namespaces.contains(&namespace) {
                config.preset_namespaces.push(namespace);
            }
        }
        // Every node hears the rooms that keep history, so a recovery never waits for a
        // subscription and misses what is published meanwhile.
        for namespace in config.history.keys().cloned().collect::<Vec<_>>() {
            if !config.preset_namespaces.contains(&namespace) {
                config.preset_namespaces.push(namespace);
            }
        }
        let preset: HashSet<String> = config.preset_namespaces.iter().cloned().collect();
        let history = crate::streams::History::new(
            config.history.clone(),
            config.id_history,
            self.broker.is_some(),
            &config.ws_channel_prefix,
        );
        let mut registry = Registry::tracking(config.presence.iter().cloned());
        if config.room_channels && self.broker.is_some() {
            registry = registry.with_room_channels(config.shared_channel_namespaces());
        }
        let (cluster, outgoing_rx) = match self.broker {
            Some(broker) => {
                let (cluster, rx) = Cluster::new(&config, broker);
                (Some(cluster), Some(rx))
            }
            None => (None, None),
        };
        let max_connections = config
            .max_connections
            .unwrap_or_else(default_max_connections);
        let inner = Arc::new(ServerInner {
            config,
            registry: RwLock::new(registry),
            events: crate::node::Handlers::timed(),
            system: Default::default(),
            server_events: crate::node::Handlers::timed(),
            acks: Acks::default(),
            stats: Counters::default(),
            state: self.state,
            heartbeat_frame,
            ping_frame: crate::socket::ping_frame(),
            next_conn: AtomicU64::new(0),
            cluster,
            requests: Default::default(),
            channel_handler: RwLock::new(None),
            shutting_down: AtomicBool::new(false),
            shutdown: Notify::new(),
            conn_removed: Notify::new(),
            preset,
            history,
            admission: Admission::new(max_connections),
            started_at_ms: crate::socket::unix_ms(),
        });
        let server = Server { inner };
        // The built-in server events are in place before the node hears anything: a node
        // that learns of this one may ask it something (or send it presence) at once.
        server.install_queries();
        server.install_inspection();
        server.install_client_requests();
        server.install_presence();
        if let Some(rx) = outgoing_rx {
            let inner = &server.inner;
            crate::cluster::start(Arc::downgrade(inner), &inner.config, rx);
        }
        server.spawn_ping_sweep();
        Ok(server)
    }
}

/// Handlers registered through [`Server::tagged`] carry a tag, so that
/// [`Server::off_tag`] removes them together.
#[derive(Debug, Clone, Copy)]
pub struct Tagged<'a> {
    server: &'a Server,
    tag: &'a str,
}

impl Tagged<'_> {
    /// Like [`Server::on`], tagged.
    pub fn on<M, H: Handler<M>>(&self, event: impl Into<On>, handler: H) -> HandlerId {
        let on = event.into();
        let table = &self.server.inner.events;
        table.add(&on.event, erase(handler), Some(self.tag), on.once)
    }

    /// Like [`Server::on_server`], tagged.
    pub fn on_server<M, H: Handler<M>>(&self, event: impl Into<On>, handler: H) -> HandlerId {
        let on = event.into();
        let table = &self.server.inner.server_events;
        table.add(&on.event, erase(handler), Some(self.tag), on.once)
    }

    /// Like [`Server::on_system`], tagged.
    pub fn on_system<M, H>(&self, handler: H) -> HandlerId
    where
        H: Handler<M>,
        H::First: SystemEvent,
    {
        let name = <H::First as SystemEvent>::NAME;
        self.server
            .inner
            .system
            .add(name, erase(handler), Some(self.tag), false)
    }
}

impl Server {
    /// A single node with no broker. Must be called inside a tokio runtime.
    pub fn new(config: ServerConfig) -> Result<Self, ConfigError> {
        Self::builder(config).build()
    }

    /// A builder, for a broker (cluster mode) or application state.
    pub fn builder(config: ServerConfig) -> ServerBuilder {
        ServerBuilder {
            config,
            broker: None,
            state: http::Extensions::new(),
        }
    }

    // ----- handlers -----

    /// Handles client event `event` (or `On::once(event)`: its next occurrence only).
    ///
    /// `handler` is any function, sync or `async`, whose arguments are extractors
    /// ([`Socket`], [`crate::handler::Data`], [`crate::handler::Payload`], [`crate::handler::Reply`],
    /// [`crate::handler::State`], [`crate::handler::Extension`], [`Server`], …) and whose return value may
    /// answer the request ([`crate::handler::Ack`], `Result`); see [`crate::handler`]. A synchronous
    /// handler runs on the connection's task: keep it short and non-blocking.
    pub fn on<M, H: Handler<M>>(&self, event: impl Into<On>, handler: H) -> HandlerId {
        let on = event.into();
        self.inner
            .events
            .add(&on.event, erase(handler), None, on.once)
    }

    /// Handles server-to-server event `event`, sent by [`Server::emit_server`] or
    /// [`Server::request_server`] on any node. Same handlers as [`Server::on`], with
    /// [`crate::handler::FromNode`] for the sender and [`crate::handler::Reply`] / [`crate::handler::Ack`] for the
    /// answer; a synchronous handler runs on the broker's receive task.
    pub fn on_server<M, H: Handler<M>>(&self, event: impl Into<On>, handler: H) -> HandlerId {
        let on = event.into();
        self.inner
            .server_events
            .add(&on.event, erase(handler), None, on.once)
    }

    /// Handles a system event: the handler's first argument is the event
    /// ([`crate::system::Connection`], [`crate::system::Close`], …), which selects the
    /// events it gets; the others are extractors.
    pub fn on_system<M, H>(&self, handler: H) -> HandlerId
    where
        H: Handler<M>,
        H::First: SystemEvent,
    {
        let name = <H::First as SystemEvent>::NAME;
        self.inner.system.add(name, erase(handler), None, false)
    }

    /// Registers handlers with a tag: `server.tagged("chat").on("say", say)`; remove them
    /// all with [`Server::off_tag`].
    pub fn tagged<'a>(&'a self, tag: &'a str) -> Tagged<'a> {
        Tagged { server: self, tag }
    }

    /// Removes one handler (of any kind). Returns whether it existed.
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

    /// Counters of this node.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.stats;
        let (connections, bound_ids, traffic) = {
            let reg = self.read_registry();
            // The closed sockets' totals are read under the same lock a closing socket
            // moves its own into them with: each socket is counted once.
            let mut traffic = c.closed_traffic.snapshot();
            for socket in reg.conns.values() {
                traffic += socket.traffic();
            }
            (reg.conns.len(), reg.ids.len(), traffic)
        };
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut stats = Stats {
            connections,
            traffic,
            bound_ids,
            connections_total: load(&c.connections_total),
            local_deliveries: load(&c.local_deliveries),
            malformed_frames: load(&c.malformed_frames),
            unknown_events: load(&c.unknown_events),
            rejected_events: load(&c.rejected_events),
            handler_panics: load(&c.handler_panics),
            protocol_errors: load(&c.protocol_errors),
            dropped_messages: load(&c.dropped_messages),
            slow_disconnects: load(&c.slow_disconnects),
            ping_timeouts: load(&c.ping_timeouts),
            refused_origin: load(&c.refused_origin),
            refused_capacity: self.inner.admission.refused(),
            rate_limited: load(&c.rate_limited),
            unbound_timeouts: load(&c.unbound_timeouts),
            handshake_timeouts: load(&c.handshake_timeouts),
            accept_errors: load(&c.accept_errors),
            tls_failures: load(&c.tls_failures),
            deflate_connections: load(&c.deflate_connections),
            compressed_messages: load(&c.compressed_messages),
            compressed_bytes_in: load(&c.compressed_bytes_in),
            compressed_bytes_out: load(&c.compressed_bytes_out),
            recoveries: load(&c.recoveries),
            recoveries_missed: load(&c.recoveries_missed),
            replayed_messages: load(&c.replayed_messages),
            history_errors: load(&c.history_errors),
            unconfirmed_joins: load(&c.unconfirmed_joins),
            ..Stats::default()
        };
        if let Some(cluster) = &self.inner.cluster {
            cluster.add_stats(&mut stats);
        }
        stats
    }

    /// Whether another live node of the cluster uses this node's name (heard within the
    /// node time to live); see [`system::NodeNameConflict`]. Always false on a single node.
    pub fn node_name_conflict(&self) -> bool {
        self.inner
            .cluster
            .as_ref()
            .is_some_and(Cluster::has_name_conflict)
    }

    /// Health of the broker, `None` on a single node.
    pub fn broker_health(&self) -> Option<BrokerHealth> {
        self.inner.cluster.as_ref().map(|c| c.broker.health())
    }

    /// The broker's counters per server it talks to (each Redis node): publishes, failures,
    /// retries, messages received, publish latency and health. Empty on a single node.
    pub fn broker_node_stats(&self) -> Vec<crosswire_core::BrokerNodeStats> {
        self.inner
            .cluster
            .as_ref()
            .map(|c| c.broker.node_stats())
            .unwrap_or_default()
    }

    // ----- custom channels -----

    /// Queues a broker operation on a custom channel; false on a single node or for a name
    /// that starts with crosswire's own prefixes.
    fn custom_channel(&self, channel: &str, op: impl FnOnce() -> Outgoing) -> bool {
        match &self.inner.cluster {
            Some(cluster) if !cluster.is_reserved(channel) => {
                cluster.queue(op());
                true
            }
            _ => false,
        }
    }

    /// Subscribes this node to a custom broker channel; its messages go to the handler set
    /// with [`Server::on_channel_message`]. Names starting with crosswire's own prefixes are
    /// refused. Returns false on a single node (no broker) or for a reserved name.
    pub fn subscribe_channel(&self, channel: &str) -> bool {
        self.custom_channel(channel, || Outgoing::Subscribe(channel.to_string()))
    }

    /// Unsubscribes a custom channel.
    pub fn unsubscribe_channel(&self, channel: &str) -> bool {
        self.custom_channel(channel, || Outgoing::Unsubscribe(channel.to_string()))
    }

    /// Publishes raw bytes on a custom channel (no envelope; any subscriber, crosswire or
    /// not, receives them as they are).
    pub fn publish_raw(&self, channel: &str, payload: impl Into<Bytes>) -> bool {
        let payload = payload.into();
        self.custom_channel(channel, || Outgoing::Publish(Arc::from(channel), payload))
    }

    /// Sets the one handler of messages on custom channels (replacing any previous one). It
    /// runs on the broker's receive task; a panic in it is caught and logged.
    pub fn on_channel_message<F>(&self, handler: F)
    where
        F: Fn(&str, &Bytes) + Send + Sync + 'static,
    {
        *sync::write(&self.inner.channel_handler) = Some(Arc::new(handler));
    }

    pub(crate) fn emit_channel_message(&self, message: &BrokerMessage) {
        let handler = sync::read(&self.inner.channel_handler).clone();
        if let Some(handler) = handler {
            let run = std::panic::AssertUnwindSafe(|| handler(&message.channel, &message.payload));
            if let Err(panic) = std::panic::catch_unwind(run) {
                handler_panicked(self, None, &message.channel, panic.as_ref());
            }
        }
    }

    // ----- life cycle -----

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
                inner.ping_all();
            }
        });
    }

    /// Graceful shutdown: stops accepting, closes every socket with 1001, and waits up to
    /// the close timeout for them to finish before dropping the rest. Emits
    /// [`system::ServerClosed`].
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
        if let Some(cluster) = &self.inner.cluster {
            cluster.leave().await;
        }
        self.emit_system(&system::ServerClosed {}, None);
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
        self.accept(listener, router, None).await
    }

    /// Like [`Server::serve`], over TLS (`wss://`).
    pub async fn serve_tls(
        &self,
        listener: tokio::net::TcpListener,
        tls: Tls,
    ) -> Result<(), ServeError> {
        self.accept(listener, self.router(), Some(tls)).await
    }

    /// Like [`Server::serve_router`], over TLS.
    pub async fn serve_router_tls(
        &self,
        listener: tokio::net::TcpListener,
        router: axum::Router,
        tls: Tls,
    ) -> Result<(), ServeError> {
        self.accept(listener, router, Some(tls)).await
    }

    async fn accept(
        &self,
        listener: tokio::net::TcpListener,
        router: axum::Router,
        tls: Option<Tls>,
    ) -> Result<(), ServeError> {
        let addr = listener.local_addr()?;
        self.emit_system(&system::Listening { addr }, None);
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        tracing::info!(%addr, scheme, node = %self.node_name(), "listening");
        let inner = Arc::clone(&self.inner);
        let shutdown = async {
            let notified = inner.shutdown.notified();
            tokio::pin!(notified);
            // Registered before the flag is checked, so a shutdown in between is not missed.
            notified.as_mut().enable();
            if !inner.shutting_down.load(Ordering::Acquire) {
                notified.await;
            }
        };
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::select! {
            () = crate::listener::accept_loop(&inner, listener, router, tls, stop.clone()) => {}
            () = shutdown => {}
        }
        // Stops accepting; open HTTP connections finish their request and close.
        stop.cancel();
        Ok(())
    }

    /// Binds `addr` and serves in a background task; returns the bound address (useful with
    /// port 0).
    pub async fn listen(
        &self,
        addr: impl tokio::net::ToSocketAddrs,
    ) -> Result<SocketAddr, ServeError> {
        self.listen_with(addr, None).await
    }

    /// Like [`Server::listen`], over TLS (`wss://`).
    pub async fn listen_tls(
        &self,
        addr: impl tokio::net::ToSocketAddrs,
        tls: Tls,
    ) -> Result<SocketAddr, ServeError> {
        self.listen_with(addr, Some(tls)).await
    }

    async fn listen_with(
        &self,
        addr: impl tokio::net::ToSocketAddrs,
        tls: Option<Tls>,
    ) -> Result<SocketAddr, ServeError> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let server = self.clone();
        tokio::spawn(async move {
            if let Err(e) = server.accept(listener, server.router(), tls).await {
                server.emit_system(&system::ServerError::new(e.to_string()), None);
            }
        });
        Ok(local)
    }
}

impl ServerInner {
    /// One sweep of the protocol heartbeat: pings every socket, and terminates those that
    /// did not answer the previous ping.
    fn ping_all(&self) {
        let sockets: Vec<Arc<SocketShared>> =
            self.read_registry().conns.values().cloned().collect();
        let _batch = Batch::begin();
        for s in sockets {
            if s.awaiting_pong.swap(true, Ordering::AcqRel) {
                tracing::debug!(conn = s.conn_id, "no pong since the last ping, terminating");
                self.stats.ping_timeouts.fetch_add(1, Ordering::Relaxed);
                s.request_terminate();
            } else {
                let _ = s.enqueue_in_batch(self.ping_frame.clone());
            }
        }
    }
}

impl Host for ServerInner {
    fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    fn deliver(self: &Arc<Self>, target: &Target, frame: &Bytes) {
        server(self).deliver_local(target, frame);
    }

    fn deliver_positioned(self: &Arc<Self>, target: &Target, frame: &Bytes, position: &Position) {
        server(self).deliver_from_broker(target, frame, position);
    }

    fn unrecorded(self: &Arc<Self>, target: &Target, frame: &Bytes) {
        self.stats.history_errors.fetch_add(1, Ordering::Relaxed);
        let _batch = crate::socket::Batch::begin();
        server(self).deliver_local(target, frame);
    }

    fn taken_over(self: &Arc<Self>, id: &str, remote: &Claim) -> Option<Claim> {
        let server = server(self);
        if let Some(socket) = server.socket(id) {
            let local = Claim {
                at: socket.shared.claim.load(Ordering::Acquire),
                node: self.cluster.as_ref().map(|c| Arc::clone(&c.node))?,
                conn: socket.conn_id(),
            };
            if local.at != 0 && local.beats(remote) {
                tracing::debug!(id = %id, other = %remote.node, "id bound on another node too; this later bind stays");
                return Some(local);
            }
            tracing::debug!(id = %id, "id bound on another node");
            server.unbind_quiet(id);
            server.leave_all(id);
            socket.close(
                self.config.takeover_close_code,
                "taken over by a new connection",
            );
        }
        None
    }

    fn remove_room(self: &Arc<Self>, namespace: &str, room: &str) {
        server(self).remove_room_local(namespace, room);
    }

    fn presence(self: &Arc<Self>, origin: &Arc<str>, change: Membership) {
        server(self).remote_presence(origin, change);
    }

    fn server_event(
        self: &Arc<Self>,
        origin: &str,
        event: &str,
        payload: Bytes,
        request: Option<u64>,
    ) {
        crate::server_events::dispatch(&server(self), origin, event, payload, request);
    }

    fn server_reply(self: &Arc<Self>, request: u64, origin: &str, payload: Bytes) {
        self.requests.resolve(request, origin, payload);
    }

    fn channel_message(self: &Arc<Self>, message: &BrokerMessage) {
        server(self).emit_channel_message(message);
    }

    fn peer_changed(self: &Arc<Self>, node: &str, joined: bool) {
        let server = server(self);
        if joined {
            server.presence_sync_to(node);
            server.emit_system(&system::NodeJoined::new(node), None);
        } else {
            server.presence_node_gone(node);
            server.emit_system(&system::NodeLeft::new(node), None);
        }
    }

    fn name_conflict(self: &Arc<Self>, node: &str) {
        server(self).emit_system(&system::NodeNameConflict::new(node), None);
    }

    fn report(self: &Arc<Self>, message: String) {
        server(self).emit_system(&system::ServerError::new(message), None);
    }

    fn panicked(self: &Arc<Self>, channel: &str, panic: &(dyn std::any::Any + Send)) {
        handler_panicked(&server(self), None, channel, panic);
    }
}

/// The default maximum of connections: the process's open-file limit minus 64 descriptors
/// kept for everything else; unlimited where the limit cannot be read (not Linux).
fn default_max_connections() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|soft| soft.parse::<usize>().ok())
        .map_or(usize::MAX, |soft| soft.saturating_sub(64).max(16))
}

/// A node name unique with overwhelming likelihood: the host's name and a random suffix
/// (`web-3-5f2c9a1e`).
fn generated_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| {
            h.trim()
                .replace(|c: char| c.is_whitespace() || c == ':', "-")
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_string());
    format!("{host}-{:08x}", crate::cluster::random_u64() as u32)
}

/// A handle to the node, for the layers that take one.
fn server(inner: &Arc<ServerInner>) -> Server {
    Server {
        inner: Arc::clone(inner),
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Server>();
    is::<Socket>();
}

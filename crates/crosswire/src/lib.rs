//! crosswire: WebSocket servers that behave as one across many nodes.
//!
//! A [`Server`] holds this node's sockets, binds them to cluster-unique ids, keeps rooms, and
//! sends to one id, a list of ids, a room or everyone. With a [`Broker`] it reaches the
//! sockets of every other node too. Clients speak the seed protocol: JSON text frames
//! `{"event", "payload", "callbackId"}`, an application heartbeat, and close codes 4001/4002.
//!
//! ```no_run
//! use crosswire::{Server, ServerConfig};
//! use serde_json::json;
//!
//! #[tokio::main]
//! async fn main() -> anyhow::Result<()> {
//!     let server = Server::new(ServerConfig::default())?;
//!     // Bind every socket to the `id` it connected with: ws://127.0.0.1:9000/?id=7
//!     server.on_connection(|server, socket| match socket.params().get("id") {
//!         Some(id) => server.bind(id, socket),
//!         None => socket.close(4011, "Auth failure"),
//!     });
//!     server.on("joinRoom", |ev| {
//!         if let Some(id) = ev.socket.id() {
//!             ev.server.join("chat", "1000", &id);
//!         }
//!         if let Some(reply) = ev.reply {
//!             let _ = reply.send(&json!({ "msg": "joined" }));
//!         }
//!     });
//!     server.on("say", |ev| {
//!         let _ = ev.server.to_room("chat", "1000").emit_raw("say", ev.payload.raw());
//!     });
//!     let addr = server.listen("127.0.0.1:9000").await?;
//!     println!("listening on {addr}");
//!     tokio::signal::ctrl_c().await?;
//!     server.shutdown().await;
//!     Ok(())
//! }
//! ```
//!
//! # How it works
//! - **One task per connection** ([`connection`](crate::Socket)) reads frames into a stack
//!   buffer and dispatches them to handlers.
//! - **Encode once**: a send serialises the client frame once into [`bytes::Bytes`]; every
//!   local recipient and the broker share those bytes.
//! - **Batched writes**: a delivery queues the frame and marks the socket dirty; when the
//!   producing work is done, each dirty socket is written once with one vectored write.
//!   Sockets whose kernel buffer is full are finished by their own task when writable. Each
//!   queue is bounded ([`ServerConfig::with_max_queue_bytes`], [`SlowClientPolicy`]).
//! - **The broker seam** ([`Broker`]) is narrow: publish, subscribe, unsubscribe, a message
//!   stream, health. [`MemoryHub`] connects nodes in one process; `crosswire-redis` connects
//!   nodes through Redis (its crate docs describe the channel layout and envelope format).
//! - **A cluster** is nodes sharing a broker: each node serves its own sockets and publishes
//!   what they cannot cover; unicasts go to the node holding the id; nodes announce themselves,
//!   so [`Server::nodes`] is the live node set and [`Server::request_server`] waits for exactly
//!   the nodes that are up; duplicates (e.g. from publishing on two Redis nodes) are dropped.
//!
//! # Layout
//! `server` (the handle, sending, life cycle), `server_events` (server-to-server events and
//! cluster queries), `socket` (a connection handle and the write
//! path), `connection` (the per-connection task), `registry` (ids and rooms), `events`
//! (handlers), `broker` (the seam and the in-process broker), `cluster` (envelopes over the
//! broker), `upgrade` (hyper/axum integration), `params` (query parsing).
#![warn(missing_docs)]

mod cluster;
mod config;
mod connection;
mod error;
mod events;
mod params;
mod registry;
mod server;
mod server_events;
mod socket;
mod upgrade;

pub use config::{ServerConfig, SlowClientPolicy};
pub use crosswire_core::{
    BoxFuture, Broker, BrokerError, BrokerHealth, BrokerMessage, MemoryBroker, MemoryHub,
};
pub use error::{ConfigError, EmitError, RequestError, SendError, ServeError, ServerEmitError};
pub use events::{Event, HandlerId, OwnedEvent, Payload, Reply, SystemEvent, SystemEventKind};
pub use params::{ParseOptions, RequestParams};
pub use registry::Match;
pub use server::{Emit, Server, Stats};
pub use server_events::{
    OwnedServerEvent, ServerEmitOptions, ServerEvent, ServerReplies, ServerReply, ServerResponse,
    ServerResults,
};
pub use socket::{set_flush_threads, Socket, SocketStats};
pub use upgrade::{UpgradeRejection, WsUpgrade};

/// Re-exported wire formats.
pub use crosswire_protocol as protocol;
/// Re-exported so applications can name raw JSON payloads.
pub use serde_json::value::RawValue;

/// Close codes crosswire uses or reserves.
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke RFC 6455.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// The socket's send queue was full (a client too slow to read).
    pub const SEND_QUEUE_FULL: u16 = 1008;
    /// A message larger than the configured maximum.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The client closed on purpose (seed clients' `manualClose`).
    pub const CLIENT_MANUAL: u16 = 4001;
    /// The client saw a heartbeat timeout.
    pub const CLIENT_HEARTBEAT_TIMEOUT: u16 = 4002;
    /// Application: forced logout (convention).
    pub const FORCED_LOGOUT: u16 = 4010;
    /// Application: authentication failed (convention).
    pub const AUTH_FAILED: u16 = 4011;
    /// The id was bound by a newer connection (a concurrent login). Default takeover code.
    pub const TAKEN_OVER: u16 = 4012;
}

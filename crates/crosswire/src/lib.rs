//! crosswire: WebSocket servers that behave as one across many nodes.
//!
//! A [`Server`] holds this node's sockets, binds them to cluster-unique ids, keeps rooms, and
//! sends to one id, a list of ids, a room or everyone. With a [`Broker`] it reaches the
//! sockets of every other node too. Clients speak the seed protocol: JSON text frames
//! `{"event", "payload", "callbackId"}`, an application heartbeat, and close codes 4001/4002.
//!
//! ```no_run
//! use crosswire::system::Connection;
//! use crosswire::{Ack, Data, Payload, Room, Server, ServerConfig, Socket};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Join {
//!     room: String,
//! }
//!
//! #[tokio::main]
//! async fn main() -> anyhow::Result<()> {
//!     let server = Server::new(ServerConfig::default())?;
//!     // Bind every socket to the `id` it connected with: ws://127.0.0.1:9000/?id=7
//!     server.on_system(|_: Connection, server: Server, socket: Socket| {
//!         match socket.query("id") {
//!             Some(id) => server.bind(id, &socket),
//!             None => socket.close(4011, "Auth failure"),
//!         }
//!     });
//!     // A typed payload; the return value answers the client's request.
//!     server.on("joinRoom", |server: Server, socket: Socket, Data(join): Data<Join>| {
//!         if let Some(id) = socket.id() {
//!             server.join(&Room::new("chat", join.room), &id);
//!         }
//!         Ack("joined")
//!     });
//!     // Forwarded as it came, never re-parsed; encoded once for every recipient.
//!     server.on("say", |server: Server, socket: Socket, payload: Payload| {
//!         let everyone = server.to_room(Room::new("chat", "1000"));
//!         let _ = everyone.except(socket.id()).emit_raw("say", payload.raw());
//!     });
//!     let addr = server.listen("127.0.0.1:9000").await?;
//!     println!("listening on {addr}");
//!     tokio::signal::ctrl_c().await?;
//!     server.shutdown().await;
//!     Ok(())
//! }
//! ```
//!
//! Handlers are plain functions, sync or `async`, whose arguments are extractors
//! ([`handler`]); system events have a type each ([`system`]); the upgrade request's
//! headers, the client's address and typed extensions stay on the [`Socket`].
//!
//! # How it works
//! - **One task per connection** ([`connection`](crate::Socket)) reads frames into a buffer
//!   shared by the thread's connections and dispatches them to handlers.
//! - **Encode once**: a send serialises the client frame once into [`bytes::Bytes`]; every
//!   local recipient and the broker share those bytes. With permessage-deflate on
//!   ([`PerMessageDeflate`]) the frame is compressed once too, and the compressed bytes are
//!   shared by every recipient that negotiated it.
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
//! Modules use only the ones below them (docs/ARCHITECTURE.md has the table): at the bottom
//! `events` (handler tables), `system` (system event types), `requests` (pending
//! server-to-server requests), `handshake` and `params` (the upgrade request); then `socket`
//! (a connection handle and the write path), `registry` (ids and rooms), `cluster`
//! (envelopes over the broker, talking up through a `Host` trait), `node` (the node's state,
//! [`Server`], [`handler::Context`]), `handler` (extractors, answers, dispatch), the features
//! `rooms`, `emit` and `server_events`, then `connection` and `upgrade`, and on top `server`
//! (builder, registration, life cycle). The broker seam lives in `crosswire-core`.
#![warn(missing_docs)]

mod ack;
mod client_requests;
mod cluster;
mod compression;
mod config;
mod connection;
mod emit;
mod error;
mod events;
pub mod handler;
mod handshake;
pub mod history;
mod inspect;
mod limits;
mod listener;
pub mod metrics;
mod node;
mod params;
mod presence;
mod registry;
mod requests;
mod rooms;
mod server;
mod server_events;
mod socket;
mod stats;
mod streams;
mod sync;
pub mod system;
mod timing;
mod tls;
mod upgrade;

pub use compression::PerMessageDeflate;
pub use config::{ServerConfig, SlowClientPolicy};
pub use crosswire_core::{
    BoxFuture, Broker, BrokerError, BrokerHealth, BrokerMessage, BrokerNodeStats,
    HistogramSnapshot, MemoryBroker, MemoryHub, Position, Retention,
};
pub use emit::{target, Emit};
pub use error::{
    ConfigError, EmitError, JoinError, RequestError, SendError, ServeError, ServerEmitError,
};
pub use events::{HandlerId, On};
pub use handler::{
    Ack, Data, EventName, Extension, ExtractError, FromContext, FromNode, Handler, IntoOutcome,
    Payload, Reply, State,
};
pub use handshake::HeaderRetention;
pub use history::{HistoryError, Recovery};
pub use inspect::{BrokerNodeSummary, Located, NodeSummary, RoomSize};
pub use ipnet::IpNet;
pub use limits::{RateLimit, RateLimitPolicy};
pub use node::Server;
pub use params::{ParseOptions, RequestParams};
pub use presence::PresenceEntry;
pub use registry::Match;
pub use requests::{ServerReplies, ServerResponse, ServerResults};
pub use rooms::Room;
pub use server::{ServerBuilder, Tagged};
pub use server_events::ServerEmitOptions;
pub use socket::{set_flush_threads, Socket, SocketInfo, SocketStats};
pub use stats::Stats;
pub use tls::{Tls, TlsError};
pub use upgrade::{UpgradeRejection, WsUpgrade};

/// Re-exported wire formats.
pub use crosswire_protocol as protocol;
/// Re-exported so applications can name raw JSON payloads.
pub use serde_json::value::RawValue;

pub mod close_code;

/// The README's examples, compiled as doc tests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

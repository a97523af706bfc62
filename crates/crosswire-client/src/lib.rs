//! Rust client for crosswire servers, and for any server speaking the seed framework's
//! protocol: JSON events over a WebSocket, an application heartbeat with latency, reconnect
//! with backoff, and events with replies and timeouts.
//!
//! ```no_run
//! use std::time::Duration;
//! use crosswire_client::{names, Client, ClientConfig, CloseInfo, EmitOptions};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::connect(
//!     ClientConfig::new("ws://127.0.0.1:9000").with_param("id", 16).with_param("name", "Sam"),
//! )?;
//!
//! let control = client.clone();
//! client.on(names::CLOSE, move |payload| {
//!     let Ok(close) = payload.parse::<CloseInfo>() else { return };
//!     match close.code {
//!         // Closed on purpose, logged out, kicked: stay closed.
//!         4001 | 4010..=4012 => control.manual_close(),
//!         _ => control.reconnect(false),
//!     }
//! });
//! client.on(names::PONG, |latency| tracing::info!(%latency, "latency (ms)"));
//! client.on("serverSay", |payload| tracing::info!(%payload, "server says"));
//!
//! client.wait_open(Duration::from_secs(5)).await?;
//! client.emit("joinRoom", &serde_json::json!({"roomId": "1000"}))?;
//! let response = client
//!     .request("say", &serde_json::json!({"msg": "hi"}), EmitOptions::new())
//!     .await;
//! println!("{}", serde_json::to_string(&response)?); // {"success":true,"data":...}
//! # Ok(()) }
//! ```
//!
//! # How it works
//!
//! [`Client::connect`] spawns one background task that owns the socket; every [`Client`]
//! clone talks to it through a channel. Its phases ([`ConnectionState`]):
//!
//! ```text
//!   Connecting ──ok──▶ Open ──server close──▶ Closed ──reconnect()──▶ Reconnecting
//!      │                │ error / pong timeout / reconnect()              │
//!      └──error──▶ Reconnecting (delay) ──▶ Connecting ◀──────────────────┘
//!                     └─ repeat limit reached ──▶ Closed
//!   any phase ──manual_close()──▶ ManuallyClosed (task ended)
//! ```
//!
//! The wire frames are those of `crosswire_protocol::frame`:
//!
//! - `emit` sends `{"event", "payload"}`; `request` and `emit_with_callback` add a
//!   `"callbackId"` and wait for the server's `{"callbackId", "payload"}`, firing `on_pending`
//!   after the pending timeout and failing with `CALLBACK_TIMEOUT` after the callback timeout.
//! - Server events `{"event", "payload"}` go to the handlers registered with
//!   [`Client::on`]; one that also carries an `"ackId"` is a request, answered by the handler
//!   of [`Client::on_request`] with `{"ackId", "payload"}`.
//! - Heartbeat: every `ping_interval` the client sends the `ping_message` as a text frame
//!   (`ping` event); the server echoes it and the round trip is the `pong` event's latency.
//!   No echo within `pong_timeout`: `pong-timeout`, close with 4002, reconnect.
//! - Reconnect: an `error` (connect failure, broken connection, heartbeat timeout) schedules
//!   attempts with the delays of [`reconnect_delay`], each announced by `reconnect
//!   {repeat, timeout}`, until `repeat-limit`. A close *from the server* does not reconnect:
//!   the application decides from the code and calls [`Client::reconnect`].
//! - [`Client::manual_close`] closes with 4001 and ends the task.
//!
//! Close codes: 4001 manual close, 4002 heartbeat timeout, 1006 (reported) connection lost
//! without a close frame, 4010 and up the application's.
//!
//! ## Rooms and recovery
//!
//! A server that keeps a room's history (docs/PROTOCOL.md, "History and recovery") marks
//! every event sent to it with its place in the room's *stream*: extra fields `"stream"`,
//! `"offset"` and `"epoch"`, read in the same pass as the rest of the frame. Handlers receive
//! such events as usual; [`Payload::stream`] and [`Payload::position`] tell where each sits.
//!
//! - The client keeps, per stream, the last [`Position`] `{offset, epoch}` seen in an event or
//!   a join reply, replacing it when the epoch differs or the offset is greater.
//! - [`Client::join`] sends `join {"room"}` (with `"since": {"offset", "epoch"}` once a
//!   position is known) as a request and returns the reply as [`Joined`] (`recovered`,
//!   `stream`, `position`); the room is remembered. [`Client::leave`] sends `leave {"room"}`
//!   and forgets it. [`Client::rooms`] and [`Client::position`] tell what is joined and
//!   where each stands. The event names are [`ClientConfig::join_event`] and
//!   [`ClientConfig::leave_event`] (`join`, `leave`).
//! - On every open after the first, the background task sends `join` again for each joined
//!   room, with its stream's position as `since`. The server replays what was missed, then
//!   replies; each outcome is reported as `rejoin` `{"room", "recovered", "stream",
//!   "offset", "epoch"}` ([`RejoinInfo`]), right after the replayed events, or as
//!   `rejoin-error` `{"room", "error"}` ([`RejoinErrorInfo`]). With `recovered: false`
//!   (first join, away too long, history lost) nothing was replayed: reload the room's state.
//! - Messages sent to the client's own id carry the stream `@<id>` when the server keeps
//!   their history. Once a position of it is known (from such a message, or from the
//!   server's `recovered` event after a connect), every reconnect dials with `offset` and
//!   `epoch` in the query; the server sends what was sent to the id meanwhile, then event
//!   `recovered` `{"stream", "offset", "epoch", "recovered"}`.
//!
//! # Layout
//!
//! - [`Client`] (`client.rs`): the handle, sending and handler registration.
//! - `connection.rs`: the background task.
//! - [`ClientConfig`] (`config.rs`), [`EmitOptions`] and [`Response`] (`request.rs`).
//! - [`ClientEvent`], [`Payload`], [`names`] (`event.rs`); errors in `error.rs`;
//!   [`reconnect_delay`] in `backoff.rs`.
//! - [`Position`], [`Joined`], the room bookkeeping (`rooms.rs`).
//!
//! `wss://` needs the `native-tls` or `rustls-tls-webpki-roots` feature.

#![warn(missing_docs)]

mod backoff;
mod client;
mod config;
mod connection;
mod error;
mod event;
mod position;
mod registry;
mod request;
mod rooms;

pub use backoff::reconnect_delay;
pub use client::Client;
pub use config::ClientConfig;
pub use connection::ConnectionState;
pub use error::{ConfigError, EmitError, ErrorCode, RequestError, RoomError, WaitError};
pub use event::{
    names, ClientEvent, CloseInfo, EventReceiver, Payload, ReconnectInfo, CLOSE_ABNORMAL,
    CLOSE_HEARTBEAT_TIMEOUT, CLOSE_MANUAL,
};
pub use position::{Joined, Position, RejoinErrorInfo, RejoinInfo};
pub use registry::HandlerId;
pub use request::{EmitOptions, Response};

//! The handler model: a handler is any function, synchronous or `async`, whose arguments are
//! extractors ([`FromContext`]) and whose return value says what to answer ([`IntoOutcome`]).
//!
//! ```
//! use crosswire::{Ack, Data, Extension, Server, ServerConfig, Socket};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Say { text: String }
//! #[derive(Clone)]
//! struct User { name: String }
//!
//! // Synchronous: runs inline on the connection's task.
//! fn say(socket: Socket, Data(say): Data<Say>, Extension(user): Extension<User>) {
//!     let _ = socket.emit("said", &format!("{}: {}", user.name, say.text));
//! }
//!
//! // Asynchronous: spawned; its `Ok` value answers the client's request.
//! async fn count(server: Server) -> Result<Ack<usize>, std::io::Error> {
//!     Ok(Ack(server.cluster_connection_count().await))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), crosswire::ConfigError> {
//! let server = Server::new(ServerConfig::default())?;
//! server.on("say", say);
//! server.on("count", count);
//! # Ok(()) }
//! ```
//!
//! Synchronous handlers run on the task that read the frame, with no spawn and no
//! allocation of their own; keep them short and non-blocking. `async` handlers are spawned,
//! one task per event. A handler is called only when every extractor succeeds; otherwise the
//! event is rejected: logged, counted, answered with an error when the client asked for a
//! reply, and (for client events) raised as a [`crate::system::SocketError`].

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::error::SendError;
use crate::events::Entry;
use crate::node::{ErasedHandler, Handlers, ReplyKind, ReplyTo, Server, Source};
use crate::socket::Socket;
use crate::system::SystemEvent;
use crate::timing::Timing;
use bytes::Bytes;
use crosswire_protocol::envelope::Body;
use crosswire_protocol::frame;

pub use crate::node::{Context, Reply};

impl<'a> Context<'a> {
    /// Takes the answer slot, turning it into an owned [`Reply`].
    pub fn take_reply(&mut self) -> Option<Reply> {
        if let Some(owned) = self.owned.take() {
            return Some(owned);
        }
        if self.taken {
            return None;
        }
        let reply = match self.reply {
            ReplyTo::None => return None,
            ReplyTo::Client {
                socket,
                callback_id,
            } => Reply(ReplyKind::Client {
                socket: socket.clone(),
                callback_id: callback_id.into(),
            }),
            ReplyTo::Server { node, request } => Reply(ReplyKind::Server {
                server: Arc::downgrade(&self.server.inner),
                to: Arc::from(node),
                request,
            }),
        };
        self.taken = true;
        Some(reply)
    }

    /// Answers with `value` when someone waits (without allocating a [`Reply`]).
    fn answer<T: Serialize + ?Sized>(&mut self, value: &T) {
        let result = if let Some(owned) = self.owned.take() {
            owned.send(value)
        } else if self.taken {
            return;
        } else {
            self.taken = true;
            match self.reply {
                ReplyTo::None => return,
                ReplyTo::Client {
                    socket,
                    callback_id,
                } => send_client_reply(socket, callback_id, value),
                ReplyTo::Server { node, request } => send_reply(self.server, node, request, value),
            }
        };
        if let Err(e) = result {
            tracing::debug!(event = self.event, error = %e, "could not send the answer");
        }
    }

    /// Answers with an error object `{"error": message, "code": code}`.
    fn answer_error(&mut self, message: &str, code: &str) {
        if self.wants_reply() {
            self.answer(&ErrorAnswer {
                error: message,
                code,
            });
        }
    }

    /// An extractor failed: the handler is not called.
    pub(crate) fn reject(mut self, error: ExtractError) {
        // The handler never runs, so a `Reply` an earlier extractor took is dropped unused:
        // the error answers through the slot as the frame gave it.
        self.taken = false;
        let message = error.to_string();
        tracing::debug!(event = self.event, error = %message, "event rejected");
        self.server
            .inner
            .stats
            .rejected_events
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.answer_error(&message, error.code());
        if let (Source::Client, Some(socket)) = (self.source, self.socket) {
            self.server.emit_system(
                &crate::system::SocketError {
                    error: message.clone(),
                },
                Some(socket),
            );
        }
    }

    /// The handler returned an error.
    fn fail(&mut self, error: &dyn fmt::Display) {
        let message = error.to_string();
        tracing::warn!(event = self.event, error = %message, "handler failed");
        self.answer_error(&message, "handler_error");
    }

    /// An owned copy of what answering and error reporting need, for a spawned handler.
    fn into_owned(mut self) -> OwnedContext {
        OwnedContext {
            reply: self.take_reply(),
            server: self.server.clone(),
            source: self.source,
            event: self.event.into(),
            socket: self.socket.cloned(),
        }
    }
}

#[derive(Serialize)]
struct ErrorAnswer<'a> {
    error: &'a str,
    code: &'a str,
}

fn send_client_reply<T: Serialize + ?Sized>(
    socket: &Socket,
    callback_id: &str,
    value: &T,
) -> Result<(), SendError> {
    let frame = frame::encode_reply(callback_id, value).map_err(|_| SendError::Encode)?;
    socket.send_frame(frame)
}

/// Sends the answer to request `request` of node `to`: in-process when `to` is this node.
pub(crate) fn send_reply<T: Serialize + ?Sized>(
    server: &Server,
    to: &str,
    request: u64,
    payload: &T,
) -> Result<(), SendError> {
    let payload = Bytes::from(serde_json::to_vec(payload).map_err(|_| SendError::Encode)?);
    if to == server.node_name() {
        server.inner.requests.resolve(request, to, payload);
        return Ok(());
    }
    if let Some(cluster) = &server.inner.cluster {
        let channel = cluster.channels.s2s_node(to);
        cluster.publish(
            channel,
            Body::ServerReply {
                request,
                to: to.to_string(),
                payload,
            },
        );
    }
    Ok(())
}

/// What a spawned handler keeps of its [`Context`] to answer when it is done.
pub(crate) struct OwnedContext {
    server: Server,
    source: Source,
    event: Box<str>,
    socket: Option<Socket>,
    reply: Option<Reply>,
}

impl OwnedContext {
    fn finish(&mut self, outcome: impl IntoOutcome) {
        let mut cx = Context {
            server: &self.server,
            source: self.source,
            event: &self.event,
            payload: RawValue::NULL,
            socket: self.socket.as_ref(),
            origin: None,
            system: None,
            reply: ReplyTo::None,
            taken: false,
            owned: self.reply.take(),
            timer: None,
        };
        outcome.respond(&mut cx);
    }
}

// ----- answers -----

impl Reply {
    /// The client's callback id (client requests only).
    pub fn callback_id(&self) -> Option<&str> {
        match &self.0 {
            ReplyKind::Client { callback_id, .. } => Some(callback_id),
            ReplyKind::Server { .. } => None,
        }
    }

    /// The node waiting for the answer (server-to-server requests only).
    pub fn to_node(&self) -> Option<&str> {
        match &self.0 {
            ReplyKind::Client { .. } => None,
            ReplyKind::Server { to, .. } => Some(to),
        }
    }

    /// Sends the answer: `{"callbackId": …, "payload": <payload>}` to a client, or the
    /// payload to the requesting node.
    pub fn send<T: Serialize + ?Sized>(self, payload: &T) -> Result<(), SendError> {
        match self.0 {
            ReplyKind::Client {
                socket,
                callback_id,
            } => send_client_reply(&socket, &callback_id, payload),
            ReplyKind::Server {
                server,
                to,
                request,
            } => {
                let inner = server.upgrade().ok_or(SendError::Closed)?;
                send_reply(&Server { inner }, &to, request, payload)
            }
        }
    }

    /// Sends an answer that is already JSON text.
    pub fn send_raw(self, payload: &RawValue) -> Result<(), SendError> {
        self.send(payload)
    }
}

/// A handler's answer: returned from a handler (or inside its `Ok`), `Ack(value)` answers
/// the request with `value` when the client (or node) asked for an answer, and does nothing
/// otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ack<T>(pub T);

/// What a handler returns: `()`, [`Ack`], or a `Result` of either whose error is displayable.
///
/// - `()`: nothing more happens.
/// - `Ack(value)`: `value` answers the request, if one waits.
/// - `Err(e)`: logged with the event name, and answered with
///   `{"error": "<e>", "code": "handler_error"}` if a request waits and the handler did not
///   take its [`Reply`].
pub trait IntoOutcome {
    #[doc(hidden)]
    fn respond(self, cx: &mut Context<'_>);
}

impl IntoOutcome for () {
    fn respond(self, _: &mut Context<'_>) {}
}

impl<T: Serialize> IntoOutcome for Ack<T> {
    fn respond(self, cx: &mut Context<'_>) {
        cx.answer(&self.0);
    }
}

impl<T: IntoOutcome, E: fmt::Display> IntoOutcome for Result<T, E> {
    fn respond(self, cx: &mut Context<'_>) {
        match self {
            Ok(outcome) => outcome.respond(cx),
            Err(e) => cx.fail(&e),
        }
    }
}

// ----- extraction -----

/// Why an extractor could not produce its value; the handler is not called.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExtractError {
    /// The payload does not fit the handler's [`Data`] type. The client is answered with
    /// `{"error": …, "code": "invalid_payload"}`; fix the client or loosen the type.
    #[error("invalid payload: {0}")]
    InvalidPayload(#[source] serde_json::Error),
    /// The handler asked for a [`Reply`] but nobody waits for an answer; take
    /// `Option<Reply>` when requests may come without one.
    #[error("no answer was asked for")]
    NoReply,
    /// The handler asked for a [`Socket`] on an event that has none (a server-to-server or
    /// node-wide system event).
    #[error("this event has no socket")]
    NoSocket,
    /// [`State`] of this type was not given to [`crate::ServerBuilder::state`].
    #[error("no state of type {0}")]
    MissingState(&'static str),
    /// The socket has no [`Extension`] of this type; insert it in [`crate::WsUpgrade`] or a
    /// connection handler, or take `Option<Extension<T>>`.
    #[error("no socket extension of type {0}")]
    MissingExtension(&'static str),
    /// The handler asked for a value that this kind of event does not carry (e.g.
    /// [`FromNode`] on a client event, or another system event's type).
    #[error("this event does not carry a {0}")]
    Unavailable(&'static str),
}

impl ExtractError {
    /// The `code` of the error answer.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidPayload(_) => "invalid_payload",
            _ => "unavailable",
        }
    }
}

/// A value a handler can take as an argument, read from the event's [`Context`].
pub trait FromContext: Sized {
    /// Produces the value, or says why not (the handler is then not called).
    fn from_context(cx: &mut Context<'_>) -> Result<Self, ExtractError>;
}

impl FromContext for Socket {
    fn from_context(cx: &mut Context<'_>) -> Result<Self, ExtractError> {
        cx.socket.cloned().ok_or(ExtractError::NoSocket)
    }
}

impl FromContext for Server {
    fn from_context(cx: &mut Context<'_>) -> Result<Self, ExtractError> {
        Ok(cx.server.clone())
    }
}

impl FromContext for Reply {
    fn from_context(cx: &mut Context<'_>) -> Result<Self, ExtractError> {
        cx.take_reply().ok_or(ExtractError::NoReply)
    }
}

impl<T: FromContext> FromContext for Option<T> {
    fn from_context(cx: &mut Context<'_>) -> Result<Self, ExtractError> {
        Ok(T::from_context(cx).ok())
    }
}

impl<T: FromContext> FromContext for Result<T, ExtractError> {
    fn from_context(cx: &mut Context<'_>) -> Result<Self, ExtractError> {
        Ok(T::from_context(cx))
    }
}

/// The payload, deserialised into `T` (serde). A payload that does not fit rejects the
/// event ([`ExtractError::InvalidPayload`]); take `Result<Data<T>, ExtractError>` to handle
/// that yourself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Data<T>(pub T);

impl<T: DeserializeOwned> FromContext for Data<T> {
    fn from_context(cx: &mut Context<'_>) -> Result<Self, ExtractError> {
        serde_json::from_str(cx.payload.get())
            .map(Data)
            .map_err(ExtractError::InvalidPayload)
    }
}

/// The payload as raw JSON, never parsed (forward it with
/// [`crate::Emit::emit_raw`] or answer with it).
#[derive(Debug, Clone)]
pub struct Payload(Box<RawValue>);

impl Payload {
    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The raw JSON.
    pub fn raw(&self) -> &RawValue {
        &self.0
    }

    /// The raw JSON, owned.
    pub fn into_raw(self) -> Box<RawValue> {
        self.0
    }

    /// Deserialises it, borrowing where `T` allows.
    pub fn parse<'a, T: serde::Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl FromContext for Payload {
    fn from_context(cx: &mut Context<'_>) -> Result<Self, ExtractError> {
        Ok(Payload(cx.payload.to_owned()))
    }
}

/// Application state of type `S`, given once to [`crate::ServerBuilder::state`]. Cloned per
/// event: keep it an `Arc` or a handle.
#[derive(Debug, Clone, Copy, Default)]
pub struct State<S>(pub S);

impl<S: Clone + Send + Sync + 'static> FromContext for State<S> {
    fn from_context(cx: &mut Context<'_>) -> Result<Self, ExtractError> {
        cx.server
            .inner
            .state
            .get::<S>()
            .cloned()
            .map(State)
            .ok_or(ExtractError::MissingState(std::any::type_name::<S>()))
    }
}

/// A value of type `T` from the socket's extensions ([`Socket::insert_extension`], or
/// [`crate::WsUpgrade::insert_extension`] before the upgrade), cloned.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extension<T>(pub T);

impl<T: Clone + Send + Sync + 'static> FromContext for Extension<T> {
    fn from_context(cx: &mut Context<'_>) -> Result<Self, ExtractError> {
        let socket = cx.socket.ok_or(ExtractError::NoSocket)?;
        socket
            .extension::<T>()
            .map(Extension)
            .ok_or(ExtractError::MissingExtension(std::any::type_name::<T>()))
    }
}

/// The node that sent a server-to-server event (this node's own name when it emitted to
/// itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromNode(pub String);

impl FromContext for FromNode {
    fn from_context(cx: &mut Context<'_>) -> Result<Self, ExtractError> {
        cx.origin
            .map(|o| FromNode(o.to_string()))
            .ok_or(ExtractError::Unavailable("sending node"))
    }
}

/// The name of the event being handled (useful for one handler serving several events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventName(pub String);

impl FromContext for EventName {
    fn from_context(cx: &mut Context<'_>) -> Result<Self, ExtractError> {
        Ok(EventName(cx.event.to_string()))
    }
}

// ----- system events -----

impl<E: SystemEvent> FromContext for E {
    fn from_context(cx: &mut Context<'_>) -> Result<Self, ExtractError> {
        cx.system
            .and_then(|value| value.downcast_ref::<E>())
            .cloned()
            .ok_or(ExtractError::Unavailable(E::NAME))
    }
}

impl Server {
    /// Runs the handlers of a system event.
    pub(crate) fn emit_system<E: SystemEvent>(&self, event: &E, socket: Option<&Socket>) {
        if let Some(list) = self.inner.system.get(E::NAME) {
            let cx = Context::system(self, E::NAME, event, socket);
            dispatch(&self.inner.system, &list, cx);
        }
    }
}

// ----- handlers -----

/// Markers that tell synchronous and asynchronous handlers apart.
#[doc(hidden)]
pub mod marker {
    /// A synchronous handler.
    #[derive(Debug)]
    pub struct Inline;
    /// An `async` handler.
    #[derive(Debug)]
    pub struct Spawned;
}

/// A function that handles events: sync or `async`, with up to eight [`FromContext`]
/// arguments, returning something [`IntoOutcome`]. Implemented for every such function and
/// closure; `M` only tells the implementations apart.
pub trait Handler<M>: Send + Sync + 'static {
    /// The type of the first argument (`()` for a handler with none). A system-event handler
    /// takes the event as its first argument, which selects the event it handles.
    type First;

    #[doc(hidden)]
    fn call(&self, cx: Context<'_>);
}

pub(crate) fn erase<M, H: Handler<M>>(handler: H) -> Arc<ErasedHandler> {
    Arc::new(move |cx: Context<'_>| handler.call(cx))
}

/// Calls the handlers of one event in `list` (from `table`): the first one gets the reply
/// slot, the others the same event without it (each event is answered once).
pub(crate) fn dispatch<'a>(
    table: &Handlers,
    list: &'a [Arc<Entry<ErasedHandler>>],
    cx: Context<'a>,
) {
    let mut cx = Some(cx);
    table.run(list, |entry| {
        if let Some(mut first) = cx.take() {
            cx = Some(first.without_reply());
            first.timer = entry.timer.as_ref();
            call_guarded(&*entry.handler, first);
        }
    });
}

/// Runs one handler, catching a panic: logged with the event name, counted, and the socket
/// it ran for (if any) closed with 1011 and cleaned up as at any close.
pub(crate) fn call_guarded(handler: &ErasedHandler, cx: Context<'_>) {
    // Borrowed, not cloned: the context's references outlive the call.
    let (server, socket, event) = (cx.server, cx.socket, cx.event);
    if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| handler(cx))) {
        handler_panicked(server, socket, event, panic.as_ref());
    }
}

pub(crate) fn handler_panicked(
    server: &Server,
    socket: Option<&Socket>,
    event: &str,
    panic: &(dyn Any + Send),
) {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string());
    tracing::error!(event, panic = %message, conn = socket.map(|s| s.conn_id()), "handler panicked");
    server
        .inner
        .stats
        .handler_panics
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Some(socket) = socket {
        socket.close(crate::close_code::INTERNAL_ERROR, "internal error");
    }
}

macro_rules! first_type {
    () => {
        ()
    };
    ($first:ident $(, $rest:ident)*) => {
        $first
    };
}

/// Runs each argument's extractor in order; the first that fails rejects the event.
macro_rules! extract {
    ($cx:ident, $($arg:ident),*) => {
        $(
            let $arg = match $arg::from_context(&mut $cx) {
                Ok(value) => value,
                Err(e) => return $cx.reject(e),
            };
        )*
    };
}

macro_rules! impl_handler {
    ($($arg:ident),*) => {
        impl<F, R, $($arg,)*> Handler<(marker::Inline, R, $($arg,)*)> for F
        where
            F: Fn($($arg,)*) -> R + Send + Sync + 'static,
            R: IntoOutcome,
            $($arg: FromContext,)*
        {
            type First = first_type!($($arg),*);

            #[allow(non_snake_case, unused_mut)]
            fn call(&self, mut cx: Context<'_>) {
                let timing = cx.timer.map(Timing::start);
                extract!(cx, $($arg),*);
                self($($arg,)*).respond(&mut cx);
                if let Some(timing) = timing {
                    timing.finish();
                }
            }
        }

        impl<F, Fut, $($arg,)*> Handler<(marker::Spawned, Fut, $($arg,)*)> for F
        where
            F: Fn($($arg,)*) -> Fut + Send + Sync + 'static,
            Fut: Future + Send + 'static,
            Fut::Output: IntoOutcome,
            $($arg: FromContext + Send + 'static,)*
        {
            type First = first_type!($($arg),*);

            #[allow(non_snake_case, unused_mut)]
            fn call(&self, mut cx: Context<'_>) {
                let timing = cx.timer.map(|h| Timing::start(Arc::clone(h)));
                extract!(cx, $($arg),*);
                let future = self($($arg,)*);
                let mut owned = cx.into_owned();
                tokio::spawn(async move {
                    match AssertUnwindSafe(future).catch_unwind().await {
                        Ok(outcome) => owned.finish(outcome),
                        Err(panic) => handler_panicked(
                            &owned.server,
                            owned.socket.as_ref(),
                            &owned.event,
                            panic.as_ref(),
                        ),
                    }
                    if let Some(timing) = timing {
                        timing.finish();
                    }
                });
            }
        }
    };
}

impl_handler!();
impl_handler!(T1);
impl_handler!(T1, T2);
impl_handler!(T1, T2, T3);
impl_handler!(T1, T2, T3, T4);
impl_handler!(T1, T2, T3, T4, T5);
impl_handler!(T1, T2, T3, T4, T5, T6);
impl_handler!(T1, T2, T3, T4, T5, T6, T7);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8);

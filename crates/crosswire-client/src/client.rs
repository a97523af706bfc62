//! The [`Client`] handle.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crosswire_protocol::frame::encode_client_event;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, Instrument};

use crate::config::ClientConfig;
use crate::connection::{Command, ConnectionState, Driver, ReplyHook, Shared};
use crate::error::{ConfigError, EmitError, ErrorCode, RequestError, RoomError, WaitError};
use crate::event::{EventReceiver, Payload};
use crate::position::{Joined, Position};
use crate::registry::{AckFuture, HandlerId};
use crate::request::{EmitOptions, Response};
use crate::rooms::{parse_join_reply, parse_leave_reply, JoinRequest, LeaveRequest};

/// A connection to a crosswire (or seed-protocol) server that keeps itself alive.
///
/// Cheap to clone: every clone drives the same background task, which owns the socket. The
/// task ends with [`manual_close`](Self::manual_close), or when the last handle is dropped.
/// A handler that captures a `Client` keeps it alive: call `manual_close` to end it.
///
/// Handlers run on the background task, in order, and should return quickly: spawn a task for
/// slow work.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    _last_handle: Arc<CloseOnDrop>,
}

/// Closes the client when the last handle goes away.
struct CloseOnDrop(mpsc::UnboundedSender<Command>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(Command::ManualClose);
    }
}

/// Removes a request's pending entry however its wait ends (reply, timeout, dropped, or never
/// started).
struct PendingGuard {
    shared: Arc<Shared>,
    id: String,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.shared.remove_pending(&self.id);
    }
}

/// A request sent and waiting for its reply.
struct Sent {
    _guard: PendingGuard,
    reply: oneshot::Receiver<Payload>,
    event: String,
    callback_timeout: Duration,
    pending_timeout: Duration,
    on_pending: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl Client {
    /// Starts connecting to `config.url` in the background and returns at once.
    ///
    /// The `open` event (or [`wait_open`](Self::wait_open)) tells when the connection is up.
    /// Must be called from within a Tokio runtime.
    pub fn connect(config: ClientConfig) -> Result<Client, ConfigError> {
        Self::connect_with(config, |_| {})
    }

    /// Like [`connect`](Self::connect), with `setup` run on the client before it starts
    /// connecting: handlers registered there see every event, the first `open` included
    /// (after `connect`, a fast server can open the connection before the next line runs).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), crosswire_client::ConfigError> {
    /// use crosswire_client::{names, Client, ClientConfig};
    /// let client = Client::connect_with(ClientConfig::new("ws://127.0.0.1:9000"), |client| {
    ///     client.on(names::OPEN, |_| println!("connected"));
    /// })?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn connect_with(
        config: ClientConfig,
        setup: impl FnOnce(&Client),
    ) -> Result<Client, ConfigError> {
        let url = config.connect_url()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ConfigError::NoRuntime)?;
        let (shared, commands) = Shared::new(config, url, runtime.clone());
        let client = Client {
            _last_handle: Arc::new(CloseOnDrop(shared.commands.clone())),
            shared,
        };
        setup(&client);
        let span = tracing::info_span!("crosswire_client", url = %client.shared.url);
        runtime.spawn(
            Driver::new(client.shared.clone(), commands)
                .run()
                .instrument(span),
        );
        Ok(client)
    }

    /// The options this client was started with.
    pub fn config(&self) -> &ClientConfig {
        &self.shared.config
    }

    /// The URL dialled, custom parameters included.
    pub fn url(&self) -> &str {
        &self.shared.url
    }

    /// Where the connection is now.
    pub fn state(&self) -> ConnectionState {
        self.shared.state()
    }

    /// Whether the connection is open.
    pub fn is_open(&self) -> bool {
        self.state() == ConnectionState::Open
    }

    /// Whether a reconnect is scheduled or in progress.
    pub fn reconnecting(&self) -> bool {
        self.shared.reconnecting()
    }

    /// Waits until the connection is open, at most `timeout`.
    pub async fn wait_open(&self, timeout: Duration) -> Result<(), WaitError> {
        let mut state = self.shared.watch_state();
        let reached = tokio::time::timeout(
            timeout,
            state
                .wait_for(|s| matches!(s, ConnectionState::Open | ConnectionState::ManuallyClosed)),
        )
        .await
        .map_err(|_| WaitError::Timeout(timeout))?;
        match reached.map(|s| *s) {
            Ok(ConnectionState::Open) => Ok(()),
            _ => Err(WaitError::Closed),
        }
    }

    // ----- handlers -----

    /// Calls `handler` with the payload of every `event` (a built-in name from
    /// [`names`](crate::names) or an application event). Returns a handle for [`off`](Self::off).
    ///
    /// ```no_run
    /// # async fn demo(client: crosswire_client::Client) {
    /// #[derive(serde::Deserialize)]
    /// struct Say { msg: String }
    ///
    /// client.on("say", |payload| {
    ///     if let Ok(say) = payload.parse::<Say>() {
    ///         tracing::info!(msg = %say.msg, "server says");
    ///     }
    /// });
    /// # }
    /// ```
    pub fn on<F>(&self, event: &str, handler: F) -> HandlerId
    where
        F: Fn(&Payload) + Send + Sync + 'static,
    {
        self.shared
            .registry()
            .add(event, None, false, Arc::new(handler))
    }

    /// Like [`on`](Self::on), but the handler is removed after its first call.
    pub fn once<F>(&self, event: &str, handler: F) -> HandlerId
    where
        F: Fn(&Payload) + Send + Sync + 'static,
    {
        self.shared
            .registry()
            .add(event, None, true, Arc::new(handler))
    }

    /// Like [`on`](Self::on), with a tag that [`off_tag`](Self::off_tag) removes in one go
    /// (e.g. everything a screen registered).
    pub fn on_tagged<F>(&self, tag: &str, event: &str, handler: F) -> HandlerId
    where
        F: Fn(&Payload) + Send + Sync + 'static,
    {
        self.shared
            .registry()
            .add(event, Some(tag), false, Arc::new(handler))
    }

    /// Like [`once`](Self::once), with a tag (see [`on_tagged`](Self::on_tagged)).
    pub fn once_tagged<F>(&self, tag: &str, event: &str, handler: F) -> HandlerId
    where
        F: Fn(&Payload) + Send + Sync + 'static,
    {
        self.shared
            .registry()
            .add(event, Some(tag), true, Arc::new(handler))
    }

    /// Removes one handler. Returns whether it was still registered.
    pub fn off(&self, id: HandlerId) -> bool {
        self.shared.registry().remove(id)
    }

    /// Removes every handler registered with `tag`. Returns how many were removed.
    pub fn off_tag(&self, tag: &str) -> usize {
        self.shared.registry().remove_tag(tag)
    }

    /// Removes every handler of `event`. Returns how many were removed.
    pub fn off_event(&self, event: &str) -> usize {
        self.shared.registry().remove_event(event)
    }

    /// Answers the server's requests named `event` (events carrying an `ackId`): the value
    /// `handler`'s future resolves to is sent back as `{"ackId": ..., "payload": <value>}`.
    /// Replaces an earlier request handler of the same event. [`on`](Self::on) handlers
    /// of `event` still see every such request.
    ///
    /// ```no_run
    /// # async fn demo(client: crosswire_client::Client) {
    /// client.on_request("whoami", |_payload| async move {
    ///     serde_json::json!({ "name": "Sam" })
    /// });
    /// # }
    /// ```
    pub fn on_request<F, Fut, R>(&self, event: &str, handler: F)
    where
        F: Fn(Payload) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: Serialize + 'static,
    {
        let handler = move |payload: Payload| -> AckFuture {
            let answer = handler(payload);
            Box::pin(async move { Payload::from_value(&answer.await) })
        };
        self.shared.registry().set_request(event, Arc::new(handler));
    }

    /// Like [`on_request`](Self::on_request), with a synchronous handler.
    pub fn on_request_sync<F, R>(&self, event: &str, handler: F)
    where
        F: Fn(Payload) -> R + Send + Sync + 'static,
        R: Serialize + 'static,
    {
        let handler = move |payload: Payload| -> AckFuture {
            let answer = Payload::from_value(&handler(payload));
            Box::pin(std::future::ready(answer))
        };
        self.shared.registry().set_request(event, Arc::new(handler));
    }

    /// Stops answering requests named `event`. Returns whether a handler was registered.
    pub fn off_request(&self, event: &str) -> bool {
        self.shared.registry().remove_request(event)
    }

    /// Every event from now on, as [`ClientEvent`](crate::ClientEvent)s; ends after
    /// [`manual_close`](Self::manual_close).
    pub fn events(&self) -> EventReceiver {
        EventReceiver {
            rx: self.shared.subscribe(),
        }
    }

    // ----- sending -----

    /// Sends `event` with `data`, expecting no reply.
    ///
    /// Fails with [`EmitError::NotOpen`] unless the connection is open; nothing is queued
    /// for later. The frame is handed to the background task, which writes frames in order;
    /// if the connection breaks before it is written, it is dropped.
    pub fn emit<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> Result<(), EmitError> {
        if !self.is_open() {
            return Err(EmitError::NotOpen);
        }
        let text = encode_client_event(event, data, None)?;
        self.send(text).map_err(|_| EmitError::NotOpen)
    }

    fn send(&self, text: String) -> Result<(), mpsc::error::SendError<Command>> {
        self.shared.commands.send(Command::Send {
            text,
            generation: None,
        })
    }

    /// Checks the connection, encodes and sends a request, and registers its reply (and the
    /// hook to run on the background task when it arrives).
    fn start_request<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
        options: EmitOptions,
        on_reply: Option<ReplyHook>,
    ) -> Result<Sent, RequestError> {
        if !self.is_open() {
            return Err(RequestError::new(
                ErrorCode::WsNotOpen,
                "WebSocket is not open",
            ));
        }
        let (id, reply) = self.shared.add_pending(on_reply);
        let guard = PendingGuard {
            shared: self.shared.clone(),
            id,
        };
        let text = encode_client_event(event, data, Some(&guard.id))
            .map_err(|e| RequestError::new(ErrorCode::EncodeError, e.to_string()))?;
        if self.send(text).is_err() {
            return Err(RequestError::new(
                ErrorCode::WsNotOpen,
                "WebSocket is not open",
            ));
        }
        let config = &self.shared.config;
        Ok(Sent {
            _guard: guard,
            reply,
            event: event.to_string(),
            callback_timeout: options.callback_timeout.unwrap_or(config.callback_timeout),
            pending_timeout: options.pending_timeout.unwrap_or(config.pending_timeout),
            on_pending: options.on_pending,
        })
    }

    async fn await_reply(sent: Sent) -> Result<Payload, RequestError> {
        let Sent {
            _guard,
            mut reply,
            event,
            callback_timeout,
            pending_timeout,
            on_pending,
        } = sent;
        let deadline = tokio::time::sleep(callback_timeout);
        let pending = tokio::time::sleep(pending_timeout);
        tokio::pin!(deadline, pending);
        let mut pending_done = on_pending.is_none();
        loop {
            tokio::select! {
                biased;
                result = &mut reply => {
                    return result.map_err(|_| RequestError::new(
                        ErrorCode::WsNotOpen,
                        "client closed before the reply came",
                    ));
                }
                () = &mut deadline => {
                    debug!(%event, "request timed out");
                    return Err(RequestError::new(
                        ErrorCode::CallbackTimeout,
                        format!("no reply to `{event}` within {} ms", callback_timeout.as_millis()),
                    ));
                }
                () = &mut pending, if !pending_done => {
                    pending_done = true;
                    if let Some(hook) = &on_pending {
                        hook();
                    }
                }
            }
        }
    }

    /// Sends `event` and calls `callback` with the server's reply, or with the error
    /// (`WS_NOT_OPEN` at once, `CALLBACK_TIMEOUT` after the callback timeout). The seed's
    /// `emit(event, data, callback, options)`.
    ///
    /// The callback runs on a task spawned on the client's runtime (so this works from any
    /// thread), except for errors detected before sending
    /// (`WS_NOT_OPEN`, `ENCODE_ERROR`), which call it before this method returns.
    pub fn emit_with_callback<T, F>(&self, event: &str, data: &T, options: EmitOptions, callback: F)
    where
        T: Serialize + ?Sized,
        F: FnOnce(Result<Payload, RequestError>) + Send + 'static,
    {
        match self.start_request(event, data, options, None) {
            Err(e) => callback(Err(e)),
            Ok(sent) => {
                self.shared.runtime.spawn(async move {
                    let result = Self::await_reply(sent).await;
                    callback(result);
                });
            }
        }
    }

    /// Sends `event` and waits for the reply: the seed's `emitWithPromise`. Never fails
    /// outright; the [`Response`] says whether a reply came.
    ///
    /// ```no_run
    /// # async fn demo(client: crosswire_client::Client) {
    /// use crosswire_client::{EmitOptions, ErrorCode};
    ///
    /// let response = client
    ///     .request("say", &serde_json::json!({"msg": "hi"}), EmitOptions::new())
    ///     .await;
    /// match response.error_code() {
    ///     None => tracing::info!(reply = ?response.data(), "replied"),
    ///     Some(ErrorCode::CallbackTimeout) => tracing::warn!("too slow"),
    ///     Some(code) => tracing::warn!(%code, "failed"),
    /// }
    /// # }
    /// ```
    pub async fn request<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
        options: EmitOptions,
    ) -> Response {
        let result = match self.start_request(event, data, options, None) {
            Ok(sent) => Self::await_reply(sent).await,
            Err(e) => Err(e),
        };
        Response::from_result(result)
    }

    /// Like [`request`](Self::request), deserialising the reply into `R`; a reply that does
    /// not fit is a failure with [`ErrorCode::InvalidReply`].
    pub async fn request_as<R: DeserializeOwned, T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
        options: EmitOptions,
    ) -> Response<R> {
        self.request(event, data, options).await.parse()
    }

    // ----- rooms -----

    /// Joins `room`, with message recovery when the server keeps the room's history: sends
    /// the [`join_event`](ClientConfig::join_event) `{"room": room}`, plus `"since":
    /// {"offset", "epoch"}` when a position of the room's stream is known (a join again), and
    /// waits for the reply (the client's callback timeout).
    ///
    /// The request is sent at once; the future only waits for the reply. On
    /// `{"ok": true, ...}` the room counts as joined: its stream and position are recorded
    /// (before the future resolves, in the order replies arrive), [`rooms`](Self::rooms)
    /// lists it, and every reconnect joins it again, reporting `rejoin` or `rejoin-error`
    /// ([`names::REJOIN`](crate::names::REJOIN)). Dropping the future before the reply
    /// forgets the request: the room is then not recorded.
    ///
    /// Errors: [`RoomError::Refused`] for `{"ok": false, "error"}`; [`RoomError::Request`]
    /// when not open, without a reply in time, or for a reply of another shape. A join in
    /// flight when the connection breaks gets no reply (it times out); join again after the
    /// `open`.
    ///
    /// ```no_run
    /// # async fn demo(client: crosswire_client::Client) -> Result<(), crosswire_client::RoomError> {
    /// use crosswire_client::names;
    ///
    /// client.on(names::REJOIN, |payload| {
    ///     if payload.value()["recovered"] == false {
    ///         // Missed messages are gone: reload the room's state.
    ///     }
    /// });
    /// let joined = client.join("lobby").await?;
    /// tracing::info!(stream = ?joined.stream, position = ?joined.position, "joined");
    /// # Ok(()) }
    /// ```
    pub fn join(
        &self,
        room: &str,
    ) -> impl Future<Output = Result<Joined, RoomError>> + Send + 'static {
        let since = self.shared.rooms().position(room);
        let request = JoinRequest {
            room,
            since: since.as_ref(),
        };
        let joined_room = room.to_string();
        let hook: ReplyHook = Box::new(move |shared, reply| {
            if let Ok(joined) = parse_join_reply(&shared.config.join_event, reply) {
                shared.rooms().joined(&joined_room, &joined);
            }
        });
        let event = &self.shared.config.join_event;
        let started = self.start_request(event, &request, EmitOptions::new(), Some(hook));
        let event = event.clone();
        async move {
            let reply = Self::await_reply(started?).await?;
            parse_join_reply(&event, &reply)
        }
    }

    /// Leaves `room`: forgets it and its stream's position at once (so no reconnect joins it
    /// again), sends the [`leave_event`](ClientConfig::leave_event) `{"room": room}` and waits
    /// for the reply, `{"ok": true}`. The errors are those of [`join`](Self::join); the room
    /// is forgotten regardless.
    pub fn leave(
        &self,
        room: &str,
    ) -> impl Future<Output = Result<(), RoomError>> + Send + 'static {
        self.shared.rooms().leave(room);
        let left_room = room.to_string();
        // Again when the reply comes, in case a join's reply came in between.
        let hook: ReplyHook = Box::new(move |shared, _| shared.rooms().leave(&left_room));
        let event = &self.shared.config.leave_event;
        let started = self.start_request(
            event,
            &LeaveRequest { room },
            EmitOptions::new(),
            Some(hook),
        );
        let event = event.clone();
        async move {
            let reply = Self::await_reply(started?).await?;
            parse_leave_reply(&event, &reply)
        }
    }

    /// The last position seen of joined `room`'s stream, in an event or a join reply; `None`
    /// for a room not joined or without history. This is what the next rejoin sends as
    /// `since`.
    pub fn position(&self, room: &str) -> Option<Position> {
        self.shared.rooms().position(room)
    }

    /// The rooms joined with [`join`](Self::join) and not left, sorted.
    pub fn rooms(&self) -> Vec<String> {
        self.shared.rooms().rooms()
    }

    // ----- connection control -----

    /// The current heartbeat interval (`Duration::ZERO`: heartbeat off).
    pub fn ping_interval(&self) -> Duration {
        self.shared.ping_interval()
    }

    /// Changes the heartbeat interval; with `immediate`, a heartbeat is sent right away
    /// (when open). `Duration::ZERO` turns the heartbeat off.
    pub fn set_ping_interval(&self, interval: Duration, immediate: bool) {
        self.shared.set_ping_interval(interval);
        let _ = self
            .shared
            .commands
            .send(Command::PingIntervalChanged { immediate });
    }

    /// Starts reconnecting by hand, e.g. from a `close` handler for codes that deserve it
    /// (a close from the server never reconnects by itself).
    ///
    /// The attempt waits its scheduled delay and emits `reconnect` first. With
    /// `reset_count`, the attempt count restarts at 1 (fast delays, full repeat limit). If a
    /// reconnect is already scheduled this only resets the count (if asked); an open
    /// connection is closed (1000) and re-established; after
    /// [`manual_close`](Self::manual_close) nothing happens.
    pub fn reconnect(&self, reset_count: bool) {
        let _ = self
            .shared
            .commands
            .send(Command::Reconnect { reset_count });
    }

    /// Closes the connection for good: close code 4001, no more reconnects, timers
    /// released, background task ended, waiting requests answered with `WS_NOT_OPEN`.
    pub fn manual_close(&self) {
        let _ = self.shared.commands.send(Command::ManualClose);
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.shared.url)
            .field("state", &self.state())
            .finish()
    }
}

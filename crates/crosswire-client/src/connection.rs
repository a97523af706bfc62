//! The background task that owns the WebSocket: connect, heartbeat, dispatch, reconnect.
//!
//! One task per client runs a small state machine, each phase a method returning the next:
//!
//! ```text
//!   Connect ──ok──▶ Open ──server close──▶ Idle ──reconnect()──▶ Wait
//!      │             │ error / pong timeout / reconnect()            │
//!      └──error──▶ schedule ──▶ Wait(delay) ──▶ Connect ◀────────────┘
//!                     └─ repeat limit reached ──▶ Idle
//!   any phase ──manual_close()──▶ Stop
//! ```
//!
//! Every phase also serves the command channel, so `manual_close` and `reconnect` take effect
//! wherever the task is.
//!
//! Every open after the first starts by sending `join` again for each joined room (with its
//! stream's last position as `since`); the replies are handled where they arrive, in
//! `handle_text`, so each `rejoin` is reported right after the replayed messages and before
//! the live ones.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crosswire_protocol::frame::{
    encode_ack_text, encode_client_event, parse_server_frame, ServerFrame,
};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{debug, info, warn};

use crate::backoff::{draw_jitter, reconnect_delay};
use crate::config::ClientConfig;
use crate::error::{ErrorCode, RequestError, RoomError};
use crate::event::{
    names, ClientEvent, CloseInfo, Payload, ReconnectInfo, CLOSE_ABNORMAL, CLOSE_HEARTBEAT_TIMEOUT,
    CLOSE_MANUAL,
};
use crate::position::{RejoinErrorInfo, RejoinInfo};
use crate::registry::Registry;
use crate::rooms::{parse_join_reply, JoinRequest, Rooms};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long closing our side may wait for the server's close frame before the socket is
/// dropped anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Where a client is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectionState {
    /// A connection attempt is in progress (the first one, or a reconnect).
    Connecting,
    /// The connection is open; events can be sent.
    Open,
    /// A reconnect attempt is scheduled and waiting for its delay.
    Reconnecting,
    /// Closed by the server, or the repeat limit was reached; nothing happens until
    /// [`Client::reconnect`](crate::Client::reconnect) or
    /// [`Client::manual_close`](crate::Client::manual_close).
    Closed,
    /// Closed for good by [`Client::manual_close`](crate::Client::manual_close); the
    /// background task has ended.
    ManuallyClosed,
}

/// Requests from client handles to the task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Send a text frame. With a generation, only on that connection (acks answer the
    /// connection that asked); without, on whichever connection is open.
    Send {
        text: String,
        generation: Option<u64>,
    },
    Reconnect {
        reset_count: bool,
    },
    ManualClose,
    PingIntervalChanged {
        immediate: bool,
    },
}

/// Runs on the background task when a request's reply arrives, before the waiting future
/// (if any) is woken: room bookkeeping happens in the order the replies came.
pub(crate) type ReplyHook = Box<dyn FnOnce(&Shared, &Payload) + Send>;

/// A request waiting for its reply.
struct Waiting {
    reply: oneshot::Sender<Payload>,
    on_reply: Option<ReplyHook>,
}

/// State shared by the client handles and the task.
pub(crate) struct Shared {
    pub(crate) config: ClientConfig,
    /// The runtime the client was started on; callbacks and request answers are spawned
    /// there, so sending works from any thread.
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) url: String,
    ping_interval_nanos: AtomicU64,
    state: watch::Sender<ConnectionState>,
    reconnecting: AtomicBool,
    /// Std mutexes: every critical section is a short map operation, never held across an
    /// `.await` or while user code runs.
    registry: Mutex<Registry>,
    pending: Mutex<HashMap<String, Waiting>>,
    /// Rooms joined and the last position per stream.
    rooms: Mutex<Rooms>,
    next_callback_id: AtomicU64,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    /// `None` once the task has ended, so event receivers see the end.
    events: Mutex<Option<broadcast::Sender<ClientEvent>>>,
    /// Number of the current connection, incremented at every open.
    generation: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks (user code runs outside them); recover anyway.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Shared {
    pub(crate) fn new(
        config: ClientConfig,
        url: String,
        runtime: tokio::runtime::Handle,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Command>) {
        let (commands, rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Self {
            ping_interval_nanos: AtomicU64::new(duration_nanos(config.ping_interval)),
            config,
            runtime,
            url,
            state: watch::Sender::new(ConnectionState::Connecting),
            reconnecting: AtomicBool::new(false),
            registry: Mutex::new(Registry::default()),
            pending: Mutex::new(HashMap::new()),
            rooms: Mutex::new(Rooms::default()),
            next_callback_id: AtomicU64::new(0),
            commands,
            events: Mutex::new(Some(events)),
            generation: AtomicU64::new(0),
        });
        (shared, rx)
    }

    pub(crate) fn registry(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }

    pub(crate) fn rooms(&self) -> MutexGuard<'_, Rooms> {
        lock(&self.rooms)
    }

    pub(crate) fn state(&self) -> ConnectionState {
        *self.state.borrow()
    }

    pub(crate) fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.state.subscribe()
    }

    fn set_state(&self, state: ConnectionState) {
        self.state.send_replace(state);
    }

    pub(crate) fn reconnecting(&self) -> bool {
        self.reconnecting.load(Ordering::SeqCst)
    }

    pub(crate) fn ping_interval(&self) -> Duration {
        Duration::from_nanos(self.ping_interval_nanos.load(Ordering::SeqCst))
    }

    pub(crate) fn set_ping_interval(&self, interval: Duration) {
        self.ping_interval_nanos
            .store(duration_nanos(interval), Ordering::SeqCst);
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<ClientEvent> {
        match lock(&self.events).as_ref() {
            Some(tx) => tx.subscribe(),
            // The task has ended: a receiver whose sender is already gone.
            None => broadcast::channel(1).1,
        }
    }

    /// Registers a pending reply, with a hook to run when it arrives, and returns its
    /// callback id and receiver.
    pub(crate) fn add_pending(
        &self,
        on_reply: Option<ReplyHook>,
    ) -> (String, oneshot::Receiver<Payload>) {
        let id = (self.next_callback_id.fetch_add(1, Ordering::Relaxed) + 1).to_string();
        let (reply, rx) = oneshot::channel();
        lock(&self.pending).insert(id.clone(), Waiting { reply, on_reply });
        (id, rx)
    }

    /// Forgets a pending reply (its hook will not run). Returns whether it was still pending.
    pub(crate) fn remove_pending(&self, id: &str) -> bool {
        lock(&self.pending).remove(id).is_some()
    }

    /// Hands a reply to its hook and its waiting future. Returns whether anyone took it.
    fn resolve_pending(&self, id: &str, payload: Payload) -> bool {
        let waiting = lock(&self.pending).remove(id);
        let Some(Waiting { reply, on_reply }) = waiting else {
            return false;
        };
        let hooked = on_reply.is_some();
        if let Some(hook) = on_reply {
            hook(self, &payload);
        }
        reply.send(payload).is_ok() || hooked
    }

    fn wants(&self, event: &str) -> bool {
        self.registry().has(event)
            || lock(&self.events)
                .as_ref()
                .is_some_and(|tx| tx.receiver_count() > 0)
    }

    /// Runs the handlers of `event` (outside every lock) and feeds the event stream.
    fn dispatch(&self, event: ClientEvent) {
        let handlers = self.registry().take_for(event.name());
        if !handlers.is_empty() {
            let payload = event.payload();
            for handler in handlers {
                if std::panic::catch_unwind(AssertUnwindSafe(|| handler(&payload))).is_err() {
                    warn!(event = event.name(), "event handler panicked");
                }
            }
        }
        if let Some(tx) = lock(&self.events).as_ref() {
            if tx.receiver_count() > 0 {
                let _ = tx.send(event);
            }
        }
    }
}

/// What to do next.
enum Phase {
    Connect,
    Wait(Duration),
    Open(Box<Ws>),
    Idle,
    Stop,
}

/// Why the open phase ended, with what was already reported.
pub(crate) struct Driver {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Reconnect attempts since the last successful open.
    attempt: u32,
}

impl Driver {
    pub(crate) fn new(shared: Arc<Shared>, commands: mpsc::UnboundedReceiver<Command>) -> Self {
        Self {
            shared,
            commands,
            attempt: 0,
        }
    }

    pub(crate) async fn run(mut self) {
        let mut phase = Phase::Connect;
        loop {
            phase = match phase {
                Phase::Connect => self.connect().await,
                Phase::Wait(delay) => self.wait(delay).await,
                Phase::Open(ws) => self.open(*ws).await,
                Phase::Idle => self.idle().await,
                Phase::Stop => break,
            };
        }
        self.finish();
    }

    fn finish(&mut self) {
        info!(url = %self.shared.url, "client closed");
        self.shared.reconnecting.store(false, Ordering::SeqCst);
        self.shared.set_state(ConnectionState::ManuallyClosed);
        // Dropping the senders resolves every waiting request with WS_NOT_OPEN.
        lock(&self.shared.pending).clear();
        self.commands.close();
        lock(&self.shared.events).take();
    }

    async fn connect(&mut self) -> Phase {
        self.shared.set_state(ConnectionState::Connecting);
        debug!(url = %self.shared.url, attempt = self.attempt, "connecting");
        let url = match self.shared.rooms().id_position() {
            Some(at) => with_position_query(&self.shared.url, at),
            None => self.shared.url.clone(),
        };
        let attempt = tokio::time::timeout(
            self.shared.config.connect_timeout,
            tokio_tungstenite::connect_async(url),
        );
        tokio::pin!(attempt);
        loop {
            tokio::select! {
                result = &mut attempt => {
                    let error = match result {
                        Ok(Ok((ws, _response))) => {
                            info!(url = %self.shared.url, "connection open");
                            self.attempt = 0;
                            self.shared.generation.fetch_add(1, Ordering::SeqCst);
                            self.shared.reconnecting.store(false, Ordering::SeqCst);
                            self.shared.set_state(ConnectionState::Open);
                            self.shared.dispatch(ClientEvent::Open);
                            return Phase::Open(Box::new(ws));
                        }
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => format!(
                            "connect timed out after {:?}",
                            self.shared.config.connect_timeout
                        ),
                    };
                    warn!(url = %self.shared.url, %error, "connect failed");
                    self.shared.dispatch(ClientEvent::Error(error));
                    return self.schedule_reconnect();
                }
                command = self.commands.recv() => match command {
                    None | Some(Command::ManualClose) => return Phase::Stop,
                    Some(Command::Reconnect { reset_count }) => self.reset_if(reset_count),
                    Some(Command::Send { .. }) => debug!("not open; frame dropped"),
                    Some(Command::PingIntervalChanged { .. }) => {}
                },
            }
        }
    }

    fn reset_if(&mut self, reset_count: bool) {
        if reset_count {
            self.attempt = 0;
        }
    }

    /// Counts the next attempt and picks its delay, or gives up at the repeat limit.
    fn schedule_reconnect(&mut self) -> Phase {
        let config = &self.shared.config;
        if let Some(limit) = config.repeat_limit {
            if self.attempt >= limit {
                warn!(limit, "reconnect repeat limit reached");
                self.shared.reconnecting.store(false, Ordering::SeqCst);
                self.shared.set_state(ConnectionState::Closed);
                self.shared.dispatch(ClientEvent::RepeatLimit(limit));
                return Phase::Idle;
            }
        }
        self.attempt = self.attempt.saturating_add(1);
        let delay = reconnect_delay(
            self.attempt,
            config.fast_reconnect_threshold,
            config.fast_reconnect_interval,
            config.max_reconnect_interval,
            draw_jitter(config.fast_reconnect_interval),
        );
        info!(repeat = self.attempt, ?delay, "reconnect scheduled");
        self.shared.reconnecting.store(true, Ordering::SeqCst);
        self.shared.set_state(ConnectionState::Reconnecting);
        self.shared.dispatch(ClientEvent::Reconnect(ReconnectInfo {
            repeat: self.attempt,
            timeout: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        }));
        Phase::Wait(delay)
    }

    async fn wait(&mut self, delay: Duration) -> Phase {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return Phase::Connect,
                command = self.commands.recv() => match command {
                    None | Some(Command::ManualClose) => return Phase::Stop,
                    // Already scheduled: reconnect() only resets the count if asked.
                    Some(Command::Reconnect { reset_count }) => self.reset_if(reset_count),
                    Some(Command::Send { .. }) => debug!("not open; frame dropped"),
                    Some(Command::PingIntervalChanged { .. }) => {}
                },
            }
        }
    }

    async fn idle(&mut self) -> Phase {
        loop {
            match self.commands.recv().await {
                None | Some(Command::ManualClose) => return Phase::Stop,
                Some(Command::Reconnect { reset_count }) => {
                    self.reset_if(reset_count);
                    return self.schedule_reconnect();
                }
                Some(Command::Send { .. }) => debug!("not open; frame dropped"),
                Some(Command::PingIntervalChanged { .. }) => {}
            }
        }
    }

    async fn open(&mut self, mut ws: Ws) -> Phase {
        let ping_message = self.shared.config.ping_message.clone();
        let generation = self.shared.generation.load(Ordering::SeqCst);
        let mut ping_timer = heartbeat_timer(self.shared.ping_interval());
        // When the heartbeat in flight was sent and when it is due back.
        let mut ping_sent: Option<Instant> = None;
        let mut pong_deadline: Option<Instant> = None;
        let mut rejoins = Rejoins::new(self.shared.clone());
        if generation > 1 {
            if let Err(e) = rejoins.send(&mut ws).await {
                return self.lost(e);
            }
        }

        loop {
            tokio::select! {
                message = ws.next() => match message {
                    Some(Ok(Message::Text(text))) => {
                        if text.as_str() == ping_message {
                            match ping_sent.take() {
                                Some(sent) => {
                                    pong_deadline = None;
                                    let latency = sent.elapsed();
                                    debug!(?latency, "heartbeat answered");
                                    self.shared.dispatch(ClientEvent::Pong { latency });
                                }
                                None => debug!("unsolicited heartbeat echo ignored"),
                            }
                        } else {
                            self.handle_text(text.as_str(), generation);
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let info = frame.map_or(
                            CloseInfo { code: 1005, reason: String::new() },
                            |f| CloseInfo { code: u16::from(f.code), reason: f.reason.to_string() },
                        );
                        info!(code = info.code, reason = %info.reason, "server closed the connection");
                        // Let tungstenite send its close reply and finish the handshake.
                        let _ = tokio::time::timeout(CLOSE_GRACE, async {
                            while let Some(Ok(_)) = ws.next().await {}
                        })
                        .await;
                        self.shared.set_state(ConnectionState::Closed);
                        self.shared.dispatch(ClientEvent::Close(info));
                        return Phase::Idle;
                    }
                    Some(Ok(Message::Binary(data))) => {
                        debug!(len = data.len(), "binary frame ignored");
                    }
                    Some(Ok(_)) => {} // protocol ping/pong: tungstenite answers pings itself
                    Some(Err(e)) => return self.lost(e.to_string()),
                    None => return self.lost("connection closed without a close frame".into()),
                },
                command = self.commands.recv() => match command {
                    None | Some(Command::ManualClose) => {
                        close_socket(&mut ws, CLOSE_MANUAL, "manual close").await;
                        self.shared.set_state(ConnectionState::ManuallyClosed);
                        self.shared.dispatch(ClientEvent::Close(CloseInfo {
                            code: CLOSE_MANUAL,
                            reason: "manual close".into(),
                        }));
                        return Phase::Stop;
                    }
                    Some(Command::Send { text, generation: only }) => {
                        if only.is_some_and(|g| g != generation) {
                            debug!("frame for an earlier connection dropped");
                        } else if let Err(e) = ws.send(Message::text(text)).await {
                            return self.lost(e.to_string());
                        }
                    }
                    Some(Command::Reconnect { reset_count }) => {
                        self.reset_if(reset_count);
                        close_socket(&mut ws, 1000, "reconnect").await;
                        self.shared.set_state(ConnectionState::Closed);
                        self.shared.dispatch(ClientEvent::Close(CloseInfo {
                            code: 1000,
                            reason: "reconnect".into(),
                        }));
                        return self.schedule_reconnect();
                    }
                    Some(Command::PingIntervalChanged { immediate }) => {
                        ping_timer = heartbeat_timer(self.shared.ping_interval());
                        if immediate {
                            if let Err(e) = self.send_ping(&mut ws, &ping_message, &mut ping_sent, &mut pong_deadline).await {
                                return self.lost(e);
                            }
                        }
                    }
                },
                () = tick(&mut ping_timer) => {
                    if let Err(e) = self.send_ping(&mut ws, &ping_message, &mut ping_sent, &mut pong_deadline).await {
                        return self.lost(e);
                    }
                }
                () = sleep_until(rejoins.deadline) => rejoins.expire(),
                () = sleep_until(pong_deadline) => {
                    warn!(timeout = ?self.shared.config.pong_timeout, "heartbeat not answered");
                    self.shared.dispatch(ClientEvent::PongTimeout);
                    close_socket(&mut ws, CLOSE_HEARTBEAT_TIMEOUT, "heartbeat timeout").await;
                    self.shared.set_state(ConnectionState::Closed);
                    self.shared.dispatch(ClientEvent::Close(CloseInfo {
                        code: CLOSE_HEARTBEAT_TIMEOUT,
                        reason: "heartbeat timeout".into(),
                    }));
                    return self.schedule_reconnect();
                }
            }
        }
    }

    async fn send_ping(
        &self,
        ws: &mut Ws,
        ping_message: &str,
        ping_sent: &mut Option<Instant>,
        pong_deadline: &mut Option<Instant>,
    ) -> Result<(), String> {
        ws.send(Message::text(ping_message))
            .await
            .map_err(|e| e.to_string())?;
        // With a heartbeat already in flight, its deadline stands.
        if ping_sent.is_none() {
            let now = Instant::now();
            *ping_sent = Some(now);
            *pong_deadline = Some(now + self.shared.config.pong_timeout);
        }
        self.shared.dispatch(ClientEvent::Ping);
        Ok(())
    }

    /// The connection broke: report `error` and `close` (1006), then reconnect.
    fn lost(&mut self, error: String) -> Phase {
        warn!(%error, "connection lost");
        self.shared.set_state(ConnectionState::Closed);
        self.shared.dispatch(ClientEvent::Error(error));
        self.shared.dispatch(ClientEvent::Close(CloseInfo {
            code: CLOSE_ABNORMAL,
            reason: String::new(),
        }));
        self.schedule_reconnect()
    }

    fn handle_text(&self, text: &str, generation: u64) {
        let shared = &self.shared;
        if shared.wants(names::MESSAGE) {
            shared.dispatch(ClientEvent::Message(Arc::from(text)));
        }
        match parse_server_frame(text) {
            Ok(ServerFrame::Reply {
                callback_id,
                payload,
            }) => {
                if !shared.resolve_pending(&callback_id, Payload::from_raw(payload)) {
                    debug!(%callback_id, "reply for no waiting request (late or unknown)");
                }
            }
            Ok(ServerFrame::Event {
                event,
                payload,
                ack_id,
                position,
            }) => {
                debug!(%event, "event received");
                if let Some(at) = &position {
                    shared.rooms().observe(&at.stream, at.offset, &at.epoch);
                }
                if event == RECOVERED {
                    if let Ok(at) = serde_json::from_str::<StreamAt>(payload.get()) {
                        shared.rooms().observe(&at.stream, at.offset, &at.epoch);
                    }
                }
                let request_handler = match &ack_id {
                    Some(_) => shared.registry().request(&event),
                    None => None,
                };
                if request_handler.is_none() && !shared.wants(&event) {
                    return;
                }
                let mut payload = Payload::from_raw(payload);
                if let Some(at) = &position {
                    payload = payload.with_position(&at.stream, at.offset, &at.epoch);
                }
                let is_request = ack_id.is_some();
                if let (Some(handler), Some(ack_id)) = (request_handler, ack_id) {
                    let ack_id = ack_id.into_owned();
                    let commands = shared.commands.clone();
                    let answer = handler(payload.clone());
                    shared.runtime.spawn(async move {
                        let text = match answer.await {
                            Ok(reply) => encode_ack_text(&ack_id, reply.raw()),
                            Err(e) => Err(e),
                        };
                        match text {
                            Ok(text) => {
                                let _ = commands.send(Command::Send {
                                    text,
                                    generation: Some(generation),
                                });
                            }
                            Err(e) => warn!(%ack_id, error = %e, "request answer not serialisable"),
                        }
                    });
                } else if is_request {
                    debug!(%event, "request without a request handler: not answered");
                }
                shared.dispatch(ClientEvent::Event {
                    name: Arc::from(event.as_ref()),
                    payload,
                });
            }
            Err(e) => debug!(error = %e, "text frame is not a protocol frame"),
        }
    }
}

/// The `join`s re-sent at an open after a reconnect and not answered yet. Their replies are
/// handled by [`rejoin_hook`]; [`expire`](Self::expire) reports those that did not come within
/// the callback timeout. Dropped with the open phase, it forgets the unanswered ones: a rejoin
/// cut short by another connection loss is not reported, the next open sends it again.
struct Rejoins {
    shared: Arc<Shared>,
    /// Callback id and room of each rejoin sent.
    sent: Vec<(String, String)>,
    /// When the unanswered ones time out.
    deadline: Option<Instant>,
}

impl Rejoins {
    fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            sent: Vec::new(),
            deadline: None,
        }
    }

    /// Sends `join` again for every joined room, with its stream's last position as `since`.
    async fn send(&mut self, ws: &mut Ws) -> Result<(), String> {
        let rooms = self.shared.rooms().rejoins();
        if rooms.is_empty() {
            return Ok(());
        }
        let config = &self.shared.config;
        self.deadline = Some(Instant::now() + config.callback_timeout);
        for (room, since) in rooms {
            let (id, _reply) = self.shared.add_pending(Some(rejoin_hook(room.clone())));
            let request = JoinRequest {
                room: &room,
                since: since.as_ref(),
            };
            let text = match encode_client_event(&config.join_event, &request, Some(&id)) {
                Ok(text) => text,
                Err(e) => {
                    // A struct of strings and numbers always serialises; report it regardless.
                    self.shared.remove_pending(&id);
                    let error =
                        RoomError::from(RequestError::new(ErrorCode::EncodeError, e.to_string()));
                    self.shared
                        .dispatch(ClientEvent::RejoinError(RejoinErrorInfo {
                            room,
                            error: error.to_string(),
                        }));
                    continue;
                }
            };
            debug!(%room, ?since, "rejoining");
            self.sent.push((id, room));
            ws.send(Message::text(text))
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The callback timeout passed: reports every rejoin still unanswered.
    fn expire(&mut self) {
        self.deadline = None;
        let config = &self.shared.config;
        for (id, room) in std::mem::take(&mut self.sent) {
            if !self.shared.remove_pending(&id) || !self.shared.rooms().is_joined(&room) {
                continue;
            }
            warn!(%room, "rejoin not answered in time");
            let error = RoomError::from(RequestError::new(
                ErrorCode::CallbackTimeout,
                format!(
                    "no reply to `{}` within {} ms",
                    config.join_event,
                    config.callback_timeout.as_millis()
                ),
            ));
            self.shared
                .dispatch(ClientEvent::RejoinError(RejoinErrorInfo {
                    room,
                    error: error.to_string(),
                }));
        }
    }
}

impl Drop for Rejoins {
    fn drop(&mut self) {
        for (id, _) in &self.sent {
            self.shared.remove_pending(id);
        }
    }
}

/// Handles the reply to a rejoin of `room`: records it and reports `rejoin` or
/// `rejoin-error`, unless the room was left meanwhile.
fn rejoin_hook(room: String) -> ReplyHook {
    Box::new(move |shared: &Shared, reply: &Payload| {
        let event = match parse_join_reply(&shared.config.join_event, reply) {
            Ok(joined) => {
                let still_joined = shared.rooms().rejoined(&room, &joined);
                if !still_joined {
                    return;
                }
                info!(%room, recovered = joined.recovered, "room joined again");
                ClientEvent::Rejoin(RejoinInfo::new(room, joined))
            }
            Err(e) => {
                let still_joined = shared.rooms().is_joined(&room);
                if !still_joined {
                    return;
                }
                warn!(%room, error = %e, "rejoin failed");
                ClientEvent::RejoinError(RejoinErrorInfo {
                    room,
                    error: e.to_string(),
                })
            }
        };
        shared.dispatch(event);
    })
}

fn heartbeat_timer(period: Duration) -> Option<Interval> {
    if period.is_zero() {
        return None;
    }
    let mut timer = tokio::time::interval_at(Instant::now() + period, period);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    Some(timer)
}

async fn tick(timer: &mut Option<Interval>) {
    match timer {
        Some(timer) => {
            timer.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Sends a close frame and waits (briefly) for the server's answer.
async fn close_socket(ws: &mut Ws, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if ws.close(Some(frame)).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

/// The event in which a server reports, after a connect, where the client's id stream is.
const RECOVERED: &str = "recovered";

/// The position fields of a `recovered` report.
#[derive(serde::Deserialize)]
struct StreamAt {
    stream: String,
    offset: u64,
    epoch: String,
}

/// `url` with `offset` and `epoch` of `at` in its query (replacing any there).
fn with_position_query(url: &str, at: &crate::position::Position) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_string();
    };
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| k != "offset" && k != "epoch")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    parsed
        .query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair("offset", &at.offset.to_string())
        .append_pair("epoch", &at.epoch);
    parsed.into()
}

#[cfg(test)]
mod position_query_tests {
    use super::with_position_query;
    use crate::position::Position;

    #[test]
    fn the_id_position_goes_into_the_query() {
        let at = Position::new(7, "e.1");
        assert_eq!(
            with_position_query("ws://h:1/?id=me&offset=2", &at),
            "ws://h:1/?id=me&offset=7&epoch=e.1"
        );
        assert_eq!(
            with_position_query("ws://h:1/", &at),
            "ws://h:1/?offset=7&epoch=e.1"
        );
    }
}

//! A node's subscribe connection: one task that owns the socket, re-subscribes to every
//! channel after each (re)connect, confirms subscriptions, PINGs in subscribe mode and
//! forwards messages into the broker's bounded queue.
//!
//! The socket is read only when the previous messages were handed to the queue, so a
//! consumer that lags slows the read loop down (TCP backpressure up to Redis) instead of
//! growing a buffer here.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use crosswire_core::BrokerMessage;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};

use crate::health::{HealthEventKind, Role};
use crate::resp::{self, Frame};
use crate::shared::{Node, Shared, SubscribeCommand, SubscribeOutcome};

/// Payloads at least this large are handed on as views of the read buffer; smaller ones are
/// copied, so that a small message kept by the application does not pin a whole read buffer.
const ZERO_COPY_MIN: usize = 16 * 1024;
/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 64 * 1024;
/// A packed PING.
const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";
/// Most channels named in one SUBSCRIBE when re-subscribing.
const SUBSCRIBE_CHUNK: usize = 1000;

/// A byte stream to Redis: plain TCP or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

type Reader = ReadHalf<Box<dyn Stream>>;
type Writer = WriteHalf<Box<dyn Stream>>;

/// Why a session ended: the health event and its error text.
type Ended = (HealthEventKind, String);

/// Runs until the broker is dropped (the task is aborted then).
pub(crate) async fn run(
    shared: Arc<Shared>,
    node: Arc<Node>,
    mut commands: mpsc::UnboundedReceiver<SubscribeCommand>,
) {
    let config = &shared.config;
    let mut delay = config.reconnect_delay;
    let mut ever_up = false;
    let mut down_reported = false;
    loop {
        // Requests that came while down are answered "not connected": their channels are
        // already in the shared set, which the new connection subscribes to in full.
        while let Ok(command) = commands.try_recv() {
            command.answer(SubscribeOutcome::NotConnected);
        }
        let channels = shared.channels(&node.name);
        match timeout(config.connect_timeout, open(&node, &config.tls)).await {
            Ok(Ok((reader, writer, buffer))) => {
                delay = config.reconnect_delay;
                let mut session = Session::new(&shared, &node, writer, &mut ever_up);
                let (event, error) = session.run(reader, buffer, &channels, &mut commands).await;
                session.fail_pending(&error);
                node.subscriber_healthy.store(false, Ordering::Release);
                down_reported = true;
                shared.report(&node, Role::Subscriber, event, Some(error));
                // The node may be gone: let the publisher find out now, and in cluster mode
                // let its channels move to another server of their shard.
                node.check_now.notify_one();
                if let Some(cluster) = &shared.cluster {
                    cluster.refresh_now();
                }
            }
            Ok(Err(error)) => report_connect_failure(&shared, &node, &mut down_reported, error),
            Err(_) => report_connect_failure(
                &shared,
                &node,
                &mut down_reported,
                format!("connect timed out after {:?}", config.connect_timeout),
            ),
        }
        let until = Instant::now() + delay;
        delay = (delay * 2).min(config.reconnect_delay_max);
        loop {
            tokio::select! {
                () = sleep_until(until) => break,
                command = commands.recv() => match command {
                    Some(command) => command.answer(SubscribeOutcome::NotConnected),
                    None => return,
                },
            }
        }
    }
}

fn report_connect_failure(shared: &Shared, node: &Node, down_reported: &mut bool, error: String) {
    if *down_reported {
        tracing::debug!(node = %node.name, %error, "redis subscribe connection: reconnect failed");
    } else {
        *down_reported = true;
        shared.report(
            node,
            Role::Subscriber,
            HealthEventKind::ConnectFailed,
            Some(error),
        );
    }
}

/// Connects (TCP, TLS when asked) and authenticates / selects the db.
async fn open(node: &Node, tls: &crate::RedisTls) -> Result<(Reader, Writer, BytesMut), String> {
    let config = &node.config;
    let tcp = TcpStream::connect((config.host.as_str(), config.port))
        .await
        .map_err(|e| format!("connect to {}:{}: {e}", config.host, config.port))?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Stream> = if config.tls {
        tls_stream(tcp, &config.host, tls).await?
    } else {
        Box::new(tcp)
    };
    let (mut reader, mut writer) = tokio::io::split(stream);
    let settings = config.info.redis_settings();
    let mut handshake = Vec::new();
    if let Some(password) = settings.password() {
        let mut auth = redis::cmd("AUTH");
        if let Some(user) = settings.username() {
            auth.arg(user);
        }
        handshake.push(auth.arg(password).get_packed_command());
    }
    if settings.db() != 0 {
        handshake.push(redis::cmd("SELECT").arg(settings.db()).get_packed_command());
    }
    let mut buffer = BytesMut::with_capacity(READ_CHUNK);
    if handshake.is_empty() {
        return Ok((reader, writer, buffer));
    }
    writer
        .write_all(&handshake.concat())
        .await
        .map_err(|e| e.to_string())?;
    let mut answered = 0;
    while answered < handshake.len() {
        match resp::decode(&mut buffer).map_err(|e| e.to_string())? {
            Some(Frame::Simple(_)) => answered += 1,
            Some(Frame::Error(e)) => {
                return Err(format!(
                    "handshake refused: {}",
                    String::from_utf8_lossy(&e)
                ))
            }
            Some(other) => return Err(format!("unexpected handshake reply {other:?}")),
            None => {
                buffer.reserve(READ_CHUNK);
                if reader
                    .read_buf(&mut buffer)
                    .await
                    .map_err(|e| e.to_string())?
                    == 0
                {
                    return Err("connection closed during the handshake".into());
                }
            }
        }
    }
    Ok((reader, writer, buffer))
}

#[cfg(feature = "tls")]
async fn tls_stream(
    tcp: TcpStream,
    host: &str,
    tls: &crate::RedisTls,
) -> Result<Box<dyn Stream>, String> {
    let config = crate::tls::client_config(tls)?;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("TLS server name {host:?}: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    Ok(Box::new(stream))
}

#[cfg(not(feature = "tls"))]
async fn tls_stream(
    _tcp: TcpStream,
    _host: &str,
    _tls: &crate::RedisTls,
) -> Result<Box<dyn Stream>, String> {
    Err("rediss:// needs the `tls` feature of crosswire-redis".into())
}

/// The subscribe commands of plain and of sharded (Redis Cluster) pub/sub.
#[derive(Clone, Copy)]
struct Verbs {
    subscribe: &'static str,
    unsubscribe: &'static str,
}

impl Verbs {
    const PLAIN: Self = Self {
        subscribe: "SUBSCRIBE",
        unsubscribe: "UNSUBSCRIBE",
    };
    const SHARDED: Self = Self {
        subscribe: "SSUBSCRIBE",
        unsubscribe: "SUNSUBSCRIBE",
    };
}

/// The channels in groups for one (S)SUBSCRIBE each: at most [`SUBSCRIBE_CHUNK`] per group,
/// and when `sharded`, of one slot per group (Redis refuses a cross-slot SSUBSCRIBE).
fn chunks(channels: &[Arc<str>], sharded: bool) -> Vec<Vec<Arc<str>>> {
    if !sharded {
        return channels
            .chunks(SUBSCRIBE_CHUNK)
            .map(<[_]>::to_vec)
            .collect();
    }
    let mut by_slot: HashMap<u16, Vec<Arc<str>>> = HashMap::new();
    for channel in channels {
        let slot = crate::slots::slot_of(channel.as_bytes());
        by_slot.entry(slot).or_default().push(Arc::clone(channel));
    }
    by_slot
        .into_values()
        .flat_map(|group| {
            group
                .chunks(SUBSCRIBE_CHUNK)
                .map(<[_]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A subscribe or unsubscribe waiting for its confirmation.
struct Pending {
    deadline: Instant,
    reply: Option<tokio::sync::oneshot::Sender<SubscribeOutcome>>,
    /// Part of the re-subscription after connecting: the node is healthy once none is left.
    initial: bool,
}

/// One connected subscribe connection.
struct Session<'a> {
    shared: &'a Shared,
    node: &'a Node,
    writer: Writer,
    ever_up: &'a mut bool,
    healthy: bool,
    /// Channel names of this connection, to hand out one `Arc<str>` per channel.
    names: HashSet<Arc<str>>,
    subscribing: HashMap<Arc<str>, VecDeque<Pending>>,
    unsubscribing: HashMap<Arc<str>, VecDeque<Pending>>,
    initial_left: usize,
    /// The PING sent after the initial SUBSCRIBEs is not answered yet.
    initial_ping: bool,
    next_ping: Instant,
    ping_sent: Option<Instant>,
    last_frame: Instant,
    /// Messages dropped because nobody holds the receiving end (logged once).
    orphaned: u64,
}

impl<'a> Session<'a> {
    fn new(shared: &'a Shared, node: &'a Node, writer: Writer, ever_up: &'a mut bool) -> Self {
        let now = Instant::now();
        Self {
            shared,
            node,
            writer,
            ever_up,
            healthy: false,
            names: HashSet::new(),
            subscribing: HashMap::new(),
            unsubscribing: HashMap::new(),
            initial_left: 0,
            initial_ping: false,
            next_ping: now + shared.config.redis_ping_interval,
            ping_sent: None,
            last_frame: now,
            orphaned: 0,
        }
    }

    async fn run(
        &mut self,
        mut reader: Reader,
        mut buffer: BytesMut,
        channels: &[Arc<str>],
        commands: &mut mpsc::UnboundedReceiver<SubscribeCommand>,
    ) -> Ended {
        if let Err(e) = self.subscribe_all(channels).await {
            return e;
        }
        loop {
            // Hand on every complete reply already read before reading more.
            loop {
                match resp::decode(&mut buffer) {
                    Ok(Some(frame)) => {
                        if let Err(e) = self.handle(frame).await {
                            return e;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return (HealthEventKind::Disconnected, e.to_string()),
                }
            }
            let wake = self.next_deadline();
            if buffer.capacity() - buffer.len() < READ_CHUNK / 4 {
                buffer.reserve(READ_CHUNK);
            }
            tokio::select! {
                read = reader.read_buf(&mut buffer) => match read {
                    Ok(0) => return (HealthEventKind::Disconnected, "connection closed by Redis".into()),
                    Ok(_) => self.last_frame = Instant::now(),
                    Err(e) => return (HealthEventKind::Disconnected, e.to_string()),
                },
                command = commands.recv() => match command {
                    Some(command) => if let Err(e) = self.command(command).await {
                        return e;
                    },
                    None => return (HealthEventKind::Disconnected, "broker closed".into()),
                },
                () = sleep_until(wake) => if let Err(e) = self.on_timer().await {
                    return e;
                },
            }
        }
    }

    /// Subscribes to every channel of the broker; healthy at once when there is none.
    async fn subscribe_all(&mut self, channels: &[Arc<str>]) -> Result<(), Ended> {
        let deadline = Instant::now() + self.shared.config.command_timeout;
        for chunk in chunks(channels, self.shared.sharded()) {
            let mut command = redis::cmd(self.verbs().subscribe);
            for channel in &chunk {
                command.arg(channel.as_bytes());
                self.names.insert(Arc::clone(channel));
                self.subscribing
                    .entry(Arc::clone(channel))
                    .or_default()
                    .push_back(Pending {
                        deadline,
                        reply: None,
                        initial: true,
                    });
                self.initial_left += 1;
            }
            self.write(&command.get_packed_command()).await?;
        }
        // A PING after the SUBSCRIBEs: its answer proves the connection works even when
        // there is no channel to confirm (a hung Redis accepts TCP connections too).
        self.initial_left += 1;
        self.initial_ping = true;
        self.ping_sent = Some(Instant::now());
        self.write(PING).await
    }

    /// Whether this connection is (still) the one to subscribe to `channel`: always, but in
    /// cluster mode, where one server of its shard carries it.
    fn carries(&self, channel: &str) -> bool {
        self.shared
            .cluster
            .as_ref()
            .is_none_or(|c| c.assignment(channel).as_deref() == Some(&*self.node.name))
    }

    fn verbs(&self) -> Verbs {
        if self.shared.sharded() {
            Verbs::SHARDED
        } else {
            Verbs::PLAIN
        }
    }

    fn check_healthy(&mut self) {
        if self.healthy || self.initial_left > 0 {
            return;
        }
        self.healthy = true;
        self.node.subscriber_healthy.store(true, Ordering::Release);
        let event = if *self.ever_up {
            HealthEventKind::Recovered
        } else {
            HealthEventKind::Connected
        };
        *self.ever_up = true;
        self.shared.report(self.node, Role::Subscriber, event, None);
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Ended> {
        match timeout(
            self.shared.config.command_timeout,
            self.writer.write_all(bytes),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err((HealthEventKind::Disconnected, e.to_string())),
            Err(_) => Err((
                HealthEventKind::Disconnected,
                "write to Redis timed out".into(),
            )),
        }
    }

    async fn command(&mut self, command: SubscribeCommand) -> Result<(), Ended> {
        let deadline = Instant::now() + self.shared.config.command_timeout;
        let verbs = self.verbs();
        let (verb, channel, reply, waiting) = match command {
            SubscribeCommand::Subscribe(channel, reply) if !self.carries(&channel) => {
                // Moved to another server of its shard while this request waited.
                let _ = reply.send(SubscribeOutcome::NotConnected);
                return Ok(());
            }
            SubscribeCommand::Subscribe(channel, reply) => {
                self.names.insert(Arc::clone(&channel));
                (verbs.subscribe, channel, reply, &mut self.subscribing)
            }
            SubscribeCommand::Unsubscribe(channel, reply) => {
                (verbs.unsubscribe, channel, reply, &mut self.unsubscribing)
            }
        };
        waiting
            .entry(Arc::clone(&channel))
            .or_default()
            .push_back(Pending {
                deadline,
                reply: Some(reply),
                initial: false,
            });
        let packed = redis::cmd(verb)
            .arg(channel.as_bytes())
            .get_packed_command();
        self.write(&packed).await
    }

    async fn handle(&mut self, frame: Frame) -> Result<(), Ended> {
        self.last_frame = Instant::now();
        match frame {
            Frame::Array(Some(items)) => {
                let kind = items.first().and_then(Frame::as_bytes).map(Bytes::as_ref);
                match kind {
                    Some(b"message" | b"smessage") => match (items.get(1), items.get(2)) {
                        (Some(channel), Some(Frame::Bulk(Some(payload)))) => {
                            let channel = channel.as_bytes().cloned().unwrap_or_default();
                            self.forward(&channel, payload.clone()).await;
                        }
                        _ => {
                            tracing::debug!(node = %self.node.name, "malformed pub/sub message ignored")
                        }
                    },
                    Some(b"subscribe" | b"ssubscribe") => self.confirmed(true, items.get(1)),
                    Some(b"unsubscribe" | b"sunsubscribe") => self.confirmed(false, items.get(1)),
                    Some(b"pong") => self.pong(),
                    _ => {
                        tracing::debug!(node = %self.node.name, "unexpected pub/sub reply ignored")
                    }
                }
            }
            Frame::Simple(text) if text.eq_ignore_ascii_case(b"pong") => self.pong(),
            Frame::Error(text) => {
                // An error can only answer one of our SUBSCRIBE/UNSUBSCRIBE/PING commands.
                let text = String::from_utf8_lossy(&text).into_owned();
                return Err((HealthEventKind::SubscribeFailed, text));
            }
            other => {
                tracing::debug!(node = %self.node.name, reply = ?other, "unexpected reply ignored");
            }
        }
        Ok(())
    }

    fn confirmed(&mut self, subscribe: bool, channel: Option<&Frame>) {
        let Some(channel) = channel.and_then(Frame::as_bytes) else {
            return;
        };
        let Ok(name) = std::str::from_utf8(channel) else {
            return;
        };
        let waiting = if subscribe {
            &mut self.subscribing
        } else {
            &mut self.unsubscribing
        };
        let mut pending = None;
        if let Some(queue) = waiting.get_mut(name) {
            pending = queue.pop_front();
            if queue.is_empty() {
                waiting.remove(name);
            }
        }
        if !subscribe
            && !self.unsubscribing.contains_key(name)
            && !self.subscribing.contains_key(name)
        {
            self.names.remove(name);
        }
        let Some(pending) = pending else {
            if !subscribe {
                // Not asked for: Redis Cluster dropped it (its slot moved away).
                if let Some(cluster) = &self.shared.cluster {
                    cluster.lost(&Arc::from(name), &self.node.name);
                }
            }
            return;
        };
        if let Some(reply) = pending.reply {
            let _ = reply.send(SubscribeOutcome::Confirmed);
        }
        if pending.initial {
            self.initial_left = self.initial_left.saturating_sub(1);
            self.check_healthy();
        }
    }

    fn pong(&mut self) {
        if let Some(sent) = self.ping_sent.take() {
            tracing::trace!(node = %self.node.name, latency = ?sent.elapsed(), "subscriber PONG");
        }
        if self.initial_ping {
            self.initial_ping = false;
            self.initial_left = self.initial_left.saturating_sub(1);
            self.check_healthy();
        }
    }

    /// Hands a message to the broker's queue, waiting while it is full.
    async fn forward(&mut self, channel: &[u8], payload: Bytes) {
        let channel = match std::str::from_utf8(channel) {
            Ok(name) => match self.names.get(name) {
                Some(c) => Arc::clone(c),
                None => Arc::from(name),
            },
            Err(_) => Arc::from(String::from_utf8_lossy(channel).as_ref()),
        };
        let payload = if payload.len() >= ZERO_COPY_MIN {
            payload
        } else {
            Bytes::copy_from_slice(&payload)
        };
        self.node.counters.received.fetch_add(1, Ordering::Relaxed);
        let message = match crate::history::split_positioned(&payload) {
            Some((position, payload)) => BrokerMessage {
                channel,
                payload,
                position: Some(position),
            },
            None => BrokerMessage::new(channel, payload),
        };
        match self.shared.messages.try_send(message) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(message)) => {
                // Backpressure: stop reading until the consumer takes messages. The time
                // spent here is not the node's fault, so deadlines move by as much.
                let stalled = Instant::now();
                let closed = self.shared.messages.send(message).await.is_err();
                self.shift_deadlines(stalled.elapsed());
                if closed {
                    self.orphan();
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.orphan(),
        }
    }

    fn orphan(&mut self) {
        if self.orphaned == 0 {
            tracing::warn!(node = %self.node.name, "broker message receiver dropped; messages discarded");
        }
        self.orphaned += 1;
    }

    fn shift_deadlines(&mut self, by: Duration) {
        if let Some(sent) = &mut self.ping_sent {
            *sent += by;
        }
        for queue in self
            .subscribing
            .values_mut()
            .chain(self.unsubscribing.values_mut())
        {
            for pending in queue {
                pending.deadline += by;
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        let mut wake = self.next_ping;
        if let Some(sent) = self.ping_sent {
            wake = wake.min(sent + self.shared.config.redis_ping_timeout);
        }
        for queue in self.subscribing.values().chain(self.unsubscribing.values()) {
            if let Some(first) = queue.front() {
                wake = wake.min(first.deadline);
            }
        }
        wake
    }

    async fn on_timer(&mut self) -> Result<(), Ended> {
        let now = Instant::now();
        let config = &self.shared.config;
        if let Some(sent) = self.ping_sent {
            if now >= sent + config.redis_ping_timeout {
                return Err((
                    HealthEventKind::PingTimeout,
                    format!("no PONG within {:?}", config.redis_ping_timeout),
                ));
            }
        }
        let late = self
            .subscribing
            .iter()
            .chain(self.unsubscribing.iter())
            .find(|(_, queue)| queue.front().is_some_and(|p| now >= p.deadline))
            .map(|(channel, _)| Arc::clone(channel));
        if let Some(channel) = late {
            return Err((
                HealthEventKind::SubscribeFailed,
                format!(
                    "(un)subscription of {channel:?} not confirmed within {:?}",
                    config.command_timeout
                ),
            ));
        }
        if now >= self.next_ping {
            self.next_ping = now + config.redis_ping_interval;
            let idle = now.duration_since(self.last_frame) >= config.redis_ping_interval;
            if self.ping_sent.is_none() && (config.forced_ping || idle) {
                self.ping_sent = Some(now);
                self.write(PING).await?;
            }
        }
        Ok(())
    }

    /// Fails every request still waiting (the connection ended).
    fn fail_pending(&mut self, error: &str) {
        for (_, queue) in self.subscribing.drain() {
            for pending in queue {
                if let Some(reply) = pending.reply {
                    let _ = reply.send(SubscribeOutcome::Failed(error.to_string()));
                }
            }
        }
        // An unsubscribe is done anyway: the channel left the shared set, so the next
        // connection does not subscribe to it.
        for (_, queue) in self.unsubscribing.drain() {
            for pending in queue {
                if let Some(reply) = pending.reply {
                    let _ = reply.send(SubscribeOutcome::NotConnected);
                }
            }
        }
    }
}

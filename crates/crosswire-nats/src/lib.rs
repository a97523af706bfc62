//! A [`crosswire_core::Broker`] over NATS core pub/sub ([async-nats](async_nats)): each
//! crosswire channel is one NATS subject, over one client connection that reconnects across
//! the servers of a NATS cluster by itself.
//!
//! ```no_run
//! use std::sync::Arc;
//! use crosswire_core::Broker;
//! use crosswire_nats::{NatsBroker, NatsConfig};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = NatsConfig::from_urls(["nats://127.0.0.1:4222", "nats://10.0.0.2:4222"])?;
//! let broker: Arc<dyn Broker> = Arc::new(NatsBroker::connect(config).await?);
//! let mut messages = broker.messages()?;
//! broker.subscribe("crosswire:ws:all").await?;
//! broker.publish("crosswire:ws:all", bytes::Bytes::from_static(b"hello")).await?;
//! let message = messages.recv().await.expect("broker alive");
//! assert_eq!(&*message.channel, "crosswire:ws:all");
//! # Ok(()) }
//! ```
//!
//! # How it works
//! - **Subjects.** A channel name becomes one subject token: every byte outside
//!   `A-Z a-z 0-9 - _ :` is written as `%XX`, so a room or namespace name can never make a
//!   wildcard (`*`, `>`) or split into tokens (`.`). The payload is published as it is.
//! - **Publishing.** [`Broker::publish`] hands the message to the client's ordered write
//!   queue when its future is first polled; the node's outgoing task polls in call order, so
//!   one node's messages on one subject keep their order. A message larger than the
//!   server's `max_payload` is refused with an error.
//! - **Subscribing.** Each channel is one NATS subscription, forwarded by a task of its own
//!   into the one bounded queue [`Broker::messages`] returns; a full queue makes the task wait
//!   (and async-nats, past its per-subscription capacity, drops for that slow consumer and
//!   reports it). [`Broker::subscribe`] resolves once the server has acknowledged the
//!   subscription (a flush: PING/PONG after the SUB). The client re-subscribes everything after
//!   a reconnect itself.
//! - **Health.** Healthy while the client's connection state is `Connected`.
//! - **History.** None (no [`Broker::supports_history`]): a node with history configured does
//!   not start on this broker. (JetStream would keep it; not yet.)
#![warn(missing_docs)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use crosswire_core::{BoxFuture, Broker, BrokerError, BrokerHealth, BrokerMessage};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a NATS configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No server URL was given.
    #[error("no NATS server URL given")]
    NoServers,
    /// A URL is not a `nats://` (or `tls://`) URL.
    #[error("not a NATS URL: {0:?}")]
    BadUrl(String),
    /// A setting is out of range; the text names it.
    #[error("invalid NATS configuration: {0}")]
    Invalid(&'static str),
}

/// Why [`NatsBroker::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The client could not be made.
    #[error("NATS: {0}")]
    Nats(#[from] async_nats::ConnectError),
}

/// How a [`NatsBroker`] connects.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NatsConfig {
    /// The servers of one NATS cluster (`nats://host:port`); the client connects to one and
    /// fails over to the others.
    pub urls: Vec<String>,
    /// How long one connection attempt may take. Default: 5 s.
    pub connect_timeout: Duration,
    /// Received messages buffered for the node before the subscription tasks wait. Default:
    /// 65,536.
    pub message_queue: usize,
    /// Messages async-nats buffers per subscription before it drops for a slow consumer.
    /// Default: 65,536.
    pub subscription_capacity: usize,
    /// The client name the servers show (`connz`). Default: `crosswire`.
    pub client_name: String,
    /// How long a subscribe waits for the server to confirm it has the subscription.
    /// Default: 5 s.
    pub subscribe_timeout: Duration,
}

impl NatsConfig {
    /// A configuration for the servers at `urls`, with the defaults above.
    pub fn from_urls<I, S>(urls: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let urls: Vec<String> = urls.into_iter().map(Into::into).collect();
        let config = Self {
            urls,
            connect_timeout: Duration::from_secs(5),
            message_queue: 65_536,
            subscription_capacity: 65_536,
            client_name: "crosswire".to_string(),
            subscribe_timeout: Duration::from_secs(5),
        };
        config.validate()?;
        Ok(config)
    }

    /// Sets [`message_queue`](Self::message_queue).
    pub fn with_message_queue(mut self, messages: usize) -> Self {
        self.message_queue = messages;
        self
    }

    /// Sets [`client_name`](Self::client_name), e.g. to the crosswire node's name.
    pub fn with_client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = name.into();
        self
    }

    /// Sets [`subscribe_timeout`](Self::subscribe_timeout).
    pub fn with_subscribe_timeout(mut self, timeout: Duration) -> Self {
        self.subscribe_timeout = timeout;
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.urls.is_empty() {
            return Err(ConfigError::NoServers);
        }
        for url in &self.urls {
            let scheme_ok = ["nats://", "tls://"].iter().any(|s| url.starts_with(s));
            if !scheme_ok || url.parse::<async_nats::ServerAddr>().is_err() {
                return Err(ConfigError::BadUrl(url.clone()));
            }
        }
        if self.subscribe_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "the subscribe timeout must not be zero",
            ));
        }
        if self.message_queue == 0 || self.subscription_capacity == 0 {
            return Err(ConfigError::Invalid(
                "queues must hold at least one message",
            ));
        }
        Ok(())
    }
}

/// The NATS subject of a crosswire channel: one token, with every byte outside
/// `A-Z a-z 0-9 - _ :` written as `%XX`.
pub fn subject_of(channel: &str) -> String {
    let mut subject = String::with_capacity(channel.len());
    for &b in channel.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':') {
            subject.push(char::from(b));
        } else {
            subject.push_str(&format!("%{b:02X}"));
        }
    }
    if subject.is_empty() {
        subject.push_str("%00");
    }
    subject
}

/// A [`Broker`] over one NATS client connection.
pub struct NatsBroker {
    client: async_nats::Client,
    tx: mpsc::Sender<BrokerMessage>,
    rx: Mutex<Option<mpsc::Receiver<BrokerMessage>>>,
    /// The forwarding task of each subscribed channel.
    subscriptions: Arc<Mutex<HashMap<Arc<str>, AbortHandle>>>,
    subscribe_timeout: Duration,
}

impl std::fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBroker")
            .field("state", &self.client.connection_state())
            .finish_non_exhaustive()
    }
}

impl Drop for NatsBroker {
    fn drop(&mut self) {
        for (_, task) in lock(&self.subscriptions).drain() {
            task.abort();
        }
    }
}

impl NatsBroker {
    /// Validates `config` and makes the client (call inside a tokio runtime). It returns at
    /// once: the connection is made in the background, and retried (across the servers) for
    /// as long as the broker lives; [`Broker::health`] tells when it is up.
    pub async fn connect(config: NatsConfig) -> Result<Self, ConnectError> {
        config.validate()?;
        let client = async_nats::ConnectOptions::new()
            .name(&config.client_name)
            .connection_timeout(config.connect_timeout)
            .subscription_capacity(config.subscription_capacity)
            .max_reconnects(None)
            .retry_on_initial_connect()
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("nats connected"),
                    async_nats::Event::SlowConsumer(sid) => {
                        tracing::warn!(sid, "nats dropped messages for a slow subscription")
                    }
                    other => tracing::warn!(event = %other, "nats connection event"),
                }
            })
            .connect(config.urls.clone())
            .await?;
        let (tx, rx) = mpsc::channel(config.message_queue);
        Ok(Self {
            client,
            tx,
            rx: Mutex::new(Some(rx)),
            subscriptions: Arc::new(Mutex::new(HashMap::new())),
            subscribe_timeout: config.subscribe_timeout,
        })
    }

    /// Whether the client is connected to a server right now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}

/// Forwards one subscription's messages to the node's queue until either side ends.
async fn forward(
    channel: Arc<str>,
    mut subscriber: async_nats::Subscriber,
    tx: mpsc::Sender<BrokerMessage>,
) {
    while let Some(message) = subscriber.next().await {
        let received = BrokerMessage::new(Arc::clone(&channel), message.payload);
        if tx.send(received).await.is_err() {
            return;
        }
    }
}

/// Waits until the server has processed everything this client sent before (a SUB among
/// it). async-nats's `flush` only writes the socket, so a request goes to a fresh inbox
/// subject nobody listens on: the server answers "no responders" once it got that far.
/// In a NATS cluster this is this client's server; the others learn of the interest
/// through their routes a moment later.
async fn synced(client: &async_nats::Client, timeout: Duration) -> Result<(), BrokerError> {
    let request = async_nats::Request::new().timeout(Some(timeout));
    match client.send_request(client.new_inbox(), request).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => Ok(()),
        Err(e) => Err(backend("subscribe", e)),
    }
}

fn backend(what: &str, e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Backend(format!("nats {what}: {e}"))
}

impl Broker for NatsBroker {
    fn publish(
        &self,
        channel: &str,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<(), BrokerError>> {
        if !self.is_connected() {
            return Box::pin(async { Err(BrokerError::Unavailable) });
        }
        let client = self.client.clone();
        let subject = subject_of(channel);
        Box::pin(async move {
            client
                .publish(subject, payload)
                .await
                .map_err(|e| backend("publish", e))
        })
    }

    fn subscribe(&self, channel: &str) -> BoxFuture<'static, Result<(), BrokerError>> {
        let client = self.client.clone();
        let channel: Arc<str> = Arc::from(channel);
        let tx = self.tx.clone();
        let subscriptions = Arc::clone(&self.subscriptions);
        let timeout = self.subscribe_timeout;
        Box::pin(async move {
            if lock(&subscriptions).contains_key(&channel) {
                return Ok(());
            }
            let subscriber = client
                .subscribe(subject_of(&channel))
                .await
                .map_err(|e| backend("subscribe", e))?;
            let task = tokio::spawn(forward(Arc::clone(&channel), subscriber, tx));
            if let Some(earlier) = lock(&subscriptions).insert(channel, task.abort_handle()) {
                earlier.abort();
            }
            synced(&client, timeout).await
        })
    }

    fn unsubscribe(&self, channel: &str) -> BoxFuture<'static, Result<(), BrokerError>> {
        // Dropping the subscriber (the task's) sends the UNSUB.
        if let Some(task) = lock(&self.subscriptions).remove(channel) {
            task.abort();
        }
        Box::pin(async { Ok(()) })
    }

    fn messages(&self) -> Result<mpsc::Receiver<BrokerMessage>, BrokerError> {
        lock(&self.rx).take().ok_or(BrokerError::AlreadyAttached)
    }

    fn health(&self) -> BrokerHealth {
        let up = self.is_connected();
        BrokerHealth::new(up, usize::from(up), usize::from(up), 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_become_single_tokens_without_wildcards() {
        assert_eq!(
            subject_of("crosswire:ws:room:chat"),
            "crosswire:ws:room:chat"
        );
        assert_eq!(
            subject_of("crosswire:ws:room:a.b"),
            "crosswire:ws:room:a%2Eb"
        );
        assert_eq!(subject_of("x*>y z"), "x%2A%3Ey%20z");
        assert_eq!(subject_of("ü"), "%C3%BC");
        assert_eq!(subject_of(""), "%00");
        // Distinct channels stay distinct.
        assert_ne!(subject_of("a.b"), subject_of("a%2Eb"));
    }

    #[test]
    fn configs_are_checked() {
        assert!(NatsConfig::from_urls(["nats://127.0.0.1:4222"]).is_ok());
        assert_eq!(
            NatsConfig::from_urls(Vec::<String>::new()).err(),
            Some(ConfigError::NoServers)
        );
        assert!(matches!(
            NatsConfig::from_urls(["redis://127.0.0.1:6379"]),
            Err(ConfigError::BadUrl(_))
        ));
    }
}

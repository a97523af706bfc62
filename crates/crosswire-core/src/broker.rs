//! A [`Broker`] moves opaque byte messages on named channels between nodes: publish,
//! subscribe, unsubscribe, a stream of received messages, and a health report. Nothing about
//! rooms, ids or envelopes leaks into it, so Redis pub/sub, the in-process [`MemoryHub`], and
//! later NATS or Redis Cluster fit behind the same trait. A node holds it as
//! `Arc<dyn Broker>`: no type parameter reaches handler signatures.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::history::{MemoryHistory, Position, Retention, StreamRead};

/// Locks a mutex, ignoring poisoning: every critical section here is a few map operations
/// that leave the data consistent even if a panic unwound through one.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A boxed future, as returned by [`Broker`] methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A message received on a subscribed channel.
#[derive(Debug, Clone)]
pub struct BrokerMessage {
    /// The channel it arrived on.
    pub channel: Arc<str>,
    /// The bytes as published.
    pub payload: Bytes,
    /// Its place in its stream, for a message published with
    /// [`Broker::publish_recorded`]; `None` otherwise.
    pub position: Option<Position>,
}

impl BrokerMessage {
    /// A message received on `channel`, without a position.
    pub fn new(channel: Arc<str>, payload: Bytes) -> Self {
        Self {
            channel,
            payload,
            position: None,
        }
    }
}

/// A broker operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// No broker connection is healthy; the message was not published. Retry later or
    /// surface the outage.
    #[error("no healthy broker connection")]
    Unavailable,
    /// The message stream was already taken by a node; a broker serves one node.
    #[error("broker message stream already taken")]
    AlreadyAttached,
    /// A backend-specific failure; the text says what.
    #[error("broker error: {0}")]
    Backend(String),
    /// This broker does not do what was asked (e.g. keep history).
    #[error("this broker does not support {0}")]
    Unsupported(&'static str),
}

/// Health of a broker as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerHealth {
    /// Whether it can publish and receive right now.
    pub healthy: bool,
    /// Connections able to publish.
    pub healthy_publishers: usize,
    /// Connections whose subscriptions are confirmed.
    pub healthy_subscribers: usize,
    /// Connections configured.
    pub total: usize,
}

impl BrokerHealth {
    /// A health report, for [`Broker`] implementations.
    pub fn new(
        healthy: bool,
        healthy_publishers: usize,
        healthy_subscribers: usize,
        total: usize,
    ) -> Self {
        Self {
            healthy,
            healthy_publishers,
            healthy_subscribers,
            total,
        }
    }
}

/// Counters of one connection of a broker to one of its servers (a Redis node, a NATS
/// server), from [`Broker::node_stats`], for metrics and dashboards.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerNodeStats {
    /// The server's name (unique within the broker).
    pub name: Arc<str>,
    /// Whether its publish connection is up.
    pub publisher_healthy: bool,
    /// Whether its subscribe connection is up with every subscription confirmed.
    pub subscriber_healthy: bool,
    /// Round trip of the last health check (a PING), if one was answered.
    pub ping_latency: Option<std::time::Duration>,
    /// Messages published through it.
    pub published: u64,
    /// Messages whose publish failed on it (each then retried elsewhere, or failed).
    pub publish_failures: u64,
    /// Messages published through it after failing on another server.
    pub retries: u64,
    /// Messages received from it.
    pub received: u64,
    /// Round trip of each publish (or pipelined batch of publishes).
    pub publish_latency: crate::HistogramSnapshot,
}

impl BrokerNodeStats {
    /// The counters of server `name`, all zero, for [`Broker`] implementations to fill in.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            publisher_healthy: false,
            subscriber_healthy: false,
            ping_latency: None,
            published: 0,
            publish_failures: 0,
            retries: 0,
            received: 0,
            publish_latency: crate::HistogramSnapshot::default(),
        }
    }
}

/// Moves byte messages between nodes on named channels.
///
/// # Contract
/// - **Order:** messages published by successive calls on one channel are sent in call order
///   when their futures are first polled in call order (the node awaits its operations one
///   after the other, in the order it made them). A broker may queue a message when
///   `publish` is *called* (the Redis broker does, so the node's batch is pipelined) or when
///   its future is first polled (the hub and the NATS broker), never later than that.
/// - **Echo:** a node receives its own messages on channels it subscribes to; the node drops
///   them.
/// - **Failure:** a publish that cannot be carried out resolves to an error; it never hangs
///   past the backend's own timeout.
pub trait Broker: Send + Sync + 'static {
    /// Publishes `payload` on `channel`. Resolves when the broker accepted it.
    fn publish(&self, channel: &str, payload: Bytes)
        -> BoxFuture<'static, Result<(), BrokerError>>;

    /// Starts receiving messages of `channel`. Resolves when the subscription is confirmed.
    fn subscribe(&self, channel: &str) -> BoxFuture<'static, Result<(), BrokerError>>;

    /// Stops receiving messages of `channel`.
    fn unsubscribe(&self, channel: &str) -> BoxFuture<'static, Result<(), BrokerError>>;

    /// The stream of received messages; may be taken once.
    fn messages(&self) -> Result<mpsc::Receiver<BrokerMessage>, BrokerError>;

    /// Current health.
    fn health(&self) -> BrokerHealth;

    /// Counters per server the broker talks to; empty for a broker without separate servers
    /// (the default).
    fn node_stats(&self) -> Vec<BrokerNodeStats> {
        Vec::new()
    }

    /// Whether this broker keeps history ([`Broker::publish_recorded`] and
    /// [`Broker::read_stream`] work). A node with history configured refuses to start on a
    /// broker without. Default: false.
    fn supports_history(&self) -> bool {
        false
    }

    /// Whether this broker keeps history only for messages whose channel is stored with their
    /// stream (a Redis Cluster: one script, so one slot, for both): then a node keeps history
    /// only with one channel per room, and none per id. A node configured otherwise refuses
    /// to start. Default: false.
    fn history_needs_room_channels(&self) -> bool {
        false
    }

    /// Appends `payload` to history stream `stream` (trimmed to `retention`) and publishes it
    /// on `channel` with its new [`Position`], in one step: every subscriber, this node
    /// included (no echo is dropped here), receives it with
    /// [`BrokerMessage::position`] set, in offset order. Ordered like
    /// [`Broker::publish`]. The default refuses: [`BrokerError::Unsupported`].
    fn publish_recorded(
        &self,
        channel: &str,
        stream: &str,
        payload: Bytes,
        retention: Retention,
    ) -> BoxFuture<'static, Result<(), BrokerError>> {
        let _ = (channel, stream, payload, retention);
        Box::pin(async { Err(BrokerError::Unsupported("history")) })
    }

    /// Reads history stream `stream`: its epoch and last offset, and the messages after
    /// `since` that `retention` still keeps. The default refuses:
    /// [`BrokerError::Unsupported`].
    fn read_stream(
        &self,
        stream: &str,
        since: Option<u64>,
        retention: Retention,
    ) -> BoxFuture<'static, Result<StreamRead<Bytes>, BrokerError>> {
        let _ = (stream, since, retention);
        Box::pin(async { Err(BrokerError::Unsupported("history")) })
    }
}

/// Capacity of a [`MemoryBroker`]'s inbound queue. A publisher waits when a receiving node
/// is this far behind, so memory stays bounded and nothing is dropped.
const MEMORY_QUEUE: usize = 8192;

/// An in-process broker hub: every [`MemoryBroker`] made from one hub reaches the others.
/// Several nodes in one process (tests, a single binary running many logical nodes)
/// deliver to each other's sockets through it exactly as through Redis.
#[derive(Clone, Default)]
pub struct MemoryHub {
    inner: Arc<Mutex<HubInner>>,
    /// The hub's history. An async lock: a recorded publish holds it from taking its offset
    /// until every receiver has it queued, so receivers see each stream in offset order.
    history: Arc<tokio::sync::Mutex<MemoryHistory<Bytes>>>,
}

#[derive(Default)]
struct HubInner {
    next: u64,
    nodes: HashMap<u64, HubNode>,
}

struct HubNode {
    channels: HashSet<Arc<str>>,
    tx: mpsc::Sender<BrokerMessage>,
}

impl std::fmt::Debug for MemoryHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryHub").finish_non_exhaustive()
    }
}

impl MemoryHub {
    /// A new, empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// A broker attached to this hub, for one node.
    pub fn broker(&self) -> MemoryBroker {
        let (tx, rx) = mpsc::channel(MEMORY_QUEUE);
        let mut inner = lock(&self.inner);
        inner.next += 1;
        let key = inner.next;
        inner.nodes.insert(
            key,
            HubNode {
                channels: HashSet::new(),
                tx,
            },
        );
        MemoryBroker {
            hub: Arc::downgrade(&self.inner),
            history: Arc::downgrade(&self.history),
            key,
            rx: Mutex::new(Some(rx)),
        }
    }
}

/// One node's connection to a [`MemoryHub`].
pub struct MemoryBroker {
    hub: Weak<Mutex<HubInner>>,
    history: Weak<tokio::sync::Mutex<MemoryHistory<Bytes>>>,
    key: u64,
    rx: Mutex<Option<mpsc::Receiver<BrokerMessage>>>,
}

impl Drop for MemoryBroker {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            lock(&hub).nodes.remove(&self.key);
        }
    }
}

impl Broker for MemoryBroker {
    fn publish(
        &self,
        channel: &str,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<(), BrokerError>> {
        // The receivers are chosen now, at call time; sending happens when the future is
        // polled. Each node's queue is FIFO, so successive publishes keep their order when
        // their futures are awaited in call order (see the trait's contract).
        let channel: Arc<str> = Arc::from(channel);
        let targets = subscribers(&self.hub, &channel);
        Box::pin(async move {
            let targets = targets?;
            for tx in targets {
                // A node that went away is simply skipped, as Redis would.
                let _ = tx
                    .send(BrokerMessage::new(Arc::clone(&channel), payload.clone()))
                    .await;
            }
            Ok(())
        })
    }

    fn supports_history(&self) -> bool {
        true
    }

    fn publish_recorded(
        &self,
        channel: &str,
        stream: &str,
        payload: Bytes,
        retention: Retention,
    ) -> BoxFuture<'static, Result<(), BrokerError>> {
        let (hub, history) = (self.hub.clone(), self.history.clone());
        let channel: Arc<str> = Arc::from(channel);
        let stream = stream.to_string();
        Box::pin(async move {
            let history = history.upgrade().ok_or(BrokerError::Unavailable)?;
            let mut history = history.lock().await;
            let targets = subscribers(&hub, &channel)?;
            let position = history.append(
                &stream,
                payload.clone(),
                &retention,
                std::time::Instant::now(),
            );
            for tx in targets {
                let message = BrokerMessage {
                    channel: Arc::clone(&channel),
                    payload: payload.clone(),
                    position: Some(position.clone()),
                };
                let _ = tx.send(message).await;
            }
            Ok(())
        })
    }

    fn read_stream(
        &self,
        stream: &str,
        since: Option<u64>,
        retention: Retention,
    ) -> BoxFuture<'static, Result<StreamRead<Bytes>, BrokerError>> {
        let history = self.history.clone();
        let stream = stream.to_string();
        Box::pin(async move {
            let history = history.upgrade().ok_or(BrokerError::Unavailable)?;
            let read =
                history
                    .lock()
                    .await
                    .read(&stream, since, &retention, std::time::Instant::now());
            Ok(read)
        })
    }

    fn subscribe(&self, channel: &str) -> BoxFuture<'static, Result<(), BrokerError>> {
        let result = self.with_channels(|channels| {
            channels.insert(Arc::from(channel));
        });
        Box::pin(async move { result })
    }

    fn unsubscribe(&self, channel: &str) -> BoxFuture<'static, Result<(), BrokerError>> {
        let result = self.with_channels(|channels| {
            channels.remove(channel);
        });
        Box::pin(async move { result })
    }

    fn messages(&self) -> Result<mpsc::Receiver<BrokerMessage>, BrokerError> {
        lock(&self.rx).take().ok_or(BrokerError::AlreadyAttached)
    }

    fn health(&self) -> BrokerHealth {
        let up = self.hub.upgrade().is_some();
        BrokerHealth {
            healthy: up,
            healthy_publishers: usize::from(up),
            healthy_subscribers: usize::from(up),
            total: 1,
        }
    }
}

/// The queues of the hub's nodes subscribed to `channel`.
fn subscribers(
    hub: &Weak<Mutex<HubInner>>,
    channel: &str,
) -> Result<Vec<mpsc::Sender<BrokerMessage>>, BrokerError> {
    let hub = hub.upgrade().ok_or(BrokerError::Unavailable)?;
    let inner = lock(&hub);
    Ok(inner
        .nodes
        .values()
        .filter(|n| n.channels.contains(channel))
        .map(|n| n.tx.clone())
        .collect())
}

impl MemoryBroker {
    /// Changes this node's channel set in the hub.
    fn with_channels(
        &self,
        change: impl FnOnce(&mut HashSet<Arc<str>>),
    ) -> Result<(), BrokerError> {
        let hub = self.hub.upgrade().ok_or(BrokerError::Unavailable)?;
        if let Some(node) = lock(&hub).nodes.get_mut(&self.key) {
            change(&mut node.channels);
        }
        Ok(())
    }

    /// Channels this broker is subscribed to (for tests and diagnostics).
    pub fn subscriptions(&self) -> Vec<String> {
        let Some(hub) = self.hub.upgrade() else {
            return Vec::new();
        };
        let inner = lock(&hub);
        let mut v: Vec<String> = inner
            .nodes
            .get(&self.key)
            .map(|n| n.channels.iter().map(|c| c.to_string()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

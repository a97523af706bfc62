//! [`RedisBroker`]: the node table, publish routing with retry, subscriptions and health.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use crosswire_core::{
    BoxFuture, Broker, BrokerError, BrokerHealth, BrokerMessage, BrokerNodeStats, Retention,
    StreamRead,
};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::config::{ConfigError, RedisConfig, RedisNodeConfig};
use crate::health::NodeStatus;
use crate::shared::{
    lock, read, write, Node, NodeCounters, PublishJob, Record, Shared, SubscribeCommand,
    SubscribeOutcome, NO_LATENCY,
};
use crate::{publisher, subscriber};

/// Why [`RedisBroker::add_node`] refused a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddNodeError {
    /// The URL could not be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A node with this name is already part of the broker; name the new one differently.
    #[error("a Redis node named {0:?} is already configured")]
    DuplicateName(String),
}

/// A [`Broker`] over one or more Redis nodes as equal peers.
///
/// Every node is subscribed to every channel; each publish goes to one healthy node (two with
/// redundancy 2) chosen by the [`PublishStrategy`](crate::PublishStrategy). See the crate docs
/// for the whole design. Dropping the broker closes its connections.
pub struct RedisBroker {
    shared: Arc<Shared>,
    messages: Mutex<Option<mpsc::Receiver<BrokerMessage>>>,
    spawner: Spawner,
}

/// Starts the connection tasks of a node; every task is aborted when the broker drops.
#[derive(Clone)]
struct Spawner {
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Spawner {
    fn start_node(&self, config: RedisNodeConfig) {
        let (publish_tx, publish_rx) = mpsc::channel(self.shared.config.publish_queue);
        let (subscribe_tx, subscribe_rx) = mpsc::unbounded_channel();
        let node = Arc::new(Node {
            name: Arc::from(config.name.as_str()),
            host: Arc::from(config.host.as_str()),
            config,
            publisher_healthy: AtomicBool::new(false),
            subscriber_healthy: AtomicBool::new(false),
            latency_micros: AtomicU64::new(NO_LATENCY),
            publish_tx,
            subscribe_tx,
            check_now: Notify::new(),
            counters: NodeCounters::default(),
            connection: Mutex::new(None),
        });
        tracing::info!(node = %node.name, url = %crate::config::redact(&node.config.url), "redis node added");
        write(&self.shared.nodes).push(Arc::clone(&node));
        let publisher = self.runtime.spawn(publisher::run(
            Arc::clone(&self.shared),
            Arc::clone(&node),
            publish_rx,
        ));
        let subscriber = self.runtime.spawn(subscriber::run(
            Arc::clone(&self.shared),
            node,
            subscribe_rx,
        ));
        let mut tasks = lock(&self.tasks);
        tasks.push(publisher.abort_handle());
        tasks.push(subscriber.abort_handle());
    }

    /// Starts the task keeping a Redis Cluster's slot map current.
    fn start_topology(&self) {
        let spawner = self.clone();
        let task = self.runtime.spawn(crate::cluster::run(
            Arc::clone(&self.shared),
            move |config| spawner.start_node(config),
        ));
        lock(&self.tasks).push(task.abort_handle());
    }
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("nodes", &self.nodes())
            .finish_non_exhaustive()
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        for task in lock(&self.spawner.tasks).drain(..) {
            task.abort();
        }
    }
}

impl RedisBroker {
    /// Validates `config` and starts connecting to every node in the background (call inside
    /// a tokio runtime). Returns at once; nodes join the publish set as they become healthy
    /// (watch [`RedisBroker::health`] or the health callback).
    pub fn new(config: RedisConfig) -> Result<Self, ConfigError> {
        Self::start(config, false)
    }

    /// A broker over one Redis Cluster (Redis 7 or later), with sharded pub/sub:
    /// `config.nodes` are seeds — any servers of the cluster, masters or replicas — from which
    /// the slot map is read; every other server is found from it and reached with the first
    /// seed's credentials, db and TLS settings. Each channel is `SPUBLISH`ed on the master of
    /// its slot and `SSUBSCRIBE`d on one server of its shard (its master, or a replica:
    /// [`RedisConfig::shard_subscriptions`]), so the traffic spreads over the shards, and
    /// publishes wait (up to twice the command timeout) while a shard has no master. The
    /// [`PublishStrategy`](crate::PublishStrategy) does not apply and redundancy must be 1.
    /// History is kept for rooms with a channel of their own
    /// ([`Broker::history_needs_room_channels`]). See the crate docs, "Redis Cluster".
    pub fn cluster(config: RedisConfig) -> Result<Self, ConfigError> {
        if config.redundancy != 1 {
            return Err(ConfigError::InvalidRedundancy(config.redundancy));
        }
        Self::start(config, true)
    }

    fn start(config: RedisConfig, cluster: bool) -> Result<Self, ConfigError> {
        config.validate()?;
        // redis-rs builds its rustls config from the process-wide crypto provider: make sure
        // there is one (ring), unless the application installed its own.
        #[cfg(feature = "tls")]
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ConfigError::NoRuntime)?;
        let (tx, rx) = mpsc::channel(config.message_queue);
        let nodes = config.nodes.clone();
        let cluster = cluster.then(|| crate::slots::ClusterState::new(nodes[0].clone()));
        let shared = Arc::new(Shared {
            config,
            nodes: RwLock::new(Vec::new()),
            channels: Mutex::new(HashSet::new()),
            messages: tx,
            turn: AtomicUsize::new(0),
            cluster,
        });
        let spawner = Spawner {
            shared: Arc::clone(&shared),
            runtime,
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        for node in nodes {
            spawner.start_node(node);
        }
        if shared.sharded() {
            spawner.start_topology();
        }
        Ok(Self {
            shared,
            messages: Mutex::new(Some(rx)),
            spawner,
        })
    }

    /// Adds a Redis node at run time, from its URL: it connects, subscribes to every current
    /// channel and joins the publish set once healthy.
    pub fn add_node(&self, url: &str) -> Result<(), AddNodeError> {
        self.add_node_with_config(RedisNodeConfig::new(url)?)
    }

    /// [`RedisBroker::add_node`] with a full node configuration (e.g. a custom name).
    pub fn add_node_with_config(&self, node: RedisNodeConfig) -> Result<(), AddNodeError> {
        if read(&self.shared.nodes)
            .iter()
            .any(|n| *n.name == *node.name)
        {
            return Err(AddNodeError::DuplicateName(node.name));
        }
        self.spawner.start_node(node);
        Ok(())
    }

    /// Every node's current state.
    pub fn nodes(&self) -> Vec<NodeStatus> {
        read(&self.shared.nodes)
            .iter()
            .map(|n| {
                let micros = n.latency_micros.load(Ordering::Relaxed);
                NodeStatus {
                    name: Arc::clone(&n.name),
                    host: Arc::clone(&n.host),
                    port: n.config.port,
                    publisher_healthy: n.publisher_healthy.load(Ordering::Acquire),
                    subscriber_healthy: n.subscriber_healthy.load(Ordering::Acquire),
                    latency: (micros != NO_LATENCY).then(|| Duration::from_micros(micros)),
                }
            })
            .collect()
    }

    /// The node(s) a publish on `channel` would go to right now (empty when none is
    /// healthy). With [`PublishStrategy::ChannelAffine`](crate::PublishStrategy) this is the
    /// channel's home node; with the other strategies each call may answer differently.
    pub fn publish_targets(&self, channel: &str) -> Vec<Arc<str>> {
        if let Some(cluster) = &self.shared.cluster {
            return cluster.master_of(channel).into_iter().collect();
        }
        self.shared
            .choose(channel, self.shared.config.redundancy, &[])
            .into_iter()
            .map(|n| Arc::clone(&n.name))
            .collect()
    }
}

/// A [`BrokerHealth`] with these values.
fn broker_health(
    healthy: bool,
    publishers: usize,
    subscribers: usize,
    total: usize,
) -> BrokerHealth {
    BrokerHealth::new(healthy, publishers, subscribers, total)
}

impl Broker for RedisBroker {
    fn publish(
        &self,
        channel: &str,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<(), BrokerError>> {
        // The target node(s) are chosen and the message queued on them now, at call time:
        // each node's queue is FIFO and drained in order onto one connection, so successive
        // publishes of one channel keep their order on a node.
        let shared = &self.shared;
        if let Some(cluster) = &shared.cluster {
            return submit_sharded(shared, cluster, channel, payload, None);
        }
        let targets = shared.choose(channel, shared.config.redundancy, &[]);
        if targets.is_empty() {
            return Box::pin(async { Err(BrokerError::Unavailable) });
        }
        let channel: Arc<str> = Arc::from(channel);
        let started = Instant::now();
        let names: Vec<Arc<str>> = targets.iter().map(|n| Arc::clone(&n.name)).collect();
        let mut replies = Vec::with_capacity(targets.len());
        for node in &targets {
            let (tx, rx) = oneshot::channel();
            let job = PublishJob {
                channel: Arc::clone(&channel),
                payload: payload.clone(),
                reply: Some(tx),
                started,
                tried: vec![Arc::clone(&node.name)],
                siblings: names.iter().filter(|n| **n != node.name).cloned().collect(),
                record: None,
            };
            if let Some(job) = Shared::enqueue(node, job) {
                shared.reroute(job, "publish queue full");
            }
            replies.push(rx);
        }
        Box::pin(outcome(replies, shared.deadline(started)))
    }

    fn supports_history(&self) -> bool {
        true
    }

    fn history_needs_room_channels(&self) -> bool {
        self.shared.sharded()
    }

    fn publish_recorded(
        &self,
        channel: &str,
        stream: &str,
        payload: Bytes,
        retention: Retention,
    ) -> BoxFuture<'static, Result<(), BrokerError>> {
        // One node, the stream's home: the offsets of a stream come from one place. Queued
        // now, like a plain publish, so successive ones keep their order.
        let shared = &self.shared;
        if let Some(cluster) = &shared.cluster {
            // One script touches the stream's keys and publishes on the channel: in a cluster
            // all three must share a slot (a room channel and its stream do: same hash tag).
            let (channel_slot, stream_slot) = (
                crate::slots::slot_of(channel.as_bytes()),
                crate::slots::slot_of(stream.as_bytes()),
            );
            if channel_slot != stream_slot {
                let error = format!(
                    "recorded publish on {channel:?} (slot {channel_slot}) to stream {stream:?} \
                     (slot {stream_slot}): a Redis Cluster keeps history only for channels in \
                     their stream's slot (room channels)"
                );
                return Box::pin(async move { Err(BrokerError::Backend(error)) });
            }
            let record = Record {
                stream: Arc::from(stream),
                retention,
            };
            return submit_sharded(shared, cluster, channel, payload, Some(record));
        }
        let Some(node) = shared.stream_home(stream, &[]) else {
            return Box::pin(async { Err(BrokerError::Unavailable) });
        };
        let started = Instant::now();
        let (tx, rx) = oneshot::channel();
        let job = PublishJob {
            channel: Arc::from(channel),
            payload,
            reply: Some(tx),
            started,
            tried: vec![Arc::clone(&node.name)],
            siblings: Vec::new(),
            record: Some(Record {
                stream: Arc::from(stream),
                retention,
            }),
        };
        if let Some(job) = Shared::enqueue(&node, job) {
            shared.reroute(job, "publish queue full");
        }
        Box::pin(outcome(vec![rx], shared.deadline(started)))
    }

    fn read_stream(
        &self,
        stream: &str,
        since: Option<u64>,
        retention: Retention,
    ) -> BoxFuture<'static, Result<StreamRead<Bytes>, BrokerError>> {
        let stream = stream.to_string();
        let limit = self.shared.config.command_timeout;
        if self.shared.sharded() {
            return Box::pin(read_sharded(
                Arc::clone(&self.shared),
                stream,
                since,
                retention,
            ));
        }
        // The stream's home: rendezvous hashing over the healthy nodes.
        let connection = self
            .shared
            .stream_home(&stream, &[])
            .and_then(|node| lock(&node.connection).clone());
        Box::pin(async move {
            let mut connection = connection.ok_or(BrokerError::Unavailable)?;
            let read = crate::history::read(&mut connection, false, &stream, since, &retention);
            tokio::time::timeout(limit, read).await.map_err(|_| {
                BrokerError::Backend(format!("history read of {stream:?} timed out"))
            })?
        })
    }

    fn subscribe(&self, channel: &str) -> BoxFuture<'static, Result<(), BrokerError>> {
        let channel = {
            let mut channels = lock(&self.shared.channels);
            match channels.get(channel) {
                Some(c) => Arc::clone(c),
                None => {
                    let c: Arc<str> = Arc::from(channel);
                    channels.insert(Arc::clone(&c));
                    c
                }
            }
        };
        if self.shared.sharded() {
            return self.subscribe_sharded(channel);
        }
        let replies =
            self.ask_subscribers(|reply| SubscribeCommand::Subscribe(Arc::clone(&channel), reply));
        let timeout = self.shared.config.command_timeout + Duration::from_millis(250);
        Box::pin(async move {
            let outcomes = collect(replies, timeout).await;
            let confirmed = outcomes
                .iter()
                .any(|o| matches!(o, SubscribeOutcome::Confirmed));
            let failure = outcomes.into_iter().find_map(|o| match o {
                SubscribeOutcome::Failed(e) => Some(e),
                _ => None,
            });
            match (confirmed, failure) {
                (true, _) => Ok(()),
                (false, Some(e)) => Err(BrokerError::Backend(format!(
                    "subscribe to {channel:?} failed: {e}"
                ))),
                (false, None) => Err(BrokerError::Unavailable),
            }
        })
    }

    fn unsubscribe(&self, channel: &str) -> BoxFuture<'static, Result<(), BrokerError>> {
        let removed = lock(&self.shared.channels).take(channel);
        let Some(channel) = removed else {
            return Box::pin(async { Ok(()) });
        };
        let replies = match &self.shared.cluster {
            Some(cluster) => {
                let carrier = cluster.unassign(&channel).and_then(|name| self.node(&name));
                carrier
                    .and_then(|node| {
                        let (tx, rx) = oneshot::channel();
                        let command = SubscribeCommand::Unsubscribe(Arc::clone(&channel), tx);
                        node.subscribe_tx.send(command).ok().map(|()| rx)
                    })
                    .into_iter()
                    .collect()
            }
            None => self.ask_subscribers(|reply| {
                SubscribeCommand::Unsubscribe(Arc::clone(&channel), reply)
            }),
        };
        let timeout = self.shared.config.command_timeout + Duration::from_millis(250);
        Box::pin(async move {
            let failure = collect(replies, timeout)
                .await
                .into_iter()
                .find_map(|o| match o {
                    SubscribeOutcome::Failed(e) => Some(e),
                    _ => None,
                });
            match failure {
                None => Ok(()),
                Some(e) => Err(BrokerError::Backend(format!(
                    "unsubscribe from {channel:?} failed: {e}"
                ))),
            }
        })
    }

    fn messages(&self) -> Result<mpsc::Receiver<BrokerMessage>, BrokerError> {
        lock(&self.messages)
            .take()
            .ok_or(BrokerError::AlreadyAttached)
    }

    fn node_stats(&self) -> Vec<BrokerNodeStats> {
        read(&self.shared.nodes).iter().map(|n| n.stats()).collect()
    }

    fn health(&self) -> BrokerHealth {
        if let Some(cluster) = &self.shared.cluster {
            let (healthy, publishers, subscribers, total) = cluster.health(&self.shared);
            return broker_health(healthy, publishers, subscribers, total);
        }
        let (publishers, subscribers, total) = self.shared.counts();
        broker_health(
            publishers > 0 && subscribers > 0,
            publishers,
            subscribers,
            total,
        )
    }
}

impl RedisBroker {
    fn node(&self, name: &str) -> Option<Arc<Node>> {
        read(&self.shared.nodes)
            .iter()
            .find(|n| *n.name == *name)
            .cloned()
    }

    /// Cluster mode: `SSUBSCRIBE` on the one server that carries the channel, once the slot
    /// map names one (waiting for it up to the command timeout).
    fn subscribe_sharded(&self, channel: Arc<str>) -> BoxFuture<'static, Result<(), BrokerError>> {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let Some(cluster) = &shared.cluster else {
                return Err(BrokerError::Unavailable);
            };
            let limit = shared.config.command_timeout;
            let deadline = Instant::now() + limit;
            let carrier = loop {
                if let Some(node) = cluster.assign(&shared, &channel) {
                    break node;
                }
                cluster.refresh_now();
                if Instant::now() >= deadline {
                    return Err(BrokerError::Unavailable);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let (tx, rx) = oneshot::channel();
            let command = SubscribeCommand::Subscribe(Arc::clone(&channel), tx);
            if carrier.subscribe_tx.send(command).is_err() {
                return Err(BrokerError::Unavailable);
            }
            match tokio::time::timeout(limit + Duration::from_millis(250), rx).await {
                Ok(Ok(SubscribeOutcome::Confirmed)) => Ok(()),
                Ok(Ok(SubscribeOutcome::Failed(e))) => Err(BrokerError::Backend(format!(
                    "subscribe to {channel:?} on {} failed: {e}",
                    carrier.name
                ))),
                // Subscribed when the server's connection comes back, or moved elsewhere.
                Ok(Ok(SubscribeOutcome::NotConnected)) | Ok(Err(_)) => {
                    Err(BrokerError::Unavailable)
                }
                Err(_) => Err(BrokerError::Backend(format!(
                    "subscribe to {channel:?} on {} not confirmed in time",
                    carrier.name
                ))),
            }
        })
    }

    fn ask_subscribers(
        &self,
        command: impl Fn(oneshot::Sender<SubscribeOutcome>) -> SubscribeCommand,
    ) -> Vec<oneshot::Receiver<SubscribeOutcome>> {
        read(&self.shared.nodes)
            .iter()
            .filter_map(|node| {
                let (tx, rx) = oneshot::channel();
                node.subscribe_tx.send(command(tx)).ok().map(|()| rx)
            })
            .collect()
    }
}

/// Cluster mode: queues a publish on its slot's master (or parks it); its outcome.
fn submit_sharded(
    shared: &Shared,
    cluster: &crate::slots::ClusterState,
    channel: &str,
    payload: Bytes,
    record: Option<Record>,
) -> BoxFuture<'static, Result<(), BrokerError>> {
    let started = Instant::now();
    let (tx, rx) = oneshot::channel();
    let job = PublishJob {
        channel: Arc::from(channel),
        payload,
        reply: Some(tx),
        started,
        tried: Vec::new(),
        siblings: Vec::new(),
        record,
    };
    cluster.submit(shared, job);
    Box::pin(outcome(vec![rx], shared.deadline(started)))
}

/// Cluster mode: reads `stream` on the master of its slot, waiting (up to the command
/// timeout) while the slot has no healthy master, as a publish does.
async fn read_sharded(
    shared: Arc<Shared>,
    stream: String,
    since: Option<u64>,
    retention: Retention,
) -> Result<StreamRead<Bytes>, BrokerError> {
    let Some(cluster) = &shared.cluster else {
        return Err(BrokerError::Unavailable);
    };
    let limit = shared.config.command_timeout;
    let deadline = Instant::now() + limit;
    let mut connection = loop {
        let master = cluster.master_of(&stream).and_then(|name| {
            read(&shared.nodes)
                .iter()
                .find(|n| n.name == name && n.publisher_healthy.load(Ordering::Acquire))
                .cloned()
        });
        if let Some(connection) = master.and_then(|node| lock(&node.connection).clone()) {
            break connection;
        }
        cluster.refresh_now();
        if Instant::now() >= deadline {
            return Err(BrokerError::Unavailable);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let read = crate::history::read(&mut connection, true, &stream, since, &retention);
    tokio::time::timeout_at(deadline.max(Instant::now() + limit), read)
        .await
        .map_err(|_| BrokerError::Backend(format!("history read of {stream:?} timed out")))?
}

/// The outcome of a publish queued on one or more nodes: delivered if any copy was.
async fn outcome(
    replies: Vec<oneshot::Receiver<Result<(), BrokerError>>>,
    deadline: Instant,
) -> Result<(), BrokerError> {
    let mut delivered = false;
    let mut failure = None;
    for reply in replies {
        match tokio::time::timeout_at(deadline, reply).await {
            Ok(Ok(Ok(()))) => delivered = true,
            Ok(Ok(Err(e))) => failure = Some(e),
            Ok(Err(_)) => failure = Some(BrokerError::Backend("publish was dropped".into())),
            Err(_) => failure = Some(BrokerError::Backend("publish not confirmed in time".into())),
        }
    }
    match (delivered, failure) {
        (true, _) => Ok(()),
        (false, Some(e)) => Err(e),
        (false, None) => Err(BrokerError::Unavailable),
    }
}

/// Every node's answer, a missing or late answer counting as a failure.
async fn collect(
    replies: Vec<oneshot::Receiver<SubscribeOutcome>>,
    timeout: Duration,
) -> Vec<SubscribeOutcome> {
    let deadline = Instant::now() + timeout;
    let mut outcomes = Vec::with_capacity(replies.len());
    for reply in replies {
        outcomes.push(match tokio::time::timeout_at(deadline, reply).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => SubscribeOutcome::NotConnected,
            Err(_) => SubscribeOutcome::Failed("not confirmed in time".into()),
        });
    }
    outcomes
}

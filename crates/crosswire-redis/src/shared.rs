//! State shared by the broker handle and its connection tasks: the node table, publish
//! jobs with their retry routing, subscribe commands, and health reporting.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crosswire_core::{BrokerError, BrokerMessage, BrokerNodeStats, Histogram};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

use crate::config::{PublishStrategy, RedisConfig, RedisNodeConfig};
use crate::health::{HealthEvent, HealthEventKind, Role};
use crate::strategy::{pick, Candidate};

pub(crate) use crate::sync::{lock, read, write};

/// Latency value meaning "not measured".
pub(crate) const NO_LATENCY: u64 = u64::MAX;

pub(crate) use crate::job::{PublishJob, Record};

/// What a node's subscriber answers to a subscribe or unsubscribe.
#[derive(Debug)]
pub(crate) enum SubscribeOutcome {
    Confirmed,
    NotConnected,
    Failed(String),
}

/// A request to a node's subscriber task.
pub(crate) enum SubscribeCommand {
    Subscribe(Arc<str>, oneshot::Sender<SubscribeOutcome>),
    Unsubscribe(Arc<str>, oneshot::Sender<SubscribeOutcome>),
}

impl SubscribeCommand {
    pub(crate) fn answer(self, outcome: SubscribeOutcome) {
        let (Self::Subscribe(_, reply) | Self::Unsubscribe(_, reply)) = self;
        let _ = reply.send(outcome);
    }
}

/// One Redis node: its two connections' state and the queues into their tasks.
pub(crate) struct Node {
    pub(crate) config: RedisNodeConfig,
    pub(crate) name: Arc<str>,
    pub(crate) host: Arc<str>,
    pub(crate) publisher_healthy: AtomicBool,
    pub(crate) subscriber_healthy: AtomicBool,
    /// Round trip of the last PING on the publish connection, in microseconds.
    pub(crate) latency_micros: AtomicU64,
    pub(crate) publish_tx: mpsc::Sender<PublishJob>,
    pub(crate) subscribe_tx: mpsc::UnboundedSender<SubscribeCommand>,
    /// Asks the publisher for a PING now: the subscriber saw the node go away, so the
    /// publisher should find out without waiting for its next interval.
    pub(crate) check_now: Notify,
    /// Counters for [`crosswire_core::Broker::node_stats`].
    pub(crate) counters: NodeCounters,
    /// The publish connection while it is up (a clone: redis-rs multiplexes it), for history
    /// reads.
    pub(crate) connection: Mutex<Option<redis::aio::MultiplexedConnection>>,
}

/// One node's publish and receive counters.
#[derive(Default)]
pub(crate) struct NodeCounters {
    pub(crate) published: AtomicU64,
    pub(crate) publish_failures: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) received: AtomicU64,
    /// Round trip of each pipelined batch of PUBLISHes.
    pub(crate) publish_latency: Histogram,
}

impl Node {
    /// The node's counters and health, for metrics.
    pub(crate) fn stats(&self) -> BrokerNodeStats {
        let c = &self.counters;
        let micros = self.latency_micros.load(Ordering::Relaxed);
        let mut stats = BrokerNodeStats::new(Arc::clone(&self.name));
        stats.publisher_healthy = self.publisher_healthy.load(Ordering::Acquire);
        stats.subscriber_healthy = self.subscriber_healthy.load(Ordering::Acquire);
        stats.ping_latency = (micros != NO_LATENCY).then(|| Duration::from_micros(micros));
        stats.published = c.published.load(Ordering::Relaxed);
        stats.publish_failures = c.publish_failures.load(Ordering::Relaxed);
        stats.retries = c.retries.load(Ordering::Relaxed);
        stats.received = c.received.load(Ordering::Relaxed);
        stats.publish_latency = c.publish_latency.snapshot();
        stats
    }

    pub(crate) fn set_latency(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(NO_LATENCY - 1);
        self.latency_micros.store(micros, Ordering::Relaxed);
    }
}

/// State shared by the broker handle and every connection task.
pub(crate) struct Shared {
    pub(crate) config: RedisConfig,
    pub(crate) nodes: RwLock<Vec<Arc<Node>>>,
    /// The channels subscribed to: every subscriber (re)subscribes to all of them.
    pub(crate) channels: Mutex<HashSet<Arc<str>>>,
    pub(crate) messages: mpsc::Sender<BrokerMessage>,
    pub(crate) turn: AtomicUsize,
    /// Set in Redis Cluster mode: the slot map and where each channel lives.
    pub(crate) cluster: Option<crate::slots::ClusterState>,
}

impl Shared {
    /// The channels `node` subscribes to on a fresh connection: all of them, or in cluster
    /// mode the ones it carries.
    pub(crate) fn channels(&self, node: &str) -> Vec<Arc<str>> {
        match &self.cluster {
            Some(cluster) => cluster.channels_of(node),
            None => lock(&self.channels).iter().cloned().collect(),
        }
    }

    /// Whether channels are sharded (`SPUBLISH`/`SSUBSCRIBE`: Redis Cluster mode).
    pub(crate) fn sharded(&self) -> bool {
        self.cluster.is_some()
    }

    /// The healthy node holding history stream `stream` (its home: rendezvous hashing of the
    /// stream name over the healthy nodes, whatever the strategy), skipping `exclude`.
    pub(crate) fn stream_home(&self, stream: &str, exclude: &[Arc<str>]) -> Option<Arc<Node>> {
        self.choose_with(PublishStrategy::ChannelAffine, stream, 1, exclude)
            .pop()
    }

    /// Up to `count` healthy publishers for `channel`, skipping `exclude`.
    pub(crate) fn choose(
        &self,
        channel: &str,
        count: usize,
        exclude: &[Arc<str>],
    ) -> Vec<Arc<Node>> {
        self.choose_with(self.config.strategy, channel, count, exclude)
    }

    fn choose_with(
        &self,
        strategy: PublishStrategy,
        channel: &str,
        count: usize,
        exclude: &[Arc<str>],
    ) -> Vec<Arc<Node>> {
        let nodes = read(&self.nodes);
        let healthy: Vec<&Arc<Node>> = nodes
            .iter()
            .filter(|n| n.publisher_healthy.load(Ordering::Acquire) && !exclude.contains(&n.name))
            .collect();
        let candidates: Vec<Candidate<'_>> = healthy
            .iter()
            .map(|n| Candidate {
                name: &n.name,
                latency_micros: n.latency_micros.load(Ordering::Relaxed),
            })
            .collect();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let random = rand::random::<usize>();
        pick(strategy, channel, &candidates, count, turn, random)
            .into_iter()
            .map(|i| Arc::clone(healthy[i]))
            .collect()
    }

    /// When a publish started at `started` stops waiting: a safety net over the retry budget
    /// (two command timeouts), so it never hangs.
    pub(crate) fn deadline(&self, started: Instant) -> Instant {
        started + self.config.command_timeout * 2 + Duration::from_millis(250)
    }

    /// Queues `job` on `node`; gives it back when the queue is full.
    pub(crate) fn enqueue(node: &Node, job: PublishJob) -> Option<PublishJob> {
        match node.publish_tx.try_send(job) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job)) => {
                Some(job)
            }
        }
    }

    /// Moves a job that failed (or could not be queued) on its node to another healthy node
    /// it has not tried, or fails it.
    pub(crate) fn reroute(&self, mut job: PublishJob, error: &str) {
        if let Some(cluster) = &self.cluster {
            tracing::debug!(channel = %job.channel, %error, "publish parked until its slot has a healthy master");
            return cluster.park(job);
        }
        loop {
            if job.started.elapsed() >= self.config.command_timeout * 2 {
                let failure = format!("publish on {:?} failed: {error}", job.channel);
                return job.finish(Err(BrokerError::Backend(failure)));
            }
            let mut exclude = job.tried.clone();
            exclude.extend(job.siblings.iter().cloned());
            let next = match &job.record {
                Some(record) => self.stream_home(&record.stream, &exclude),
                None => self.choose(&job.channel, 1, &exclude).pop(),
            };
            let Some(node) = next else {
                let any_healthy = read(&self.nodes)
                    .iter()
                    .any(|n| n.publisher_healthy.load(Ordering::Acquire));
                let failure = if any_healthy {
                    BrokerError::Backend(format!(
                        "publish on {:?} failed on {} and no other node is healthy: {error}",
                        job.channel,
                        job.tried.join(", ")
                    ))
                } else {
                    BrokerError::Unavailable
                };
                return job.finish(Err(failure));
            };
            tracing::debug!(channel = %job.channel, from = ?job.tried, to = %node.name, "publish retried on another node");
            job.tried.push(Arc::clone(&node.name));
            match Self::enqueue(&node, job) {
                None => {
                    node.counters.retries.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Some(back) => job = back,
            }
        }
    }

    /// Reports a health change to the log and the callbacks.
    pub(crate) fn report(
        &self,
        node: &Node,
        role: Role,
        event: HealthEventKind,
        error: Option<String>,
    ) {
        let healthy = match role {
            Role::Publisher => node.publisher_healthy.load(Ordering::Acquire),
            Role::Subscriber => node.subscriber_healthy.load(Ordering::Acquire),
        };
        let (healthy_publishers, healthy_subscribers, total_nodes) = self.counts();
        let report = HealthEvent {
            node_name: Arc::clone(&node.name),
            host: Arc::clone(&node.host),
            port: node.config.port,
            role,
            event,
            healthy,
            error,
            healthy_publishers,
            healthy_subscribers,
            total_nodes,
        };
        if healthy {
            tracing::info!(node = %node.name, %role, %event, healthy_publishers, healthy_subscribers, total_nodes, "redis node healthy");
        } else {
            tracing::warn!(node = %node.name, %role, %event, error = report.error.as_deref().unwrap_or(""), healthy_publishers, healthy_subscribers, total_nodes, "redis node unhealthy");
        }
        if let Some(callback) = &self.config.on_health_change {
            callback(&report);
        }
        if event == HealthEventKind::SubscribeFailed {
            if let Some(callback) = &self.config.on_subscription_error {
                callback(&report);
            }
        }
    }

    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        let nodes = read(&self.nodes);
        let publishers = nodes
            .iter()
            .filter(|n| n.publisher_healthy.load(Ordering::Acquire))
            .count();
        let subscribers = nodes
            .iter()
            .filter(|n| n.subscriber_healthy.load(Ordering::Acquire))
            .count();
        (publishers, subscribers, nodes.len())
    }
}

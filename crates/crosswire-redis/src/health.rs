//! Health events: what changed on which node's connection, with the broker's counts after it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A callback receiving [`HealthEvent`]s.
pub type HealthCallback = Arc<dyn Fn(&HealthEvent) + Send + Sync>;

/// Which of a node's two connections an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// The connection that PUBLISHes.
    Publisher,
    /// The connection that SUBSCRIBEs and receives.
    Subscriber,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Publisher => "publisher",
            Self::Subscriber => "subscriber",
        })
    }
}

/// What happened to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HealthEventKind {
    /// Up for the first time (for a subscriber: every subscription confirmed).
    Connected,
    /// The first connect attempt(s) failed; the node stays unhealthy and is retried.
    ConnectFailed,
    /// An established connection was lost (closed, I/O error, failed command).
    Disconnected,
    /// A PING was not answered within the ping timeout; the connection is re-made.
    PingTimeout,
    /// Up again after being down (for a subscriber: every subscription re-made and confirmed).
    Recovered,
    /// A subscription got an error reply or no confirmation in time; the subscriber is
    /// unhealthy and its connection is re-made.
    SubscribeFailed,
}

impl fmt::Display for HealthEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connected => "connected",
            Self::ConnectFailed => "connect-failed",
            Self::Disconnected => "disconnected",
            Self::PingTimeout => "ping-timeout",
            Self::Recovered => "recovered",
            Self::SubscribeFailed => "subscribe-failed",
        })
    }
}

/// A change of one node's publish or subscribe connection, with the counts after it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthEvent {
    /// The node's name ([`RedisNodeConfig::name`](crate::RedisNodeConfig::name)).
    pub node_name: Arc<str>,
    /// The node's host.
    pub host: Arc<str>,
    /// The node's port.
    pub port: u16,
    /// Which connection.
    pub role: Role,
    /// What happened.
    pub event: HealthEventKind,
    /// Whether this connection is healthy now.
    pub healthy: bool,
    /// The error behind a failure, if any.
    pub error: Option<String>,
    /// Nodes healthy as publishers after this event.
    pub healthy_publishers: usize,
    /// Nodes healthy as subscribers after this event.
    pub healthy_subscribers: usize,
    /// Nodes configured (including those added at run time).
    pub total_nodes: usize,
}

/// One node's state, from [`RedisBroker::nodes`](crate::RedisBroker::nodes).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStatus {
    /// The node's name.
    pub name: Arc<str>,
    /// The node's host.
    pub host: Arc<str>,
    /// The node's port.
    pub port: u16,
    /// Whether its publish connection is up and answered the last PING.
    pub publisher_healthy: bool,
    /// Whether its subscribe connection is up with every subscription confirmed.
    pub subscriber_healthy: bool,
    /// Round trip of the last PING on the publish connection, if one was answered.
    pub latency: Option<Duration>,
}

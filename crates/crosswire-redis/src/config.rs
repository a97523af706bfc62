//! Configuration: the Redis nodes, the publish strategy, timings and callbacks.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

use crate::health::{HealthCallback, HealthEvent};
use crate::tls::RedisTls;

/// Redis Cluster mode: where a channel is `SSUBSCRIBE`d within its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ShardSubscriptions {
    /// On the master (a replica while the master is down): messages arrive as soon as the
    /// master has them (p99 under a millisecond on loopback). When a master dies, what it
    /// had accepted but not yet sent to this broker is lost; the subscriptions move to a
    /// replica at once, before it is promoted, so what is published after the failover
    /// arrives.
    #[default]
    Masters,
    /// On a replica (the master while no replica is up): Redis hands sharded messages to
    /// replicas through replication, and a promoted replica keeps its subscribers, so a
    /// master failover loses nothing for this broker. The price is the replication delay:
    /// on Redis 7.0 over loopback, p50 0.2 ms but p99 about 40 ms.
    Replicas,
}

/// How a publish picks the Redis node(s) it is sent to, among the nodes that are healthy as
/// publishers right now.
///
/// Every server node subscribes on every Redis node, so any choice reaches every subscriber;
/// the strategies differ in load spreading and in **ordering**: Redis keeps the order of
/// messages published on one connection, and nothing orders messages that travel through two
/// different Redis nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PublishStrategy {
    /// Each channel is hashed (rendezvous hashing over the names of the healthy nodes) to one
    /// node and stays there while that node is healthy. Messages of one channel from one
    /// publisher arrive **in the order sent**; channels spread over the nodes. A channel moves
    /// only when its node becomes unhealthy (or a node joins and wins the hash for it): the
    /// messages around that moment may arrive out of order. The default.
    #[default]
    ChannelAffine,
    /// A random healthy node per message. Even load; consecutive messages of one channel may
    /// overtake each other.
    Random,
    /// The healthy nodes in turn. Even load; consecutive messages of one channel go to
    /// different nodes and may overtake each other.
    RoundRobin,
    /// The healthy node with the lowest recent PING latency. Follows the least-loaded node;
    /// order holds while the fastest node stays the same and breaks when it changes.
    Fastest,
}

/// One Redis node: where it is and what it is called.
///
/// Built from a URL: `redis://[[user]:password@]host[:port][/db]`, or `rediss://…` for TLS
/// (needs the `tls` cargo feature). The port defaults to 6379, the db to 0. Pub/sub ignores
/// the db number (channels are server-wide); it is selected anyway, so a wrong number is
/// reported at connect time.
#[derive(Clone)]
#[non_exhaustive]
pub struct RedisNodeConfig {
    /// The URL the node was made from.
    pub url: String,
    /// The node's name in health events and diagnostics; unique within a broker.
    /// Default: `host:port`.
    pub name: String,
    pub(crate) info: ConnectionInfo,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: bool,
}

impl fmt::Debug for RedisNodeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisNodeConfig")
            .field("url", &redact(&self.url))
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl RedisNodeConfig {
    /// Parses a node URL (see the type's docs for the form).
    pub fn new(url: &str) -> Result<Self, ConfigError> {
        let invalid = |reason: String| ConfigError::InvalidUrl {
            url: redact(url),
            reason,
        };
        let scheme = url.split("://").next().unwrap_or_default();
        if scheme == "rediss" && !cfg!(feature = "tls") {
            return Err(ConfigError::TlsNotEnabled { url: redact(url) });
        }
        if scheme != "redis" && scheme != "rediss" {
            return Err(invalid(format!(
                "scheme must be redis:// or rediss://, not {scheme:?}"
            )));
        }
        let info = url
            .into_connection_info()
            .map_err(|e| invalid(e.to_string()))?;
        let (host, port, tls) = match info.addr() {
            ConnectionAddr::Tcp(host, port) => (host.clone(), *port, false),
            ConnectionAddr::TcpTls { insecure: true, .. } => {
                return Err(invalid(
                    "certificate checks cannot be turned off (#insecure); trust the server's \
                     authority with RedisTls::with_ca_pem instead"
                        .into(),
                ))
            }
            ConnectionAddr::TcpTls { host, port, .. } => (host.clone(), *port, true),
            other => return Err(invalid(format!("unsupported address {other}"))),
        };
        Ok(Self {
            url: url.to_string(),
            name: format!("{host}:{port}"),
            info,
            host,
            port,
            tls,
        })
    }

    /// The same settings (credentials, db, TLS) for another server, named `host:port`: how a
    /// Redis Cluster server found in the slot map is reached.
    pub(crate) fn at(&self, host: &str, port: u16) -> Self {
        let addr = match self.info.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: host.to_string(),
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host.to_string(), port),
        };
        let scheme = if self.tls { "rediss" } else { "redis" };
        Self {
            url: format!("{scheme}://{host}:{port}"),
            name: format!("{host}:{port}"),
            info: self.info.clone().set_addr(addr),
            host: host.to_string(),
            port,
            tls: self.tls,
        }
    }

    /// Names the node (default: `host:port`).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The host from the URL.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port from the URL (6379 when it has none).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The db number from the URL (0 when it has none).
    pub fn db(&self) -> i64 {
        self.info.redis_settings().db()
    }

    /// Whether the URL asks for TLS (`rediss://`).
    pub fn is_tls(&self) -> bool {
        self.tls
    }
}

/// Settings of a [`RedisBroker`](crate::RedisBroker).
///
/// ```
/// use std::time::Duration;
/// use crosswire_redis::{PublishStrategy, RedisConfig};
///
/// let config = RedisConfig::from_urls(["redis://127.0.0.1:6379", "redis://127.0.0.1:6380"])?
///     .with_strategy(PublishStrategy::ChannelAffine)
///     .with_redis_ping_interval(Duration::from_secs(1))
///     .with_redundancy(2);
/// assert_eq!(config.nodes.len(), 2);
/// # Ok::<(), crosswire_redis::ConfigError>(())
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    /// The Redis nodes, all equal peers. Default: none (at least one is required).
    pub nodes: Vec<RedisNodeConfig>,
    /// How a publish picks its node. Default: [`PublishStrategy::ChannelAffine`].
    pub strategy: PublishStrategy,
    /// On how many distinct healthy nodes each message is published: 1, or 2 so that losing
    /// one Redis node mid-stream loses nothing (receivers see each message twice and must
    /// de-duplicate). When fewer nodes are healthy, fewer copies are sent. Default: 1.
    pub redundancy: usize,
    /// How often each connection (publish and subscribe) of each node is PINGed.
    /// Default: 5 s.
    pub redis_ping_interval: Duration,
    /// How long a PING may go unanswered before the connection is declared unhealthy and
    /// re-made. Default: 2 s.
    pub redis_ping_timeout: Duration,
    /// PING every interval even when traffic flows on the connection. Off: only connections
    /// that were idle for a whole interval are PINGed (a busy publish connection proves itself
    /// through its replies; a busy subscribe connection through the messages it receives).
    /// Default: on.
    pub forced_ping: bool,
    /// How long a TCP (and TLS) connect plus the AUTH/SELECT handshake may take. Default: 3 s.
    pub connect_timeout: Duration,
    /// How long a command (a PUBLISH batch, a SUBSCRIBE) may wait for its reply. A publish
    /// resolves within twice this time at most: one attempt, plus one retry on another node.
    /// Default: 2 s.
    pub command_timeout: Duration,
    /// First delay before re-connecting a lost connection; it doubles per failed attempt up
    /// to [`RedisConfig::reconnect_delay_max`]. Default: 100 ms.
    pub reconnect_delay: Duration,
    /// Longest delay between two connect attempts. Default: 2 s.
    pub reconnect_delay_max: Duration,
    /// Capacity of the received-message queue returned by `messages()`. When it is full the
    /// subscriber connections stop reading (backpressure). Default: 8192.
    pub message_queue: usize,
    /// Capacity of each node's queue of messages waiting to be published. A publish that
    /// finds it full fails at once. Default: 65,536.
    pub publish_queue: usize,
    /// Most PUBLISH commands sent in one pipelined batch. Default: 512.
    pub publish_batch: usize,
    /// TLS settings of the `rediss://` nodes: trusted authorities and client certificate.
    /// Default: [`RedisTls::default`] (web roots, no client certificate).
    pub tls: RedisTls,
    /// Redis Cluster mode: which server of a shard carries the broker's subscriptions.
    /// Default: [`ShardSubscriptions::Masters`].
    pub shard_subscriptions: ShardSubscriptions,
    pub(crate) on_health_change: Option<HealthCallback>,
    pub(crate) on_subscription_error: Option<HealthCallback>,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("nodes", &self.nodes)
            .field("strategy", &self.strategy)
            .field("redundancy", &self.redundancy)
            .field("redis_ping_interval", &self.redis_ping_interval)
            .field("redis_ping_timeout", &self.redis_ping_timeout)
            .field("forced_ping", &self.forced_ping)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("reconnect_delay", &self.reconnect_delay)
            .field("reconnect_delay_max", &self.reconnect_delay_max)
            .field("message_queue", &self.message_queue)
            .field("publish_queue", &self.publish_queue)
            .field("publish_batch", &self.publish_batch)
            .field("tls", &self.tls)
            .field("shard_subscriptions", &self.shard_subscriptions)
            .finish_non_exhaustive()
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            nodes: Vec::new(),
            strategy: PublishStrategy::default(),
            redundancy: 1,
            redis_ping_interval: Duration::from_secs(5),
            redis_ping_timeout: Duration::from_secs(2),
            forced_ping: true,
            connect_timeout: Duration::from_secs(3),
            command_timeout: Duration::from_secs(2),
            reconnect_delay: Duration::from_millis(100),
            reconnect_delay_max: Duration::from_secs(2),
            message_queue: 8192,
            publish_queue: 65_536,
            publish_batch: 512,
            tls: RedisTls::default(),
            shard_subscriptions: ShardSubscriptions::default(),
            on_health_change: None,
            on_subscription_error: None,
        }
    }
}

impl RedisConfig {
    /// Defaults with one node per URL.
    pub fn from_urls<I, S>(urls: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nodes = urls
            .into_iter()
            .map(|u| RedisNodeConfig::new(u.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            nodes,
            ..Self::default()
        })
    }

    /// Adds a node.
    pub fn with_node(mut self, node: RedisNodeConfig) -> Self {
        self.nodes.push(node);
        self
    }

    /// Sets [`RedisConfig::strategy`].
    pub fn with_strategy(mut self, strategy: PublishStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Sets [`RedisConfig::redundancy`].
    pub fn with_redundancy(mut self, redundancy: usize) -> Self {
        self.redundancy = redundancy;
        self
    }

    /// Sets [`RedisConfig::redis_ping_interval`].
    pub fn with_redis_ping_interval(mut self, interval: Duration) -> Self {
        self.redis_ping_interval = interval;
        self
    }

    /// Sets [`RedisConfig::redis_ping_timeout`].
    pub fn with_redis_ping_timeout(mut self, timeout: Duration) -> Self {
        self.redis_ping_timeout = timeout;
        self
    }

    /// Sets [`RedisConfig::forced_ping`].
    pub fn with_forced_ping(mut self, forced: bool) -> Self {
        self.forced_ping = forced;
        self
    }

    /// Sets [`RedisConfig::connect_timeout`].
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`RedisConfig::command_timeout`].
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Sets [`RedisConfig::reconnect_delay`] and [`RedisConfig::reconnect_delay_max`].
    pub fn with_reconnect_delay(mut self, first: Duration, max: Duration) -> Self {
        self.reconnect_delay = first;
        self.reconnect_delay_max = max;
        self
    }

    /// Sets [`RedisConfig::shard_subscriptions`] (Redis Cluster mode).
    pub fn with_shard_subscriptions(mut self, on: ShardSubscriptions) -> Self {
        self.shard_subscriptions = on;
        self
    }

    /// Sets [`RedisConfig::message_queue`].
    pub fn with_message_queue(mut self, capacity: usize) -> Self {
        self.message_queue = capacity;
        self
    }

    /// Sets [`RedisConfig::publish_queue`].
    pub fn with_publish_queue(mut self, capacity: usize) -> Self {
        self.publish_queue = capacity;
        self
    }

    /// Sets [`RedisConfig::publish_batch`].
    pub fn with_publish_batch(mut self, batch: usize) -> Self {
        self.publish_batch = batch;
        self
    }

    /// Sets [`RedisConfig::tls`].
    pub fn with_tls(mut self, tls: RedisTls) -> Self {
        self.tls = tls;
        self
    }

    /// Called on every health change of a node's publish or subscribe connection (connected,
    /// lost, PING timeout, recovered, subscription failure), from the connection's task: keep
    /// it short and never block in it. Default: none (changes are logged with `tracing`).
    pub fn with_on_health_change<F>(mut self, callback: F) -> Self
    where
        F: Fn(&HealthEvent) + Send + Sync + 'static,
    {
        self.on_health_change = Some(Arc::new(callback));
        self
    }

    /// Called when a subscription could not be made or confirmed on a node (an error reply
    /// or no confirmation within the command timeout); the node is then unhealthy as a
    /// subscriber until its subscriptions are re-made. Same rules as
    /// [`RedisConfig::with_on_health_change`]. Default: none.
    pub fn with_on_subscription_error<F>(mut self, callback: F) -> Self
    where
        F: Fn(&HealthEvent) + Send + Sync + 'static,
    {
        self.on_subscription_error = Some(Arc::new(callback));
        self
    }

    /// Checks the settings: at least one node, unique names, redundancy 1 or 2, non-zero
    /// durations and capacities, TLS certificates and key that parse.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.nodes.is_empty() {
            return Err(ConfigError::NoNodes);
        }
        let mut names = std::collections::HashSet::new();
        for node in &self.nodes {
            if !names.insert(node.name.as_str()) {
                return Err(ConfigError::DuplicateNodeName(node.name.clone()));
            }
        }
        if !(1..=2).contains(&self.redundancy) {
            return Err(ConfigError::InvalidRedundancy(self.redundancy));
        }
        for (name, value) in [
            ("redis_ping_interval", self.redis_ping_interval),
            ("redis_ping_timeout", self.redis_ping_timeout),
            ("connect_timeout", self.connect_timeout),
            ("command_timeout", self.command_timeout),
            ("reconnect_delay", self.reconnect_delay),
            ("reconnect_delay_max", self.reconnect_delay_max),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        for (name, value) in [
            ("message_queue", self.message_queue),
            ("publish_queue", self.publish_queue),
            ("publish_batch", self.publish_batch),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        crate::tls::check(&self.tls).map_err(ConfigError::InvalidTls)?;
        Ok(())
    }
}

/// The configuration cannot be used. Fix it; nothing was started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A node URL could not be parsed (the password is masked in `url`).
    #[error("invalid Redis URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, password masked.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `rediss://` URL, but the crate was built without its `tls` feature.
    #[error("{url} needs TLS: enable the `tls` feature of crosswire-redis")]
    TlsNotEnabled {
        /// The URL, password masked.
        url: String,
    },
    /// The TLS settings cannot be used (PEM data that does not parse, a key that does not
    /// match, or TLS settings without the `tls` feature).
    #[error("invalid TLS settings: {0}")]
    InvalidTls(String),
    /// No Redis node was configured.
    #[error("no Redis node configured")]
    NoNodes,
    /// Two nodes have the same name; give one a name with [`RedisNodeConfig::with_name`].
    #[error("two Redis nodes are named {0:?}")]
    DuplicateNodeName(String),
    /// Redundancy must be 1 or 2.
    #[error("redundancy must be 1 or 2, not {0}")]
    InvalidRedundancy(usize),
    /// A duration or capacity that must be positive is zero.
    #[error("{0} must not be zero")]
    Zero(&'static str),
    /// The broker was created outside a tokio runtime; it spawns its connection tasks at once.
    #[error("RedisBroker must be created inside a tokio runtime")]
    NoRuntime,
}

/// The URL with its password replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_db_and_password() {
        let node = RedisNodeConfig::new("redis://:secret@127.0.0.1:7001/3").unwrap();
        assert_eq!(node.host(), "127.0.0.1");
        assert_eq!(node.port(), 7001);
        assert_eq!(node.db(), 3);
        assert_eq!(node.name, "127.0.0.1:7001");
        assert_eq!(node.info.redis_settings().password(), Some("secret"));
        assert!(!node.is_tls());
        assert!(!format!("{node:?}").contains("secret"));
        let default_port = RedisNodeConfig::new("redis://localhost").unwrap();
        assert_eq!(default_port.port(), 6379);
        assert_eq!(default_port.with_name("a").name, "a");
    }

    #[test]
    fn rejects_bad_urls() {
        assert!(matches!(
            RedisNodeConfig::new("http://127.0.0.1:1"),
            Err(ConfigError::InvalidUrl { .. })
        ));
        assert!(RedisNodeConfig::new("redis://:pw@[bad").is_err());
        #[cfg(not(feature = "tls"))]
        assert!(matches!(
            RedisNodeConfig::new("rediss://:pw@127.0.0.1:1"),
            Err(ConfigError::TlsNotEnabled { url }) if url == "rediss://:***@127.0.0.1:1"
        ));
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("redis://:pw@h:1/2"), "redis://:***@h:1/2");
        assert_eq!(redact("redis://u:pw@h:1"), "redis://u:***@h:1");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }

    #[test]
    fn validates() {
        assert_eq!(RedisConfig::default().validate(), Err(ConfigError::NoNodes));
        let two = RedisConfig::from_urls(["redis://a:1", "redis://a:1"]).unwrap();
        assert_eq!(
            two.validate(),
            Err(ConfigError::DuplicateNodeName("a:1".into()))
        );
        let ok = RedisConfig::from_urls(["redis://a:1", "redis://a:2"]).unwrap();
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(
            ok.clone().with_redundancy(3).validate(),
            Err(ConfigError::InvalidRedundancy(3))
        );
        assert_eq!(
            ok.with_redis_ping_timeout(Duration::ZERO).validate(),
            Err(ConfigError::Zero("redis_ping_timeout"))
        );
    }
}

//! Shared bits of the cross-server examples: logging, a server-only cluster node over
//! Redis with health logging, and the `say` server event.

use std::io::IsTerminal;
use std::sync::Arc;

use crosswire::system::{NodeJoined, NodeLeft};
use crosswire::{Ack, Data, FromNode, Server, ServerConfig};
use crosswire_redis::{RedisBroker, RedisConfig};
use serde::{Deserialize, Serialize};

/// Sets up `tracing` output (`RUST_LOG` overrides the `info` default), in colour on a
/// terminal and plain when piped.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::stdout().is_terminal())
        .init();
}

/// A cluster node named `name` over the Redis nodes `redis` (equal peers), with no
/// WebSocket listener: it only takes part in server-to-server events. Redis health changes
/// and subscription errors are logged, like the seed's `onRedisHealthChange` and
/// `onRedisSubscriptionError`, and so are nodes joining and leaving the cluster.
pub fn server_node(name: &str, redis: &[String]) -> anyhow::Result<Server> {
    let config = RedisConfig::from_urls(redis)?
        .with_on_health_change(|e| {
            tracing::info!(
                host = %e.host,
                port = e.port,
                redis_node = %e.node_name,
                role = %e.role,
                event = %e.event,
                healthy = e.healthy,
                error = ?e.error,
                healthy_publishers = e.healthy_publishers,
                healthy_subscribers = e.healthy_subscribers,
                total = e.total_nodes,
                "Redis node health changed"
            )
        })
        .with_on_subscription_error(|e| {
            tracing::warn!(
                host = %e.host,
                port = e.port,
                event = %e.event,
                error = ?e.error,
                "Redis subscription error"
            )
        });
    let broker = RedisBroker::new(config)?;
    let server = Server::builder(ServerConfig::default().with_node_name(name))
        .broker(Arc::new(broker))
        .build()?;
    server.on_system(|joined: NodeJoined| tracing::info!(node = %joined.node, "node joined"));
    server.on_system(|left: NodeLeft| tracing::info!(node = %left.node, "node left"));
    Ok(server)
}

/// The payload of server event `say`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Say {
    /// What the sender says.
    pub content: String,
}

impl Say {
    /// A `say` payload.
    pub fn new(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
        }
    }
}

/// The answer to `say`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SayReply {
    /// Who answers.
    pub msg: String,
}

/// Handles server event `say` from another node (or this one): logs it and, when the
/// sender waits for replies, replies with this node's name.
pub fn say(server: Server, FromNode(from): FromNode, Data(say): Data<Say>) -> Ack<SayReply> {
    tracing::info!(%from, content = %say.content, "received \"say\" event");
    Ack(SayReply {
        msg: format!(
            "Hi, this is server {} responding to you",
            server.node_name()
        ),
    })
}

//! Shared bits of the cross-server examples: logging, and a server-only cluster node over
//! Redis with health logging.

use std::sync::Arc;

use crosswire::{Server, ServerConfig};
use crosswire_redis::{RedisBroker, RedisConfig};

/// Sets up `tracing` output (`RUST_LOG` overrides the `info` default).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}

/// A cluster node named `name` over the Redis nodes `redis` (equal peers), with no
/// WebSocket listener: it only takes part in server-to-server events. Redis health changes
/// and subscription errors are logged, like the seed's `onRedisHealthChange` and
/// `onRedisSubscriptionError`.
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
    Ok(Server::with_broker(
        ServerConfig::default().with_node_name(name),
        Arc::new(broker),
    )?)
}

/// Answers server event `say` from another node (or this one): logs it and, when the
/// sender waits for replies, replies with this node's name.
pub fn answer_say(server: &Server) {
    server.on_server("say", |ev| {
        tracing::info!(from = %ev.from, data = %ev.payload.raw(), "received \"say\" event");
        if let Some(reply) = ev.reply {
            let _ = reply.send(&serde_json::json!({
                "msg": format!("Hi, this is server {} responding to you", ev.server.node_name())
            }));
        }
    });
}

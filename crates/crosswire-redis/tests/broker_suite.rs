//! The cluster suite every broker runs (`crosswire_testkit::broker_suite`), over one real
//! `redis-server` (started per test): every target kind, server-to-server requests, discovery,
//! takeover, order per room, compressed envelopes, custom channels, presence, and recovery
//! from history (Redis Streams).

use std::sync::Arc;

use crosswire::Broker;
use crosswire_redis::{RedisBroker, RedisConfig};
use crosswire_testkit::broker_suite::{healthy, Fixture};
use crosswire_testkit::RedisServer;

/// One `redis-server` for every node of a test.
struct Redis(RedisServer);

impl Fixture for Redis {
    fn start() -> Self {
        assert!(
            RedisServer::available(),
            "redis-server is not on PATH: install it (scripts/test.sh does) — tests that need it fail rather than skip"
        );
        Self(RedisServer::start().unwrap_or_else(|e| panic!("redis-server did not start: {e}")))
    }

    async fn broker(&self) -> Arc<dyn Broker> {
        let config = RedisConfig::from_urls([self.0.url()]).expect("a valid Redis URL");
        healthy(Arc::new(RedisBroker::new(config).expect("a valid config"))).await
    }
}

crosswire_testkit::broker_suite!(Redis, with_history);

//! The cluster suite every broker runs (`crosswire_testkit::broker_suite`), over a real Redis
//! Cluster of 3 masters and 3 replicas (started per test) with sharded pub/sub: every target
//! kind, server-to-server requests, discovery, takeover, order per room, compressed envelopes,
//! custom channels, presence, and recovery from room history (Redis Cluster keeps history for
//! rooms with channels of their own, none for ids).

use std::sync::Arc;

use crosswire::Broker;
use crosswire_redis::{RedisBroker, RedisConfig};
use crosswire_testkit::broker_suite::{healthy, Fixture};
use crosswire_testkit::RedisCluster;

/// One Redis Cluster for every node of a test; each node's broker is given the three masters
/// as seeds.
struct Cluster(RedisCluster);

impl Fixture for Cluster {
    fn start() -> Self {
        assert!(
            RedisCluster::available(),
            "redis-server/redis-cli are not on PATH: install them (scripts/test.sh does) — tests that need them fail rather than skip"
        );
        Self(
            RedisCluster::start()
                .unwrap_or_else(|e| panic!("the Redis Cluster did not start: {e}")),
        )
    }

    async fn broker(&self) -> Arc<dyn Broker> {
        let config = RedisConfig::from_urls(self.0.seed_urls()).expect("valid Redis URLs");
        healthy(Arc::new(
            RedisBroker::cluster(config).expect("a valid cluster config"),
        ))
        .await
    }
}

crosswire_testkit::broker_suite!(Cluster, with_room_history);

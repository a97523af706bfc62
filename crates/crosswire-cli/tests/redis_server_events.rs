//! Server-to-server events and deliveries between crosswire nodes built in this process over
//! real `redis-server` processes, where Redis itself is the subject: a Redis node added at run
//! time carries the traffic once the first one dies. (The scenarios every broker runs —
//! requests, discovery, delivery, takeover, presence, recovery — are in the cluster suite:
//! `crosswire-redis/tests/broker_suite.rs` for Redis.)

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{redis, Raw, CLUSTER_STEP};
use crosswire::{Server, ServerEmitOptions};
use crosswire_redis::{RedisBroker, RedisConfig};
use crosswire_testkit::cluster_suite::{answer_who, ask_who, node_config, wait_nodes};
use crosswire_testkit::{install_relay, serve_on_free_port, wait_until};
use serde_json::json;

/// A node named `name` over `urls`; also returns its broker, for [`RedisBroker::add_node`].
fn node_with_broker(name: &str, urls: &[String]) -> (Server, Arc<RedisBroker>) {
    let broker = Arc::new(
        RedisBroker::new(RedisConfig::from_urls(urls).expect("redis urls")).expect("broker"),
    );
    let server = Server::builder(node_config(name))
        .broker(broker.clone())
        .build()
        .expect("valid config");
    (server, broker)
}

/// A Redis node added at run time (`RedisBroker::add_node`) joins the publish and
/// subscribe sets; when the first Redis node dies, server events and WebSocket deliveries
/// flow through the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_node_added_at_run_time_carries_the_traffic_when_the_first_dies() {
    let (mut r1, r2) = (redis(), redis());
    let urls = [r1.url()];
    let (a, a_broker) = node_with_broker("a", &urls);
    let (b, b_broker) = node_with_broker("b", &urls);
    wait_nodes(&[&a, &b], &["a", "b"]).await;
    answer_who(&a);
    answer_who(&b);
    install_relay(&a);
    install_relay(&b);
    let a_addr = serve_on_free_port(&a).await;
    let b_addr = serve_on_free_port(&b).await;
    let mut x = Raw::connect_url(&format!("ws://{a_addr}/?id=x"), "x").await;
    let mut y = Raw::connect_url(&format!("ws://{b_addr}/?id=y"), "y").await;
    // Bound once a request round trip succeeded.
    assert_eq!(x.request("echo", json!(1)).await, json!(1));
    assert_eq!(y.request("echo", json!(1)).await, json!(1));

    for broker in [&a_broker, &b_broker] {
        broker
            .add_node(&r2.url())
            .expect("add the second Redis node");
        assert!(
            broker.add_node(&r2.url()).is_err(),
            "the same node twice is refused"
        );
    }
    for (name, broker) in [("a", &a_broker), ("b", &b_broker)] {
        assert!(
            wait_until(CLUSTER_STEP, || {
                let nodes = broker.nodes();
                nodes.len() == 2
                    && nodes
                        .iter()
                        .all(|n| n.publisher_healthy && n.subscriber_healthy)
            })
            .await,
            "{name}: {:?}",
            broker.nodes()
        );
    }
    let health = a.broker_health().expect("a broker");
    assert_eq!(
        (
            health.healthy_publishers,
            health.healthy_subscribers,
            health.total
        ),
        (2, 2, 2)
    );

    r1.kill();
    for (name, broker) in [("a", &a_broker), ("b", &b_broker)] {
        assert!(
            wait_until(Duration::from_secs(10), || {
                let nodes = broker.nodes();
                !nodes[0].publisher_healthy && !nodes[0].subscriber_healthy
            })
            .await,
            "{name} never noticed the first node died: {:?}",
            broker.nodes()
        );
    }
    // Server events through the added node only.
    assert_eq!(
        ask_who(&a, ServerEmitOptions::new().except_self()).await,
        ["b"]
    );
    // WebSocket deliveries too.
    let data = json!("via the added Redis node");
    assert_eq!(
        x.request("to", json!({"id": "y", "data": data})).await,
        json!({"ok": true})
    );
    y.expect_msg(&data).await;
    // And the nodes keep seeing each other (announcements go through it as well): still
    // both there after longer than the node TTL (2 s).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(a.nodes(), ["a", "b"]);
    assert_eq!(b.nodes(), ["a", "b"]);
}

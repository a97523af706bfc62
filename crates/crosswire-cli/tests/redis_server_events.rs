//! Server-to-server events between crosswire nodes built in this process over real
//! `redis-server` processes (the binary registers no server-event handlers): broadcast,
//! targeted and except-self requests, replies one by one and all at once, a timeout with
//! partial replies, cancelling, expected counts that follow node discovery, a WebSocket
//! request forwarded by a gateway node to a logic node, and a Redis node added at run time
//! that carries the traffic once the first one dies.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{redis, Raw, CLUSTER_STEP};
use crosswire::system::{NodeJoined, NodeLeft};
use crosswire::{Server, ServerConfig, ServerEmitOptions};
use crosswire_redis::{RedisBroker, RedisConfig};
use crosswire_testkit::cluster_suite::{self, answer_who, ask_who, node_config, wait_nodes};
use crosswire_testkit::{install_relay, serve_on_free_port, wait_until};
use serde_json::json;

/// A node with `config` over `urls`; also returns its broker, for [`RedisBroker::add_node`].
fn configured_node(config: ServerConfig, urls: &[String]) -> (Server, Arc<RedisBroker>) {
    let broker = Arc::new(
        RedisBroker::new(RedisConfig::from_urls(urls).expect("redis urls")).expect("broker"),
    );
    let server = Server::builder(config)
        .broker(broker.clone())
        .build()
        .expect("valid config");
    (server, broker)
}

/// A node over `urls`; also returns its broker.
fn node_with_broker(name: &str, urls: &[String]) -> (Server, Arc<RedisBroker>) {
    configured_node(node_config(name), urls)
}

fn node(name: &str, urls: &[String]) -> Server {
    node_with_broker(name, urls).0
}

/// Nodes `names` over one Redis, once they all see each other.
async fn discovered(redis: &crosswire_testkit::RedisServer, names: &[&str]) -> Vec<Server> {
    let urls = [redis.url()];
    let nodes: Vec<Server> = names.iter().map(|n| node(n, &urls)).collect();
    wait_nodes(&nodes.iter().collect::<Vec<_>>(), names).await;
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_targeted_and_except_self_over_redis() {
    let redis = redis();
    let nodes = discovered(&redis, &["a", "b", "c"]).await;
    cluster_suite::broadcast_targeted_and_except_self(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_by_one_timeout_with_partial_replies_and_cancel_over_redis() {
    let redis = redis();
    let nodes = discovered(&redis, &["a", "b", "c"]).await;
    cluster_suite::one_by_one_timeout_and_cancel(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expected_counts_follow_node_discovery() {
    let redis = redis();
    let urls = [redis.url()];
    let a = node("a", &urls);
    let joined = Arc::new(Mutex::new(Vec::new()));
    let left = Arc::new(Mutex::new(Vec::new()));
    {
        let joined = Arc::clone(&joined);
        a.on_system(move |e: NodeJoined| {
            joined.lock().unwrap().push(e.node);
        });
        let left = Arc::clone(&left);
        a.on_system(move |e: NodeLeft| {
            left.lock().unwrap().push(e.node);
        });
    }
    let b = node("b", &urls);
    let c = node("c", &urls);
    wait_nodes(&[&a, &b, &c], &["a", "b", "c"]).await;
    for n in [&a, &b, &c] {
        answer_who(n);
    }
    let replies = a
        .request_server("who", &(), ServerEmitOptions::new())
        .expect("sent");
    assert_eq!(replies.remaining(), 3);
    assert!(replies.collect().await.success);

    // c shuts down gracefully: it says so, and the broadcast waits for one fewer.
    c.shutdown().await;
    wait_nodes(&[&a, &b], &["a", "b"]).await;
    let replies = a
        .request_server("who", &(), ServerEmitOptions::new())
        .expect("sent");
    assert_eq!(replies.remaining(), 2);
    let results = replies.collect().await;
    assert!(results.success);
    assert_eq!(
        results.responses.into_keys().collect::<Vec<_>>(),
        ["a", "b"]
    );

    // d joins: three again. (Its protocol ping sweep is off: the sweep holds the node
    // alive until its next tick, so with it a dropped node would keep announcing itself for
    // up to the ping interval.)
    let d = Server::builder(node_config("d").with_server_ping_interval(Duration::ZERO))
        .broker(Arc::new(
            RedisBroker::new(RedisConfig::from_urls(urls.clone()).unwrap()).unwrap(),
        ))
        .build()
        .expect("valid config");
    answer_who(&d);
    wait_nodes(&[&a, &b, &d], &["a", "b", "d"]).await;
    assert_eq!(
        ask_who(&a, ServerEmitOptions::new().except_self()).await,
        ["b", "d"]
    );

    // d dies without a word (its broker and tasks dropped): it expires after its TTL
    // (2 s) and the count follows.
    let gone = tokio::time::Instant::now();
    drop(d);
    wait_nodes(&[&a, &b], &["a", "b"]).await;
    eprintln!("d expired after {:?}", gone.elapsed());
    let replies = a
        .request_server("who", &(), ServerEmitOptions::new())
        .expect("sent");
    assert_eq!(replies.remaining(), 2);
    assert!(replies.collect().await.success);

    assert!(
        wait_until(CLUSTER_STEP, || left.lock().unwrap().len() == 2).await,
        "joined {:?}, left {:?}",
        joined.lock().unwrap(),
        left.lock().unwrap()
    );
    let mut joined = joined.lock().unwrap().clone();
    joined.sort();
    assert_eq!(joined, ["b", "c", "d"]);
    assert_eq!(*left.lock().unwrap(), ["c", "d"]);
}

/// Seed FAQ 1: a WebSocket client asks its gateway node; the gateway forwards the request
/// to a logic node and answers the client with the logic node's reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_forwards_a_client_request_to_a_logic_node() {
    let redis = redis();
    let nodes = discovered(&redis, &["gateway", "logic"]).await;
    cluster_suite::gateway_forwards_to_logic(&nodes[0], &nodes[1]).await;
}

/// `Server::request` reaches an id connected to another node over Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_reaches_an_id_on_another_node_over_redis() {
    let redis = redis();
    let nodes = discovered(&redis, &["a", "b"]).await;
    cluster_suite::request_reaches_any_id(&nodes[0], &nodes[1]).await;
}

/// The same id logging in on two nodes at once, fifty times over Redis: exactly one socket
/// each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_race_on_two_nodes_keeps_exactly_one_socket() {
    let redis = redis();
    let nodes = discovered(&redis, &["a", "b"]).await;
    cluster_suite::login_race_keeps_one_socket(&nodes[0], &nodes[1], 50).await;
}

/// History and recovery over Redis (Streams written by the publish script): a client away
/// for two seconds while messages flow comes back on another node with every message once
/// and in order; past the window it is told `recovered: false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_back_on_another_node_recovers_what_it_missed_over_redis() {
    let redis = redis();
    let urls = [redis.url()];
    cluster_suite::recovery_across_nodes(|name| {
        configured_node(cluster_suite::history_config(name), &urls).0
    })
    .await;
}

/// Recovery of the messages sent to an id over Redis: away two seconds, back on another
/// node with its position in the query, every message once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_back_on_another_node_gets_what_was_sent_to_its_id_over_redis() {
    let redis = redis();
    let urls = [redis.url()];
    cluster_suite::id_recovery_across_nodes(|name| {
        configured_node(cluster_suite::history_config(name), &urls).0
    })
    .await;
}

/// Presence over Redis: joins, leaves, a closed socket, a late node, and a node that dies
/// without a word (its broker and tasks dropped), whose members leave within its TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_follows_members_across_nodes_over_redis() {
    let redis = redis();
    let urls = [redis.url()];
    cluster_suite::presence_across_nodes(|name| {
        configured_node(cluster_suite::presence_config(name), &urls).0
    })
    .await;
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

//! Server-to-server events between crosswire nodes built in this process over real
//! `redis-server` processes (the binary registers no server-event handlers): broadcast,
//! targeted and except-self requests, replies one by one and all at once, a timeout with
//! partial replies, cancelling, expected counts that follow node discovery, a WebSocket
//! request forwarded by a gateway node to a logic node, and a Redis node added at run time
//! that carries the traffic once the first one dies.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{redis, Raw, CLUSTER_STEP};
use crosswire::{Server, ServerConfig, ServerEmitOptions, SystemEvent, SystemEventKind};
use crosswire_redis::{RedisBroker, RedisConfig};
use crosswire_testkit::{install_relay, serve_on_free_port, wait_until};
use serde_json::{json, Value};

fn config(name: &str) -> ServerConfig {
    ServerConfig::default()
        .with_node_name(name)
        .with_announce_interval(Duration::from_millis(100))
        .with_node_ttl(Duration::from_millis(600))
        .with_server_request_timeout(Duration::from_secs(3))
}

/// A node over `urls`; also returns its broker, for [`RedisBroker::add_node`].
fn node_with_broker(name: &str, urls: &[String]) -> (Server, Arc<RedisBroker>) {
    let broker = Arc::new(
        RedisBroker::new(RedisConfig::from_urls(urls).expect("redis urls")).expect("broker"),
    );
    let server = Server::with_broker(config(name), broker.clone()).expect("valid config");
    (server, broker)
}

fn node(name: &str, urls: &[String]) -> Server {
    node_with_broker(name, urls).0
}

async fn wait_nodes(servers: &[&Server], names: &[&str]) {
    let mut want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    want.sort();
    for s in servers {
        assert!(
            wait_until(CLUSTER_STEP, || s.nodes() == want).await,
            "{} sees {:?}, not {want:?}",
            s.node_name(),
            s.nodes()
        );
    }
}

/// Registers a `who` handler answering `{"node", "from"}` and counting its calls.
fn answer_who(server: &Server) -> Arc<AtomicUsize> {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    server.on_server("who", move |ev| {
        counter.fetch_add(1, Ordering::SeqCst);
        if let Some(reply) = ev.reply {
            let _ = reply.send(&json!({"node": ev.server.node_name(), "from": ev.from}));
        }
    });
    calls
}

fn keys(results: &crosswire::ServerResults) -> Vec<&str> {
    results.responses.keys().map(String::as_str).collect()
}

fn counts(calls: &[Arc<AtomicUsize>]) -> Vec<usize> {
    calls.iter().map(|c| c.load(Ordering::SeqCst)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_targeted_and_except_self_over_redis() {
    let Some(redis) = redis() else { return };
    let urls = [redis.url()];
    let nodes: Vec<Server> = ["a", "b", "c"].iter().map(|n| node(n, &urls)).collect();
    wait_nodes(&nodes.iter().collect::<Vec<_>>(), &["a", "b", "c"]).await;
    let calls: Vec<Arc<AtomicUsize>> = nodes.iter().map(answer_who).collect();
    let a = &nodes[0];

    // Broadcast, self included (in-process): exactly the three live nodes answer.
    let results = a
        .request_server("who", &json!({"q": 1}), ServerEmitOptions::new())
        .expect("sent")
        .collect()
        .await;
    assert!(results.success, "{results:?}");
    assert_eq!(results.unresponded, 0);
    assert_eq!(keys(&results), ["a", "b", "c"]);
    let from_c: Value = serde_json::from_str(results.responses["c"].get()).unwrap();
    assert_eq!(from_c, json!({"node": "c", "from": "a"}));
    assert_eq!(counts(&calls), [1, 1, 1]);

    // Except self.
    let results = a
        .request_server("who", &(), ServerEmitOptions::new().except_self())
        .expect("sent")
        .collect()
        .await;
    assert!(results.success);
    assert_eq!(keys(&results), ["b", "c"]);
    assert_eq!(counts(&calls), [1, 2, 2]);

    // Targeted: only c runs its handler.
    let results = a
        .request_server("who", &(), ServerEmitOptions::new().to(["c"]))
        .expect("sent")
        .collect()
        .await;
    assert!(results.success);
    assert_eq!(keys(&results), ["c"]);
    assert_eq!(counts(&calls), [1, 2, 3]);

    // Targeted at self and another node; except_self then removes self.
    let results = a
        .request_server("who", &(), ServerEmitOptions::new().to(["a", "b"]))
        .expect("sent")
        .collect()
        .await;
    assert_eq!(keys(&results), ["a", "b"]);
    let results = a
        .request_server(
            "who",
            &(),
            ServerEmitOptions::new().to(["a", "b"]).except_self(),
        )
        .expect("sent")
        .collect()
        .await;
    assert!(results.success);
    assert_eq!(keys(&results), ["b"]);
    assert_eq!(counts(&calls), [2, 4, 3]);

    // Fire and forget reaches every handler once; with except_self, the others only.
    a.emit_server("who", &(), &ServerEmitOptions::new())
        .expect("sent");
    assert!(wait_until(CLUSTER_STEP, || counts(&calls) == [3, 5, 4]).await);
    a.emit_server("who", &(), &ServerEmitOptions::new().except_self())
        .expect("sent");
    assert!(wait_until(CLUSTER_STEP, || counts(&calls) == [3, 6, 5]).await);
    // Nothing else arrives late.
    let c = &nodes[2];
    let results = c
        .request_server("who", &(), ServerEmitOptions::new().to(["c"]))
        .expect("sent")
        .collect()
        .await;
    assert!(results.success);
    assert_eq!(counts(&calls), [3, 6, 6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_by_one_timeout_with_partial_replies_and_cancel_over_redis() {
    let Some(redis) = redis() else { return };
    let urls = [redis.url()];
    let nodes: Vec<Server> = ["a", "b", "c"].iter().map(|n| node(n, &urls)).collect();
    wait_nodes(&nodes.iter().collect::<Vec<_>>(), &["a", "b", "c"]).await;
    answer_who(&nodes[0]);
    answer_who(&nodes[1]);
    // c answers after 1.5 s.
    nodes[2].on_server_async("who", |ev| async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if let Some(reply) = ev.reply {
            let _ = reply.send(&"late");
        }
    });
    let a = &nodes[0];

    // One by one: the remaining count goes down; the slow node misses the 500 ms timeout.
    let mut replies = a
        .request_server(
            "who",
            &(),
            ServerEmitOptions::new().with_timeout(Duration::from_millis(500)),
        )
        .expect("sent");
    assert_eq!(replies.remaining(), 3);
    let mut seen = Vec::new();
    while let Some(r) = replies.next().await {
        seen.push((r.node, r.remaining));
    }
    seen.sort();
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "b"], "{seen:?}");
    let mut remaining: Vec<usize> = seen.iter().map(|(_, r)| *r).collect();
    remaining.sort_unstable();
    assert_eq!(remaining, [1, 2], "{seen:?}");
    assert_eq!(replies.remaining(), 1);

    // All at once: partial result after the timeout.
    let started = tokio::time::Instant::now();
    let results = a
        .request_server(
            "who",
            &(),
            ServerEmitOptions::new().with_timeout(Duration::from_millis(500)),
        )
        .expect("sent")
        .collect()
        .await;
    let took = started.elapsed();
    assert!(!results.success);
    assert_eq!(results.unresponded, 1);
    assert_eq!(keys(&results), ["a", "b"]);
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1400),
        "{took:?}"
    );

    // A long enough timeout gets all three, the late one included.
    let results = a
        .request_server(
            "who",
            &(),
            ServerEmitOptions::new().with_timeout(Duration::from_secs(4)),
        )
        .expect("sent")
        .collect()
        .await;
    assert!(results.success, "{results:?}");
    assert_eq!(results.responses["c"].get(), "\"late\"");

    // expected_responses: two are enough, it does not wait for c.
    let started = tokio::time::Instant::now();
    let results = a
        .request_server(
            "who",
            &(),
            ServerEmitOptions::new().with_expected_responses(2),
        )
        .expect("sent")
        .collect()
        .await;
    assert!(results.success);
    assert_eq!(keys(&results), ["a", "b"]);
    assert!(started.elapsed() < Duration::from_millis(1000));

    // Cancel: the replies end at once although c answers later.
    let mut replies = a
        .request_server("who", &(), ServerEmitOptions::new().to(["c"]))
        .expect("sent");
    assert!(a.cancel_server_request(replies.id()));
    let started = tokio::time::Instant::now();
    assert!(replies.next().await.is_none());
    assert!(started.elapsed() < Duration::from_millis(300));
    assert!(!a.cancel_server_request(replies.id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expected_counts_follow_node_discovery() {
    let Some(redis) = redis() else { return };
    let urls = [redis.url()];
    let a = node("a", &urls);
    let joined = Arc::new(Mutex::new(Vec::new()));
    let left = Arc::new(Mutex::new(Vec::new()));
    {
        let joined = Arc::clone(&joined);
        a.on_system(SystemEventKind::NodeJoined, move |e| {
            if let SystemEvent::NodeJoined(n) = e {
                joined.lock().unwrap().push(n.clone());
            }
        });
        let left = Arc::clone(&left);
        a.on_system(SystemEventKind::NodeLeft, move |e| {
            if let SystemEvent::NodeLeft(n) = e {
                left.lock().unwrap().push(n.clone());
            }
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
    assert_eq!(keys(&results), ["a", "b"]);

    // d joins: three again. (Its protocol ping sweep is off: the sweep holds the node
    // alive until its next tick, so with it a dropped node would keep announcing itself for
    // up to the ping interval.)
    let d = Server::with_broker(
        config("d").with_server_ping_interval(Duration::ZERO),
        Arc::new(RedisBroker::new(RedisConfig::from_urls(urls.clone()).unwrap()).unwrap()),
    )
    .expect("valid config");
    answer_who(&d);
    wait_nodes(&[&a, &b, &d], &["a", "b", "d"]).await;
    let results = a
        .request_server("who", &(), ServerEmitOptions::new().except_self())
        .expect("sent")
        .collect()
        .await;
    assert!(results.success);
    assert_eq!(keys(&results), ["b", "d"]);

    // d dies without a word (its broker and tasks dropped): it expires after its TTL
    // (600 ms) and the count follows.
    let gone = tokio::time::Instant::now();
    drop(d);
    wait_nodes(&[&a, &b], &["a", "b"]).await;
    eprintln!("d expired after {:?}", gone.elapsed());
    let replies = a
        .request_server("who", &(), ServerEmitOptions::new())
        .expect("sent");
    assert_eq!(replies.remaining(), 2);
    assert!(replies.collect().await.success);

    assert!(wait_until(CLUSTER_STEP, || left.lock().unwrap().len() == 2).await);
    let mut joined = joined.lock().unwrap().clone();
    joined.sort();
    assert_eq!(joined, ["b", "c", "d"]);
    assert_eq!(*left.lock().unwrap(), ["c", "d"]);
}

/// Seed FAQ 1: a WebSocket client asks its gateway node; the gateway forwards the request
/// to a logic node and answers the client with the logic node's reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_forwards_a_client_request_to_a_logic_node() {
    let Some(redis) = redis() else { return };
    let urls = [redis.url()];
    let gateway = node("gateway", &urls);
    let logic = node("logic", &urls);
    wait_nodes(&[&gateway, &logic], &["gateway", "logic"]).await;
    install_relay(&gateway);
    logic.on_server("price", |ev| {
        let item: String = ev.payload.parse().unwrap_or_default();
        if let Some(reply) = ev.reply {
            let _ = reply.send(&json!({"item": item, "price": 42, "by": ev.server.node_name()}));
        }
    });
    gateway.on_async("price", |ev| async move {
        let item: Value = ev.parse().unwrap_or_default();
        let results = ev
            .server
            .request_server("price", &item, ServerEmitOptions::new().to(["logic"]))
            .expect("sent")
            .collect()
            .await;
        if let Some(reply) = ev.reply {
            let answer = results
                .responses
                .get("logic")
                .map(|raw| serde_json::from_str::<Value>(raw.get()).unwrap())
                .unwrap_or(json!({"error": "no logic node"}));
            let _ = reply.send(&answer);
        }
    });
    let addr = serve_on_free_port(&gateway).await;
    let mut client = Raw::connect_url(&format!("ws://{addr}/?id=buyer"), "buyer").await;
    assert_eq!(
        client.request("price", json!("apple")).await,
        json!({"item": "apple", "price": 42, "by": "logic"})
    );
}

/// A Redis node added at run time (`RedisBroker::add_node`) joins the publish and
/// subscribe sets; when the first Redis node dies, server events and WebSocket deliveries
/// flow through the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_node_added_at_run_time_carries_the_traffic_when_the_first_dies() {
    let (Some(mut r1), Some(r2)) = (redis(), redis()) else {
        return;
    };
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
    let results = a
        .request_server("who", &(), ServerEmitOptions::new().except_self())
        .expect("sent")
        .collect()
        .await;
    assert!(results.success, "{results:?}");
    assert_eq!(keys(&results), ["b"]);
    // WebSocket deliveries too.
    let data = json!("via the added Redis node");
    assert_eq!(
        x.request("to", json!({"id": "y", "data": data})).await,
        json!({"ok": true})
    );
    y.expect_msg(&data).await;
    // And the nodes keep seeing each other (announcements go through it as well): still
    // both there after longer than the node TTL (600 ms).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(a.nodes(), ["a", "b"]);
    assert_eq!(b.nodes(), ["a", "b"]);
}

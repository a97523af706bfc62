//! A Prometheus scrape of a two-node cluster under `crosswire-bench fanout` adds up: two
//! crosswire relay nodes (crosswire-cli's relay and HTTP routes, `/metrics` included) in this
//! process over a real `redis-server`, the bench's fan-out scenario with its receivers spread
//! over both nodes and its publisher on the first, and each node's `/metrics` scraped over
//! HTTP before, during and after the run.

use std::sync::Arc;
use std::time::Duration;

use crosswire::Server;
use crosswire_bench::common::{self, Settings};
use crosswire_bench::metrics::{self, Scrape};
use crosswire_bench::report::Report;
use crosswire_bench::scenarios::fanout;
use crosswire_bench::stamp::Padding;
use crosswire_bench::ws::ConnectOptions;
use crosswire_redis::{RedisBroker, RedisConfig};
use crosswire_testkit::cluster_suite::{node_config, wait_nodes};
use crosswire_testkit::{wait_until, RedisServer};

/// Receivers of the fan-out, spread round-robin over the two nodes.
const RECEIVERS: usize = 200;

/// Upper bound of every wait.
const WAIT: Duration = Duration::from_secs(20);

struct Node {
    server: Server,
    url: String,
}

/// A relay node named `name` over the Redis at `redis`, serving the CLI's HTTP routes and
/// WebSockets on a free port.
///
/// The relay namespace is preset, so the node is subscribed to its room channel from the
/// start (before it says hello), not only once the first receiver joins: the fan-out may
/// start as soon as the last receiver's join is answered, and no message may be published
/// before the other node listens. Server pings are off, so every frame sent to a client is
/// one the run accounts for.
async fn start_node(name: &str, redis: &str) -> Node {
    let broker = Arc::new(RedisBroker::new(RedisConfig::from_urls([redis]).unwrap()).unwrap());
    let config = node_config(name)
        .with_preset_namespaces([crosswire_cli::relay::NAMESPACE])
        .with_server_ping_interval(Duration::ZERO);
    let server = Server::builder(config).broker(broker).build().unwrap();
    crosswire_cli::relay::install(&server);
    let router =
        crosswire_cli::http::router(server.clone(), crosswire_cli::http::HttpOptions::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = server.clone();
    tokio::spawn(async move { served.serve_router(listener, router).await });
    Node {
        server,
        url: format!("ws://127.0.0.1:{port}"),
    }
}

async fn scrape(node: &Node) -> Scrape {
    metrics::scrape(&node.url, &ConnectOptions::default())
        .await
        .unwrap_or_else(|e| panic!("scraping {}: {e:#}", node.url))
}

fn count(scrape: &Scrape, key: &str) -> u64 {
    scrape.count(key).unwrap_or_else(|e| panic!("{e:#}"))
}

fn delta(after: &Scrape, before: &Scrape, key: &str) -> u64 {
    after.delta(before, key).unwrap_or_else(|e| panic!("{e:#}"))
}

fn result(report: &Report, key: &str) -> u64 {
    report.results[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {}", report.results))
}

const CONNECTIONS: &str = "crosswire_connections";
const LOCAL: &str = "crosswire_local_deliveries_total";
const REMOTE: &str = "crosswire_remote_deliveries_total";
const RECEIVED: &str = "crosswire_messages_received_total";
const SENT: &str = "crosswire_messages_sent_total";
const ACCEPTED: &str = "crosswire_connections_accepted_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_scraped_under_fanout_add_up() {
    assert!(
        RedisServer::available(),
        "redis-server is not on PATH (scripts/test.sh installs it)"
    );
    let redis = RedisServer::start().expect("redis-server did not start");
    let a = start_node("metrics-a", &redis.url()).await;
    let b = start_node("metrics-b", &redis.url()).await;
    wait_nodes(&[&a.server, &b.server], &["metrics-a", "metrics-b"]).await;

    let before = [scrape(&a).await, scrape(&b).await];
    for (node, s) in [(&a, &before[0]), (&b, &before[1])] {
        assert_eq!(count(s, CONNECTIONS), 0, "{}", node.url);
        assert_eq!(count(s, "crosswire_nodes"), 2, "{}", node.url);
        let info = format!(
            r#"crosswire_node_info{{node="{}"}}"#,
            node.server.node_name()
        );
        assert_eq!(count(s, &info), 1, "{}", node.url);
    }

    // Publisher on a; receivers 0, 2, 4, … on a and 1, 3, 5, … on b.
    let settings = Settings {
        url: a.url.clone(),
        urls: vec![a.url.clone(), b.url.clone()],
        server_pids: Vec::new(),
        connect_concurrency: 16,
        run_id: common::new_run_id(),
        connect: ConnectOptions::default(),
        padding: Padding::X,
    };
    let params = fanout::FanoutParams {
        receivers: RECEIVERS,
        rate: 200.0,
        size: 100,
        duration: Duration::from_millis(1500),
        drain_timeout: Duration::from_secs(10),
        room: format!("fan-{}", settings.run_id),
    };
    let (on_a, on_b) = (RECEIVERS.div_ceil(2) as u64, (RECEIVERS / 2) as u64);
    let run = tokio::spawn({
        let (settings, params) = (settings.clone(), params.clone());
        async move { fanout::run(&settings, &params).await }
    });

    // While the publisher sends, every receiver and the publisher are connected: a has its
    // receivers and the publisher, b its receivers.
    let mut during = None;
    let deadline = tokio::time::Instant::now() + WAIT;
    while during.is_none() && !run.is_finished() && tokio::time::Instant::now() < deadline {
        let now = [scrape(&a).await, scrape(&b).await];
        if count(&now[0], CONNECTIONS) == on_a + 1 && count(&now[1], CONNECTIONS) == on_b {
            during = Some(now);
        } else {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let during = during.expect("the scrapes never showed every client connected");
    assert_eq!(count(&during[0], "crosswire_bound_ids"), on_a + 1);
    assert_eq!(count(&during[1], "crosswire_bound_ids"), on_b);

    let report = run.await.unwrap().expect("fan-out run");
    let sent = result(&report, "sent");
    assert!(sent >= 100, "{}", report.results);
    assert!(
        report.results["complete"].as_bool().unwrap(),
        "{}",
        report.results
    );
    assert_eq!(result(&report, "expected"), sent * RECEIVERS as u64);
    assert_eq!(
        result(&report, "delivered"),
        sent * RECEIVERS as u64,
        "{}",
        report.results
    );
    for key in ["lost", "duplicates", "disconnected", "invalid"] {
        assert_eq!(result(&report, key), 0, "{key}: {}", report.results);
    }
    assert!(report.results["send_error"].is_null(), "{}", report.results);

    // Every client has gone when the run returns (the publisher and receivers close).
    for node in [&a, &b] {
        assert!(
            wait_until(WAIT, || node.server.connection_count() == 0).await,
            "{} still has {} connections",
            node.url,
            node.server.connection_count()
        );
    }
    let expected_local = sent * RECEIVERS as u64;
    let mut after = [scrape(&a).await, scrape(&b).await];
    // Counters are bumped just after the frames are queued: give a late add a moment.
    let settled = tokio::time::Instant::now() + WAIT;
    while delta(&after[0], &before[0], LOCAL) + delta(&after[1], &before[1], LOCAL) < expected_local
        && tokio::time::Instant::now() < settled
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        after = [scrape(&a).await, scrape(&b).await];
    }
    let d = |i: usize, key: &str| delta(&after[i], &before[i], key);
    eprintln!(
        "sent {sent}; local deliveries a {} b {}; remote deliveries a {} b {}; \
         received a {} b {}; sent a {} b {}",
        d(0, LOCAL),
        d(1, LOCAL),
        d(0, REMOTE),
        d(1, REMOTE),
        d(0, RECEIVED),
        d(1, RECEIVED),
        d(0, SENT),
        d(1, SENT)
    );

    // One local delivery per receiving socket per message, on the node holding the socket.
    assert_eq!(d(0, LOCAL) + d(1, LOCAL), expected_local);
    assert_eq!(d(0, LOCAL), sent * on_a);
    assert_eq!(d(1, LOCAL), sent * on_b);
    // b got every message from a as one envelope each; a drops its own echo.
    assert!(d(1, REMOTE) > 0);
    assert_eq!(d(1, REMOTE), sent);
    assert_eq!(d(0, REMOTE), 0);
    // From clients: the publisher's messages and its closing heartbeat (a round trip the
    // publisher makes before it reports), and one join per receiver.
    assert_eq!(d(0, RECEIVED), sent + 1 + on_a);
    assert_eq!(d(1, RECEIVED), on_b);
    // To clients: the deliveries, one join reply per receiver and the heartbeat's echo (no
    // server pings; the close handshakes' frames are not counted as messages).
    assert_eq!(d(0, SENT), sent * on_a + on_a + 1);
    assert_eq!(d(1, SENT), sent * on_b + on_b);
    assert_eq!(d(0, ACCEPTED), on_a + 1);
    assert_eq!(d(1, ACCEPTED), on_b);
    for (i, node) in [&a, &b].into_iter().enumerate() {
        assert_eq!(count(&after[i], CONNECTIONS), 0, "{}", node.url);
        assert_eq!(count(&after[i], "crosswire_bound_ids"), 0, "{}", node.url);
        assert_eq!(
            count(&after[i], "crosswire_broker_healthy"),
            1,
            "{}",
            node.url
        );
        for key in [
            "crosswire_queue_full_drops_total",
            "crosswire_broker_publish_drops_total",
            "crosswire_envelopes_duplicate_total",
        ] {
            assert_eq!(d(i, key), 0, "{key} on {}", node.url);
        }
    }
    a.server.shutdown().await;
    b.server.shutdown().await;
}

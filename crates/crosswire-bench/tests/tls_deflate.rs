//! The scenarios against a real crosswire relay (crosswire-cli's, with its HTTP routes) in
//! this process: over TLS with the generated test authority, with permessage-deflate (the
//! own client), and both; pings answered by every kind of connection.

use crosswire::{PerMessageDeflate, Server, ServerConfig, Tls};
use crosswire_bench::common::{self, Settings};
use crosswire_bench::report::Report;
use crosswire_bench::scenarios::{burst, echo, fanout, idle};
use crosswire_bench::stamp::Padding;
use crosswire_bench::ws::{self, ConnectOptions};
use crosswire_bench::{server_stats, tls};
use std::time::Duration;

/// Server pings often enough for several to reach every connection of a short run, but not
/// so often that a busy test machine misses the deadline.
const PINGS: Duration = Duration::from_millis(250);

struct Node {
    server: Server,
    url: String,
    ca_pem: String,
}

/// The relay on a free port, over TLS when `tls`, compressing when `deflate`, pinging every
/// `ping` (a connection that does not answer is terminated at the next ping).
async fn start_node(tls: bool, deflate: bool, ping: Duration) -> Node {
    let mut config = ServerConfig::default().with_server_ping_interval(ping);
    if deflate {
        config = config.with_permessage_deflate(PerMessageDeflate::new());
    }
    let server = Server::new(config).unwrap();
    crosswire_cli::relay::install(&server);
    let router =
        crosswire_cli::http::router(server.clone(), crosswire_cli::http::HttpOptions::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let certs = crosswire_testkit::TestCerts::generate().unwrap();
    let served = server.clone();
    if tls {
        let tls = Tls::from_pem(
            certs.server_cert_pem.as_bytes(),
            certs.server_key_pem.as_bytes(),
        )
        .unwrap();
        tokio::spawn(async move { served.serve_router_tls(listener, router, tls).await });
    } else {
        tokio::spawn(async move { served.serve_router(listener, router).await });
    }
    let scheme = if tls { "wss" } else { "ws" };
    Node {
        server,
        url: format!("{scheme}://127.0.0.1:{port}"),
        ca_pem: certs.ca_pem.clone(),
    }
}

fn settings(node: &Node, deflate: bool) -> Settings {
    Settings {
        url: node.url.clone(),
        urls: Vec::new(),
        server_pids: Vec::new(),
        connect_concurrency: 16,
        run_id: common::new_run_id(),
        connect: ConnectOptions {
            tls: Some(tls::client_config_from_pem(node.ca_pem.as_bytes()).unwrap()),
            deflate,
            ..ConnectOptions::default()
        },
        padding: Padding::Words,
    }
}

fn result(report: &Report, key: &str) -> u64 {
    report.results[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {}", report.results))
}

fn wire_read_per_op(report: &Report) -> f64 {
    report.results["wire"]["read_per_op"].as_f64().unwrap()
}

async fn run_burst(s: &Settings, size: usize) -> Report {
    let p = burst::BurstParams {
        messages: 200,
        receivers: 20,
        size,
        timeout: Duration::from_secs(20),
        room: format!("burst-{}", s.run_id),
    };
    burst::run(s, &p).await.unwrap()
}

async fn run_echo(s: &Settings, size: usize) -> Report {
    let p = echo::EchoParams {
        clients: 4,
        in_flight: 2,
        duration: Duration::from_millis(500),
        size,
    };
    echo::run(s, &p).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deflate_over_tls_delivers_everything_compressed() {
    let node = start_node(true, true, Duration::from_secs(20)).await;
    let s = settings(&node, true);
    common::probe(&s).await.unwrap();
    let before = server_stats::fetch(&s.url, &s.connect).await.unwrap();

    let report = run_burst(&s, 1000).await;
    assert_eq!(
        result(&report, "delivered"),
        200 * 20,
        "{} {:?}",
        report.results,
        node.server.stats()
    );
    assert!(report.results["complete"].as_bool().unwrap());
    // 1,000 bytes of words, sent compressed: well under the plain size per delivery.
    assert!(wire_read_per_op(&report) < 800.0, "{}", report.results);

    let report = run_echo(&s, 1000).await;
    assert!(result(&report, "acks") > 0);
    assert_eq!(result(&report, "failed_clients"), 0, "{}", report.results);

    let after = server_stats::fetch(&s.url, &s.connect).await.unwrap();
    let delta = server_stats::delta(&before, &after);
    // The burst is compressed once per message, whatever the receivers; echo once per reply.
    assert!(
        delta["compressed_messages"].as_u64().unwrap() >= 200,
        "{delta}"
    );
    assert!(server_stats::deflate_line(&delta).is_some());
    let stats = node.server.stats();
    assert!(stats.deflate_connections >= 25, "{stats:?}");
    // Words compress to about two thirds without context takeover.
    assert!(
        stats.compressed_bytes_out * 10 < stats.compressed_bytes_in * 8,
        "{stats:?}"
    );
    assert_eq!(stats.ping_timeouts, 0, "{stats:?}");
    node.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deflate_fanout_and_idle_answer_pings() {
    let node = start_node(false, true, PINGS).await;
    let s = settings(&node, true);
    let p = fanout::FanoutParams {
        receivers: 10,
        rate: 100.0,
        size: 400,
        // Long enough for several server pings: the publisher's split halves answer them.
        duration: Duration::from_millis(1200),
        drain_timeout: Duration::from_secs(5),
        room: format!("fan-{}", s.run_id),
    };
    let report = fanout::run(&s, &p).await.unwrap();
    let sent = result(&report, "sent");
    assert!(sent > 0);
    assert_eq!(
        result(&report, "delivered"),
        sent * 10,
        "{}",
        report.results
    );
    assert!(report.results["send_error"].is_null(), "{}", report.results);

    let p = idle::IdleParams {
        connections: 20,
        hold: Duration::from_millis(1000),
        verify: true,
    };
    let report = idle::run(&s, &p).await.unwrap();
    assert_eq!(result(&report, "connected"), 20, "{}", report.results);
    assert_eq!(result(&report, "dropped"), 0, "{}", report.results);
    let stats = node.server.stats();
    assert_eq!(stats.ping_timeouts, 0, "{stats:?}");
    assert!(stats.deflate_connections >= 31, "{stats:?}");
    assert!(stats.compressed_messages >= sent, "{stats:?}");
    node.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tungstenite_over_tls_runs_every_scenario_uncompressed() {
    let node = start_node(true, true, Duration::from_secs(20)).await;
    let s = settings(&node, false);
    let report = run_burst(&s, 300).await;
    assert_eq!(result(&report, "delivered"), 200 * 20, "{}", report.results);
    // Not compressed: at least the message itself per delivery.
    assert!(wire_read_per_op(&report) > 300.0, "{}", report.results);
    let report = run_echo(&s, 32).await;
    assert!(result(&report, "acks") > 0);
    assert_eq!(result(&report, "failed_clients"), 0, "{}", report.results);
    let p = idle::IdleParams {
        connections: 10,
        hold: Duration::from_millis(300),
        verify: true,
    };
    let report = idle::run(&s, &p).await.unwrap();
    assert_eq!(result(&report, "dropped"), 0, "{}", report.results);
    let stats = node.server.stats();
    assert_eq!(stats.deflate_connections, 0, "{stats:?}");
    assert_eq!(stats.ping_timeouts, 0, "{stats:?}");
    node.server.shutdown().await;
}

#[tokio::test]
async fn clear_errors_for_missing_authority_and_declined_deflate() {
    let node = start_node(false, false, Duration::from_secs(20)).await;
    let s = settings(&node, true);
    let err = ws::connect_with(&s.url, "x", &s.connect)
        .await
        .err()
        .unwrap();
    assert!(
        format!("{err:#}").contains("did not accept permessage-deflate"),
        "{err:#}"
    );

    let tls_node = start_node(true, false, Duration::from_secs(20)).await;
    let err = ws::connect(&tls_node.url, "x").await.err().unwrap();
    assert!(format!("{err:#}").contains("--ca-file"), "{err:#}");
    let wrong_ca = crosswire_testkit::TestCerts::generate()
        .unwrap()
        .ca_pem
        .clone();
    let options = ConnectOptions {
        tls: Some(tls::client_config_from_pem(wrong_ca.as_bytes()).unwrap()),
        ..ConnectOptions::default()
    };
    let err = ws::connect_with(&tls_node.url, "x", &options)
        .await
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("TLS handshake"), "{err:#}");
    node.server.shutdown().await;
    tls_node.server.shutdown().await;
}

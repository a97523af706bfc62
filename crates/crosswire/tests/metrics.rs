//! `Server::metrics_text`: the node's counters in the OpenMetrics text format, read by a
//! real scrape over HTTP, adding up to what real clients did.

use std::collections::BTreeMap;

use crosswire::{Room, ServerConfig};
use crosswire_testkit::{http_get, install_relay, spawn_server, wait_until, RawClient, TIMEOUT};

/// `name{labels}` → value, from an OpenMetrics text body.
fn parse(body: &str) -> BTreeMap<String, f64> {
    crosswire_testkit::parse_metrics(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn value(metrics: &BTreeMap<String, f64>, key: &str) -> f64 {
    *metrics.get(key).unwrap_or_else(|| {
        let family = key.split('{').next().unwrap_or(key);
        let mut near: Vec<&String> = metrics.keys().filter(|k| k.starts_with(family)).collect();
        near.sort();
        panic!("no {key}; of its family: {near:?}")
    })
}

#[tokio::test]
async fn async_handlers_and_server_requests_are_timed() {
    let (server, _addr) = spawn_server(ServerConfig::default().with_node_name("m2")).await;
    server.on_server("slow", || async {
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        crosswire::Ack(1)
    });
    let results = server
        .request_server("slow", &(), crosswire::ServerEmitOptions::new())
        .unwrap()
        .collect()
        .await;
    assert!(results.success);
    // Nobody answers "none" within 50 ms: a timeout.
    let results = server
        .request_server(
            "none",
            &(),
            crosswire::ServerEmitOptions::new()
                .with_timeout(std::time::Duration::from_millis(50))
                .with_expected_responses(1),
        )
        .unwrap()
        .collect()
        .await;
    assert!(!results.success);
    let m = parse(&server.metrics_text());
    assert_eq!(value(&m, "crosswire_server_requests_total"), 2.0);
    assert_eq!(value(&m, "crosswire_server_request_timeouts_total"), 1.0);
    assert_eq!(
        value(&m, "crosswire_server_request_reply_seconds_count"),
        1.0
    );
    // The async handler is timed until its future completes: at least 30 ms, so it is not
    // in the buckets up to 25 ms.
    let key = |le: &str| {
        format!(
            r#"crosswire_handler_duration_seconds_bucket{{le="{le}",kind="server",event="slow"}}"#
        )
    };
    assert_eq!(value(&m, &key("0.025")), 0.0);
    assert_eq!(value(&m, &key("+Inf")), 1.0);
    assert!(
        value(
            &m,
            r#"crosswire_handler_duration_seconds_sum{kind="server",event="slow"}"#
        ) >= 0.03
    );
}

#[tokio::test]
async fn a_scrape_adds_up_to_what_the_clients_did() {
    let (server, addr) = spawn_server(ServerConfig::default().with_node_name("m1")).await;
    install_relay(&server);
    let app = axum::Router::new()
        .route("/metrics", server.metrics_handler())
        .into_make_service();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut clients = Vec::new();
    for id in ["a", "b", "c"] {
        let mut c = RawClient::connect_bound(addr, id).await.unwrap();
        c.send_text(r#"{"event":"join","payload":{"room":"r"},"callbackId":"j"}"#)
            .await
            .unwrap();
        assert!(c.recv_text(TIMEOUT).await.unwrap().contains("ok"));
        clients.push(c);
    }
    let before = parse(&server.metrics_text());
    // Ten broadcasts to the three members: thirty deliveries.
    for i in 0..10 {
        server
            .to_room(Room::new(crosswire_testkit::RELAY_NAMESPACE, "r"))
            .emit("msg", &i)
            .unwrap();
    }
    for c in &mut clients {
        for _ in 0..10 {
            c.recv_text(TIMEOUT).await.expect("delivery");
        }
    }
    // One client leaves with 4001, one is closed by the server with 4010.
    let mut gone = clients.pop().unwrap();
    gone.send_close(4001, "bye").await.unwrap();
    assert_eq!(
        gone.expect_close(TIMEOUT).await.map(|(code, _)| code),
        Some(4001),
        "the server echoes the close"
    );
    server.socket("b").unwrap().close(4010, "logout");
    assert!(wait_until(TIMEOUT, || server.connection_count() == 1).await);

    let (status, body) = http_get(http, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    let after = parse(&body);
    let sent = "crosswire_messages_sent_total";
    assert_eq!(
        value(&after, sent) - value(&before, sent),
        30.0,
        "every delivery counted once, closed sockets included"
    );
    let delivered = "crosswire_local_deliveries_total";
    assert_eq!(value(&after, delivered) - value(&before, delivered), 30.0);
    // Three joins timed under their event name; no other client event ran a handler.
    let joins = r#"crosswire_handler_duration_seconds_count{kind="client",event="join"}"#;
    assert_eq!(value(&after, joins), 3.0);
    let inf = r#"crosswire_handler_duration_seconds_bucket{le="+Inf",kind="client",event="join"}"#;
    assert_eq!(value(&after, inf), 3.0);
    assert_eq!(
        value(
            &after,
            r#"crosswire_handler_duration_seconds_count{kind="client",event="echo"}"#
        ),
        0.0
    );
    assert_eq!(value(&after, "crosswire_server_requests_total"), 0.0);
    assert_eq!(value(&after, "crosswire_connections"), 1.0);
    assert_eq!(value(&after, "crosswire_connections_accepted_total"), 3.0);
    assert_eq!(value(&after, r#"crosswire_closes_total{code="4001"}"#), 1.0);
    assert_eq!(value(&after, r#"crosswire_closes_total{code="4010"}"#), 1.0);
    assert_eq!(value(&after, r#"crosswire_node_info{node="m1"}"#), 1.0);
    assert_eq!(value(&after, "crosswire_nodes"), 1.0);
    assert_eq!(
        value(
            &after,
            r#"crosswire_upgrades_refused_total{reason="origin"}"#
        ),
        0.0
    );
    // Each client sent its heartbeat and its join.
    assert_eq!(value(&after, "crosswire_messages_received_total"), 6.0);
    assert!(
        value(&after, "crosswire_sent_bytes_total") > value(&before, "crosswire_sent_bytes_total")
    );
}

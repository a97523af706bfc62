//! Server-to-server events, node discovery, targeted routing, compression and custom channels,
//! between nodes in one process on an in-process broker hub. (The same over Redis is in
//! `crosswire-cli/tests/redis_*.rs`.)

use std::sync::Arc;
use std::time::Duration;

use crosswire::system::{NodeJoined, NodeLeft, ServerError};
use crosswire::{MemoryHub, Room, Server, ServerConfig, ServerEmitOptions};
use crosswire_testkit::cluster_suite::{self, answer_who, ask_who, node_config};
use crosswire_testkit::{install_relay, serve_on_free_port, wait_until, RawClient};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(5);

fn node(hub: &MemoryHub, config: ServerConfig) -> Server {
    Server::builder(config)
        .broker(Arc::new(hub.broker()))
        .build()
        .expect("valid config")
}

/// `server`'s node joins and leaves as they happen: `+name` and `-name`.
fn node_events(server: &Server) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let joined = tx.clone();
    server.on_system(move |NodeJoined { node, .. }: NodeJoined| {
        let _ = joined.send(format!("+{node}"));
    });
    server.on_system(move |NodeLeft { node, .. }: NodeLeft| {
        let _ = tx.send(format!("-{node}"));
    });
    rx
}

/// Nodes on one hub that all see each other.
async fn cluster(names: &[&str]) -> (MemoryHub, Vec<Server>) {
    let hub = MemoryHub::new();
    let nodes: Vec<Server> = names.iter().map(|n| node(&hub, node_config(n))).collect();
    let mut all: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    all.sort();
    for n in &nodes {
        assert!(
            wait_until(WAIT, || n.nodes() == all).await,
            "{} sees {:?}",
            n.node_name(),
            n.nodes()
        );
    }
    (hub, nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_targeted_and_except_self() {
    let (_hub, nodes) = cluster(&["a", "b", "c"]).await;
    cluster_suite::broadcast_targeted_and_except_self(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_one_by_one_timeout_and_cancel() {
    let (_hub, nodes) = cluster(&["a", "b", "c"]).await;
    cluster_suite::one_by_one_timeout_and_cancel(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_follows_joins_and_leaves() {
    let hub = MemoryHub::new();
    let a = node(&hub, node_config("a"));
    let mut rx = node_events(&a);
    let b = node(&hub, node_config("b"));
    assert_eq!(
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .ok()
            .flatten()
            .as_deref(),
        Some("+b")
    );
    assert!(wait_until(WAIT, || b.nodes() == ["a", "b"]).await);
    answer_who(&a);
    answer_who(&b);

    // A broadcast waits for exactly the live nodes: b's departure shrinks it at once.
    b.shutdown().await;
    assert_eq!(
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .ok()
            .flatten()
            .as_deref(),
        Some("-b")
    );
    assert_eq!(a.nodes(), ["a"]);
    assert_eq!(ask_who(&a, ServerEmitOptions::new()).await, ["a"]);
}

/// A node's departure is final for that run of it: an announcement of the same run that
/// reaches a peer after the departure (sent just before it, or crossing it through another
/// Redis node) does not bring the node back; a restarted run (new incarnation) does join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_announcement_does_not_bring_a_departed_node_back() {
    use crosswire::Broker;
    use crosswire_protocol::envelope::{Body, Codec, Envelope};

    let hub = MemoryHub::new();
    let a = node(&hub, node_config("a"));
    let mut rx = node_events(&a);
    // a is subscribed once it answers a hello from another (real) node.
    let b = node(&hub, node_config("b"));
    assert!(wait_until(WAIT, || a.nodes() == ["a", "b"]).await);
    assert_eq!(
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .ok()
            .flatten()
            .as_deref(),
        Some("+b")
    );

    // Raw envelopes from a "ghost" node, published in this order on one channel.
    let raw = hub.broker();
    let announce = |node: &str, incarnation: u64, seq: u64| {
        let body = Body::Announce {
            ttl_ms: 60_000,
            compression: false,
            hello: false,
        };
        Codec::default()
            .encode(&Envelope::new(node, incarnation, seq, body))
            .expect("encodes")
    };
    let leave = Codec::default()
        .encode(&Envelope::new("ghost", 7, 2, Body::Leave))
        .expect("encodes");
    for bytes in [
        announce("ghost", 7, 1),
        leave,
        announce("ghost", 7, 3), // late: the same run, after its departure
        announce("marker", 1, 1),
        announce("ghost", 8, 1), // a new run of ghost
    ] {
        raw.publish("crosswire:s2s:all", bytes.into())
            .await
            .expect("published");
    }
    let mut events = Vec::new();
    while events.len() < 4 {
        match tokio::time::timeout(WAIT, rx.recv()).await {
            Ok(Some(e)) => events.push(e),
            _ => break,
        }
    }
    assert_eq!(events, ["+ghost", "-ghost", "+marker", "+ghost"]);
    assert_eq!(a.nodes(), ["a", "b", "ghost", "marker"]);
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_forwards_a_client_request_to_a_logic_node() {
    let (_hub, nodes) = cluster(&["gateway", "logic"]).await;
    cluster_suite::gateway_forwards_to_logic(&nodes[0], &nodes[1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicast_goes_only_to_the_node_of_the_id() {
    let (_hub, nodes) = cluster(&["a", "b", "c"]).await;
    let mut addrs = Vec::new();
    for n in &nodes {
        install_relay(n);
        addrs.push(serve_on_free_port(n).await);
    }
    let mut target = RawClient::connect(addrs[1], "/?id=target")
        .await
        .expect("connect");
    target.sync("").await.expect("sync");
    // a learns where `target` lives from b's bind announcement.
    assert!(
        wait_until(WAIT, || nodes[0].cached_location("target").as_deref()
            == Some("b"))
        .await
    );
    let c_before = nodes[2].stats().remote_deliveries;
    let b_before = nodes[1].stats().remote_deliveries;
    for i in 0..100 {
        nodes[0].to("target").emit("msg", &i).expect("emit");
    }
    for i in 0..100 {
        let text = target.recv_text(WAIT).await.expect("delivery");
        assert_eq!(text, format!(r#"{{"event":"msg","payload":{i}}}"#));
    }
    assert_eq!(nodes[1].stats().remote_deliveries, b_before + 100);
    assert_eq!(
        nodes[2].stats().remote_deliveries,
        c_before,
        "node c received envelopes for an id it does not hold"
    );
    // Cluster-wide queries see the socket.
    assert_eq!(nodes[2].locate("target").await.as_deref(), Some("b"));
    assert_eq!(nodes[0].cluster_connection_count().await, 1);
    nodes[1].join(&Room::new("chat", "r"), "target");
    assert_eq!(
        nodes[0].cluster_room_members(&Room::new("chat", "r")).await,
        vec!["target"]
    );
    assert_eq!(nodes[2].cluster_room_size(&Room::new("chat", "r")).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_on_every_node_and_mismatch_reported() {
    let hub = MemoryHub::new();
    let a = node(&hub, node_config("a").with_compression(Some(256)));
    let b = node(&hub, node_config("b").with_compression(Some(256)));
    install_relay(&b);
    let addr = serve_on_free_port(&b).await;
    let mut client = RawClient::connect(addr, "/?id=x").await.expect("connect");
    client
        .send_text(r#"{"event":"join","payload":{"room":"big"},"callbackId":"1"}"#)
        .await
        .expect("send");
    assert!(client.recv_text(WAIT).await.is_some());
    assert!(wait_until(WAIT, || a.nodes() == ["a", "b"]).await);
    let big = "z".repeat(50_000);
    a.to_room(Room::new("relay", "big"))
        .emit("msg", &big)
        .expect("emit");
    let text = client.recv_text(WAIT).await.expect("delivery");
    assert_eq!(
        text.len(),
        big.len() + r#"{"event":"msg","payload":""}"#.len()
    );

    // A node without compression reports the mismatch instead of misdecoding.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let c = node(&hub, node_config("c"));
    c.on_system(move |ServerError { message, .. }: ServerError| {
        let _ = tx.send(message);
    });
    let error = tokio::time::timeout(WAIT, rx.recv())
        .await
        .ok()
        .flatten()
        .expect("mismatch reported");
    assert!(error.contains("compression mismatch"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_channels_carry_raw_bytes() {
    let (_hub, nodes) = cluster(&["a", "b"]).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    nodes[0].on_channel_message(move |channel, bytes| {
        let _ = tx.send((channel.to_string(), bytes.to_vec()));
    });
    assert!(nodes[0].subscribe_channel("news"));
    assert!(!nodes[0].subscribe_channel("crosswire:ws:all"), "reserved");
    // The subscription is made by the node's broker task; publish until it is in place.
    let deadline = tokio::time::Instant::now() + WAIT;
    let got = loop {
        assert!(nodes[1].publish_raw("news", &b"hello"[..]));
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
            break m;
        }
        assert!(tokio::time::Instant::now() < deadline, "no custom message");
    };
    assert_eq!(got, ("news".to_string(), b"hello".to_vec()));
    // A single node has no broker: custom channels are refused.
    let single = Server::new(ServerConfig::default()).expect("config");
    assert!(!single.subscribe_channel("news"));
}

#[tokio::test]
async fn channel_prefixes_must_differ() {
    let bad = ServerConfig::default()
        .with_ws_channel_prefix("app")
        .with_server_channel_prefix("app");
    assert!(matches!(
        Server::new(bad),
        Err(crosswire::ConfigError::ChannelPrefixes { .. })
    ));
    let nested = ServerConfig::default()
        .with_ws_channel_prefix("app")
        .with_server_channel_prefix("app:s2s");
    assert!(Server::new(nested).is_err());
}

#[tokio::test]
async fn single_node_requests_are_answered_in_process() {
    let server = Server::new(ServerConfig::default().with_node_name("solo")).expect("config");
    answer_who(&server);
    assert_eq!(ask_who(&server, ServerEmitOptions::new()).await, ["solo"]);
    assert_eq!(server.nodes(), ["solo"]);
}

/// The same id logging in on two nodes at once, fifty times: exactly one socket each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_race_on_two_nodes_keeps_exactly_one_socket() {
    let (_hub, nodes) = cluster(&["a", "b"]).await;
    cluster_suite::login_race_keeps_one_socket(&nodes[0], &nodes[1], 50).await;
}

/// Presence over the in-process hub: joins, leaves, a closed socket, a late node, a node
/// that dies without a word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_follows_members_across_nodes() {
    let hub = MemoryHub::new();
    cluster_suite::presence_across_nodes(|name| node(&hub, cluster_suite::presence_config(name)))
        .await;
}

/// History and recovery over the in-process hub: a client away for two seconds while
/// messages flow comes back on another node with every message once and in order; past the
/// window it is told `recovered: false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_back_on_another_node_recovers_what_it_missed() {
    let hub = MemoryHub::new();
    cluster_suite::recovery_across_nodes(|name| node(&hub, cluster_suite::history_config(name)))
        .await;
}

/// Recovery of the messages sent to an id over the in-process hub: away two seconds, back
/// on another node with its position in the query, every message once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_back_on_another_node_gets_what_was_sent_to_its_id() {
    let hub = MemoryHub::new();
    cluster_suite::id_recovery_across_nodes(|name| node(&hub, cluster_suite::history_config(name)))
        .await;
}

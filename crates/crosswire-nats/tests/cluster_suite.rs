//! The broker-agnostic cluster scenarios (`crosswire_testkit::cluster_suite`) over a real
//! `nats-server`: server-to-server requests (broadcast, targeted, except-self, one by one
//! with timeouts), a gateway forwarding to a logic node, requests to any id, the login race
//! and presence with a node that dies.

use std::sync::Arc;

use crosswire::{Server, ServerConfig};
use crosswire_nats::{NatsBroker, NatsConfig};
use crosswire_testkit::cluster_suite::{self, node_config, wait_nodes};
use crosswire_testkit::NatsServer;

fn nats() -> NatsServer {
    assert!(
        NatsServer::available(),
        "nats-server is not installed (scripts/test.sh installs Debian's nats-server)"
    );
    NatsServer::start().expect("nats-server starts")
}

async fn node(config: ServerConfig, url: &str) -> Server {
    let broker = NatsBroker::connect(NatsConfig::from_urls([url]).expect("url"))
        .await
        .expect("client");
    Server::builder(config)
        .broker(Arc::new(broker))
        .build()
        .expect("valid config")
}

/// Nodes `names` over one NATS server, once they all see each other.
async fn discovered(nats: &NatsServer, names: &[&str]) -> Vec<Server> {
    let mut nodes = Vec::new();
    for name in names {
        nodes.push(node(node_config(name), &nats.url()).await);
    }
    wait_nodes(&nodes.iter().collect::<Vec<_>>(), names).await;
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_targeted_and_except_self_over_nats() {
    let nats = nats();
    let nodes = discovered(&nats, &["a", "b", "c"]).await;
    cluster_suite::broadcast_targeted_and_except_self(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_by_one_timeout_with_partial_replies_and_cancel_over_nats() {
    let nats = nats();
    let nodes = discovered(&nats, &["a", "b", "c"]).await;
    cluster_suite::one_by_one_timeout_and_cancel(&nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_forwards_to_a_logic_node_over_nats() {
    let nats = nats();
    let nodes = discovered(&nats, &["gateway", "logic"]).await;
    cluster_suite::gateway_forwards_to_logic(&nodes[0], &nodes[1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_reaches_an_id_on_another_node_over_nats() {
    let nats = nats();
    let nodes = discovered(&nats, &["a", "b"]).await;
    cluster_suite::request_reaches_any_id(&nodes[0], &nodes[1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_race_on_two_nodes_keeps_exactly_one_socket_over_nats() {
    let nats = nats();
    let nodes = discovered(&nats, &["a", "b"]).await;
    cluster_suite::login_race_keeps_one_socket(&nodes[0], &nodes[1], 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_follows_members_across_nodes_over_nats() {
    let nats = nats();
    let url = nats.url();
    cluster_suite::presence_across_nodes(|name| {
        let config = cluster_suite::presence_config(name);
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(node(config, &url))
        })
    })
    .await;
}

/// Client-bound deliveries cross the broker: a room, an id and everyone, sent on `a`, reach
/// a socket on `b`, each once; a room it is not in does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_target_kind_reaches_a_socket_on_another_node_over_nats() {
    use crosswire::Room;
    use crosswire_testkit::{install_relay, serve_on_free_port, RawClient, RELAY_NAMESPACE};

    let nats = nats();
    // The relay namespace subscribed from the start: it is in place once the nodes meet.
    let preset = |name: &str| node_config(name).with_preset_namespaces([RELAY_NAMESPACE]);
    let (a, b) = (
        node(preset("a"), &nats.url()).await,
        node(preset("b"), &nats.url()).await,
    );
    wait_nodes(&[&a, &b], &["a", "b"]).await;
    install_relay(&b);
    let addr = serve_on_free_port(&b).await;
    let mut x = RawClient::connect_bound(addr, "x").await.expect("connect");
    let room = Room::new(RELAY_NAMESPACE, "r");
    b.join(&room, "x");
    a.to_room(&room).emit("msg", "room").expect("emit");
    a.to("x").emit("msg", "id").expect("emit");
    a.to_all().emit("msg", "all").expect("emit");
    // On the room's channel after "room": what x must not get, then the end marker.
    a.to_room(Room::new(RELAY_NAMESPACE, "elsewhere"))
        .emit("msg", "not for x")
        .expect("emit");
    a.to_room(&room).emit("msg", "end").expect("emit");
    // Each channel is its own subscription: order holds within one, not across them.
    let mut payloads = Vec::new();
    while !["all", "end", "id"]
        .iter()
        .all(|p| payloads.contains(&p.to_string()))
    {
        let text = x
            .recv_text(cluster_suite::WAIT)
            .await
            .unwrap_or_else(|| panic!("x got only {payloads:?}"));
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        if let Some(p) = v["payload"].as_str() {
            payloads.push(p.to_string());
        }
    }
    payloads.sort();
    assert_eq!(payloads, ["all", "end", "id", "room"]);
}

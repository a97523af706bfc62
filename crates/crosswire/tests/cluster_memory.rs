//! Several nodes in one process on a `MemoryHub`, checked through the hub's own view of each
//! node's subscriptions: room namespaces are subscribed while they have local rooms (and
//! preset ones always), and a namespace only one node has stays on that node. (Every send kind
//! delivered exactly once, takeovers and the rest run for every broker in the cluster suite:
//! `broker_suite.rs`.)
//!
//! Delivery across nodes is asynchronous, so "nothing else arrived" is checked with a barrier
//! that travels the same path: after the send under test, the sending node emits a `barrier`
//! event to everyone. A node publishes in call order and the hub keeps that order per
//! receiving node, so everything sent before the barrier arrives before it.

use std::collections::BTreeMap;

use crosswire::{MemoryHub, Room, ServerConfig};
use crosswire_testkit::fixture::HubNode;
use crosswire_testkit::{RawClient, RELAY_NAMESPACE, TIMEOUT};

const RELAY_CHANNEL: &str = "crosswire:ws:room:relay";

async fn named(hub: &MemoryHub, name: &str) -> HubNode {
    HubNode::start(hub, ServerConfig::default().with_node_name(name)).await
}

/// Clients by id, each on some node.
#[derive(Default)]
struct Clients {
    by_id: BTreeMap<&'static str, RawClient>,
    barrier: u32,
}

impl Clients {
    async fn add(&mut self, node: &HubNode, id: &'static str) {
        let client = RawClient::connect_bound(node.addr, id).await.unwrap();
        self.by_id.insert(id, client);
    }

    /// What each client got before `from`'s barrier, ids with nothing left out.
    async fn received(&mut self, from: &HubNode) -> BTreeMap<&'static str, Vec<String>> {
        self.barrier += 1;
        let barrier = format!(r#"{{"event":"barrier","payload":{}}}"#, self.barrier);
        from.server.to_all().emit("barrier", &self.barrier).unwrap();
        let mut out = BTreeMap::new();
        for (id, client) in self.by_id.iter_mut() {
            let got = client.recv_until(&barrier, TIMEOUT, id).await;
            if !got.is_empty() {
                out.insert(*id, got);
            }
        }
        out
    }
}

fn msg(n: u32) -> String {
    format!(r#"{{"event":"m","payload":{n}}}"#)
}

fn expect(ids: &[&'static str], n: u32) -> BTreeMap<&'static str, Vec<String>> {
    ids.iter().map(|id| (*id, vec![msg(n)])).collect()
}

/// A namespace only one node has: the others are not subscribed to its channel and get
/// nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_only_one_node_has_stays_on_that_node() {
    let hub = MemoryHub::new();
    let nodes = [
        named(&hub, "a").await,
        named(&hub, "b").await,
        named(&hub, "c").await,
    ];
    let mut c = Clients::default();
    for (node, pair) in nodes.iter().zip([["a1", "a2"], ["b1", "b2"], ["c1", "c2"]]) {
        for id in pair {
            c.add(node, id).await;
        }
    }
    let [a, b, third] = &nodes;
    b.server.join(&Room::new("private", "p"), "b2");
    assert!(b.subscribed("crosswire:ws:room:private", true).await);
    for node in [a, third] {
        assert!(!node
            .broker
            .subscriptions()
            .iter()
            .any(|ch| ch.ends_with(":private")));
    }
    a.server
        .to_room(Room::new("private", "p"))
        .emit("m", &1)
        .unwrap();
    assert_eq!(c.received(a).await, expect(&["b2"], 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_subscriptions_follow_joins_and_leaves() {
    let hub = MemoryHub::new();
    let a = named(&hub, "a").await;
    assert!(!a.is_subscribed(RELAY_CHANNEL));
    a.server.join(&Room::new(RELAY_NAMESPACE, "1"), "x");
    assert!(a.subscribed(RELAY_CHANNEL, true).await);
    a.server.join(&Room::new(RELAY_NAMESPACE, "2"), "y");
    a.server.leave(&Room::new(RELAY_NAMESPACE, "1"), "x");
    // Still one room in the namespace: still subscribed.
    assert!(a.subscribed(RELAY_CHANNEL, true).await);
    a.server.leave(&Room::new(RELAY_NAMESPACE, "2"), "y");
    assert!(a.subscribed(RELAY_CHANNEL, false).await);
    // A socket's disconnect empties its rooms, and the subscription goes with them.
    let client = RawClient::connect_bound(a.addr, "z").await.unwrap();
    a.server.join(&Room::new("game", "g"), "z");
    assert!(a.subscribed("crosswire:ws:room:game", true).await);
    drop(client);
    assert!(a.subscribed("crosswire:ws:room:game", false).await);
    // remove_room empties the namespace too.
    a.server.join(&Room::new("game", "g"), "w");
    assert!(a.subscribed("crosswire:ws:room:game", true).await);
    a.server.remove_room(&Room::new("game", "g"));
    assert!(a.subscribed("crosswire:ws:room:game", false).await);

    // Preset namespaces are subscribed from the start and stay.
    let preset = HubNode::start(
        &hub,
        ServerConfig::default()
            .with_node_name("p")
            .with_preset_namespaces(["lobby"]),
    )
    .await;
    assert!(preset.subscribed("crosswire:ws:room:lobby", true).await);
    preset.server.join(&Room::new("lobby", "1"), "x");
    preset.server.leave(&Room::new("lobby", "1"), "x");
    // Without auto-unsubscribe a namespace stays subscribed once joined.
    let sticky = HubNode::start(
        &hub,
        ServerConfig::default()
            .with_node_name("s")
            .with_auto_unsubscribe(false),
    )
    .await;
    sticky.server.join(&Room::new("chat", "1"), "x");
    assert!(sticky.subscribed("crosswire:ws:room:chat", true).await);
    sticky.server.leave(&Room::new("chat", "1"), "x");
    // Ordering: the leave's (absent) unsubscribe would have been queued before this join's
    // subscribe; a later subscription proves the queue moved past it.
    sticky.server.join(&Room::new("other", "1"), "x");
    assert!(sticky.subscribed("crosswire:ws:room:other", true).await);
    assert!(sticky.is_subscribed("crosswire:ws:room:chat"));
    preset.server.join(&Room::new("other", "1"), "x");
    assert!(preset.subscribed("crosswire:ws:room:other", true).await);
    assert!(preset.is_subscribed("crosswire:ws:room:lobby"));
}

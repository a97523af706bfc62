//! Several nodes in one process on a `MemoryHub`: every send kind reaches exactly the right
//! sockets on every node, once.
//!
//! Delivery across nodes is asynchronous, so "nothing else arrived" is checked with a barrier
//! that travels the same path: after the send under test, the sending node emits a `barrier`
//! event to everyone. A node publishes in call order and the hub keeps that order per
//! receiving node, so everything sent before the barrier arrives before it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crosswire::{close_code, Broker, MemoryBroker, MemoryHub, Room, Server, ServerConfig};
use crosswire_testkit::{
    install_relay, serve_on_free_port, wait_until, RawClient, RELAY_NAMESPACE, TIMEOUT,
};

const ALL_CHANNEL: &str = "crosswire:ws:all";
const RELAY_CHANNEL: &str = "crosswire:ws:room:relay";

struct Node {
    server: Server,
    addr: SocketAddr,
    broker: Arc<MemoryBroker>,
}

impl Node {
    async fn start(hub: &MemoryHub, config: ServerConfig) -> Self {
        let broker = Arc::new(hub.broker());
        let server = Server::builder(config)
            .broker(Arc::clone(&broker) as Arc<dyn Broker>)
            .build()
            .expect("node");
        install_relay(&server);
        let addr = serve_on_free_port(&server).await;
        let node = Self {
            server,
            addr,
            broker,
        };
        assert!(node.wait_subscribed(ALL_CHANNEL, true).await);
        node
    }

    async fn named(hub: &MemoryHub, name: &str) -> Self {
        Self::start(hub, ServerConfig::default().with_node_name(name)).await
    }

    async fn wait_subscribed(&self, channel: &str, subscribed: bool) -> bool {
        wait_until(TIMEOUT, || {
            self.broker.subscriptions().iter().any(|c| c == channel) == subscribed
        })
        .await
    }
}

/// Clients by id, each on some node.
#[derive(Default)]
struct Clients {
    by_id: BTreeMap<&'static str, RawClient>,
    barrier: u32,
}

impl Clients {
    async fn add(&mut self, node: &Node, id: &'static str) {
        let client = RawClient::connect_bound(node.addr, id).await.unwrap();
        self.by_id.insert(id, client);
    }

    /// What each client got before `from`'s barrier, ids with nothing left out.
    async fn received(&mut self, from: &Node) -> BTreeMap<&'static str, Vec<String>> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_deliver_every_send_kind_exactly_once() {
    let hub = MemoryHub::new();
    let a = Node::named(&hub, "a").await;
    let b = Node::named(&hub, "b").await;
    let mut c = Clients::default();
    c.add(&a, "a1").await;
    c.add(&a, "a2").await;
    c.add(&b, "b1").await;
    c.add(&b, "b2").await;
    a.server.join(&Room::new(RELAY_NAMESPACE, "r"), "a1");
    b.server.join(&Room::new(RELAY_NAMESPACE, "r"), "b1");
    b.server.join(&Room::new(RELAY_NAMESPACE, "r"), "b2");
    assert!(a.wait_subscribed(RELAY_CHANNEL, true).await);
    assert!(b.wait_subscribed(RELAY_CHANNEL, true).await);
    // Room queries are about this node's members.
    assert_eq!(a.server.room_size(&Room::new(RELAY_NAMESPACE, "r")), 1);
    assert_eq!(b.server.room_size(&Room::new(RELAY_NAMESPACE, "r")), 2);

    // One id on the other node. The return value counts local deliveries only.
    assert_eq!(a.server.to("b1").emit("m", &1).unwrap(), 0);
    assert_eq!(c.received(&a).await, expect(&["b1"], 1));
    // A local id is served directly, and not again through the broker.
    assert_eq!(a.server.to("a2").emit("m", &2).unwrap(), 1);
    assert_eq!(c.received(&a).await, expect(&["a2"], 2));
    // A list mixing local and remote ids.
    assert_eq!(
        a.server
            .to_ids(["a2", "b2", "ghost"])
            .emit("m", &3)
            .unwrap(),
        1
    );
    assert_eq!(c.received(&a).await, expect(&["a2", "b2"], 3));
    // A room spread over both nodes, from either side.
    assert_eq!(
        a.server
            .to_room(Room::new(RELAY_NAMESPACE, "r"))
            .emit("m", &4)
            .unwrap(),
        1
    );
    assert_eq!(c.received(&a).await, expect(&["a1", "b1", "b2"], 4));
    assert_eq!(
        b.server
            .to_room(Room::new(RELAY_NAMESPACE, "r"))
            .emit("m", &5)
            .unwrap(),
        2
    );
    assert_eq!(c.received(&b).await, expect(&["a1", "b1", "b2"], 5));
    // except() applies on every node.
    let sent = a
        .server
        .to_room(Room::new(RELAY_NAMESPACE, "r"))
        .except(["b1"])
        .emit("m", &6)
        .unwrap();
    assert_eq!(sent, 1);
    assert_eq!(c.received(&a).await, expect(&["a1", "b2"], 6));
    // local(): this node's members only.
    assert_eq!(
        a.server
            .to_room(Room::new(RELAY_NAMESPACE, "r"))
            .local()
            .emit("m", &7)
            .unwrap(),
        1
    );
    assert_eq!(c.received(&a).await, expect(&["a1"], 7));
    assert_eq!(a.server.to("b1").local().emit("m", &8).unwrap(), 0);
    assert_eq!(c.received(&a).await, expect(&[], 8));
    // Everyone; and everyone on this node.
    assert_eq!(b.server.to_all().emit("m", &9).unwrap(), 2);
    assert_eq!(c.received(&b).await, expect(&["a1", "a2", "b1", "b2"], 9));
    assert_eq!(b.server.to_all().local().emit("m", &10).unwrap(), 2);
    assert_eq!(c.received(&b).await, expect(&["b1", "b2"], 10));
    // destroy(): delivered everywhere, then the room is gone on every node.
    assert_eq!(
        a.server
            .to_room(Room::new(RELAY_NAMESPACE, "r"))
            .destroy()
            .emit("m", &11)
            .unwrap(),
        1
    );
    assert_eq!(c.received(&a).await, expect(&["a1", "b1", "b2"], 11));
    assert_eq!(a.server.room_size(&Room::new(RELAY_NAMESPACE, "r")), 0);
    assert!(
        wait_until(TIMEOUT, || b
            .server
            .room_size(&Room::new(RELAY_NAMESPACE, "r"))
            == 0)
        .await
    );
    assert_eq!(
        a.server
            .to_room(Room::new(RELAY_NAMESPACE, "r"))
            .emit("m", &12)
            .unwrap(),
        0
    );
    assert_eq!(c.received(&a).await, expect(&[], 12));
    // remove_room() from one node empties the room on the others.
    a.server.join(&Room::new(RELAY_NAMESPACE, "q"), "a1");
    b.server.join(&Room::new(RELAY_NAMESPACE, "q"), "b1");
    b.server.remove_room(&Room::new(RELAY_NAMESPACE, "q"));
    assert!(
        wait_until(TIMEOUT, || a
            .server
            .room_size(&Room::new(RELAY_NAMESPACE, "q"))
            == 0)
        .await
    );
    assert!(a.server.rooms_of("a1", None).is_empty());
    // A client's relay request on one node reaches the other. The reply means the send was
    // made, so the barrier that follows is behind it.
    let a1 = c.by_id.get_mut("a1").unwrap();
    a1.send_text(r#"{"event":"to","payload":{"id":"b2","data":13},"callbackId":"t"}"#)
        .await
        .unwrap();
    assert_eq!(
        a1.recv_text(TIMEOUT).await.as_deref(),
        Some(r#"{"callbackId":"t","payload":{"ok":true}}"#)
    );
    let relayed = c.received(&a).await;
    let expected = vec![r#"{"event":"msg","payload":13}"#.to_string()];
    assert_eq!(relayed, BTreeMap::from([("b2", expected)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_exactly_once() {
    let hub = MemoryHub::new();
    let nodes = [
        Node::named(&hub, "a").await,
        Node::named(&hub, "b").await,
        Node::named(&hub, "c").await,
    ];
    let mut c = Clients::default();
    let ids = [["a1", "a2"], ["b1", "b2"], ["c1", "c2"]];
    for (node, pair) in nodes.iter().zip(ids) {
        for id in pair {
            c.add(node, id).await;
        }
        node.server.join(&Room::new(RELAY_NAMESPACE, "r"), pair[0]);
    }
    for node in &nodes {
        assert!(node.wait_subscribed(RELAY_CHANNEL, true).await);
    }
    let [a, b, _] = &nodes;
    let mut n = 0;
    for from in &nodes {
        n += 1;
        from.server.to_all().emit("m", &n).unwrap();
        assert_eq!(
            c.received(from).await,
            expect(&["a1", "a2", "b1", "b2", "c1", "c2"], n)
        );
        n += 1;
        from.server
            .to_room(Room::new(RELAY_NAMESPACE, "r"))
            .emit("m", &n)
            .unwrap();
        assert_eq!(c.received(from).await, expect(&["a1", "b1", "c1"], n));
        n += 1;
        from.server
            .to_room(Room::new(RELAY_NAMESPACE, "r"))
            .except(["c1", "a1"])
            .emit("m", &n)
            .unwrap();
        assert_eq!(c.received(from).await, expect(&["b1"], n));
        n += 1;
        from.server
            .to_ids(["a2", "b2", "c2"])
            .emit("m", &n)
            .unwrap();
        assert_eq!(c.received(from).await, expect(&["a2", "b2", "c2"], n));
        n += 1;
        from.server.to("c2").emit("m", &n).unwrap();
        assert_eq!(c.received(from).await, expect(&["c2"], n));
    }
    // A namespace only one node has: the others are not subscribed and get nothing.
    b.server.join(&Room::new("private", "p"), "b2");
    assert!(b.wait_subscribed("crosswire:ws:room:private", true).await);
    assert!(!a
        .broker
        .subscriptions()
        .iter()
        .any(|ch| ch.ends_with(":private")));
    n += 1;
    a.server
        .to_room(Room::new("private", "p"))
        .emit("m", &n)
        .unwrap();
    assert_eq!(c.received(a).await, expect(&["b2"], n));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_subscriptions_follow_joins_and_leaves() {
    let hub = MemoryHub::new();
    let a = Node::named(&hub, "a").await;
    assert!(!a.broker.subscriptions().iter().any(|c| c == RELAY_CHANNEL));
    a.server.join(&Room::new(RELAY_NAMESPACE, "1"), "x");
    assert!(a.wait_subscribed(RELAY_CHANNEL, true).await);
    a.server.join(&Room::new(RELAY_NAMESPACE, "2"), "y");
    a.server.leave(&Room::new(RELAY_NAMESPACE, "1"), "x");
    // Still one room in the namespace: still subscribed.
    assert!(a.wait_subscribed(RELAY_CHANNEL, true).await);
    a.server.leave(&Room::new(RELAY_NAMESPACE, "2"), "y");
    assert!(a.wait_subscribed(RELAY_CHANNEL, false).await);
    // A socket's disconnect empties its rooms, and the subscription goes with them.
    let client = RawClient::connect_bound(a.addr, "z").await.unwrap();
    a.server.join(&Room::new("game", "g"), "z");
    assert!(a.wait_subscribed("crosswire:ws:room:game", true).await);
    drop(client);
    assert!(a.wait_subscribed("crosswire:ws:room:game", false).await);
    // remove_room empties the namespace too.
    a.server.join(&Room::new("game", "g"), "w");
    assert!(a.wait_subscribed("crosswire:ws:room:game", true).await);
    a.server.remove_room(&Room::new("game", "g"));
    assert!(a.wait_subscribed("crosswire:ws:room:game", false).await);

    // Preset namespaces are subscribed from the start and stay.
    let preset = Node::start(
        &hub,
        ServerConfig::default()
            .with_node_name("p")
            .with_preset_namespaces(["lobby"]),
    )
    .await;
    assert!(
        preset
            .wait_subscribed("crosswire:ws:room:lobby", true)
            .await
    );
    preset.server.join(&Room::new("lobby", "1"), "x");
    preset.server.leave(&Room::new("lobby", "1"), "x");
    // Without auto-unsubscribe a namespace stays subscribed once joined.
    let sticky = Node::start(
        &hub,
        ServerConfig::default()
            .with_node_name("s")
            .with_auto_unsubscribe(false),
    )
    .await;
    sticky.server.join(&Room::new("chat", "1"), "x");
    assert!(sticky.wait_subscribed("crosswire:ws:room:chat", true).await);
    sticky.server.leave(&Room::new("chat", "1"), "x");
    // Ordering: the leave's (absent) unsubscribe would have been queued before this join's
    // subscribe; a later subscription proves the queue moved past it.
    sticky.server.join(&Room::new("other", "1"), "x");
    assert!(
        sticky
            .wait_subscribed("crosswire:ws:room:other", true)
            .await
    );
    assert!(sticky
        .broker
        .subscriptions()
        .iter()
        .any(|c| c == "crosswire:ws:room:chat"));
    preset.server.join(&Room::new("other", "1"), "x");
    assert!(
        preset
            .wait_subscribed("crosswire:ws:room:other", true)
            .await
    );
    assert!(preset
        .broker
        .subscriptions()
        .iter()
        .any(|c| c == "crosswire:ws:room:lobby"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_on_another_node_takes_the_id_over() {
    let hub = MemoryHub::new();
    let a = Node::named(&hub, "a").await;
    let b = Node::named(&hub, "b").await;
    let mut old = RawClient::connect_bound(a.addr, "u").await.unwrap();
    a.server.join(&Room::new(RELAY_NAMESPACE, "r"), "u");
    let mut new = RawClient::connect_bound(b.addr, "u").await.unwrap();
    assert_eq!(
        old.expect_close(TIMEOUT).await.map(|c| c.0),
        Some(close_code::TAKEN_OVER)
    );
    assert!(old.expect_eof(TIMEOUT).await);
    assert!(wait_until(TIMEOUT, || a.server.socket("u").is_none()).await);
    // The old node forgot the id and its rooms; sends from it reach the new connection.
    assert!(a.server.rooms_of("u", None).is_empty());
    assert!(b.server.socket("u").is_some());
    a.server.to("u").emit("m", &1).unwrap();
    assert_eq!(new.recv_text(TIMEOUT).await, Some(msg(1)));
    b.server.to("u").emit("m", &2).unwrap();
    assert_eq!(new.recv_text(TIMEOUT).await, Some(msg(2)));
    assert_eq!(a.server.connection_count(), 0);
    assert_eq!(b.server.connection_count(), 1);
}

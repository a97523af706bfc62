//! One suite for every broker: the cluster scenarios, written once over a [`Fixture`] (the
//! broker environment of one test), and [`broker_suite!`](crate::broker_suite!), which
//! expands to one test per scenario for a fixture type. The in-process hub
//! (`crosswire/tests/broker_suite.rs`), Redis (`crosswire-redis/tests/broker_suite.rs`),
//! Redis Cluster (`crosswire-redis/tests/cluster_broker_suite.rs`) and NATS
//! (`crosswire-nats/tests/cluster_suite.rs`) run it.
//!
//! ```ignore
//! use std::sync::Arc;
//! use crosswire::Broker;
//! use crosswire_testkit::broker_suite::Fixture;
//! use crosswire_testkit::NatsServer;
//!
//! struct Nats(NatsServer);
//!
//! impl Fixture for Nats {
//!     fn start() -> Self {
//!         Nats(NatsServer::start().expect("nats-server starts"))
//!     }
//!     async fn broker(&self) -> Arc<dyn Broker> {
//!         let config = crosswire_nats::NatsConfig::from_urls([self.0.url()]).expect("url");
//!         let broker = crosswire_nats::NatsBroker::connect(config).await.expect("client");
//!         crosswire_testkit::broker_suite::healthy(Arc::new(broker)).await
//!     }
//! }
//!
//! crosswire_testkit::broker_suite!(Nats, without_history);
//! ```
//!
//! # The scenarios
//! Every target kind delivered exactly once on two and on three nodes; rooms joined at run
//! time (with a channel per namespace, and per room), and joins confirmed by the broker
//! getting what is sent right after; unicast to the node of the id only;
//! order per room and per id; server-to-server requests (broadcast, targeted, except-self,
//! one by one, timeouts, cancelling, a gateway forwarding to a logic node, a request to any
//! id); discovery (joins, graceful and silent departures, a late announcement of a departed
//! run); takeover (a login on another node, the login race); compressed envelopes (and a node
//! without compression reporting the mismatch); custom channels carrying raw bytes; presence.
//! With history (the hub, Redis): recovery of a room (with a channel per namespace, and per
//! room) and of an id on another node. With room history only (Redis Cluster): recovery of a
//! room with a channel per room, and the other history configurations refused. Without
//! (NATS): a node with history configured is refused.
//!
//! # "Exactly once" across nodes
//! Delivery across nodes is asynchronous, so "nothing else arrived" is checked with a fence
//! that travels the same path as what it fences, never with a sleep. A broker keeps the order
//! of one node's messages on one channel only: NATS orders per subject, Redis Cluster per
//! shard, and a node's deliveries take one of three channels (everyone and ids of unknown
//! location: the `all` channel; rooms: their namespace's channel; ids of known location: the
//! channel of their node). So the fence is three barriers from the sending node, one on each:
//! to everyone, to a room of the relay namespace every client is in, and to every client's id.
//! A client has everything sent to it before the fence once it has all three barriers.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crosswire::system::{NodeJoined, NodeLeft, ServerError};
use crosswire::{close_code, Ack, Broker, Data, Room, Server, ServerConfig, ServerEmitOptions};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::cluster_suite::{self, answer_who, ask_who, node_config, wait_nodes, WAIT};
use crate::{install_relay, serve_on_free_port, wait_until, RawClient, RELAY_NAMESPACE};

/// The longest any one scenario may take before its test fails as hung.
pub const SCENARIO_LIMIT: Duration = Duration::from_secs(180);

pub use crate::fixture::{Fixture, Hub};

/// `broker` once it reports itself healthy ([`Broker::health`]); panics when it does not
/// within [`WAIT`]. For fixtures whose brokers connect in the background, so that a node
/// starts on a connected broker.
pub async fn healthy(broker: Arc<dyn Broker>) -> Arc<dyn Broker> {
    assert!(
        wait_until(WAIT, || broker.health().healthy).await,
        "the broker is not healthy after {WAIT:?}: {:?}",
        broker.health()
    );
    broker
}

/// Starts fixture `F` (blocking, in place) for one test of [`broker_suite!`](crate::broker_suite!).
pub fn start<F: Fixture>() -> F {
    tokio::task::block_in_place(F::start)
}

/// Runs one scenario, failing the test when it takes longer than [`SCENARIO_LIMIT`] (a hang).
pub async fn run(name: &str, scenario: impl Future<Output = ()>) {
    let started = tokio::time::Instant::now();
    if tokio::time::timeout(SCENARIO_LIMIT, scenario)
        .await
        .is_err()
    {
        panic!("scenario {name} hung: not done after {SCENARIO_LIMIT:?}");
    }
    eprintln!("scenario {name} took {:?}", started.elapsed());
}

/// Expands to one `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]` per scenario
/// of [`mod@crate::broker_suite`] for a [`Fixture`] type, named after the scenario: each starts
/// its own fixture ([`Fixture::start`]) and fails if the scenario takes longer than
/// [`SCENARIO_LIMIT`]. The second argument says what history the broker keeps:
/// `with_history` (rooms and ids, with or without room channels: the hub, Redis) adds the
/// recovery scenarios; `with_room_history` (rooms only, with room channels:
/// `Broker::history_needs_room_channels`, a Redis Cluster) the room recovery and the check
/// that other history configurations are refused; `without_history` (NATS) the check that a
/// node with history configured is refused. The calling crate needs `tokio` (features `macros`
/// and `rt-multi-thread`).
///
/// ```ignore
/// crosswire_testkit::broker_suite!(crosswire_testkit::broker_suite::Hub, with_history);
/// ```
#[macro_export]
macro_rules! broker_suite {
    (@tests $fixture:ty; $($scenario:ident),+ $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                let fixture = $crate::broker_suite::start::<$fixture>();
                $crate::broker_suite::run(
                    stringify!($scenario),
                    $crate::broker_suite::$scenario(&fixture),
                )
                .await;
            }
        )+
    };
    (@common $fixture:ty) => {
        $crate::broker_suite!(@tests $fixture;
            every_target_kind_on_two_nodes,
            every_target_kind_on_three_nodes,
            rooms_joined_at_run_time_receive,
            rooms_with_their_own_channels_receive,
            confirmed_joins_receive_what_follows,
            confirmed_joins_with_room_channels,
            unicast_goes_only_to_the_node_of_the_id,
            order_holds_per_room_and_per_id,
            broadcast_targeted_and_except_self,
            replies_one_by_one_timeout_and_cancel,
            gateway_forwards_to_logic,
            request_reaches_any_id,
            discovery_follows_joins_and_leaves,
            a_late_announcement_does_not_bring_a_departed_node_back,
            a_login_on_another_node_takes_the_id_over,
            login_race_keeps_one_socket,
            compressed_envelopes_and_mismatch_reported,
            custom_channels_carry_raw_bytes,
            presence_across_nodes,
        );
    };
    ($fixture:ty, with_history) => {
        $crate::broker_suite!(@common $fixture);
        $crate::broker_suite!(@tests $fixture;
            recovery_across_nodes,
            id_recovery_across_nodes,
            room_recovery_with_room_channels,
        );
    };
    ($fixture:ty, with_room_history) => {
        $crate::broker_suite!(@common $fixture);
        $crate::broker_suite!(@tests $fixture;
            room_recovery_with_room_channels,
            history_needs_room_channels,
        );
    };
    ($fixture:ty, without_history) => {
        $crate::broker_suite!(@common $fixture);
        $crate::broker_suite!(@tests $fixture; history_is_refused);
    };
}

// ----- nodes and clients -----

/// Nodes named `names`, each with `config(name)` over a new broker of `f`, once they all see
/// each other.
pub async fn discovered<F: Fixture>(
    f: &F,
    names: &[&str],
    config: impl Fn(&str) -> ServerConfig,
) -> Vec<Server> {
    let mut nodes = Vec::with_capacity(names.len());
    for name in names {
        nodes.push(f.node(config(name)).await);
    }
    wait_nodes(&nodes.iter().collect::<Vec<_>>(), names).await;
    nodes
}

/// [`node_config`] with the relay namespace preset: its channel is subscribed before a node
/// says hello, so once nodes see each other, room deliveries in it reach them.
pub fn delivery_config(name: &str) -> ServerConfig {
    node_config(name).with_preset_namespaces([RELAY_NAMESPACE])
}

/// A node of the delivery scenarios: relay handlers and a listener.
#[derive(Debug)]
pub struct Node {
    /// The node.
    pub server: Server,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// [`discovered`] nodes with the relay handlers ([`install_relay`]) and a listener each.
pub async fn relay_nodes<F: Fixture>(
    f: &F,
    names: &[&str],
    config: impl Fn(&str) -> ServerConfig,
) -> Vec<Node> {
    let mut nodes = Vec::with_capacity(names.len());
    for server in discovered(f, names, config).await {
        install_relay(&server);
        let addr = serve_on_free_port(&server).await;
        nodes.push(Node { server, addr });
    }
    nodes
}

/// The room of the relay namespace every client of [`Clients`] is in (for the room barrier).
fn fence_room() -> Room {
    Room::new(RELAY_NAMESPACE, "fence")
}

/// Barriers of one fence: to everyone, to [`fence_room`], to every client's id.
const BARRIERS: usize = 3;

/// Clients by id, each bound on some node and in the fence room (`relay/fence`, see the
/// module docs).
#[derive(Debug, Default)]
pub struct Clients {
    /// The clients.
    pub by_id: BTreeMap<&'static str, RawClient>,
    barrier: u32,
}

impl Clients {
    /// Connects a client bound to `id` to `node` and puts it in the fence room.
    pub async fn add(&mut self, node: &Node, id: &'static str) {
        let client = RawClient::connect_bound(node.addr, id)
            .await
            .unwrap_or_else(|e| panic!("{id}: connect: {e}"));
        node.server.join(&fence_room(), id);
        self.by_id.insert(id, client);
    }

    /// The client bound to `id`.
    pub fn get(&mut self, id: &str) -> &mut RawClient {
        self.by_id
            .get_mut(id)
            .unwrap_or_else(|| panic!("no client {id}"))
    }

    /// What each client got before a fence from `from` (see the module docs), ids that got
    /// nothing left out.
    pub async fn received(&mut self, from: &Server) -> BTreeMap<&'static str, Vec<String>> {
        self.barrier += 1;
        let n = self.barrier;
        let barrier = format!(r#"{{"event":"barrier","payload":{n}}}"#);
        from.to_all().emit("barrier", &n).expect("barrier to all");
        from.to_room(fence_room())
            .emit("barrier", &n)
            .expect("barrier to the fence room");
        from.to_ids(self.by_id.keys().copied())
            .emit("barrier", &n)
            .expect("barrier to the ids");
        let mut out = BTreeMap::new();
        for (id, client) in self.by_id.iter_mut() {
            let got = until_barriers(client, &barrier, BARRIERS, id).await;
            if !got.is_empty() {
                out.insert(*id, got);
            }
        }
        out
    }
}

/// Every text message `client` gets until it has had `barrier` `count` times (barriers left
/// out); panics, naming `who`, when one does not come within [`WAIT`].
async fn until_barriers(
    client: &mut RawClient,
    barrier: &str,
    count: usize,
    who: &str,
) -> Vec<String> {
    let mut got = Vec::new();
    let mut seen = 0;
    while seen < count {
        let text = client
            .recv_text(WAIT)
            .await
            .unwrap_or_else(|| panic!("{who}: {seen} of {count} {barrier}; got {got:?}"));
        if text == barrier {
            seen += 1;
        } else {
            got.push(text);
        }
    }
    got
}

fn msg(n: u32) -> String {
    format!(r#"{{"event":"m","payload":{n}}}"#)
}

fn expect(ids: &[&'static str], n: u32) -> BTreeMap<&'static str, Vec<String>> {
    ids.iter().map(|id| (*id, vec![msg(n)])).collect()
}

fn relay(room: &str) -> Room {
    Room::new(RELAY_NAMESPACE, room)
}

// ----- delivery -----

/// Every send kind on two nodes reaches exactly the right sockets, once: an id on the other
/// node, a local id (served directly, not again through the broker), several ids mixing both,
/// a room spread over both nodes from either side, several rooms with members in common,
/// `except`, `local` for rooms, ids and
/// everyone, everyone, `destroy` (delivered everywhere, then the room is gone on every node),
/// `remove_room` from one node, and a client's relay request. Return values count local
/// deliveries only.
pub async fn every_target_kind_on_two_nodes<F: Fixture>(f: &F) {
    let nodes = relay_nodes(f, &["a", "b"], delivery_config).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut c = Clients::default();
    c.add(a, "a1").await;
    c.add(a, "a2").await;
    c.add(b, "b1").await;
    c.add(b, "b2").await;
    let r = relay("r");
    a.server.join(&r, "a1");
    b.server.join(&r, "b1");
    b.server.join(&r, "b2");
    // Room queries are about this node's members.
    assert_eq!(a.server.room_size(&r), 1);
    assert_eq!(b.server.room_size(&r), 2);

    // One id on the other node. The return value counts local deliveries only.
    assert_eq!(a.server.to("b1").emit("m", &1).unwrap(), 0);
    assert_eq!(c.received(&a.server).await, expect(&["b1"], 1));
    // A local id is served directly, and not again through the broker.
    assert_eq!(a.server.to("a2").emit("m", &2).unwrap(), 1);
    assert_eq!(c.received(&a.server).await, expect(&["a2"], 2));
    // A list mixing local and remote ids.
    let sent = a.server.to_ids(["a2", "b2", "ghost"]).emit("m", &3);
    assert_eq!(sent.unwrap(), 1);
    assert_eq!(c.received(&a.server).await, expect(&["a2", "b2"], 3));
    // A room spread over both nodes, from either side.
    assert_eq!(a.server.to_room(&r).emit("m", &4).unwrap(), 1);
    assert_eq!(c.received(&a.server).await, expect(&["a1", "b1", "b2"], 4));
    assert_eq!(b.server.to_room(&r).emit("m", &5).unwrap(), 2);
    assert_eq!(c.received(&b.server).await, expect(&["a1", "b1", "b2"], 5));
    // Several rooms with members in common: each room's members get its message once, in
    // the order sent (one namespace, one channel).
    let s2 = relay("s");
    a.server.join(&s2, "a2");
    b.server.join(&s2, "b1");
    assert_eq!(a.server.to_room(&r).emit("m", &41).unwrap(), 1);
    assert_eq!(a.server.to_room(&s2).emit("m", &42).unwrap(), 1);
    let mut both = expect(&["a1", "b2"], 41);
    both.insert("a2", vec![msg(42)]);
    both.insert("b1", vec![msg(41), msg(42)]);
    assert_eq!(c.received(&a.server).await, both);
    a.server.leave(&s2, "a2");
    b.server.leave(&s2, "b1");
    // except() applies on every node.
    let sent = a.server.to_room(&r).except(["b1"]).emit("m", &6);
    assert_eq!(sent.unwrap(), 1);
    assert_eq!(c.received(&a.server).await, expect(&["a1", "b2"], 6));
    // local(): this node's members only.
    assert_eq!(a.server.to_room(&r).local().emit("m", &7).unwrap(), 1);
    assert_eq!(c.received(&a.server).await, expect(&["a1"], 7));
    assert_eq!(a.server.to("b1").local().emit("m", &8).unwrap(), 0);
    assert_eq!(c.received(&a.server).await, expect(&[], 8));
    // Everyone; everyone but some; and everyone on this node.
    assert_eq!(b.server.to_all().emit("m", &9).unwrap(), 2);
    assert_eq!(
        c.received(&b.server).await,
        expect(&["a1", "a2", "b1", "b2"], 9)
    );
    assert_eq!(b.server.to_all().local().emit("m", &10).unwrap(), 2);
    assert_eq!(c.received(&b.server).await, expect(&["b1", "b2"], 10));
    let sent = b.server.to_all().except(["a2", "b2"]).emit("m", &11);
    assert_eq!(sent.unwrap(), 1);
    assert_eq!(c.received(&b.server).await, expect(&["a1", "b1"], 11));
    // destroy(): delivered everywhere, then the room is gone on every node.
    assert_eq!(a.server.to_room(&r).destroy().emit("m", &12).unwrap(), 1);
    assert_eq!(c.received(&a.server).await, expect(&["a1", "b1", "b2"], 12));
    assert_eq!(a.server.room_size(&r), 0);
    assert!(wait_until(WAIT, || b.server.room_size(&r) == 0).await);
    assert_eq!(a.server.to_room(&r).emit("m", &13).unwrap(), 0);
    assert_eq!(c.received(&a.server).await, expect(&[], 13));
    // remove_room() from one node empties the room on the others.
    let q = relay("q");
    a.server.join(&q, "a1");
    b.server.join(&q, "b1");
    b.server.remove_room(&q);
    assert!(wait_until(WAIT, || a.server.room_size(&q) == 0).await);
    assert!(!a.server.rooms_of("a1", None).contains(&q));
    assert_eq!(b.server.to_room(&q).emit("m", &14).unwrap(), 0);
    assert_eq!(c.received(&b.server).await, expect(&[], 14));
    // A client's relay request on one node reaches the other. The reply means the send was
    // made, so the fence that follows is behind it.
    let a1 = c.get("a1");
    a1.send_text(r#"{"event":"to","payload":{"id":"b2","data":15},"callbackId":"t"}"#)
        .await
        .unwrap();
    assert_eq!(
        a1.recv_text(WAIT).await.as_deref(),
        Some(r#"{"callbackId":"t","payload":{"ok":true}}"#)
    );
    let relayed = c.received(&a.server).await;
    let expected = vec![r#"{"event":"msg","payload":15}"#.to_string()];
    assert_eq!(relayed, BTreeMap::from([("b2", expected)]));
}

/// Every send kind from each of three nodes in turn reaches exactly the right sockets, once:
/// everyone, a room with a member on every node, the room except two of them, several ids on
/// every node, one id.
pub async fn every_target_kind_on_three_nodes<F: Fixture>(f: &F) {
    let nodes = relay_nodes(f, &["a", "b", "c"], delivery_config).await;
    let mut c = Clients::default();
    let ids = [["a1", "a2"], ["b1", "b2"], ["c1", "c2"]];
    let r = relay("r");
    for (node, pair) in nodes.iter().zip(ids) {
        for id in pair {
            c.add(node, id).await;
        }
        node.server.join(&r, pair[0]);
    }
    let mut n = 0;
    for from in nodes.iter().map(|node| &node.server) {
        n += 1;
        from.to_all().emit("m", &n).unwrap();
        assert_eq!(
            c.received(from).await,
            expect(&["a1", "a2", "b1", "b2", "c1", "c2"], n)
        );
        n += 1;
        from.to_room(&r).emit("m", &n).unwrap();
        assert_eq!(c.received(from).await, expect(&["a1", "b1", "c1"], n));
        n += 1;
        from.to_room(&r).except(["c1", "a1"]).emit("m", &n).unwrap();
        assert_eq!(c.received(from).await, expect(&["b1"], n));
        n += 1;
        from.to_ids(["a2", "b2", "c2"]).emit("m", &n).unwrap();
        assert_eq!(c.received(from).await, expect(&["a2", "b2", "c2"], n));
        n += 1;
        from.to("c2").emit("m", &n).unwrap();
        assert_eq!(c.received(from).await, expect(&["c2"], n));
        n += 1;
        from.to_all().except(["a1", "b2"]).emit("m", &n).unwrap();
        assert_eq!(c.received(from).await, expect(&["a2", "b1", "c1", "c2"], n));
    }
}

/// Rooms of namespaces that are not preset, joined at run time on one node: once the node's
/// subscription is in place (a probe from the other node arrives), a numbered stream to each
/// room arrives complete and in order. Eight namespaces, so that a sharded broker spreads
/// them over its shards.
pub async fn rooms_joined_at_run_time_receive<F: Fixture>(f: &F) {
    let rooms: Vec<Room> = (0..8).map(|i| Room::new(format!("late{i}"), "r")).collect();
    rooms_joined_at_run_time(f, node_config, &rooms).await;
}

/// [`rooms_joined_at_run_time_receive`] with room channels
/// ([`ServerConfig::with_room_channels`]): eight rooms of one namespace, each on a channel of
/// its own.
pub async fn rooms_with_their_own_channels_receive<F: Fixture>(f: &F) {
    let rooms: Vec<Room> = (0..8).map(|i| Room::new("late", format!("r{i}"))).collect();
    let config = |name: &str| node_config(name).with_room_channels(true);
    rooms_joined_at_run_time(f, config, &rooms).await;
}

/// Nodes `a` and `b` made with `config`; a client on `b` joins `rooms`; each receives, once
/// subscribed, a numbered stream from `a` complete and in order.
async fn rooms_joined_at_run_time<F: Fixture>(
    f: &F,
    config: impl Fn(&str) -> ServerConfig,
    rooms: &[Room],
) {
    let nodes = relay_nodes(f, &["a", "b"], config).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut x = RawClient::connect_bound(b.addr, "x")
        .await
        .expect("connect");
    for room in rooms {
        b.server.join(room, "x");
    }
    for (i, room) in rooms.iter().enumerate() {
        // The subscription is made by b's broker task: probe until it is in place.
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut probes = 0u32;
        loop {
            probes += 1;
            a.server
                .to_room(room)
                .emit("probe", &json!([i, probes]))
                .expect("emit");
            if let Some(text) = x.recv_text(Duration::from_millis(50)).await {
                let v: Value = serde_json::from_str(&text).expect("json");
                assert_eq!(v["event"], "probe", "{text}");
                if v["payload"][0] == json!(i) {
                    break;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "room {room:?} never subscribed on b ({probes} probes)"
            );
        }
        for n in 1..=20 {
            a.server
                .to_room(room)
                .emit("m", &json!([i, n]))
                .expect("emit");
        }
        // Probes still on their way come first (same channel): skip them.
        let mut got = Vec::new();
        while got.len() < 20 {
            let text = x
                .recv_text(WAIT)
                .await
                .unwrap_or_else(|| panic!("room {i}: got only {got:?}"));
            let v: Value = serde_json::from_str(&text).expect("json");
            if v["event"] == "m" {
                got.push(v["payload"].clone());
            }
        }
        let want: Vec<Value> = (1..=20).map(|n| json!([i, n])).collect();
        assert_eq!(got, want, "room {i}: complete and in order");
    }
}

/// Rooms of namespaces that are not preset, joined with [`Server::join_confirmed`]: the one
/// message the other node sends right after the join returns arrives, with no probe and no
/// retry. Eight namespaces, so that a sharded broker spreads them over its shards.
pub async fn confirmed_joins_receive_what_follows<F: Fixture>(f: &F) {
    let rooms: Vec<Room> = (0..8).map(|i| Room::new(format!("now{i}"), "r")).collect();
    confirmed_joins(f, node_config, &rooms).await;
}

/// [`confirmed_joins_receive_what_follows`] with room channels
/// ([`ServerConfig::with_room_channels`]): eight rooms of one namespace.
pub async fn confirmed_joins_with_room_channels<F: Fixture>(f: &F) {
    let rooms: Vec<Room> = (0..8).map(|i| Room::new("now", format!("r{i}"))).collect();
    let config = |name: &str| node_config(name).with_room_channels(true);
    confirmed_joins(f, config, &rooms).await;
}

/// Nodes `a` and `b` made with `config`; a client on `b` joins each of `rooms` with
/// [`Server::join_confirmed`], and the one message `a` sends to the room then arrives. A
/// second client's confirmed join of a room already subscribed gets the next one too.
async fn confirmed_joins<F: Fixture>(f: &F, config: impl Fn(&str) -> ServerConfig, rooms: &[Room]) {
    let nodes = relay_nodes(f, &["a", "b"], config).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut x = RawClient::connect_bound(b.addr, "x")
        .await
        .expect("connect");
    let mut y = RawClient::connect_bound(b.addr, "y")
        .await
        .expect("connect");
    let expect = |text: Option<String>, room: &Room, n: usize| {
        let text = text.unwrap_or_else(|| panic!("{room}: nothing after a confirmed join"));
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            (&v["event"], &v["payload"]),
            (&json!("m"), &json!(n)),
            "{room}"
        );
    };
    for (i, room) in rooms.iter().enumerate() {
        b.server
            .join_confirmed(room, "x")
            .await
            .unwrap_or_else(|e| panic!("{room}: {e}"));
        a.server.to_room(room).emit("m", &json!(i)).expect("emit");
        expect(x.recv_text(WAIT).await, room, i);
    }
    let room = &rooms[0];
    b.server
        .join_confirmed(room, "y")
        .await
        .unwrap_or_else(|e| panic!("{room}: {e}"));
    a.server.to_room(room).emit("m", &json!(99)).expect("emit");
    expect(y.recv_text(WAIT).await, room, 99);
    expect(x.recv_text(WAIT).await, room, 99);
    assert_eq!(b.server.stats().unconfirmed_joins, 0);
}

/// A unicast to an id whose node is known goes to that node only: another node gets no
/// envelope for it (its delivery count does not move, checked after a fence through it).
/// Then the cluster-wide queries find the socket.
pub async fn unicast_goes_only_to_the_node_of_the_id<F: Fixture>(f: &F) {
    let nodes = relay_nodes(f, &["a", "b", "c"], node_config).await;
    let (a, b, c) = (&nodes[0].server, &nodes[1].server, &nodes[2].server);
    let mut target = RawClient::connect_bound(nodes[1].addr, "target")
        .await
        .expect("connect");
    let mut watcher = RawClient::connect_bound(nodes[2].addr, "watcher")
        .await
        .expect("connect");
    // a learns where `target` lives from b's bind announcement.
    assert!(wait_until(WAIT, || a.cached_location("target").as_deref() == Some("b")).await);
    let c_before = c.stats().remote_deliveries;
    let b_before = b.stats().remote_deliveries;
    for i in 0..100 {
        a.to("target").emit("msg", &i).expect("emit");
    }
    for i in 0..100 {
        let text = target.recv_text(WAIT).await.expect("delivery");
        assert_eq!(text, format!(r#"{{"event":"msg","payload":{i}}}"#));
    }
    assert_eq!(b.stats().remote_deliveries, b_before + 100);
    // A fence through c (on the channel a unicast of unknown location would take): once the
    // watcher has it, c has handled everything a sent before.
    a.to_all().emit("fence", &0).expect("emit");
    assert_eq!(
        watcher.recv_text(WAIT).await.as_deref(),
        Some(r#"{"event":"fence","payload":0}"#)
    );
    assert_eq!(
        c.stats().remote_deliveries,
        c_before + 1,
        "node c received envelopes for an id it does not hold"
    );
    assert_eq!(
        target.recv_text(WAIT).await.as_deref(),
        Some(r#"{"event":"fence","payload":0}"#)
    );
    // Cluster-wide queries see the socket.
    assert_eq!(c.locate("target").await.as_deref(), Some("b"));
    assert_eq!(a.cluster_connection_count().await, 2);
    let chat = Room::new("chat", "r");
    b.join(&chat, "target");
    assert_eq!(a.cluster_room_members(&chat).await, vec!["target"]);
    assert_eq!(c.cluster_room_size(&chat).await, 1);
}

/// Order per room and per id: node `a` sends 500 numbered messages to a room with members on
/// `b` and `c`, interleaved with 500 to an id on `b`; node `c` sends 500 to the same room. Each
/// member gets every stream complete and in its order (streams on different channels may
/// interleave).
pub async fn order_holds_per_room_and_per_id<F: Fixture>(f: &F) {
    const N: u64 = 500;
    let nodes = relay_nodes(f, &["a", "b", "c"], delivery_config).await;
    let (a, b, c) = (&nodes[0].server, &nodes[1].server, &nodes[2].server);
    let mut x = RawClient::connect_bound(nodes[1].addr, "x")
        .await
        .expect("connect");
    let mut y = RawClient::connect_bound(nodes[2].addr, "y")
        .await
        .expect("connect");
    let room = relay("stream");
    b.join(&room, "x");
    c.join(&room, "y");
    // The id's stream takes b's channel from the first message on.
    assert!(wait_until(WAIT, || a.cached_location("x").as_deref() == Some("b")).await);
    for n in 0..N {
        a.to_room(&room).emit("m", &json!(["a", n])).expect("emit");
        a.to("x").emit("m", &json!(["a->x", n])).expect("emit");
        c.to_room(&room).emit("m", &json!(["c", n])).expect("emit");
    }
    for (who, client, streams) in [
        ("x", &mut x, &["a", "a->x", "c"][..]),
        ("y", &mut y, &["a", "c"][..]),
    ] {
        let total = N as usize * streams.len();
        let mut got: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for i in 0..total {
            let text = client
                .recv_text(WAIT)
                .await
                .unwrap_or_else(|| panic!("{who}: {i} of {total} messages, then none"));
            let v: Value = serde_json::from_str(&text).expect("json");
            let stream = v["payload"][0].as_str().expect("a stream name").to_string();
            let n = v["payload"][1].as_u64().expect("a number");
            got.entry(stream).or_default().push(n);
        }
        let want: Vec<u64> = (0..N).collect();
        let bad: Vec<String> = streams
            .iter()
            .filter_map(|stream| {
                let got = got.get(*stream).map(Vec::as_slice).unwrap_or_default();
                (got != want).then(|| format!("stream {stream}: {}", disorder(got, &want)))
            })
            .collect();
        assert!(
            bad.is_empty(),
            "{who}: streams not complete and in order: {bad:#?}"
        );
        assert_eq!(got.len(), streams.len(), "{who}: {:?}", got.keys());
    }
}

// ----- server-to-server requests -----

/// [`cluster_suite::broadcast_targeted_and_except_self`] on nodes `a`, `b`, `c`.
pub async fn broadcast_targeted_and_except_self<F: Fixture>(f: &F) {
    let nodes = discovered(f, &["a", "b", "c"], node_config).await;
    cluster_suite::broadcast_targeted_and_except_self(&nodes).await;
}

/// [`cluster_suite::one_by_one_timeout_and_cancel`] on nodes `a`, `b`, `c`.
pub async fn replies_one_by_one_timeout_and_cancel<F: Fixture>(f: &F) {
    let nodes = discovered(f, &["a", "b", "c"], node_config).await;
    cluster_suite::one_by_one_timeout_and_cancel(&nodes).await;
}

/// [`cluster_suite::gateway_forwards_to_logic`] on nodes `gateway` and `logic`.
pub async fn gateway_forwards_to_logic<F: Fixture>(f: &F) {
    let nodes = discovered(f, &["gateway", "logic"], node_config).await;
    cluster_suite::gateway_forwards_to_logic(&nodes[0], &nodes[1]).await;
}

/// [`cluster_suite::request_reaches_any_id`] on nodes `a` and `b`.
pub async fn request_reaches_any_id<F: Fixture>(f: &F) {
    let nodes = discovered(f, &["a", "b"], node_config).await;
    cluster_suite::request_reaches_any_id(&nodes[0], &nodes[1]).await;
}

// ----- discovery -----

/// `server`'s node joins and leaves as they happen: `+name` and `-name`.
pub fn node_events(server: &Server) -> mpsc::UnboundedReceiver<String> {
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

/// The next event of `rx`; panics when none comes within [`WAIT`].
async fn next_event(rx: &mut mpsc::UnboundedReceiver<String>, what: &str) -> String {
    crate::recv_within(rx, WAIT)
        .await
        .unwrap_or_else(|| panic!("no event within {WAIT:?}; expected {what}"))
}

/// Discovery: nodes joining are seen (events and [`Server::nodes`]); a broadcast request waits
/// for exactly the live nodes; a graceful shutdown is seen at once; a node that dies without a
/// word (its broker and tasks dropped) expires after its time to live (2 s).
pub async fn discovery_follows_joins_and_leaves<F: Fixture>(f: &F) {
    let a = f.node(node_config("a")).await;
    let mut events = node_events(&a);
    let b = f.node(node_config("b")).await;
    assert_eq!(next_event(&mut events, "+b").await, "+b");
    let c = f.node(node_config("c")).await;
    assert_eq!(next_event(&mut events, "+c").await, "+c");
    wait_nodes(&[&a, &b, &c], &["a", "b", "c"]).await;
    for n in [&a, &b, &c] {
        answer_who(n);
    }
    let replies = a
        .request_server("who", &(), ServerEmitOptions::new())
        .expect("sent");
    assert_eq!(replies.remaining(), 3);
    assert!(replies.collect().await.success);

    // c shuts down gracefully: it says so, and a broadcast waits for one fewer at once.
    c.shutdown().await;
    assert_eq!(next_event(&mut events, "-c").await, "-c");
    assert_eq!(a.nodes(), ["a", "b"]);
    let replies = a
        .request_server("who", &(), ServerEmitOptions::new())
        .expect("sent");
    assert_eq!(replies.remaining(), 2);
    let results = replies.collect().await;
    assert!(results.success, "{results:?}");
    assert_eq!(
        results.responses.into_keys().collect::<Vec<_>>(),
        ["a", "b"]
    );

    // d joins: three again. (Its protocol ping sweep is off: the sweep holds the node alive
    // until its next tick, so with it a dropped node would keep announcing itself for up to
    // the ping interval.)
    let d = f
        .node(node_config("d").with_server_ping_interval(Duration::ZERO))
        .await;
    answer_who(&d);
    assert_eq!(next_event(&mut events, "+d").await, "+d");
    wait_nodes(&[&a, &b, &d], &["a", "b", "d"]).await;
    assert_eq!(
        ask_who(&a, ServerEmitOptions::new().except_self()).await,
        ["b", "d"]
    );

    // d dies without a word: it expires after its TTL (2 s) and the count follows.
    let gone = tokio::time::Instant::now();
    drop(d);
    assert_eq!(next_event(&mut events, "-d").await, "-d");
    let took = gone.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "d expired after {took:?}"
    );
    assert_eq!(a.nodes(), ["a", "b"]);
    assert_eq!(ask_who(&a, ServerEmitOptions::new()).await, ["a", "b"]);

    // b's departure leaves a alone.
    b.shutdown().await;
    assert_eq!(next_event(&mut events, "-b").await, "-b");
    assert_eq!(a.nodes(), ["a"]);
    assert_eq!(ask_who(&a, ServerEmitOptions::new()).await, ["a"]);
    let late = events.try_recv();
    assert!(late.is_err(), "an unexpected node event: {late:?}");
}

/// A node's departure is final for that run of it: an announcement of the same run that
/// reaches a peer after the departure (sent just before it, or crossing it through another
/// broker server) does not bring the node back; a restarted run (new incarnation) does join.
/// The envelopes are published raw, in order on one channel, through a broker of their own.
pub async fn a_late_announcement_does_not_bring_a_departed_node_back<F: Fixture>(f: &F) {
    use crosswire::protocol::envelope::{Body, Codec, Envelope};

    let a = f.node(node_config("a")).await;
    let mut rx = node_events(&a);
    // a is subscribed once it sees another (real) node.
    let b = f.node(node_config("b")).await;
    assert!(wait_until(WAIT, || a.nodes() == ["a", "b"]).await);
    assert_eq!(next_event(&mut rx, "+b").await, "+b");

    let raw = f.broker().await;
    assert!(
        wait_until(WAIT, || raw.health().healthy).await,
        "raw broker never healthy: {:?}",
        raw.health()
    );
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
    for what in ["+ghost", "-ghost", "+marker", "+ghost"] {
        events.push(next_event(&mut rx, what).await);
    }
    assert_eq!(events, ["+ghost", "-ghost", "+marker", "+ghost"]);
    assert_eq!(a.nodes(), ["a", "b", "ghost", "marker"]);
    drop(b);
}

// ----- takeover -----

/// A login on another node takes the id over: the old socket is closed with
/// [`close_code::TAKEN_OVER`], its node forgets the id and its rooms, and sends from every
/// node, the old one included, reach the new connection.
pub async fn a_login_on_another_node_takes_the_id_over<F: Fixture>(f: &F) {
    let nodes = relay_nodes(f, &["a", "b", "c"], delivery_config).await;
    let (a, b, c) = (&nodes[0].server, &nodes[1].server, &nodes[2].server);
    let mut watchers = [
        RawClient::connect_bound(nodes[0].addr, "wa")
            .await
            .expect("connect"),
        RawClient::connect_bound(nodes[2].addr, "wc")
            .await
            .expect("connect"),
    ];
    let mut old = RawClient::connect_bound(nodes[0].addr, "u")
        .await
        .expect("connect");
    a.join(&relay("r"), "u");
    let mut new = RawClient::connect_bound(nodes[1].addr, "u")
        .await
        .expect("connect");
    assert_eq!(
        old.expect_close(WAIT).await.map(|c| c.0),
        Some(close_code::TAKEN_OVER)
    );
    assert!(old.expect_eof(WAIT).await);
    assert!(wait_until(WAIT, || a.socket("u").is_none()).await);
    // The old node forgot the id and its rooms.
    assert!(a.rooms_of("u", None).is_empty());
    assert!(b.socket("u").is_some());
    // A fence: `all` from the new connection's node travels on the same channel as its bind
    // announcement, so a node whose client has it knows where u is now.
    b.to_all().emit("fence", &0).expect("emit");
    for w in &mut watchers {
        assert_eq!(
            w.recv_text(WAIT).await.as_deref(),
            Some(r#"{"event":"fence","payload":0}"#)
        );
    }
    assert_eq!(
        new.recv_text(WAIT).await.as_deref(),
        Some(r#"{"event":"fence","payload":0}"#)
    );
    for (n, from) in [a, b, c].into_iter().enumerate() {
        from.to("u").emit("m", &n).expect("emit");
        assert_eq!(new.recv_text(WAIT).await, Some(msg(n as u32)));
    }
    // The room of the old connection is gone with it; the new one joins afresh.
    b.join(&relay("r"), "u");
    a.to_room(relay("r")).emit("m", &8).expect("emit");
    assert_eq!(new.recv_text(WAIT).await, Some(msg(8)));
    assert_eq!(a.connection_count(), 1);
    assert_eq!(b.connection_count(), 1);
}

/// [`cluster_suite::login_race_keeps_one_socket`] on nodes `a` and `b`, fifty rounds.
pub async fn login_race_keeps_one_socket<F: Fixture>(f: &F) {
    let nodes = discovered(f, &["a", "b"], node_config).await;
    cluster_suite::login_race_keeps_one_socket(&nodes[0], &nodes[1], 50).await;
}

// ----- compression -----

/// `len` characters that do not compress well.
fn noise(len: usize) -> String {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'!' + (state % 90) as u8)
        })
        .collect()
}

/// Every node compresses envelopes above 256 bytes: large payloads (compressible and not) to a
/// room, an id and everyone, a small one, and a large server-to-server request with a large
/// reply all arrive intact. A node without compression joining reports the mismatch instead
/// of misdecoding.
pub async fn compressed_envelopes_and_mismatch_reported<F: Fixture>(f: &F) {
    let compressed = |name: &str| delivery_config(name).with_compression(Some(256));
    let nodes = relay_nodes(f, &["a", "b"], compressed).await;
    let (a, b) = (&nodes[0].server, &nodes[1].server);
    let mut x = RawClient::connect_bound(nodes[1].addr, "x")
        .await
        .expect("connect");
    let room = relay("big");
    b.join(&room, "x");
    let repetitive = "z".repeat(50_000);
    let noisy = noise(100_000);
    a.to_room(&room).emit("msg", &repetitive).expect("emit");
    a.to("x").emit("msg", &noisy).expect("emit");
    a.to_all().emit("msg", "tiny").expect("emit");
    a.to_all().emit("msg", &repetitive).expect("emit");
    let frame = |payload: &str| json!({"event": "msg", "payload": payload}).to_string();
    let mut want = vec![
        frame(&repetitive),
        frame(&noisy),
        frame("tiny"),
        frame(&repetitive),
    ];
    // Different channels: compared without their order.
    let mut got = Vec::new();
    for i in 0..want.len() {
        let text = x
            .recv_text(WAIT)
            .await
            .unwrap_or_else(|| panic!("{i} of {} deliveries, then none", want.len()));
        got.push(text);
    }
    got.sort();
    want.sort();
    assert!(got == want, "the large deliveries arrive intact");

    // Server-to-server: a large request and a large reply.
    b.on_server("echo", |Data(v): Data<Value>| Ack(v));
    let results = a
        .request_server("echo", &noisy, ServerEmitOptions::new().to(["b"]))
        .expect("sent")
        .collect()
        .await;
    assert!(results.success, "unanswered: {}", results.unresponded);
    let answer: String = serde_json::from_str(results.responses["b"].get()).expect("a string");
    assert!(answer == noisy, "the large reply arrives intact");

    // A node without compression reports the mismatch instead of misdecoding.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let c = f.node(node_config("c")).await;
    c.on_system(move |ServerError { message, .. }: ServerError| {
        let _ = tx.send(message);
    });
    let mut others = Vec::new();
    loop {
        let error = crate::recv_within(&mut rx, WAIT)
            .await
            .unwrap_or_else(|| panic!("no mismatch reported; other errors: {others:?}"));
        if error.contains("compression mismatch") {
            break;
        }
        others.push(error);
    }
}

// ----- custom channels -----

/// Custom channels carry raw bytes: `a` and `c` subscribe to `news` (`Server::subscribe_channel`),
/// and once both subscriptions are in place (probes from both publishers arrived), `b` and `c`
/// each publish a numbered stream (`Server::publish_raw`), a non-UTF-8 message among it; each
/// subscriber, the publishing `c` included (a broker echoes), gets both streams complete, in
/// their order, byte for byte. Crosswire's own channels are refused.
pub async fn custom_channels_carry_raw_bytes<F: Fixture>(f: &F) {
    const CHANNEL: &str = "news";
    let nodes = discovered(f, &["a", "b", "c"], node_config).await;
    let (b, c) = (&nodes[1], &nodes[2]);
    let mut inboxes = Vec::new();
    for (name, node) in [("a", &nodes[0]), ("c", &nodes[2])] {
        let (tx, rx) = mpsc::unbounded_channel::<(String, Vec<u8>)>();
        node.on_channel_message(move |channel, bytes| {
            let _ = tx.send((channel.to_string(), bytes.to_vec()));
        });
        assert!(node.subscribe_channel(CHANNEL));
        inboxes.push((name, rx));
    }
    assert!(!nodes[0].subscribe_channel("crosswire:ws:all"), "reserved");
    assert!(!b.publish_raw("crosswire:s2s:all", &b"x"[..]), "reserved");

    // The subscriptions are made by the nodes' broker tasks: probe until both are in place
    // for both publishers.
    let publishers = [("b", b), ("c", c)];
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut ready = [[false; 2]; 2];
    while ready.iter().flatten().any(|r| !r) {
        for (name, p) in &publishers {
            assert!(p.publish_raw(CHANNEL, format!("probe:{name}").into_bytes()));
        }
        for (i, (_, rx)) in inboxes.iter_mut().enumerate() {
            let until = tokio::time::Instant::now() + Duration::from_millis(50);
            while let Ok(Some((channel, bytes))) = tokio::time::timeout_at(until, rx.recv()).await {
                assert_eq!(channel, CHANNEL);
                match bytes.as_slice() {
                    b"probe:b" => ready[i][0] = true,
                    b"probe:c" => ready[i][1] = true,
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "custom subscriptions never in place: {ready:?}"
        );
    }

    let stream = |name: &str| -> Vec<Vec<u8>> {
        let mut messages: Vec<Vec<u8>> = (1..=100)
            .map(|n| format!("{name}:{n}").into_bytes())
            .collect();
        let mut binary = format!("{name}:").into_bytes();
        binary.extend_from_slice(&[0xff, 0x00, 0xfe, 0x80]);
        messages.insert(50, binary);
        messages.push(format!("{name}:end").into_bytes());
        messages
    };
    for (name, p) in &publishers {
        for message in stream(name) {
            assert!(p.publish_raw(CHANNEL, message));
        }
    }
    for (who, rx) in &mut inboxes {
        let mut got: BTreeMap<u8, Vec<Vec<u8>>> = BTreeMap::new();
        let total: usize = publishers.iter().map(|(name, _)| stream(name).len()).sum();
        let mut received = 0;
        while received < total {
            let (channel, bytes) = crate::recv_within(rx, WAIT)
                .await
                .unwrap_or_else(|| panic!("{who}: {received} of {total} messages: {got:?}"));
            assert_eq!(channel, CHANNEL);
            if !bytes.starts_with(b"probe:") {
                got.entry(bytes[0]).or_default().push(bytes);
                received += 1;
            }
        }
        let mut bad = Vec::new();
        for (name, _) in &publishers {
            let want: Vec<String> = stream(name).iter().map(|m| show(m)).collect();
            let got: Vec<String> = got
                .get(&name.as_bytes()[0])
                .map(|m| m.iter().map(|m| show(m)).collect())
                .unwrap_or_default();
            if got != want {
                bad.push(format!("{name}'s stream: {}", disorder(&got, &want)));
            }
        }
        assert!(
            bad.is_empty(),
            "{who}: streams not complete, in order, byte for byte: {bad:#?}"
        );
    }
}

/// A raw message as text, its non-UTF-8 bytes escaped.
fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// How `got` differs from `want` (both without repeats): what is missing, what is extra, and
/// where the order first breaks, with the received run around it.
fn disorder<T: PartialEq + Clone + std::fmt::Debug>(got: &[T], want: &[T]) -> String {
    let missing: Vec<&T> = want.iter().filter(|w| !got.contains(w)).collect();
    let extra = got.len() as isize - (want.len() - missing.len()) as isize;
    let place = |x: &T| want.iter().position(|w| w == x);
    let broken = got
        .windows(2)
        .position(|w| matches!((place(&w[0]), place(&w[1])), (Some(a), Some(b)) if b <= a));
    let inversions = got
        .windows(2)
        .filter(|w| matches!((place(&w[0]), place(&w[1])), (Some(a), Some(b)) if b <= a))
        .count();
    let around = broken.map(|i| got[i.saturating_sub(3)..(i + 12).min(got.len())].to_vec());
    format!(
        "{} received of {}; missing {missing:?}; {extra} extra (repeats or strangers); \
         {inversions} places out of order, the first after position {broken:?}: {around:?}",
        got.len(),
        want.len()
    )
}

// ----- presence and history -----

/// [`cluster_suite::presence_across_nodes`].
pub async fn presence_across_nodes<F: Fixture>(f: &F) {
    cluster_suite::presence_across_nodes(f).await;
}

/// [`cluster_suite::recovery_across_nodes`] (brokers with history).
pub async fn recovery_across_nodes<F: Fixture>(f: &F) {
    cluster_suite::recovery_across_nodes(f).await;
}

/// [`cluster_suite::id_recovery_across_nodes`] (brokers with history).
pub async fn id_recovery_across_nodes<F: Fixture>(f: &F) {
    cluster_suite::id_recovery_across_nodes(f).await;
}

/// [`cluster_suite::recovery_across_nodes`] with room history only and a channel per room
/// ([`cluster_suite::room_history_config`]).
pub async fn room_recovery_with_room_channels<F: Fixture>(f: &F) {
    cluster_suite::recovery_across_nodes_with(f, cluster_suite::room_history_config).await;
}

/// A broker whose history needs a channel per room says so, and refuses history without room
/// channels or with id history ([`crosswire::ConfigError::HistoryNeedsRoomChannels`]); room
/// history with room channels starts.
pub async fn history_needs_room_channels<F: Fixture>(f: &F) {
    let broker = f.broker().await;
    assert!(broker.supports_history() && broker.history_needs_room_channels());
    let window = crosswire::Retention::new(10, Duration::from_secs(1));
    for config in [
        cluster_suite::history_config("a"),
        cluster_suite::room_history_config("a").with_room_channels(false),
        cluster_suite::room_history_config("a").with_id_history(window),
    ] {
        let refused = Server::builder(config).broker(Arc::clone(&broker)).build();
        assert!(
            matches!(
                refused,
                Err(crosswire::ConfigError::HistoryNeedsRoomChannels)
            ),
            "{:?}",
            refused.err()
        );
    }
    let started = Server::builder(cluster_suite::room_history_config("a"))
        .broker(broker)
        .build();
    assert!(started.is_ok(), "{:?}", started.err());
}

/// A broker without history says so, and a node with history configured is refused on it
/// ([`crosswire::ConfigError::HistoryUnsupported`]).
pub async fn history_is_refused<F: Fixture>(f: &F) {
    let broker = f.broker().await;
    assert!(!broker.supports_history());
    for config in [
        cluster_suite::history_config("a"),
        node_config("a").with_id_history(crosswire::Retention::new(10, Duration::from_secs(1))),
    ] {
        let refused = Server::builder(config).broker(Arc::clone(&broker)).build();
        assert!(
            matches!(refused, Err(crosswire::ConfigError::HistoryUnsupported)),
            "{:?}",
            refused.err()
        );
    }
}

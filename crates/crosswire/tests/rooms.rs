//! Ids and rooms on one node: exact recipient sets, takeover, cleanup, queries.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crosswire::{close_code, EmitError, Match, Room, Server, ServerConfig};
use crosswire_testkit::{
    install_relay, spawn_server, wait_until, RawClient, RELAY_NAMESPACE, TIMEOUT,
};
use serde_json::json;

struct Clients {
    by_id: BTreeMap<&'static str, RawClient>,
}

impl Clients {
    async fn connect(addr: SocketAddr, ids: &[&'static str]) -> Self {
        let mut by_id = BTreeMap::new();
        for id in ids {
            by_id.insert(*id, RawClient::connect_bound(addr, id).await.unwrap());
        }
        Self { by_id }
    }

    fn get(&mut self, id: &str) -> &mut RawClient {
        self.by_id.get_mut(id).unwrap()
    }

    /// What every client got since the last call, as {id: [texts]}, ids with nothing left
    /// out. Each client's list ends at its heartbeat echo, so everything sent before this
    /// call is in it.
    async fn received(&mut self) -> BTreeMap<&'static str, Vec<String>> {
        let mut out = BTreeMap::new();
        for (id, client) in self.by_id.iter_mut() {
            let got = client.drain_until_heartbeat("").await;
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

fn expect(pairs: &[(&'static str, &[u32])]) -> BTreeMap<&'static str, Vec<String>> {
    pairs
        .iter()
        .map(|(id, ns)| (*id, ns.iter().map(|n| msg(*n)).collect()))
        .collect()
}

async fn server() -> (Server, SocketAddr) {
    let (server, addr) = spawn_server(ServerConfig::default()).await;
    install_relay(&server);
    (server, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_send_kind_reaches_exactly_its_recipients() {
    let (server, addr) = server().await;
    let mut c = Clients::connect(addr, &["a", "b", "c", "d"]).await;
    // An unbound connection is reached only by sends to everyone.
    let mut anonymous = RawClient::connect(addr, "/?id=anon").await.unwrap();
    anonymous.sync("").await.unwrap();
    server.unbind("anon");
    assert_eq!(server.stats().bound_ids, 4);
    assert_eq!(server.stats().connections, 5);

    assert_eq!(server.to("b").emit("m", &1).unwrap(), 1);
    assert_eq!(c.received().await, expect(&[("b", &[1])]));

    // A list of ids; unknown ids are skipped.
    assert_eq!(
        server.to_ids(["a", "c", "nobody"]).emit("m", &2).unwrap(),
        2
    );
    assert_eq!(c.received().await, expect(&[("a", &[2]), ("c", &[2])]));
    assert_eq!(server.to("nobody").emit("m", &3).unwrap(), 0);
    assert_eq!(c.received().await, expect(&[]));

    for id in ["a", "b", "c"] {
        server.join(&Room::new("chat", "1"), id);
    }
    server.join(&Room::new("chat", "2"), "d");
    assert_eq!(
        server
            .to_room(Room::new("chat", "1"))
            .emit("m", &4)
            .unwrap(),
        3
    );
    assert_eq!(
        c.received().await,
        expect(&[("a", &[4]), ("b", &[4]), ("c", &[4])])
    );
    assert_eq!(
        server
            .to_room(Room::new("chat", "1"))
            .except(["b", "nobody"])
            .emit("m", &5)
            .unwrap(),
        2
    );
    assert_eq!(c.received().await, expect(&[("a", &[5]), ("c", &[5])]));
    // local() on a single node is the same set.
    assert_eq!(
        server
            .to_room(Room::new("chat", "1"))
            .local()
            .emit("m", &6)
            .unwrap(),
        3
    );
    assert_eq!(
        c.received().await,
        expect(&[("a", &[6]), ("b", &[6]), ("c", &[6])])
    );
    // A room of another namespace with the same room id is another room.
    assert_eq!(
        server
            .to_room(Room::new("game", "1"))
            .emit("m", &7)
            .unwrap(),
        0
    );
    assert_eq!(c.received().await, expect(&[]));

    // destroy(): delivered, then the room is gone.
    assert_eq!(
        server
            .to_room(Room::new("chat", "1"))
            .destroy()
            .emit("m", &8)
            .unwrap(),
        3
    );
    assert_eq!(
        c.received().await,
        expect(&[("a", &[8]), ("b", &[8]), ("c", &[8])])
    );
    assert_eq!(server.room_size(&Room::new("chat", "1")), 0);
    assert!(server.rooms_of("a", None).is_empty());
    assert_eq!(
        server.rooms("chat", Match::Exact),
        vec![Room::new("chat", "2")]
    );
    assert_eq!(
        server
            .to_room(Room::new("chat", "1"))
            .emit("m", &9)
            .unwrap(),
        0
    );
    assert_eq!(c.received().await, expect(&[]));

    assert_eq!(server.to_all().emit("m", &10).unwrap(), 5);
    assert_eq!(
        c.received().await,
        expect(&[("a", &[10]), ("b", &[10]), ("c", &[10]), ("d", &[10])])
    );
    assert_eq!(anonymous.drain_until_heartbeat("").await, vec![msg(10)]);

    // Sends from a client through the relay handlers take the same paths.
    c.get("a")
        .send_json(&json!({"event": "to", "payload": {"id": "d", "data": 11}}))
        .await
        .unwrap();
    c.get("a")
        .send_json(&json!({"event": "ids", "payload": {"ids": ["b", "c"], "data": 12}}))
        .await
        .unwrap();
    let mut relayed = c.received().await;
    let relayed_msg = |n: u32| format!(r#"{{"event":"msg","payload":{n}}}"#);
    assert_eq!(relayed.remove("d"), Some(vec![relayed_msg(11)]));
    assert_eq!(relayed.remove("b"), Some(vec![relayed_msg(12)]));
    assert_eq!(relayed.remove("c"), Some(vec![relayed_msg(12)]));
    assert!(relayed.is_empty(), "unexpected: {relayed:?}");

    server.shutdown().await;
    assert!(matches!(
        server.to_all().emit("m", &0),
        Err(EmitError::ShutDown)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_login_takes_the_id_over() {
    let (server, addr) = server().await;
    let mut first = RawClient::connect_bound(addr, "u").await.unwrap();
    server.join(&Room::new("chat", "1"), "u");
    let mut second = RawClient::connect_bound(addr, "u").await.unwrap();
    let close = first.expect_close(TIMEOUT).await;
    assert_eq!(close.map(|c| c.0), Some(close_code::TAKEN_OVER));
    assert!(first.expect_eof(TIMEOUT).await);
    // The new connection gets the unicasts, and keeps the id's rooms.
    assert_eq!(server.to("u").emit("m", &1).unwrap(), 1);
    assert_eq!(second.drain_until_heartbeat("").await, vec![msg(1)]);
    assert!(wait_until(TIMEOUT, || server.connection_count() == 1).await);
    assert_eq!(server.stats().bound_ids, 1);
    assert!(server.is_joined(&Room::new("chat", "1"), "u"));
    assert_eq!(
        server
            .to_room(Room::new("chat", "1"))
            .emit("m", &2)
            .unwrap(),
        1
    );
    assert_eq!(second.drain_until_heartbeat("").await, vec![msg(2)]);
    // A custom takeover code.
    let (server, addr) = spawn_server(ServerConfig::default().with_takeover_close_code(4100)).await;
    install_relay(&server);
    let mut first = RawClient::connect_bound(addr, "u").await.unwrap();
    let _second = RawClient::connect_bound(addr, "u").await.unwrap();
    assert_eq!(first.expect_close(TIMEOUT).await.map(|c| c.0), Some(4100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_cleans_up_binding_and_rooms() {
    let (server, addr) = server().await;
    let mut a = RawClient::connect_bound(addr, "a").await.unwrap();
    let b = RawClient::connect_bound(addr, "b").await.unwrap();
    for room in ["1", "2"] {
        server.join(&Room::new("chat", room), "a");
        server.join(&Room::new("chat", room), "b");
    }
    server.join(&Room::new("game:hot", "9"), "b");
    assert_eq!(server.room_size(&Room::new("chat", "1")), 2);
    drop(b);
    assert!(wait_until(TIMEOUT, || server.socket("b").is_none()).await);
    assert_eq!(server.room_size(&Room::new("chat", "1")), 1);
    assert_eq!(server.room_size(&Room::new("chat", "2")), 1);
    assert!(server.rooms_of("b", None).is_empty());
    assert!(!server.is_joined(&Room::new("chat", "1"), "b"));
    // The namespace b alone was in is gone.
    assert_eq!(server.room_count("game", Match::Prefix), 0);
    assert_eq!(server.stats().bound_ids, 1);
    // Clients join and leave through events too.
    for (n, event) in ["join", "leave"].into_iter().enumerate() {
        a.send_json(
            &json!({"event": event, "payload": {"room": "r"}, "callbackId": n.to_string()}),
        )
        .await
        .unwrap();
        assert_eq!(
            a.recv_json(TIMEOUT).await.unwrap(),
            json!({"callbackId": n.to_string(), "payload": {"ok": true}})
        );
        assert_eq!(
            server.is_joined(&Room::new(RELAY_NAMESPACE, "r"), "a"),
            event == "join"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_queries_with_exact_and_prefix_matching() {
    let (server, _addr) = server().await;
    // Rooms hold ids; no connection is needed to query them.
    server.join(&Room::new("chat", "1000"), "a");
    server.join(&Room::new("chat", "1000"), "b");
    server.join(&Room::new("chat", "1001"), "b");
    server.join(&Room::new("chat:vip", "1"), "c");
    server.join(&Room::new("game", "1000"), "a");
    server.join(&Room::new("game", "1000"), "a"); // joining twice is one membership

    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let sorted_pairs = |mut v: Vec<Room>| {
        v.sort();
        v
    };
    let pair = |n: &str, r: &str| Room::new(n, r);

    assert_eq!(
        sorted(server.room_members(&Room::new("chat", "1000"))),
        ["a", "b"]
    );
    assert_eq!(
        server.room_members(&Room::new("chat", "9")),
        Vec::<String>::new()
    );
    assert_eq!(server.room_size(&Room::new("chat", "1000")), 2);
    assert_eq!(server.room_size(&Room::new("game", "1000")), 1);

    assert_eq!(
        sorted(server.namespace_members("chat", Match::Exact)),
        ["a", "b"]
    );
    assert_eq!(
        sorted(server.namespace_members("chat", Match::Prefix)),
        ["a", "b", "c"]
    );
    assert_eq!(server.namespace_size("chat", Match::Exact), 2);
    assert_eq!(server.namespace_size("chat", Match::Prefix), 3);
    assert_eq!(server.namespace_size("cha", Match::Exact), 0);

    assert_eq!(
        sorted_pairs(server.rooms("chat", Match::Exact)),
        [pair("chat", "1000"), pair("chat", "1001")]
    );
    assert_eq!(
        sorted_pairs(server.rooms("chat", Match::Prefix)),
        [
            pair("chat", "1000"),
            pair("chat", "1001"),
            pair("chat:vip", "1")
        ]
    );
    assert_eq!(server.room_count("chat", Match::Exact), 2);
    assert_eq!(server.room_count("chat", Match::Prefix), 3);
    assert_eq!(server.room_count("", Match::Prefix), 4);

    let mut found = server.find_rooms("", Match::Prefix, "100", Match::Prefix);
    found.sort();
    assert_eq!(
        found,
        [
            (pair("chat", "1000"), 2),
            (pair("chat", "1001"), 1),
            (pair("game", "1000"), 1)
        ]
    );
    assert_eq!(
        server.find_rooms("chat", Match::Exact, "1000", Match::Exact),
        [(pair("chat", "1000"), 2)]
    );

    assert_eq!(
        sorted_pairs(server.rooms_of("a", None)),
        [pair("chat", "1000"), pair("game", "1000")]
    );
    assert_eq!(server.rooms_of("a", Some("ga")), [pair("game", "1000")]);
    assert_eq!(
        sorted_pairs(server.rooms_of("b", Some("chat"))),
        [pair("chat", "1000"), pair("chat", "1001")]
    );
    assert!(server.rooms_of("nobody", None).is_empty());

    assert!(server.is_joined(&Room::new("chat", "1000"), "a"));
    assert!(!server.is_joined(&Room::new("chat", "1001"), "a"));
    assert!(!server.is_joined(&Room::new("chat:vip", "1000"), "a"));

    // leave: one membership; the room goes when empty.
    server.leave(&Room::new("chat", "1001"), "b");
    assert_eq!(server.room_count("chat", Match::Exact), 1);
    assert_eq!(server.rooms_of("b", None), [pair("chat", "1000")]);
    server.leave(&Room::new("chat", "1001"), "b"); // leaving twice is harmless

    // remove_room: every member leaves it at once.
    server.remove_room(&Room::new("chat", "1000"));
    assert_eq!(server.room_size(&Room::new("chat", "1000")), 0);
    assert!(server.rooms_of("b", None).is_empty());
    assert_eq!(server.rooms_of("a", None), [pair("game", "1000")]);
    assert_eq!(server.namespace_size("chat", Match::Exact), 0);
    assert_eq!(server.namespace_size("chat", Match::Prefix), 1);
    server.remove_room(&Room::new("chat", "1000")); // removing twice is harmless

    server.leave_all("a");
    assert!(server.rooms_of("a", None).is_empty());
    assert_eq!(server.room_count("", Match::Prefix), 1);
}

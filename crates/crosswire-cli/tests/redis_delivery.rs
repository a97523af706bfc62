//! The relay contract over three real `crosswire serve` nodes and one real `redis-server`:
//! every send kind reaches exactly the right sockets across nodes, rooms spanning nodes,
//! takeover of an id by a connection on another node, and node discovery through
//! `/healthz` (a node killed with SIGKILL expires from the others' view).
//!
//! "Exactly" is checked with sentinels ([`Raw::expect_nothing_more`]): the probe is always
//! the client whose send is under test, so the sentinel leaves the same node after that send
//! and, through the one Redis node, arrives after anything the send delivered.

mod common;

use std::time::Duration;

use common::{redis, sync_room, Raw, Relay, CLUSTER_STEP};
use serde_json::{json, Value};

const OK: fn() -> Value = || json!({"ok": true});

/// Every client of `clients` except those named in `except` gets nothing more; `probe` is the
/// sender of the message under test.
async fn nothing_more(probe: &mut Raw, clients: &mut [&mut Raw]) {
    for c in clients.iter_mut() {
        c.expect_nothing_more(probe).await;
    }
    probe.expect_nothing_more_self().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_send_kind_reaches_exactly_the_right_sockets_across_three_nodes() {
    let redis = redis();
    let urls = [redis.url()];
    let n1 = Relay::node("n1", &urls, &[]).await;
    let n2 = Relay::node("n2", &urls, &[]).await;
    let n3 = Relay::node("n3", &urls, &[]).await;
    for n in [&n1, &n2, &n3] {
        let health = n.wait_cluster(&["n1", "n2", "n3"], 1).await;
        assert_eq!(health["broker"]["total"], json!(1), "{health}");
    }

    let mut a1 = Raw::connect(&n1, "a1").await;
    let mut a2 = Raw::connect(&n1, "a2").await;
    let mut b1 = Raw::connect(&n2, "b1").await;
    let mut b2 = Raw::connect(&n2, "b2").await;
    let mut c1 = Raw::connect(&n3, "c1").await;
    let mut c2 = Raw::connect(&n3, "c2").await;

    // A room joined on two nodes (n1 and n2); the sender is on the third.
    assert_eq!(a1.request("join", json!({"room": "r"})).await, OK());
    assert_eq!(b1.request("join", json!({"room": "r"})).await, OK());
    sync_room(&mut c1, "r", &mut [&mut a1, &mut b1]).await;

    let data = json!({"kind": "room", "text": "to r"});
    assert_eq!(
        c1.request("room", json!({"room": "r", "data": data})).await,
        OK()
    );
    a1.expect_msg(&data).await;
    b1.expect_msg(&data).await;
    nothing_more(&mut c1, &mut [&mut a1, &mut a2, &mut b1, &mut b2, &mut c2]).await;

    // A member on the sender's own node too: served locally, the others through Redis.
    assert_eq!(c2.request("join", json!({"room": "r"})).await, OK());
    let data = json!({"kind": "room", "n": 2});
    assert_eq!(
        c1.request("room", json!({"room": "r", "data": data})).await,
        OK()
    );
    for c in [&mut a1, &mut b1, &mut c2] {
        c.expect_msg(&data).await;
    }
    nothing_more(&mut c1, &mut [&mut a1, &mut a2, &mut b1, &mut b2, &mut c2]).await;

    // `all` from n1: every socket on every node, the sender included.
    let data = json!({"kind": "all"});
    assert_eq!(a2.request("all", json!({"data": data})).await, OK());
    for c in [&mut a1, &mut a2, &mut b1, &mut b2, &mut c1, &mut c2] {
        c.expect_msg(&data).await;
    }
    nothing_more(&mut a2, &mut [&mut a1, &mut b1, &mut b2, &mut c1, &mut c2]).await;

    // `to` from n2: one client on n3, then one on n1, then one on its own node.
    for (target, kind) in [("c2", "to n3"), ("a1", "to n1"), ("b1", "to n2")] {
        let data = json!({"kind": kind});
        assert_eq!(
            b2.request("to", json!({"id": target, "data": data})).await,
            OK()
        );
        match target {
            "c2" => c2.expect_msg(&data).await,
            "a1" => a1.expect_msg(&data).await,
            _ => b1.expect_msg(&data).await,
        }
        nothing_more(&mut b2, &mut [&mut a1, &mut a2, &mut b1, &mut c1, &mut c2]).await;
    }

    // `ids` from n3: clients on all three nodes and one unknown id.
    let data = json!({"kind": "ids"});
    assert_eq!(
        c2.request(
            "ids",
            json!({"ids": ["a2", "b1", "c1", "nobody"], "data": data})
        )
        .await,
        OK()
    );
    for c in [&mut a2, &mut b1, &mut c1] {
        c.expect_msg(&data).await;
    }
    nothing_more(&mut c2, &mut [&mut a1, &mut a2, &mut b1, &mut b2, &mut c1]).await;

    // Leaving: a1 leaves r, the room still spans n2 and n3.
    assert_eq!(a1.request("leave", json!({"room": "r"})).await, OK());
    let data = json!({"kind": "room", "after": "leave"});
    assert_eq!(
        c1.request("room", json!({"room": "r", "data": data})).await,
        OK()
    );
    b1.expect_msg(&data).await;
    c2.expect_msg(&data).await;
    nothing_more(&mut c1, &mut [&mut a1, &mut a2, &mut b1, &mut b2, &mut c2]).await;

    // Takeover across nodes: id b2 (on n2) connects on n3; the old socket is closed with
    // 4012 and unicasts from every node reach the new one.
    let mut b2_new = Raw::connect(&n3, "b2").await;
    b2.expect_close(4012).await;
    // A fence: `all` from the new connection's node travels on the same channel as its bind
    // announcement, so a client that received it sits on a node that knows where b2 is now.
    let fence = json!({"kind": "fence"});
    assert_eq!(b2_new.request("all", json!({"data": fence})).await, OK());
    for c in [&mut a1, &mut a2, &mut b1, &mut c1, &mut c2, &mut b2_new] {
        c.expect_msg(&fence).await;
    }
    for (i, sender) in [&mut a1, &mut b1, &mut c1].into_iter().enumerate() {
        let data = json!({"kind": "to b2 after takeover", "from": i});
        assert_eq!(
            sender
                .request("to", json!({"id": "b2", "data": data}))
                .await,
            OK()
        );
        b2_new.expect_msg(&data).await;
        b2_new.expect_nothing_more(sender).await;
    }
    // Rooms of the old connection are gone with it; the new one joins afresh.
    assert_eq!(b2_new.request("join", json!({"room": "r"})).await, OK());
    let data = json!({"kind": "room", "after": "takeover"});
    assert_eq!(
        a2.request("room", json!({"room": "r", "data": data})).await,
        OK()
    );
    for c in [&mut b1, &mut c2, &mut b2_new] {
        c.expect_msg(&data).await;
    }
    nothing_more(
        &mut a2,
        &mut [&mut a1, &mut b1, &mut c1, &mut c2, &mut b2_new],
    )
    .await;

    // Every node counts its own connections only; /healthz lists the three nodes.
    for (n, expected) in [(&n1, 2), (&n2, 1), (&n3, 3)] {
        let (status, body) = n.healthz().await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["nodes"], json!(["n1", "n2", "n3"]), "{body}");
        assert_eq!(body["connections"], json!(expected), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_expires_from_the_others_view() {
    let redis = redis();
    let urls = [redis.url()];
    let n1 = Relay::node("k1", &urls, &[]).await;
    let n2 = Relay::node("k2", &urls, &[]).await;
    let mut n3 = Relay::node("k3", &urls, &[]).await;
    for n in [&n1, &n2, &n3] {
        n.wait_cluster(&["k1", "k2", "k3"], 1).await;
    }
    let mut x = Raw::connect(&n1, "x").await;
    let mut y = Raw::connect(&n3, "y").await;
    let data = json!("before the kill");
    assert_eq!(
        x.request("to", json!({"id": "y", "data": data})).await,
        OK()
    );
    y.expect_msg(&data).await;

    // SIGKILL: no leave announcement; the others notice only through the node TTL (3 s).
    n3.kill();
    for n in [&n1, &n2] {
        let (_, took) = n
            .wait_health("k3 expired", CLUSTER_STEP, |status, body| {
                status == 200 && body["nodes"] == json!(["k1", "k2"])
            })
            .await;
        eprintln!("{}: k3 gone from /healthz after {took:?}", n.addr);
        assert!(took < Duration::from_secs(8), "k3 expired after {took:?}");
    }

    // A node joining later is seen by everyone.
    let n4 = Relay::node("k4", &urls, &[]).await;
    for n in [&n1, &n2, &n4] {
        n.wait_cluster(&["k1", "k2", "k4"], 1).await;
    }
    let mut z = Raw::connect(&n4, "z").await;
    let data = json!("to the newcomer");
    assert_eq!(
        x.request("to", json!({"id": "z", "data": data})).await,
        OK()
    );
    z.expect_msg(&data).await;
    z.expect_nothing_more(&mut x).await;
}

/// Reads `raw`'s frames until a `presence` event for `id` on `node` with `joined`; fails
/// after [`common::STEP`] (other frames are skipped).
async fn wait_presence(raw: &mut Raw, id: &str, node: &str, joined: bool) {
    let want = json!({"room": "lobby", "id": id, "node": node, "joined": joined});
    let deadline = tokio::time::Instant::now() + common::STEP;
    let mut skipped = Vec::new();
    while tokio::time::Instant::now() < deadline {
        let Some(common::Incoming::Text(text)) = raw.recv_within(common::STEP).await else {
            continue;
        };
        let frame: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if frame["event"] == "presence" && frame["payload"] == want {
            return;
        }
        skipped.push(text);
    }
    panic!("no presence event {want}; got {skipped:?}");
}

/// `crosswire serve --presence` over three nodes: the members of a room get `presence`
/// events as ids join on any node; `presence {"room"}` lists every node's members; a node
/// killed with SIGKILL takes its member with it (a leave event on the others, within the
/// node TTL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_across_three_nodes_and_a_killed_one() {
    let redis = redis();
    let urls = [redis.url()];
    let n1 = Relay::node("p1", &urls, &["--presence"]).await;
    let n2 = Relay::node("p2", &urls, &["--presence"]).await;
    let mut n3 = Relay::node("p3", &urls, &["--presence"]).await;
    for n in [&n1, &n2, &n3] {
        n.wait_cluster(&["p1", "p2", "p3"], 1).await;
    }
    let mut alice = Raw::connect(&n1, "alice").await;
    let mut bob = Raw::connect(&n2, "bob").await;
    let mut carol = Raw::connect(&n3, "carol").await;
    assert_eq!(alice.request("join", json!({"room": "lobby"})).await, OK());
    assert_eq!(bob.request("join", json!({"room": "lobby"})).await, OK());
    wait_presence(&mut alice, "bob", "p2", true).await;
    assert_eq!(carol.request("join", json!({"room": "lobby"})).await, OK());
    wait_presence(&mut alice, "carol", "p3", true).await;
    wait_presence(&mut bob, "carol", "p3", true).await;
    let everyone = json!([
        {"id": "alice", "node": "p1"},
        {"id": "bob", "node": "p2"},
        {"id": "carol", "node": "p3"}
    ]);
    assert_eq!(
        carol.request("presence", json!({"room": "lobby"})).await,
        everyone
    );

    // SIGKILL: nobody says carol left; the others notice when p3 expires.
    let killed = std::time::Instant::now();
    n3.kill();
    wait_presence(&mut alice, "carol", "p3", false).await;
    wait_presence(&mut bob, "carol", "p3", false).await;
    eprintln!("carol's leave seen {:?} after the kill", killed.elapsed());
    let left = json!([{"id": "alice", "node": "p1"}, {"id": "bob", "node": "p2"}]);
    assert_eq!(
        alice.request("presence", json!({"room": "lobby"})).await,
        left
    );
    assert_eq!(
        bob.request("presence", json!({"room": "lobby"})).await,
        left
    );
    drop(carol);
}

//! One broker channel per room (`ServerConfig::with_room_channels`), on a `MemoryHub`: a
//! node subscribes to a room's channel while the room has local members, a room message
//! reaches only the nodes with members in the room, and preset namespaces keep their shared
//! channel.

use std::sync::Arc;

use crosswire::{MemoryHub, Room, ServerConfig};
use crosswire_testkit::fixture::HubNode;
use crosswire_testkit::{wait_until, RawClient, RELAY_NAMESPACE, TIMEOUT};

/// A node with room channels on `hub`.
async fn node(hub: &MemoryHub, config: ServerConfig) -> HubNode {
    HubNode::start(hub, config.with_room_channels(true)).await
}

/// [`node`] named `name`.
async fn named(hub: &MemoryHub, name: &str) -> HubNode {
    node(hub, ServerConfig::default().with_node_name(name)).await
}

fn envelopes(node: &HubNode) -> u64 {
    node.server.stats().envelopes_received
}

const ROOM_1: &str = "crosswire:ws:in:{relay/1}";
const ROOM_2: &str = "crosswire:ws:in:{relay/2}";
const NAMESPACE_CHANNEL: &str = "crosswire:ws:room:relay";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_channel_follows_its_local_members() {
    let hub = MemoryHub::new();
    let a = named(&hub, "a").await;
    let (one, two) = (
        Room::new(RELAY_NAMESPACE, "1"),
        Room::new(RELAY_NAMESPACE, "2"),
    );
    a.server.join(&one, "x");
    a.server.join(&one, "y");
    a.server.join(&two, "y");
    assert!(a.subscribed(ROOM_1, true).await);
    assert!(a.subscribed(ROOM_2, true).await);
    // The namespace's shared channel is not used for its rooms.
    assert!(!a.is_subscribed(NAMESPACE_CHANNEL));
    a.server.leave(&one, "x");
    a.server.leave(&two, "y");
    assert!(a.subscribed(ROOM_2, false).await);
    // Room 1 still has y.
    assert!(a.is_subscribed(ROOM_1));
    // A disconnect empties the socket's rooms.
    let client = RawClient::connect_bound(a.addr, "z").await.unwrap();
    a.server.join(&two, "z");
    assert!(a.subscribed(ROOM_2, true).await);
    drop(client);
    assert!(a.subscribed(ROOM_2, false).await);
    // remove_room too.
    a.server.remove_room(&one);
    assert!(a.subscribed(ROOM_1, false).await);

    // A preset namespace keeps one channel for all its rooms.
    let p = node(
        &hub,
        ServerConfig::default()
            .with_node_name("p")
            .with_preset_namespaces(["lobby"]),
    )
    .await;
    assert!(p.subscribed("crosswire:ws:room:lobby", true).await);
    p.server.join(&Room::new("lobby", "1"), "x");
    p.server.join(&Room::new("game", "1"), "x");
    assert!(p.subscribed("crosswire:ws:in:{game/1}", true).await);
    assert!(!p.is_subscribed("crosswire:ws:in:{lobby/1}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_message_reaches_only_the_nodes_with_members() {
    let hub = MemoryHub::new();
    let (a, b, c) = (
        named(&hub, "a").await,
        named(&hub, "b").await,
        named(&hub, "c").await,
    );
    let mut on_b = RawClient::connect_bound(b.addr, "m").await.unwrap();
    let mut on_c = RawClient::connect_bound(c.addr, "n").await.unwrap();
    let (one, two) = (
        Room::new(RELAY_NAMESPACE, "1"),
        Room::new(RELAY_NAMESPACE, "2"),
    );
    b.server.join(&one, "m");
    c.server.join(&two, "n");
    assert!(b.subscribed(ROOM_1, true).await);
    assert!(c.subscribed(ROOM_2, true).await);
    // Settle the nodes' announcements before counting envelopes.
    wait_until(TIMEOUT, || {
        [&a, &b, &c].iter().all(|n| n.server.nodes().len() == 3)
    })
    .await;
    let c_before = envelopes(&c);
    for n in 0..100 {
        a.server.to_room(&one).emit("m", &n).unwrap();
    }
    a.server.to_room(&two).emit("m", "for c").unwrap();
    for n in 0..100 {
        let text = on_b
            .recv_text(TIMEOUT)
            .await
            .expect("b's member gets room 1");
        assert_eq!(text, format!(r#"{{"event":"m","payload":{n}}}"#));
    }
    let text = on_c
        .recv_text(TIMEOUT)
        .await
        .expect("c's member gets room 2");
    assert_eq!(text, r#"{"event":"m","payload":"for c"}"#);
    // c got room 2's message but none of room 1's (announcements aside: fewer than 100).
    let c_got = envelopes(&c) - c_before;
    assert!(
        (1..10).contains(&c_got),
        "c received {c_got} envelopes for one message to its room"
    );
}

/// A room's last member leaving on one thread while its next first member joins on another:
/// whichever order the registry saw them in, the subscription ends as the membership does
/// (the subscriptions are queued under the registry's lock). Rounds of the two racing, each
/// checked once it settles; the window this guards is narrow, so a round rarely hits it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_and_a_join_racing_leave_the_subscription_as_the_members() {
    let hub = MemoryHub::new();
    let a = named(&hub, "a").await;
    let room = Room::new(RELAY_NAMESPACE, "1");
    for round in 0..200 {
        a.server.join(&room, "x");
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let leaving = {
            let (server, room, barrier) = (a.server.clone(), room.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                server.leave(&room, "x");
            })
        };
        let joining = {
            let (server, room, barrier) = (a.server.clone(), room.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                server.join(&room, "y");
            })
        };
        leaving.join().expect("no panic");
        joining.join().expect("no panic");
        assert_eq!(a.server.room_members(&room), ["y"]);
        assert!(
            a.subscribed(ROOM_1, true).await,
            "round {round}: room 1 has a member but no subscription"
        );
        a.server.leave(&room, "y");
        assert!(a.subscribed(ROOM_1, false).await, "round {round}");
    }
}

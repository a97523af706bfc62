//! Per-connection counters (`Socket::info`) and the cluster-wide inspection queries
//! (`Server::inspect`, `Server::cluster_summary`, `Server::disconnect`) between two nodes
//! on an in-process broker hub, with real WebSocket clients over loopback.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crosswire::{MemoryHub, Room, Server};
use crosswire_testkit::cluster_suite::node_config;
use crosswire_testkit::{
    install_relay, serve_on_free_port, wait_until, RawClient, RawOptions, RELAY_NAMESPACE,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

fn node(hub: &MemoryHub, name: &str) -> Server {
    let config = node_config(name).with_server_ping_interval(Duration::from_millis(200));
    let server = Server::builder(config)
        .broker(Arc::new(hub.broker()))
        .build()
        .expect("valid config");
    install_relay(&server);
    server
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_counters_and_where_an_id_is_across_nodes() {
    let hub = MemoryHub::new();
    let (a, b) = (node(&hub, "a"), node(&hub, "b"));
    assert!(wait_until(WAIT, || a.nodes() == ["a", "b"] && b.nodes() == ["a", "b"]).await);
    let (addr_a, addr_b) = (serve_on_free_port(&a).await, serve_on_free_port(&b).await);

    let before = unix_ms(SystemTime::now());
    let mut x = RawClient::connect_bound(addr_a, "x").await.unwrap();
    let after = unix_ms(SystemTime::now());
    let mut y = RawClient::connect_bound(addr_b, "y").await.unwrap();
    x.send_json(&json!({"event": "join", "payload": {"room": "r1"}}))
        .await
        .unwrap();
    for i in 0..3 {
        x.send_json(&json!({"event": "echo", "payload": i, "callbackId": format!("c{i}")}))
            .await
            .unwrap();
        assert!(x.recv_json(WAIT).await.is_some(), "echo {i}");
    }

    // Read from the socket: the join and three echoes after the heartbeat of connect_bound.
    let socket = a.socket("x").expect("x on a");
    let info = socket.info();
    assert_eq!(info.id.as_deref(), Some("x"));
    assert_eq!(info.conn_id, socket.conn_id());
    assert!((before..=after).contains(&info.connected_at_ms), "{info:?}");
    assert_eq!(info.traffic.messages_in, 5, "{info:?}");
    assert!(info.traffic.messages_out >= 4, "{info:?}");
    assert_eq!(info.traffic, socket.stats());
    assert_eq!(info.queued_frames, 0);
    assert!(info.client_addr.as_deref() == Some("127.0.0.1"), "{info:?}");
    // The client answers the protocol pings of the 200 ms sweep: a pong is recorded.
    assert!(wait_until(WAIT, || socket.info().last_pong_at_ms.is_some()).await);
    let pong = socket.info().last_pong_at().unwrap();
    assert!(pong >= socket.info().connected_at());

    // Asked on b, x is found on a with the same counters and its room.
    let found = b.inspect("x").await.expect("x found from b");
    assert_eq!(found.node, "a");
    assert_eq!(found.rooms, [Room::new(RELAY_NAMESPACE, "r1")]);
    assert_eq!(found.socket.conn_id, info.conn_id);
    assert_eq!(found.socket.traffic.messages_in, 5);
    assert_eq!(a.inspect("y").await.map(|l| l.node).as_deref(), Some("b"));
    assert!(a.inspect("nobody").await.is_none());

    // The cluster summary: both nodes, their connections, traffic and rooms.
    let summary = b.cluster_summary(10).await;
    let names: Vec<&str> = summary.iter().map(|s| s.node.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(summary[0].stats.connections, 1);
    assert_eq!(summary[1].stats.connections, 1);
    assert!(summary[0].stats.traffic.messages_in >= 5);
    assert_eq!(summary[0].rooms.len(), 1);
    assert_eq!(summary[0].rooms[0].size, 1);
    assert!(summary[1].rooms.is_empty());
    assert!(summary[0].at_ms >= summary[0].started_at_ms);

    // Disconnecting y from a closes it on b with the code given.
    assert!(a.disconnect("y", 4000, "by an operator").await);
    assert_eq!(
        y.expect_close(WAIT).await,
        Some((4000, "by an operator".to_string()))
    );
    assert!(!a.disconnect("nobody", 4000, "").await);
    drop(x);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_depth_shows_a_client_that_stopped_reading() {
    let hub = MemoryHub::new();
    let a = node(&hub, "a");
    let addr = serve_on_free_port(&a).await;
    let options = RawOptions {
        reading: false,
        recv_buffer: Some(4096),
        ..RawOptions::default()
    };
    let slow = RawClient::connect_with(addr, "/?id=slow", options)
        .await
        .unwrap();
    assert!(wait_until(WAIT, || a.socket("slow").is_some()).await);
    let socket = a.socket("slow").unwrap();
    let chunk = "x".repeat(64 * 1024);
    // Until the kernel buffers are full, frames leave the queue at once.
    assert!(
        wait_until(WAIT, || {
            for _ in 0..16 {
                let _ = socket.emit("bulk", &chunk);
            }
            socket.info().queued_frames > 0
        })
        .await
    );
    let info = socket.info();
    assert!(
        info.queued_bytes > 64 * 1024 * info.queued_frames / 2,
        "{info:?}"
    );
    slow.resume_reading();
    assert!(wait_until(WAIT, || socket.info().queued_frames == 0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_sizes_add_up_over_the_nodes() {
    let hub = MemoryHub::new();
    let (a, b) = (node(&hub, "a"), node(&hub, "b"));
    assert!(wait_until(WAIT, || a.nodes() == ["a", "b"] && b.nodes() == ["a", "b"]).await);
    let room = |id: &str| Room::new(RELAY_NAMESPACE, id);
    // On a: "big" has two members, "shared" one; on b: "shared" has two.
    for id in ["a1", "a2"] {
        a.join(&room("big"), id);
    }
    a.join(&room("shared"), "a3");
    for id in ["b1", "b2"] {
        b.join(&room("shared"), id);
    }
    // With one room per node, a lists "big" and b "shared"; the second round fills in a's
    // member of "shared", so its size over the cluster is 3.
    let summary = b.cluster_summary(1).await;
    let sizes = |node: usize| -> Vec<(String, usize)> {
        summary[node]
            .rooms
            .iter()
            .map(|r| (r.room.id().to_string(), r.size))
            .collect()
    };
    assert_eq!(
        sizes(0),
        [("big".to_string(), 2), ("shared".to_string(), 1)]
    );
    assert_eq!(sizes(1), [("shared".to_string(), 2)]);
    // A single node's own summary lists its largest only.
    assert_eq!(a.node_summary(1).rooms.len(), 1);
}

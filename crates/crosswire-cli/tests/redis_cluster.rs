//! `crosswire serve --redis-cluster`: two real nodes over a real Redis Cluster (3 masters, 3
//! replicas) find each other from different seeds, a client on one reaches a room member and
//! an id on the other, also after the master of the room's shard is killed; `--history` in
//! cluster mode is refused at start.

mod common;

use std::time::Duration;

use common::{Raw, Relay, CLUSTER_STEP};
use crosswire_testkit::RedisCluster;
use serde_json::json;

fn cluster() -> RedisCluster {
    assert!(
        RedisCluster::available(),
        "redis-server/redis-cli are not installed (scripts/test.sh installs them)"
    );
    RedisCluster::start().expect("the Redis Cluster starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_over_a_redis_cluster_deliver_to_each_other() {
    let mut cluster = cluster();
    let seeds = cluster.seed_urls();
    let n1 = Relay::start(&["--name", "n1", "--redis-cluster", &seeds[0]]).await;
    let n2 = Relay::start(&["--name", "n2", "--redis-cluster", &seeds[1..].join(",")]).await;
    for n in [&n1, &n2] {
        n.wait_health("both nodes", CLUSTER_STEP, |status, body| {
            status == 200 && body["nodes"] == json!(["n1", "n2"])
        })
        .await;
    }
    let mut sender = Raw::connect(&n1, "s").await;
    let mut member = Raw::connect(&n2, "m").await;
    assert_eq!(
        member.request("join", json!({"room": "r"})).await,
        json!({"ok": true})
    );
    common::sync_room(&mut sender, "r", &mut [&mut member]).await;
    let sent = sender
        .request("room", json!({"room": "r", "data": "to the room"}))
        .await;
    assert_eq!(sent, json!({"ok": true}));
    member.expect_msg(&json!("to the room")).await;
    let sent = sender
        .request("to", json!({"id": "m", "data": "to m"}))
        .await;
    assert_eq!(sent, json!({"ok": true}));
    member.expect_msg(&json!("to m")).await;

    // Every master killed in turn would be too slow; the one of the relay's room channel.
    let victim = cluster
        .master_of("crosswire:ws:room:relay")
        .expect("a master");
    cluster.kill(victim);
    assert!(cluster.wait_failover(victim, Duration::from_secs(20)));
    let sent = sender
        .request("room", json!({"room": "r", "data": "after the failover"}))
        .await;
    assert_eq!(sent, json!({"ok": true}));
    member.expect_msg(&json!("after the failover")).await;
}

#[tokio::test]
async fn history_over_a_redis_cluster_is_refused_at_start() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_crosswire"))
        .args([
            "serve",
            "--port",
            "0",
            "--redis-cluster",
            "redis://127.0.0.1:1",
            "--history",
        ])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("keeps no history"), "{text}");
}

/// `redis-cli -p <port> <args>`, one line per reply element.
fn cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_room_channels_the_rooms_spread_over_the_shards() {
    let cluster = cluster();
    let seeds = cluster.seed_urls().join(",");
    let args = |name| ["--name", name, "--redis-cluster", &seeds, "--room-channels"];
    let n1 = Relay::start(&args("n1")).await;
    let n2 = Relay::start(&args("n2")).await;
    for n in [&n1, &n2] {
        n.wait_health("both nodes", CLUSTER_STEP, |status, body| {
            status == 200 && body["nodes"] == json!(["n1", "n2"])
        })
        .await;
    }
    let mut sender = Raw::connect(&n1, "s").await;
    let mut member = Raw::connect(&n2, "m").await;
    let rooms: Vec<String> = (0..12).map(|i| format!("r{i}")).collect();
    for room in &rooms {
        let joined = member.request("join", json!({"room": room})).await;
        assert_eq!(joined, json!({"ok": true}));
        common::sync_room(&mut sender, room, &mut [&mut member]).await;
    }
    // Each room has its own sharded channel, on the shard of its slot: more than one shard
    // carries them, and every room channel is subscribed somewhere.
    let mut carried = 0;
    let mut shards = 0;
    for port in cluster.ports() {
        let channels = cli(port, &["PUBSUB", "SHARDCHANNELS", "crosswire:ws:in:*"]);
        let here = channels.lines().filter(|l| !l.is_empty()).count();
        carried += here;
        shards += usize::from(here > 0);
    }
    assert_eq!(carried, rooms.len(), "one subscription per room channel");
    assert!(shards >= 2, "the room channels sit on {shards} shard(s)");
    for room in &rooms {
        let data = format!("to {room}");
        let sent = sender
            .request("room", json!({"room": room, "data": data}))
            .await;
        assert_eq!(sent, json!({"ok": true}));
        member.expect_msg(&json!(data)).await;
    }
}

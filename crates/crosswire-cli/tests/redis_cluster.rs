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

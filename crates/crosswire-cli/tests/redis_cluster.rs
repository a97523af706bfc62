//! `crosswire serve --redis-cluster`: two real nodes over a real Redis Cluster (3 masters, 3
//! replicas) find each other from different seeds, a client on one reaches a room member and
//! an id on the other, also after the master of the room's shard is killed; rooms spread
//! over the shards with `--room-channels`; `--history` recovers a room until its shard fails
//! over.

mod common;

use std::time::Duration;

use common::{Raw, Relay};
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
    let (n1, n2) = Relay::pair(
        &["--redis-cluster", &seeds[0]],
        &["--redis-cluster", &seeds[1..].join(",")],
    )
    .await;
    let (mut sender, mut member) = common::room_and_id_across(&n1, &n2).await;

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

/// `--history` over a Redis Cluster: a member away while 80 messages go to its room comes
/// back on the other node with every one of them, in order, `recovered: true`; after the
/// master of the room's shard is killed, an old position no longer recovers (new epoch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_over_a_redis_cluster_recovers_a_room_until_its_shard_fails_over() {
    let mut cluster = cluster();
    let seeds = cluster.seed_urls().join(",");
    let args = ["--redis-cluster", &seeds, "--history"];
    let (n1, n2) = Relay::pair(&args, &args).await;
    let mut sender = Raw::connect(&n1, "s").await;
    let mut member = Raw::connect(&n2, "m").await;
    let joined = member.request("join", json!({"room": "lobby"})).await;
    assert_eq!(
        (&joined["ok"], &joined["recovered"]),
        (&json!(true), &json!(false))
    );
    let epoch = joined["epoch"].clone();
    let since = json!({"offset": joined["offset"], "epoch": epoch});
    drop(member);
    for n in 1..=80 {
        let sent = sender
            .request("room", json!({"room": "lobby", "data": n}))
            .await;
        assert_eq!(sent, json!({"ok": true}));
    }
    let mut back = Raw::connect(&n1, "m").await;
    let joined = back
        .request("join", json!({"room": "lobby", "since": since}))
        .await;
    assert_eq!(joined["recovered"], json!(true), "{joined} after {since}");
    for n in 1..=80 {
        let got = back.recv_msg_within(common::STEP).await;
        assert_eq!(got, Some(json!(n)), "every missed message once, in order");
    }
    let last = json!({"offset": joined["offset"], "epoch": joined["epoch"]});

    let victim = cluster
        .master_of("crosswire:ws:history:{relay/lobby}")
        .expect("a master");
    cluster.kill(victim);
    assert!(cluster.wait_failover(victim, Duration::from_secs(20)));
    // Published once the promoted replica serves the slot.
    let sent = sender
        .request("room", json!({"room": "lobby", "data": "after"}))
        .await;
    assert_eq!(sent, json!({"ok": true}));
    let mut again = Raw::connect(&n2, "k").await;
    let joined = again
        .request("join", json!({"room": "lobby", "since": last}))
        .await;
    assert_eq!(joined["ok"], json!(true), "{joined}");
    assert_eq!(joined["recovered"], json!(false), "{joined}");
    assert_ne!(joined["epoch"], epoch);
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
    let args = ["--redis-cluster", &seeds, "--room-channels"];
    let (n1, n2) = Relay::pair(&args, &args).await;
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

//! Sharded pub/sub over a real Redis Cluster (3 masters, 3 replicas, `redis-server` in
//! cluster mode, started by the test): routing by slot, subscriptions on replicas, a master
//! killed mid-stream, a slot migrated to another master, and a cluster that is not there.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use crosswire::{Broker, BrokerError, BrokerMessage};
use crosswire_redis::{RedisBroker, RedisConfig, ShardSubscriptions};
use crosswire_testkit::RedisCluster;
use tokio::sync::mpsc;
use tokio::time::Instant;

fn cluster() -> RedisCluster {
    assert!(
        RedisCluster::available(),
        "redis-server/redis-cli are not on PATH: install them (scripts/test.sh does) — tests that need them fail rather than skip"
    );
    RedisCluster::start().unwrap_or_else(|e| panic!("the Redis Cluster did not start: {e}"))
}

/// Short health timings; publishes may wait up to 2 × 3 s for a failover.
fn config(urls: &[String]) -> RedisConfig {
    fast_config(urls).with_command_timeout(Duration::from_secs(3))
}

fn cluster_broker(urls: &[String]) -> RedisBroker {
    RedisBroker::cluster(config(urls)).expect("valid config")
}

/// A cluster broker subscribing on replicas.
fn replica_broker(urls: &[String]) -> RedisBroker {
    let config = config(urls).with_shard_subscriptions(ShardSubscriptions::Replicas);
    RedisBroker::cluster(config).expect("valid config")
}

async fn wait_broker_healthy(broker: &RedisBroker) {
    wait_until("the cluster broker healthy", || broker.health().healthy).await;
}

/// `redis-cli -p <port> <args>`, its output trimmed.
fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Channels spread over every shard: `count` per master.
fn spread(cluster: &RedisCluster, count: usize) -> Vec<String> {
    let mut per_master: HashMap<u16, usize> = HashMap::new();
    let mut channels = Vec::new();
    for i in 0.. {
        if channels.len() == count * 3 {
            break;
        }
        let channel = format!("room:{i}");
        let master = cluster
            .master_of(&channel)
            .expect("a master for every slot");
        let taken = per_master.entry(master).or_default();
        if *taken < count {
            *taken += 1;
            channels.push(channel);
        }
    }
    channels
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_go_to_their_slot_and_are_subscribed_where_asked() {
    let cluster = cluster();
    let a = cluster_broker(&cluster.seed_urls()[..1]);
    let b = replica_broker(&cluster.seed_urls()[1..2]);
    let mut inbox = b.messages().unwrap();
    let channels = spread(&cluster, 3);
    for channel in &channels {
        b.subscribe(channel).await.expect("subscribed");
    }
    wait_broker_healthy(&a).await;
    wait_broker_healthy(&b).await;
    // Every server was found from one seed.
    assert_eq!(a.health().total, 6);
    assert_eq!(b.health().total, 6);

    for channel in &channels {
        let master = cluster.master_of(channel).unwrap();
        let target = a.publish_targets(channel);
        assert_eq!(
            target,
            vec![Arc::<str>::from(format!("127.0.0.1:{master}"))]
        );
        // b subscribes on the shard's replica, not on its master.
        wait_on(&cluster, channel, ShardSubscriptions::Replicas).await;
    }

    for round in 0..20 {
        for channel in &channels {
            a.publish(channel, Bytes::from(format!("{channel}#{round}")))
                .await
                .expect("published");
        }
    }
    let mut next: HashMap<String, usize> = HashMap::new();
    for _ in 0..channels.len() * 20 {
        let m = recv(&mut inbox, DEADLINE)
            .await
            .expect("every message arrives");
        let text = String::from_utf8(m.payload.to_vec()).unwrap();
        let (channel, round) = text.split_once('#').unwrap();
        assert_eq!(&*m.channel, channel);
        let expected = next.entry(channel.to_string()).or_default();
        assert_eq!(
            round.parse::<usize>().unwrap(),
            *expected,
            "order on {channel}"
        );
        *expected += 1;
    }
    assert!(recv(&mut inbox, Duration::from_millis(300)).await.is_none());

    // Unsubscribed: no longer delivered, and gone from the replica.
    let gone = &channels[0];
    b.unsubscribe(gone).await.unwrap();
    let replica = cluster.replica_of(gone).unwrap();
    wait_until("the replica dropped the subscription", || {
        cli(replica, &["PUBSUB", "SHARDNUMSUB", gone])
            .lines()
            .nth(1)
            == Some("0")
    })
    .await;
    a.publish(gone, Bytes::from_static(b"late")).await.unwrap();
    a.publish(&channels[1], Bytes::from_static(b"marker"))
        .await
        .unwrap();
    let m = recv(&mut inbox, DEADLINE).await.unwrap();
    assert_eq!(&m.payload[..], b"marker");
}

/// Waits until `channel` is subscribed on one kind of server of its shard only (the
/// master, or its replica). A subscription made while the preferred server's connection was
/// still coming up starts on the other and moves once it is up; while it moves, both deliver.
async fn wait_on(cluster: &RedisCluster, channel: &str, on: ShardSubscriptions) {
    let master = cluster.master_of(channel).expect("a master");
    let replica = cluster.replica_of(channel).expect("a replica");
    let (with, without) = match on {
        ShardSubscriptions::Replicas => (replica, master),
        _ => (master, replica),
    };
    let numsub = |port| cli(port, &["PUBSUB", "SHARDNUMSUB", channel]);
    wait_until("subscribed on one server of the shard", || {
        numsub(with).lines().nth(1) == Some("1") && numsub(without).lines().nth(1) == Some("0")
    })
    .await;
}

/// Sequence numbers received per channel, in order. A number already passed is a repeat:
/// counted in `repeats` when they are allowed, a failure otherwise.
#[derive(Default, Clone)]
struct Seen {
    numbers: HashMap<String, Vec<u64>>,
    repeats: Option<u64>,
}

impl Seen {
    fn allowing_repeats(allowed: bool) -> Self {
        Self {
            numbers: HashMap::new(),
            repeats: allowed.then_some(0),
        }
    }

    fn take(&mut self, m: BrokerMessage) {
        let text = String::from_utf8(m.payload.to_vec()).unwrap();
        let (channel, n) = text.split_once('#').unwrap();
        assert_eq!(&*m.channel, channel);
        let n: u64 = n.parse().unwrap();
        let list = self.numbers.entry(channel.to_string()).or_default();
        if let Some(&last) = list.last() {
            if n <= last {
                assert!(
                    list.contains(&n),
                    "{channel}: {n} after {last} (out of order)"
                );
                match self.repeats.as_mut() {
                    Some(repeats) => *repeats += 1,
                    None => panic!("{channel}: {n} after {last} (a repeat or out of order)"),
                }
                return;
            }
        }
        list.push(n);
    }

    async fn drain(&mut self, inbox: &mut mpsc::Receiver<BrokerMessage>) {
        while let Some(m) = recv(inbox, Duration::from_millis(500)).await {
            self.take(m);
        }
    }

    fn of(&self, channel: &str) -> Vec<u64> {
        self.numbers.get(channel).cloned().unwrap_or_default()
    }
}

/// What [`kill_a_master_mid_stream`] saw: the messages sent per channel, the number of the
/// one sent when the master was killed, and what arrived per channel.
struct Failover {
    channels: Vec<String>,
    victim_channels: Vec<String>,
    sent: u64,
    at_kill: u64,
    seen: Seen,
}

/// 3 s of a steady stream on channels over every shard (one message per channel every 5 ms)
/// from one broker to another subscribing `on`; the master of the first channels' shard is
/// killed after 0.5 s. Every publish must succeed: those to the dead shard wait for the
/// replica to be promoted. Received in order; none twice with replica subscriptions (with
/// master ones, the replica a subscription moves to may still be behind and send the last
/// messages again: counted). Then the killed master comes back as a replica and every
/// channel still delivers.
async fn kill_a_master_mid_stream(on: ShardSubscriptions) -> Failover {
    let mut cluster = cluster();
    let a = cluster_broker(&cluster.seed_urls());
    let b = RedisBroker::cluster(config(&cluster.seed_urls()).with_shard_subscriptions(on))
        .expect("valid config");
    let mut inbox = b.messages().unwrap();
    let channels = spread(&cluster, 2);
    for channel in &channels {
        b.subscribe(channel).await.expect("subscribed");
    }
    wait_broker_healthy(&a).await;
    wait_broker_healthy(&b).await;
    for channel in &channels {
        wait_on(&cluster, channel, on).await;
    }
    let victim = cluster.master_of(&channels[0]).unwrap();
    let victim_channels: Vec<String> = channels
        .iter()
        .filter(|c| cluster.master_of(c) == Some(victim))
        .cloned()
        .collect();
    let mut seen = Seen::allowing_repeats(on == ShardSubscriptions::Masters);
    let started = Instant::now();
    let mut at_kill = 0;
    let mut pending = Vec::new();
    let mut sent: u64 = 0;
    while started.elapsed() < Duration::from_secs(3) {
        if at_kill == 0 && started.elapsed() >= Duration::from_millis(500) {
            cluster.kill(victim);
            at_kill = sent;
        }
        sent += 1;
        for channel in &channels {
            pending.push(a.publish(channel, Bytes::from(format!("{channel}#{sent}"))));
        }
        while let Ok(m) = inbox.try_recv() {
            seen.take(m);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for (i, p) in pending.into_iter().enumerate() {
        p.await
            .unwrap_or_else(|e| panic!("publish {i} failed during the failover: {e}"));
    }
    assert!(cluster.wait_failover(victim, Duration::from_secs(10)));
    wait_broker_healthy(&a).await;
    seen.drain(&mut inbox).await;

    // The killed master comes back as a replica; replica subscriptions move back to it. A
    // replica still catching up replays the sharded messages of its replication backlog to
    // its new subscribers, so what arrives now may repeat what came before (the nodes of a
    // crosswire cluster drop such repeats by their sequence numbers): only the next message
    // is asserted.
    cluster.restart(victim).unwrap();
    assert!(cluster.wait_ready(Duration::from_secs(30)));
    let mut after = Seen {
        repeats: Some(0),
        ..seen.clone()
    };
    for channel in &channels {
        a.publish(channel, Bytes::from(format!("{channel}#{}", sent + 1)))
            .await
            .unwrap();
    }
    let next: HashSet<String> = channels
        .iter()
        .map(|c| format!("{c}#{}", sent + 1))
        .collect();
    let mut arrived = HashSet::new();
    while arrived.len() < next.len() {
        let m = recv(&mut inbox, DEADLINE).await.expect("after the restart");
        let text = String::from_utf8_lossy(&m.payload).to_string();
        after.take(m);
        if next.contains(&text) {
            arrived.insert(text);
        }
    }
    Failover {
        channels,
        victim_channels,
        sent,
        at_kill,
        seen,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replica_subscriptions_a_master_killed_mid_stream_loses_nothing() {
    let run = kill_a_master_mid_stream(ShardSubscriptions::Replicas).await;
    for channel in &run.channels {
        let got = run.seen.of(channel).len() as u64;
        assert_eq!(got, run.sent, "{channel}: {got} of {} arrived", run.sent);
    }
}

/// Subscribed on masters: what the killed master had accepted but not yet sent is lost — a
/// few messages around the kill — and nothing else: the subscriptions move to the replica
/// before it is promoted, so what was parked meanwhile arrives. The replica may send again
/// what it had not passed on yet when the subscription arrived (at most 40 repeats).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_master_subscriptions_a_master_killed_mid_stream_loses_only_what_it_held() {
    let run = kill_a_master_mid_stream(ShardSubscriptions::Masters).await;
    let repeats = run.seen.repeats.unwrap_or(0);
    assert!(repeats <= 40, "{repeats} repeats");
    for channel in &run.channels {
        let got = run.seen.of(channel);
        let lost: Vec<u64> = (1..=run.sent).filter(|n| !got.contains(n)).collect();
        if !run.victim_channels.contains(channel) {
            assert!(lost.is_empty(), "{channel} (another shard) lost {lost:?}");
            continue;
        }
        // At most 100 ms of stream (20 messages), all sent just before the kill.
        assert!(
            lost.len() <= 20,
            "{channel} lost {} messages: {lost:?}",
            lost.len()
        );
        let window = run.at_kill.saturating_sub(20)..=run.at_kill + 1;
        assert!(
            lost.iter().all(|n| window.contains(n)),
            "{channel} lost {lost:?}, outside {window:?} (killed after #{})",
            run.at_kill
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migrated_to_another_master_is_followed() {
    let cluster = cluster();
    let a = cluster_broker(&cluster.seed_urls());
    let b = cluster_broker(&cluster.seed_urls());
    let mut inbox = b.messages().unwrap();
    let channel = "room:migrating";
    b.subscribe(channel).await.unwrap();
    wait_broker_healthy(&a).await;
    wait_broker_healthy(&b).await;
    a.publish(channel, Bytes::from_static(b"before"))
        .await
        .unwrap();
    assert_eq!(recv_text(&mut inbox).await, "before");

    let slot = cli(cluster.masters()[0], &["CLUSTER", "KEYSLOT", channel]);
    let source = cluster.master_of(channel).unwrap();
    let target = *cluster.masters().iter().find(|&&m| m != source).unwrap();
    let id = |port| cli(port, &["CLUSTER", "MYID"]);
    let (source_id, target_id) = (id(source), id(target));
    cli(
        target,
        &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &source_id],
    );
    cli(
        source,
        &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &target_id],
    );
    for port in cluster.masters() {
        cli(port, &["CLUSTER", "SETSLOT", &slot, "NODE", &target_id]);
    }
    let target_name: Arc<str> = Arc::from(format!("127.0.0.1:{target}"));
    wait_until("the publisher follows the slot", || {
        a.publish_targets(channel) == vec![Arc::clone(&target_name)]
    })
    .await;
    // Redis dropped the subscription on the old shard; it is made again on the new one.
    wait_until("subscribed on the new shard", || {
        cli(target, &["PUBSUB", "SHARDNUMSUB", channel])
            .lines()
            .nth(1)
            == Some("1")
    })
    .await;
    a.publish(channel, Bytes::from_static(b"after"))
        .await
        .unwrap();
    assert_eq!(recv_text(&mut inbox).await, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_lives_in_the_rooms_shard_and_a_failover_starts_a_new_epoch() {
    let mut cluster = cluster();
    let a = cluster_broker(&cluster.seed_urls());
    let b = cluster_broker(&cluster.seed_urls());
    let mut inbox = b.messages().unwrap();
    // A room channel and its stream share a hash tag, so one slot.
    let (channel, stream) = (
        "crosswire:ws:in:{chat/r1}",
        "crosswire:ws:history:{chat/r1}",
    );
    let window = crosswire::Retention::new(100, Duration::from_secs(120));
    b.subscribe(channel).await.unwrap();
    wait_broker_healthy(&a).await;
    wait_broker_healthy(&b).await;
    wait_on(&cluster, channel, ShardSubscriptions::Masters).await;
    assert!(a.supports_history() && a.history_needs_room_channels());
    for n in 1..=20u64 {
        let payload = Bytes::from(format!("m{n}"));
        a.publish_recorded(channel, stream, payload, window)
            .await
            .unwrap();
    }
    let mut epoch = None;
    for n in 1..=20u64 {
        let m = recv(&mut inbox, DEADLINE)
            .await
            .expect("a positioned message");
        assert_eq!(&m.payload[..], format!("m{n}").as_bytes());
        let position = m.position.expect("positioned");
        assert_eq!(position.offset, n);
        assert_eq!(
            *epoch.get_or_insert(Arc::clone(&position.epoch)),
            position.epoch
        );
    }
    let epoch = epoch.unwrap();
    let read = a.read_stream(stream, Some(10), window).await.unwrap();
    assert_eq!((read.top, read.complete, &read.epoch), (20, true, &epoch));
    let offsets: Vec<u64> = read.entries.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, (11..=20).collect::<Vec<_>>());
    assert_eq!(&read.entries[0].1[..], b"m11");

    // Not in its stream's slot: refused, not published half-way.
    let refused = a
        .publish_recorded(
            "crosswire:ws:node:x",
            "crosswire:ws:history:{@x}",
            Bytes::new(),
            window,
        )
        .await;
    assert!(
        matches!(refused, Err(BrokerError::Backend(_))),
        "{refused:?}"
    );

    // The shard's master dies: the promoted replica has the stream, but a new generation, so
    // no position of before recovers from it.
    let victim = cluster.master_of(stream).unwrap();
    cluster.kill(victim);
    assert!(cluster.wait_failover(victim, Duration::from_secs(20)));
    a.publish_recorded(channel, stream, Bytes::from_static(b"after"), window)
        .await
        .expect("published once the replica took over");
    // Subscribed on the master, then on the replica once the master died: the replica may
    // repeat the last messages it had not passed on yet.
    let m = loop {
        let m = recv(&mut inbox, DEADLINE)
            .await
            .expect("after the failover");
        if m.payload.starts_with(b"m") {
            assert!(m.position.as_ref().is_some_and(|p| p.offset <= 20));
            continue;
        }
        break m;
    };
    assert_eq!(&m.payload[..], b"after");
    let position = m.position.expect("positioned");
    assert_ne!(position.epoch, epoch, "a failover must change the epoch");
    assert_eq!(
        position.epoch.split('.').next(),
        epoch.split('.').next(),
        "the stream itself survived (replicated)"
    );
    let read = b.read_stream(stream, Some(20), window).await.unwrap();
    assert_eq!(read.epoch, position.epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cluster_means_unavailable_not_a_hang() {
    let port = crosswire_testkit::free_port().unwrap();
    let broker = cluster_broker(&[format!("redis://127.0.0.1:{port}")]);
    assert!(!broker.health().healthy);
    let started = Instant::now();
    let result = broker.subscribe("room:x").await;
    assert!(
        matches!(result, Err(BrokerError::Unavailable)),
        "{result:?}"
    );
    let result = broker.publish("room:x", Bytes::from_static(b"x")).await;
    assert!(result.is_err(), "{result:?}");
    // Both bounded by the command timeout (3 s; a publish waits twice that).
    assert!(started.elapsed() < Duration::from_secs(10));

    // History on a Redis Cluster needs a channel per room and no id history.
    let window = crosswire::Retention::new(10, Duration::from_secs(10));
    let node = |config: crosswire::ServerConfig| {
        crosswire::Server::builder(config.with_history("chat", window))
            .broker(Arc::new(cluster_broker(&[format!(
                "redis://127.0.0.1:{port}"
            )])))
            .build()
    };
    let plain = crosswire::ServerConfig::default();
    for config in [
        plain.clone(),
        plain
            .clone()
            .with_room_channels(true)
            .with_id_history(window),
    ] {
        assert!(matches!(
            node(config),
            Err(crosswire::ConfigError::HistoryNeedsRoomChannels)
        ));
    }
    assert!(node(plain.with_room_channels(true)).is_ok());
    assert!(matches!(
        RedisBroker::cluster(config(&["redis://127.0.0.1:1".into()]).with_redundancy(2)),
        Err(crosswire_redis::ConfigError::InvalidRedundancy(2))
    ));
}

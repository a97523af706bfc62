//! Killing, restarting and stalling (`CLIENT PAUSE`) real `redis-server` processes: under
//! two brokers, health events, publishing moving to the survivor, no hanging publish,
//! subscriptions coming back, and no loss with redundancy 2; under nodes, a join with Redis
//! down, and recoveries whose client or room's last member leaves during the history read.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use crosswire::Broker;
use crosswire_redis::{HealthEventKind, Role};
use tokio::time::Instant;

/// How long any single publish may take: two command timeouts (1 s each in the tests) plus
/// the safety margin.
const PUBLISH_LIMIT: Duration = Duration::from_millis(2500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_restart_one_of_two_nodes() {
    let (mut r1, r2) = (redis(), redis());
    let urls = [r1.url(), r2.url()];
    let r1_name = format!("127.0.0.1:{}", r1.port());
    let pub_events = Events::default();
    let sub_events = Events::default();
    let a = broker(fast_config(&urls).with_on_health_change(pub_events.callback()));
    let b = broker(fast_config(&urls).with_on_health_change(sub_events.callback()));
    let mut inbox = b.messages().unwrap();
    wait_healthy(&a).await;
    wait_healthy(&b).await;
    let ch = channel_homed_on(&a, &r1_name, "doomed");
    b.subscribe(&ch).await.unwrap();
    a.publish(&ch, Bytes::from_static(b"before")).await.unwrap();
    assert_eq!(recv_text(&mut inbox).await, "before");

    r1.kill();
    let killed = Instant::now();

    // Publish continuously: every publish resolves within its limit (Ok or an error, never
    // a hang), and publishing moves to the survivor within ping interval + timeout.
    let mut first_ok_after_kill = None;
    let mut i = 0u32;
    while first_ok_after_kill.is_none() || i < 50 {
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            PUBLISH_LIMIT,
            a.publish(&ch, Bytes::from(format!("after-{i}"))),
        )
        .await
        .expect("a publish never hangs");
        assert!(started.elapsed() <= PUBLISH_LIMIT);
        if outcome.is_ok() && first_ok_after_kill.is_none() {
            first_ok_after_kill = Some(killed.elapsed());
        }
        i += 1;
        assert!(killed.elapsed() < DEADLINE, "publishing never recovered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let moved_after = first_ok_after_kill.unwrap_or_default();
    eprintln!("publishing reached the survivor {moved_after:?} after the kill");
    assert!(
        moved_after <= PING * 2 + Duration::from_millis(300),
        "publishing reached the survivor after {moved_after:?}"
    );
    assert_eq!(a.publish_targets(&ch).len(), 1);
    assert_ne!(&*a.publish_targets(&ch)[0], r1_name.as_str());

    // The health callbacks fired with the right counts.
    let e = pub_events
        .wait_for("publisher of r1 down", |e| {
            *e.node_name == *r1_name && e.role == Role::Publisher && !e.healthy
        })
        .await;
    assert!(matches!(
        e.event,
        HealthEventKind::Disconnected | HealthEventKind::PingTimeout
    ));
    assert_eq!((e.healthy_publishers, e.total_nodes), (1, 2));
    assert_eq!(e.port, r1.port());
    assert_eq!(&*e.host, "127.0.0.1");
    assert!(e.error.is_some());
    let e = sub_events
        .wait_for("subscriber of r1 down", |e| {
            *e.node_name == *r1_name && e.role == Role::Subscriber && !e.healthy
        })
        .await;
    assert_eq!((e.healthy_subscribers, e.total_nodes), (1, 2));
    let h = a.health();
    assert!(h.healthy);
    assert_eq!((h.healthy_publishers, h.total), (1, 2));

    // Messages published after the move were delivered through the survivor, in order.
    let mut got = Vec::new();
    while let Some(m) = recv(&mut inbox, Duration::from_millis(500)).await {
        got.push(String::from_utf8(m.payload.to_vec()).unwrap());
    }
    assert!(got.len() >= 50, "delivered after the kill: {}", got.len());
    assert_eq!(
        got.last().map(String::as_str),
        Some(format!("after-{}", i - 1).as_str())
    );

    // Restart r1 on the same port: subscriptions come back, the channel moves home and is
    // delivered through r1 again.
    r1.restart().expect("restart redis");
    let e = sub_events
        .wait_for("subscriber of r1 recovered", |e| {
            *e.node_name == *r1_name
                && e.role == Role::Subscriber
                && e.event == HealthEventKind::Recovered
        })
        .await;
    assert!(e.healthy);
    pub_events
        .wait_for("publisher of r1 recovered", |e| {
            *e.node_name == *r1_name
                && e.role == Role::Publisher
                && e.event == HealthEventKind::Recovered
        })
        .await;
    wait_healthy(&a).await;
    wait_healthy(&b).await;
    assert_eq!(&*a.publish_targets(&ch)[0], r1_name.as_str());
    // Straight through r1 (proves b re-subscribed there), then through the broker.
    assert_eq!(redis_command(r1.port(), &["PUBLISH", &ch, "raw-r1"]), ":1");
    assert_eq!(recv_text(&mut inbox).await, "raw-r1");
    a.publish(&ch, Bytes::from_static(b"home-again"))
        .await
        .unwrap();
    assert_eq!(recv_text(&mut inbox).await, "home-again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redundancy_two_loses_nothing_when_a_node_dies_mid_stream() {
    let (mut r1, r2) = (redis(), redis());
    let urls = [r1.url(), r2.url()];
    let a = broker(fast_config(&urls).with_redundancy(2));
    let b = broker(fast_config(&urls));
    let mut inbox = b.messages().unwrap();
    wait_healthy(&a).await;
    wait_healthy(&b).await;
    b.subscribe("stream").await.unwrap();

    // A receiver that de-duplicates, as the crosswire node does (here by payload).
    let receiver = tokio::spawn(async move {
        let mut unique = HashSet::new();
        let mut copies = 0usize;
        while let Some(m) = recv(&mut inbox, Duration::from_secs(2)).await {
            copies += 1;
            unique.insert(m.payload);
        }
        (unique, copies)
    });
    let n = 4000usize;
    for i in 0..n {
        if i == n / 2 {
            r1.kill();
        }
        // Publish and check the outcome without slowing the stream: one outcome awaited
        // per 100 messages.
        let p = a.publish("stream", Bytes::from(i.to_string()));
        if i % 100 == 99 {
            tokio::time::timeout(PUBLISH_LIMIT, p)
                .await
                .expect("never hangs")
                .expect("a copy survives");
        }
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let (unique, copies) = receiver.await.unwrap();
    let missing: Vec<usize> = (0..n)
        .filter(|i| !unique.contains(&Bytes::from(i.to_string())))
        .collect();
    assert!(
        missing.is_empty(),
        "lost {} messages: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    assert!(copies > n, "duplicates arrive while both nodes are up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_on_a_dead_single_node_fails_fast() {
    let mut r1 = redis();
    let events = Events::default();
    let a = broker(fast_config(&[r1.url()]).with_on_health_change(events.callback()));
    wait_healthy(&a).await;
    r1.kill();
    // Until the node is marked down a publish fails (connection refused) well within its
    // limit; afterwards it is refused at once.
    let started = Instant::now();
    let outcome = tokio::time::timeout(PUBLISH_LIMIT, a.publish("x", Bytes::from_static(b"1")))
        .await
        .expect("never hangs");
    assert!(outcome.is_err());
    events
        .wait_for("publisher down", |e| {
            e.role == Role::Publisher && !e.healthy
        })
        .await;
    assert!(started.elapsed() < PING * 2 + Duration::from_secs(1));
    let started = Instant::now();
    assert!(matches!(
        a.publish("x", Bytes::from_static(b"2")).await,
        Err(crosswire::BrokerError::Unavailable)
    ));
    assert!(started.elapsed() < Duration::from_millis(100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_node_is_left_after_ping_interval_plus_timeout() {
    let (r1, r2) = (redis(), redis());
    let urls = [r1.url(), r2.url()];
    let r1_name = format!("127.0.0.1:{}", r1.port());
    let events = Events::default();
    let a = broker(fast_config(&urls).with_on_health_change(events.callback()));
    let b = broker(fast_config(&urls));
    let mut inbox = b.messages().unwrap();
    wait_healthy(&a).await;
    wait_healthy(&b).await;
    let ch = channel_homed_on(&a, &r1_name, "frozen");
    b.subscribe(&ch).await.unwrap();
    let pid = redis_pid(r1.port());

    // A stopped process keeps its sockets open: nothing fails, nothing answers.
    signal(pid, "STOP");
    let stopped = Instant::now();
    let e = events
        .wait_for("ping timeout of r1's publisher", |e| {
            *e.node_name == *r1_name
                && e.role == Role::Publisher
                && e.event == HealthEventKind::PingTimeout
        })
        .await;
    let detected = stopped.elapsed();
    eprintln!("hung node detected after {detected:?}");
    assert!(
        detected <= PING * 2 + Duration::from_millis(300),
        "{detected:?}"
    );
    assert_eq!(
        (e.healthy, e.healthy_publishers, e.total_nodes),
        (false, 1, 2)
    );
    events
        .wait_for("ping timeout of r1's subscriber", |e| {
            *e.node_name == *r1_name
                && e.role == Role::Subscriber
                && e.event == HealthEventKind::PingTimeout
        })
        .await;
    // Publishing now goes straight to the survivor and is delivered by it.
    assert_ne!(&*a.publish_targets(&ch)[0], r1_name.as_str());
    let started = Instant::now();
    a.publish(&ch, Bytes::from_static(b"via-survivor"))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_millis(100));
    assert_eq!(recv_text(&mut inbox).await, "via-survivor");

    signal(pid, "CONT");
    events
        .wait_for("r1's publisher recovered", |e| {
            *e.node_name == *r1_name
                && e.role == Role::Publisher
                && e.event == HealthEventKind::Recovered
        })
        .await;
    wait_healthy(&b).await;
}

/// A confirmed join while the only Redis is down: the id is in the room at once (a local
/// send reaches it), `join_confirmed` says unconfirmed within its bound and counts it, and
/// once Redis is back the room's subscription is made without another join: a send from the
/// other node reaches the member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_while_redis_is_down_holds_and_is_subscribed_once_it_is_back() {
    use crosswire::{JoinError, Room, Server};
    use crosswire_testkit::cluster_suite::{node_config, wait_nodes, WAIT};
    use crosswire_testkit::{install_relay, serve_on_free_port, RawClient};
    use std::sync::Arc;

    let mut r = redis();
    let node = |name: &str| {
        Server::builder(node_config(name))
            .broker(Arc::new(broker(fast_config(&[r.url()]))))
            .build()
            .expect("a valid node")
    };
    let (a, b) = (node("a"), node("b"));
    wait_nodes(&[&a, &b], &["a", "b"]).await;
    install_relay(&b);
    let addr = serve_on_free_port(&b).await;
    let mut x = RawClient::connect_bound(addr, "x").await.expect("connect");

    r.kill();
    let room = Room::new("late", "r");
    let started = Instant::now();
    let joined = b.join_confirmed(&room, "x").await;
    assert_eq!(joined, Err(JoinError::Unconfirmed));
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(b.stats().unconfirmed_joins, 1);
    b.to_room(&room).local().emit("m", &"local").expect("emit");
    let text = x
        .recv_text(WAIT)
        .await
        .expect("the local send reaches the member");
    assert!(text.contains(r#""payload":"local""#), "{text}");

    r.restart().expect("redis-server restarts");
    let deadline = Instant::now() + WAIT;
    let mut probes = 0;
    loop {
        probes += 1;
        a.to_room(&room).emit("m", &probes).expect("emit");
        if let Some(text) = x.recv_text(Duration::from_millis(100)).await {
            assert!(text.contains(r#""event":"m""#), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the room was never subscribed after Redis came back ({probes} probes)"
        );
    }
    assert_eq!(b.stats().unconfirmed_joins, 1);
}

/// A recovering join whose client leaves while Redis stalls (`CLIENT PAUSE`) the history
/// read: once the read completes, the id is not joined (it would stay in the room with no
/// one to take it out), and the room's own channel, subscribed for the recovery, is dropped
/// again (Redis shows no subscriber left).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_whose_client_left_during_the_read_joins_nothing() {
    use crosswire::Room;
    use crosswire_testkit::cluster_suite::{HISTORY_NAMESPACE, WAIT};
    use crosswire_testkit::{wait_until, RawClient};

    let r = redis();
    let (a, addr) = history_node(&r).await;
    let x = RawClient::connect_bound(addr, "x").await.expect("connect");
    assert!(wait_until(WAIT, || a.socket("x").is_some()).await);
    let room = Room::new(HISTORY_NAMESPACE, "stall");
    let first = a.join_recovering(&room, "x", None).await.expect("join");
    let since = first.position.expect("a position");
    let channel = format!("crosswire:ws:in:{{{HISTORY_NAMESPACE}/stall}}");
    let subscribers = || {
        let out = redis_cli(r.port(), &["PUBSUB", "NUMSUB", &channel]);
        out.lines().nth(1).map(str::to_string)
    };
    assert_eq!(subscribers().as_deref(), Some("1"));

    assert_eq!(
        redis_command(r.port(), &["CLIENT", "PAUSE", "800", "ALL"]),
        "+OK"
    );
    // Started while x is connected; its read waits behind the pause.
    let recovering = tokio::spawn(a.join_recovering(&room, "x", Some(since)));
    drop(x);
    assert!(wait_until(WAIT, || a.socket("x").is_none()).await);
    let recovery = recovering
        .await
        .expect("no panic")
        .expect("a recorded room");
    assert!(a.room_members(&room).is_empty(), "{recovery:?}");
    assert!(a.rooms_of("x", None).is_empty());
    assert!(
        wait_until(WAIT, || subscribers().as_deref() == Some("0")).await,
        "the room's channel is still subscribed: {:?}",
        subscribers()
    );
}

/// A recovery holds its room's channel: the room's last other member leaving while Redis
/// stalls the history read (`CLIENT PAUSE`) does not unsubscribe it, so nothing published
/// between that leave and the recovery's join is missed (Redis sees no `UNSUBSCRIBE`, and
/// the channel keeps its subscriber).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_holds_its_room_channel_while_the_last_member_leaves() {
    use crosswire::Room;
    use crosswire_testkit::cluster_suite::{HISTORY_NAMESPACE, WAIT};
    use crosswire_testkit::{wait_until, RawClient};

    let r = redis();
    let (a, addr) = history_node(&r).await;
    let _x = RawClient::connect_bound(addr, "x").await.expect("connect");
    let _y = RawClient::connect_bound(addr, "y").await.expect("connect");
    assert!(wait_until(WAIT, || a.socket("x").is_some() && a.socket("y").is_some()).await);
    let room = Room::new(HISTORY_NAMESPACE, "held");
    a.join_recovering(&room, "x", None).await.expect("join");
    let since = a
        .join_recovering(&room, "y", None)
        .await
        .expect("join")
        .position
        .expect("a position");
    let cli = |args: &[&str]| redis_cli(r.port(), args);
    let unsubscribes = || {
        cli(&["INFO", "commandstats"])
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_unsubscribe:calls="))
            .and_then(|rest| rest.split(',').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = unsubscribes();

    assert_eq!(
        redis_command(r.port(), &["CLIENT", "PAUSE", "800", "ALL"]),
        "+OK"
    );
    // y re-joins: out of the room at once, in again after the read, which waits for Redis.
    let recovering = tokio::spawn(a.join_recovering(&room, "y", Some(since)));
    a.leave(&room, "x");
    let recovery = recovering
        .await
        .expect("no panic")
        .expect("a recorded room");
    assert!(recovery.recovered, "{recovery:?}");
    assert_eq!(a.room_members(&room), ["y"]);
    let channel = format!("crosswire:ws:in:{{{HISTORY_NAMESPACE}/held}}");
    assert_eq!(
        cli(&["PUBSUB", "NUMSUB", &channel]).lines().nth(1),
        Some("1")
    );
    assert_eq!(
        unsubscribes(),
        before,
        "the room's channel was unsubscribed meanwhile"
    );
}

/// A node with room history and a channel per room over `r` (once its broker is connected),
/// with the relay handlers and a listener.
async fn history_node(
    r: &crosswire_testkit::RedisServer,
) -> (crosswire::Server, std::net::SocketAddr) {
    let config = crosswire_redis::RedisConfig::from_urls([r.url()]).expect("url");
    let redis_broker = broker(config);
    wait_healthy(&redis_broker).await;
    let node =
        crosswire::Server::builder(crosswire_testkit::cluster_suite::room_history_config("a"))
            .broker(std::sync::Arc::new(redis_broker))
            .build()
            .expect("a valid node");
    crosswire_testkit::install_relay(&node);
    let addr = crosswire_testkit::serve_on_free_port(&node).await;
    (node, addr)
}

/// What `redis-cli -p <port> <args>` prints.
fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).to_string()
}

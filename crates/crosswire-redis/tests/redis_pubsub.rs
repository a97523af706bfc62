//! Publish/subscribe between two brokers over real `redis-server` processes: one and two
//! nodes, every strategy, ordering, redundancy, nodes added at run time, password and db,
//! and no healthy node.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use crosswire::{Broker, BrokerError};
use crosswire_redis::{AddNodeError, HealthEventKind, PublishStrategy, RedisBroker, Role};
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_publish_subscribe_unsubscribe() {
    let redis = redis();
    let a = broker(fast_config(&[redis.url()]));
    let b = broker(fast_config(&[redis.url()]));
    let mut inbox = b.messages().unwrap();
    assert!(matches!(b.messages(), Err(BrokerError::AlreadyAttached)));
    wait_healthy(&a).await;
    wait_healthy(&b).await;
    let h = b.health();
    assert!(h.healthy);
    assert_eq!(
        (h.healthy_publishers, h.healthy_subscribers, h.total),
        (1, 1, 1)
    );

    b.subscribe("chat:1").await.unwrap();
    b.subscribe("chat:2").await.unwrap();
    a.publish("chat:1", Bytes::from_static(b"hello"))
        .await
        .unwrap();
    let m = recv(&mut inbox, DEADLINE).await.unwrap();
    assert_eq!((&*m.channel, &m.payload[..]), ("chat:1", &b"hello"[..]));

    // After unsubscribing, chat:1 is no longer delivered: the marker on chat:2 comes first.
    b.unsubscribe("chat:1").await.unwrap();
    a.publish("chat:1", Bytes::from_static(b"gone"))
        .await
        .unwrap();
    a.publish("chat:2", Bytes::from_static(b"marker"))
        .await
        .unwrap();
    let m = recv(&mut inbox, DEADLINE).await.unwrap();
    assert_eq!((&*m.channel, &m.payload[..]), ("chat:2", &b"marker"[..]));

    // A large payload goes through intact.
    let big = Bytes::from(vec![7u8; 300_000]);
    a.publish("chat:2", big.clone()).await.unwrap();
    assert_eq!(recv(&mut inbox, DEADLINE).await.unwrap().payload, big);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_strategy_delivers_over_two_nodes() {
    let (r1, r2) = (redis(), redis());
    let urls = [r1.url(), r2.url()];
    let b = broker(fast_config(&urls));
    let mut inbox = b.messages().unwrap();
    wait_healthy(&b).await;
    b.subscribe("s").await.unwrap();
    for strategy in [
        PublishStrategy::ChannelAffine,
        PublishStrategy::Random,
        PublishStrategy::RoundRobin,
        PublishStrategy::Fastest,
    ] {
        let a = broker(fast_config(&urls).with_strategy(strategy));
        wait_healthy(&a).await;
        if strategy == PublishStrategy::Fastest {
            // Both nodes have a measured latency after their first PING.
            assert!(a.nodes().iter().all(|n| n.latency.is_some()));
        }
        if strategy == PublishStrategy::RoundRobin {
            let first = a.publish_targets("s");
            let second = a.publish_targets("s");
            assert_ne!(first, second, "round robin alternates");
        }
        let n = 300;
        publish_all(&a, "s", (0..n).map(|i| format!("{strategy:?}-{i}"))).await;
        let mut seen = Vec::new();
        while seen.len() < n {
            seen.push(recv_text(&mut inbox).await);
        }
        seen.sort();
        let mut want: Vec<String> = (0..n).map(|i| format!("{strategy:?}-{i}")).collect();
        want.sort();
        assert_eq!(seen, want, "{strategy:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_affine_keeps_10000_messages_in_order_over_two_nodes() {
    let (r1, r2) = (redis(), redis());
    let urls = [r1.url(), r2.url()];
    let a = broker(fast_config(&urls));
    let b = broker(fast_config(&urls));
    let mut inbox = b.messages().unwrap();
    wait_healthy(&a).await;
    wait_healthy(&b).await;
    // One channel homed on each Redis node, interleaved: both nodes carry traffic.
    let names: Vec<String> = a.nodes().iter().map(|n| n.name.to_string()).collect();
    let channels = [
        channel_homed_on(&a, &names[0], "room:a"),
        channel_homed_on(&a, &names[1], "room:b"),
    ];
    for ch in &channels {
        b.subscribe(ch).await.unwrap();
    }
    let n = 10_000;
    let mut pending = Vec::with_capacity(2 * n);
    for i in 0..n {
        for ch in &channels {
            pending.push(a.publish(ch, Bytes::from(i.to_string())));
        }
    }
    for p in pending {
        p.await.unwrap();
    }
    let mut next: HashMap<String, usize> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut received = 0;
    while received < 2 * n {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = recv(&mut inbox, left)
            .await
            .expect("all messages within 30 s");
        let seq: usize = std::str::from_utf8(&m.payload).unwrap().parse().unwrap();
        let expected = next.entry(m.channel.to_string()).or_insert(0);
        assert_eq!(seq, *expected, "out of order on {}", m.channel);
        *expected += 1;
        received += 1;
    }
    assert!(next.values().all(|&v| v == n));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redundancy_two_publishes_every_message_on_both_nodes() {
    let (r1, r2) = (redis(), redis());
    let urls = [r1.url(), r2.url()];
    let a = broker(fast_config(&urls).with_redundancy(2));
    let b = broker(fast_config(&urls));
    let mut inbox = b.messages().unwrap();
    wait_healthy(&a).await;
    wait_healthy(&b).await;
    assert_eq!(a.publish_targets("dup").len(), 2);
    b.subscribe("dup").await.unwrap();
    let n = 500;
    publish_all(&a, "dup", (0..n).map(|i| i.to_string())).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..2 * n {
        *counts.entry(recv_text(&mut inbox).await).or_default() += 1;
    }
    assert_eq!(counts.len(), n);
    assert!(
        counts.values().all(|&c| c == 2),
        "each payload exactly twice"
    );
    // Nothing more than the two copies.
    assert!(recv(&mut inbox, Duration::from_millis(300)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_node_at_run_time_subscribes_every_channel() {
    let (r1, r2) = (redis(), redis());
    let events = Events::default();
    let b = broker(fast_config(&[r1.url()]).with_on_health_change(events.callback()));
    let mut inbox = b.messages().unwrap();
    wait_healthy(&b).await;
    b.subscribe("late").await.unwrap();

    b.add_node(&r2.url()).unwrap();
    assert!(matches!(
        b.add_node(&r2.url()),
        Err(AddNodeError::DuplicateName(_))
    ));
    assert!(matches!(
        b.add_node("nope://x"),
        Err(AddNodeError::Config(_))
    ));
    let name = format!("127.0.0.1:{}", r2.port());
    let joined = events
        .wait_for("new node's subscriber connected", |e| {
            *e.node_name == *name
                && e.role == Role::Subscriber
                && e.event == HealthEventKind::Connected
        })
        .await;
    assert_eq!(joined.total_nodes, 2);
    wait_healthy(&b).await;
    // Its subscriber took the existing channel: a message published straight on the new
    // Redis node arrives.
    assert_eq!(
        redis_command(r2.port(), &["PUBLISH", "late", "via-r2"]),
        ":1"
    );
    assert_eq!(recv_text(&mut inbox).await, "via-r2");
    // And it is in the publish set: some channel is now homed on it.
    let ch = channel_homed_on(&b, &name, "new");
    b.subscribe(&ch).await.unwrap();
    b.publish(&ch, Bytes::from_static(b"home")).await.unwrap();
    assert_eq!(recv_text(&mut inbox).await, "home");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_and_db_from_the_url() {
    let redis = redis();
    let port = redis.port();
    assert_eq!(
        redis_command(port, &["CONFIG", "SET", "requirepass", "s3cret"]),
        "+OK"
    );
    let url = format!("redis://:s3cret@127.0.0.1:{port}/3");
    let a = broker(fast_config(&[url.as_str()]));
    let b = broker(fast_config(&[url.as_str()]));
    let mut inbox = b.messages().unwrap();
    wait_healthy(&a).await;
    wait_healthy(&b).await;
    b.subscribe("secure").await.unwrap();
    a.publish("secure", Bytes::from_static(b"ok"))
        .await
        .unwrap();
    assert_eq!(recv_text(&mut inbox).await, "ok");

    // A wrong password: both connections report the failure, nothing becomes healthy, and
    // a publish is refused at once.
    let events = Events::default();
    let wrong = broker(
        fast_config(&[format!("redis://:wrong@127.0.0.1:{port}/3")])
            .with_on_health_change(events.callback()),
    );
    for role in [Role::Publisher, Role::Subscriber] {
        let e = events
            .wait_for("connect failure", |e| {
                e.role == role && e.event == HealthEventKind::ConnectFailed
            })
            .await;
        assert!(!e.healthy);
        assert!(e.error.is_some(), "{e:?}");
    }
    assert!(!wrong.health().healthy);
    let started = Instant::now();
    assert!(matches!(
        wrong.publish("secure", Bytes::from_static(b"x")).await,
        Err(BrokerError::Unavailable)
    ));
    assert!(started.elapsed() < Duration::from_millis(100));
    // An out-of-range db is refused by SELECT and reported too.
    let events = Events::default();
    let _bad_db = broker(
        fast_config(&[format!("redis://:s3cret@127.0.0.1:{port}/99999")])
            .with_on_health_change(events.callback()),
    );
    let e = events
        .wait_for("SELECT refused", |e| {
            e.role == Role::Subscriber && e.event == HealthEventKind::ConnectFailed
        })
        .await;
    assert!(e.error.unwrap().contains("DB index"), "error names the db");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_healthy_node_resolves_unavailable_quickly() {
    let port = crosswire_testkit::free_port().unwrap();
    let events = Events::default();
    let b = broker(
        fast_config(&[format!("redis://127.0.0.1:{port}")])
            .with_on_health_change(events.callback()),
    );
    events
        .wait_for("connect failure", |e| {
            e.event == HealthEventKind::ConnectFailed
        })
        .await;
    let started = Instant::now();
    assert!(matches!(
        b.publish("x", Bytes::from_static(b"x")).await,
        Err(BrokerError::Unavailable)
    ));
    assert!(started.elapsed() < Duration::from_millis(100));
    // Subscribing still records the channel (made once a node comes up) but says so.
    assert!(matches!(
        b.subscribe("x").await,
        Err(BrokerError::Unavailable)
    ));
    let h = b.health();
    assert!(!h.healthy);
    assert_eq!(
        (h.healthy_publishers, h.healthy_subscribers, h.total),
        (0, 0, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_is_validated() {
    assert!(matches!(
        RedisBroker::new(crosswire_redis::RedisConfig::default()),
        Err(crosswire_redis::ConfigError::NoNodes)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_consumer_pushes_back_without_loss_or_false_alarms() {
    let redis = redis();
    let a = broker(fast_config(&[redis.url()]));
    let events = Events::default();
    // A tiny queue that the consumer leaves full for several ping periods.
    let b = broker(
        fast_config(&[redis.url()])
            .with_message_queue(16)
            .with_on_health_change(events.callback()),
    );
    let mut inbox = b.messages().unwrap();
    wait_healthy(&a).await;
    wait_healthy(&b).await;
    b.subscribe("slow").await.unwrap();
    let n = 5000;
    publish_all(&a, "slow", (0..n).map(|i| i.to_string())).await;
    // Not reading for longer than PING interval + timeout, on purpose: the subscriber is
    // blocked on the full queue and must neither time its PINGs out nor drop anything.
    tokio::time::sleep(PING * 4).await;
    assert!(b.health().healthy);
    assert!(
        events.all().iter().all(|e| e.healthy),
        "no unhealthy event while stalled: {:#?}",
        events.all()
    );
    for i in 0..n {
        assert_eq!(recv_text(&mut inbox).await, i.to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_subscription_is_reported_and_never_a_silent_wedge() {
    let redis = redis();
    // The default user may only use channels starting with "ok:".
    assert_eq!(
        redis_command(
            redis.port(),
            &["ACL", "SETUSER", "default", "resetchannels", "&ok:*"]
        ),
        "+OK"
    );
    let health = Events::default();
    let errors = Events::default();
    let b = broker(
        fast_config(&[redis.url()])
            .with_on_health_change(health.callback())
            .with_on_subscription_error(errors.callback()),
    );
    let mut inbox = b.messages().unwrap();
    wait_healthy(&b).await;
    b.subscribe("ok:1").await.unwrap();
    let refused = b.subscribe("secret").await;
    assert!(
        matches!(refused, Err(BrokerError::Backend(_))),
        "{refused:?}"
    );
    let e = errors
        .wait_for("subscription error", |e| {
            e.event == HealthEventKind::SubscribeFailed
        })
        .await;
    assert_eq!(
        (e.role, e.healthy, e.healthy_subscribers),
        (Role::Subscriber, false, 0)
    );
    assert!(e.error.as_deref().unwrap_or("").contains("NOPERM"), "{e:?}");
    assert!(
        !b.health().healthy,
        "not healthy while a subscription is refused"
    );
    // Dropping the refused channel lets the subscriber recover with the others.
    b.unsubscribe("secret").await.unwrap();
    health
        .wait_for("recovered", |e| {
            e.role == Role::Subscriber && e.event == HealthEventKind::Recovered
        })
        .await;
    wait_healthy(&b).await;
    b.publish("ok:1", Bytes::from_static(b"fine"))
        .await
        .unwrap();
    assert_eq!(recv_text(&mut inbox).await, "fine");
}

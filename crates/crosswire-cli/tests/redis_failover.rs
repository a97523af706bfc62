//! Redis failures under real `crosswire serve` nodes: one of two Redis nodes killed
//! mid-stream with each publish strategy, no loss and no duplicate with `--redundancy 2`,
//! per-room order over two Redis nodes with the default (channel-affine) strategy, the only
//! Redis node restarted, and compressed envelopes between nodes.
//!
//! Every test sends from a client on one node to a room with a receiver on another, so each
//! message crosses Redis. Nodes run with the crate defaults (PING every 5 s, 2 s timeout).

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{redis, sync_room, Raw, Relay, CLUSTER_STEP};
use crosswire_redis::{RedisBroker, RedisConfig};
use crosswire_testkit::RedisServer;
use serde_json::{json, Value};

const OK: fn() -> Value = || json!({"ok": true});

/// The Redis channel of every relay room (rooms of one namespace share a channel).
const RELAY_ROOM_CHANNEL: &str = "crosswire:ws:room:relay";

/// Detection of a dead Redis node must not take longer than the ping interval plus the ping
/// timeout (5 s + 2 s) and some slack.
const DETECTION_LIMIT: Duration = Duration::from_secs(10);

fn is_end(v: &Value) -> bool {
    v.get("end").is_some()
}

fn seq(v: &Value) -> Option<u64> {
    v.get("seq").and_then(Value::as_u64)
}

/// The Redis node (`127.0.0.1:<port>`) the channel-affine strategy homes `channel` on, as
/// the nodes compute it: asked of an in-process broker over the same URLs once both are
/// healthy.
async fn affine_home(urls: &[String], channel: &str) -> String {
    let broker = RedisBroker::new(RedisConfig::from_urls(urls).expect("urls")).expect("broker");
    let deadline = Instant::now() + CLUSTER_STEP;
    while !broker.nodes().iter().all(|n| n.publisher_healthy) {
        assert!(Instant::now() < deadline, "probe broker never healthy");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    broker.publish_targets(channel)[0].to_string()
}

/// Two Redis nodes and two crosswire nodes each given both, with `extra` arguments; waits
/// until both nodes see each other and both Redis nodes healthy.
async fn two_by_two(names: [&str; 2], extra: &[&str]) -> ([RedisServer; 2], Relay, Relay) {
    let (r1, r2) = (redis(), redis());
    let urls = [r1.url(), r2.url()];
    let n1 = Relay::node(names[0], &urls, extra).await;
    let n2 = Relay::node(names[1], &urls, extra).await;
    for n in [&n1, &n2] {
        let health = n.wait_cluster(&names, 2).await;
        assert_eq!(health["broker"]["total"], json!(2), "{health}");
    }
    ([r1, r2], n1, n2)
}

/// Sends `{"seq": i}` to `room` from `from`, in ticks of 5 ms carrying `rate / 200` messages
/// each (fire and forget), with a request every 500 messages so the sender never runs more
/// than that ahead of its node. `sent` counts what was sent; sending stops when it reaches
/// `stop_at`. Ends with an acknowledged `{"end": true}`.
fn paced_sender(
    mut from: Raw,
    room: &'static str,
    rate: u64,
    first: u64,
    sent: Arc<AtomicU64>,
    stop_at: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Raw> {
    tokio::spawn(async move {
        let per_tick = (rate / 200).max(1);
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        let mut i = first;
        'outer: loop {
            tick.tick().await;
            for _ in 0..per_tick {
                if i >= stop_at.load(Ordering::SeqCst) {
                    break 'outer;
                }
                let message =
                    json!({"event": "room", "payload": {"room": room, "data": {"seq": i}}});
                if (i + 1) % 500 == 0 {
                    // Acknowledged: the node has taken everything up to here.
                    let reply = from
                        .request("room", json!({"room": room, "data": {"seq": i}}))
                        .await;
                    assert_eq!(reply, OK());
                } else {
                    from.send_json(&message).await;
                }
                i += 1;
                sent.store(i, Ordering::SeqCst);
            }
        }
        let reply = from
            .request("room", json!({"room": room, "data": {"end": true}}))
            .await;
        assert_eq!(reply, OK());
        from
    })
}

/// Sends `{"seq": i}` for `range` with a request each (ordered, paced by round trips plus
/// `gap`).
async fn send_acked(from: &mut Raw, room: &str, range: std::ops::Range<u64>, gap: Duration) {
    for i in range {
        let reply = from
            .request("room", json!({"room": room, "data": {"seq": i}}))
            .await;
        assert_eq!(reply, OK());
        tokio::time::sleep(gap).await;
    }
}

/// One of two Redis nodes is killed while messages flow with `strategy`: both nodes notice
/// (health callback logged, `/healthz` counts drop to one) within the ping interval plus
/// timeout, and the room stream loses nothing, not even during the detection window: a
/// publish that fails on the dying node is retried on the survivor (duplicates that a
/// partly published batch makes are dropped by the envelope sequence check).
async fn one_of_two_redis_killed_mid_stream(strategy: &str) {
    one_of_two_redis_fails_mid_stream(strategy, Failure::Kill).await;
}

/// How the Redis node fails.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Failure {
    /// SIGKILL: its sockets close, the nodes notice at once.
    Kill,
    /// SIGSTOP: it hangs with its sockets open; only the PING timeout tells.
    Freeze,
}

/// The pid of the `redis-server` on `port` (from `INFO server`).
fn redis_pid(port: u16) -> u32 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect redis");
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    stream.write_all(b"INFO server\r\n").expect("write");
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while !text.contains("process_id:")
        || !text[text.find("process_id:").unwrap()..].contains("\r\n")
    {
        let n = stream.read(&mut buf).expect("read INFO");
        assert!(n > 0, "INFO answer ended early: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let rest = &text[text.find("process_id:").unwrap() + "process_id:".len()..];
    rest[..rest.find("\r\n").unwrap()].parse().expect("pid")
}

fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

async fn one_of_two_redis_fails_mid_stream(strategy: &str, failure: Failure) {
    let names = [
        format!("{strategy}-1").leak() as &str,
        format!("{strategy}-2").leak() as &str,
    ];
    let (mut redis, n1, n2) = two_by_two(names, &["--strategy", strategy]).await;
    let urls = [redis[0].url(), redis[1].url()];
    let home = affine_home(&urls, RELAY_ROOM_CHANNEL).await;
    let victim = if home.ends_with(&format!(":{}", redis[0].port())) {
        0
    } else {
        1
    };

    let mut sender = Raw::connect(&n1, "sender").await;
    let mut receiver = Raw::connect(&n2, "receiver").await;
    assert_eq!(receiver.request("join", json!({"room": "s"})).await, OK());
    sync_room(&mut sender, "s", &mut [&mut receiver]).await;

    // Both Redis nodes up: everything arrives (in any order for random and round-robin).
    send_acked(&mut sender, "s", 0..50, Duration::from_millis(2)).await;
    let mut before = HashSet::new();
    while before.len() < 50 {
        let payload = receiver
            .recv_msg_within(common::STEP)
            .await
            .unwrap_or_else(|| panic!("{strategy}: only {} of 50 before the kill", before.len()));
        if let Some(s) = seq(&payload) {
            assert!(before.insert(s), "{strategy}: {s} twice");
        }
    }

    // Keep sending at 200 msg/s while one Redis node dies.
    let collector = receiver.collect_until(Duration::from_secs(40), is_end);
    let sent = Arc::new(AtomicU64::new(50));
    let stop_at = Arc::new(AtomicU64::new(u64::MAX));
    let sending = paced_sender(
        sender,
        "s",
        200,
        50,
        Arc::clone(&sent),
        Arc::clone(&stop_at),
    );
    while sent.load(Ordering::SeqCst) < 100 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let frozen = match failure {
        Failure::Kill => {
            redis[victim].kill();
            None
        }
        Failure::Freeze => {
            let pid = redis_pid(redis[victim].port());
            signal(pid, "STOP");
            Some(pid)
        }
    };
    let killed = Instant::now();

    // Both nodes see one healthy publisher and subscriber left.
    let mut detection = Duration::ZERO;
    for n in [&n1, &n2] {
        n.wait_health("one Redis node left", DETECTION_LIMIT, |_, body| {
            body["broker"]["healthy_publishers"] == json!(1)
                && body["broker"]["healthy_subscribers"] == json!(1)
        })
        .await;
        detection = detection.max(killed.elapsed());
    }
    // Everything sent from now on must arrive.
    let recovery = sent.load(Ordering::SeqCst) + 1;
    eprintln!(
        "{strategy}: Redis node {home} (the room channel's affine home) failed ({failure:?}) after seq {}; both crosswire nodes noticed within {detection:?}; recovery point seq {recovery}",
        recovery.saturating_sub(1)
    );
    assert!(detection <= DETECTION_LIMIT, "{strategy}: {detection:?}");
    for n in [&n1, &n2] {
        n.wait_log("health callback: a Redis connection down", |l| {
            l.contains("redis health") && l.contains("healthy=false")
        })
        .await;
    }
    stop_at.store(recovery + 200, Ordering::SeqCst);
    let _sender = sending.await.expect("sender task");
    let (_receiver, got) = collector.await.expect("collector task");
    assert!(
        got.last().is_some_and(|(_, v)| is_end(v)),
        "{strategy}: end marker missing"
    );
    let seqs: Vec<u64> = got.iter().filter_map(|(_, v)| seq(v)).collect();
    let unique: HashSet<u64> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), seqs.len(), "{strategy}: duplicates delivered");
    let missing_after: Vec<u64> = (recovery..recovery + 200)
        .filter(|s| !unique.contains(s))
        .collect();
    let lost = (50..recovery).filter(|s| !unique.contains(s)).count();
    eprintln!(
        "{strategy}: {} of {} messages sent during the detection window lost; {} after it",
        lost,
        recovery - 50,
        missing_after.len()
    );
    assert!(
        missing_after.is_empty(),
        "{strategy}: lost after recovery: {missing_after:?}"
    );
    // The figure for one Redis node of two failing, redundancy 1: nothing lost.
    assert_eq!(lost, 0, "{strategy}: lost during the detection window");
    // The sender's node shows, per Redis node, the failed one down and the survivor up,
    // and every room message that arrived published through one of them.
    let metrics = n1.metrics().await;
    let survivor = format!("127.0.0.1:{}", redis[1 - victim].port());
    let get = |name: &str, node: &str, extra: &str| {
        let key = format!(r#"crosswire_{name}{{broker_node="{node}"{extra}}}"#);
        *metrics
            .get(&key)
            .unwrap_or_else(|| panic!("{strategy}: no {key} in /metrics"))
    };
    assert_eq!(
        get("broker_node_healthy", &home, r#",role="publisher""#),
        0.0
    );
    assert_eq!(
        get("broker_node_healthy", &survivor, r#",role="publisher""#),
        1.0
    );
    let published = get("broker_node_publishes_total", &home, "")
        + get("broker_node_publishes_total", &survivor, "");
    let delivered = before.len() + unique.len();
    assert!(
        published >= delivered as f64,
        "{strategy}: {published} published, {delivered} delivered"
    );
    assert!(get("broker_node_publish_seconds_count", &survivor, "") > 0.0);
    if let Some(pid) = frozen {
        // Let it run again so the guard's SIGKILL finds a normal process.
        signal(pid, "CONT");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_channel_affine() {
    one_of_two_redis_killed_mid_stream("affine").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_random() {
    one_of_two_redis_killed_mid_stream("random").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_round_robin() {
    one_of_two_redis_killed_mid_stream("round-robin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_fastest() {
    one_of_two_redis_killed_mid_stream("fastest").await;
}

/// A hung Redis node (SIGSTOP: sockets stay open, nothing answers) is left within the ping
/// interval plus the ping timeout (5 s + 2 s by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_from_a_hung_redis_node() {
    one_of_two_redis_fails_mid_stream("affine", Failure::Freeze).await;
}

/// `--redundancy 2`: 10,000 room messages at 2,000 msg/s from node 1 to a receiver on node 2;
/// one of the two Redis nodes killed after about 3,000. The receiver gets exactly 10,000
/// messages, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redundancy_two_loses_and_duplicates_nothing_when_a_redis_node_dies() {
    const TOTAL: u64 = 10_000;
    let (mut redis, n1, n2) = two_by_two(["red-1", "red-2"], &["--redundancy", "2"]).await;
    let mut sender = Raw::connect(&n1, "sender").await;
    let mut receiver = Raw::connect(&n2, "receiver").await;
    assert_eq!(receiver.request("join", json!({"room": "z"})).await, OK());
    sync_room(&mut sender, "z", &mut [&mut receiver]).await;

    let collector = receiver.collect_until(Duration::from_secs(60), is_end);
    let sent = Arc::new(AtomicU64::new(0));
    let stop_at = Arc::new(AtomicU64::new(TOTAL));
    let started = Instant::now();
    let sending = paced_sender(
        sender,
        "z",
        2_000,
        0,
        Arc::clone(&sent),
        Arc::clone(&stop_at),
    );
    while sent.load(Ordering::SeqCst) < 3_000 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    redis[0].kill();
    let killed_at = sent.load(Ordering::SeqCst);
    let _sender = sending.await.expect("sender task");
    let send_time = started.elapsed();
    let (_receiver, got) = collector.await.expect("collector task");
    assert!(got.last().is_some_and(|(_, v)| is_end(v)), "end missing");

    let seqs: Vec<u64> = got.iter().filter_map(|(_, v)| seq(v)).collect();
    let unique: HashSet<u64> = seqs.iter().copied().collect();
    let (_, health) = n2.healthz().await;
    eprintln!(
        "redundancy 2: Redis node killed after {killed_at} sent; {} received, {} unique, {} expected; sent in {send_time:?}; duplicate envelopes dropped by node 2: {}",
        seqs.len(),
        unique.len(),
        TOTAL,
        health["stats"]["envelopes_duplicate"]
    );
    assert_eq!(unique.len(), seqs.len(), "a message was delivered twice");
    let missing: Vec<u64> = (0..TOTAL).filter(|s| !unique.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "{} lost: {:?}…",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    assert_eq!(seqs.len() as u64, TOTAL);
}

/// The default strategy keeps one room's messages in order over two Redis nodes: 10,000
/// sequenced messages reach two receivers on the other node and one on the sender's node in
/// exactly the order sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_order_is_kept_over_two_redis_nodes_with_the_default_strategy() {
    const TOTAL: u64 = 10_000;
    let (_redis, n1, n2) = two_by_two(["ord-1", "ord-2"], &[]).await;
    let mut sender = Raw::connect(&n1, "sender").await;
    let mut far1 = Raw::connect(&n2, "far1").await;
    let mut far2 = Raw::connect(&n2, "far2").await;
    let mut near = Raw::connect(&n1, "near").await;
    for r in [&mut far1, &mut far2, &mut near] {
        assert_eq!(r.request("join", json!({"room": "o"})).await, OK());
    }
    sync_room(&mut sender, "o", &mut [&mut far1, &mut far2, &mut near]).await;

    let collectors: Vec<_> = [far1, far2, near]
        .into_iter()
        .map(|r| r.collect_until(Duration::from_secs(60), is_end))
        .collect();
    let sending = paced_sender(
        sender,
        "o",
        5_000,
        0,
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(TOTAL)),
    );
    let _sender = sending.await.expect("sender task");
    for c in collectors {
        let (r, got) = c.await.expect("collector task");
        let seqs: Vec<u64> = got.iter().filter_map(|(_, v)| seq(v)).collect();
        let first_out_of_order = seqs.windows(2).position(|w| w[1] != w[0] + 1);
        assert_eq!(
            first_out_of_order, None,
            "{}: out of order at index {first_out_of_order:?}",
            r.id
        );
        assert_eq!(seqs.len() as u64, TOTAL, "{}: count", r.id);
        assert_eq!(seqs.first(), Some(&0), "{}", r.id);
        eprintln!("{}: {} messages in order", r.id, seqs.len());
    }
}

/// The only Redis node dies and comes back on the same port: both nodes report the broker
/// unhealthy (503), then healthy again once their subscriptions are re-made, and delivery of
/// every kind resumes with no warm-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_brings_subscriptions_back() {
    let mut redis = redis();
    let urls = [redis.url()];
    let n1 = Relay::node("rs-1", &urls, &[]).await;
    let n2 = Relay::node("rs-2", &urls, &[]).await;
    for n in [&n1, &n2] {
        n.wait_cluster(&["rs-1", "rs-2"], 1).await;
    }
    let mut sender = Raw::connect(&n1, "sender").await;
    let mut receiver = Raw::connect(&n2, "receiver").await;
    assert_eq!(receiver.request("join", json!({"room": "d"})).await, OK());
    sync_room(&mut sender, "d", &mut [&mut receiver]).await;

    redis.kill();
    for n in [&n1, &n2] {
        let (body, took) = n
            .wait_health("broker unhealthy", DETECTION_LIMIT, |status, body| {
                status == 503 && body["broker"]["healthy"] == json!(false)
            })
            .await;
        eprintln!("{}: unhealthy after {took:?}: {}", n.addr, body["broker"]);
    }
    let outage = Instant::now();
    redis
        .restart()
        .expect("restart redis-server on the same port");
    for n in [&n1, &n2] {
        n.wait_health("broker healthy again", CLUSTER_STEP, |status, body| {
            status == 200
                && body["broker"]["healthy_publishers"] == json!(1)
                && body["broker"]["healthy_subscribers"] == json!(1)
        })
        .await;
    }
    eprintln!(
        "both nodes healthy {:?} after the restart",
        outage.elapsed()
    );

    // Healthy means every subscription is confirmed again: the room (subscribed on a join,
    // before the outage) delivers at once.
    let data = json!({"after": "restart", "kind": "room"});
    assert_eq!(
        sender
            .request("room", json!({"room": "d", "data": data}))
            .await,
        OK()
    );
    receiver.expect_msg(&data).await;
    let data = json!({"after": "restart", "kind": "all"});
    assert_eq!(sender.request("all", json!({"data": data})).await, OK());
    sender.expect_msg(&data).await;
    receiver.expect_msg(&data).await;
    let data = json!({"after": "restart", "kind": "to"});
    assert_eq!(
        sender
            .request("to", json!({"id": "receiver", "data": data}))
            .await,
        OK()
    );
    receiver.expect_msg(&data).await;
    receiver.expect_nothing_more(&mut sender).await;
    // And the nodes find each other again.
    for n in [&n1, &n2] {
        n.wait_cluster(&["rs-1", "rs-2"], 1).await;
    }
}

/// Nodes started with `--compress-above 256` deliver a 50 KB payload (and a small one)
/// across nodes intact; a node without compression reports the mismatch in its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_envelopes_between_nodes() {
    let redis = redis();
    let urls = [redis.url()];
    let compress = ["--compress-above", "256"];
    let n1 = Relay::node("cz-1", &urls, &compress).await;
    let n2 = Relay::node("cz-2", &urls, &compress).await;
    for n in [&n1, &n2] {
        n.wait_cluster(&["cz-1", "cz-2"], 1).await;
    }
    let mut sender = Raw::connect(&n1, "sender").await;
    let mut receiver = Raw::connect(&n2, "receiver").await;
    assert_eq!(receiver.request("join", json!({"room": "c"})).await, OK());
    sync_room(&mut sender, "c", &mut [&mut receiver]).await;

    // 50 KB of varied text (not one repeated byte), so the compressed envelope is a real
    // LZ4 stream.
    let big: String = (0..50_000u32)
        .map(|i| char::from(b'a' + ((i * 7919 + i / 13) % 26) as u8))
        .collect();
    let big = json!({"text": big, "n": 1});
    for (kind, request) in [
        ("to", json!({"id": "receiver", "data": big})),
        ("room", json!({"room": "c", "data": big})),
        ("to", json!({"id": "receiver", "data": "small"})),
    ] {
        assert_eq!(sender.request(kind, request.clone()).await, OK());
        receiver.expect_msg(&request["data"]).await;
    }
    receiver.expect_nothing_more(&mut sender).await;
    let (_, health) = n2.healthz().await;
    assert!(
        health["stats"]["remote_deliveries"].as_u64() >= Some(3),
        "{health}"
    );

    // A node with compression off cannot read compressed envelopes: it says so.
    let plain = Relay::node("cz-3", &urls, &[]).await;
    plain
        .wait_health("cz-3 sees the others", CLUSTER_STEP, |_, body| {
            body["nodes"] == json!(["cz-1", "cz-2", "cz-3"])
        })
        .await;
    assert_eq!(sender.request("all", json!({"data": big})).await, OK());
    plain
        .wait_log("a compression mismatch warning", |l| {
            l.contains("compression mismatch")
        })
        .await;
}

/// A room's history lives on one Redis node (its home). The home hangs (SIGSTOP) while the
/// room goes on: its messages move to the other Redis node. When the home comes back with
/// its old history intact, a client holding a position of before must not recover from it
/// (that history lacks what was sent meanwhile): the brokers bumped the home's generation
/// on reconnecting, so the epoch differs and the client is told `recovered: false`. A
/// client that followed along gets a position of the new epoch and recovers from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_home_that_hung_does_not_recover_positions_from_before() {
    let names = ["hist-1", "hist-2"];
    let (redis, n1, n2) = two_by_two(names, &["--history"]).await;
    let urls = [redis[0].url(), redis[1].url()];
    let home = affine_home(&urls, "crosswire:ws:history:{relay/h}").await;
    let victim = usize::from(!home.ends_with(&format!(":{}", redis[0].port())));
    let mut sender = Raw::connect(&n1, "hs").await;
    let mut away = Raw::connect(&n2, "ha").await;
    let joined = away.request("join", json!({"room": "h"})).await;
    assert_eq!(joined["recovered"], json!(false), "{joined}");
    send_acked(&mut sender, "h", 0..10, Duration::ZERO).await;
    let mut last = Value::Null;
    for _ in 0..10 {
        last = away.recv_json().await;
    }
    let before = json!({"offset": last["offset"], "epoch": last["epoch"]});
    drop(away);

    let pid = redis_pid(redis[victim].port());
    signal(pid, "STOP");
    for n in [&n1, &n2] {
        n.wait_health("the home hung", DETECTION_LIMIT, |_, body| {
            body["broker"]["healthy_publishers"] == json!(1)
        })
        .await;
    }
    let mut follower = Raw::connect(&n2, "hf").await;
    let joined = follower.request("join", json!({"room": "h"})).await;
    assert_ne!(
        joined["epoch"], before["epoch"],
        "another node, another epoch"
    );
    send_acked(&mut sender, "h", 10..20, Duration::ZERO).await;
    for _ in 10..20 {
        follower.recv_json().await;
    }
    signal(pid, "CONT");
    for n in [&n1, &n2] {
        n.wait_health("the home back", CLUSTER_STEP, |_, body| {
            body["broker"]["healthy_publishers"] == json!(2)
        })
        .await;
    }
    send_acked(&mut sender, "h", 20..21, Duration::ZERO).await;
    let back = Raw::connect(&n1, "ha")
        .await
        .request("join", json!({"room": "h", "since": before}))
        .await;
    assert_eq!(back["recovered"], json!(false), "{back}");
    assert_ne!(back["epoch"], before["epoch"], "{back}");
    drop(redis);
}

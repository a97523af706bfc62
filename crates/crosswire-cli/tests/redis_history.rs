//! History and recovery through the relay contract, over real `crosswire serve --history`
//! nodes and a real `redis-server`: a client away for two seconds comes back on another
//! node with every message once and in order; a Redis restarted without persistence gives a
//! new epoch and `recovered: false`; the clients of a node killed with SIGKILL reconnect
//! elsewhere and recover.

mod common;

use std::time::Duration;

use common::{redis, Incoming, Raw, Relay, STEP};
use serde_json::{json, Value};
use tokio::time::Instant;

/// History flags of every node here: room history well above what a test sends.
const HISTORY: [&str; 3] = ["--history", "--history-size", "5000"];

/// One `msg` as a client got it: its payload (a number), offset and epoch.
#[derive(Debug, Clone, PartialEq)]
struct Got {
    n: u64,
    offset: u64,
    epoch: String,
}

impl Got {
    fn since(&self) -> Value {
        json!({"offset": self.offset, "epoch": self.epoch})
    }
}

/// Reads `msg` events until one with payload `last` (or nothing comes for [`STEP`]).
async fn read_until(client: &mut Raw, last: u64) -> Vec<Got> {
    let mut got: Vec<Got> = Vec::new();
    while got.last().is_none_or(|g| g.n < last) {
        let Some(Incoming::Text(text)) = client.recv_within(STEP).await else {
            break;
        };
        let v: Value = serde_json::from_str(&text).expect("json");
        if v["event"] != "msg" {
            continue;
        }
        got.push(Got {
            n: v["payload"].as_u64().expect("a number"),
            offset: v["offset"].as_u64().expect("an offset"),
            epoch: v["epoch"].as_str().expect("an epoch").to_string(),
        });
    }
    got
}

/// Sends `room {"room", "data": n}` for `n` in `from..=to`, one every `every`, from `client`.
fn send_numbers(
    mut client: Raw,
    room: &str,
    from: u64,
    to: u64,
    every: Duration,
) -> tokio::task::JoinHandle<Raw> {
    let room = room.to_string();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        for n in from..=to {
            tick.tick().await;
            client
                .send_json(&json!({"event": "room", "payload": {"room": room, "data": n}}))
                .await;
        }
        client
    })
}

/// Checks that `got` holds `from..=to` once each, in order, with consecutive offsets.
fn assert_complete(got: &[Got], from: u64, to: u64) {
    let numbers: Vec<u64> = got.iter().map(|g| g.n).collect();
    assert_eq!(
        numbers,
        (from..=to).collect::<Vec<_>>(),
        "every message once, in order"
    );
    for pair in got.windows(2) {
        assert_eq!(
            pair[1].offset,
            pair[0].offset + 1,
            "offsets without a gap: {pair:?}"
        );
        assert_eq!(pair[1].epoch, pair[0].epoch);
    }
}

/// A client on node A loses its connection for 2 s while 1,000 messages flow to its room
/// from node B; back on node C with its last position, it has every message exactly once
/// and in order, `recovered: true`. Then Redis restarts without persistence: the history
/// is gone, the epoch changes, and a client coming back is told `recovered: false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_away_two_seconds_recovers_on_another_node_until_redis_loses_history() {
    let mut redis = redis();
    let urls = [redis.url()];
    let a = Relay::node("ha", &urls, &HISTORY).await;
    let b = Relay::node("hb", &urls, &HISTORY).await;
    let c = Relay::node("hc", &urls, &HISTORY).await;
    for n in [&a, &b, &c] {
        n.wait_cluster(&["ha", "hb", "hc"], 1).await;
    }
    let mut x = Raw::connect(&a, "x").await;
    let joined = x.request("join", json!({"room": "lobby"})).await;
    assert_eq!(joined["ok"], true);
    assert_eq!(joined["stream"], "relay/lobby");
    assert_eq!(joined["recovered"], false);
    let epoch = joined["epoch"].as_str().expect("an epoch").to_string();

    let sender = send_numbers(
        Raw::connect(&b, "s").await,
        "lobby",
        1,
        1000,
        Duration::from_millis(3),
    );
    let before = read_until(&mut x, 300).await;
    assert!(before.len() >= 300, "{} before the outage", before.len());
    drop(x);
    let away = Instant::now();
    tokio::time::sleep_until(away + Duration::from_secs(2)).await;
    let last = before.last().expect("one").clone();
    let mut x = Raw::connect(&c, "x").await;
    let back = x
        .request("join", json!({"room": "lobby", "since": last.since()}))
        .await;
    assert_eq!(back["recovered"], true, "{back}");
    assert_eq!(back["epoch"], epoch.as_str());
    let after = read_until(&mut x, 1000).await;
    let sender = sender.await.expect("sender");
    let all: Vec<Got> = before.into_iter().chain(after).collect();
    assert_complete(&all, 1, 1000);
    assert_eq!(all[0].epoch, epoch);
    let metrics = c.metrics().await;
    assert_eq!(
        metrics.get("crosswire_recoveries_total"),
        Some(&1.0),
        "{metrics:?}"
    );

    // Redis restarts with nothing: every node reconnects, and the first message or join
    // makes a new epoch.
    redis.restart().expect("redis restarts");
    for n in [&a, &b, &c] {
        n.wait_cluster(&["ha", "hb", "hc"], 1).await;
    }
    let last = all.last().expect("one").clone();
    drop(x);
    let mut x = Raw::connect(&a, "x").await;
    let back = x
        .request("join", json!({"room": "lobby", "since": last.since()}))
        .await;
    assert_eq!(back["recovered"], false, "{back}");
    assert_ne!(back["epoch"], epoch.as_str(), "a new epoch: {back}");
    let new_epoch = back["epoch"].as_str().expect("an epoch").to_string();
    let sender = send_numbers(sender, "lobby", 1001, 1001, Duration::from_millis(1));
    let live = read_until(&mut x, 1001).await;
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0].epoch, new_epoch);
    assert_eq!(
        live[0].offset,
        back["offset"].as_u64().expect("an offset") + 1
    );
    drop(sender);
}

/// Clients of a node killed with SIGKILL while they are in a room reconnect to another node
/// with their last positions and recover everything sent meanwhile, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_of_a_killed_node_recover_on_another() {
    let redis = redis();
    let urls = [redis.url()];
    let mut a = Relay::node("ka", &urls, &HISTORY).await;
    let b = Relay::node("kb", &urls, &HISTORY).await;
    for n in [&a, &b] {
        n.wait_cluster(&["ka", "kb"], 1).await;
    }
    let ids = ["k1", "k2", "k3"];
    let mut clients = Vec::new();
    for id in ids {
        let mut client = Raw::connect(&a, id).await;
        let joined = client.request("join", json!({"room": "game"})).await;
        assert_eq!(joined["ok"], true, "{joined}");
        clients.push(client);
    }
    let sender = send_numbers(
        Raw::connect(&b, "s").await,
        "game",
        1,
        600,
        Duration::from_millis(4),
    );
    let mut seen = Vec::new();
    for client in &mut clients {
        seen.push(read_until(client, 100).await);
    }
    a.kill();
    drop(clients);
    for (id, before) in ids.iter().zip(seen) {
        let last = before.last().expect("one").clone();
        let mut client = Raw::connect(&b, id).await;
        let back = client
            .request("join", json!({"room": "game", "since": last.since()}))
            .await;
        assert_eq!(back["recovered"], true, "{id}: {back}");
        let after = read_until(&mut client, 600).await;
        let all: Vec<Got> = before.into_iter().chain(after).collect();
        assert_complete(&all, 1, 600);
    }
    sender.await.expect("sender");
}

/// With its only Redis down, a node still delivers what is sent to a room with history to
/// its own members: live, without a position (it is in no history), and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_a_recorded_room_still_reaches_this_node_live() {
    let mut redis = redis();
    let urls = [redis.url()];
    let a = Relay::node("da", &urls, &HISTORY).await;
    a.wait_cluster(&["da"], 1).await;
    let mut x = Raw::connect(&a, "x").await;
    let joined = x.request("join", json!({"room": "lobby"})).await;
    assert_eq!(joined["ok"], true);
    redis.kill();
    a.wait_health("Redis down", STEP * 3, |_, body| {
        body["broker"]["healthy_publishers"] == json!(0)
    })
    .await;
    let mut sender = Raw::connect(&a, "s").await;
    let sent = sender
        .request("room", json!({"room": "lobby", "data": "during"}))
        .await;
    assert_eq!(sent["ok"], true);
    let got = loop {
        let v = x.recv_json().await;
        if v["event"] == "msg" {
            break v;
        }
    };
    assert_eq!(got, json!({"event": "msg", "payload": "during"}));
    let metrics = a.metrics().await;
    let errors = metrics.get("crosswire_history_errors_total").copied();
    assert!(errors.is_some_and(|n| n >= 1.0), "{metrics:?}");
}

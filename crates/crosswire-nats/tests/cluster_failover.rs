//! Failover over a real three-server NATS cluster: two crosswire nodes, `a` on NATS server 0
//! and `b` on server 1; a client on `b` in a room that `a` sends a numbered stream to (one
//! message every 5 ms, 2,000 in all); mid-stream the NATS server of the sender (first test)
//! or of the receiver (second test) is killed with SIGKILL.
//!
//! What must hold: no duplicate and no reordering; every message sent once the cut-off
//! node's client is connected again (to a surviving server) plus a margin arrives; whatever
//! is lost was sent within the outage window; and at most [`MAX_LOST`] are lost. NATS core is
//! at-most-once: what sits in the killed server's buffers (or the client's socket) when it
//! dies is gone, and while the sender is disconnected the broker refuses to publish; while
//! the receiver is disconnected its subscriptions are nowhere, so the survivors drop what
//! they get for it. The lost numbers need not be contiguous: a publish the broker accepted
//! while the client still thought it was connected waits in async-nats' command queue
//! through the reconnect and arrives, while the next ones, refused during the reconnect, do
//! not. Afterwards, server-to-server requests still work both ways.
//!
//! # Which server a node is on
//! async-nats shuffles the URLs it is given before each (re)connect unless
//! `retain_servers_order` is set, and [`NatsBroker`] does not set it: a configuration
//! listing all three servers would put a node on a random one. So each node is given the
//! one server it should start on; async-nats adds the others from that server's `INFO`
//! (`connect_urls`, filled in once the routes are up, which [`NatsCluster::start`] waits
//! for) and fails over to them. Each node's client sets its name, and the test checks on the
//! servers' `/connz` where each one is, before and after the kill.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crosswire::{Broker, Room, Server, ServerEmitOptions};
use crosswire_nats::{NatsBroker, NatsConfig};
use crosswire_testkit::cluster_suite::{self, answer_who, ask_who, node_config, wait_nodes, WAIT};
use crosswire_testkit::{
    install_relay, serve_on_free_port, wait_until, NatsCluster, RawClient, RELAY_NAMESPACE,
};

/// Messages in the stream.
const MESSAGES: u64 = 2_000;
/// One message every…
const EVERY: Duration = Duration::from_millis(5);
/// The NATS server is killed once this many messages are sent (3 s into the stream).
const KILL_AFTER: u64 = 600;
/// Messages sent this long before the kill may still be in flight when it hits (queued in
/// the node, the client's socket, the killed server's buffers); they may be lost. In-flight
/// latency on loopback is about a millisecond; this is generous for a loaded machine.
const BEFORE_KILL: Duration = Duration::from_millis(250);
/// Messages sent this long after the cut-off client is connected again must all arrive: the
/// re-subscriptions (written right after the connection is up, before any new publish) and
/// their propagation over the routes to the sender's server take milliseconds.
const MARGIN: Duration = Duration::from_millis(500);
/// The cut-off client must be connected to a surviving server within this: the killed
/// server's socket closes at once (RST/EOF), a retry to it is refused at once, and
/// async-nats waits 0, 2, 4, … ms between attempts.
const RECONNECT_BOUND: Duration = Duration::from_secs(5);
/// Most messages lost. What is lost is what was in flight at the kill (a few messages at
/// 5 ms each) plus what was sent while the cut-off client was away (its reconnect takes
/// milliseconds on loopback): in practice a handful. 200 is one second of the stream,
/// room for a loaded machine, and far below the 1,400 sent after the kill.
const MAX_LOST: usize = 200;

/// Whose NATS server is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    /// Node `a`'s (server 0): the sender is cut off.
    Sender,
    /// Node `b`'s (server 1): the receiver is cut off.
    Receiver,
}

fn cluster() -> NatsCluster {
    assert!(
        NatsCluster::available(),
        "nats-server is not installed (scripts/test.sh installs Debian's nats-server)"
    );
    NatsCluster::start().expect("a NATS cluster starts")
}

/// A node named `name` whose NATS client (named `name` too) is given only `url`.
async fn node(name: &str, url: String) -> (Server, Arc<NatsBroker>) {
    let config = NatsConfig::from_urls([url])
        .expect("url")
        .with_client_name(name);
    let broker = Arc::new(NatsBroker::connect(config).await.expect("client"));
    let as_broker: Arc<dyn Broker> = broker.clone();
    let server = Server::builder(node_config(name).with_preset_namespaces([RELAY_NAMESPACE]))
        .broker(as_broker)
        .build()
        .expect("valid config");
    (server, broker)
}

/// Which server client `name` is on, asked of the servers' `/connz` (blocking HTTP).
fn server_of(cluster: &NatsCluster, name: &str) -> Option<usize> {
    tokio::task::block_in_place(|| cluster.server_of(name))
}

/// When the watched client was seen disconnected first and connected again next.
#[derive(Debug, Default)]
struct Seen {
    down: Option<Instant>,
    up: Option<Instant>,
}

/// Polls `broker`'s connection state every millisecond until `stop`, recording the first
/// down and the next up (for the report; the assertions use what `/connz` shows).
fn watch(broker: Arc<NatsBroker>, stop: Arc<AtomicBool>) -> Arc<Mutex<Seen>> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record = Arc::clone(&seen);
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let connected = broker.is_connected();
            let mut seen = record.lock().unwrap();
            match (seen.down, seen.up, connected) {
                (None, _, false) => seen.down = Some(Instant::now()),
                (Some(_), None, true) => seen.up = Some(Instant::now()),
                _ => {}
            }
            drop(seen);
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    seen
}

async fn failover(victim: Victim) {
    let mut nats = cluster();
    let (a, a_broker) = node("a", nats.url(0)).await;
    let (b, b_broker) = node("b", nats.url(1)).await;
    wait_nodes(&[&a, &b], &["a", "b"]).await;
    assert_eq!(server_of(&nats, "a"), Some(0), "a starts on server 0");
    assert_eq!(server_of(&nats, "b"), Some(1), "b starts on server 1");
    let (name, killed, broker) = match victim {
        Victim::Sender => ("a", 0, Arc::clone(&a_broker)),
        Victim::Receiver => ("b", 1, Arc::clone(&b_broker)),
    };

    install_relay(&b);
    let addr = serve_on_free_port(&b).await;
    let mut x = RawClient::connect_bound(addr, "x").await.expect("connect");
    let room = Room::new(RELAY_NAMESPACE, "stream");
    b.join(&room, "x");
    // The path works before the stream starts.
    a.to_room(&room).emit("msg", &0).expect("emit");
    let first = x.recv_json(WAIT).await.expect("message 0 arrives");
    assert_eq!(first["payload"], 0, "{first}");

    let receiver = tokio::spawn(async move {
        let mut got: Vec<u64> = Vec::new();
        while let Some(v) = x.recv_json(WAIT).await {
            if v["event"] != "msg" {
                continue;
            }
            let n = v["payload"].as_u64().expect("a number");
            got.push(n);
            if n == MESSAGES {
                break;
            }
        }
        got
    });
    let progress = Arc::new(AtomicU64::new(0));
    let sender = {
        let (a, room, progress) = (a.clone(), room.clone(), Arc::clone(&progress));
        tokio::spawn(async move {
            let mut sent_at = Vec::with_capacity(MESSAGES as usize);
            let mut tick = tokio::time::interval(EVERY);
            for n in 1..=MESSAGES {
                tick.tick().await;
                sent_at.push(Instant::now());
                a.to_room(&room).emit("msg", &n).expect("emit");
                progress.store(n, Ordering::Release);
            }
            sent_at
        })
    };

    assert!(
        wait_until(WAIT, || progress.load(Ordering::Acquire) >= KILL_AFTER).await,
        "the stream did not get going"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let seen = watch(Arc::clone(&broker), Arc::clone(&stop));
    let killed_at = Instant::now();
    tokio::task::block_in_place(|| nats.kill(killed));
    // Connected again, and to a surviving server.
    assert!(
        wait_until(RECONNECT_BOUND, || broker.is_connected()
            && server_of(&nats, name).is_some_and(|s| s != killed))
        .await,
        "{name}'s client did not reconnect to a surviving server within {RECONNECT_BOUND:?}"
    );
    let reconnected_at = Instant::now();
    let now_on = server_of(&nats, name).expect("on a server");

    let sent_at = tokio::time::timeout(WAIT * 2, sender)
        .await
        .expect("the stream ends")
        .expect("sender");
    let got = tokio::time::timeout(WAIT * 2, receiver)
        .await
        .expect("the receiver ends")
        .expect("receiver");
    stop.store(true, Ordering::Relaxed);
    let seen = std::mem::take(&mut *seen.lock().unwrap());

    // No duplicate, no reordering.
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "duplicated or out of order: {:?}",
        got.windows(2).find(|w| w[0] >= w[1])
    );
    assert!(got.iter().all(|n| (1..=MESSAGES).contains(n)));
    let received: HashSet<u64> = got.iter().copied().collect();
    let lost: Vec<u64> = (1..=MESSAGES).filter(|n| !received.contains(n)).collect();
    let sent = |n: u64| sent_at[usize::try_from(n - 1).expect("index")];
    let (window_start, window_end) = (killed_at - BEFORE_KILL, reconnected_at + MARGIN);
    let in_window = |n: &u64| (window_start..=window_end).contains(&sent(*n));
    let lost_before: Vec<u64> = lost
        .iter()
        .copied()
        .filter(|&n| sent(n) < window_start)
        .collect();
    let lost_after: Vec<u64> = lost
        .iter()
        .copied()
        .filter(|&n| sent(n) > window_end)
        .collect();
    let window_messages = (1..=MESSAGES).filter(in_window).count();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let since_kill = |n: u64| ms(sent(n).saturating_duration_since(killed_at));
    eprintln!(
        "{victim:?}: {name} moved from server {killed} to {now_on}; seen down {:?} ms and up \
         {:?} ms after the kill, /connz shows it {:.1} ms after; lost {} of {MESSAGES} ({:?}), \
         sent {:.1} to {:.1} ms after the kill; {window_messages} messages sent in the \
         window",
        seen.down
            .map(|t| ms(t.saturating_duration_since(killed_at))),
        seen.up.map(|t| ms(t.saturating_duration_since(killed_at))),
        ms(reconnected_at - killed_at),
        lost.len(),
        &lost[..lost.len().min(20)],
        lost.first().map_or(0.0, |&n| since_kill(n)),
        lost.last().map_or(0.0, |&n| since_kill(n)),
    );
    assert!(
        lost_before.is_empty(),
        "lost though sent more than {BEFORE_KILL:?} before the kill: {lost_before:?}"
    );
    assert!(
        lost_after.is_empty(),
        "lost though sent more than {MARGIN:?} after the reconnect ({:.1} ms after the kill): \
         {lost_after:?}",
        ms(reconnected_at - killed_at)
    );
    assert!(lost.iter().all(in_window));
    assert!(
        lost.len() <= MAX_LOST,
        "lost {} messages, more than {MAX_LOST}: {lost:?}",
        lost.len()
    );
    assert_eq!(got.last(), Some(&MESSAGES), "the last message arrives");
    assert!(
        sent(KILL_AFTER) < killed_at && received.contains(&(KILL_AFTER - 100)),
        "the kill hit mid-stream, after messages that arrived"
    );

    // The cluster still carries server-to-server requests, both ways.
    wait_nodes(&[&a, &b], &["a", "b"]).await;
    answer_who(&a);
    answer_who(&b);
    assert_eq!(ask_who(&a, ServerEmitOptions::new()).await, ["a", "b"]);
    assert_eq!(ask_who(&a, ServerEmitOptions::new().to(["b"])).await, ["b"]);
    assert_eq!(ask_who(&b, ServerEmitOptions::new().to(["a"])).await, ["a"]);
    assert_eq!(
        ask_who(&b, ServerEmitOptions::new().except_self()).await,
        ["a"]
    );
    // A request to a client on the other node, answered by it (a gets the relay here).
    cluster_suite::request_reaches_any_id(&b, &a).await;
    assert!(a_broker.is_connected() && b_broker.is_connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_senders_nats_server_loses_only_the_outage_window() {
    failover(Victim::Sender).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_receivers_nats_server_loses_only_the_outage_window() {
    failover(Victim::Receiver).await;
}

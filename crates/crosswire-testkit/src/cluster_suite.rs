//! The building blocks of the cluster scenarios: node configurations, discovery waits, and
//! the scenarios that run on nodes a caller made (server-to-server requests between nodes
//! named `a`, `b` and `c` that already see each other, the login race), or on nodes of a
//! [`Fixture`] (presence, history and recovery). [`mod@crate::broker_suite`] runs them all for
//! every broker; the failover tests of each broker reuse some of them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crosswire::{
    Ack, Data, FromNode, Reply, Server, ServerConfig, ServerEmitOptions, ServerResults,
};
use serde_json::{json, Value};

use crate::fixture::Fixture;
use crate::{serve_on_free_port, wait_until, RawClient};

/// Upper bound of every wait in these scenarios.
pub const WAIT: Duration = Duration::from_secs(15);

/// A node configuration with fast discovery (announce every 100 ms, expire after 2 s) and a
/// 3 s request timeout. The TTL is twenty announcements: on a loaded two-core CI machine a
/// node's announcements can stall for well over half a second, and a shorter TTL then lets a
/// live node drop out of the others' view mid-test.
pub fn node_config(name: &str) -> ServerConfig {
    ServerConfig::default()
        .with_node_name(name)
        .with_announce_interval(Duration::from_millis(100))
        .with_node_ttl(Duration::from_secs(2))
        .with_server_request_timeout(Duration::from_secs(3))
}

/// Waits until every server sees exactly the nodes `names`.
pub async fn wait_nodes(servers: &[&Server], names: &[&str]) {
    let mut want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    want.sort();
    for s in servers {
        assert!(
            wait_until(WAIT, || s.nodes() == want).await,
            "{} sees {:?}, not {want:?}",
            s.node_name(),
            s.nodes()
        );
    }
}

/// Registers a `who` handler answering `{"node", "from"}` and counting its calls.
pub fn answer_who(server: &Server) -> Arc<AtomicUsize> {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    server.on_server("who", move |server: Server, FromNode(from): FromNode| {
        counter.fetch_add(1, Ordering::SeqCst);
        Ack(json!({"node": server.node_name(), "from": from}))
    });
    calls
}

/// Asks `who` with `options`, waits for every reply, checks the request succeeded, and returns
/// the names of the nodes that answered (sorted).
pub async fn ask_who(server: &Server, options: ServerEmitOptions) -> Vec<String> {
    let results = server
        .request_server("who", &(), options)
        .expect("sent")
        .collect()
        .await;
    assert!(results.success, "{results:?}");
    results.responses.into_keys().collect()
}

fn keys(results: &ServerResults) -> Vec<&str> {
    results.responses.keys().map(String::as_str).collect()
}

fn counts(calls: &[Arc<AtomicUsize>]) -> Vec<usize> {
    calls.iter().map(|c| c.load(Ordering::SeqCst)).collect()
}

/// Broadcast (self included, in-process), except-self, targeted, and fire-and-forget, with
/// exact handler call counts. `nodes` are `a`, `b`, `c`, discovered, with no `who` handler.
pub async fn broadcast_targeted_and_except_self(nodes: &[Server]) {
    let calls: Vec<Arc<AtomicUsize>> = nodes.iter().map(answer_who).collect();
    let a = &nodes[0];

    // Broadcast, self included (in-process): exactly the three live nodes answer.
    let results = a
        .request_server("who", &json!({"q": 1}), ServerEmitOptions::new())
        .expect("sent")
        .collect()
        .await;
    assert!(results.success, "{results:?}");
    assert_eq!(results.unresponded, 0);
    assert_eq!(keys(&results), ["a", "b", "c"]);
    let from_c: Value = serde_json::from_str(results.responses["c"].get()).expect("json reply");
    assert_eq!(from_c, json!({"node": "c", "from": "a"}));
    assert_eq!(counts(&calls), [1, 1, 1]);

    // Except self.
    assert_eq!(
        ask_who(a, ServerEmitOptions::new().except_self()).await,
        ["b", "c"]
    );
    assert_eq!(counts(&calls), [1, 2, 2]);

    // Targeted: only c runs its handler.
    assert_eq!(ask_who(a, ServerEmitOptions::new().to(["c"])).await, ["c"]);
    assert_eq!(counts(&calls), [1, 2, 3]);

    // Targeted at self and another node; except_self then removes self.
    assert_eq!(
        ask_who(a, ServerEmitOptions::new().to(["a", "b"])).await,
        ["a", "b"]
    );
    assert_eq!(
        ask_who(a, ServerEmitOptions::new().to(["a", "b"]).except_self()).await,
        ["b"]
    );
    assert_eq!(counts(&calls), [2, 4, 3]);

    // Fire and forget reaches every handler once; with except_self, the others only.
    a.emit_server("who", &(), &ServerEmitOptions::new())
        .expect("sent");
    assert!(wait_until(WAIT, || counts(&calls) == [3, 5, 4]).await);
    a.emit_server("who", &(), &ServerEmitOptions::new().except_self())
        .expect("sent");
    assert!(wait_until(WAIT, || counts(&calls) == [3, 6, 5]).await);
    // Nothing else arrives late.
    let c = &nodes[2];
    assert_eq!(ask_who(c, ServerEmitOptions::new().to(["c"])).await, ["c"]);
    assert_eq!(counts(&calls), [3, 6, 6]);
}

/// Replies one by one with a falling remaining count, a timeout with partial replies, a late
/// reply collected with a longer timeout, `expected_responses`, and cancelling. `nodes` are
/// `a`, `b`, `c`, discovered, with no `who` handler.
pub async fn one_by_one_timeout_and_cancel(nodes: &[Server]) {
    answer_who(&nodes[0]);
    answer_who(&nodes[1]);
    // c answers after 1.5 s.
    nodes[2].on_server("who", || async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Ack("late")
    });
    let a = &nodes[0];

    // One by one: the remaining count goes down; the slow node misses the 500 ms timeout.
    let mut replies = a
        .request_server(
            "who",
            &(),
            ServerEmitOptions::new().with_timeout(Duration::from_millis(500)),
        )
        .expect("sent");
    assert_eq!(replies.remaining(), 3);
    let mut seen = Vec::new();
    while let Some(r) = replies.next().await {
        seen.push((r.node, r.remaining));
    }
    seen.sort();
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "b"], "{seen:?}");
    let mut remaining: Vec<usize> = seen.iter().map(|(_, r)| *r).collect();
    remaining.sort_unstable();
    assert_eq!(remaining, [1, 2], "{seen:?}");
    assert_eq!(replies.remaining(), 1);

    // All at once: partial result after the timeout.
    let started = tokio::time::Instant::now();
    let results = a
        .request_server(
            "who",
            &(),
            ServerEmitOptions::new().with_timeout(Duration::from_millis(500)),
        )
        .expect("sent")
        .collect()
        .await;
    let took = started.elapsed();
    assert!(!results.success);
    assert_eq!(results.unresponded, 1);
    assert_eq!(keys(&results), ["a", "b"]);
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1400),
        "{took:?}"
    );

    // A long enough timeout gets all three, the late one included.
    let results = a
        .request_server(
            "who",
            &(),
            ServerEmitOptions::new().with_timeout(Duration::from_secs(4)),
        )
        .expect("sent")
        .collect()
        .await;
    assert!(results.success, "{results:?}");
    assert_eq!(results.responses["c"].get(), "\"late\"");

    // expected_responses: two are enough, it does not wait for c.
    let started = tokio::time::Instant::now();
    let results = a
        .request_server(
            "who",
            &(),
            ServerEmitOptions::new().with_expected_responses(2),
        )
        .expect("sent")
        .collect()
        .await;
    assert!(results.success);
    assert_eq!(keys(&results), ["a", "b"]);
    assert!(started.elapsed() < Duration::from_millis(1000));

    // Cancel: the replies end at once although c answers later.
    let mut replies = a
        .request_server("who", &(), ServerEmitOptions::new().to(["c"]))
        .expect("sent");
    assert!(a.cancel_server_request(replies.id()));
    let started = tokio::time::Instant::now();
    assert!(replies.next().await.is_none());
    assert!(started.elapsed() < Duration::from_millis(300));
    assert!(!a.cancel_server_request(replies.id()));
}

/// Seed FAQ 1: a WebSocket client asks its gateway node, which forwards the request to the
/// logic node and answers with its reply. `logic` must be named `logic`.
pub async fn gateway_forwards_to_logic(gateway: &Server, logic: &Server) {
    logic.on_server("price", |server: Server, Data(item): Data<String>| {
        Ack(json!({"item": item, "price": 42, "by": server.node_name()}))
    });
    gateway.on(
        "price",
        |server: Server, Data(item): Data<Value>, reply: Reply| async move {
            let options = ServerEmitOptions::new().to(["logic"]);
            let results = server
                .request_server("price", &item, options)?
                .collect()
                .await;
            if let Some(answer) = results.responses.get("logic") {
                reply.send_raw(answer)?;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        },
    );
    let addr = serve_on_free_port(gateway).await;
    let mut client = RawClient::connect(addr, "/?id=buyer")
        .await
        .expect("connect");
    client
        .send_text(r#"{"event":"price","payload":"apple","callbackId":"c1"}"#)
        .await
        .expect("send");
    assert_eq!(
        client.recv_json(WAIT).await.expect("reply"),
        json!({"callbackId":"c1","payload":{"item":"apple","price":42,"by":"logic"}})
    );
}

/// `Server::request` from `a` to an id connected to `b` (answered by a client that speaks the
/// `ackId` extension), from `b` itself, to an id nobody holds (`NotConnected`), and to a
/// client that never answers (a timeout within the bound given). `a` and `b` see each other;
/// `b` gets the relay handlers and a listener here.
pub async fn request_reaches_any_id(a: &Server, b: &Server) {
    crate::install_relay(b);
    let addr = serve_on_free_port(b).await;
    let mut far = RawClient::connect_bound(addr, "far")
        .await
        .expect("connect");
    let answering = tokio::spawn(async move {
        // Answers every request with {"name": "Far", "asked": <payload>}, until told to stop.
        while let Some(frame) = far.recv_json(WAIT).await {
            let Some(ack_id) = frame["ackId"].as_str() else {
                continue;
            };
            if frame["event"] == "stop" {
                break;
            }
            let answer = json!({"name": "Far", "asked": frame["payload"]});
            let text = crosswire::protocol::frame::encode_ack_text(ack_id, &answer).expect("ack");
            far.send_text(&text).await.expect("answer");
        }
        far
    });
    let answer = a
        .request("far", "whoami", &json!({"q": 2}), WAIT)
        .await
        .expect("answered");
    assert_eq!(answer.get(), r#"{"asked":{"q":2},"name":"Far"}"#);
    let answer = b
        .request("far", "whoami", &1, WAIT)
        .await
        .expect("answered");
    assert_eq!(answer.get(), r#"{"asked":1,"name":"Far"}"#);
    assert!(matches!(
        a.request("nobody", "whoami", &1, WAIT).await,
        Err(crosswire::RequestError::NotConnected)
    ));
    // Told to stop, the client answers nothing more: a's next request times out at 300 ms.
    let limit = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let stop = a.request("far", "stop", &(), limit).await;
    assert!(
        matches!(stop, Err(crosswire::RequestError::Timeout(t)) if t == limit),
        "{stop:?}"
    );
    assert!(started.elapsed() >= limit && started.elapsed() < WAIT);
    let _far = answering.await.expect("client task");
}

/// The same id connecting to `a` and `b` at the same moment, `rounds` times: each time
/// exactly one socket keeps the id (never none, never two), the other client gets the
/// takeover close, and the winner stays open after both nodes heard both binds. `a` and `b`
/// see each other; they get the relay handlers and listeners here.
pub async fn login_race_keeps_one_socket(a: &Server, b: &Server, rounds: usize) {
    crate::install_relay(a);
    crate::install_relay(b);
    // Counts the binds each node made (its connection handlers run after the relay's).
    let binds: [Arc<AtomicUsize>; 2] = Default::default();
    for (server, count) in [a, b].into_iter().zip(&binds) {
        let count = Arc::clone(count);
        server.on_system(move |_: crosswire::system::Connection| {
            count.fetch_add(1, Ordering::SeqCst);
        });
    }
    let addrs = [serve_on_free_port(a).await, serve_on_free_port(b).await];
    let nodes = [a, b];
    for round in 0..rounds {
        let id = format!("racer-{round}");
        let target = format!("/?id={id}");
        let (ca, cb) = tokio::join!(
            RawClient::connect(addrs[0], &target),
            RawClient::connect(addrs[1], &target)
        );
        let mut clients = [ca.expect("connect to a"), cb.expect("connect to b")];
        let both_bound = || binds.iter().all(|n| n.load(Ordering::SeqCst) == round + 1);
        assert!(wait_until(WAIT, both_bound).await, "round {round}: binds");
        let held = |i: usize| nodes[i].socket(&id).is_some();
        // One node lets go of the id; which one is decided by the claims.
        assert!(
            wait_until(WAIT, || held(0) != held(1)).await,
            "round {round}: a holds {}, b holds {}",
            held(0),
            held(1)
        );
        let winner = usize::from(held(1));
        let loser = 1 - winner;
        let kept = nodes[winner].socket(&id).expect("the winner's socket");
        let close = clients[loser].expect_close(WAIT).await;
        assert_eq!(
            close.map(|(code, _)| code),
            Some(crosswire::close_code::TAKEN_OVER),
            "round {round}: the loser's close"
        );
        // A marker the loser's node sends to everyone after both binds: once the winner's
        // client has it, the winner's node has handled the loser's bind too.
        nodes[loser]
            .to_all()
            .emit("marker", &round)
            .expect("marker sent");
        loop {
            let frame = clients[winner]
                .recv_json(WAIT)
                .await
                .unwrap_or_else(|| panic!("round {round}: the winner got no marker"));
            if frame["event"] == "marker" {
                assert_eq!(frame["payload"], json!(round));
                break;
            }
        }
        assert!(!kept.is_closed(), "round {round}: the winner was closed");
        assert_eq!(nodes[winner].socket(&id), Some(kept), "round {round}");
        assert!(nodes[loser].socket(&id).is_none(), "round {round}");
    }
}

/// The namespace the presence scenario tracks.
pub const PRESENCE_NAMESPACE: &str = "p";

/// A node configuration for [`presence_across_nodes`]: [`node_config`] with presence on
/// [`PRESENCE_NAMESPACE`] and no protocol ping sweep (which would keep a dropped node
/// announcing itself until its next tick).
pub fn presence_config(name: &str) -> ServerConfig {
    node_config(name)
        .with_presence([PRESENCE_NAMESPACE])
        .with_server_ping_interval(Duration::ZERO)
}

/// Presence over three nodes of `f` (with [`presence_config`]): joins and leaves on every node
/// are seen on `a` as events and in `Server::presence`, a closed socket leaves, a node that
/// dies without a word takes its members with it (leave events within the node time to
/// live), a node that joins later learns the members already there, and a node restarted
/// within its time to live drops its old run's members.
pub async fn presence_across_nodes<F: Fixture>(f: &F) {
    use crosswire::system::{PresenceJoin, PresenceLeave};
    use crosswire::Room;
    use tokio::sync::mpsc;

    let make = |name: &str| f.node(presence_config(name));
    let (a, b, c) = (make("a").await, make("b").await, make("c").await);
    wait_nodes(&[&a, &b, &c], &["a", "b", "c"]).await;
    let (tx, mut events) = mpsc::unbounded_channel::<String>();
    let joined = tx.clone();
    a.on_system(move |e: PresenceJoin| {
        let _ = joined.send(format!("+{}@{} {}", e.id, e.node, e.room));
    });
    a.on_system(move |e: PresenceLeave| {
        let _ = tx.send(format!("-{}@{} {}", e.id, e.node, e.room));
    });
    let room = Room::new(PRESENCE_NAMESPACE, "r");
    let listed = |server: &Server| -> Vec<String> {
        server
            .presence(&room)
            .into_iter()
            .map(|e| format!("{}@{}", e.id, e.node))
            .collect()
    };
    b.join(&room, "x");
    c.join(&room, "y");
    a.join(&room, "z");
    assert!(
        wait_until(WAIT, || [&a, &b, &c]
            .iter()
            .all(|s| listed(s) == ["x@b", "y@c", "z@a"]))
        .await,
        "a {:?}, b {:?}, c {:?}",
        listed(&a),
        listed(&b),
        listed(&c)
    );
    let mut seen = next_events(&mut events, 3).await;
    seen.sort();
    assert_eq!(seen, ["+x@b r", "+y@c r", "+z@a r"]);

    // A leave on c.
    c.leave(&room, "y");
    assert!(wait_until(WAIT, || listed(&a) == ["x@b", "z@a"]).await);
    assert_eq!(next_events(&mut events, 1).await, ["-y@c r"]);

    // A socket on b bound as w joins, then closes: w leaves.
    crate::install_relay(&b);
    let addr = serve_on_free_port(&b).await;
    let w = RawClient::connect_bound(addr, "w").await.expect("connect");
    b.join(&room, "w");
    assert!(wait_until(WAIT, || listed(&a) == ["w@b", "x@b", "z@a"]).await);
    assert_eq!(next_events(&mut events, 1).await, ["+w@b r"]);
    w.send_close(1000, "bye").await.expect("close");
    assert!(wait_until(WAIT, || listed(&a) == ["x@b", "z@a"]).await);
    assert_eq!(next_events(&mut events, 1).await, ["-w@b r"]);

    // A node that joins later learns who is there already.
    let d = make("d").await;
    wait_nodes(&[&a, &b, &c, &d], &["a", "b", "c", "d"]).await;
    assert!(
        wait_until(WAIT, || listed(&d) == ["x@b", "z@a"]).await,
        "d {:?}",
        listed(&d)
    );

    // c's member; then c dies without a word: its member leaves, on every node.
    c.join(&room, "y");
    assert!(wait_until(WAIT, || listed(&a) == ["x@b", "y@c", "z@a"]).await);
    assert_eq!(next_events(&mut events, 1).await, ["+y@c r"]);
    drop(c);
    assert!(
        wait_until(WAIT, || listed(&a) == ["x@b", "z@a"]
            && listed(&d) == ["x@b", "z@a"])
        .await,
        "a {:?}, d {:?}",
        listed(&a),
        listed(&d)
    );
    assert!(wait_until(WAIT, || !a.nodes().contains(&"c".to_string())).await);
    assert_eq!(next_events(&mut events, 1).await, ["-y@c r"]);

    // d restarts at once, well within its TTL: the old run's member leaves at the first
    // announcement of the new run, and the new run learns the others' members.
    d.join(&room, "v");
    assert!(wait_until(WAIT, || listed(&a) == ["v@d", "x@b", "z@a"]).await);
    assert_eq!(next_events(&mut events, 1).await, ["+v@d r"]);
    drop(d);
    let d = make("d").await;
    assert_eq!(next_events(&mut events, 1).await, ["-v@d r"]);
    assert!(
        wait_until(WAIT, || listed(&d) == ["x@b", "z@a"]).await,
        "d {:?}",
        listed(&d)
    );
    assert_eq!(listed(&a), ["x@b", "z@a"]);
    assert!(events.try_recv().is_err(), "no other presence event on a");
    drop(w);
}

/// The next `n` events of `rx`, each within [`WAIT`].
async fn next_events(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    n: usize,
) -> Vec<String> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        match crate::recv_within(rx, WAIT).await {
            Some(e) => got.push(e),
            None => panic!("{} of {n} events, then none: {got:?}", got.len()),
        }
    }
    got
}

/// Namespace of the rooms that keep history in [`history_config`].
pub const HISTORY_NAMESPACE: &str = "hist";

/// Messages each room of [`HISTORY_NAMESPACE`] keeps in [`history_config`].
pub const HISTORY_LEN: usize = 2_000;

/// [`node_config`] with a history of [`HISTORY_LEN`] messages (2 minutes) for the rooms of
/// [`HISTORY_NAMESPACE`] and for the messages sent to ids.
pub fn history_config(name: &str) -> ServerConfig {
    room_history_config(name)
        .with_room_channels(false)
        .with_id_history(history_window())
}

/// The window of [`history_config`]: [`HISTORY_LEN`] messages, 2 minutes.
fn history_window() -> crosswire::Retention {
    crosswire::Retention::new(HISTORY_LEN, Duration::from_secs(120))
}

/// Room history only, with a channel per room: [`node_config`] with the history of
/// [`history_config`] for the rooms of [`HISTORY_NAMESPACE`], none for ids, and room channels
/// on (`ServerConfig::with_room_channels`), as a broker whose history needs them (Redis
/// Cluster: `Broker::history_needs_room_channels`) requires.
pub fn room_history_config(name: &str) -> ServerConfig {
    node_config(name)
        .with_history(HISTORY_NAMESPACE, history_window())
        .with_room_channels(true)
}

/// One `msg` event of a recorded room as a client got it: its payload (a number) and place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Positioned {
    /// The payload.
    pub n: u64,
    /// The stream position.
    pub position: crosswire::Position,
}

/// Reads `msg` events from `client` until one with payload `last` (or `WAIT` passes),
/// returning them all; other frames are skipped.
pub async fn read_positioned(client: &mut RawClient, last: u64) -> Vec<Positioned> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while got.last().is_none_or(|p: &Positioned| p.n < last) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(text) = client.recv_text(left).await else {
            break;
        };
        if let Some(p) = positioned(&text) {
            got.push(p);
        }
    }
    got
}

/// The `msg` event in `text`, with its position, if it is one.
pub fn positioned(text: &str) -> Option<Positioned> {
    let v: Value = serde_json::from_str(text).ok()?;
    if v["event"] != "msg" {
        return None;
    }
    Some(Positioned {
        n: v["payload"].as_u64()?,
        position: crosswire::Position::new(v["offset"].as_u64()?, v["epoch"].as_str()?),
    })
}

/// Sends `msg` `from..=to` to `room` from `server`, one every `every`.
pub fn send_numbers(
    server: &Server,
    room: &crosswire::Room,
    from: u64,
    to: u64,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let (server, room) = (server.clone(), room.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_micros(1)));
        for n in from..=to {
            if !every.is_zero() {
                tick.tick().await;
            }
            server.to_room(&room).emit("msg", &n).expect("emit");
        }
    })
}

/// Recovery across nodes of `f` (with [`history_config`]): a client on `a` follows a
/// room that `b` sends 1,000 messages to over about three seconds; it loses its connection
/// for two seconds, comes back on `c` with the last position it saw, and ends with every
/// message exactly once and in order (`recovered: true`), live ones flowing all along. Then
/// the same past the window: `recovered: false`, nothing replayed, live messages after.
pub async fn recovery_across_nodes<F: Fixture>(f: &F) {
    recovery_across_nodes_with(f, history_config).await;
}

/// [`recovery_across_nodes`] on nodes made with `config` (from [`history_config`] or
/// [`room_history_config`]).
pub async fn recovery_across_nodes_with<F: Fixture>(f: &F, config: impl Fn(&str) -> ServerConfig) {
    use crosswire::Room;

    let make = |name: &str| f.node(config(name));
    let (a, b, c) = (make("a").await, make("b").await, make("c").await);
    wait_nodes(&[&a, &b, &c], &["a", "b", "c"]).await;
    let (addr_a, addr_c) = (serve_on_free_port(&a).await, serve_on_free_port(&c).await);
    crate::install_relay(&a);
    crate::install_relay(&c);
    let room = Room::new(HISTORY_NAMESPACE, "live");
    let x = RawClient::connect_bound(addr_a, "x")
        .await
        .expect("connect");
    assert!(wait_until(WAIT, || a.socket("x").is_some()).await);
    let first = a.join_recovering(&room, "x", None).await.expect("join");
    assert_eq!(first.stream, "hist/live");
    assert!(!first.recovered);
    let start = first.position.expect("a position");

    let sender = send_numbers(&b, &room, 1, 1000, Duration::from_millis(3));
    let before = lose_connection(x, &a, "x").await;
    let last = before.last().expect("one").position.clone();
    let mut x = RawClient::connect_bound(addr_c, "x")
        .await
        .expect("reconnect");
    assert!(wait_until(WAIT, || c.socket("x").is_some()).await);
    let back = c
        .join_recovering(&room, "x", Some(last))
        .await
        .expect("rejoin");
    let all = finish_recovered(&back, &mut x, before, sender, &start).await;

    // Past the window: more messages than the history keeps while the client is away. A
    // watcher on `a` tells when `a` has had them all (and so has the history).
    let last = all.last().expect("one").position.clone();
    drop(x);
    assert!(wait_until(WAIT, || c.socket("x").is_none()).await);
    let mut watcher = RawClient::connect_bound(addr_a, "w")
        .await
        .expect("connect");
    assert!(wait_until(WAIT, || a.socket("w").is_some()).await);
    a.join_recovering(&room, "w", None).await.expect("join");
    let flood = HISTORY_LEN as u64 + 50;
    send_numbers(&b, &room, 1001, 1000 + flood, Duration::ZERO)
        .await
        .expect("sender");
    let seen = read_positioned(&mut watcher, 1000 + flood).await;
    assert_eq!(seen.len() as u64, flood, "the watcher got the flood");
    let top = last.offset + flood;
    let mut x = RawClient::connect_bound(addr_a, "x")
        .await
        .expect("reconnect");
    assert!(wait_until(WAIT, || a.socket("x").is_some()).await);
    let back = a
        .join_recovering(&room, "x", Some(last.clone()))
        .await
        .expect("rejoin");
    assert!(!back.recovered, "{back:?}");
    assert_eq!(back.replayed, 0);
    assert_eq!(back.position.as_ref().map(|p| p.offset), Some(top));
    let next = 1001 + flood;
    b.to_room(&room).emit("msg", &next).expect("emit");
    let live = read_positioned(&mut x, next).await;
    assert_eq!(
        live.iter().map(|p| p.n).collect::<Vec<_>>(),
        [next],
        "only the live message after the join"
    );
    assert_eq!(live[0].position.offset, top + 1);
    let stats = a.stats();
    assert!(stats.recoveries_missed >= 1, "{stats:?}");
    assert!(c.stats().recoveries >= 1);
    drop((x, watcher));
    joins_during_a_flood(&a, &b, addr_a, &room).await;
}

/// Joins in the middle of a flood from another node: each client gets every message after
/// the position its join reports, exactly once and in order, whatever was still on its way
/// from the broker when the history was read.
async fn joins_during_a_flood(
    a: &Server,
    b: &Server,
    addr_a: std::net::SocketAddr,
    room: &crosswire::Room,
) {
    for round in 0..10u64 {
        let id = format!("f{round}");
        let mut client = RawClient::connect_bound(addr_a, &id)
            .await
            .expect("connect");
        assert!(wait_until(WAIT, || a.socket(&id).is_some()).await);
        let from = 10_000 + round * 1000;
        let sender = send_numbers(b, room, from, from + 999, Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(round % 4)).await;
        let joined = a.join_recovering(room, &id, None).await.expect("join");
        sender.await.expect("sender");
        let got = read_positioned(&mut client, from + 999).await;
        // What came before the reply (kept while the history was read) and after it: one
        // run of offsets without a gap or a repeat, reaching past the reported position.
        let at = joined.position.expect("a position").offset;
        let offsets: Vec<u64> = got.iter().map(|p| p.position.offset).collect();
        let first = offsets.first().copied().unwrap_or(at + 1);
        let want: Vec<u64> = (first..first + offsets.len() as u64).collect();
        assert_eq!(offsets, want, "round {round}: once and in order");
        assert!(
            first <= at + 1,
            "round {round}: nothing skipped after {at}: {first}"
        );
        assert_eq!(got.last().map(|p| p.n), Some(from + 999), "round {round}");
    }
}

/// The middle of a recovery scenario: `client` (bound to `id` on `server`) reads up to
/// message 300, then its connection goes for two seconds. Returns what it read.
async fn lose_connection(mut client: RawClient, server: &Server, id: &str) -> Vec<Positioned> {
    let before = read_positioned(&mut client, 300).await;
    assert!(
        before.len() >= 300,
        "got {} of 300 before the outage",
        before.len()
    );
    drop(client);
    let away = tokio::time::Instant::now();
    assert!(wait_until(WAIT, || server.socket(id).is_none()).await);
    tokio::time::sleep_until(away + Duration::from_secs(2)).await;
    before
}

/// The end of a recovery scenario: `back` recovered something, the client reads on to
/// message 1000, and with what it got `before` it has 1..=1000 once each, in order, at
/// consecutive offsets after `start`. Returns them all.
async fn finish_recovered(
    back: &crosswire::Recovery,
    client: &mut RawClient,
    before: Vec<Positioned>,
    sender: tokio::task::JoinHandle<()>,
    start: &crosswire::Position,
) -> Vec<Positioned> {
    assert!(back.recovered, "{back:?}");
    assert!(back.replayed > 0, "{back:?}");
    let after = read_positioned(client, 1000).await;
    sender.await.expect("sender");
    let all: Vec<Positioned> = before.into_iter().chain(after).collect();
    let numbers: Vec<u64> = all.iter().map(|p| p.n).collect();
    assert_eq!(
        numbers,
        (1..=1000).collect::<Vec<u64>>(),
        "every message once, in order"
    );
    for (i, p) in all.iter().enumerate() {
        assert_eq!(
            p.position.offset,
            start.offset + 1 + i as u64,
            "offsets without a gap"
        );
        assert_eq!(p.position.epoch, start.epoch);
    }
    all
}

/// Binds every socket of `server` to its `?id=` with [`Server::bind_recovering`], from the
/// position in its `offset` and `epoch` query parameters when given; each outcome goes to the
/// returned channel.
pub fn bind_recovering_from_query(
    server: &Server,
) -> tokio::sync::mpsc::UnboundedReceiver<crosswire::Recovery> {
    use crosswire::system::Connection;
    use crosswire::Socket;

    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    server.on_system(move |_: Connection, server: Server, socket: Socket| {
        let id = socket.query("id").unwrap_or_default().to_string();
        let since = match (socket.query("offset"), socket.query("epoch")) {
            (Some(o), Some(e)) => o.parse().ok().map(|o| crosswire::Position::new(o, e)),
            _ => None,
        };
        let recovering = server.bind_recovering(&id, &socket, since);
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(recovering.await.expect("ids keep history"));
        });
    });
    rx
}

/// Sends `msg` `from..=to` to `id` from `server`, one every `every`.
fn send_numbers_to(
    server: &Server,
    id: &str,
    from: u64,
    to: u64,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let (server, id) = (server.clone(), id.to_string());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        for n in from..=to {
            tick.tick().await;
            server.to(id.as_str()).emit("msg", &n).expect("emit");
        }
    })
}

/// Recovery of the messages sent to an id, across nodes of `f` (with [`history_config`]): a
/// client bound on `a` gets 1,000 messages sent to its id from `b` over about three seconds;
/// it loses its connection for two seconds, comes back on `c` with the last position it saw
/// (in its query), and ends with every message exactly once and in order (`recovered: true`).
pub async fn id_recovery_across_nodes<F: Fixture>(f: &F) {
    let make = |name: &str| f.node(history_config(name));
    let (a, b, c) = (make("a").await, make("b").await, make("c").await);
    wait_nodes(&[&a, &b, &c], &["a", "b", "c"]).await;
    let (mut bound_a, mut bound_c) = (
        bind_recovering_from_query(&a),
        bind_recovering_from_query(&c),
    );
    let (addr_a, addr_c) = (serve_on_free_port(&a).await, serve_on_free_port(&c).await);
    let x = RawClient::connect(addr_a, "/?id=u").await.expect("connect");
    let first = crate::recv_within(&mut bound_a, WAIT).await.expect("bound");
    assert_eq!(first.stream, "@u");
    assert!(!first.recovered);
    let start = first.position.expect("a position");

    let sender = send_numbers_to(&b, "u", 1, 1000, Duration::from_millis(3));
    let before = lose_connection(x, &a, "u").await;
    let last = before.last().expect("one").position.clone();
    let target = format!("/?id=u&offset={}&epoch={}", last.offset, last.epoch);
    let mut x = RawClient::connect(addr_c, &target)
        .await
        .expect("reconnect");
    let back = crate::recv_within(&mut bound_c, WAIT).await.expect("bound");
    finish_recovered(&back, &mut x, before, sender, &start).await;
}

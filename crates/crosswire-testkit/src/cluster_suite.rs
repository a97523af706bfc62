//! Scenarios every broker must pass the same way: server-to-server requests between three
//! nodes named `a`, `b` and `c` that already see each other. The in-process hub tests
//! (`crosswire/tests/server_to_server.rs`) and the Redis tests
//! (`crosswire-cli/tests/redis_server_events.rs`) run them on their own nodes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crosswire::{
    Ack, Data, FromNode, Reply, Server, ServerConfig, ServerEmitOptions, ServerResults,
};
use serde_json::{json, Value};

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

/// Presence over three nodes made by `make` (from [`presence_config`]): joins and leaves on
/// every node are seen on `a` as events and in `Server::presence`, a closed socket leaves, a
/// node that dies without a word takes its members with it (leave events within the node
/// time to live), and a node that joins later learns the members already there.
pub async fn presence_across_nodes(make: impl Fn(&str) -> Server) {
    use crosswire::system::{PresenceJoin, PresenceLeave};
    use crosswire::Room;
    use tokio::sync::mpsc;

    let (a, b, c) = (make("a"), make("b"), make("c"));
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
    let d = make("d");
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
    let d = make("d");
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

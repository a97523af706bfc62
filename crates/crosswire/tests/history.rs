//! History and recovery on a single node (in memory): positions on events to recorded rooms
//! and ids, replay in order after a reconnect, `except` honoured on replay, the window, and
//! what is never recorded (raw frames, `.local()`, rooms of other namespaces).

use std::time::Duration;

use crosswire::{Retention, Room, Server, ServerConfig};
use crosswire_testkit::cluster_suite::{
    bind_recovering_from_query, positioned, read_positioned, Positioned, WAIT,
};
use crosswire_testkit::{recv_within, serve_on_free_port, RawClient};
use serde_json::Value;

fn server(len: usize) -> Server {
    let window = Retention::new(len, Duration::from_secs(60));
    Server::new(
        ServerConfig::default()
            .with_history("chat", window)
            .with_id_history(window),
    )
    .expect("valid config")
}

/// Every frame `client` gets until `n`, as JSON.
async fn frames_until(client: &mut RawClient, n: u64) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some(text) = client.recv_text(WAIT).await {
        let v: Value = serde_json::from_str(&text).expect("json");
        let done = v["payload"] == n;
        out.push(v);
        if done {
            break;
        }
    }
    out
}

#[tokio::test]
async fn a_room_is_replayed_in_order_without_what_excluded_the_client() {
    let server = server(100);
    let mut bound = bind_recovering_from_query(&server);
    let addr = serve_on_free_port(&server).await;
    let lobby = Room::new("chat", "lobby");
    let mut x = RawClient::connect(addr, "/?id=x").await.expect("connect");
    recv_within(&mut bound, WAIT).await.expect("bound");
    let joined = server
        .join_recovering(&lobby, "x", None)
        .await
        .expect("join");
    assert_eq!(joined.position.as_ref().map(|p| p.offset), Some(0));
    for n in 1..=3u64 {
        server.to_room(&lobby).emit("msg", &n).expect("emit");
    }
    let seen = read_positioned(&mut x, 3).await;
    assert_eq!(
        seen.iter().map(|p| p.position.offset).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    drop(x);

    // Away: one message skips x, raw text and a local-only send are not recorded, another
    // namespace's room has no history.
    assert!(crosswire_testkit::wait_until(WAIT, || server.socket("x").is_none()).await);
    server.to_room(&lobby).emit("msg", &4).expect("emit");
    server
        .to_room(&lobby)
        .except(["x"])
        .emit("msg", &5)
        .expect("emit");
    server.to_room(&lobby).send_text("raw").expect("send");
    server
        .to_room(&lobby)
        .local()
        .emit("msg", &50)
        .expect("emit");
    server.to_room(&lobby).emit("msg", &6).expect("emit");
    let other = server.to_room(Room::new("game", "g")).emit("msg", &1);
    assert_eq!(other.expect("emit"), 0);

    let mut x = RawClient::connect(addr, "/?id=x").await.expect("reconnect");
    recv_within(&mut bound, WAIT).await.expect("bound");
    let since = seen.last().expect("three").position.clone();
    let back = server
        .join_recovering(&lobby, "x", Some(since))
        .await
        .expect("rejoin");
    assert!(back.recovered, "{back:?}");
    assert_eq!(back.replayed, 2, "4 and 6; 5 skipped x");
    assert_eq!(
        back.position.as_ref().map(|p| p.offset),
        Some(6),
        "5 counts in the stream"
    );
    server.to_room(&lobby).emit("msg", &7).expect("emit");
    let frames = frames_until(&mut x, 7).await;
    let got: Vec<Positioned> = frames
        .iter()
        .filter_map(|v| positioned(&v.to_string()))
        .collect();
    assert_eq!(got.iter().map(|p| p.n).collect::<Vec<_>>(), [4, 6, 7]);
    assert_eq!(
        got.iter().map(|p| p.position.offset).collect::<Vec<_>>(),
        [4, 6, 7]
    );
    assert!(frames.iter().all(|v| v["stream"] == "chat/lobby"));
    let stats = server.stats();
    assert_eq!((stats.recoveries, stats.replayed_messages), (1, 2));
}

#[tokio::test]
async fn past_the_window_is_not_recovered_and_ids_keep_their_own_stream() {
    let server = server(3);
    let mut bound = bind_recovering_from_query(&server);
    let addr = serve_on_free_port(&server).await;
    let x = RawClient::connect(addr, "/?id=y").await.expect("connect");
    let first = recv_within(&mut bound, WAIT).await.expect("bound");
    assert_eq!(first.stream, "@y");
    let start = first.position.expect("a position");
    drop(x);
    assert!(crosswire_testkit::wait_until(WAIT, || server.socket("y").is_none()).await);
    for n in 1..=5u64 {
        server.to("y").emit("msg", &n).expect("emit");
    }
    // Four missed, three kept: not recoverable.
    let target = format!("/?id=y&offset={}&epoch={}", start.offset + 1, start.epoch);
    let mut x = RawClient::connect(addr, &target).await.expect("reconnect");
    let back = recv_within(&mut bound, WAIT).await.expect("bound");
    assert!(!back.recovered, "{back:?}");
    assert_eq!(back.replayed, 0);
    assert_eq!(
        back.position.as_ref().map(|p| p.offset),
        Some(start.offset + 5)
    );
    server.to("y").emit("msg", &6).expect("emit");
    let got = read_positioned(&mut x, 6).await;
    assert_eq!(got.iter().map(|p| p.n).collect::<Vec<_>>(), [6]);
    assert_eq!(server.stats().recoveries_missed, 1);

    // Within the window (seen up to 5; 6 and 7 missed): recovered.
    drop(x);
    assert!(crosswire_testkit::wait_until(WAIT, || server.socket("y").is_none()).await);
    server.to("y").emit("msg", &7).expect("emit");
    let target = format!("/?id=y&offset={}&epoch={}", start.offset + 5, start.epoch);
    let mut x = RawClient::connect(addr, &target).await.expect("reconnect");
    let back = recv_within(&mut bound, WAIT).await.expect("bound");
    assert!(back.recovered, "{back:?}");
    let got = read_positioned(&mut x, 7).await;
    assert_eq!(got.iter().map(|p| p.n).collect::<Vec<_>>(), [6, 7]);
}

#[tokio::test]
async fn a_recovery_dropped_unfinished_holds_nothing_back() {
    use crosswire::system::Connection;
    use crosswire::Socket;

    let server = server(10);
    server.on_system(|_: Connection, server: Server, socket: Socket| {
        // The application never runs the recovery: live messages must still flow.
        drop(server.bind_recovering("z", &socket, None));
    });
    let addr = serve_on_free_port(&server).await;
    let mut z = RawClient::connect(addr, "/?id=z").await.expect("connect");
    assert!(crosswire_testkit::wait_until(WAIT, || server.socket("z").is_some()).await);
    server.to("z").emit("msg", &1).expect("emit");
    let got = read_positioned(&mut z, 1).await;
    assert_eq!(got.iter().map(|p| p.n).collect::<Vec<_>>(), [1]);
}

/// A broker that keeps no history (it forwards to the hub and leaves the history methods at
/// their defaults).
struct NoHistory(crosswire::MemoryBroker);

impl crosswire::Broker for NoHistory {
    fn publish(
        &self,
        channel: &str,
        payload: bytes::Bytes,
    ) -> crosswire::BoxFuture<'static, Result<(), crosswire::BrokerError>> {
        self.0.publish(channel, payload)
    }
    fn subscribe(
        &self,
        channel: &str,
    ) -> crosswire::BoxFuture<'static, Result<(), crosswire::BrokerError>> {
        self.0.subscribe(channel)
    }
    fn unsubscribe(
        &self,
        channel: &str,
    ) -> crosswire::BoxFuture<'static, Result<(), crosswire::BrokerError>> {
        self.0.unsubscribe(channel)
    }
    fn messages(
        &self,
    ) -> Result<tokio::sync::mpsc::Receiver<crosswire::BrokerMessage>, crosswire::BrokerError> {
        self.0.messages()
    }
    fn health(&self) -> crosswire::BrokerHealth {
        self.0.health()
    }
}

#[tokio::test]
async fn history_on_a_broker_without_it_is_refused_at_start() {
    let hub = crosswire::MemoryHub::new();
    let broker = std::sync::Arc::new(NoHistory(hub.broker()));
    let config = ServerConfig::default()
        .with_node_name("n")
        .with_history("chat", Retention::default());
    let refused = Server::builder(config).broker(broker.clone()).build();
    assert!(
        matches!(refused, Err(crosswire::ConfigError::HistoryUnsupported)),
        "{refused:?}"
    );
    // Without history the same broker is fine.
    let config = ServerConfig::default().with_node_name("n");
    assert!(Server::builder(config).broker(broker).build().is_ok());
}
